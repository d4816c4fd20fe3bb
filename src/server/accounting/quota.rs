//! Quota bookkeeping on the accounting writer's batches (README: "Quota
//! and fair usage"). The writer asks the database, in the transaction
//! that writes a batch, for each counted session's counters as stored
//! before it (`AccountingSink::write_accounting_counted`, under the row's
//! lock). After the batch is durable the traffic a session added is the
//! difference ([`Quota`]): exact however the session's packets are spread
//! over the nodes of a cluster, since every write sees the one committed
//! before it, whichever node made it. The writer hands the
//! per-subscriber sums to the usage thread ([`UsageWorker`]),
//! which adds them to the daily and monthly usage in one statement, and
//! for a subscriber whose usage crossed a FUP tier records the new level
//! (a compare-and-set: one node wins a crossing); the leader of the quota
//! job then sends the CoA with the tier's speed. So the
//! accounting path never waits for usage updates or for a NAS: while the
//! usage thread is busy, the writer keeps summing. Only subscribers whose
//! service has tiers or free hours are counted; nothing runs on a shard.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::Local;
use tracing::{info, warn};

use crate::accounting::{AcctEvent, AcctKind};
use crate::policy::fup::{fup_of, usage_delta, Levels};
use crate::server::Shared;
use crate::store::UsageStore;

/// Per session (acctuniqueid): its counters (octets, session time) as
/// stored before the write that just committed; `None` for a new row.
pub type Before = HashMap<String, Option<(u64, u32)>>;

/// What quota bookkeeping did, for the metrics.
#[derive(Debug, Default)]
pub struct QuotaStats {
    /// Subscribers moved into a higher FUP tier.
    pub tier_changes: AtomicU64,
    /// Usage updates that failed (the batch itself was committed).
    pub usage_errors: AtomicU64,
}

/// The writer's side: the sums not yet handed over.
pub struct Quota {
    shared: Arc<Shared>,
    /// To the usage thread; capacity 1, so sums pile up here while it works.
    usage: crossbeam_channel::Sender<Sums>,
    pending: Sums,
}

/// The usage thread: owns a store connection for usage and tier levels.
pub struct UsageWorker {
    pub store: Box<dyn UsageStore>,
    pub shared: Arc<Shared>,
    pub rx: crossbeam_channel::Receiver<Sums>,
    pub stats: Arc<QuotaStats>,
}

fn octets(e: &AcctEvent) -> u64 {
    e.input_octets
        .unwrap_or(0)
        .saturating_add(e.output_octets.unwrap_or(0))
}

/// Counted bytes per subscriber, from the writer to the usage thread.
pub type Sums = HashMap<String, u64>;

/// The writer's half and the usage thread's channel.
pub fn channel() -> (
    crossbeam_channel::Sender<Sums>,
    crossbeam_channel::Receiver<Sums>,
) {
    crossbeam_channel::bounded(1)
}

impl Quota {
    pub fn new(shared: Arc<Shared>, usage: crossbeam_channel::Sender<Sums>) -> Quota {
        Quota {
            shared,
            usage,
            pending: HashMap::new(),
        }
    }

    /// Whether any of `rows` is counted (its subscriber's service has
    /// tiers or free hours): only then does the write read the counters.
    pub fn wants(&self, rows: &[AcctEvent]) -> bool {
        let snapshot = self.shared.snapshot.load();
        rows.iter().any(|e| {
            e.kind != AcctKind::NasReboot
                && fup_of(&snapshot, &crate::text::unstored(&e.username)).is_some()
        })
    }

    /// After rows are durable in the database: sums the traffic each
    /// added to what `before` says was stored per subscriber, and hands
    /// the sums to the usage thread when it is free. Rows without an entry
    /// in `before` (not written with counters) are not counted.
    pub fn account(&mut self, rows: &[AcctEvent], before: &Before) {
        let snapshot = self.shared.snapshot.load();
        for e in rows {
            if e.kind == AcctKind::NasReboot {
                continue;
            }
            let Some(prev) = before.get(&e.unique_id) else {
                continue;
            };
            let Some((_, fup)) = fup_of(&snapshot, &crate::text::unstored(&e.username)) else {
                continue;
            };
            let delta = usage_delta(*prev, octets(e), e.session_time.unwrap_or(0));
            let at = e.event_time.with_timezone(&Local).time();
            let counted = fup.counted(delta, at);
            if counted > 0 {
                *self.pending.entry(e.username.clone()).or_default() += counted;
            }
        }
        self.flush();
    }

    /// Sums are waiting for the usage thread (it was busy).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Hands the pending sums to the usage thread if it is free. The
    /// writer calls it while it waits, too: after the last batch of a
    /// burst, nothing else would hand them over until the next event.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match self.usage.try_send(std::mem::take(&mut self.pending)) {
            Ok(()) => {}
            // Busy: keep summing, hand over after a later batch.
            Err(crossbeam_channel::TrySendError::Full(back)) => self.pending = back,
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {}
        }
    }

    /// At shutdown: hands over what is still pending.
    pub fn finish(mut self) {
        if !self.pending.is_empty() {
            let _ = self.usage.send(std::mem::take(&mut self.pending));
        }
    }
}

impl UsageWorker {
    /// Runs until the writer's sender is gone and everything is counted.
    pub fn run(mut self) {
        while let Ok(sums) = self.rx.recv() {
            self.count(sums);
        }
    }

    fn count(&mut self, sums: Sums) {
        let deltas: Vec<(String, u64)> = sums.into_iter().collect();
        let rows = match self.store.add_usage(&deltas) {
            Ok(rows) => rows,
            Err(e) => {
                self.stats.usage_errors.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "quota: usage of {} subscribers not counted: {e}",
                    deltas.len()
                );
                return;
            }
        };
        let snapshot = self.shared.snapshot.load_full();
        for row in rows {
            let Some((_, fup)) = fup_of(&snapshot, row.username.as_bytes()) else {
                continue;
            };
            let reached = fup.levels_for(row.daily_bytes, row.monthly_bytes);
            // Levels only go up here; the resets bring them down.
            let raised = Levels {
                daily: reached.daily.max(row.levels.daily),
                monthly: reached.monthly.max(row.levels.monthly),
            };
            if raised == row.levels {
                continue;
            }
            match self
                .store
                .raise_fup_levels(&row.username, row.levels, raised)
            {
                Ok(true) => {}
                // Another node (or a reset) changed the levels since the
                // totals were read: the change and its CoA are its own.
                Ok(false) => continue,
                Err(e) => {
                    self.stats.usage_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        "quota: cannot record the FUP level of {}: {e}",
                        row.username
                    );
                    continue;
                }
            }
            self.stats.tier_changes.fetch_add(1, Ordering::Relaxed);
            info!(
                user = %row.username,
                daily_bytes = row.daily_bytes,
                monthly_bytes = row.monthly_bytes,
                daily_level = raised.daily,
                monthly_level = raised.monthly,
                "FUP tier reached"
            );
            // The CoA comes from the quota job's leader (see the jobs
            // thread): at once if that is this node, else at its next check.
            self.shared.tiers_raised.store(true, Ordering::Release);
        }
    }
}
