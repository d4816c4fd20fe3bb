//! The accounting writer: one thread that owns the accounting database
//! connection. Shards hand it events over a bounded crossbeam channel;
//! it collects a batch (up to `batch_max_events`, or `batch_max_wait_ms`
//! after the first event), folds the events of one session into one row,
//! commits the batch in one transaction, and only then sends each
//! Accounting-Response itself, on a clone of the socket the request came
//! in on, and tells the shard its tickets are committed.
//!
//! With [`super::lanes`] (`accounting.writer_connections` > 1 on
//! PostgreSQL) the writer splits each batch by session among the lanes'
//! connections, which write their parts side by side, and collects the
//! next batch meanwhile; it still acknowledges the parts one at a time,
//! in the order it collected them, and a part a lane could not write goes
//! through the writer's own connection, spool and `.rejected` file exactly
//! as without lanes.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use tracing::{debug, error, info, warn};

use super::lanes::{self, Done};
use super::rejected::Rejected;
use super::spool::{sibling, Next, Spool};
use crate::accounting::{AcctEvent, AcctKind};
use crate::config::AccountingConfig;
use crate::store::{write_splitting, AccountingSink, StopCause, Stopped, StoreError};

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
    /// Batches handed to a lane while an earlier one was still in flight
    /// (written side by side; see [`super::lanes`]).
    pub overlapped_batches: AtomicU64,
    /// Batches a lane could not write, written again by the writer on its
    /// own connection (a refused row, the database away).
    pub lane_rewrites: AtomicU64,
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
            overlapped_batches: AtomicU64::new(0),
            lane_rewrites: AtomicU64::new(0),
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
    /// The lanes' connections (see [`super::lanes`]), started by `run`;
    /// none: the writer writes every batch itself.
    lane_stores: Vec<Box<dyn AccountingSink>>,
}

/// A batch handed to a lane, until it is acknowledged.
struct InFlight {
    seq: u64,
    batch: Vec<AcctMessage>,
    counted: bool,
    started: Instant,
    /// The lane's answer: the rows and how their write went.
    done: Option<(Vec<AcctEvent>, lanes::Written)>,
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
/// While usage sums wait for a busy usage thread, how often the writer
/// offers them again when no batch comes.
const USAGE_RETRY_EVERY: Duration = Duration::from_millis(10);

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
            lane_stores: Vec::new(),
        }
    }

    /// Splits each batch by session among these connections, which write
    /// their parts side by side (see [`super::lanes`]).
    pub fn with_lanes(mut self, stores: Vec<Box<dyn AccountingSink>>) -> Writer {
        self.lane_stores = stores;
        self
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
        let stores = std::mem::take(&mut self.lane_stores);
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        match lanes::spawn(stores, &done_tx) {
            Ok(lanes) if !lanes.is_empty() => {
                drop(done_tx);
                let (jobs, threads): (Vec<_>, Vec<_>) =
                    lanes.into_iter().map(|l| (l.jobs, l.thread)).unzip();
                self.run_with_lanes(&jobs, &done_rx);
                drop(jobs);
                for t in threads {
                    let _ = t.join();
                }
            }
            Ok(_) => self.run_alone(),
            Err(e) => {
                error!("cannot start the accounting lanes: {e}; the writer writes every batch on its own connection");
                self.run_alone();
            }
        }
        self.stop();
    }

    /// The loop without lanes: collect a batch, commit it, acknowledge it.
    fn run_alone(&mut self) {
        let max_wait = Duration::from_millis(self.config.batch_max_wait_ms);
        let mut batch: Vec<AcctMessage> = Vec::with_capacity(self.config.batch_max_events);
        loop {
            let replay_due = !self.spool.is_empty() && Instant::now() >= self.next_replay;
            if replay_due {
                self.replay(REPLAY_SLICE);
            }
            self.flush_usage();
            // With replay work left, only look at the queue; else wait on it.
            let idle_wait = if !self.spool.is_empty() && Instant::now() >= self.next_replay {
                Duration::ZERO
            } else {
                self.idle_wait()
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
    }

    /// The loop with lanes. Each turn: acknowledge the parts at the
    /// front that are done; replay the spool when it is due (with nothing
    /// in flight); once the collected batch is full or its wait is over,
    /// split it among the lanes when they are all idle (or, if it has a
    /// NAS reboot or the database is away, write it here with nothing in
    /// flight); wait for an event or a lane's answer.
    fn run_with_lanes(
        &mut self,
        jobs: &[crossbeam_channel::Sender<lanes::Job>],
        done: &crossbeam_channel::Receiver<Done>,
    ) {
        let max = self.config.batch_max_events;
        let max_wait = Duration::from_millis(self.config.batch_max_wait_ms);
        let never = crossbeam_channel::never::<AcctMessage>();
        let no_answers = crossbeam_channel::never::<Done>();
        let mut lanes_gone = false;
        // Per lane: batches handed to it and not answered yet.
        let mut outstanding: Vec<usize> = vec![0; jobs.len()];
        let mut flight: VecDeque<InFlight> = VecDeque::new();
        let mut next: Vec<AcctMessage> = Vec::with_capacity(max);
        let mut deadline: Option<Instant> = None;
        let mut seq = 0u64;
        let mut open = true;
        loop {
            self.flush_usage();
            while flight.front().is_some_and(|f| f.done.is_some()) {
                let f = flight.pop_front().expect("checked above");
                self.finish(f);
            }
            if !open && next.is_empty() && flight.is_empty() {
                return;
            }
            // A replay slice, then (as without lanes) at least one batch.
            let mut replay_due = !self.spool.is_empty() && Instant::now() >= self.next_replay;
            if replay_due && flight.is_empty() {
                self.replay(REPLAY_SLICE);
                replay_due = false;
            }
            let now = Instant::now();
            let ready = !next.is_empty()
                && (next.len() >= max || !open || deadline.is_some_and(|d| now >= d));
            if ready && !replay_due {
                let alone =
                    self.spooling || next.iter().any(|m| m.event.kind == AcctKind::NasReboot);
                if alone {
                    if flight.is_empty() {
                        self.commit(&mut next);
                        deadline = None;
                        continue;
                    }
                } else if outstanding.iter().all(|&n| n == 0) {
                    // Each session always goes to the same lane: two lanes
                    // never wait for each other's row locks (see
                    // `super::lanes`). Handed out when every lane is idle:
                    // letting a lane take the next batch while another is
                    // busy made many small transactions, measured slower
                    // (tuning.md).
                    let batch = std::mem::replace(&mut next, Vec::with_capacity(max));
                    deadline = None;
                    for (lane, part) in split_by_session(batch, jobs.len()).into_iter().enumerate()
                    {
                        if part.is_empty() {
                            continue;
                        }
                        seq += 1;
                        if !flight.is_empty() {
                            self.stats
                                .overlapped_batches
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        let f = self.dispatch(part, seq, lane, &jobs[lane], now);
                        if f.done.is_none() {
                            outstanding[lane] += 1;
                        }
                        flight.push_back(f);
                    }
                    continue;
                }
            }
            // Wait: for events while the batch has room, for the lanes'
            // answers always; until the batch's wait is over.
            let timeout = match deadline {
                _ if flight.is_empty() && !self.spool.is_empty() && now >= self.next_replay => {
                    Duration::ZERO
                }
                Some(d) if !ready => d.saturating_duration_since(now).min(self.idle_wait()),
                _ => self.idle_wait(),
            };
            let events = if open && next.len() < max {
                &self.rx
            } else {
                &never
            };
            let answers = if lanes_gone { &no_answers } else { done };
            crossbeam_channel::select! {
                recv(events) -> m => match m {
                    Ok(m) => {
                        if next.is_empty() {
                            deadline = Some(Instant::now() + max_wait);
                        }
                        next.push(m);
                    }
                    Err(_) => open = false,
                },
                recv(answers) -> d => {
                    let Ok(d) = d else {
                        // Every lane gone (not while the writer holds their
                        // senders); what is in flight is written again.
                        outstanding.fill(0);
                        lanes_gone = true;
                        for f in flight.iter_mut().filter(|f| f.done.is_none()) {
                            let e = StoreError::Unavailable("accounting lanes stopped".into());
                            f.done = Some((coalesce(f.batch.iter().map(|m| &m.event)), Err(e)));
                        }
                        continue;
                    };
                    outstanding[d.lane] -= 1;
                    if let Some(f) = flight.iter_mut().find(|f| f.seq == d.seq) {
                        f.done = Some((d.rows, d.result));
                    }
                },
                default(timeout) => {}
            }
        }
    }

    /// Hands `batch` to `lane` (or, when its sessions' keys cannot be
    /// looked up, marks it failed for the writer to write itself).
    fn dispatch(
        &mut self,
        batch: Vec<AcctMessage>,
        seq: u64,
        lane: usize,
        jobs: &crossbeam_channel::Sender<lanes::Job>,
        now: Instant,
    ) -> InFlight {
        let mut f = InFlight {
            seq,
            batch,
            counted: false,
            started: now,
            done: None,
        };
        let mut rows = coalesce(f.batch.iter().map(|m| &m.event));
        self.note_clamped(&f.batch);
        let store = &mut self.store;
        match self
            .legacy
            .resolve(&mut rows, |keys| store.existing_sessions(keys))
        {
            Ok(()) => {
                f.counted = self.quota.as_ref().is_some_and(|q| q.wants(&rows));
                let job = lanes::Job {
                    seq,
                    rows,
                    counted: f.counted,
                };
                if let Err(failed) = jobs.send(job) {
                    // The lane is gone (it never ends on its own): the
                    // writer writes the batch itself.
                    let e = StoreError::Unavailable(format!("accounting lane {lane} stopped"));
                    f.done = Some((failed.into_inner().rows, Err(e)));
                }
            }
            Err(e) => f.done = Some((rows, Err(e))),
        }
        f
    }

    /// How long to wait for work: briefly while usage sums wait for the
    /// usage thread (see [`Writer::flush_usage`]).
    fn idle_wait(&self) -> Duration {
        match &self.quota {
            Some(q) if q.has_pending() => USAGE_RETRY_EVERY,
            _ => Duration::from_millis(200),
        }
    }

    /// Hands waiting usage sums to the usage thread if it is free now.
    fn flush_usage(&mut self) {
        if let Some(q) = &mut self.quota {
            q.flush();
        }
    }

    /// Acknowledges a batch a lane answered for: at once if the lane
    /// wrote it, else after the writer made it durable itself.
    fn finish(&mut self, f: InFlight) {
        let InFlight {
            mut batch,
            counted,
            started,
            done,
            ..
        } = f;
        let (rows, result) = done.expect("finish is called on answered batches");
        match result {
            Ok(counters) => {
                self.before.clear();
                if counted {
                    for (e, p) in rows.iter().zip(counters) {
                        self.before.insert(e.unique_id.clone(), p);
                    }
                }
                self.acknowledge(&mut batch, &rows, started);
            }
            Err(e) => {
                self.stats.lane_rewrites.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "accounting batch of {} events not written on its lane ({e}): the writer writes it on its own connection before acknowledging anything after it",
                    batch.len()
                );
                self.commit_rows(&mut batch, rows, started);
            }
        }
    }

    /// After the loop: the spool's replay, the usage thread's last sums,
    /// the summary.
    fn stop(&mut self) {
        if !self.spool.is_empty() {
            self.next_replay = Instant::now();
            self.replay(REPLAY_AT_SHUTDOWN);
        }
        if let Some(q) = self.quota.take() {
            q.finish();
        }
        info!(
            "writer stopped: events={} batches={} rows={} overlapped={} lane_rewrites={} spooled_batches={} spool_bytes={} rejected={} abandoned={}",
            self.stats.events.load(Ordering::Relaxed),
            self.stats.batches.load(Ordering::Relaxed),
            self.stats.rows.load(Ordering::Relaxed),
            self.stats.overlapped_batches.load(Ordering::Relaxed),
            self.stats.lane_rewrites.load(Ordering::Relaxed),
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
        let rows = coalesce(batch.iter().map(|m| &m.event));
        self.note_clamped(batch);
        self.commit_rows(batch, rows, Instant::now());
    }

    /// [`Writer::commit`] of the batch's coalesced `rows`, on the writer's
    /// own connection.
    fn commit_rows(
        &mut self,
        batch: &mut Vec<AcctMessage>,
        mut rows: Vec<AcctEvent>,
        started: Instant,
    ) {
        self.before.clear();
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
        self.acknowledge(batch, &rows, started);
    }

    /// A durable batch (its coalesced `rows`): counted, told to the
    /// session table, its tickets published and its responses sent, its
    /// usage counted (from `self.before`).
    fn acknowledge(&mut self, batch: &mut Vec<AcctMessage>, rows: &[AcctEvent], started: Instant) {
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
            s.committed(rows);
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
            q.account(rows, &self.before);
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

/// `batch` in `parts` parts (some maybe empty), every event of a session
/// in the same one, always the same for the session; each part keeps the
/// batch's order.
fn split_by_session(batch: Vec<AcctMessage>, parts: usize) -> Vec<Vec<AcctMessage>> {
    if parts <= 1 {
        return vec![batch];
    }
    let mut out: Vec<Vec<AcctMessage>> = (0..parts)
        .map(|_| Vec::with_capacity(batch.len() / parts + 1))
        .collect();
    for m in batch {
        // The FreeRADIUS key is an MD5 in hex: its first digits are
        // spread evenly. A NAS reboot (in no batch that is split) or a
        // key that is not hex goes to the first part.
        let spread = m
            .event
            .unique_id
            .get(..8)
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        out[spread % parts].push(m);
    }
    out
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

    fn message(sid: &str, ticket: u64) -> AcctMessage {
        AcctMessage {
            event: event(AcctKind::Interim, sid, ticket as u32, ticket),
            reply: Vec::new(),
            dest: "127.0.0.1:9".parse().expect("literal"),
            shard: 0,
            socket: 0,
            ticket,
        }
    }

    #[test]
    fn a_split_batch_keeps_every_session_in_one_part_in_its_order() {
        let mut batch = Vec::new();
        let mut ticket = 0;
        for _ in 0..5 {
            for s in 0..200 {
                ticket += 1;
                batch.push(message(&format!("s{s}"), ticket));
            }
        }
        // Keys that are not hex (not made by shardius) all go one way.
        for bad in ["", "zz", "\0\u{ff}x", "aéééééé"] {
            ticket += 1;
            let mut m = message("odd", ticket);
            m.event.unique_id = bad.into();
            batch.push(m);
        }
        let total = batch.len();
        let parts = split_by_session(batch, 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), total);
        let mut part_of: HashMap<String, usize> = HashMap::new();
        for (i, part) in parts.iter().enumerate() {
            assert!(part.len() > total / 6, "spread evenly: {}", part.len());
            for pair in part.windows(2) {
                assert!(pair[0].ticket < pair[1].ticket, "order kept");
            }
            for m in part {
                let was = part_of.insert(m.event.unique_id.clone(), i);
                assert!(was.is_none_or(|p| p == i), "a session in two parts");
            }
        }
        assert_eq!(part_of.len(), 200 + 4);
        // The same session lands in the same part in every batch.
        let again = split_by_session(vec![message("s7", 1)], 3);
        assert_eq!(
            again[part_of[&again.iter().flatten().next().unwrap().event.unique_id]].len(),
            1
        );
        assert!(split_by_session(Vec::new(), 4).iter().all(Vec::is_empty));
        assert_eq!(split_by_session(vec![message("a", 1)], 1).len(), 1);
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
