//! The IO shell: everything that touches a socket, a thread, the clock or
//! a database, grouped by subsystem. Nothing here decides; the core does.
//!
//! - [`shard`]: one glommio executor per core, owning its sockets (one per
//!   listen address, in SO_REUSEPORT groups) and its `Engine`: receive,
//!   call the engine, send or hand to the writer. The only glommio code.
//! - [`accounting`]: the accounting writer thread (batches, commits,
//!   acknowledges only what is durable), the spool, the set-aside file,
//!   and quota bookkeeping with its usage thread.
//! - [`control`]: the control thread: `/metrics`, `/healthz`, the admin
//!   API and the systemd watchdog.
//! - `loader`: the loader thread, publishing snapshots to the shards.
//! - [`jobs`]: the jobs thread: CoA and Disconnect, the expiry/suspension
//!   sweep and the usage resets.
//! - [`cluster`]: the cluster thread: this node's heartbeat and the
//!   leases of the singleton jobs, published as [`cluster::Leadership`].
//! - [`pools`]: the pools thread: address claims in batches, the sweeps
//!   and the view the shards allocate from.
//! - `logpool`: the radius_logs workers.
//! - `threads`: the running threads and the order they stop in.
//!
//! [`serve`] wires them: build, start, wait for a signal, stop.

pub mod accounting;
pub mod cluster;
pub mod control;
pub mod cpus;
pub mod jobs;
mod loader;
pub mod logpool;
pub mod pools;
pub mod sessions;
pub mod shard;
mod threads;
pub mod udp_batch;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tracing::{error, info};

pub use loader::{LoadReport, Loader};

use crate::config::Config;
use crate::engine::{all_drop_reasons, Counter, DropReason, StatsSlot};
use crate::keyfile::PasswordKey;
use crate::policy::RejectReason;
use crate::policy::Snapshot;
use crate::store::{
    AccountingSink, ClusterStore, JobsStore, PoolStore, Store, StoreError, UsageStore,
};
use control::status;
use shard::unknown_nas;

/// What every shard and the loader share.
pub struct Shared {
    pub config: Config,
    pub key: PasswordKey,
    pub snapshot: ArcSwap<Snapshot>,
    /// One published counter slot per shard.
    pub stats: Box<[StatsSlot]>,
    /// Per shard: the highest accounting ticket the writer has committed.
    pub acct_committed: Arc<[std::sync::atomic::AtomicU64]>,
    pub shutdown: Arc<AtomicBool>,
    /// The clock origin of heartbeats and the loader's sync time.
    pub origin: Instant,
    pub loader_status: status::LoaderStatus,
    pub coa: status::CoaStats,
    /// The `unknown NAS` log line, bounded across shards.
    pub unknown_nas: unknown_nas::UnknownNasLog,
    /// Which singleton jobs this node leads (the cluster thread writes it).
    pub leadership: cluster::Leadership,
    /// Set by the usage thread when it raised a FUP level: the jobs
    /// thread, if it leads the quota job, sends the tier CoAs at once.
    pub tiers_raised: AtomicBool,
    /// Static IPs that several subscribers have, as of the last load.
    pub static_ip_conflicts: std::sync::atomic::AtomicU64,
    /// The node's view of the server-side pools: the shards allocate from
    /// it under this lock, the pools thread keeps it in step with the
    /// database.
    pub pools: std::sync::Mutex<crate::pool::Allocator>,
    /// Bumped by the pools thread whenever claims were settled or the view
    /// reloaded: the shards look at their parked logins only then.
    pub pools_generation: AtomicU64,
    /// Two open sessions found with one address (`shardius_ip_conflicts_total`).
    pub ip_conflicts: AtomicU64,
    /// The node's open sessions and login reservations (simultaneous use).
    pub sessions: Arc<sessions::LiveSessions>,
}

impl Shared {
    /// The server's local wall-clock time (shifted by `--clock-offset-secs`).
    pub fn local_now(&self) -> chrono::NaiveDateTime {
        (chrono::Local::now() + chrono::TimeDelta::seconds(self.config.clock_offset_secs))
            .naive_local()
    }

    /// Whether to log `unknown NAS: ip` now: at most once a minute per
    /// address for the whole process, and at most
    /// [`unknown_nas::LINES_PER_MINUTE`] lines a minute in all. Only
    /// reached for the first packet per shard per address per minute (the
    /// engine filters first); lock-free and O(1).
    pub fn should_log_unknown_nas(&self, ip: std::net::IpAddr) -> bool {
        self.unknown_nas
            .should_log(ip, self.origin.elapsed().as_secs())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot load the snapshot: {0}")]
    Load(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start shard: {0}")]
    Shard(std::io::Error),
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("accounting spool: {0}")]
    Spool(#[from] accounting::spool::SpoolError),
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
    #[error("RLIMIT_MEMLOCK is {have_kib} KiB but a shard's io_uring needs {need_kib} KiB: raise it (LimitMEMLOCK= in the systemd unit, `ulimit -l` in a shell)")]
    Memlock { have_kib: u64, need_kib: u64 },
    #[error("{0}")]
    Dictionary(String),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr} (http.listen): {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Opens a new connection to the configured store.
pub type StoreFactory<'a> = &'a dyn Fn() -> Result<Box<dyn Store>, StoreError>;

/// Runs the server until SIGTERM or SIGINT. Every thread that talks to the
/// database gets a connection of its own from `open_store`, holding only
/// the role it uses.
pub fn serve(
    config: Config,
    key: PasswordKey,
    open_store: StoreFactory<'_>,
) -> Result<(), ServeError> {
    let started = Instant::now();
    check_memlock()?;
    let (dictionary, problems) = config.dictionary.load().map_err(ServeError::Dictionary)?;
    if !problems.is_empty() {
        tracing::warn!(
            "dictionary.directory: {} line(s) not understood and left out (their attributes cannot be named in radreply), the first: {}",
            problems.len(),
            problems[0]
        );
    }
    // The loader only reads: from a nearby replica when one is configured.
    let loader = Loader::new(
        match &config.database.read_url {
            Some(url) => crate::store::open(url)?,
            None => open_store()?,
        },
        dictionary,
        config.speeds.clone(),
        config.portal()?,
    )?;
    let acct_store: Box<dyn AccountingSink> = open_store()?;
    // SQLite takes one writer at a time: lanes would only wait for its lock.
    let lane_stores = match config.database.url {
        crate::store::DatabaseUrl::Postgres(_) if config.accounting.writer_connections > 1 => (0
            ..config.accounting.writer_connections)
            .map(|_| open_store().map(|s| -> Box<dyn AccountingSink> { s }))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let usage_store: Box<dyn UsageStore> = open_store()?;
    let jobs_store: Box<dyn JobsStore> = open_store()?;
    let cluster_store: Box<dyn ClusterStore> = open_store()?;
    let pools_store: Box<dyn PoolStore> = open_store()?;
    let log_stores = logpool::open_stores(&config, open_store)?;
    let first = loader.snapshot();
    let first_has_limits = first.has_session_limits();
    loader::log_first(&first, started);
    let static_ip_conflicts = loader::check_static_ips(&first);
    let shard_count = config.shard_count();
    let mut bound = shard::bind(&config.server, shard_count)?;
    let http = control::bind(&config.http)?;
    let spool = accounting::open_spool(&config.accounting)?;

    // The channels, each bounded, and what a full one means: shards →
    // writer (not acknowledged, counted; the NAS retransmits); shards and
    // jobs → radius_logs (dropped, counted); writer → usage thread (one
    // batch of sums; the writer keeps summing); usage thread and admin API
    // → jobs (a CoA refused with an error).
    let (acct_tx, acct_rx) = crossbeam_channel::bounded(config.accounting.queue_capacity);
    let (log_tx, log_rx) = logpool::queue(config.log.queue_capacity);
    let (usage_tx, usage_rx) = accounting::quota::channel();
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(1024);
    for s in &mut bound.shards {
        s.writer = Some(acct_tx.clone());
        s.logs = (!log_stores.is_empty()).then(|| log_tx.clone());
    }
    drop(acct_tx);

    let shutdown = Arc::new(AtomicBool::new(false));
    let acct_committed: Arc<[AtomicU64]> = (0..shard_count).map(|_| AtomicU64::new(0)).collect();
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::new(first),
        stats: (0..shard_count).map(|_| StatsSlot::default()).collect(),
        acct_committed: acct_committed.clone(),
        shutdown: shutdown.clone(),
        origin: started,
        loader_status: Default::default(),
        coa: Default::default(),
        unknown_nas: Default::default(),
        leadership: cluster::Leadership::new(config.cluster.node_name()),
        tiers_raised: AtomicBool::new(false),
        static_ip_conflicts: AtomicU64::new(static_ip_conflicts),
        pools: std::sync::Mutex::new(crate::pool::Allocator::new(&config.cluster.node_name())),
        ip_conflicts: AtomicU64::new(0),
        pools_generation: AtomicU64::new(0),
        sessions: Arc::new(sessions::LiveSessions::new(
            &config.sessions,
            jobs_tx.clone(),
        )),
        key,
        config,
    });
    let writer_stats = Arc::new(accounting::WriterStats::default());
    let quota_stats = Arc::new(accounting::quota::QuotaStats::default());
    let log_stats = Arc::new(logpool::LogPoolStats::default());
    let writer = accounting::Writer::new(
        acct_store,
        spool,
        acct_rx.clone(),
        std::mem::take(&mut bound.writer_sockets),
        acct_committed,
        writer_stats.clone(),
        shared.config.accounting.clone(),
        shutdown,
    )
    .with_lanes(lane_stores)
    .with_quota(accounting::quota::Quota::new(shared.clone(), usage_tx))
    .with_sessions(shared.sessions.clone());
    let usage = accounting::quota::UsageWorker {
        store: usage_store,
        shared: shared.clone(),
        rx: usage_rx,
        stats: quota_stats.clone(),
    };
    let logs = (!log_stores.is_empty()).then(|| log_tx.clone());
    let jobs = jobs::Enforcer::new(
        jobs_store,
        jobs_rx,
        logs,
        shared.clone(),
        writer_stats.clone(),
    );
    let mut pools = pools::PoolsThread {
        store: pools_store,
        shared: shared.clone(),
        jobs: jobs_tx.clone(),
    };
    pools.load_first()?;
    // Before the first login: a restarted node knows the open sessions
    // (when any subscriber has a limit; else when the first one is set).
    let mut loader = loader;
    if first_has_limits {
        shared.sessions.set_active(true);
        loader.sync_sessions(&shared);
    }
    let cluster = cluster::ClusterThread {
        store: cluster_store,
        shared: shared.clone(),
        writer: writer_stats.clone(),
        listen: format!("auth={} acct={}", join(&bound.auth), join(&bound.acct)),
    };
    let control = Arc::new(control::ControlState::new(
        control::metrics::Sources {
            shared: shared.clone(),
            writer: writer_stats,
            logs: log_stats.clone(),
            queue: acct_rx,
            quota: quota_stats,
        },
        jobs_tx,
    ));
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(ServeError::Signals)?;

    let http_addr = http.as_ref().map_or("off".into(), |l| {
        l.local_addr().map_or("?".into(), |a| a.to_string())
    });
    let parts = threads::Parts {
        writer,
        usage,
        loader,
        shards: std::mem::take(&mut bound.shards),
        jobs,
        cluster,
        pools,
        http,
        control,
        log_stores,
        log_rx,
        log_stats: log_stats.clone(),
    };
    let (threads, shards_up) = threads::Threads::start(parts, &shared)?;
    drop(log_tx);
    if shards_up < shard_count {
        // Never "listening" or READY with a shard missing.
        error!(
            "{} of {shard_count} shards failed to start: stopping",
            shard_count - shards_up
        );
    } else {
        announce_ready(&shared, &bound, &http_addr);
        if let Some(sig) = signals.forever().next() {
            info!(signal = sig, "shutting down");
        }
    }
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("draining accounting"),
    ]);
    shared.shutdown.store(true, Ordering::Relaxed);
    let shard_error = threads.join_in_order();
    log_summaries(&shared, &log_stats);
    drop(bound.claims);
    info!("stopped");
    match shard_error {
        Some(e) if shards_up < shard_count => Err(ServeError::Shard(std::io::Error::other(e))),
        _ => Ok(()),
    }
}

/// Says the server serves: the `listening` line tests and operators parse,
/// and READY to systemd (Type=notify; without NOTIFY_SOCKET a no-op), once
/// the sockets are bound, every shard runs and the first snapshot is loaded.
fn announce_ready(shared: &Shared, bound: &shard::Bound, http: &str) {
    let shards = shared.stats.len();
    info!(
        "listening auth={} acct={} http={http} shards={shards}",
        join(&bound.auth),
        join(&bound.acct),
    );
    let snapshot = shared.snapshot.load();
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!(
            "serving {} NAS, {} subscribers on {shards} shards",
            snapshot.nas.len(),
            snapshot.subscribers.len()
        )),
    ]);
}

/// What the log pool and each shard did, at exit.
fn log_summaries(shared: &Shared, logs: &logpool::LogPoolStats) {
    if shared.config.log.radius_logs {
        info!(
            "radius_logs stopped: written={} failed={}",
            logs.written.load(Ordering::Relaxed),
            logs.failed.load(Ordering::Relaxed)
        );
    }
    for (i, slot) in shared.stats.iter().enumerate() {
        info!("{}", shard_summary(i, slot));
    }
}

/// glommio refuses to start an executor whose io_uring buffers exceed
/// RLIMIT_MEMLOCK, with an error that names neither the limit nor the fix.
#[allow(unsafe_code)] // getrlimit(2): no safe wrapper in std
fn check_memlock() -> Result<(), ServeError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Ok(());
    }
    if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < shard::MEMLOCK_PER_SHARD {
        return Err(ServeError::Memlock {
            have_kib: limit.rlim_cur / 1024,
            need_kib: shard::MEMLOCK_PER_SHARD / 1024,
        });
    }
    Ok(())
}

/// One line per shard at shutdown: what it handled.
fn shard_summary(index: usize, slot: &StatsSlot) -> String {
    let rejects: u64 = RejectReason::ALL
        .iter()
        .map(|r| slot.get(Counter::Reject(*r)))
        .sum();
    let dropped: u64 = all_drop_reasons()
        .map(|d| slot.get(Counter::Dropped(d)))
        .sum();
    format!(
        "shard={index} auth_requests={} accepts={} rejects={rejects} duplicates={} status_server={} acct_requests={} dropped={dropped} unknown_nas={} log_dropped={}",
        slot.get(Counter::AuthRequests),
        slot.get(Counter::Accepts),
        slot.get(Counter::Duplicates),
        slot.get(Counter::StatusServer),
        slot.get(Counter::AcctRequests),
        slot.get(Counter::Dropped(DropReason::UnknownNas)),
        slot.get(Counter::LogDropped),
    )
}

/// Sleeps for `wait`, waking early when `flag` is set.
pub(crate) fn sleep_unless(flag: &AtomicBool, wait: std::time::Duration) {
    let until = Instant::now() + wait;
    while !flag.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(std::time::Duration::from_millis(50)));
    }
}

fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
