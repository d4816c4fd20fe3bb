//! The `radius_logs` pool: a fixed set of workers draining one bounded
//! channel and batch-inserting into `radius_logs` (COPY on PostgreSQL).
//! Shards `try_send`: when the channel is full the event is dropped and
//! counted (`shardius_radius_log_dropped_total`), so a slow database never
//! slows authentication. Best-effort observability, not billing.
//!
//! On the embedded store there is one worker, writing to a database file
//! of its own (`shardius-logs.db`): SQLite has one write lock per file,
//! and a worker under SCHED_IDLE that holds it while busy shards keep its
//! core (the defect seen at ~100,000 PAP/s: accounting p99 3.7 s, batches
//! spooled as "database is locked") must never hold the accounting
//! writer's lock. Several workers on one file would only queue on its lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::Receiver;
use tracing::{info, warn};

use crate::store::{write_splitting, LogEntry, LogSink};

/// Rows per insert at most.
const BATCH: usize = 512;

#[derive(Debug, Default)]
pub struct LogPoolStats {
    pub written: AtomicU64,
    /// Rows lost because their insert failed (the database was away, or
    /// refused that row; the other rows of its batch are written).
    pub failed: AtomicU64,
}

/// Logging must never take CPU from answering. The workers run under
/// SCHED_IDLE: they run only when a core has nothing else to do and never
/// preempt a shard, so the queue overflows (counted) instead of
/// authentication slowing down. Measured on 2 cores with SQLite: at normal
/// priority 8 log workers cut one shard from 134,600 to 55,000 PAP/s, and
/// at nice 10 they still raised p99 at 19,500/s from 0.26 to 1.7 ms.
#[allow(unsafe_code)] // sched_setscheduler(2): no safe wrapper in std or libc
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread on Linux; a failure (e.g. a
    // seccomp filter) leaves the thread at normal priority, so fall back
    // to nice 19.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            let _ = libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        }
    }
}

/// Writes one batch; a row the database refuses for its data is dropped
/// alone (counted), the rest of the batch is written.
fn write_batch(
    store: &mut dyn LogSink,
    batch: &[LogEntry],
    stats: &LogPoolStats,
    failing: &mut bool,
) {
    let mut refused = 0u64;
    let result = write_splitting(&mut |rows| store.write_logs(rows), batch, &mut |row, e| {
        refused += 1;
        warn!(
            "a radius_logs row was refused by the database and dropped (user={} event={}): {e}",
            row.username, row.event
        );
        Ok(())
    });
    let lost = match &result {
        Ok(()) => refused,
        Err(stopped) => refused + (batch.len() - stopped.handled) as u64,
    };
    stats.failed.fetch_add(lost, Ordering::Relaxed);
    stats
        .written
        .fetch_add(batch.len() as u64 - lost, Ordering::Relaxed);
    match result {
        Ok(()) => {
            if std::mem::take(failing) {
                info!("radius_logs writes resumed");
            }
        }
        Err(stopped) => {
            if !std::mem::replace(failing, true) {
                warn!("radius_logs rows dropped: {}", stopped.cause);
            }
        }
    }
}

/// A connection per radius_logs worker, none with `log.radius_logs` off:
/// one on the embedded store (its file has one write lock), `log.workers`
/// on PostgreSQL.
pub fn open_stores(
    config: &crate::config::Config,
    open_store: super::StoreFactory<'_>,
) -> Result<Vec<Box<dyn LogSink>>, crate::store::StoreError> {
    if !config.log.radius_logs {
        return Ok(Vec::new());
    }
    let workers = match config.database.url {
        crate::store::DatabaseUrl::Sqlite(_) => 1,
        crate::store::DatabaseUrl::Postgres(_) => config.log.workers,
    };
    (0..workers)
        .map(|_| open_store().map(|s| -> Box<dyn LogSink> { s }))
        .collect()
}

/// Starts `stores.len()` workers; they end when every sender is gone and
/// the channel is drained.
pub fn spawn(
    stores: Vec<Box<dyn LogSink>>,
    rx: Receiver<LogEntry>,
    stats: Arc<LogPoolStats>,
) -> Vec<std::thread::JoinHandle<()>> {
    stores
        .into_iter()
        .enumerate()
        .map(|(i, mut store)| {
            let rx = rx.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name(format!("radius-log-{i}"))
                .spawn(move || {
                    lower_priority();
                    let mut batch = Vec::with_capacity(BATCH);
                    let mut failing = false;
                    while let Ok(first) = rx.recv() {
                        batch.push(first);
                        while batch.len() < BATCH {
                            match rx.try_recv() {
                                Ok(e) => batch.push(e),
                                Err(_) => break,
                            }
                        }
                        write_batch(store.as_mut(), &batch, &stats, &mut failing);
                        batch.clear();
                    }
                })
                .expect("spawning a thread only fails when the process is out of resources")
        })
        .collect()
}
