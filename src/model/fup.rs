//! The data of quota and fair usage: periods, the tiers a subscriber is
//! in, free-hours windows and FUP tiers as stored. What they mean (which
//! tier applies, what counts, when a reset is due) is decided in
//! `policy::fup`.

use chrono::{NaiveDate, NaiveTime, Timelike};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Period {
    Daily,
    Monthly,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Monthly => "monthly",
        }
    }

    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "daily" => Some(Period::Daily),
            "monthly" => Some(Period::Monthly),
            _ => None,
        }
    }
}

/// The tiers a subscriber is in (0 = none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Levels {
    pub daily: u8,
    pub monthly: u8,
}

impl Levels {
    /// The levels once `period`'s usage is reset.
    pub fn after_reset(self, period: Period) -> Levels {
        match period {
            Period::Daily => Levels { daily: 0, ..self },
            Period::Monthly => Levels { monthly: 0, ..self },
        }
    }
}

/// A window of the local day in which only `100 - free_percent`% of the
/// traffic counts. `start == end` is the whole day; `start > end` wraps
/// past midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeHours {
    pub start_minute: u16,
    pub end_minute: u16,
    pub free_percent: u8,
}

impl FreeHours {
    pub fn contains(&self, t: NaiveTime) -> bool {
        let m = (t.hour() * 60 + t.minute()) as u16;
        match self.start_minute.cmp(&self.end_minute) {
            std::cmp::Ordering::Less => (self.start_minute..self.end_minute).contains(&m),
            std::cmp::Ordering::Greater => m >= self.start_minute || m < self.end_minute,
            std::cmp::Ordering::Equal => true,
        }
    }
}

/// One FUP tier as stored (`service_fup_tiers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierRecord {
    pub service_id: i64,
    pub period: Period,
    pub level: u8,
    pub threshold_bytes: u64,
    pub download_kbps: u32,
    pub upload_kbps: u32,
    /// Filter-Id for generic NASes (default: the rate limit).
    pub filter_id: Option<String>,
}

/// A subscriber's monthly usage as the monthly reset sees it: whether its
/// reset is due is the policy's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonthlyResetCandidate {
    pub username: String,
    /// The day of month the cycle starts (1..=31).
    pub anniversary_day: u8,
    pub last_reset: NaiveDate,
    pub levels: Levels,
}
