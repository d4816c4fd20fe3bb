//! The cluster thread: this node's registry row and heartbeat, and the
//! leases of the singleton jobs ([`JOBS`]). Every `cluster.heartbeat_ms`
//! it writes the heartbeat and, for each job, takes the lease if it is
//! free or expired, or renews its own; what it holds is published in
//! [`Leadership`], which the jobs thread asks before it acts.
//!
//! Why a lease and not a session advisory lock: PostgreSQL releases an
//! advisory lock only when it notices the holder's connection is dead,
//! which for a frozen node (SIGSTOP, a hung VM) whose TCP connection
//! stays open is never. A lease runs out by the database's clock whatever
//! the holder does, so another node takes over within `lease_ms +
//! heartbeat_ms`. The old holder stops acting before that: it counts its
//! lease from the moment it *sent* the renewal, less a margin, on its own
//! monotonic clock (which keeps running while the process is stopped), so
//! a node that wakes after the lease ran out knows at once it no longer
//! leads. And every write a job makes carries a [`Fence`] (holder and
//! epoch) checked in the write's own transaction with the lease row
//! locked, so even a leader that acted on a stale belief cannot commit.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::model::{Fence, NodeInfo, JOBS};
use crate::server::Shared;
use crate::store::ClusterStore;

/// What this node holds, per job; written by the cluster thread, read by
/// the jobs thread and the metrics.
#[derive(Debug)]
pub struct Leadership {
    node: String,
    origin: Instant,
    jobs: [JobLease; JOBS.len()],
    /// Nodes whose heartbeat is fresh, as last read; 0 until then.
    pub nodes_alive: AtomicU64,
}

#[derive(Debug, Default)]
struct JobLease {
    /// The lease's epoch while this node holds it; 0 when it does not.
    epoch: AtomicI64,
    /// Until when (ms since `origin`) this node may act on the lease.
    valid_until_ms: AtomicU64,
    /// Changes of holder this node saw.
    changes: AtomicU64,
    /// The holder as last read ("" = none yet).
    holder: Mutex<String>,
}

impl Leadership {
    pub fn new(node: String) -> Leadership {
        Leadership {
            node,
            origin: Instant::now(),
            jobs: Default::default(),
            nodes_alive: AtomicU64::new(0),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn slot(&self, job: &str) -> Option<&JobLease> {
        JOBS.iter().position(|j| *j == job).map(|i| &self.jobs[i])
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// The fence to act on `job` with, if this node leads it right now.
    pub fn fence(&self, job: &'static str) -> Option<Fence> {
        let slot = self.slot(job)?;
        let epoch = slot.epoch.load(Ordering::Acquire);
        if epoch == 0 || self.now_ms() >= slot.valid_until_ms.load(Ordering::Acquire) {
            return None;
        }
        Some(Fence {
            job,
            node: self.node.clone(),
            epoch,
        })
    }

    /// 1 on the leader of `job`, 0 elsewhere (`shardius_job_leader`).
    pub fn leads(&self, job: &'static str) -> bool {
        self.fence(job).is_some()
    }

    /// Leadership changes of `job` seen by this node.
    pub fn changes(&self, job: &str) -> u64 {
        self.slot(job)
            .map_or(0, |s| s.changes.load(Ordering::Relaxed))
    }

    fn hold(&self, job: &str, epoch: i64, valid_until: Instant) {
        if let Some(slot) = self.slot(job) {
            let until = valid_until
                .saturating_duration_since(self.origin)
                .as_millis() as u64;
            slot.valid_until_ms.store(until, Ordering::Release);
            slot.epoch.store(epoch, Ordering::Release);
        }
    }

    /// Stops acting on every job at once (the database is unreachable).
    fn drop_all(&self) {
        for slot in &self.jobs {
            slot.epoch.store(0, Ordering::Release);
        }
    }

    /// Records the holder read for `job`; logs and counts a change.
    fn saw_holder(&self, job: &str, holder: &str) {
        let Some(slot) = self.slot(job) else { return };
        let mut last = slot.holder.lock().unwrap_or_else(|e| e.into_inner());
        if *last == holder {
            return;
        }
        if !last.is_empty() {
            slot.changes.fetch_add(1, Ordering::Relaxed);
        }
        let was = if last.is_empty() {
            "none".to_owned()
        } else {
            last.clone()
        };
        info!("leader of {job}: {holder} (was {was})");
        *last = holder.to_owned();
    }
}

/// The cluster thread's state.
pub struct ClusterThread {
    pub store: Box<dyn ClusterStore>,
    pub shared: Arc<Shared>,
    /// The spool backlog, reported with the heartbeat.
    pub writer: Arc<crate::server::accounting::WriterStats>,
    pub listen: String,
}

impl ClusterThread {
    pub fn run(mut self) {
        let c = &self.shared.config.cluster;
        let every = Duration::from_millis(c.heartbeat_ms);
        let ttl = Duration::from_millis(c.lease_ms);
        // Stop acting a little before the database would let another node
        // in, for the time a renewal takes to reach it.
        let margin = (ttl / 5).min(Duration::from_millis(500));
        let dead_after = chrono::Duration::milliseconds(c.node_dead_after_ms as i64);
        let mut started = true;
        let mut failing = false;
        let mut next = Instant::now();
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            next += every;
            match self.turn(started, ttl, margin, dead_after) {
                Ok(()) => {
                    started = false;
                    if std::mem::take(&mut failing) {
                        info!("cluster: the database answers again");
                    }
                }
                Err(e) => {
                    self.shared.leadership.drop_all();
                    if !std::mem::replace(&mut failing, true) {
                        warn!("cluster: heartbeat and leases failed, this node leads nothing until they work: {e}");
                    }
                }
            }
            let now = Instant::now();
            if next < now {
                next = now;
            }
            super::sleep_unless(&self.shared.shutdown, next - now);
        }
        // Hand the leases over now rather than when they run out: stop
        // acting on all of them first, then give each up.
        let node = self.shared.leadership.node().to_owned();
        let held: Vec<&str> = JOBS
            .into_iter()
            .filter(|job| self.shared.leadership.leads(job))
            .collect();
        self.shared.leadership.drop_all();
        for job in held {
            let _ = self.store.release_lease(job, &node);
        }
    }

    fn turn(
        &mut self,
        started: bool,
        ttl: Duration,
        margin: Duration,
        dead_after: chrono::Duration,
    ) -> crate::store::Result<()> {
        let leadership = &self.shared.leadership;
        let status = self.shared.status();
        let info = NodeInfo {
            name: leadership.node().to_owned(),
            listen: self.listen.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            snapshot_age_ms: status.snapshot_age.as_millis() as i64,
            spool_bytes: self.writer.spool_bytes.load(Ordering::Relaxed) as i64,
        };
        self.store.heartbeat(&info, started)?;
        for job in JOBS {
            let sent = Instant::now();
            let lease = self.store.acquire_lease(job, leadership.node(), ttl)?;
            if lease.holder == leadership.node() {
                leadership.hold(job, lease.epoch, sent + ttl - margin);
            } else {
                leadership.hold(job, 0, sent);
            }
            leadership.saw_holder(job, &lease.holder);
        }
        let view = self.store.cluster_view()?;
        let alive = view
            .nodes
            .iter()
            .filter(|n| view.is_alive(n, dead_after))
            .count();
        leadership
            .nodes_alive
            .store(alive as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_acted_on_only_while_valid_and_held() {
        let l = Leadership::new("a".into());
        assert!(l.fence("expiry").is_none());
        l.hold("expiry", 7, Instant::now() + Duration::from_secs(60));
        let f = l.fence("expiry").unwrap();
        assert_eq!((f.node.as_str(), f.epoch), ("a", 7));
        assert!(l.fence("stale-sessions").is_none());
        // Past its validity (a node that was stopped): no longer leads.
        l.hold("expiry", 7, Instant::now());
        assert!(l.fence("expiry").is_none());
        l.hold("expiry", 8, Instant::now() + Duration::from_secs(60));
        l.drop_all();
        assert!(!l.leads("expiry"));
    }

    #[test]
    fn holder_changes_are_counted_not_the_first_sight() {
        let l = Leadership::new("a".into());
        l.saw_holder("expiry", "b");
        l.saw_holder("expiry", "b");
        assert_eq!(l.changes("expiry"), 0);
        l.saw_holder("expiry", "a");
        assert_eq!(l.changes("expiry"), 1);
    }
}
