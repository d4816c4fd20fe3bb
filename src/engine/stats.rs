//! Per-shard counters. A shard increments plain integers; once in a while
//! it publishes them into its own slot of relaxed atomics, which the
//! control thread sums at scrape time. No shared atomic on the packet path.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::policy::RejectReason;
use crate::proto::ParseError;

/// Why a datagram got no answer (`shardius_dropped_packets_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    Malformed(ParseError),
    UnknownNas,
    BadMessageAuthenticator,
    MissingMessageAuthenticator,
    BadRequestAuthenticator,
    /// A code this port does not take (e.g. Accounting-Request on 1812).
    UnexpectedCode,
    /// A retransmission of an Accounting-Request whose first copy is not
    /// committed yet: the writer answers the first copy.
    AccountingInProgress,
    /// The writer queue was full: not acknowledged, the NAS retransmits.
    AccountingBackpressure,
    /// An Acct-Status-Type shardius does not record, or no Acct-Session-Id.
    AccountingUnsupported,
    /// The reply did not fit in 4096 bytes (oversized radreply values).
    ReplyTooLong,
    /// An accepted login whose pool address was not confirmed by the
    /// database in time, or more of them waiting than a shard keeps: the
    /// NAS retransmits.
    AddressPending,
}

impl DropReason {
    pub fn metric_label(self) -> &'static str {
        match self {
            DropReason::Malformed(e) => e.metric_label(),
            DropReason::UnknownNas => "unknown_nas",
            DropReason::BadMessageAuthenticator => "bad_message_authenticator",
            DropReason::MissingMessageAuthenticator => "missing_message_authenticator",
            DropReason::BadRequestAuthenticator => "bad_request_authenticator",
            DropReason::UnexpectedCode => "unexpected_code",
            DropReason::AccountingInProgress => "acct_in_progress",
            DropReason::AccountingBackpressure => "acct_backpressure",
            DropReason::AccountingUnsupported => "acct_unsupported",
            DropReason::ReplyTooLong => "reply_too_long",
            DropReason::AddressPending => "address_pending",
        }
    }
}

const PARSE_ERRORS: [ParseError; 7] = [
    ParseError::TooShort,
    ParseError::BadLength,
    ParseError::Truncated,
    ParseError::AttributeTooShort,
    ParseError::AttributeOverrun,
    ParseError::BadMessageAuthenticator,
    ParseError::DuplicateMessageAuthenticator,
];

/// Every drop reason, for exporting zero-valued series too.
pub fn all_drop_reasons() -> impl Iterator<Item = DropReason> {
    PARSE_ERRORS.into_iter().map(DropReason::Malformed).chain([
        DropReason::UnknownNas,
        DropReason::BadMessageAuthenticator,
        DropReason::MissingMessageAuthenticator,
        DropReason::BadRequestAuthenticator,
        DropReason::UnexpectedCode,
        DropReason::AccountingInProgress,
        DropReason::AccountingBackpressure,
        DropReason::AccountingUnsupported,
        DropReason::ReplyTooLong,
        DropReason::AddressPending,
    ])
}

/// A counter's position in the per-shard arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    AuthRequests,
    Accepts,
    Reject(RejectReason),
    Dropped(DropReason),
    Duplicates,
    StatusServer,
    AcctRequests,
    /// radius_logs events dropped because the log queue was full.
    LogDropped,
    /// Accounting-Requests whose NAS-IP-Address is not an address of the
    /// NAS entry they came from (recorded under the entry's own).
    AcctForeignNasIp,
    /// Logins accepted into the walled garden, by why (one of
    /// [`CAPTIVE_REASONS`]).
    Captive(RejectReason),
}

/// Why a login may be captive (`shardius_portal_logins_total{reason}`).
pub const CAPTIVE_REASONS: [RejectReason; 3] = [
    RejectReason::Expired,
    RejectReason::Disabled,
    RejectReason::QuotaExceeded,
];

const REJECT_BASE: usize = 3;
const DROP_BASE: usize = REJECT_BASE + RejectReason::ALL.len();
const DROP_COUNT: usize = PARSE_ERRORS.len() + 10;
const TAIL_BASE: usize = DROP_BASE + DROP_COUNT;
/// Number of counters.
pub const COUNTERS: usize = TAIL_BASE + 4 + CAPTIVE_REASONS.len();

impl Counter {
    fn index(self) -> usize {
        match self {
            Counter::AuthRequests => 0,
            Counter::Accepts => 1,
            Counter::Duplicates => 2,
            Counter::Reject(r) => {
                REJECT_BASE
                    + RejectReason::ALL
                        .iter()
                        .position(|x| *x == r)
                        .expect("listed")
            }
            Counter::Dropped(d) => {
                DROP_BASE + all_drop_reasons().position(|x| x == d).expect("listed")
            }
            Counter::StatusServer => TAIL_BASE,
            Counter::AcctRequests => TAIL_BASE + 1,
            Counter::LogDropped => TAIL_BASE + 2,
            Counter::AcctForeignNasIp => TAIL_BASE + 3,
            // A reason not listed shares the first one's slot rather than
            // panic on the packet path; the unit test keeps the list whole.
            Counter::Captive(r) => {
                TAIL_BASE + 4 + CAPTIVE_REASONS.iter().position(|x| *x == r).unwrap_or(0)
            }
        }
    }
}

/// Upper bounds, in nanoseconds, of the buckets of the authentication
/// latency histogram (`shardius_auth_latency_seconds`); one more bucket
/// holds everything slower.
pub const LATENCY_BOUNDS_NS: [u64; 13] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
];
const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

/// A shard's own counters.
#[derive(Clone, Debug)]
pub struct ShardStats {
    values: [u64; COUNTERS],
    /// Non-cumulative bucket counts of [`LATENCY_BOUNDS_NS`], then +Inf.
    latency: [u64; LATENCY_BUCKETS],
    latency_sum_ns: u64,
}

impl Default for ShardStats {
    fn default() -> Self {
        ShardStats {
            values: [0; COUNTERS],
            latency: [0; LATENCY_BUCKETS],
            latency_sum_ns: 0,
        }
    }
}

impl ShardStats {
    pub fn incr(&mut self, c: Counter) {
        self.values[c.index()] += 1;
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.values[c.index()]
    }

    /// Records how long one authentication took, receive to send.
    pub fn observe_latency(&mut self, nanos: u64) {
        self.observe_latencies(nanos, 1);
    }

    /// `count` requests answered together, each after `nanos` (a batch
    /// sent at once): one bucket lookup for all of them.
    pub fn observe_latencies(&mut self, nanos: u64, count: u64) {
        let bucket = LATENCY_BOUNDS_NS
            .iter()
            .position(|&b| nanos <= b)
            .unwrap_or(LATENCY_BOUNDS_NS.len());
        self.latency[bucket] += count;
        self.latency_sum_ns = self.latency_sum_ns.wrapping_add(nanos.wrapping_mul(count));
    }

    /// Copies the counters into the shard's published slot.
    pub fn publish(&self, slot: &StatsSlot) {
        for (v, a) in self.values.iter().zip(slot.values.iter()) {
            a.store(*v, Ordering::Relaxed);
        }
        for (v, a) in self.latency.iter().zip(slot.latency.iter()) {
            a.store(*v, Ordering::Relaxed);
        }
        slot.latency_sum_ns
            .store(self.latency_sum_ns, Ordering::Relaxed);
    }
}

/// The published copy of one shard's counters.
#[derive(Debug)]
pub struct StatsSlot {
    values: [AtomicU64; COUNTERS],
    latency: [AtomicU64; LATENCY_BUCKETS],
    latency_sum_ns: AtomicU64,
    /// Milliseconds since the process' clock origin at the shard's last
    /// publication: a shard that stops publishing is stuck.
    pub heartbeat_ms: AtomicU64,
}

impl Default for StatsSlot {
    fn default() -> Self {
        StatsSlot {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_ns: AtomicU64::new(0),
            heartbeat_ms: AtomicU64::new(0),
        }
    }
}

/// A latency histogram summed over shards: `(upper bound in seconds,
/// count in this bucket alone)` pairs ending with +Inf (the encoder makes
/// them cumulative), the sum in seconds, the count.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyHistogram {
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl StatsSlot {
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c.index()].load(Ordering::Relaxed)
    }

    /// Sums the latency histograms of `slots`.
    pub fn latency_histogram<'a>(
        slots: impl IntoIterator<Item = &'a StatsSlot>,
    ) -> LatencyHistogram {
        let mut counts = [0u64; LATENCY_BUCKETS];
        let mut sum_ns = 0u64;
        for slot in slots {
            for (c, a) in counts.iter_mut().zip(slot.latency.iter()) {
                *c += a.load(Ordering::Relaxed);
            }
            sum_ns = sum_ns.wrapping_add(slot.latency_sum_ns.load(Ordering::Relaxed));
        }
        let buckets = LATENCY_BOUNDS_NS
            .iter()
            .map(|&b| b as f64 / 1e9)
            .chain([f64::INFINITY])
            .zip(counts)
            .collect();
        LatencyHistogram {
            buckets,
            sum_seconds: sum_ns as f64 / 1e9,
            count: counts.iter().sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_its_own_index() {
        let mut seen = std::collections::HashSet::new();
        let all = [
            Counter::AuthRequests,
            Counter::Accepts,
            Counter::Duplicates,
            Counter::StatusServer,
            Counter::AcctRequests,
            Counter::LogDropped,
            Counter::AcctForeignNasIp,
        ]
        .into_iter()
        .chain(RejectReason::ALL.into_iter().map(Counter::Reject))
        .chain(all_drop_reasons().map(Counter::Dropped))
        .chain(CAPTIVE_REASONS.into_iter().map(Counter::Captive));
        for c in all {
            assert!(c.index() < COUNTERS);
            assert!(seen.insert(c.index()), "{c:?}");
        }
        assert_eq!(seen.len(), COUNTERS);
    }

    #[test]
    fn drop_reason_labels_are_unique() {
        let labels: std::collections::HashSet<_> =
            all_drop_reasons().map(DropReason::metric_label).collect();
        assert_eq!(labels.len(), all_drop_reasons().count());
    }

    #[test]
    fn a_batch_of_latencies_counts_as_that_many_single_ones() {
        let (a, b) = (StatsSlot::default(), StatsSlot::default());
        let mut one_by_one = ShardStats::default();
        for _ in 0..5 {
            one_by_one.observe_latency(40_000);
        }
        one_by_one.publish(&a);
        let mut batched = ShardStats::default();
        batched.observe_latencies(40_000, 5);
        batched.publish(&b);
        assert_eq!(
            StatsSlot::latency_histogram([&a]),
            StatsSlot::latency_histogram([&b])
        );
    }

    #[test]
    fn latency_histograms_are_summed_over_shards() {
        let (a, b) = (StatsSlot::default(), StatsSlot::default());
        let mut s = ShardStats::default();
        s.observe_latency(3_000); // <= 5 µs
        s.observe_latency(7_000); // <= 10 µs
        s.publish(&a);
        let mut t = ShardStats::default();
        t.observe_latency(200_000_000); // slower than every bound
        t.publish(&b);
        let h = StatsSlot::latency_histogram([&a, &b]);
        assert_eq!(h.count, 3);
        assert_eq!(h.buckets[0], (5e-6, 1));
        assert_eq!(h.buckets[1], (1e-5, 1));
        assert_eq!(h.buckets[LATENCY_BOUNDS_NS.len() - 1].1, 0);
        assert_eq!(*h.buckets.last().unwrap(), (f64::INFINITY, 1));
        assert!((h.sum_seconds - 0.20001).abs() < 1e-9, "{}", h.sum_seconds);
    }
}
