//! What each thread asks of the database, one trait per role. A thread
//! holds only its role (`Box<dyn AccountingSink>` in the accounting
//! writer, ...), so reading it tells which SQL it can reach; each backend
//! implements a role in a file of that name (`postgres/accounting.rs` has
//! the radacct upsert). [`Store`] is every role at once, for the CLI.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

use super::Result;
use crate::accounting::AcctEvent;
use crate::model::{
    ChangeVersions, ClusterView, Fence, FreeHours, ImportBatch, LapseAction, Levels, LogEntry,
    LogRow, MonthlyResetCandidate, NasRecord, NodeInfo, OverLimit, Period, QuotaSettings,
    RadreplyRecord, RuleRecord, ServiceRecord, SessionRow, SubscriberRecord, SweepRow, TierRecord,
    UsageRow,
};
use crate::pool::{Claim, PoolAddr, PoolCounts, PoolSpec, SlotRow, Touch};

/// The loader thread: everything a snapshot is built from.
pub trait SnapshotSource: Send {
    /// Per-table change counters, bumped by triggers on every write, so a
    /// poll costs one tiny query and sees changes made by any client.
    fn change_versions(&mut self) -> Result<ChangeVersions>;
    /// The database clock in microseconds since the epoch (delta cursors
    /// use the database's clock, not ours).
    fn now_micros(&mut self) -> Result<i64>;
    fn nas_devices(&mut self) -> Result<Vec<NasRecord>>;
    fn services(&mut self) -> Result<Vec<ServiceRecord>>;
    /// Streams subscribers written at or after `since_micros` (0: all)
    /// into `sink`, row by row, so a million-row load is never held twice;
    /// returns how many rows were streamed.
    fn subscribers_changed_since(
        &mut self,
        since_micros: i64,
        sink: &mut dyn FnMut(SubscriberRecord),
    ) -> Result<usize>;
    /// Usernames deleted at or after `since_micros`.
    fn subscribers_deleted_since(&mut self, since_micros: i64) -> Result<Vec<String>>;
    fn radreply(&mut self) -> Result<Vec<RadreplyRecord>>;
    fn preferences(&mut self) -> Result<Vec<(String, String)>>;
    /// Every service's FUP tiers.
    fn fup_tiers(&mut self) -> Result<Vec<TierRecord>>;
    /// Every service's free hours: (service id, window).
    fn free_hours(&mut self) -> Result<Vec<(i64, FreeHours)>>;
    /// The time-of-day bandwidth rules, by id.
    fn bandwidth_rules(&mut self) -> Result<Vec<RuleRecord>>;
    /// Subscribers in a FUP tier (levels not both 0).
    fn fup_levels(&mut self) -> Result<Vec<(String, Levels)>>;
    /// How many sessions are open (no stop time), for the metrics.
    /// Every open `radacct` row, as simultaneous use counts sessions
    /// (`policy::sessions`): username, key, NAS, Calling-Station-Id, start.
    fn open_sessions(&mut self) -> Result<Vec<crate::policy::sessions::OpenRow>>;
    fn open_session_count(&mut self) -> Result<u64>;
    /// Blocks until another client signals a change or `timeout` passes;
    /// true if a change was signalled. Backends without notifications
    /// just sleep and return false (the caller polls anyway).
    fn wait_for_change(&mut self, timeout: Duration) -> Result<bool> {
        std::thread::sleep(timeout);
        Ok(false)
    }
}

/// The accounting writer: radacct, and stale sessions.
pub trait AccountingSink: Send {
    /// Writes a batch of accounting events in one transaction: at most one
    /// event per session (the writer coalesces), upserted into `radacct` by
    /// `acctuniqueid` so that counters and times never move backwards, the
    /// first Stop wins and a late Interim never reopens a stopped session.
    /// A NAS-reboot event closes the open sessions of its NAS's addresses
    /// opened before it.
    fn write_accounting(&mut self, events: &[AcctEvent]) -> Result<()>;
    /// [`AccountingSink::write_accounting`], returning also, per event, the
    /// session's counters as stored before this write (input + output
    /// octets, session time; `None` for a new row or a NAS reboot), read
    /// under the row's lock in the same transaction. A usage delta against
    /// them is exact however many nodes write the same session: each
    /// write sees the one committed before it.
    fn write_accounting_counted(&mut self, events: &[AcctEvent])
        -> Result<Vec<Option<(u64, u32)>>>;
    /// Closes open sessions not updated since `before` (`Stale-Session`,
    /// stop time = last update); returns how many.
    fn close_stale_sessions(&mut self, before: DateTime<Utc>) -> Result<u64>;
    /// One cheap round trip: Ok when the database answers.
    fn ping(&mut self) -> Result<()>;
    /// Which of `keys` name a radacct row (`acctuniqueid`): sessions open
    /// across the upgrade to FreeRADIUS's key continue on their rows
    /// (`server/accounting/legacy.rs`).
    fn existing_sessions(&mut self, keys: &[&str]) -> Result<std::collections::HashSet<String>>;
}

/// The usage thread and the jobs: quota usage and tier levels, the daily
/// and monthly resets, the sessions the expiry job cuts and the ones a
/// CoA goes to (leadership is [`ClusterStore`]'s).
pub trait UsageStore: Send {
    /// Adds counted bytes to each subscriber's daily and monthly usage in
    /// one transaction; returns the new totals with the stored levels.
    fn add_usage(&mut self, deltas: &[(String, u64)]) -> Result<Vec<UsageRow>>;
    fn set_fup_levels(&mut self, username: &str, levels: Levels) -> Result<()>;
    /// Raises the stored levels from `from` to `to` only if they still
    /// read `from` (a compare-and-set): when two nodes count the interims
    /// that cross a tier at once, exactly one wins and sends the CoA.
    fn raise_fup_levels(&mut self, username: &str, from: Levels, to: Levels) -> Result<bool>;
    /// Up to `limit` subscribers whose levels differ from the levels whose
    /// speed their NAS was last told: (username, applied, current).
    fn pending_tier_changes(&mut self, limit: usize) -> Result<Vec<(String, Levels, Levels)>>;
    /// Records `levels` as applied (the CoA for them is on its way) if they
    /// are still the current levels and `fence` holds; false otherwise.
    fn mark_tier_applied(&mut self, fence: &Fence, username: &str, levels: Levels) -> Result<bool>;
    /// Resets daily usage, at most once per `today` cluster-wide (the day
    /// is claimed in the same transaction). `None` if it already ran
    /// today, else the subscribers that were in a daily tier, with their
    /// levels before.
    fn reset_daily(&mut self, today: NaiveDate) -> Result<Option<Vec<(String, Levels)>>>;
    /// Claims today's monthly check and, in the same transaction, resets
    /// the monthly usage of every subscriber for whom `due` (the policy's
    /// decision) says so. `None` if it already ran today, else the reset
    /// subscribers that were in a monthly tier, with their levels before.
    fn reset_monthly(
        &mut self,
        today: NaiveDate,
        due: &dyn Fn(&MonthlyResetCandidate) -> bool,
    ) -> Result<Option<Vec<(String, Levels)>>>;
    /// [`UsageStore::reset_daily`], or [`UsageStore::reset_monthly`] with
    /// the policy's rule of when a subscriber's monthly reset is due
    /// (`policy::fup::monthly_reset_due`): the store applies, the policy decides.
    fn reset_usage(
        &mut self,
        period: Period,
        today: NaiveDate,
    ) -> Result<Option<Vec<(String, Levels)>>> {
        match period {
            Period::Daily => self.reset_daily(today),
            Period::Monthly => self.reset_monthly(today, &|c| {
                crate::policy::fup::monthly_reset_due_for(today, c)
            }),
        }
    }
    /// Open sessions whose subscriber is disabled, expired (last valid
    /// day before `today`, the server's local date) or deleted (a tombstone
    /// and no subscriber of that name) or at a byte quota (a level of 7 in
    /// `subscriber_usage`), and open sessions in the walled
    /// garden whatever their subscriber's standing: the expiry job decides
    /// what each gets (`policy::portal`). Forgets the portal moves of
    /// sessions that have ended.
    fn sweep_sessions(&mut self, today: NaiveDate) -> Result<Vec<SweepRow>>;
    /// Records that the session was moved into the walled garden for
    /// `reason`, if `fence` still holds (false otherwise).
    fn mark_captive(&mut self, fence: &Fence, session: &SessionRow, reason: &str) -> Result<bool>;
    /// Forgets a move into the walled garden (its CoA failed).
    fn forget_captive(&mut self, unique_id: &str) -> Result<()>;
    /// The local time up to which the bandwidth rules' CoAs were sent.
    fn rules_evaluated_at(&mut self) -> Result<Option<chrono::NaiveDateTime>>;
    /// Records it, if `fence` still holds (false otherwise).
    fn set_rules_evaluated_at(&mut self, fence: &Fence, at: chrono::NaiveDateTime) -> Result<bool>;
    /// Open sessions of subscribers of these services.
    fn open_sessions_of_services(&mut self, service_ids: &[i64]) -> Result<Vec<SessionRow>>;
    /// A subscriber's open sessions, newest first (`username` as stored).
    fn open_sessions_of(&mut self, username: &str) -> Result<Vec<SessionRow>>;
}

/// The cluster thread and the singleton jobs: this node's registry row,
/// the leases, and the fenced writes of a leader.
pub trait ClusterStore: Send {
    /// Inserts or refreshes this node's `cluster_nodes` row, heartbeat =
    /// the database's now. `started` rewrites the start time (at start).
    fn heartbeat(&mut self, node: &NodeInfo, started: bool) -> Result<()>;
    /// Takes `job`'s lease for `node` if it is free or expired, or renews
    /// it if `node` holds it, for `ttl` by the database's clock; the epoch
    /// grows whenever the lease changes hands or was expired. Returns the
    /// lease as it is after the attempt: `node` leads iff it is the holder.
    fn acquire_lease(
        &mut self,
        job: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<crate::model::LeaseRow>;
    /// Gives the lease up (at shutdown), so another node takes over at its
    /// next attempt instead of after the lease runs out.
    fn release_lease(&mut self, job: &str, node: &str) -> Result<()>;
    /// Closes stale sessions (as [`AccountingSink::close_stale_sessions`])
    /// and records the run, in one transaction that commits only if
    /// `fence` still holds (the lease row is locked until commit, so no
    /// takeover interleaves). `None`: the fence did not hold, nothing done.
    fn close_stale_fenced(&mut self, fence: &Fence, before: DateTime<Utc>) -> Result<Option<u64>>;
    /// Records a run of a job that acted outside the database (the expiry
    /// sweep's CoAs, a usage reset), if `fence` holds; false otherwise.
    fn record_run(&mut self, fence: &Fence, affected: u64) -> Result<bool>;
    /// The nodes and leases, with the database's clock.
    fn cluster_view(&mut self) -> Result<ClusterView>;
}

/// The radius_logs writers.
pub trait LogSink: Send {
    /// Inserts a batch of `radius_logs` rows (one statement or COPY).
    fn write_logs(&mut self, entries: &[LogEntry]) -> Result<()>;
    /// The newest `radius_logs` rows: (username, event, result, reason).
    fn recent_logs(&mut self, limit: usize) -> Result<Vec<LogRow>>;
}

/// The admin commands: schema, NAS devices, services, subscribers, FUP
/// settings and what an operator looks at.
pub trait Admin: Send {
    /// Applies pending migrations; returns how many were applied.
    fn migrate(&mut self) -> Result<u32>;
    /// The schema version recorded in the database (0 = empty).
    fn schema_version(&mut self) -> Result<u32>;
    /// The schema version this build's migrations lead to.
    fn target_schema_version(&self) -> u32;
    fn add_nas(&mut self, nas: &NasRecord) -> Result<i64>;
    /// Removes by name or IP address; false if none matched.
    fn remove_nas(&mut self, name_or_ip: &str) -> Result<bool>;
    fn add_service(&mut self, service: &ServiceRecord) -> Result<i64>;
    fn remove_service(&mut self, name: &str) -> Result<bool>;
    /// Adds a bandwidth rule; an error names a taken name.
    fn add_rule(&mut self, rule: &RuleRecord) -> Result<i64>;
    /// Removes a bandwidth rule by name; false if there is none.
    fn remove_rule(&mut self, name: &str) -> Result<bool>;
    /// Sets the pools a service names (`a,b`; None: none); false if no
    /// service has that name.
    fn set_service_pools(&mut self, name: &str, pools: Option<&str>) -> Result<bool>;
    /// Sets a service's session limit and what a login over it gets (each
    /// left as it is when None); false if no service has that name.
    fn set_service_limit(
        &mut self,
        name: &str,
        max_sessions: Option<u32>,
        over_limit: Option<OverLimit>,
    ) -> Result<bool>;
    /// Sets what logins of the service's expired and disabled subscribers
    /// get (each left as it is when None); false if no such service.
    fn set_service_lapse(
        &mut self,
        name: &str,
        on_expired: Option<LapseAction>,
        on_disabled: Option<LapseAction>,
    ) -> Result<bool>;
    /// Sets a service's byte quotas and what reaching one does (each left
    /// as it is when None; a quota of 0: none); false if no such service.
    fn set_service_quota(&mut self, name: &str, quota: &QuotaSettings) -> Result<bool>;
    /// Sets a subscriber's own session limit (None: its service's); false
    /// if there is no such user.
    fn set_subscriber_max_sessions(&mut self, username: &str, max: Option<u32>) -> Result<bool>;
    fn service_id(&mut self, name: &str) -> Result<Option<i64>>;
    /// Inserts all subscribers in one transaction: all or none.
    fn add_subscribers(&mut self, subscribers: &[SubscriberRecord]) -> Result<usize>;
    /// `shardius import freeradius`: the whole batch in one transaction
    /// (see [`ImportBatch`]); on an error nothing is written.
    fn import(&mut self, batch: &ImportBatch) -> Result<()>;
    fn remove_subscriber(&mut self, username: &str) -> Result<bool>;
    /// Suspends or restores a subscriber; false if there is no such user.
    fn set_subscriber_active(&mut self, username: &str, active: bool) -> Result<bool>;
    /// Sets a subscriber's last valid day (None: no expiry); false if
    /// there is no such user.
    fn set_subscriber_expiry(
        &mut self,
        username: &str,
        last_day: Option<NaiveDate>,
    ) -> Result<bool>;
    /// Subscribers with their service name, ordered by username.
    fn list_subscribers(&mut self, limit: usize)
        -> Result<Vec<(SubscriberRecord, Option<String>)>>;
    /// Defines tier `tier.level` of `tier.period` for its service (replacing it).
    fn set_fup_tier(&mut self, tier: &TierRecord) -> Result<()>;
    /// Sets (or with `None` removes) a service's free hours.
    fn set_free_hours(&mut self, service_id: i64, free: Option<FreeHours>) -> Result<()>;
    /// One subscriber's usage, if any was counted.
    fn usage(&mut self, username: &str) -> Result<Option<UsageRow>>;
    /// Sessions, newest first: open ones only unless `all`; optionally one user's.
    fn sessions(
        &mut self,
        username: Option<&str>,
        all: bool,
        limit: usize,
    ) -> Result<Vec<SessionRow>>;
}

/// The jobs thread's connection: usage, resets and the fenced runs.
pub trait JobsStore: UsageStore + ClusterStore {}

impl<T: UsageStore + ClusterStore> JobsStore for T {}

/// The address pools' definitions and rows (`pool add|list|show|rm`).
pub trait PoolStore: Send {
    /// Defines `spec` with its `addresses`, in one transaction. An address
    /// that is already in a pool refuses the whole pool
    /// (`StoreError::Duplicate` naming it and its pool).
    fn add_pool(&mut self, spec: &PoolSpec, addresses: &[PoolAddr]) -> Result<()>;
    /// Every pool's definition.
    fn pool_specs(&mut self) -> Result<Vec<PoolSpec>>;
    /// Per pool: size and addresses by state.
    fn pool_counts(&mut self) -> Result<Vec<PoolCounts>>;
    /// The rows of `pool` that name a subscriber (not free), in address order.
    fn pool_rows(&mut self, pool: &str) -> Result<Vec<SlotRow>>;
    /// Removes `pool`, refused while an address of it is offered or in use.
    fn remove_pool(&mut self, pool: &str) -> Result<RemovePool>;
    /// Makes `claims` for `node` in one transaction, each a compare-and-set
    /// on its row (see `pool::ClaimKind`): true where the row is now the
    /// claim's subscriber's. Also the database's clock (unix ms).
    fn claim_addresses(&mut self, node: &str, claims: &[Claim]) -> Result<(Vec<bool>, i64)>;
    /// Every row of every pool, free ones too: the pools thread's view.
    /// Rows that do not read (a panel wrote an address that does not
    /// parse) are left out and described in the second list.
    fn pool_rows_all(&mut self) -> Result<(Vec<SlotRow>, Vec<String>)>;
    /// Writes hand-outs from memory (write-behind): a row that still names
    /// the subscriber and `node` is offered until the offer timeout, or
    /// stays in use.
    fn record_touches(&mut self, node: &str, touches: &[Touch]) -> Result<()>;
    /// The sweeps, in one transaction: an offered row that an open session
    /// of its subscriber reports is in use (with the session's
    /// acctuniqueid); an in-use row whose session is closed (Stop, stale
    /// cleanup, Accounting-On/Off) is held for the pool's hold time.
    /// Returns the rows whose offer or hold ran out that `node` may free
    /// (its own, nobody's, or those of a node gone `NODE_GONE_MS`), at
    /// most `limit`.
    fn sweep_pools(&mut self, node: &str, limit: usize) -> Result<Vec<SlotRow>>;
    /// Frees each of `rows` that is still as read and still expired
    /// (compare-and-set): true where it did.
    fn release_addresses(&mut self, rows: &[SlotRow]) -> Result<Vec<bool>>;
    /// The nodes whose heartbeat is younger than `NODE_GONE_MS`.
    fn live_nodes(&mut self) -> Result<std::collections::HashSet<String>>;
    /// Pairs of open sessions that report the same IPv4 address, the
    /// newer first: at most `limit`.
    fn address_conflicts(&mut self, limit: usize) -> Result<Vec<AddressConflict>>;
}

/// Two open sessions with one address (a router that allocated by itself,
/// or a static IP given twice).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AddressConflict {
    pub address: String,
    pub newer_unique_id: String,
    pub newer_user: String,
    pub older_unique_id: String,
    pub older_session_id: String,
    pub older_user: String,
    pub older_nas_ip: String,
}

/// What `remove_pool` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovePool {
    Removed,
    NotFound,
    /// This many addresses are offered or in use.
    InUse(u64),
}

/// Every role: what the CLI and the tests open.
pub trait Store: SnapshotSource + AccountingSink + JobsStore + LogSink + Admin + PoolStore {}

impl<T: SnapshotSource + AccountingSink + JobsStore + LogSink + Admin + PoolStore> Store for T {}
