//! The threads of a running server, and the order they stop in (the
//! mini-redis shutdown module, written as code): each step waits only for
//! threads whose work the later steps depend on, so nothing acknowledged
//! is lost and nothing waits for a thread that is already gone.

use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;

use tracing::{error, info, warn};

use super::{
    accounting, cluster, control, cpus, jobs, loader, logpool, pools, shard, ServeError, Shared,
};
use crate::store::LogSink;

/// Everything built and ready to run.
pub struct Parts {
    pub writer: accounting::Writer,
    pub usage: accounting::quota::UsageWorker,
    pub loader: loader::Loader,
    pub shards: Vec<shard::ShardSockets>,
    pub jobs: jobs::Enforcer,
    pub cluster: cluster::ClusterThread,
    pub pools: pools::PoolsThread,
    pub http: Option<TcpListener>,
    pub control: Arc<control::ControlState>,
    pub log_stores: Vec<Box<dyn LogSink>>,
    pub log_rx: super::logpool::LogReceiver,
    pub log_stats: Arc<logpool::LogPoolStats>,
}

pub struct Threads {
    pub shards: Vec<shard::Handle>,
    pub loader: JoinHandle<()>,
    pub control: JoinHandle<()>,
    pub jobs: JoinHandle<()>,
    pub cluster: JoinHandle<()>,
    pub pools: JoinHandle<()>,
    pub writer: JoinHandle<()>,
    pub usage: JoinHandle<()>,
    pub logs: Vec<JoinHandle<()>>,
}

impl Threads {
    /// Starts every thread: the accounting writer and the usage thread
    /// before the shards feed them, the loader, the shards (each reports
    /// once its executor runs), then the cluster thread, the jobs, the
    /// control thread and the radius_logs workers. Returns how many shards started.
    pub fn start(parts: Parts, shared: &Arc<Shared>) -> Result<(Threads, usize), ServeError> {
        let thread = |name: &'static str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|source| ServeError::Thread { name, source })
        };
        let Parts {
            writer,
            usage,
            loader,
            shards,
            jobs,
            cluster,
            pools,
            http,
            control,
            log_stores,
            log_rx,
            log_stats,
        } = parts;
        // The background threads start from this one and keep its CPUs;
        // the shards pin themselves to theirs.
        let plan = cpus::plan(
            &cpus::allowed(),
            shards.len(),
            &shared.config.server.background_cpus,
        );
        match &plan.background {
            Some(bg) => match cpus::pin_current(bg) {
                Ok(()) => info!(
                    "shards on CPUs {}, background threads on CPUs {}",
                    cpus::format_list(&plan.shards),
                    cpus::format_list(bg)
                ),
                Err(e) => warn!(
                    "server.background_cpus: cannot pin to {}: {e}; background threads share the shards' CPUs",
                    cpus::format_list(bg)
                ),
            },
            None => info!(
                "shards on CPUs {}; background threads share them (no spare CPU: server.background_cpus)",
                cpus::format_list(&plan.shards)
            ),
        }
        let writer = thread("acct-writer", Box::new(move || writer.run()))?;
        // Before the shards: their first pooled login queues a claim.
        let pools = thread("pools", Box::new(move || pools.run()))?;
        let usage = thread("usage", Box::new(move || usage.run()))?;
        shared.loader_status.synced(shared.now_ms());
        let loader =
            loader::spawn(loader, shared.clone()).map_err(|source| ServeError::Thread {
                name: "loader",
                source,
            })?;
        let count = shards.len();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let shards = shards
            .into_iter()
            .enumerate()
            .map(|(i, sockets)| {
                shard::spawn(
                    i,
                    Some(plan.shards[i]),
                    sockets,
                    shared.clone(),
                    started_tx.clone(),
                )
                .map_err(ServeError::Shard)
            })
            .collect::<Result<Vec<_>, _>>()?;
        drop(started_tx);
        // One that cannot start drops its sender unsent.
        let shards_up = started_rx.iter().take(count).count();
        let cluster = thread("cluster", Box::new(move || cluster.run()))?;
        let jobs = thread("jobs", Box::new(move || jobs.run()))?;
        let control = control::spawn(http, control).map_err(|source| ServeError::Thread {
            name: "control",
            source,
        })?;
        let logs = logpool::spawn(log_stores, log_rx, log_stats);
        let threads = Threads {
            shards,
            loader,
            control,
            jobs,
            cluster,
            pools,
            writer,
            usage,
            logs,
        };
        Ok((threads, shards_up))
    }

    /// Joins every thread once `Shared::shutdown` is set; returns the first
    /// shard failure.
    pub fn join_in_order(self) -> Option<String> {
        let mut shard_error = None;
        // 1. The shards stop receiving within 200 ms. As they end, their
        //    senders to the accounting writer and the radius_logs pool go.
        for (i, h) in self.shards.into_iter().enumerate() {
            if let Err(e) = h.join() {
                error!(shard = i, "shard ended with an error: {e}");
                shard_error.get_or_insert_with(|| format!("shard {i}: {e}"));
            }
        }
        // 2. The loader and the control thread (HTTP, watchdog): nothing
        //    below depends on them, and they watch the flag.
        joined(self.loader, "loader thread");
        joined(self.control, "control thread");
        // 2b. The pools thread: no shard asks for an address any more.
        joined(self.pools, "pools thread");
        // 3. The jobs thread finishes the CoA in flight and ends (it may
        //    still queue radius_logs rows: the log pool stops last).
        joined(self.jobs, "jobs thread");
        // 3b. The cluster thread gives up the leases this node holds, so
        //     another node takes the jobs over at once, not when they expire.
        joined(self.cluster, "cluster thread");
        // 4. The accounting writer: with no sender left it commits and
        //    answers what is queued (or abandons, unacknowledged, what
        //    neither the database nor a full spool takes), then ends.
        joined(self.writer, "accounting writer");
        // 5. The usage thread: the writer handed over its last sums.
        joined(self.usage, "usage thread");
        // 6. The radius_logs workers: every sender is gone; they drain.
        for w in self.logs {
            joined(w, "radius_logs worker");
        }
        shard_error
    }
}

fn joined(handle: JoinHandle<()>, what: &str) {
    if handle.join().is_err() {
        error!("{what} panicked");
    }
}
