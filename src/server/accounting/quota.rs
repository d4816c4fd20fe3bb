//! Quota bookkeeping on the accounting writer's batches (README: "Quota and fair usage"). After a
//! batch is durable in the database, the writer works out in memory the
//! traffic each session added since it was last counted ([`Quota`]) and
//! hands the per-subscriber sums to the usage thread ([`UsageWorker`]),
//! which adds them to the daily and monthly usage in one statement, and
//! for a subscriber whose usage crossed a FUP tier records the new level
//! and queues a CoA with the tier's speed for the enforcer. So the
//! accounting path never waits for usage updates or for a NAS: while the
//! usage thread is busy, the writer keeps summing. Only subscribers whose
//! service has tiers or free hours are counted; nothing runs on a shard.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Local;
use tracing::{info, warn};

use crate::accounting::{AcctEvent, AcctKind};
use crate::coa::Change;
use crate::policy::fup::{fup_of, speed_change, usage_delta, Levels};
use crate::server::jobs::Job;
use crate::server::Shared;
use crate::store::{AccountingSink, UsageStore};

/// How often sessions that ended without a Stop are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What quota bookkeeping did, for the metrics.
#[derive(Debug, Default)]
pub struct QuotaStats {
    /// Subscribers moved into a higher FUP tier.
    pub tier_changes: AtomicU64,
    /// Usage updates that failed (the batch itself was committed).
    pub usage_errors: AtomicU64,
}

/// The writer's side: what each session has been counted for, and the
/// sums not yet handed over.
pub struct Quota {
    shared: Arc<Shared>,
    /// To the usage thread; capacity 1, so sums pile up here while it works.
    usage: crossbeam_channel::Sender<Sums>,
    /// Per session (acctuniqueid): the octets and session time last
    /// counted, and when. Sessions that end without a Stop (NAS reboot,
    /// stale) are pruned after `accounting.stale_after_secs`.
    counted: HashMap<String, (u64, u32, Instant)>,
    pending: Sums,
    next_prune: Instant,
}

/// The usage thread: owns a store connection for usage and tier levels.
pub struct UsageWorker {
    pub store: Box<dyn UsageStore>,
    pub shared: Arc<Shared>,
    pub rx: crossbeam_channel::Receiver<Sums>,
    pub jobs: crossbeam_channel::Sender<Job>,
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
            counted: HashMap::new(),
            pending: HashMap::new(),
            next_prune: Instant::now() + PRUNE_EVERY,
        }
    }

    /// Before a batch is written: learns what was already counted for
    /// sessions not seen since start (their radacct row holds it).
    pub fn prime<'a>(
        &mut self,
        store: &mut dyn AccountingSink,
        events: impl Iterator<Item = &'a AcctEvent>,
    ) {
        let snapshot = self.shared.snapshot.load();
        let unknown: Vec<String> = events
            .filter(|e| e.kind != AcctKind::NasReboot)
            .filter(|e| !self.counted.contains_key(&e.unique_id))
            .filter(|e| fup_of(&snapshot, &crate::text::unstored(&e.username)).is_some())
            .map(|e| e.unique_id.clone())
            .collect();
        if unknown.is_empty() {
            return;
        }
        match store.session_counters(&unknown) {
            Ok(rows) => {
                let now = Instant::now();
                for (id, octets, time) in rows {
                    self.counted.insert(id, (octets, time, now));
                }
            }
            Err(e) => warn!("quota: cannot read session counters: {e}"),
        }
    }

    /// After a batch is durable in the database: sums its traffic per
    /// subscriber and hands the sums to the usage thread when it is free.
    pub fn account<'a>(&mut self, events: impl Iterator<Item = &'a AcctEvent>) {
        let snapshot = self.shared.snapshot.load();
        let now = Instant::now();
        if now >= self.next_prune {
            self.next_prune = now + PRUNE_EVERY;
            let keep = Duration::from_secs(self.shared.config.accounting.stale_after_secs);
            self.counted
                .retain(|_, (_, _, at)| now.duration_since(*at) < keep);
        }
        for e in events {
            if e.kind == AcctKind::NasReboot {
                continue;
            }
            let Some((_, fup)) = fup_of(&snapshot, &crate::text::unstored(&e.username)) else {
                continue;
            };
            let (octets, time) = (octets(e), e.session_time.unwrap_or(0));
            let prev = self.counted.get(&e.unique_id).map(|&(o, t, _)| (o, t));
            let delta = usage_delta(prev, octets, time);
            if e.kind == AcctKind::Stop {
                self.counted.remove(&e.unique_id);
            } else if delta > 0 || prev.is_none() {
                self.counted
                    .insert(e.unique_id.clone(), (octets, time, now));
            } else if let Some(entry) = self.counted.get_mut(&e.unique_id) {
                entry.2 = now;
            }
            let at = e.event_time.with_timezone(&Local).time();
            let counted = fup.counted(delta, at);
            if counted > 0 {
                *self.pending.entry(e.username.clone()).or_default() += counted;
            }
        }
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
            let Some((service, fup)) = fup_of(&snapshot, row.username.as_bytes()) else {
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
            if let Err(e) = self.store.set_fup_levels(&row.username, raised) {
                self.stats.usage_errors.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "quota: cannot record the FUP level of {}: {e}",
                    row.username
                );
                continue;
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
            if let Some(speed) = speed_change(service, fup, row.levels, raised) {
                let job = Job {
                    user: row.username.clone(),
                    session: None,
                    change: Change::from(speed),
                    reply: None,
                };
                if self.jobs.try_send(job).is_err() {
                    warn!(user = %row.username, "quota: CoA queue full, the tier speed applies at the next login");
                }
            }
        }
    }
}
