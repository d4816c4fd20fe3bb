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
}

const REJECT_BASE: usize = 3;
const DROP_BASE: usize = REJECT_BASE + RejectReason::ALL.len();
const DROP_COUNT: usize = PARSE_ERRORS.len() + 9;
const TAIL_BASE: usize = DROP_BASE + DROP_COUNT;
/// Number of counters.
pub const COUNTERS: usize = TAIL_BASE + 3;

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
        }
    }
}

/// A shard's own counters.
#[derive(Clone, Debug)]
pub struct ShardStats {
    values: [u64; COUNTERS],
}

impl Default for ShardStats {
    fn default() -> Self {
        ShardStats {
            values: [0; COUNTERS],
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

    /// Copies the counters into the shard's published slot.
    pub fn publish(&self, slot: &StatsSlot) {
        for (v, a) in self.values.iter().zip(slot.values.iter()) {
            a.store(*v, Ordering::Relaxed);
        }
    }
}

/// The published copy of one shard's counters.
#[derive(Debug)]
pub struct StatsSlot {
    values: [AtomicU64; COUNTERS],
}

impl Default for StatsSlot {
    fn default() -> Self {
        StatsSlot {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl StatsSlot {
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c.index()].load(Ordering::Relaxed)
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
        ]
        .into_iter()
        .chain(RejectReason::ALL.into_iter().map(Counter::Reject))
        .chain(all_drop_reasons().map(Counter::Dropped));
        for c in all {
            assert!(c.index() < COUNTERS);
            assert!(seen.insert(c.index()), "{c:?}");
        }
        assert_eq!(seen.len(), COUNTERS);
    }
}
