//! The loader: builds snapshots from the store off the packet path and
//! publishes them. It polls the store's change counters (one tiny query)
//! and reloads only what changed: subscribers as a delta by `updated_at`
//! plus deletion tombstones, the small tables whole.

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use crate::policy::{Preferences, Snapshot};
use crate::store::{Result, SnapshotSource};

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
    pub fn new(mut store: Box<dyn SnapshotSource>) -> Result<Loader> {
        let versions = store.change_versions()?;
        let now = store.now_micros()?;
        let mut snapshot = Snapshot {
            versions,
            ..Snapshot::default()
        };
        snapshot.set_nas(&store.nas_devices()?);
        snapshot.set_services(&store.services()?);
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
            next.set_services(&self.store.services()?);
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
        if versions.fup != old.fup {
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
    snapshot.fup = crate::policy::fup::policy_from(&store.fup_tiers()?, &store.free_hours()?);
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
