//! The `radius_logs` pool (SPEC §5): a fixed set of workers draining one
//! bounded channel and batch-inserting into `radius_logs` (COPY on
//! PostgreSQL). Shards `try_send`: when the channel is full the event is
//! dropped and counted (`shardius_radius_log_dropped_total`), so a slow
//! database never slows authentication. Best-effort observability, not
//! billing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::Receiver;
use tracing::{info, warn};

use crate::store::{LogEntry, Store};

/// Rows per insert at most.
const BATCH: usize = 512;

#[derive(Debug, Default)]
pub struct LogPoolStats {
    pub written: AtomicU64,
    /// Rows lost because their insert failed (the database was away).
    pub failed: AtomicU64,
}

/// Logging must never take CPU from answering. The workers run under
/// SCHED_IDLE: they run only when a core has nothing else to do and never
/// preempt a shard, so the queue overflows (counted) instead of
/// authentication slowing down. Measured on 2 cores with SQLite: at normal
/// priority 8 log workers cut one shard from 134,600 to 55,000 PAP/s, and
/// at nice 10 they still raised p99 at 19,500/s from 0.26 to 1.7 ms.
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

/// Starts `stores.len()` workers; they end when every sender is gone and
/// the channel is drained.
pub fn spawn(
    stores: Vec<Box<dyn Store>>,
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
                        match store.write_logs(&batch) {
                            Ok(()) => {
                                stats
                                    .written
                                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                                if std::mem::take(&mut failing) {
                                    info!("radius_logs writes resumed");
                                }
                            }
                            Err(e) => {
                                stats
                                    .failed
                                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                                if !std::mem::replace(&mut failing, true) {
                                    warn!(
                                        "radius_logs rows dropped, the database refused them: {e}"
                                    );
                                }
                            }
                        }
                        batch.clear();
                    }
                })
                .expect("spawning a thread only fails when the process is out of resources")
        })
        .collect()
}
