//! Time-of-day bandwidth rules (README "Bandwidth rules"), as pure
//! functions over a local time passed in: which rule is open for a service
//! at a moment ([`active`]), what speed a subscriber gets then
//! ([`effective_speed`]: the service's or its FUP tier's speed, multiplied
//! by the open rule), and which services' speeds changed between two
//! moments ([`changed_services`], for the leader's CoAs).

use std::borrow::Cow;

use chrono::{Datelike, NaiveDateTime, Timelike};

use super::fup::Tier;
use super::snapshot::{rate_limit, Service};
use crate::model::{Burst, RuleRecord};

/// A rule, its services resolved to ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: i64,
    pub name: String,
    /// Bits 0..6: Monday..Sunday, the days a window starts on; 0 = every day.
    pub days: u8,
    /// Minutes after local midnight; `start > end` crosses midnight,
    /// `start == end` is the whole day.
    pub start_minute: u16,
    pub end_minute: u16,
    pub download_percent: u32,
    pub upload_percent: u32,
    /// Empty: every service.
    pub services: Vec<i64>,
    /// On overlap the lowest wins (then the oldest rule).
    pub priority: i32,
}

impl Rule {
    /// The rule of `record`, with its service names resolved by `service_id`;
    /// Err names a service that does not exist (the rule is left out).
    pub fn from_record(
        record: &RuleRecord,
        service_id: impl Fn(&str) -> Option<i64>,
    ) -> Result<Rule, String> {
        let mut services = Vec::new();
        for name in record.service_names() {
            match service_id(name) {
                Some(id) => services.push(id),
                None => {
                    return Err(format!(
                        "bandwidth rule {:?}: no service named {:?}; the rule is not applied",
                        crate::text::printable(&record.name),
                        crate::text::printable(name)
                    ))
                }
            }
        }
        Ok(Rule {
            id: record.id,
            name: record.name.clone(),
            days: record.days & 0x7f,
            start_minute: record.start_minute.min(1439),
            end_minute: record.end_minute.min(1439),
            download_percent: u32::from(record.download_percent.clamp(1, 1000)),
            upload_percent: u32::from(record.upload_percent.clamp(1, 1000)),
            services,
            priority: record.priority,
        })
    }

    pub fn applies_to(&self, service_id: i64) -> bool {
        self.services.is_empty() || self.services.contains(&service_id)
    }

    fn starts_on(&self, weekday: u32) -> bool {
        self.days == 0 || self.days & (1 << weekday) != 0
    }

    /// Whether the window is open at local time `at`. A window that
    /// crosses midnight belongs to the day it starts on.
    pub fn is_open(&self, at: NaiveDateTime) -> bool {
        let minute = (at.hour() * 60 + at.minute()) as u16;
        let today = at.weekday().num_days_from_monday();
        let yesterday = (today + 6) % 7;
        let (start, end) = (self.start_minute, self.end_minute);
        if start == end {
            self.starts_on(today)
        } else if start < end {
            self.starts_on(today) && (start..end).contains(&minute)
        } else {
            (minute >= start && self.starts_on(today))
                || (minute < end && self.starts_on(yesterday))
        }
    }

    fn scale(percent: u32, kbps: u32) -> u32 {
        (u64::from(kbps) * u64::from(percent) / 100).clamp(1, u64::from(u32::MAX)) as u32
    }
}

/// The rule open for `service_id` at `at`: of the open ones that apply,
/// the lowest priority, then the lowest id.
pub fn active(rules: &[Rule], service_id: i64, at: NaiveDateTime) -> Option<&Rule> {
    rules
        .iter()
        .filter(|r| r.applies_to(service_id) && r.is_open(at))
        .min_by_key(|r| (r.priority, r.id))
}

/// The ids of `services` whose open rule differs between `before` and
/// `now` (a window opened, closed, or another one took over).
pub fn changed_services(
    rules: &[Rule],
    services: impl IntoIterator<Item = i64>,
    before: NaiveDateTime,
    now: NaiveDateTime,
) -> Vec<i64> {
    if rules.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<i64> = services
        .into_iter()
        .filter(|&s| active(rules, s, before).map(|r| r.id) != active(rules, s, now).map(|r| r.id))
        .collect();
    out.sort_unstable();
    out
}

/// A subscriber's speed: the service's own, or its FUP tier's (a throttled
/// quota's), multiplied by the open rule. Borrowed when no rule changes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Speed<'a> {
    pub download_kbps: u32,
    pub upload_kbps: u32,
    /// Mikrotik-Rate-Limit "upload/download", then the burst fields.
    pub rate_limit: Cow<'a, str>,
    /// Filter-Id for a generic NAS: the tier's or service's own, or under
    /// a rule the multiplied rate.
    pub filter: Cow<'a, str>,
    /// The FUP tier (0: none), for `[speeds]` templates.
    pub tier: u8,
}

/// The speed a subscriber of `service` in `tier` gets while `rule` is
/// open. A rule multiplies whatever speed the tier gives, and the burst
/// fields of the service with it (burst time unchanged).
pub fn effective_speed<'a>(
    service: &'a Service,
    tier: Option<&'a Tier>,
    rule: Option<&Rule>,
) -> Speed<'a> {
    let (down, up, level) = match tier {
        Some(t) => (t.download_kbps, t.upload_kbps, t.level),
        None => (service.download_kbps, service.upload_kbps, 0),
    };
    let Some(rule) = rule else {
        return Speed {
            download_kbps: down,
            upload_kbps: up,
            rate_limit: Cow::Borrowed(tier.map_or(&service.rate_limit, |t| &t.rate_limit)),
            filter: Cow::Borrowed(tier.map_or(service.filter(), |t| t.filter())),
            tier: level,
        };
    };
    let (d, u) = (
        Rule::scale(rule.download_percent, down),
        Rule::scale(rule.upload_percent, up),
    );
    // The tiers have no burst; the service's scales with the rule.
    let burst = service.burst.filter(|_| tier.is_none()).map(|b| Burst {
        download_kbps: Rule::scale(rule.download_percent, b.download_kbps),
        upload_kbps: Rule::scale(rule.upload_percent, b.upload_kbps),
        threshold_download_kbps: Rule::scale(rule.download_percent, b.threshold_download_kbps),
        threshold_upload_kbps: Rule::scale(rule.upload_percent, b.threshold_upload_kbps),
        time_secs: b.time_secs,
    });
    let rate = rate_limit(u, d, burst);
    Speed {
        download_kbps: d,
        upload_kbps: u,
        filter: Cow::Owned(rate_limit(u, d, None)),
        rate_limit: Cow::Owned(rate),
        tier: level,
    }
}

/// Parses days of the week: `mon,tue`, `mon-fri`, `sat,sun`, `every`
/// (or empty) for every day. Bits 0..6: Monday..Sunday.
pub fn parse_days(input: &str) -> Result<u8, String> {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let s = input.trim().to_ascii_lowercase();
    if s.is_empty() || s == "every" {
        return Ok(0);
    }
    let day = |d: &str| {
        NAMES
            .iter()
            .position(|n| *n == d.trim())
            .ok_or_else(|| format!("{d:?} is not a day (mon, tue, wed, thu, fri, sat, sun)"))
    };
    let mut bits = 0u8;
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                // mon-fri, or fri-mon across the week's end.
                let mut d = a;
                loop {
                    bits |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => bits |= 1 << day(part)?,
        }
    }
    Ok(if bits == 0x7f { 0 } else { bits })
}

/// `mon,tue,...` or `every day`.
pub fn format_days(days: u8) -> String {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    if days & 0x7f == 0 {
        return "every day".into();
    }
    NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| days & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    /// 2026-12-07 is a Monday.
    fn at(day: u32, h: u32, m: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 12, day)
            .unwrap()
            .and_hms_opt(h, m, 0)
            .unwrap()
    }

    fn rule(id: i64, days: &str, from: (u16, u16), to: (u16, u16), pct: u32, prio: i32) -> Rule {
        Rule {
            id,
            name: format!("r{id}"),
            days: parse_days(days).unwrap(),
            start_minute: from.0 * 60 + from.1,
            end_minute: to.0 * 60 + to.1,
            download_percent: pct,
            upload_percent: pct,
            services: vec![],
            priority: prio,
        }
    }

    #[test]
    fn a_window_across_midnight_belongs_to_the_day_it_starts_on() {
        // Friday 22:00 to 06:00.
        let r = rule(1, "fri", (22, 0), (6, 0), 50, 10);
        assert!(!r.is_open(at(11, 21, 59)), "Friday before the start");
        assert!(r.is_open(at(11, 22, 0)), "Friday 22:00");
        assert!(r.is_open(at(12, 0, 0)), "Saturday midnight");
        assert!(r.is_open(at(12, 5, 59)));
        assert!(!r.is_open(at(12, 6, 0)), "closed at the end minute");
        assert!(!r.is_open(at(12, 22, 30)), "Saturday is not a start day");
        assert!(!r.is_open(at(11, 3, 0)), "Friday early: Thursday's window");
        // Every day, and the whole day.
        let every = rule(2, "", (23, 30), (0, 30), 50, 10);
        assert!(every.is_open(at(7, 23, 45)) && every.is_open(at(8, 0, 15)));
        assert!(!every.is_open(at(8, 0, 30)));
        let all_day = rule(3, "sat,sun", (0, 0), (0, 0), 200, 10);
        assert!(all_day.is_open(at(12, 13, 0)) && !all_day.is_open(at(11, 13, 0)));
    }

    #[test]
    fn the_lowest_priority_wins_on_overlap_and_services_narrow_a_rule() {
        let mut evening = rule(1, "", (18, 0), (23, 0), 50, 20);
        let peak = rule(2, "", (20, 0), (22, 0), 25, 10);
        evening.services = vec![7];
        let rules = [evening, peak];
        assert_eq!(active(&rules, 7, at(7, 19, 0)).map(|r| r.id), Some(1));
        assert_eq!(active(&rules, 7, at(7, 21, 0)).map(|r| r.id), Some(2));
        assert_eq!(active(&rules, 8, at(7, 19, 0)), None, "not for service 8");
        assert_eq!(active(&rules, 8, at(7, 21, 0)).map(|r| r.id), Some(2));
        // Equal priorities: the older rule.
        let (a, b) = (
            rule(5, "", (0, 0), (0, 0), 50, 1),
            rule(4, "", (0, 0), (0, 0), 60, 1),
        );
        assert_eq!(active(&[a, b], 1, at(7, 12, 0)).map(|r| r.id), Some(4));
    }

    #[test]
    fn changes_are_found_between_two_moments() {
        let mut r = rule(1, "mon", (23, 58), (0, 2), 50, 1);
        r.services = vec![1];
        let rules = [r];
        let services = [1, 2];
        assert_eq!(
            changed_services(&rules, services, at(7, 23, 57), at(7, 23, 58)),
            [1],
            "opens"
        );
        assert!(changed_services(&rules, services, at(7, 23, 58), at(8, 0, 1)).is_empty());
        assert_eq!(
            changed_services(&rules, services, at(8, 0, 1), at(8, 0, 2)),
            [1],
            "closes after midnight"
        );
        // A leader that was away across the whole window sends nothing.
        assert!(changed_services(&rules, services, at(7, 23, 0), at(8, 1, 0)).is_empty());
        assert!(changed_services(&[], services, at(7, 23, 57), at(7, 23, 58)).is_empty());
    }

    #[test]
    fn a_rule_multiplies_the_tier_or_service_speed_and_its_burst() {
        let mut record = crate::model::ServiceRecord::with_speeds(7, "10M", 10000, 2000);
        record.burst = Some(Burst {
            download_kbps: 20000,
            upload_kbps: 4000,
            threshold_download_kbps: 8000,
            threshold_upload_kbps: 1600,
            time_secs: 10,
        });
        let service = Service::from_record(&record);
        let half = rule(1, "", (0, 0), (0, 0), 50, 1);
        let none = effective_speed(&service, None, None);
        assert!(matches!(none.rate_limit, Cow::Borrowed(_)), "no allocation");
        assert_eq!(none.rate_limit, service.rate_limit);
        let s = effective_speed(&service, None, Some(&half));
        assert_eq!((s.download_kbps, s.upload_kbps), (5000, 1000));
        assert_eq!(s.rate_limit, "1000k/5000k 2000k/10000k 800k/4000k 10/10");
        assert_eq!(s.filter, "1000k/5000k");
        let tier = Tier::new(1, 1, 2000, 512, None);
        let s = effective_speed(&service, Some(&tier), Some(&half));
        assert_eq!(
            s.rate_limit, "256k/1000k",
            "the tier's speed, halved, no burst"
        );
        assert_eq!(s.tier, 1);
        let tiny = rule(2, "", (0, 0), (0, 0), 1, 1);
        let slow = Tier::new(1, 1, 50, 50, None);
        let s = effective_speed(&service, Some(&slow), Some(&tiny));
        assert_eq!((s.download_kbps, s.upload_kbps), (1, 1), "never 0");
    }

    #[test]
    fn days_parse_and_print() {
        assert_eq!(parse_days("mon-fri").unwrap(), 0b001_1111);
        assert_eq!(parse_days("sat,sun").unwrap(), 0b110_0000);
        assert_eq!(parse_days("fri-mon").unwrap(), 0b111_0001);
        assert_eq!(parse_days("mon-sun").unwrap(), 0, "every day");
        assert_eq!(parse_days("").unwrap(), 0);
        assert!(parse_days("funday").unwrap_err().contains("not a day"));
        assert!(parse_days("mon-").is_err());
        assert_eq!(format_days(0b001_1111), "mon,tue,wed,thu,fri");
        assert_eq!(format_days(0), "every day");
    }
}
