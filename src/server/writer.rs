//! The accounting writer: one thread that owns the accounting database
//! connection. Shards hand it events over a bounded crossbeam channel;
//! it collects a batch (up to `batch_max_events`, or `batch_max_wait_ms`
//! after the first event), folds the events of one session into one row,
//! commits the batch in one transaction, and only then sends each
//! Accounting-Response itself, on a clone of the socket the request came
//! in on, and tells the shard its tickets are committed.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use tracing::{error, info, warn};

use crate::accounting::spool::Spool;
use crate::accounting::{AcctEvent, AcctKind};
use crate::config::AccountingConfig;
use crate::store::Store;

/// One accounting event in flight from a shard.
pub struct AcctMessage {
    pub event: AcctEvent,
    /// The Accounting-Response, already signed, sent after the commit.
    pub reply: Vec<u8>,
    pub dest: SocketAddr,
    pub shard: usize,
    /// Which of the shard's accounting sockets it arrived on.
    pub socket: usize,
    pub ticket: u64,
}

/// What the writer did, for the shutdown summary and the metrics.
#[derive(Debug)]
pub struct WriterStats {
    pub events: AtomicU64,
    pub batches: AtomicU64,
    pub rows: AtomicU64,
    pub stale_closed: AtomicU64,
    /// Batches acknowledged from the spool while the database was away.
    pub spooled_batches: AtomicU64,
    pub spool_bytes: AtomicU64,
    /// Set while batches go to the spool.
    pub spooling: AtomicBool,
    /// Batches that neither the database nor the spool took at first try.
    pub stalled_batches: AtomicU64,
    pub batch_size: Histogram,
    pub commit_seconds: Histogram,
}

impl Default for WriterStats {
    fn default() -> Self {
        WriterStats {
            events: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            stale_closed: AtomicU64::new(0),
            spooled_batches: AtomicU64::new(0),
            spool_bytes: AtomicU64::new(0),
            spooling: AtomicBool::new(false),
            stalled_batches: AtomicU64::new(0),
            batch_size: super::metrics::batch_size_histogram(),
            commit_seconds: super::metrics::commit_seconds_histogram(),
        }
    }
}

pub struct Writer {
    pub store: Box<dyn Store>,
    pub spool: Spool,
    /// Set while batches go to the spool: the outage is logged once.
    pub spooling: bool,
    pub rx: Receiver<AcctMessage>,
    /// Per shard, per accounting listen address: a clone of the socket.
    pub sockets: Vec<Vec<UdpSocket>>,
    /// Per shard: the highest committed ticket.
    pub committed: Arc<[AtomicU64]>,
    pub stats: Arc<WriterStats>,
    pub config: AccountingConfig,
    /// Quota/FUP bookkeeping on each committed batch.
    pub quota: Option<super::quota::Quota>,
}

const STALE_FIRST_RUN: Duration = Duration::from_secs(10);
const SPOOL_REPLAY_EVERY: Duration = Duration::from_secs(1);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

impl Writer {
    /// Runs until every shard has dropped its sender and the queue is
    /// drained: so on shutdown everything queued is committed and answered.
    pub fn run(mut self) {
        let max_wait = Duration::from_millis(self.config.batch_max_wait_ms);
        let mut next_stale = Instant::now() + STALE_FIRST_RUN;
        let mut next_replay = Instant::now();
        let mut batch: Vec<AcctMessage> = Vec::with_capacity(self.config.batch_max_events);
        loop {
            if !self.spool.is_empty() && Instant::now() >= next_replay {
                next_replay = Instant::now() + SPOOL_REPLAY_EVERY;
                self.replay_spool();
            }
            match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(first) => batch.push(first),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if !batch.is_empty() {
                let deadline = Instant::now() + max_wait;
                while batch.len() < self.config.batch_max_events {
                    match self.rx.recv_deadline(deadline) {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                self.commit(&mut batch);
            }
            if Instant::now() >= next_stale {
                next_stale =
                    Instant::now() + Duration::from_secs(self.config.stale_check_interval_secs);
                self.close_stale();
            }
        }
        if !self.spool.is_empty() {
            self.replay_spool();
        }
        if let Some(q) = self.quota.take() {
            q.finish();
        }
        info!(
            "writer stopped: events={} batches={} rows={} spooled_batches={} spool_bytes={}",
            self.stats.events.load(Ordering::Relaxed),
            self.stats.batches.load(Ordering::Relaxed),
            self.stats.rows.load(Ordering::Relaxed),
            self.stats.spooled_batches.load(Ordering::Relaxed),
            self.spool.len_bytes()
        );
    }

    /// Makes `batch` durable, in the database or else in the spool, then
    /// acknowledges it. Nothing is acknowledged before it is durable; if
    /// neither takes it (spool full), the writer keeps retrying and the
    /// shards' queue fills, which they count as back-pressure drops.
    fn commit(&mut self, batch: &mut Vec<AcctMessage>) {
        let rows = coalesce(batch.iter().map(|m| &m.event));
        if let Some(q) = &mut self.quota {
            q.prime(self.store.as_mut(), batch.iter().map(|m| &m.event));
        }
        let started = Instant::now();
        let mut wait = Duration::from_millis(50);
        let mut logged = false;
        loop {
            let db_error = match self.store.write_accounting(&rows) {
                Ok(()) => {
                    if std::mem::take(&mut self.spooling) {
                        info!("database writable again: accounting goes to the database");
                    }
                    break;
                }
                Err(e) => e,
            };
            match self.spool.append(&rows) {
                Ok(()) => {
                    self.stats.spooled_batches.fetch_add(1, Ordering::Relaxed);
                    if !std::mem::replace(&mut self.spooling, true) {
                        warn!(
                            "database unavailable, accounting is acknowledged from the spool {} and replayed later: {db_error}",
                            self.config.spool_path.display()
                        );
                    }
                    self.stats
                        .spool_bytes
                        .store(self.spool.len_bytes(), Ordering::Relaxed);
                    break;
                }
                Err(spool_error) => {
                    if !logged {
                        self.stats.stalled_batches.fetch_add(1, Ordering::Relaxed);
                        error!("accounting batch of {} events not acknowledged, retrying: {db_error}; {spool_error}", batch.len());
                        logged = true;
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(MAX_RETRY_WAIT);
                }
            }
        }
        self.stats
            .events
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.stats
            .rows
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.spooling.store(self.spooling, Ordering::Relaxed);
        self.stats.batch_size.observe(batch.len() as f64);
        self.stats
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        // Publish the committed tickets first: a NAS that retransmits the
        // moment it sees a response must find it answerable in its shard's
        // duplicate cache, not "in progress".
        for m in batch.iter() {
            self.committed[m.shard].fetch_max(m.ticket, Ordering::Release);
        }
        for m in batch.iter() {
            if let Some(socket) = self.sockets.get(m.shard).and_then(|s| s.get(m.socket)) {
                // A lost response is retransmitted for by the NAS and then
                // answered from the shard's duplicate cache.
                let _ = socket.send_to(&m.reply, m.dest);
            }
        }
        // Usage counts once the batch is in the database, after the NAS has
        // its answers; a spooled batch is counted by the session's next
        // event, whose cumulative counters include it.
        if let (Some(q), false) = (&mut self.quota, self.spooling) {
            q.account(batch.iter().map(|m| &m.event));
        }
        batch.clear();
    }

    /// Writes the spooled batches to the database and empties the spool;
    /// stops at the first failure and tries again later (replaying a batch
    /// twice is harmless: the upserts are idempotent).
    fn replay_spool(&mut self) {
        let contents = match self.spool.read() {
            Ok(c) => c,
            Err(e) => {
                error!("cannot read the accounting spool: {e}");
                return;
            }
        };
        for batch in &contents.batches {
            if self.store.write_accounting(batch).is_err() {
                return;
            }
        }
        if contents.torn_bytes > 0 {
            warn!(
                "accounting spool: a torn record of {} bytes at its end was skipped (a write cut short by a crash, never acknowledged)",
                contents.torn_bytes
            );
        }
        match self.spool.clear() {
            Ok(()) => {
                self.stats.spool_bytes.store(0, Ordering::Relaxed);
                info!(
                    batches = contents.batches.len(),
                    "accounting spool replayed into the database and cleared"
                );
            }
            Err(e) => error!("cannot clear the accounting spool after replaying it: {e}"),
        }
    }

    fn close_stale(&mut self) {
        let before = Utc::now() - chrono::Duration::seconds(self.config.stale_after_secs as i64);
        match self.store.close_stale_sessions(before) {
            Ok(n) => {
                self.stats.stale_closed.fetch_add(n, Ordering::Relaxed);
                info!(
                    closed = n,
                    "stale-session check: closed sessions without an update since {before}"
                );
            }
            Err(e) => warn!("stale-session check failed: {e}"),
        }
    }
}

/// One row per session: later events of a session are folded into the
/// first with the upsert's own rules; NAS reboots stay separate events.
pub fn coalesce<'a>(events: impl Iterator<Item = &'a AcctEvent>) -> Vec<AcctEvent> {
    let mut rows: Vec<AcctEvent> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for e in events {
        if e.kind == AcctKind::NasReboot {
            rows.push(e.clone());
            continue;
        }
        match index.get(e.unique_id.as_str()) {
            Some(&i) => rows[i].absorb(e),
            None => {
                index.insert(&e.unique_id, rows.len());
                rows.push(e.clone());
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: AcctKind, sid: &str, secs: u32, octets: u64) -> AcctEvent {
        crate::accounting::event::test_event(kind, sid, secs, octets)
    }

    #[test]
    fn interims_of_one_session_fold_into_one_row() {
        let events: Vec<AcctEvent> = (1..=1000)
            .map(|i| event(AcctKind::Interim, "s", i, u64::from(i) * 10))
            .collect();
        let rows = coalesce(events.iter());
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].input_octets, Some(10_000));
        assert_eq!(rows[0].session_time, Some(1000));
    }

    #[test]
    fn sessions_stay_apart_and_reboots_are_kept() {
        let events = [
            event(AcctKind::Start, "a", 0, 0),
            event(AcctKind::Start, "b", 0, 0),
            event(AcctKind::NasReboot, "", 5, 0),
            event(AcctKind::Stop, "a", 9, 90),
        ];
        let rows = coalesce(events.iter());
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].kind, AcctKind::Stop);
    }
}
