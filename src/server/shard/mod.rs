//! One shard: a glommio executor pinned to a core, owning its sockets and
//! its engine. Receive, look up, call the engine, send; nothing here
//! decides anything. The only glommio code of the crate is in this folder:
//! `socket.rs` binds the SO_REUSEPORT groups and claims the addresses,
//! `clock.rs` reads the time once per received batch, `unknown_nas.rs`
//! bounds the `unknown NAS` log across shards. The batches themselves
//! (recvmmsg/sendmmsg) are `server/udp_batch.rs`, shared with loadgen.

mod clock;
pub mod socket;
pub mod unknown_nas;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use glommio::net::UdpSocket;
use glommio::{GlommioError, LocalExecutorBuilder, Placement};
use tracing::{debug, info, warn};

use crate::accounting::AcctKind;
use crate::engine::{Context, Counter, DropReason, Engine, Event, Handled, Port};
use crate::server::accounting::AcctMessage;
use crate::server::logpool::LogSender;
use crate::server::udp_batch::{RecvBatch, SendBatch};
use crate::server::{ServeError, Shared};
use crate::store::LogEntry;
use clock::ShardClock;

/// How often a blocked receive wakes up to check for shutdown.
const POLL_SHUTDOWN: Duration = Duration::from_millis(200);
/// io_uring buffer memory per executor: shardius does no file DMA, so
/// glommio's 10 MiB default would only eat into RLIMIT_MEMLOCK.
const IO_MEMORY: usize = 512 << 10;
/// How often logins waiting for a pool address are handed to the engine
/// again (the pools thread claims in batches every few milliseconds).
const RETRY_PARKED: Duration = Duration::from_millis(2);
/// A login whose address is not confirmed by then is dropped (counted):
/// the NAS retransmits and the claim may have landed meanwhile.
const PARK_FOR: Duration = Duration::from_secs(3);
/// Logins one auth socket keeps waiting at most.
const MAX_PARKED: usize = 16_384;

/// The sockets one shard serves, and its way to the accounting writer.
pub struct ShardSockets {
    pub auth: Vec<StdUdpSocket>,
    pub acct: Vec<StdUdpSocket>,
    pub writer: Option<crossbeam_channel::Sender<AcctMessage>>,
    /// To the radius_logs pool, when enabled.
    pub logs: Option<LogSender>,
}

/// Every listen address, bound once per shard and claimed.
pub struct Bound {
    /// Per shard: its sockets (the channels are filled in by the caller).
    pub shards: Vec<ShardSockets>,
    /// Per shard, per accounting address: a clone of the socket, for the
    /// accounting writer to answer on.
    pub writer_sockets: Vec<Vec<StdUdpSocket>>,
    pub auth: Vec<SocketAddr>,
    pub acct: Vec<SocketAddr>,
    /// Held while the server runs: this process serves these addresses.
    pub claims: Vec<socket::AddressLock>,
}

/// Binds every listen address of `config` for `shards` shards, each
/// claimed before its socket group is joined (never taking a running
/// instance's traffic, even for a moment).
///
/// Port 0 picks a free port first, with a probe socket bound without
/// SO_REUSEPORT: a reuseport bind to port 0 may be handed a port that
/// another reuseport group of the same user already has (seen here after
/// about 100 open sockets), and would join that group.
pub fn bind(config: &crate::config::ServerConfig, shards: usize) -> Result<Bound, ServeError> {
    let mut bound = Bound {
        shards: (0..shards)
            .map(|_| ShardSockets {
                auth: Vec::new(),
                acct: Vec::new(),
                writer: None,
                logs: None,
            })
            .collect(),
        writer_sockets: (0..shards).map(|_| Vec::new()).collect(),
        auth: Vec::new(),
        acct: Vec::new(),
        claims: Vec::new(),
    };
    for (addrs, is_auth) in [(&config.listen_auth, true), (&config.listen_acct, false)] {
        for &asked in addrs {
            let bind_error = |addr, source| ServeError::Bind { addr, source };
            let (addr, claim) = claim(asked).map_err(|e| bind_error(asked, e))?;
            let group = socket::bind_group(addr, shards, config.recv_buffer_bytes)
                .map_err(|e| bind_error(addr, e))?;
            bound.claims.push(claim);
            for (i, s) in group.into_iter().enumerate() {
                if is_auth {
                    bound.shards[i].auth.push(s);
                } else {
                    // The writer answers accounting on the same socket.
                    bound.writer_sockets[i].push(s.try_clone().map_err(|e| bind_error(addr, e))?);
                    bound.shards[i].acct.push(s);
                }
            }
            if is_auth {
                bound.auth.push(addr);
            } else {
                bound.acct.push(addr);
            }
        }
    }
    Ok(bound)
}

/// Claims `asked`, or for port 0 a free port of its address.
fn claim(asked: SocketAddr) -> std::io::Result<(SocketAddr, socket::AddressLock)> {
    if asked.port() != 0 {
        return Ok((asked, socket::lock_address(asked)?));
    }
    let mut last = None;
    // Another shardius may claim the probed port before we do: try again.
    for _ in 0..8 {
        let addr = StdUdpSocket::bind(asked)?.local_addr()?;
        match socket::lock_address(addr) {
            Ok(claim) => return Ok((addr, claim)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried at least once"))
}

/// A running shard.
pub struct Handle(glommio::ExecutorJoinHandle<()>);

impl Handle {
    /// Waits for the shard to end; Err describes why it failed.
    pub fn join(self) -> Result<(), String> {
        self.0.join().map_err(|e| e.to_string())
    }
}

/// Starts shard `index`. It sends its index on `started` once its executor
/// runs; if the executor cannot be built (e.g. RLIMIT_MEMLOCK too low for
/// io_uring) the sender is dropped unsent, which the caller notices.
pub fn spawn(
    index: usize,
    cpu: Option<usize>,
    sockets: ShardSockets,
    shared: Arc<Shared>,
    started: std::sync::mpsc::Sender<usize>,
) -> std::io::Result<Handle> {
    let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
    LocalExecutorBuilder::new(placement)
        .name(&format!("shard-{index}"))
        .io_memory(IO_MEMORY)
        .spawn(move || {
            let _ = started.send(index);
            drop(started);
            run(index, sockets, shared)
        })
        .map(Handle)
        .map_err(|e| std::io::Error::other(format!("shard {index}: {e}")))
}

/// The locked memory one shard's io_uring needs (glommio checks
/// RLIMIT_MEMLOCK against it when the executor starts).
pub const MEMLOCK_PER_SHARD: u64 = IO_MEMORY as u64;

async fn run(index: usize, sockets: ShardSockets, shared: Arc<Shared>) {
    let cfg = &shared.config.server;
    let seed = rand::random::<u64>() ^ index as u64;
    let engine = Rc::new(RefCell::new(Engine::new(
        Duration::from_secs(cfg.duplicate_window_secs),
        cfg.duplicate_cache_entries,
        seed,
    )));
    let mut tasks = Vec::new();
    let writer = sockets.writer;
    let logs = sockets.logs;
    let all = sockets
        .auth
        .into_iter()
        .enumerate()
        .map(|(i, s)| (s, Port::Auth, i))
        .chain(
            sockets
                .acct
                .into_iter()
                .enumerate()
                .map(|(i, s)| (s, Port::Acct, i)),
        );
    for (socket, port, socket_index) in all {
        // SAFETY: the fd comes from a std socket we own and give up here.
        // glommio takes sockets only as raw fds.
        #[allow(unsafe_code)]
        let socket = Rc::new(unsafe { UdpSocket::from_raw_fd(socket.into_raw_fd()) });
        if let Err(e) = socket.set_read_timeout(Some(POLL_SHUTDOWN)) {
            warn!(shard = index, "cannot set read timeout: {e}");
        }
        let listener = Rc::new(Listener {
            shard: index,
            socket_index,
            port,
            writer: writer.clone(),
            logs: logs.clone(),
            parked: RefCell::new(HashMap::new()),
        });
        if port == Port::Auth {
            tasks.push(
                glommio::spawn_local(retry_parked(
                    listener.clone(),
                    socket.clone(),
                    engine.clone(),
                    shared.clone(),
                ))
                .detach(),
            );
        }
        tasks.push(
            glommio::spawn_local(serve_socket(
                listener,
                socket,
                engine.clone(),
                shared.clone(),
            ))
            .detach(),
        );
    }
    // Only the tasks hold senders now: when they end, the writer drains.
    drop(writer);
    drop(logs);
    let publisher =
        glommio::spawn_local(publish_stats(index, engine.clone(), shared.clone())).detach();
    for t in tasks {
        t.await;
    }
    publisher.await;
    engine.borrow().stats.publish(&shared.stats[index]);
}

/// Where a receive loop listens, and where its accounting goes.
struct Listener {
    shard: usize,
    socket_index: usize,
    port: Port,
    writer: Option<crossbeam_channel::Sender<AcctMessage>>,
    logs: Option<LogSender>,
    /// Accepted logins waiting for their pool address (auth sockets only),
    /// by what makes a retransmission the same request.
    parked: RefCell<HashMap<ParkKey, Parked>>,
}

/// Source, identifier and Request Authenticator (RFC 5080 §2.2.2).
type ParkKey = (SocketAddr, u8, [u8; 16]);

/// A login waiting for the database to confirm its address.
struct Parked {
    datagram: Vec<u8>,
    /// Its User-Name as the allocator knows subscribers: whether its claim
    /// is still in flight is asked by name, without parsing again.
    user: String,
    since: Instant,
}

impl Listener {
    /// Keeps `datagram` (an Access-Request the engine parsed, `user_name`
    /// its User-Name) to be handled again; a retransmission of one that
    /// waits already is not kept twice (O(1), however many wait). False
    /// when it was not kept (too many wait).
    fn park(&self, src: SocketAddr, datagram: &[u8], user_name: &[u8], now: Instant) -> bool {
        // The header's identifier and Request Authenticator: no parse.
        let (Some(&identifier), Some(authenticator)) = (
            datagram.get(1),
            datagram
                .get(4..20)
                .and_then(|a| <[u8; 16]>::try_from(a).ok()),
        ) else {
            return false;
        };
        let key = (src, identifier, authenticator);
        let mut parked = self.parked.borrow_mut();
        if parked.contains_key(&key) {
            return true;
        }
        if parked.len() >= MAX_PARKED {
            return false;
        }
        parked.insert(
            key,
            Parked {
                datagram: datagram.to_vec(),
                user: String::from_utf8_lossy(user_name).into_owned(),
                since: now,
            },
        );
        true
    }
}

async fn serve_socket(
    listener: Rc<Listener>,
    socket: Rc<UdpSocket>,
    engine: Rc<RefCell<Engine>>,
    shared: Arc<Shared>,
) {
    let index = listener.shard;
    let port = listener.port;
    #[allow(unsafe_code)]
    // SAFETY: `socket` owns the fd and outlives every use of `fd` here.
    // (glommio's UdpSocket has AsRawFd but not AsFd.)
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket.as_raw_fd()) };
    let mut rx = RecvBatch::new();
    let mut tx = SendBatch::new();
    let mut snapshots = arc_swap::Cache::new(&shared.snapshot);
    let mut clock = ShardClock::shifted(shared.config.clock_offset_secs);
    while !shared.shutdown.load(Ordering::Relaxed) {
        let received = match rx.recv(fd) {
            Ok(0) => {
                wait_readable(index, &socket).await;
                continue;
            }
            Ok(n) => n,
            Err(e) => {
                warn!(shard = index, "receive failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // One clock read and one snapshot look for the whole batch.
        let now = clock.now();
        let ctx = Context {
            snapshot: snapshots.load(),
            key: &shared.key,
            now,
            committed: shared.acct_committed[index].load(Ordering::Acquire),
            pools: &shared.pools,
            sessions: &*shared.sessions,
        };
        let mut timed = 0u64;
        for i in 0..received {
            let Some((datagram, src)) = rx.get(i) else {
                // Longer than any RADIUS packet: cut by the receive.
                let reason = DropReason::Malformed(crate::proto::ParseError::BadLength);
                engine.borrow_mut().stats.incr(Counter::Dropped(reason));
                continue;
            };
            let out = tx.next_buf().expect("a reply slot per received datagram");
            let handled = engine.borrow_mut().handle(port, src, datagram, &ctx, out);
            if let Event::AddressPending { .. } = handled.event {
                if !listener.park(src, datagram, handled.user_name(datagram), now.mono) {
                    let mut engine = engine.borrow_mut();
                    engine
                        .stats
                        .incr(Counter::Dropped(DropReason::AddressPending));
                }
                continue;
            }
            if let Some(reply) = settle(
                &listener, &engine, &shared, src, datagram, &handled, out, now.utc,
            ) {
                tx.push(reply.len, src);
                timed += u64::from(reply.timed);
            }
        }
        send_batch(index, &socket, fd, &mut tx).await;
        if timed > 0 {
            let nanos = now.mono.elapsed().as_nanos() as u64;
            engine.borrow_mut().stats.observe_latencies(nanos, timed);
        }
        glommio::yield_if_needed().await;
    }
}

/// Waits until `socket` has a datagram (or [`POLL_SHUTDOWN`] passed): a
/// peek through glommio's io_uring, which leaves the datagram for the
/// next batch receive.
async fn wait_readable(index: usize, socket: &UdpSocket) {
    let mut byte = [0u8; 1];
    match socket.peek_from(&mut byte).await {
        Ok(_) => {}
        Err(ref e) if is_timeout(e) => {}
        Err(e) => {
            warn!(shard = index, "receive failed: {e}");
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Sends the batch: sendmmsg(2) for as much as the socket takes at once;
/// a datagram it would not take waits for room alone through glommio, one
/// it refused is logged and skipped (the NAS's loss to retransmit, not
/// ours to retry).
async fn send_batch(
    index: usize,
    socket: &UdpSocket,
    fd: std::os::fd::BorrowedFd<'_>,
    tx: &mut SendBatch,
) {
    let mut at = 0;
    while at < tx.len() {
        match tx.send_from(fd, at) {
            Ok(n) if n > 0 => {
                at += n;
                continue;
            }
            Ok(_) => {}
            Err(e) => debug!(shard = index, "send failed: {e}"),
        }
        if let Some((datagram, to)) = tx.get(at) {
            if let Err(e) = socket.send_to(datagram, to).await {
                debug!(shard = index, %to, "send failed: {e}");
            }
        }
        at += 1;
    }
    tx.clear();
}

/// A reply to send now: its length in the engine's output buffer, and
/// whether it answers a login (its latency is observed once sent).
struct Reply {
    len: usize,
    timed: bool,
}

/// Logs and counts what the engine made of one datagram and hands an
/// accounting event to the writer (which sends that reply once the event
/// is durable); returns the reply to send now, if any.
#[allow(clippy::too_many_arguments)]
fn settle(
    listener: &Listener,
    engine: &Rc<RefCell<Engine>>,
    shared: &Shared,
    src: SocketAddr,
    datagram: &[u8],
    handled: &Handled,
    out: &[u8],
    utc: chrono::DateTime<chrono::Utc>,
) -> Option<Reply> {
    let index = listener.shard;
    let user_name = handled.user_name(datagram);
    log_event(index, src, user_name, handled.event, shared);
    if let (Some(logs), Event::Accepted { .. } | Event::Rejected { .. }) =
        (&listener.logs, handled.event)
    {
        let entry = auth_log_entry(index, src, user_name, handled.event, utc);
        if logs.try_send(entry).is_err() {
            engine.borrow_mut().stats.incr(Counter::LogDropped);
        }
    }
    if handled.event == Event::AccountingQueued {
        hand_to_writer(
            listener,
            engine,
            src,
            &out[..handled.reply_len.unwrap_or(0)],
        );
        return None;
    }
    let len = handled.reply_len?;
    let timed = matches!(
        handled.event,
        Event::Accepted { .. } | Event::Rejected { .. }
    );
    Some(Reply { len, timed })
}

/// Hands the logins parked on `listener` to the engine again every
/// [`RETRY_PARKED`] until their address is in (or they waited
/// [`PARK_FOR`]): the receive loop never waits for the database.
async fn retry_parked(
    listener: Rc<Listener>,
    socket: Rc<UdpSocket>,
    engine: Rc<RefCell<Engine>>,
    shared: Arc<Shared>,
) {
    let mut out = Box::new([0u8; 4096]);
    let mut snapshots = arc_swap::Cache::new(&shared.snapshot);
    let mut clock = ShardClock::shifted(shared.config.clock_offset_secs);
    let mut seen_generation = 0;
    let mut last_expiry_check = Instant::now();
    while !shared.shutdown.load(Ordering::Relaxed) {
        glommio::timer::sleep(RETRY_PARKED).await;
        if listener.parked.borrow().is_empty() {
            continue;
        }
        // Only when the pools thread settled claims (or reloaded), or to
        // drop what waited too long: evaluating thousands of parked
        // logins every tick would eat the core the claims need.
        let generation = shared.pools_generation.load(Ordering::Acquire);
        let expiry_due = last_expiry_check.elapsed() >= Duration::from_millis(100);
        if generation == seen_generation && !expiry_due {
            continue;
        }
        seen_generation = generation;
        if expiry_due {
            last_expiry_check = Instant::now();
        }
        let waiting = std::mem::take(&mut *listener.parked.borrow_mut());
        // Whose claims are still in flight: one look under the lock.
        let in_flight: Vec<bool> = {
            let pools = shared.pools.lock().unwrap_or_else(|e| e.into_inner());
            waiting.values().map(|p| pools.waiting(&p.user)).collect()
        };
        let mut still = HashMap::new();
        for ((key, p), in_flight) in waiting.into_iter().zip(in_flight) {
            let now = clock.now();
            if now.mono.saturating_duration_since(p.since) >= PARK_FOR {
                let mut engine = engine.borrow_mut();
                engine
                    .stats
                    .incr(Counter::Dropped(DropReason::AddressPending));
                continue;
            }
            if in_flight {
                still.insert(key, p);
                continue;
            }
            let src = key.0;
            let ctx = Context {
                snapshot: snapshots.load(),
                key: &shared.key,
                now,
                committed: shared.acct_committed[listener.shard].load(Ordering::Acquire),
                pools: &shared.pools,
                sessions: &*shared.sessions,
            };
            let handled = engine
                .borrow_mut()
                .handle_again(src, &p.datagram, &ctx, &mut out);
            if let Event::AddressPending { .. } = handled.event {
                still.insert(key, p);
                continue;
            }
            let settled = settle(
                &listener,
                &engine,
                &shared,
                src,
                &p.datagram,
                &handled,
                &out[..],
                now.utc,
            );
            if let Some(reply) = settled {
                // A failed send is the NAS's loss to retransmit.
                if let Err(e) = socket.send_to(&out[..reply.len], src).await {
                    debug!(shard = listener.shard, %src, "send failed: {e}");
                }
                if reply.timed {
                    let nanos = p.since.elapsed().as_nanos() as u64;
                    engine.borrow_mut().stats.observe_latency(nanos);
                }
            }
        }
        // Parked while this round ran: keep them too.
        let mut parked = listener.parked.borrow_mut();
        let arrived = std::mem::replace(&mut *parked, still);
        parked.extend(arrived);
    }
}

/// Queues the accounting event the engine just produced. Never blocks: a
/// full queue is a counted drop, and the NAS retransmits.
fn hand_to_writer(
    listener: &Listener,
    engine: &Rc<RefCell<Engine>>,
    dest: SocketAddr,
    reply: &[u8],
) {
    let mut engine = engine.borrow_mut();
    let Some(queued) = engine.take_accounting() else {
        return;
    };
    let key = queued.key;
    if let Some(foreign) = queued.foreign_nas_ip.filter(|f| f.log) {
        warn!(
            "accounting from NAS {} names NAS-IP-Address {}, which is not one of its addresses: recorded under {} (add it with `nas add --nas-ip-address` if the router uses it; counted in shardius_accounting_nas_ip_mismatch_total)",
            dest.ip(),
            foreign.claimed,
            queued.event.nas_ip
        );
    }
    let log = listener.logs.as_ref().map(|_| LogEntry {
        at: queued.event.event_time,
        nas_ip: queued.event.nas_ip,
        username: queued.event.username.as_str().into(),
        event: "acct",
        result: match queued.event.kind {
            AcctKind::Start => "start",
            AcctKind::Interim => "interim",
            AcctKind::Stop => "stop",
            AcctKind::NasReboot => "nas-reboot",
        },
        reason: None,
        shard: listener.shard as u16,
    });
    let message = AcctMessage {
        event: queued.event,
        reply: reply.to_vec(),
        dest,
        shard: listener.shard,
        socket: listener.socket_index,
        ticket: queued.ticket,
    };
    let sent = match &listener.writer {
        Some(tx) => tx.try_send(message).is_ok(),
        None => false,
    };
    if !sent {
        engine.accounting_refused(&key);
        return;
    }
    if let (Some(logs), Some(entry)) = (&listener.logs, log) {
        if logs.try_send(entry).is_err() {
            engine.stats.incr(Counter::LogDropped);
        }
    }
}

/// The radius_logs row for an accept or reject.
fn auth_log_entry(
    shard: usize,
    src: SocketAddr,
    user_name: &[u8],
    event: Event,
    at: chrono::DateTime<chrono::Utc>,
) -> LogEntry {
    let (result, reason, nas) = match event {
        Event::Rejected { reason, nas, .. } => ("reject", Some(reason.as_str()), nas),
        // A reason on an accept: into the walled garden, and why.
        Event::Accepted { nas, captive, .. } => ("accept", captive.map(|r| r.as_str()), nas),
        _ => ("accept", None, src.ip()),
    };
    LogEntry {
        at,
        nas_ip: nas,
        username: crate::text::stored(user_name).as_ref().into(),
        event: "auth",
        result,
        reason,
        shard: shard as u16,
    }
}

/// The read timeout that lets a shard notice shutdown; glommio reports it
/// either as its own variant or as an ETIMEDOUT/EAGAIN IO error.
fn is_timeout(e: &GlommioError<()>) -> bool {
    match e {
        GlommioError::TimedOut(_) => true,
        GlommioError::IoError(io) => matches!(
            io.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        _ => false,
    }
}

fn log_event(shard: usize, src: SocketAddr, user_name: &[u8], event: Event, shared: &Shared) {
    // Only evaluated when the line is logged.
    let user = || crate::text::stored(user_name);
    match event {
        Event::Accepted {
            method,
            nas,
            captive: None,
        } => debug!(shard, nas = %nas, user = %user(), method = method.label(), "accept"),
        Event::Accepted {
            method,
            nas,
            captive: Some(reason),
        } => info!(
            shard,
            nas = %nas,
            user = %user(),
            method = method.label(),
            reason = reason.as_str(),
            "accept into the walled garden"
        ),
        Event::Rejected {
            method,
            reason,
            nas,
        } => info!(
            shard,
            nas = %nas,
            user = %user(),
            method = method.label(),
            reason = reason.as_str(),
            "reject"
        ),
        Event::Dropped { reason, log } => {
            if reason == crate::engine::DropReason::UnknownNas {
                if log && shared.should_log_unknown_nas(src.ip()) {
                    warn!("unknown NAS: {}", src.ip());
                }
            } else {
                debug!(shard, %src, reason = reason.metric_label(), "dropped");
            }
        }
        Event::Duplicate => debug!(shard, %src, "retransmission answered from the duplicate cache"),
        Event::AddressPending { .. } => {}
        Event::AccountingQueued => {}
        Event::StatusServer => debug!(shard, %src, "status-server"),
    }
}

async fn publish_stats(index: usize, engine: Rc<RefCell<Engine>>, shared: Arc<Shared>) {
    while !shared.shutdown.load(Ordering::Relaxed) {
        engine.borrow().stats.publish(&shared.stats[index]);
        // The heartbeat says the executor still gets round to its timers:
        // the watchdog and /healthz read it.
        shared.stats[index]
            .heartbeat_ms
            .store(shared.now_ms(), Ordering::Relaxed);
        glommio::timer::sleep(POLL_SHUTDOWN).await;
    }
}
