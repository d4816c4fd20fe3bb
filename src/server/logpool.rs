//! The `radius_logs` pool: a fixed set of workers draining one bounded
//! queue ([`queue`]) and batch-inserting into `radius_logs` (COPY on
//! PostgreSQL). Shards `try_send`: when the queue is full, or a worker is
//! taking rows from it that instant, the event is dropped and counted
//! (`shardius_radius_log_dropped_total`), so neither a slow database nor a
//! descheduled worker ever slows authentication. Best-effort
//! observability, not billing.
//!
//! On the embedded store there is one worker, writing to a database file
//! of its own (`shardius-logs.db`): SQLite has one write lock per file,
//! and a worker under SCHED_IDLE that holds it while busy shards keep its
//! core (the defect seen at ~100,000 PAP/s: accounting p99 3.7 s, batches
//! spooled as "database is locked") must never hold the accounting
//! writer's lock. Several workers on one file would only queue on its lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;

use tracing::{info, warn};

use crate::store::{write_splitting, LogEntry, LogSink};

/// Rows per insert at most.
const BATCH: usize = 512;
/// How long an idle worker sleeps before it looks at the queue again.
const POLL: Duration = Duration::from_millis(5);

/// The rows on their way to the workers.
struct Queue {
    rows: Mutex<VecDeque<LogEntry>>,
    capacity: usize,
    /// Live [`LogSender`]s: the workers end when none is left and the
    /// queue is empty.
    senders: AtomicUsize,
}

/// The queue from the shards and the jobs thread to the radius_logs
/// workers, bounded at `capacity` rows.
///
/// Not a crossbeam channel, on purpose: a bounded crossbeam sender spins
/// while a receiver is between claiming a slot and releasing it. The
/// workers run at SCHED_IDLE; with every thread on one core (`taskset`,
/// small boxes), a worker descheduled there kept its shard spinning until
/// the scheduler next gave the idle-class thread a slice: p99.9 of 0.3 to
/// 0.6 s at 30,000 logins/s, and up to a tenth of a shard's time in
/// `try_send` at full load (issue 18's profiles). A sender here only ever
/// `try_lock`s; a worker holds the lock to move at most 512 rows
/// out, and a row that finds the lock taken is dropped and counted.
pub fn queue(capacity: usize) -> (LogSender, LogReceiver) {
    let queue = Arc::new(Queue {
        rows: Mutex::new(VecDeque::new()),
        capacity: capacity.max(1),
        senders: AtomicUsize::new(1),
    });
    (LogSender(queue.clone()), LogReceiver(queue))
}

/// The sending side of [`queue`]; never blocks, never spins.
pub struct LogSender(Arc<Queue>);

impl LogSender {
    /// Queues `row`, or gives it back when the queue is full or a worker
    /// holds it this instant (the caller counts the drop).
    pub fn try_send(&self, row: LogEntry) -> Result<(), LogEntry> {
        let mut rows = match self.0.rows.try_lock() {
            Ok(rows) => rows,
            Err(TryLockError::WouldBlock) => return Err(row),
            // A worker panicked holding the lock: its rows are intact.
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
        };
        if rows.len() >= self.0.capacity {
            return Err(row);
        }
        rows.push_back(row);
        Ok(())
    }
}

impl Clone for LogSender {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::AcqRel);
        LogSender(self.0.clone())
    }
}

impl Drop for LogSender {
    fn drop(&mut self) {
        self.0.senders.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The workers' side of [`queue`].
#[derive(Clone)]
pub struct LogReceiver(Arc<Queue>);

impl LogReceiver {
    /// Moves up to 512 rows into `into`, sleeping 5 ms at a time
    /// while there are none. False once every sender is gone and the
    /// queue is drained.
    pub fn take(&self, into: &mut Vec<LogEntry>) -> bool {
        loop {
            // Read before looking: rows a sender queued before it went are
            // seen by the look that follows.
            let senders_gone = self.0.senders.load(Ordering::Acquire) == 0;
            {
                let mut rows = self.0.rows.lock().unwrap_or_else(|p| p.into_inner());
                if !rows.is_empty() {
                    let n = rows.len().min(BATCH);
                    into.extend(rows.drain(..n));
                    return true;
                }
            }
            if senders_gone {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }
}

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
/// the queue is drained.
pub fn spawn(
    stores: Vec<Box<dyn LogSink>>,
    rx: LogReceiver,
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
                    while rx.take(&mut batch) {
                        write_batch(store.as_mut(), &batch, &stats, &mut failing);
                        batch.clear();
                    }
                })
                .expect("spawning a thread only fails when the process is out of resources")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: usize) -> LogEntry {
        LogEntry {
            at: chrono::Utc::now(),
            nas_ip: "127.0.0.1".parse().unwrap(),
            username: format!("user{n}").into(),
            event: "auth",
            result: "accept",
            reason: None,
            shard: 0,
        }
    }

    #[test]
    fn a_full_queue_gives_the_row_back_and_a_taken_batch_makes_room() {
        let (tx, rx) = queue(3);
        for n in 0..3 {
            tx.try_send(row(n)).unwrap();
        }
        assert_eq!(tx.try_send(row(3)).unwrap_err().username, "user3");
        let mut batch = Vec::new();
        assert!(rx.take(&mut batch));
        let names: Vec<_> = batch.iter().map(|r| r.username.as_str()).collect();
        assert_eq!(names, ["user0", "user1", "user2"]);
        tx.try_send(row(4)).unwrap();
    }

    #[test]
    fn a_sender_never_waits_for_a_worker_that_holds_the_queue() {
        let (tx, rx) = queue(10);
        // What a worker descheduled while moving rows out looks like.
        let held = rx.0.rows.lock().unwrap();
        assert!(tx.try_send(row(1)).is_err(), "dropped, not waited for");
        drop(held);
        tx.try_send(row(2)).unwrap();
    }

    #[test]
    fn workers_drain_what_was_sent_and_end_when_every_sender_is_gone() {
        let (tx, rx) = queue(10_000);
        let tx2 = tx.clone();
        let worker = {
            let rx = rx.clone();
            std::thread::spawn(move || {
                let mut seen = 0;
                let mut batch = Vec::new();
                while rx.take(&mut batch) {
                    assert!(batch.len() <= BATCH);
                    seen += batch.len();
                    batch.clear();
                }
                seen
            })
        };
        let mut sent = 0;
        for n in 0..2000 {
            let tx = if n % 2 == 0 { &tx } else { &tx2 };
            // Dropped only while the worker holds the lock that instant.
            sent += usize::from(tx.try_send(row(n)).is_ok());
        }
        assert!(sent > 0);
        drop(tx);
        drop(tx2);
        assert_eq!(worker.join().unwrap(), sent);
        let mut batch = Vec::new();
        assert!(!rx.take(&mut batch), "nothing left, nobody to send");
    }
}
