//! The loader: builds snapshots from the store off the packet path and
//! publishes them. It polls the store's change counters (one tiny query)
//! and reloads only what changed: subscribers as a delta by `updated_at`
//! plus deletion tombstones, the small tables whole.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::Shared;

use crate::policy::{Preferences, Snapshot};
use crate::store::{Result, SnapshotSource, StoreError};

/// Changed rows are read from this far before the previous poll's clock,
/// so a transaction that committed late with an earlier `updated_at` is
/// still seen. Re-applying a row is harmless.
const OVERLAP_MICROS: i64 = 2_000_000;

pub struct Loader {
    store: Box<dyn SnapshotSource>,
    /// The last published snapshot; a change clones it once.
    snapshot: Arc<Snapshot>,
    cursor: i64,
}

/// What a load changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub nas_changed: bool,
    pub subscribers_changed: usize,
    pub subscribers_deleted: usize,
}

impl Loader {
    /// Loads everything once.
    pub fn new(
        mut store: Box<dyn SnapshotSource>,
        dictionary: Arc<crate::proto::dictionary::Dictionary>,
        speeds: crate::policy::vendor_speed::VendorSpeeds,
        portal: crate::policy::portal::Portal,
    ) -> Result<Loader> {
        let versions = store.change_versions()?;
        let now = store.now_micros()?;
        let mut snapshot = Snapshot {
            versions,
            dictionary: Some(dictionary),
            speeds: Arc::new(speeds),
            portal: Arc::new(portal),
            ..Snapshot::default()
        };
        snapshot.set_nas(&store.nas_devices()?);
        snapshot.set_services_reporting(&store.services()?, &mut |w| warn!("{w}"));
        store.subscribers_changed_since(0, &mut |r| snapshot.insert_subscriber(&r))?;
        snapshot.set_radreply(&store.radreply()?, |w| warn!("{w}"));
        snapshot.preferences = Preferences::from_pairs(&store.preferences()?, |w| warn!("{w}"));
        load_fup(store.as_mut(), &mut snapshot)?;
        Ok(Loader {
            store,
            snapshot: Arc::new(snapshot),
            cursor: now - OVERLAP_MICROS,
        })
    }

    /// The current snapshot, shared (not copied).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.clone()
    }

    /// Reads every open `radacct` row into the node's session view (the
    /// caller knows some subscriber has a session limit). An error is
    /// logged, not returned: the view keeps what it had, and the writer's
    /// updates.
    pub fn sync_sessions(&mut self, shared: &Shared) -> bool {
        let store = &mut self.store;
        match shared.sessions.sync(|| store.open_sessions()) {
            Ok(()) => true,
            Err(e) => {
                warn!("simultaneous use: cannot read the open sessions (other nodes' sessions are as of the last read): {e}");
                false
            }
        }
    }

    /// Open sessions in the store, for the metrics.
    pub fn open_session_count(&mut self) -> Result<u64> {
        self.store.open_session_count()
    }

    /// Waits up to `timeout` for a change notification from the store.
    pub fn wait_for_change(&mut self, timeout: std::time::Duration) -> Result<bool> {
        self.store.wait_for_change(timeout)
    }

    /// Applies what changed since the last poll; `None` when nothing did.
    pub fn poll(&mut self) -> Result<Option<(Arc<Snapshot>, LoadReport)>> {
        let versions = self.store.change_versions()?;
        let old = self.snapshot.versions;
        if versions == old {
            return Ok(None);
        }
        let now = self.store.now_micros()?;
        let mut next = Snapshot::clone(&self.snapshot);
        let mut report = LoadReport::default();
        if versions.nas_devices != old.nas_devices {
            next.set_nas(&self.store.nas_devices()?);
            report.nas_changed = true;
        }
        if versions.services != old.services {
            next.set_services_reporting(&self.store.services()?, &mut |w| warn!("{w}"));
        }
        if versions.subscribers != old.subscribers {
            // Deletions first: a name deleted and re-created since the
            // cursor comes back with the changed rows.
            let deleted = self.store.subscribers_deleted_since(self.cursor)?;
            next.apply_subscribers(&[], &deleted);
            report.subscribers_deleted = deleted.len();
            report.subscribers_changed = self
                .store
                .subscribers_changed_since(self.cursor, &mut |r| next.insert_subscriber(&r))?;
        }
        if versions.radreply != old.radreply {
            next.set_radreply(&self.store.radreply()?, |w| warn!("{w}"));
        }
        if versions.system_preferences != old.system_preferences {
            next.preferences =
                Preferences::from_pairs(&self.store.preferences()?, |w| warn!("{w}"));
        }
        // Quotas are the services' own columns.
        if versions.fup != old.fup || versions.services != old.services {
            load_fup(self.store.as_mut(), &mut next)?;
        }
        next.versions = versions;
        self.cursor = now - OVERLAP_MICROS;
        self.snapshot = Arc::new(next);
        Ok(Some((self.snapshot.clone(), report)))
    }
}

/// FUP tiers, free hours and the subscribers in a tier.
fn load_fup(store: &mut dyn SnapshotSource, snapshot: &mut Snapshot) -> Result<()> {
    snapshot.fup = crate::policy::fup::policy_from(
        &store.fup_tiers()?,
        &store.free_hours()?,
        snapshot.services.values().map(|s| &**s),
        &mut |w| warn!("{w}"),
    );
    let by_name: std::collections::HashMap<&str, i64> = snapshot
        .services
        .values()
        .map(|s| (s.name.as_str(), s.id))
        .collect();
    let rules: Vec<crate::policy::rules::Rule> = store
        .bandwidth_rules()?
        .iter()
        .filter_map(|r| {
            crate::policy::rules::Rule::from_record(r, |name| by_name.get(name).copied())
                .map_err(|w| warn!("{w}"))
                .ok()
        })
        .collect();
    snapshot.rules = rules.into();
    snapshot.fup_levels = store
        .fup_levels()?
        .into_iter()
        .map(|(user, levels)| (user.into_bytes().into_boxed_slice(), levels))
        .collect();
    Ok(())
}

/// Logs the operator-facing line for a (re)load.
pub fn log_load(snapshot: &Snapshot, report: &LoadReport, started: Instant) {
    if report.nas_changed {
        info!("Loaded {} NAS secrets", snapshot.nas.len());
    }
    if report.subscribers_changed + report.subscribers_deleted > 0 {
        info!(
            changed = report.subscribers_changed,
            deleted = report.subscribers_deleted,
            subscribers = snapshot.subscribers.len(),
            ms = started.elapsed().as_millis() as u64,
            "subscriber snapshot refreshed"
        );
    }
}

/// Logs the static IPs two or more subscribers have (at most 10 lines and
/// a count) and returns how many there are, for the metric.
pub fn check_static_ips(snapshot: &Snapshot) -> u64 {
    let conflicts = snapshot.static_ip_conflicts();
    for (ip, users) in conflicts.iter().take(10) {
        let users: Vec<String> = users
            .iter()
            .map(|u| crate::text::printable(u).into_owned())
            .collect();
        warn!(
            "static IP {ip} is given to {} subscribers: {} (one address, one subscriber; counted in shardius_static_ip_conflicts)",
            users.len(),
            users.join(", ")
        );
    }
    if conflicts.len() > 10 {
        warn!(
            "{} more static IPs are given to several subscribers",
            conflicts.len() - 10
        );
    }
    conflicts.len() as u64
}

/// The lines that say the first snapshot is loaded.
pub fn log_first(snapshot: &Snapshot, started: Instant) {
    info!("Loaded {} NAS secrets", snapshot.nas.len());
    info!(
        subscribers = snapshot.subscribers.len(),
        services = snapshot.services.len(),
        ms = started.elapsed().as_millis() as u64,
        "snapshot loaded"
    );
}

/// Starts the loader thread: it waits for a change notification
/// (PostgreSQL) or the poll interval, reloads what changed and publishes
/// the snapshot, counts open sessions for the metrics, and keeps the
/// shards on the cached snapshot (logging the outage once) while the
/// database is away.
pub fn spawn(
    mut loader: Loader,
    shared: Arc<Shared>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
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
            let sync_every = Duration::from_millis(shared.config.sessions.sync_interval_ms);
            let mut next_sync = Instant::now() + sync_every;
            let mut limits = loader.snapshot.has_session_limits();
            while !shared.shutdown.load(Ordering::Relaxed) {
                if limits && Instant::now() >= next_sync {
                    next_sync = Instant::now() + sync_every;
                    loader.sync_sessions(&shared);
                }
                // Wake on a change notification (PostgreSQL), on the poll
                // interval (every backend), or to check for shutdown.
                let wait = next
                    .min(if limits { next_sync } else { next })
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
                            log_load(&snapshot, &report, started);
                            if report.subscribers_changed + report.subscribers_deleted > 0 {
                                let n = check_static_ips(&snapshot);
                                shared.static_ip_conflicts.store(n, Ordering::Relaxed);
                            }
                            let had_limits =
                                std::mem::replace(&mut limits, snapshot.has_session_limits());
                            if limits != had_limits {
                                shared.sessions.set_active(limits);
                            }
                            if limits && !had_limits {
                                // A limit was just set: learn the open
                                // sessions before a login can count them
                                // (the snapshot with the limit is not out
                                // yet).
                                loader.sync_sessions(&shared);
                                next_sync = Instant::now() + sync_every;
                            }
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
}
