//! The pools thread: drives the node's [`Allocator`] against the database.
//!
//! - Every few milliseconds, while logins wait: plans the queued requests
//!   (in memory), makes the claims in one transaction (each a
//!   compare-and-set on its row) and reports the outcome back, so the
//!   shards' parked logins are answered.
//! - Every second: writes the hand-outs from memory (write-behind), runs
//!   the sweeps (a Start confirms an offer, a closed session holds its
//!   address, an offer or hold that ran out frees it), reloads the view,
//!   and on the node that leads `stale-sessions` looks for two open
//!   sessions with one address (counted, logged, and with
//!   `pools.resolve_conflicts = "disconnect-older"` the older one is
//!   disconnected).
//!
//! The shards never wait for it: a login whose address needs a claim is
//! parked in its shard and handed to the engine again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::coa::Change;
use crate::config::ResolveConflicts;
use crate::pool::{Allocator, SlotRow};
use crate::server::jobs::Job;
use crate::server::Shared;
use crate::store::{AddressConflict, PoolStore};

/// How often waiting requests are planned and claimed.
const CLAIM_EVERY: Duration = Duration::from_millis(2);
/// How often the view is reloaded and the sweeps run.
const ROUND_EVERY: Duration = Duration::from_secs(1);
/// Rows freed per round at most.
const RELEASE_LIMIT: usize = 10_000;
/// Claims made in one transaction at most: the round (reload, sweeps)
/// runs between batches, so the view never goes stale under a storm.
const MAX_CLAIMS: usize = 4096;
/// Conflicts looked at per round at most.
const CONFLICT_LIMIT: usize = 1_000;

pub struct PoolsThread {
    pub store: Box<dyn PoolStore>,
    pub shared: Arc<Shared>,
    pub jobs: crossbeam_channel::Sender<Job>,
}

struct State {
    /// Other nodes alive as of the last round.
    alive: HashSet<String>,
    /// The database clock (unix ms) at `clock_at`.
    db_ms: i64,
    clock_at: Instant,
    /// The snapshot whose static IPs are reserved now (held, so its
    /// address cannot be reused by a later snapshot and mistaken for it).
    reserved_from: Option<Arc<crate::policy::Snapshot>>,
    /// Conflicts seen in the last round: each is counted once while it lasts.
    conflicts: HashSet<(String, String)>,
    /// The database was away at the last try (logged once).
    down: bool,
    /// Rows that did not read at the last reload (logged when it changes).
    unreadable: usize,
}

impl State {
    fn new() -> State {
        State {
            alive: HashSet::new(),
            db_ms: chrono::Utc::now().timestamp_millis(),
            clock_at: Instant::now(),
            reserved_from: None,
            conflicts: HashSet::new(),
            down: false,
            unreadable: 0,
        }
    }

    fn db_now(&self) -> i64 {
        self.db_ms + self.clock_at.elapsed().as_millis() as i64
    }
}

impl PoolsThread {
    /// Reads the pools before the shards start: a login must never be
    /// answered with the pool's name (Framed-Pool, the router's own
    /// addressing) because the view was not loaded yet.
    pub fn load_first(&mut self) -> crate::store::Result<()> {
        let mut st = State::new();
        self.reload(&mut st)
    }

    pub fn run(mut self) {
        let mut st = State::new();
        let mut next_round = Instant::now();
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            if Instant::now() >= next_round {
                self.round(&mut st);
                self.shared.pools_generation.fetch_add(1, Ordering::Release);
                next_round = Instant::now() + ROUND_EVERY;
            }
            if self.allocator().has_requests() {
                self.claim(&mut st);
                self.shared.pools_generation.fetch_add(1, Ordering::Release);
            }
            std::thread::sleep(CLAIM_EVERY);
        }
    }

    fn allocator(&self) -> MutexGuard<'_, Allocator> {
        self.shared.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn node(&self) -> String {
        self.shared.leadership.node().to_owned()
    }

    fn database_error(&self, st: &mut State, what: &str, e: impl std::fmt::Display) {
        if !st.down {
            warn!("pools: cannot {what}: {e}; returning subscribers are answered from memory for 5 s, new addresses wait for the database");
            st.down = true;
        }
    }

    fn database_ok(&self, st: &mut State) {
        if st.down {
            info!("pools: database reachable again");
            st.down = false;
        }
    }

    /// Plans the waiting requests and makes their claims.
    fn claim(&mut self, st: &mut State) {
        let (claims, exhausted) =
            self.allocator()
                .plan(&st.alive, st.db_now(), Instant::now(), MAX_CLAIMS);
        for pool in exhausted {
            warn!("pool {pool} exhausted: logins of subscribers without an address in it are rejected (reason \"pool exhausted\"; counted in shardius_pool_exhausted_total; logged at most once a minute)");
        }
        if claims.is_empty() {
            return;
        }
        let node = self.node();
        let started = Instant::now();
        let result = self.store.claim_addresses(&node, &claims);
        debug!(
            claims = claims.len(),
            ms = started.elapsed().as_millis() as u64,
            "pools claims"
        );
        match result {
            Ok((won, db_ms)) => {
                self.database_ok(st);
                st.db_ms = db_ms;
                st.clock_at = Instant::now();
                let mut a = self.allocator();
                for (c, won) in claims.iter().zip(won) {
                    a.claim_done(c, won, db_ms);
                }
            }
            Err(e) => {
                self.allocator().claims_failed(&claims);
                self.database_error(st, "claim addresses", e);
                // Not in a tight loop while the database is away.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Write-behind, sweeps, reload, conflicts.
    fn round(&mut self, st: &mut State) {
        let started = Instant::now();
        let node = self.node();
        let touches = self.allocator().take_touches();
        if let Err(e) = self.store.record_touches(&node, &touches) {
            return self.database_error(st, "record addresses handed out", e);
        }
        match self.store.sweep_pools(&node, RELEASE_LIMIT) {
            Ok(expired) => self.release(st, expired),
            Err(e) => return self.database_error(st, "sweep the pools", e),
        }
        let swept = started.elapsed();
        if let Err(e) = self.reload(st) {
            return self.database_error(st, "read the pools", e);
        }
        self.database_ok(st);
        debug!(
            touches = touches.len(),
            sweep_ms = swept.as_millis() as u64,
            round_ms = started.elapsed().as_millis() as u64,
            "pools round"
        );
        if self
            .shared
            .leadership
            .fence(crate::model::STALE_SESSIONS_JOB)
            .is_some()
        {
            match self.store.address_conflicts(CONFLICT_LIMIT) {
                Ok(found) => self.conflicts(st, found),
                Err(e) => self.database_error(st, "look for address conflicts", e),
            }
        }
    }

    fn release(&mut self, st: &mut State, expired: Vec<SlotRow>) {
        if expired.is_empty() {
            return;
        }
        let detached = self.allocator().detach_for_release(expired);
        let freed = match self.store.release_addresses(&detached) {
            Ok(f) => f,
            Err(e) => {
                self.database_error(st, "free expired addresses", e);
                vec![false; detached.len()]
            }
        };
        let mut a = self.allocator();
        for (row, freed) in detached.iter().zip(freed) {
            a.release_done(row, freed);
        }
    }

    /// Reloads every pool's rows and the reserved static IPs.
    fn reload(&mut self, st: &mut State) -> crate::store::Result<()> {
        let specs = self.store.pool_specs()?;
        let (rows, unreadable) = self.store.pool_rows_all()?;
        if unreadable.len() != st.unreadable {
            st.unreadable = unreadable.len();
            if let Some(first) = unreadable.first() {
                warn!(
                    "pools: {} pool_addresses row(s) do not read and are left out (never handed out): {first}",
                    unreadable.len()
                );
            }
        }
        let mut alive = self.store.live_nodes()?;
        alive.remove(self.shared.leadership.node());
        st.alive = alive;
        let mut by_pool: HashMap<String, Vec<SlotRow>> = HashMap::new();
        for r in rows {
            by_pool.entry(r.pool.clone()).or_default().push(r);
        }
        let pools = specs
            .into_iter()
            .map(|spec| {
                let mut rows = by_pool.remove(&spec.name).unwrap_or_default();
                rows.sort_by_key(|r| r.addr);
                (spec, rows)
            })
            .collect();
        let snapshot = self.shared.snapshot.load();
        let changed = st
            .reserved_from
            .as_ref()
            .is_none_or(|held| !Arc::ptr_eq(held, &snapshot));
        let reserved = changed.then(|| snapshot.static_ips());
        let mut a = self.allocator();
        if let Some(r) = reserved {
            a.set_reserved(r);
            st.reserved_from = Some(snapshot.clone());
        }
        a.refresh(pools, Instant::now());
        Ok(())
    }

    fn conflicts(&mut self, st: &mut State, found: Vec<AddressConflict>) {
        let mut now = HashSet::with_capacity(found.len());
        for c in found {
            let key = (c.newer_unique_id.clone(), c.older_unique_id.clone());
            if !st.conflicts.contains(&key) {
                self.shared.ip_conflicts.fetch_add(1, Ordering::Relaxed);
                let disconnect =
                    self.shared.config.pools.resolve_conflicts == ResolveConflicts::DisconnectOlder;
                warn!(
                    "address conflict: {} is reported by the open sessions of {} (newer) and {} (older, NAS {}){} (counted in shardius_ip_conflicts_total)",
                    c.address,
                    crate::text::printable(&c.newer_user),
                    crate::text::printable(&c.older_user),
                    c.older_nas_ip,
                    if disconnect { ": disconnecting the older" } else { "" }
                );
                if disconnect {
                    let job = Job {
                        user: c.older_user.clone(),
                        session: Some(c.older_session_id.clone()),
                        unique_id: None,
                        change: Change::Disconnect,
                        reply: None,
                    };
                    if self.jobs.try_send(job).is_err() {
                        warn!("address conflict: the CoA queue is full; the older session of {} is not disconnected", crate::text::printable(&c.older_user));
                    }
                }
            }
            now.insert(key);
        }
        st.conflicts = now;
    }
}
