//! What the control thread reports about the process: shard heartbeats,
//! the loader's view of the database, and CoA results. Written by the
//! threads that know (off the packet path), read at scrape time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::coa::{CoaKind, CoaResult};
use crate::server::Shared;

/// A shard that has not published its counters for this long is stuck.
pub const SHARD_STALL: Duration = Duration::from_secs(2);

/// Written by the loader thread.
#[derive(Debug)]
pub struct LoaderStatus {
    pub database_up: AtomicBool,
    /// Milliseconds since [`Shared::origin`] of the last poll that succeeded.
    pub synced_ms: AtomicU64,
    /// `u64::MAX` until the first count.
    pub open_sessions: AtomicU64,
}

impl Default for LoaderStatus {
    fn default() -> Self {
        LoaderStatus {
            database_up: AtomicBool::new(true),
            synced_ms: AtomicU64::new(0),
            open_sessions: AtomicU64::new(u64::MAX),
        }
    }
}

/// One reading of everything `/healthz` and the gauges report.
#[derive(Debug)]
pub struct Status {
    pub shards: usize,
    pub shards_alive: usize,
    pub database_up: bool,
    pub snapshot_age: Duration,
    pub nas: usize,
    pub subscribers: usize,
    pub open_sessions: Option<u64>,
    pub uptime: Duration,
}

impl Shared {
    /// Milliseconds since the process' clock origin, for heartbeats.
    pub fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    pub fn status(&self) -> Status {
        let now = self.now_ms();
        let stall = SHARD_STALL.as_millis() as u64;
        let shards_alive = self
            .stats
            .iter()
            .filter(|s| now.saturating_sub(s.heartbeat_ms.load(Ordering::Relaxed)) <= stall)
            .count();
        let snapshot = self.snapshot.load();
        let synced = self.loader_status.synced_ms.load(Ordering::Relaxed);
        let open = self.loader_status.open_sessions.load(Ordering::Relaxed);
        Status {
            shards: self.stats.len(),
            shards_alive,
            database_up: self.loader_status.database_up.load(Ordering::Relaxed),
            snapshot_age: Duration::from_millis(now.saturating_sub(synced)),
            nas: snapshot.nas.len(),
            subscribers: snapshot.subscribers.len(),
            open_sessions: (open != u64::MAX).then_some(open),
            uptime: self.origin.elapsed(),
        }
    }
}

/// CoA-Request and Disconnect-Request results, by kind and result.
#[derive(Debug, Default)]
pub struct CoaStats {
    counts: [[AtomicU64; CoaResult::ALL.len()]; 2],
}

impl CoaStats {
    fn counter(&self, kind: CoaKind, result: CoaResult) -> &AtomicU64 {
        let r = CoaResult::ALL
            .iter()
            .position(|x| *x == result)
            .expect("every result is in ALL");
        &self.counts[kind as usize][r]
    }

    pub fn record(&self, kind: CoaKind, result: CoaResult) {
        self.counter(kind, result).fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, kind: CoaKind, result: CoaResult) -> u64 {
        self.counter(kind, result).load(Ordering::Relaxed)
    }

    pub fn encode(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(
            "shardius_coa_requests",
            "CoA-Requests and Disconnect-Requests sent by the server, by result",
            None,
            MetricType::Counter,
        )?;
        for kind in [CoaKind::Coa, CoaKind::Disconnect] {
            for result in CoaResult::ALL {
                family
                    .encode_family(&[("kind", kind.as_str()), ("result", result.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(&self.get(kind, result), None)?;
            }
        }
        Ok(())
    }
}

impl LoaderStatus {
    pub fn synced(&self, shared_now_ms: u64) {
        self.database_up.store(true, Ordering::Relaxed);
        self.synced_ms.store(shared_now_ms, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.database_up.store(false, Ordering::Relaxed);
    }
}
