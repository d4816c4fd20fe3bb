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
use tracing::{debug, error, info, warn};

use super::rejected::Rejected;
use super::spool::{sibling, Next, Spool};
use crate::accounting::{AcctEvent, AcctKind};
use crate::config::AccountingConfig;
use crate::store::{write_splitting, AccountingSink, StopCause, Stopped};

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
    /// Sessions the stale-session job closed (it runs on the jobs thread
    /// of the node leading it; counted here with the rest of accounting).
    pub stale_closed: AtomicU64,
    /// Batches acknowledged from the spool while the database was away.
    pub spooled_batches: AtomicU64,
    /// Spool records written to the database afterwards.
    pub replayed_batches: AtomicU64,
    /// Bytes in the spool not replayed yet.
    pub spool_bytes: AtomicU64,
    /// Set while batches go to the spool.
    pub spooling: AtomicBool,
    /// Batches that neither the database nor the spool took at first try.
    pub stalled_batches: AtomicU64,
    /// Events the database refused for their data, set aside in the
    /// `.rejected` file (acknowledged, never dropped).
    pub rejected_events: AtomicU64,
    /// Spool bytes that held no readable record (damage), copied to the
    /// `.unreadable` file: acknowledged accounting may be in them.
    pub spool_unreadable_bytes: AtomicU64,
    /// Events with an octet counter above `i64::MAX`, stored clamped.
    pub clamped_events: AtomicU64,
    /// Events abandoned unacknowledged at shutdown because neither the
    /// database nor the spool took them (their NAS retransmits).
    pub abandoned_events: AtomicU64,
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
            replayed_batches: AtomicU64::new(0),
            spool_bytes: AtomicU64::new(0),
            spooling: AtomicBool::new(false),
            stalled_batches: AtomicU64::new(0),
            rejected_events: AtomicU64::new(0),
            spool_unreadable_bytes: AtomicU64::new(0),
            clamped_events: AtomicU64::new(0),
            abandoned_events: AtomicU64::new(0),
            batch_size: crate::server::control::metrics::batch_size_histogram(),
            commit_seconds: crate::server::control::metrics::commit_seconds_histogram(),
        }
    }
}

pub struct Writer {
    store: Box<dyn AccountingSink>,
    spool: Spool,
    rejected: Rejected,
    /// Set while batches go to the spool: the outage is logged once.
    spooling: bool,
    rx: Receiver<AcctMessage>,
    /// Per shard, per accounting listen address: a clone of the socket.
    sockets: Vec<Vec<UdpSocket>>,
    /// Per shard: the highest committed ticket.
    committed: Arc<[AtomicU64]>,
    stats: Arc<WriterStats>,
    config: AccountingConfig,
    /// Quota/FUP bookkeeping on each committed batch.
    quota: Option<super::quota::Quota>,
    /// The stored counters before the last write (quota bookkeeping).
    before: super::quota::Before,
    /// Set at shutdown: a batch that cannot be made durable is then
    /// abandoned (unacknowledged) instead of retried, so the process exits.
    shutdown: Arc<AtomicBool>,
    /// Earliest next replay attempt while the database is away.
    next_replay: Instant,
    /// Events of the spool record at the replay cursor already handled.
    replay_done: usize,
    last_clamp_warning: Option<Instant>,
    /// Which key each session is written under (see [`super::legacy`]).
    legacy: super::legacy::LegacyKeys,
    /// Simultaneous use: told every durable Start, Stop and reboot.
    sessions: Option<Arc<crate::server::sessions::LiveSessions>>,
}

/// While the database is away, how often the spool's replay is tried.
const SPOOL_RETRY_EVERY: Duration = Duration::from_secs(1);
/// Replay time per turn of the loop, so acknowledgements never wait
/// long behind a large spool.
const REPLAY_SLICE: Duration = Duration::from_millis(20);
/// Replay time allowed at shutdown; the rest waits for the next start.
const REPLAY_AT_SHUTDOWN: Duration = Duration::from_secs(2);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);
const CLAMP_WARNING_EVERY: Duration = Duration::from_secs(60);

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Box<dyn AccountingSink>,
        spool: Spool,
        rx: Receiver<AcctMessage>,
        sockets: Vec<Vec<UdpSocket>>,
        committed: Arc<[AtomicU64]>,
        stats: Arc<WriterStats>,
        config: AccountingConfig,
        shutdown: Arc<AtomicBool>,
    ) -> Writer {
        stats
            .spool_bytes
            .store(spool.pending_bytes(), Ordering::Relaxed);
        Writer {
            store,
            rejected: Rejected::new(sibling(spool.path(), "rejected")),
            spool,
            spooling: false,
            rx,
            sockets,
            committed,
            stats,
            config,
            quota: None,
            before: Default::default(),
            shutdown,
            next_replay: Instant::now(),
            replay_done: 0,
            last_clamp_warning: None,
            legacy: Default::default(),
            sessions: None,
        }
    }

    /// Tells `sessions` of every row made durable.
    pub fn with_sessions(mut self, sessions: Arc<crate::server::sessions::LiveSessions>) -> Writer {
        self.sessions = Some(sessions);
        self
    }

    /// Adds quota/FUP bookkeeping on every committed batch.
    pub fn with_quota(mut self, quota: super::quota::Quota) -> Writer {
        self.quota = Some(quota);
        self
    }

    /// Runs until every shard has dropped its sender and the queue is
    /// drained: so on shutdown everything queued is committed and answered
    /// (or, when neither the database nor the spool takes it, abandoned
    /// unacknowledged for the NAS to retransmit).
    pub fn run(mut self) {
        let max_wait = Duration::from_millis(self.config.batch_max_wait_ms);
        let mut batch: Vec<AcctMessage> = Vec::with_capacity(self.config.batch_max_events);
        loop {
            let replay_due = !self.spool.is_empty() && Instant::now() >= self.next_replay;
            if replay_due {
                self.replay(REPLAY_SLICE);
            }
            // With replay work left, only look at the queue; else wait on it.
            let idle_wait = if !self.spool.is_empty() && Instant::now() >= self.next_replay {
                Duration::ZERO
            } else {
                Duration::from_millis(200)
            };
            match self.rx.recv_timeout(idle_wait) {
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
        }
        if !self.spool.is_empty() {
            self.next_replay = Instant::now();
            self.replay(REPLAY_AT_SHUTDOWN);
        }
        if let Some(q) = self.quota.take() {
            q.finish();
        }
        info!(
            "writer stopped: events={} batches={} rows={} spooled_batches={} spool_bytes={} rejected={} abandoned={}",
            self.stats.events.load(Ordering::Relaxed),
            self.stats.batches.load(Ordering::Relaxed),
            self.stats.rows.load(Ordering::Relaxed),
            self.stats.spooled_batches.load(Ordering::Relaxed),
            self.spool.pending_bytes(),
            self.stats.rejected_events.load(Ordering::Relaxed),
            self.stats.abandoned_events.load(Ordering::Relaxed),
        );
    }

    /// Makes `batch` durable, then acknowledges it. Durable means: in the
    /// database, or (an event the database refuses for its data) in the
    /// `.rejected` file, or (the database away) in the spool. Nothing is
    /// acknowledged before it is durable; if none takes it (spool full),
    /// the writer keeps retrying and the shards' queue fills, which they
    /// count as back-pressure drops. At shutdown such a batch is abandoned.
    fn commit(&mut self, batch: &mut Vec<AcctMessage>) {
        let mut rows = coalesce(batch.iter().map(|m| &m.event));
        self.note_clamped(batch);
        self.before.clear();
        let started = Instant::now();
        let mut wait = Duration::from_millis(50);
        let mut from = 0;
        let mut logged = false;
        loop {
            match self.make_durable(&mut rows[from..]) {
                Ok(()) => break,
                Err((handled, cause, spool_error)) => {
                    from += handled;
                    if !logged {
                        self.stats.stalled_batches.fetch_add(1, Ordering::Relaxed);
                        error!(
                            "accounting batch of {} events not acknowledged, retrying: {cause}; {spool_error}",
                            batch.len()
                        );
                        logged = true;
                    }
                    if self.shutdown.load(Ordering::Relaxed) {
                        self.stats
                            .abandoned_events
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        error!(
                            "shutting down: {} accounting events abandoned unacknowledged (their NAS retransmits them): {cause}; {spool_error}",
                            batch.len()
                        );
                        batch.clear();
                        return;
                    }
                    crate::server::sleep_unless(&self.shutdown, wait);
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
        // The session table learns of Starts and Stops before the NAS does:
        // a login right after a Stop's answer must find the session closed.
        if let Some(s) = &self.sessions {
            s.committed(&rows);
        }
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
        // Usage counts once rows are in the database, after the NAS has its
        // answers; spooled rows count when the spool is replayed (or, if a
        // later event of the session gets there first, with it: the
        // difference to the stored counters includes them).
        if let Some(q) = &mut self.quota {
            q.account(&rows, &self.before);
        }
        batch.clear();
    }

    /// Writes `rows` to the database (refused ones set aside), or what the
    /// database did not take to the spool. Err: how many rows from the front were handled, and why neither
    /// the database nor the spool took the rest.
    fn make_durable(
        &mut self,
        rows: &mut [AcctEvent],
    ) -> Result<(), (usize, StopCause, super::spool::SpoolError)> {
        let stopped = match self.write_rows(rows) {
            Ok(()) => {
                if std::mem::take(&mut self.spooling) {
                    info!("database writable again: accounting goes to the database");
                }
                return Ok(());
            }
            Err(stopped) => stopped,
        };
        let rest = &rows[stopped.handled..];
        match self.spool.append(rest) {
            Ok(()) => {
                self.stats.spooled_batches.fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut self.spooling, true) {
                    warn!(
                        "{}; accounting is acknowledged from the spool {} and replayed once the database takes writes again",
                        stopped.cause,
                        self.spool.path().display()
                    );
                }
                self.next_replay = Instant::now() + SPOOL_RETRY_EVERY;
                self.stats
                    .spool_bytes
                    .store(self.spool.pending_bytes(), Ordering::Relaxed);
                Ok(())
            }
            Err(spool_error) => Err((stopped.handled, stopped.cause, spool_error)),
        }
    }

    /// [`write_splitting`] into this writer's store, refused rows set
    /// aside, each under the key its session's row has (see
    /// [`super::legacy`]; a failed lookup stops the write like a failed
    /// write). With quota bookkeeping on and a counted row among them, the
    /// stored counters before each written row land in `self.before`.
    fn write_rows(&mut self, rows: &mut [AcctEvent]) -> Result<(), Stopped> {
        let store = &mut self.store;
        self.legacy
            .resolve(rows, |keys| store.existing_sessions(keys))
            .map_err(|e| Stopped {
                handled: 0,
                cause: StopCause::Store(e),
            })?;
        let rows = &*rows;
        let counted = self.quota.as_ref().is_some_and(|q| q.wants(rows));
        let (store, rejected, stats) = (&mut self.store, &mut self.rejected, &self.stats);
        let before = &mut self.before;
        write_splitting(
            &mut |rows| {
                if !counted {
                    return store.write_accounting(rows);
                }
                let prev = store.write_accounting_counted(rows)?;
                for (e, p) in rows.iter().zip(prev) {
                    before.insert(e.unique_id.clone(), p);
                }
                Ok(())
            },
            rows,
            &mut |row, e| {
                rejected.set_aside(row, &e.to_string(), Utc::now())?;
                stats.rejected_events.fetch_add(1, Ordering::Relaxed);
                error!(
                "accounting event refused by the database, set aside in {} (acknowledged; write it again with `shardius accounting replay` once fixed): session={} user={} nas={}: {e}",
                rejected.path().display(),
                row.session_id,
                row.username,
                row.nas_ip
            );
                Ok(())
            },
        )
    }

    /// Replays spool records into the database for up to `budget`, from
    /// the cursor, one record in memory at a time. While the database is
    /// away it is probed first, at most once a second, and nothing is read.
    fn replay(&mut self, budget: Duration) {
        if self.spooling {
            if let Err(e) = self.store.ping() {
                debug!("spool replay waits for the database: {e}");
                self.next_replay = Instant::now() + SPOOL_RETRY_EVERY;
                return;
            }
        }
        let deadline = Instant::now() + budget;
        while Instant::now() < deadline {
            let next = match self.spool.next_unreplayed() {
                Ok(next) => next,
                Err(e) => {
                    error!("cannot read the accounting spool: {e}");
                    self.next_replay = Instant::now() + SPOOL_RETRY_EVERY;
                    return;
                }
            };
            match next {
                None => {
                    match self.spool.clear_if_replayed() {
                        Ok(true) => {
                            info!("accounting spool replayed into the database and cleared")
                        }
                        Ok(false) => {}
                        Err(e) => {
                            error!("cannot clear the accounting spool after replaying it: {e}")
                        }
                    }
                    break;
                }
                Some(Next::Unreadable {
                    offset,
                    len,
                    copied_to,
                }) => {
                    self.stats
                        .spool_unreadable_bytes
                        .fetch_add(len, Ordering::Relaxed);
                    error!(
                        "accounting spool {}: {len} bytes at offset {offset} hold no readable record (damaged): acknowledged accounting may have been in them; kept in {}; the records after them are replayed",
                        self.spool.path().display(),
                        copied_to.display()
                    );
                }
                Some(Next::Record { mut events, end }) => {
                    let done = self.replay_done.min(events.len());
                    let rows = &mut events[done..];
                    self.before.clear();
                    match self.write_rows(rows) {
                        Ok(()) => {
                            if let Some(q) = &mut self.quota {
                                q.account(rows, &self.before);
                            }
                            self.spool.mark_replayed(end);
                            self.replay_done = 0;
                            self.stats.replayed_batches.fetch_add(1, Ordering::Relaxed);
                            if self.spool.is_empty() {
                                break;
                            }
                        }
                        Err(stopped) => {
                            // The rows written before the stop are counted now.
                            if let Some(q) = &mut self.quota {
                                q.account(rows, &self.before);
                            }
                            self.replay_done += stopped.handled;
                            if !std::mem::replace(&mut self.spooling, true) {
                                warn!(
                                    "{}; the accounting spool ({} bytes) is replayed once the database takes writes again",
                                    stopped.cause,
                                    self.spool.pending_bytes()
                                );
                            } else {
                                debug!("spool replay paused: {}", stopped.cause);
                            }
                            self.next_replay = Instant::now() + SPOOL_RETRY_EVERY;
                            break;
                        }
                    }
                }
            }
        }
        if self.spool.is_empty() {
            match self.spool.clear_if_replayed() {
                Ok(true) => info!("accounting spool replayed into the database and cleared"),
                Ok(false) => {}
                Err(e) => error!("cannot clear the accounting spool after replaying it: {e}"),
            }
        }
        self.stats
            .spool_bytes
            .store(self.spool.pending_bytes(), Ordering::Relaxed);
    }

    fn note_clamped(&mut self, batch: &[AcctMessage]) {
        let clamped: Vec<&AcctEvent> = batch
            .iter()
            .map(|m| &m.event)
            .filter(|e| e.clamped)
            .collect();
        if clamped.is_empty() {
            return;
        }
        self.stats
            .clamped_events
            .fetch_add(clamped.len() as u64, Ordering::Relaxed);
        if self
            .last_clamp_warning
            .is_none_or(|t| t.elapsed() >= CLAMP_WARNING_EVERY)
        {
            self.last_clamp_warning = Some(Instant::now());
            warn!(
                "accounting octet counters above 2^63 (Gigawords >= 2^31) stored as {} (counted in shardius_accounting_counters_clamped_total): session={} nas={}",
                crate::accounting::event::MAX_OCTETS,
                clamped[0].session_id,
                clamped[0].nas_ip
            );
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
