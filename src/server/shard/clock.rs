//! The shard's view of time, read once per received batch and handed to the
//! engine. The local UTC offset is refreshed once a second instead of per
//! packet (it only changes at DST transitions).

use std::time::{Duration, Instant};

use chrono::{FixedOffset, Local, Utc};

use crate::engine::Now;

pub struct ShardClock {
    offset: FixedOffset,
    refreshed: Instant,
    /// `--clock-offset-secs` (tests of time-of-day behaviour).
    shift: chrono::TimeDelta,
}

impl ShardClock {
    pub fn new() -> Self {
        ShardClock::shifted(0)
    }

    /// A clock whose local time runs `secs` ahead (or behind).
    pub fn shifted(secs: i64) -> Self {
        ShardClock {
            offset: *Local::now().offset(),
            refreshed: Instant::now(),
            shift: chrono::TimeDelta::seconds(secs),
        }
    }

    pub fn now(&mut self) -> Now {
        let mono = Instant::now();
        if mono.duration_since(self.refreshed) >= Duration::from_secs(1) {
            self.offset = *Local::now().offset();
            self.refreshed = mono;
        }
        let utc = Utc::now();
        Now {
            mono,
            local: (utc + self.offset + self.shift).naive_utc(),
            utc,
        }
    }
}

impl Default for ShardClock {
    fn default() -> Self {
        Self::new()
    }
}
