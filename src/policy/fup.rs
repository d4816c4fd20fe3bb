//! Quota and fair usage, as pure functions: which tier a subscriber's
//! usage has reached, which speed applies, how much of an interim's
//! traffic counts (free hours, counter resets), when a monthly reset is
//! due and what a change of tier sends by CoA. The accounting writer, the
//! usage thread and the jobs call these; the store keeps the numbers
//! (`model`).

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate, NaiveTime, Timelike};

use super::snapshot::{rate_limit, Service, Snapshot};
pub use crate::model::{FreeHours, Levels, MonthlyResetCandidate, Period, QuotaAction, TierRecord};

/// One FUP tier: past `threshold_bytes` of usage in its period, the
/// subscriber gets this speed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    pub level: u8,
    pub threshold_bytes: u64,
    pub download_kbps: u32,
    pub upload_kbps: u32,
    /// Filter-Id for generic NASes (default: the rate limit).
    pub filter_id: Option<String>,
    /// Mikrotik-Rate-Limit "upload/download".
    pub rate_limit: String,
}

impl Tier {
    pub fn new(
        level: u8,
        threshold_bytes: u64,
        download_kbps: u32,
        upload_kbps: u32,
        filter_id: Option<String>,
    ) -> Tier {
        Tier {
            level,
            threshold_bytes,
            download_kbps,
            upload_kbps,
            filter_id,
            rate_limit: rate_limit(upload_kbps, download_kbps, None),
        }
    }

    /// The Filter-Id a generic NAS gets for this tier.
    pub fn filter(&self) -> &str {
        self.filter_id.as_deref().unwrap_or(&self.rate_limit)
    }

    fn from_record(r: &TierRecord) -> Tier {
        Tier::new(
            r.level,
            r.threshold_bytes,
            r.download_kbps,
            r.upload_kbps,
            r.filter_id.clone(),
        )
    }
}

/// The level a subscriber at a byte quota has (tiers are 1..=6): the
/// usage thread raises it like a tier's, the resets bring it down.
pub const QUOTA_LEVEL: u8 = 7;

/// A service's byte quotas (README "Quota and fair usage").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    pub daily_bytes: Option<u64>,
    pub monthly_bytes: Option<u64>,
    pub action: QuotaAction,
    /// The speed of `throttle`, as a tier of level [`QUOTA_LEVEL`].
    pub throttle: Tier,
}

impl Quota {
    /// The service's quota, if it has one that can be enforced (`throttle`
    /// needs a speed: one without is reported and left out).
    pub fn of(service: &Service) -> Result<Option<Quota>, String> {
        if !service.has_quota() {
            return Ok(None);
        }
        if service.quota_action == QuotaAction::Throttle
            && (service.quota_download_kbps == 0 || service.quota_upload_kbps == 0)
        {
            return Err(format!(
                "service {:?}: a throttle quota without a speed (quota_download_kbps, quota_upload_kbps) is not enforced",
                crate::text::printable(&service.name)
            ));
        }
        Ok(Some(Quota {
            daily_bytes: service.daily_quota_bytes,
            monthly_bytes: service.monthly_quota_bytes,
            action: service.quota_action,
            throttle: Tier::new(
                QUOTA_LEVEL,
                0,
                service.quota_download_kbps,
                service.quota_upload_kbps,
                None,
            ),
        }))
    }

    fn bytes(&self, period: Period) -> Option<u64> {
        match period {
            Period::Daily => self.daily_bytes,
            Period::Monthly => self.monthly_bytes,
        }
    }
}

/// A service's FUP: tiers per period, ordered by level, free hours and
/// byte quotas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFup {
    pub daily: Vec<Tier>,
    pub monthly: Vec<Tier>,
    pub free_hours: Option<FreeHours>,
    pub quota: Option<Quota>,
}

impl ServiceFup {
    pub fn tiers(&self, period: Period) -> &[Tier] {
        match period {
            Period::Daily => &self.daily,
            Period::Monthly => &self.monthly,
        }
    }

    /// The highest level whose threshold `usage` has reached; at the
    /// period's quota, [`QUOTA_LEVEL`].
    pub fn level_for(&self, period: Period, usage: u64) -> u8 {
        if self
            .quota
            .as_ref()
            .and_then(|q| q.bytes(period))
            .is_some_and(|q| usage >= q)
        {
            return QUOTA_LEVEL;
        }
        self.tiers(period)
            .iter()
            .filter(|t| usage >= t.threshold_bytes)
            .map(|t| t.level)
            .max()
            .unwrap_or(0)
    }

    /// Whether `levels` are at a quota that rejects or captures: the
    /// expiry sweep's to act on, not a speed.
    pub fn quota_is_not_a_speed(&self, levels: Levels) -> bool {
        self.over_quota(levels)
            .is_some_and(|a| a != QuotaAction::Throttle)
    }

    /// What reaching the quota does, when `levels` are at one.
    pub fn over_quota(&self, levels: Levels) -> Option<QuotaAction> {
        let q = self.quota.as_ref()?;
        (levels.daily == QUOTA_LEVEL || levels.monthly == QUOTA_LEVEL).then_some(q.action)
    }

    pub fn levels_for(&self, daily_bytes: u64, monthly_bytes: u64) -> Levels {
        Levels {
            daily: self.level_for(Period::Daily, daily_bytes),
            monthly: self.level_for(Period::Monthly, monthly_bytes),
        }
    }

    fn tier(&self, period: Period, level: u8) -> Option<&Tier> {
        if level == QUOTA_LEVEL {
            return self.quota.as_ref().map(|q| &q.throttle);
        }
        self.tiers(period).iter().find(|t| t.level == level)
    }

    /// The tier that sets the speed at `levels`: of the daily and the
    /// monthly tier reached, the slower one (by download); `None` = the
    /// service's own speed.
    pub fn effective(&self, levels: Levels) -> Option<&Tier> {
        let daily = self.tier(Period::Daily, levels.daily);
        let monthly = self.tier(Period::Monthly, levels.monthly);
        match (daily, monthly) {
            (Some(d), Some(m)) => Some(if m.download_kbps < d.download_kbps {
                m
            } else {
                d
            }),
            (d, m) => d.or(m),
        }
    }

    /// How many of `bytes` used at local time `at` count.
    pub fn counted(&self, bytes: u64, at: NaiveTime) -> u64 {
        match self.free_hours {
            Some(f) if f.contains(at) => {
                (bytes as u128 * (100 - f.free_percent.min(100)) as u128 / 100) as u64
            }
            _ => bytes,
        }
    }
}

/// The most recent anniversary on or before `today` for a monthly cycle
/// starting on day `day` of the month (a day the month lacks is its last
/// day: 31 → 28 February).
pub fn last_anniversary(today: NaiveDate, day: u8) -> NaiveDate {
    let in_month = |year: i32, month: u32| {
        let first = NaiveDate::from_ymd_opt(year, month, 1).expect("valid month");
        let days = first
            .checked_add_months(chrono::Months::new(1))
            .map_or(31, |next| (next - first).num_days() as u32);
        first
            .with_day(u32::from(day.max(1)).min(days))
            .expect("clamped to the month")
    };
    let this = in_month(today.year(), today.month());
    if this <= today {
        this
    } else {
        let prev = today
            .with_day(1)
            .and_then(|d| d.checked_sub_months(chrono::Months::new(1)))
            .expect("a previous month");
        in_month(prev.year(), prev.month())
    }
}

/// Whether monthly usage last reset on `last_reset` is due for a reset on
/// `today`: an anniversary passed since. A reset missed while the server
/// was down is caught up at the next check.
pub fn monthly_reset_due(today: NaiveDate, day: u8, last_reset: NaiveDate) -> bool {
    last_anniversary(today, day) > last_reset
}

/// Parses a byte count: `5000000000`, `500M`, `5G`, `1.5T` (powers of
/// 1000, as ISPs sell volume), or `5GiB` (powers of 1024).
pub fn parse_bytes(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "T" | "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "{input:?}: unknown unit {other:?} (B, K, M, G, T, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{input:?} is not a size like 5G or 500M"))?;
    let bytes = value * factor as f64;
    if !(1.0..=9.0e18).contains(&bytes) {
        return Err(format!("{input:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// Parses "HH:MM" into minutes after midnight.
pub fn parse_minute_of_day(input: &str) -> Result<u16, String> {
    let t = NaiveTime::parse_from_str(input.trim(), "%H:%M")
        .map_err(|_| format!("{input:?} is not HH:MM"))?;
    Ok((t.hour() * 60 + t.minute()) as u16)
}

/// FUP of every service that has one.
pub type FupPolicy = HashMap<i64, std::sync::Arc<ServiceFup>>;

/// The FUP of every service from the stored tiers and free hours, and
/// the services' quotas (`report` hears of a quota that cannot be enforced).
pub fn policy_from<'s>(
    tiers: &[TierRecord],
    free_hours: &[(i64, FreeHours)],
    all_services: impl IntoIterator<Item = &'s Service>,
    report: &mut dyn FnMut(String),
) -> FupPolicy {
    let mut services: HashMap<i64, ServiceFup> = HashMap::new();
    let mut sorted: Vec<&TierRecord> = tiers.iter().collect();
    sorted.sort_by_key(|t| (t.service_id, t.period.as_str(), t.level));
    for t in sorted {
        let fup = services.entry(t.service_id).or_default();
        match t.period {
            Period::Daily => fup.daily.push(Tier::from_record(t)),
            Period::Monthly => fup.monthly.push(Tier::from_record(t)),
        }
    }
    for (service, free) in free_hours {
        services.entry(*service).or_default().free_hours = Some(*free);
    }
    for service in all_services {
        match Quota::of(service) {
            Ok(Some(q)) => services.entry(service.id).or_default().quota = Some(q),
            Ok(None) => {}
            Err(e) => report(e),
        }
    }
    services
        .into_iter()
        .map(|(id, f)| (id, std::sync::Arc::new(f)))
        .collect()
}

/// Whether a subscriber's monthly reset is due on `today`.
pub fn monthly_reset_due_for(today: NaiveDate, c: &MonthlyResetCandidate) -> bool {
    monthly_reset_due(today, c.anniversary_day, c.last_reset)
}

/// The CoA for a subscriber whose levels go from `before` to `after`:
/// the speed of the tier that now applies (the service's own with none),
/// exactly as an Access-Accept would give it; `None` if the speed stays.
/// A quota that rejects or captures is not a speed: reaching it and its
/// reset are the expiry sweep's (a Disconnect, a move into or out of the
/// walled garden), so no speed is sent on either side of it.
pub fn speed_change(
    service: &Service,
    fup: &ServiceFup,
    before: Levels,
    after: Levels,
    rule: Option<&super::rules::Rule>,
) -> Option<SpeedChange> {
    if fup.quota_is_not_a_speed(before) || fup.quota_is_not_a_speed(after) {
        return None;
    }
    let (old, new) = (fup.effective(before), fup.effective(after));
    if old.map(|t| &t.rate_limit) == new.map(|t| &t.rate_limit) {
        return None;
    }
    Some(SpeedChange::of(service, new, rule))
}

/// A new speed for a live session: Mikrotik-Rate-Limit, and the Filter-Id
/// a generic NAS gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeedChange {
    pub rate_limit: String,
    pub filter_id: String,
    /// The same speed for NAS types with their own attributes.
    pub rate: crate::policy::vendor_speed::Rate,
}

impl SpeedChange {
    /// The speed a subscriber of `service` in `tier` (None: the service's
    /// own) gets while `rule` is open, exactly as an Access-Accept gives it.
    pub fn of(service: &Service, tier: Option<&Tier>, rule: Option<&super::rules::Rule>) -> Self {
        let speed = super::rules::effective_speed(service, tier, rule);
        SpeedChange {
            rate_limit: speed.rate_limit.into_owned(),
            filter_id: speed.filter.into_owned(),
            rate: crate::policy::vendor_speed::Rate {
                download_kbps: speed.download_kbps,
                upload_kbps: speed.upload_kbps,
                name: service.name.clone(),
                tier: speed.tier,
            },
        }
    }
}

/// The subscriber's service and its FUP, when it has one. `username` as
/// the NAS sent it (raw bytes).
pub fn fup_of<'s>(
    snapshot: &'s Snapshot,
    username: &[u8],
) -> Option<(&'s Service, &'s ServiceFup)> {
    let service_id = snapshot.subscriber(username)?.service_id?;
    let fup = snapshot.fup.get(&service_id)?;
    Some((snapshot.services.get(&service_id)?, fup))
}

/// The traffic a session's new cumulative counters add to what was
/// counted before (`prev`: octets and session time last counted). Never
/// negative: counters that went down while the session time did not are a
/// counter reset (everything since counts); lower counters with a lower
/// session time are a late, reordered packet (nothing counts).
pub fn usage_delta(prev: Option<(u64, u32)>, octets: u64, session_time: u32) -> u64 {
    match prev {
        None => octets,
        Some((prev_octets, _)) if octets >= prev_octets => octets - prev_octets,
        Some((_, prev_time)) if session_time >= prev_time => octets,
        Some(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    fn fup() -> ServiceFup {
        ServiceFup {
            daily: vec![
                Tier::new(1, 5 * G, 5000, 1000, None),
                Tier::new(2, 10 * G, 2000, 512, Some("fup-2".into())),
            ],
            monthly: vec![Tier::new(1, 100 * G, 3000, 1000, None)],
            free_hours: Some(FreeHours {
                start_minute: 60,
                end_minute: 7 * 60,
                free_percent: 100,
            }),
            quota: None,
        }
    }

    #[test]
    fn levels_follow_thresholds() {
        let f = fup();
        assert_eq!(f.level_for(Period::Daily, 0), 0);
        assert_eq!(f.level_for(Period::Daily, 5 * G - 1), 0);
        assert_eq!(f.level_for(Period::Daily, 5 * G), 1);
        assert_eq!(f.level_for(Period::Daily, 11 * G), 2);
        assert_eq!(f.level_for(Period::Monthly, 99 * G), 0);
        assert_eq!(
            f.levels_for(6 * G, 100 * G),
            Levels {
                daily: 1,
                monthly: 1
            }
        );
    }

    #[test]
    fn the_slower_of_the_daily_and_monthly_tier_applies() {
        let f = fup();
        assert_eq!(f.effective(Levels::default()), None);
        assert_eq!(
            f.effective(Levels {
                daily: 1,
                monthly: 0
            })
            .unwrap()
            .rate_limit,
            "1000k/5000k"
        );
        // Monthly tier 1 (3M) is slower than daily tier 1 (5M).
        assert_eq!(
            f.effective(Levels {
                daily: 1,
                monthly: 1
            })
            .unwrap()
            .download_kbps,
            3000
        );
        // Daily tier 2 (2M) is slower than monthly tier 1.
        assert_eq!(
            f.effective(Levels {
                daily: 2,
                monthly: 1
            })
            .unwrap()
            .level,
            2
        );
    }

    #[test]
    fn free_hours_count_only_the_paid_share() {
        let mut f = fup();
        let night = NaiveTime::from_hms_opt(3, 0, 0).unwrap();
        let day = NaiveTime::from_hms_opt(12, 0, 0).unwrap();
        assert_eq!(f.counted(1000, night), 0);
        assert_eq!(f.counted(1000, day), 1000);
        f.free_hours = Some(FreeHours {
            start_minute: 23 * 60,
            end_minute: 60,
            free_percent: 50,
        });
        assert_eq!(
            f.counted(1000, NaiveTime::from_hms_opt(23, 30, 0).unwrap()),
            500
        );
        assert_eq!(
            f.counted(1000, NaiveTime::from_hms_opt(0, 30, 0).unwrap()),
            500
        );
        assert_eq!(
            f.counted(1000, NaiveTime::from_hms_opt(1, 0, 0).unwrap()),
            1000
        );
    }

    #[test]
    fn anniversaries_clamp_to_short_months_and_missed_resets_are_caught_up() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(last_anniversary(d(2026, 3, 15), 15), d(2026, 3, 15));
        assert_eq!(last_anniversary(d(2026, 3, 14), 15), d(2026, 2, 15));
        assert_eq!(last_anniversary(d(2027, 2, 28), 31), d(2027, 2, 28));
        assert_eq!(last_anniversary(d(2027, 3, 30), 31), d(2027, 2, 28));
        assert_eq!(last_anniversary(d(2027, 1, 5), 10), d(2026, 12, 10));
        // Reset on the 15th: not due again until the next 15th.
        assert!(!monthly_reset_due(d(2026, 3, 20), 15, d(2026, 3, 15)));
        assert!(monthly_reset_due(d(2026, 4, 15), 15, d(2026, 3, 15)));
        // The server was down all of 15 April: caught up on the 16th.
        assert!(monthly_reset_due(d(2026, 4, 16), 15, d(2026, 3, 15)));
        // Counting began on the 20th: the first reset is the next 15th.
        assert!(!monthly_reset_due(d(2026, 3, 25), 15, d(2026, 3, 20)));
        assert!(monthly_reset_due(d(2026, 4, 15), 15, d(2026, 3, 20)));
    }

    #[test]
    fn sizes_parse_in_decimal_and_binary_units() {
        assert_eq!(parse_bytes("5G"), Ok(5_000_000_000));
        assert_eq!(parse_bytes("1.5T"), Ok(1_500_000_000_000));
        assert_eq!(parse_bytes("500M"), Ok(500_000_000));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert!(parse_bytes("5X").is_err());
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("").is_err());
        assert_eq!(parse_minute_of_day("01:30"), Ok(90));
        assert!(parse_minute_of_day("25:00").is_err());
    }

    #[test]
    fn deltas_are_never_negative_and_survive_counter_resets() {
        assert_eq!(usage_delta(None, 500, 10), 500);
        assert_eq!(usage_delta(Some((500, 10)), 800, 40), 300);
        // A counter reset on the NAS: the session went on, counters restarted.
        assert_eq!(usage_delta(Some((800, 40)), 100, 70), 100);
        // A late, reordered interim: older time, lower counters.
        assert_eq!(usage_delta(Some((800, 40)), 600, 30), 0);
        assert_eq!(usage_delta(Some((800, 40)), 800, 40), 0);
    }

    /// Service 1, 10M, with `filter_id`.
    fn service_record(filter_id: Option<&str>) -> crate::model::ServiceRecord {
        crate::model::ServiceRecord {
            filter_id: filter_id.map(str::to_owned),
            ..crate::model::ServiceRecord::with_speeds(1, "10M", 10_000, 2_000)
        }
    }

    fn service() -> Service {
        Service::from_record(&service_record(Some("plan-10M")))
    }

    #[test]
    fn a_quota_is_level_7_and_only_a_throttle_is_a_speed() {
        let mut record = service_record(None);
        record.daily_quota_bytes = Some(20 * G as i64);
        record.quota_download_kbps = 256;
        record.quota_upload_kbps = 128;
        let s = Service::from_record(&record);
        let mut f = fup();
        f.quota = Quota::of(&s).unwrap();
        assert_eq!(f.level_for(Period::Daily, 11 * G), 2);
        assert_eq!(f.level_for(Period::Daily, 20 * G), QUOTA_LEVEL);
        assert_eq!(f.level_for(Period::Monthly, 500 * G), 1, "no monthly quota");
        let tier2 = Levels {
            daily: 2,
            monthly: 0,
        };
        let over = Levels {
            daily: QUOTA_LEVEL,
            monthly: 0,
        };
        assert_eq!(f.over_quota(over), Some(QuotaAction::Throttle));
        assert_eq!(f.over_quota(tier2), None);
        // Throttle: the quota speed, and back by the reset.
        assert_eq!(
            speed_change(&s, &f, tier2, over, None).map(|c| c.rate_limit),
            Some("128k/256k".to_owned())
        );
        assert_eq!(
            speed_change(&s, &f, over, over.after_reset(Period::Daily), None).map(|c| c.rate_limit),
            Some("2000k/10000k".to_owned())
        );
        // Reject and portal are the sweep's: no speed either way.
        for action in [QuotaAction::Reject, QuotaAction::Portal] {
            f.quota.as_mut().unwrap().action = action;
            assert_eq!(speed_change(&s, &f, tier2, over, None), None);
            assert_eq!(speed_change(&s, &f, over, Levels::default(), None), None);
            // A monthly tier while at the daily quota changes nothing.
            assert_eq!(
                speed_change(&s, &f, over, Levels { monthly: 1, ..over }, None),
                None
            );
        }
        // A throttle without a speed is reported, not enforced.
        record.quota_upload_kbps = 0;
        assert!(Quota::of(&Service::from_record(&record))
            .unwrap_err()
            .contains("without a speed"));
        record.quota_action = QuotaAction::Reject;
        assert!(Quota::of(&Service::from_record(&record)).unwrap().is_some());
        record.daily_quota_bytes = Some(0);
        assert_eq!(
            Quota::of(&Service::from_record(&record)).unwrap(),
            None,
            "0: none"
        );
    }

    #[test]
    fn a_speed_change_is_due_only_when_the_effective_tier_changes() {
        let (s, f) = (service(), fup());
        let none = Levels::default();
        let daily1 = Levels {
            daily: 1,
            monthly: 0,
        };
        assert_eq!(
            speed_change(&s, &f, none, daily1, None).map(|c| (c.rate_limit, c.filter_id)),
            Some(("1000k/5000k".to_owned(), "1000k/5000k".to_owned()))
        );
        // Back to the service's own speed (and its Filter-Id) after a reset.
        assert_eq!(
            speed_change(&s, &f, daily1, daily1.after_reset(Period::Daily), None)
                .map(|c| (c.rate_limit, c.filter_id)),
            Some(("2000k/10000k".to_owned(), "plan-10M".to_owned()))
        );
        // A monthly tier slower than the daily one takes over.
        assert_eq!(
            speed_change(
                &s,
                &f,
                daily1,
                Levels {
                    daily: 1,
                    monthly: 1
                },
                None
            )
            .map(|c| (c.rate_limit, c.filter_id)),
            Some(("1000k/3000k".to_owned(), "1000k/3000k".to_owned()))
        );
        // The same speed for other vendors: the tier's, under the service's name.
        let rate = speed_change(&s, &f, none, daily1, None).unwrap().rate;
        assert_eq!(
            (
                rate.download_kbps,
                rate.upload_kbps,
                rate.tier,
                rate.name.as_str()
            ),
            (5000, 1000, 1, s.name.as_str())
        );
        assert_eq!(speed_change(&s, &f, daily1, daily1, None), None);
        // An open bandwidth rule multiplies the tier's speed.
        let half = crate::policy::rules::Rule {
            id: 1,
            name: "half".into(),
            days: 0,
            start_minute: 0,
            end_minute: 0,
            download_percent: 50,
            upload_percent: 50,
            services: vec![],
            priority: 1,
        };
        assert_eq!(
            speed_change(&s, &f, none, daily1, Some(&half)).map(|c| c.rate_limit),
            Some("500k/2500k".to_owned())
        );
        assert_eq!(
            speed_change(
                &s,
                &f,
                Levels {
                    daily: 2,
                    monthly: 0
                },
                Levels {
                    daily: 2,
                    monthly: 1
                },
                None
            ),
            None,
            "the daily tier 2 stays the slower one"
        );
    }

    #[test]
    fn the_policy_is_built_from_stored_tiers_in_level_order() {
        let tier = |service_id, period, level, threshold_bytes| TierRecord {
            service_id,
            period,
            level,
            threshold_bytes,
            download_kbps: 1000 * u32::from(level),
            upload_kbps: 500,
            filter_id: None,
        };
        let policy = policy_from(
            &[
                tier(7, Period::Daily, 2, 10 * G),
                tier(7, Period::Daily, 1, 5 * G),
                tier(7, Period::Monthly, 1, 100 * G),
            ],
            &[(
                9,
                FreeHours {
                    start_minute: 0,
                    end_minute: 60,
                    free_percent: 50,
                },
            )],
            [],
            &mut |e| panic!("{e}"),
        );
        let f = &policy[&7];
        assert_eq!(f.daily.iter().map(|t| t.level).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(f.monthly[0].rate_limit, "500k/1000k");
        assert!(f.free_hours.is_none());
        assert_eq!(policy[&9].free_hours.unwrap().free_percent, 50);
        assert!(policy[&9].daily.is_empty());
    }

    #[test]
    fn a_subscriber_is_found_with_its_service_and_fup_only_when_it_has_one() {
        let mut snapshot = Snapshot::default();
        snapshot.set_services(&[service_record(None)]);
        let sub = |name: &str, service_id| crate::model::SubscriberRecord {
            id: 1,
            username: name.into(),
            password_enc: vec![],
            service_id,
            is_active: true,
            expiry_date: None,
            mac_address: None,
            static_ip: None,
            updated_at: 0,
            password_kind: Default::default(),
            max_sessions: None,
        };
        snapshot.apply_subscribers(&[sub("tiered", Some(1)), sub("none", None)], &[]);
        assert!(
            fup_of(&snapshot, b"tiered").is_none(),
            "no FUP for the service yet"
        );
        snapshot.fup.insert(1, std::sync::Arc::new(fup()));
        let (s, f) = fup_of(&snapshot, b"tiered").unwrap();
        assert_eq!((s.id, f.daily.len()), (1, 2));
        assert!(fup_of(&snapshot, b"none").is_none());
        assert!(fup_of(&snapshot, b"nobody").is_none());
    }
}
