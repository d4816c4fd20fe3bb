//! One shard: a glommio executor pinned to a core, owning its sockets and
//! its engine. Receive, look up, call the engine, send; nothing here
//! decides anything.

use std::cell::RefCell;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use glommio::net::UdpSocket;
use glommio::{GlommioError, LocalExecutorBuilder, Placement};
use tracing::{debug, info, warn};

use super::clock::ShardClock;
use super::Shared;
use crate::engine::{Context, Engine, Event, Port};
use crate::proto::dict::attr;
use crate::proto::Packet;

/// How often a blocked receive wakes up to check for shutdown.
const POLL_SHUTDOWN: Duration = Duration::from_millis(200);
/// Datagrams handled before offering the executor to the other socket and
/// the timers, so a burst on 1812 cannot starve 1813.
const BUDGET_PER_YIELD: u32 = 64;
/// io_uring buffer memory per executor: shardius does no file DMA, so
/// glommio's 10 MiB default would only eat into RLIMIT_MEMLOCK.
const IO_MEMORY: usize = 512 << 10;

/// The sockets one shard serves.
pub struct ShardSockets {
    pub auth: Vec<StdUdpSocket>,
    pub acct: Vec<StdUdpSocket>,
}

pub fn spawn(
    index: usize,
    cpu: Option<usize>,
    sockets: ShardSockets,
    shared: Arc<Shared>,
) -> std::io::Result<glommio::ExecutorJoinHandle<()>> {
    let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
    LocalExecutorBuilder::new(placement)
        .name(&format!("shard-{index}"))
        .io_memory(IO_MEMORY)
        .spawn(move || run(index, sockets, shared))
        .map_err(|e| std::io::Error::other(format!("shard {index}: {e}")))
}

async fn run(index: usize, sockets: ShardSockets, shared: Arc<Shared>) {
    let cfg = &shared.config.server;
    let seed = rand::random::<u64>() ^ index as u64;
    let engine = Rc::new(RefCell::new(Engine::new(
        Duration::from_secs(cfg.duplicate_window_secs),
        cfg.duplicate_cache_entries,
        seed,
    )));
    let mut tasks = Vec::new();
    let all = sockets
        .auth
        .into_iter()
        .map(|s| (s, Port::Auth))
        .chain(sockets.acct.into_iter().map(|s| (s, Port::Acct)));
    for (socket, port) in all {
        // SAFETY: the fd comes from a std socket we own and give up here.
        let socket = unsafe { UdpSocket::from_raw_fd(socket.into_raw_fd()) };
        if let Err(e) = socket.set_read_timeout(Some(POLL_SHUTDOWN)) {
            warn!(shard = index, "cannot set read timeout: {e}");
        }
        tasks.push(
            glommio::spawn_local(serve_socket(
                index,
                socket,
                port,
                engine.clone(),
                shared.clone(),
            ))
            .detach(),
        );
    }
    let publisher =
        glommio::spawn_local(publish_stats(index, engine.clone(), shared.clone())).detach();
    for t in tasks {
        t.await;
    }
    publisher.await;
    engine.borrow().stats.publish(&shared.stats[index]);
}

async fn serve_socket(
    index: usize,
    socket: UdpSocket,
    port: Port,
    engine: Rc<RefCell<Engine>>,
    shared: Arc<Shared>,
) {
    let mut datagram = vec![0u8; 4096];
    let mut out = Box::new([0u8; 4096]);
    let mut snapshots = arc_swap::Cache::new(&shared.snapshot);
    let mut clock = ShardClock::new();
    let mut budget = BUDGET_PER_YIELD;
    while !shared.shutdown.load(Ordering::Relaxed) {
        let (len, src) = match socket.recv_from(&mut datagram).await {
            Ok(r) => r,
            Err(ref e) if is_timeout(e) => continue,
            Err(e) => {
                warn!(shard = index, "receive failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let ctx = Context {
            snapshot: snapshots.load(),
            key: &shared.key,
            now: clock.now(),
        };
        let handled = engine
            .borrow_mut()
            .handle(port, src, &datagram[..len], &ctx, &mut out);
        log_event(index, src, &datagram[..len], handled.event, &shared);
        if let Some(reply_len) = handled.reply_len {
            // A failed send is the NAS's loss to retransmit, not ours to retry.
            if let Err(e) = socket.send_to(&out[..reply_len], src).await {
                debug!(shard = index, %src, "send failed: {e}");
            }
        }
        budget -= 1;
        if budget == 0 {
            budget = BUDGET_PER_YIELD;
            glommio::yield_if_needed().await;
        }
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

fn log_event(shard: usize, src: SocketAddr, datagram: &[u8], event: Event, shared: &Shared) {
    let user = || {
        Packet::parse(datagram)
            .ok()
            .and_then(|p| p.attr(attr::USER_NAME))
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .unwrap_or_default()
    };
    match event {
        Event::Accepted { method } => {
            debug!(shard, nas = %src.ip(), user = %user(), method = method.label(), "accept")
        }
        Event::Rejected { method, reason } => info!(
            shard,
            nas = %src.ip(),
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
        Event::StatusServer => debug!(shard, %src, "status-server"),
    }
}

async fn publish_stats(index: usize, engine: Rc<RefCell<Engine>>, shared: Arc<Shared>) {
    while !shared.shutdown.load(Ordering::Relaxed) {
        engine.borrow().stats.publish(&shared.stats[index]);
        glommio::timer::sleep(POLL_SHUTDOWN).await;
    }
}
