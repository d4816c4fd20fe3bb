//! The IO shell: shards (glommio executors, one per core) own the sockets
//! and call the engine; the loader thread publishes snapshots; the main
//! thread waits for SIGTERM/SIGINT and drains.

mod admin_api;
mod clock;
mod control;
mod enforcer;
mod loader;
mod logpool;
pub mod metrics;
mod quota;
mod shard;
pub mod socket;
pub mod status;
mod unknown_nas;
pub mod writer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tracing::{error, info, warn};

pub use loader::{LoadReport, Loader};

use crate::config::Config;
use crate::engine::{all_drop_reasons, Counter, DropReason, StatsSlot};
use crate::keyfile::PasswordKey;
use crate::policy::RejectReason;
use crate::policy::Snapshot;
use crate::store::{Store, StoreError};

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
}

impl Shared {
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
    #[error("accounting spool: {0}")]
    Spool(#[from] crate::accounting::spool::SpoolError),
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
    #[error("RLIMIT_MEMLOCK is {have_kib} KiB but a shard's io_uring needs {need_kib} KiB: raise it (LimitMEMLOCK= in the systemd unit, `ulimit -l` in a shell)")]
    Memlock { have_kib: u64, need_kib: u64 },
    #[error("cannot listen on {addr} (http.listen): {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Opens a new connection to the configured store.
pub type StoreFactory<'a> = &'a dyn Fn() -> Result<Box<dyn Store>, StoreError>;

/// Runs the server until SIGTERM or SIGINT. Every thread that talks to the
/// database gets its own connection from `open_store`: the loader, the
/// accounting writer and each radius_logs worker.
pub fn serve(
    config: Config,
    key: PasswordKey,
    open_store: StoreFactory<'_>,
) -> Result<(), ServeError> {
    let started = Instant::now();
    check_memlock()?;
    let store = open_store()?;
    let acct_store = open_store()?;
    let enforcer_store = open_store()?;
    let usage_store = open_store()?;
    // One radius_logs writer on the embedded store (its file has one write
    // lock; see logpool); `log.workers` on PostgreSQL.
    let log_workers = match config.database.url {
        crate::store::DatabaseUrl::Sqlite(_) => 1,
        crate::store::DatabaseUrl::Postgres(_) => config.log.workers,
    };
    let log_stores = if config.log.radius_logs {
        (0..log_workers)
            .map(|_| open_store().map(|s| -> Box<dyn crate::store::LogSink> { s }))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    let shard_count = config.shard_count();
    let loader = Loader::new(store)?;
    let first = loader.snapshot().clone();
    info!("Loaded {} NAS secrets", first.nas.len());
    info!(
        subscribers = first.subscribers.len(),
        services = first.services.len(),
        ms = started.elapsed().as_millis() as u64,
        "snapshot loaded"
    );

    let mut per_shard: Vec<shard::ShardSockets> = (0..shard_count)
        .map(|_| shard::ShardSockets {
            auth: Vec::new(),
            acct: Vec::new(),
            writer: None,
            logs: None,
        })
        .collect();
    let mut writer_sockets: Vec<Vec<std::net::UdpSocket>> =
        (0..shard_count).map(|_| Vec::new()).collect();
    let mut bound_auth = Vec::new();
    let mut bound_acct = Vec::new();
    // Held until serve() returns: this process serves these addresses.
    let mut address_locks = Vec::new();
    let recv_buffer = config.server.recv_buffer_bytes;
    for (addrs, bound, is_auth) in [
        (&config.server.listen_auth, &mut bound_auth, true),
        (&config.server.listen_acct, &mut bound_acct, false),
    ] {
        for &addr in addrs {
            // Claim a fixed address before joining its socket group (never
            // take a running instance's traffic, even for a moment); a
            // port-0 group is new, so claim it once its port is known.
            let early = (addr.port() != 0)
                .then(|| socket::lock_address(addr))
                .transpose()
                .map_err(|source| ServeError::Bind { addr, source })?;
            let group = socket::bind_group(addr, shard_count, recv_buffer)
                .map_err(|source| ServeError::Bind { addr, source })?;
            let actual = group[0]
                .local_addr()
                .map_err(|source| ServeError::Bind { addr, source })?;
            let lock = match early {
                Some(lock) => lock,
                None => socket::lock_address(actual).map_err(|source| ServeError::Bind {
                    addr: actual,
                    source,
                })?,
            };
            address_locks.push(lock);
            bound.push(actual);
            for (i, s) in group.into_iter().enumerate() {
                if is_auth {
                    per_shard[i].auth.push(s);
                } else {
                    // The writer answers accounting on the same socket.
                    writer_sockets[i].push(
                        s.try_clone()
                            .map_err(|source| ServeError::Bind { addr, source })?,
                    );
                    per_shard[i].acct.push(s);
                }
            }
        }
    }

    let http_listener = if config.http.enabled {
        let addr = config.http.listen;
        Some(
            std::net::TcpListener::bind(addr)
                .map_err(|source| ServeError::Http { addr, source })?,
        )
    } else {
        None
    };
    let http_addr = match &http_listener {
        Some(l) => l
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into()),
        None => "off".into(),
    };

    let acct_committed: Arc<[std::sync::atomic::AtomicU64]> = (0..shard_count)
        .map(|_| std::sync::atomic::AtomicU64::new(0))
        .collect();
    let (acct_tx, acct_rx) = crossbeam_channel::bounded(config.accounting.queue_capacity);
    let queue_watch = acct_rx.clone();
    for s in &mut per_shard {
        s.writer = Some(acct_tx.clone());
    }
    drop(acct_tx);
    let log_stats = Arc::new(logpool::LogPoolStats::default());
    let log_workers = if log_stores.is_empty() {
        Vec::new()
    } else {
        let (log_tx, log_rx) = crossbeam_channel::bounded(config.log.queue_capacity);
        for s in &mut per_shard {
            s.logs = Some(log_tx.clone());
        }
        logpool::spawn(log_stores, log_rx, log_stats.clone())
    };
    let writer_stats = Arc::new(writer::WriterStats::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    let acct_writer = {
        let (spool, opened) = crate::accounting::spool::Spool::open(
            &config.accounting.spool_path,
            config.accounting.spool_max_bytes,
        )?;
        if opened.tail > 0 {
            let what = if opened.tail_torn {
                "a record cut short by a crash (never acknowledged)"
            } else {
                "damaged bytes (acknowledged accounting may have been in them)"
            };
            warn!(
                "accounting spool {}: its last {} bytes hold no intact record, {what}; kept in {}",
                spool.path().display(),
                opened.tail,
                spool.unreadable_path().display()
            );
        }
        if opened.pending > 0 {
            info!(
                bytes = opened.pending,
                "accounting spool left from a previous run: replaying it"
            );
        }
        writer::Writer::new(
            acct_store,
            spool,
            acct_rx,
            writer_sockets,
            acct_committed.clone(),
            writer_stats.clone(),
            config.accounting.clone(),
            shutdown.clone(),
        )
    };

    let shared = Arc::new(Shared {
        snapshot: ArcSwap::new(first),
        stats: (0..shard_count).map(|_| StatsSlot::default()).collect(),
        acct_committed,
        shutdown,
        origin: started,
        loader_status: Default::default(),
        coa: Default::default(),
        unknown_nas: Default::default(),
        key,
        config,
    });
    // CoA jobs: from the admin API and from quota bookkeeping.
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(1024);
    let quota_stats = Arc::new(quota::QuotaStats::default());
    let (usage_tx, usage_rx) = quota::channel();
    let acct_writer = acct_writer.with_quota(quota::Quota::new(shared.clone(), usage_tx));
    let usage_thread = {
        let worker = quota::UsageWorker {
            store: usage_store,
            shared: shared.clone(),
            rx: usage_rx,
            jobs: jobs_tx.clone(),
            stats: quota_stats.clone(),
        };
        std::thread::Builder::new()
            .name("usage".into())
            .spawn(move || worker.run())
            .map_err(ServeError::Shard)?
    };
    let writer_thread = std::thread::Builder::new()
        .name("acct-writer".into())
        .spawn(move || acct_writer.run())
        .map_err(ServeError::Shard)?;

    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(ServeError::Signals)?;
    shared.loader_status.synced(shared.now_ms());
    let loader_thread = spawn_loader(loader, shared.clone());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut shards = Vec::with_capacity(shard_count);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    for (i, sockets) in per_shard.into_iter().enumerate() {
        shards.push(
            shard::spawn(
                i,
                Some(i % cores),
                sockets,
                shared.clone(),
                started_tx.clone(),
            )
            .map_err(ServeError::Shard)?,
        );
    }
    drop(started_tx);
    // Every shard reports once its executor runs; one that cannot start
    // drops its sender unsent. Never report ready with a shard missing.
    let shards_up = started_rx.iter().take(shard_count).count();
    let sources = Arc::new(metrics::Sources {
        shared: shared.clone(),
        writer: writer_stats.clone(),
        logs: log_stats.clone(),
        queue: queue_watch,
        quota: quota_stats,
    });
    let enforcer_thread = {
        let enforcer = enforcer::Enforcer::new(enforcer_store, jobs_rx, shared.clone());
        std::thread::Builder::new()
            .name("enforcer".into())
            .spawn(move || enforcer.run())
            .map_err(ServeError::Shard)?
    };
    let control_thread = control::spawn(
        http_listener,
        Arc::new(control::ControlState {
            registry: metrics::registry(sources.clone()),
            sources,
            admin: admin_api::Admin {
                token: shared.config.http.admin_token.clone(),
                jobs: jobs_tx,
            },
        }),
    )
    .map_err(ServeError::Shard)?;
    let mut signals = signals;
    if shards_up < shard_count {
        // Never "listening" or READY with a shard missing.
        error!(
            "{} of {shard_count} shards failed to start: stopping",
            shard_count - shards_up
        );
    } else {
        info!(
            "listening auth={} acct={} http={} shards={}",
            join(&bound_auth),
            join(&bound_acct),
            http_addr,
            shard_count
        );
        // Sockets are bound, every shard runs, the first snapshot is loaded:
        // tell systemd (Type=notify). Without NOTIFY_SOCKET this does nothing.
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&format!(
                "serving {} NAS, {} subscribers on {shard_count} shards",
                shared.snapshot.load().nas.len(),
                shared.snapshot.load().subscribers.len()
            )),
        ]);
        if let Some(sig) = signals.forever().next() {
            info!(signal = sig, "shutting down");
        }
    }
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("draining accounting"),
    ]);
    shared.shutdown.store(true, Ordering::Relaxed);
    let mut shard_error = None;
    for (i, h) in shards.into_iter().enumerate() {
        if let Err(e) = h.join() {
            error!(shard = i, "shard ended with an error: {e}");
            shard_error.get_or_insert_with(|| format!("shard {i}: {e}"));
        }
    }
    if loader_thread.join().is_err() {
        error!("loader thread panicked");
    }
    if control_thread.join().is_err() {
        error!("control thread panicked");
    }
    if enforcer_thread.join().is_err() {
        error!("enforcer thread panicked");
    }
    // The shards are gone, so are their senders: the writer commits and
    // answers what is still queued, then ends.
    if writer_thread.join().is_err() {
        error!("accounting writer panicked");
    }
    // The writer handed over its last sums; the usage thread counts them.
    if usage_thread.join().is_err() {
        error!("usage thread panicked");
    }
    let had_log_workers = !log_workers.is_empty();
    for w in log_workers {
        if w.join().is_err() {
            error!("radius_logs worker panicked");
        }
    }
    if had_log_workers {
        info!(
            "radius_logs stopped: written={} failed={}",
            log_stats.written.load(Ordering::Relaxed),
            log_stats.failed.load(Ordering::Relaxed)
        );
    }
    for (i, slot) in shared.stats.iter().enumerate() {
        info!("{}", shard_summary(i, slot));
    }
    drop(address_locks);
    info!("stopped");
    match shard_error {
        Some(e) if shards_up < shard_count => Err(ServeError::Shard(std::io::Error::other(e))),
        _ => Ok(()),
    }
}

/// glommio refuses to start an executor whose io_uring buffers exceed
/// RLIMIT_MEMLOCK, with an error that names neither the limit nor the fix.
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

fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn spawn_loader(mut loader: Loader, shared: Arc<Shared>) -> std::thread::JoinHandle<()> {
    let interval = Duration::from_secs(shared.config.database.reload_interval_secs);
    std::thread::Builder::new()
        .name("loader".into())
        .spawn(move || {
            let mut outage = false;
            let mut next_count = Instant::now();
            let open_sessions_every =
                Duration::from_secs(shared.config.database.open_sessions_interval_secs);
            let report_error = |outage: &mut bool, e: &StoreError| {
                shared.loader_status.failed();
                if !*outage {
                    error!("snapshot reload failed, serving from the cached snapshot: {e}");
                    *outage = true;
                }
            };
            let mut next = Instant::now() + interval;
            while !shared.shutdown.load(Ordering::Relaxed) {
                // Wake on a change notification (PostgreSQL), on the poll
                // interval (every backend), or to check for shutdown.
                let wait = next
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200));
                let notified = match loader.wait_for_change(wait) {
                    Ok(n) => n,
                    Err(e) => {
                        report_error(&mut outage, &e);
                        std::thread::sleep(wait);
                        false
                    }
                };
                if !notified && Instant::now() < next {
                    continue;
                }
                next = Instant::now() + interval;
                let started = Instant::now();
                match loader.poll() {
                    Ok(changed) => {
                        if let Some((snapshot, report)) = changed {
                            loader::log_load(&snapshot, &report, started);
                            shared.snapshot.store(snapshot);
                        }
                        shared.loader_status.synced(shared.now_ms());
                        if std::mem::take(&mut outage) {
                            info!("database reachable again; snapshot reloading resumed");
                        }
                        if Instant::now() >= next_count {
                            next_count = Instant::now() + open_sessions_every;
                            match loader.open_session_count() {
                                Ok(n) => shared
                                    .loader_status
                                    .open_sessions
                                    .store(n, Ordering::Relaxed),
                                Err(e) => report_error(&mut outage, &e),
                            }
                        }
                    }
                    Err(e) => report_error(&mut outage, &e),
                }
            }
        })
        .expect("spawning a thread only fails when the process is out of resources")
}
