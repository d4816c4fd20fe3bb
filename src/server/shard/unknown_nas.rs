//! The `unknown NAS: x.x.x.x` log line, bounded process-wide. Each shard's
//! engine already reports only the first packet per address per minute;
//! this adds, without a lock, (1) the same rule across shards, in a fixed
//! table of atomics, and (2) a budget of lines per minute however many
//! addresses send: a flood of spoofed sources costs O(1) per packet and a
//! bounded log, and the lines over the budget are counted and summed up in
//! one line a minute (`shardius_unknown_nas_log_suppressed_total`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::ip_hash;

/// Slots of the cross-shard table.
const SLOTS: usize = 4096;
/// At most this many `unknown NAS` lines per minute.
pub const LINES_PER_MINUTE: u64 = 30;
const WINDOW_SECS: u64 = 60;

pub struct UnknownNasLog {
    /// Per slot: the address hash's high 32 bits and the second (since the
    /// process' origin, plus one) it was last logged.
    slots: Box<[AtomicU64]>,
    /// The current minute and how many lines it has had.
    budget: AtomicU64,
    /// Lines not written because the budget was spent.
    pub suppressed: AtomicU64,
    /// How many of them were already reported in a summary line.
    reported: AtomicU64,
}

impl Default for UnknownNasLog {
    fn default() -> Self {
        UnknownNasLog {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            budget: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        }
    }
}

impl UnknownNasLog {
    /// Whether to write `unknown NAS: ip` now, `secs` seconds after the
    /// process started.
    pub fn should_log(&self, ip: IpAddr, secs: u64) -> bool {
        let hash = ip_hash(ip);
        let tag = hash >> 32;
        let now = (secs + 1) & 0xFFFF_FFFF;
        let slot = &self.slots[hash as usize % SLOTS];
        let seen = slot.load(Ordering::Relaxed);
        if seen >> 32 == tag && now.wrapping_sub(seen & 0xFFFF_FFFF) < WINDOW_SECS {
            return false;
        }
        // Two shards racing here may both log one address once: harmless.
        slot.store(tag << 32 | now, Ordering::Relaxed);
        self.take_line(secs / WINDOW_SECS)
    }

    /// Suppressed lines since the last call, for the summary line.
    pub fn take_unreported(&self) -> u64 {
        let now = self.suppressed.load(Ordering::Relaxed);
        now.saturating_sub(self.reported.swap(now, Ordering::Relaxed))
    }

    /// Takes one line of `minute`'s budget.
    fn take_line(&self, minute: u64) -> bool {
        let mut current = self.budget.load(Ordering::Relaxed);
        loop {
            let (at, used) = (current >> 32, current & 0xFFFF_FFFF);
            let next = if at != minute & 0xFFFF_FFFF {
                (minute & 0xFFFF_FFFF) << 32 | 1
            } else if used < LINES_PER_MINUTE {
                current + 1
            } else {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return false;
            };
            match self.budget.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_logged_once_a_minute() {
        let log = UnknownNasLog::default();
        let ip: IpAddr = "10.9.9.9".parse().unwrap();
        assert!(log.should_log(ip, 0));
        assert!(!log.should_log(ip, 30));
        assert!(!log.should_log(ip, 59));
        assert!(log.should_log(ip, 61));
    }

    #[test]
    fn a_flood_of_distinct_sources_writes_a_bounded_number_of_lines() {
        let log = UnknownNasLog::default();
        let mut lines = 0;
        for i in 0..100_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            lines += u64::from(log.should_log(ip, u64::from(i) / 2000));
        }
        // 100,000 sources over 50 s: one minute's budget.
        assert_eq!(lines, LINES_PER_MINUTE);
        assert_eq!(
            log.suppressed.load(Ordering::Relaxed),
            100_000 - LINES_PER_MINUTE
        );
        // The next minute has a budget again.
        assert!(log.should_log("192.0.2.1".parse().unwrap(), 61));
    }
}
