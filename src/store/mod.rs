//! One store interface, two backends: the embedded SQLite default and
//! PostgreSQL for production. The schema is the same (SPEC §8); the shards
//! never call a store, only the loader thread, the accounting writer and
//! the admin CLI do.

mod postgres;
mod records;
mod split;
mod sqlite;
mod url;

pub use postgres::PgStore;
pub use records::{
    format_nas_ip_addresses, parse_nas_ip_addresses, Burst, ChangeVersions, LogEntry, LogRow,
    MaPolicy, NasRecord, NasType, RadreplyRecord, ServiceRecord, SessionRow, SubscriberRecord,
    UsageRow,
};
pub use split::{write_splitting, StopCause, Stopped};
pub use sqlite::{logs_path as sqlite_logs_path, SqliteStore};
pub use url::{redact as redact_url, DatabaseUrl, PgUrl};

/// Store failures, for operators: each ends in one clear message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {}", postgres::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("{0} already exists")]
    Duplicate(String),
    #[error("{0}")]
    Invalid(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What a failed write means for the rows in it, so the accounting writer
/// knows whether to try them again later or to split the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The database could not be reached or used: the connection is down
    /// or was lost, the server is shutting down, SQLite is busy, an I/O
    /// error. Nothing is wrong with the rows: try them again later.
    Unavailable,
    /// The database refused the values themselves (a data exception or a
    /// constraint violation): the same rows will fail again, other rows
    /// of the batch may pass.
    Data,
    /// The database refused the statement for another reason: read-only
    /// (a standby), a missing table or column, permissions. Not the rows'
    /// fault: try again later.
    Refused,
}

impl StoreError {
    /// How to treat the rows of the write that failed with this error.
    pub fn failure(&self) -> Failure {
        match self {
            StoreError::Postgres(e) => postgres::failure(e),
            StoreError::Sqlite(e) => sqlite::failure(e),
            StoreError::Unavailable(_) => Failure::Unavailable,
            StoreError::Invalid(_) => Failure::Data,
            StoreError::Config(_) | StoreError::Duplicate(_) => Failure::Refused,
        }
    }
}

/// What the loader, the writer and the admin commands need from a database.
pub trait Store: Send {
    /// Applies pending migrations; returns how many were applied.
    fn migrate(&mut self) -> Result<u32>;
    /// The schema version recorded in the database (0 = empty).
    fn schema_version(&mut self) -> Result<u32>;
    /// The schema version this build's migrations lead to.
    fn target_schema_version(&self) -> u32;
    /// One cheap round trip: Ok when the database answers.
    fn ping(&mut self) -> Result<()> {
        self.schema_version().map(|_| ())
    }

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

    fn add_nas(&mut self, nas: &NasRecord) -> Result<i64>;
    /// Removes by name or IP address; false if none matched.
    fn remove_nas(&mut self, name_or_ip: &str) -> Result<bool>;
    fn add_service(&mut self, service: &ServiceRecord) -> Result<i64>;
    fn remove_service(&mut self, name: &str) -> Result<bool>;
    fn service_id(&mut self, name: &str) -> Result<Option<i64>>;
    /// Inserts all subscribers in one transaction: all or none.
    fn add_subscribers(&mut self, subscribers: &[SubscriberRecord]) -> Result<usize>;
    fn remove_subscriber(&mut self, username: &str) -> Result<bool>;
    /// Suspends or restores a subscriber; false if there is no such user.
    fn set_subscriber_active(&mut self, username: &str, active: bool) -> Result<bool>;
    /// Blocks until another client signals a change or `timeout` passes;
    /// true if a change was signalled. Backends without notifications
    /// just sleep and return false (the caller polls anyway).
    fn wait_for_change(&mut self, timeout: std::time::Duration) -> Result<bool> {
        std::thread::sleep(timeout);
        Ok(false)
    }
    /// Subscribers with their service name, ordered by username.
    fn list_subscribers(&mut self, limit: usize)
        -> Result<Vec<(SubscriberRecord, Option<String>)>>;

    /// Writes a batch of accounting events in one transaction: at most one
    /// event per session (the writer coalesces), upserted into `radacct` by
    /// `acctuniqueid` so that counters and times never move backwards, the
    /// first Stop wins and a late Interim never reopens a stopped session.
    /// A NAS-reboot event closes that NAS's sessions opened before it.
    fn write_accounting(&mut self, events: &[crate::accounting::AcctEvent]) -> Result<()>;
    /// Closes open sessions not updated since `before` (`Stale-Session`,
    /// stop time = last update); returns how many.
    fn close_stale_sessions(&mut self, before: chrono::DateTime<chrono::Utc>) -> Result<u64>;
    /// Inserts a batch of `radius_logs` rows (one statement or COPY).
    fn write_logs(&mut self, entries: &[LogEntry]) -> Result<()>;
    /// The newest `radius_logs` rows: (username, event, result, reason).
    fn recent_logs(&mut self, limit: usize) -> Result<Vec<LogRow>>;
    /// Open sessions whose subscriber is disabled, expired (last valid
    /// day before `today`, the server's local date) or deleted (a tombstone
    /// and no subscriber of that name): the expiry job cuts them.
    fn sessions_to_cut(&mut self, today: chrono::NaiveDate) -> Result<Vec<SessionRow>>;
    /// Whether this process leads cluster-wide job `job` (one node of
    /// several on one database runs it): a session-level advisory lock on
    /// PostgreSQL, always true on the embedded store (one node by nature).
    fn try_lead(&mut self, job: &str) -> Result<bool>;
    /// FUP tiers and free hours of every service that has them.
    fn fup_policy(&mut self) -> Result<crate::policy::fup::FupPolicy>;
    /// Defines tier `tier.level` of `period` for a service (replacing it).
    fn set_fup_tier(
        &mut self,
        service_id: i64,
        period: crate::policy::fup::Period,
        tier: &crate::policy::fup::Tier,
    ) -> Result<()>;
    /// Sets (or with `None` removes) a service's free hours.
    fn set_free_hours(
        &mut self,
        service_id: i64,
        free: Option<crate::policy::fup::FreeHours>,
    ) -> Result<()>;
    /// Subscribers in a FUP tier (levels not both 0).
    fn fup_levels(&mut self) -> Result<Vec<(String, crate::policy::fup::Levels)>>;
    /// Adds counted bytes to each subscriber's daily and monthly usage in
    /// one transaction; returns the new totals with the stored levels.
    fn add_usage(&mut self, deltas: &[(String, u64)]) -> Result<Vec<UsageRow>>;
    fn set_fup_levels(&mut self, username: &str, levels: crate::policy::fup::Levels) -> Result<()>;
    /// One subscriber's usage, if any was counted.
    fn usage(&mut self, username: &str) -> Result<Option<UsageRow>>;
    /// Resets daily usage (`Daily`), or the monthly usage of subscribers
    /// with an anniversary since their last monthly reset (`Monthly`, see
    /// [`crate::policy::fup::monthly_reset_due`]), at most once per
    /// `today`. Returns `None` if it already ran today, else the
    /// subscribers that were in a tier of that period, with their levels
    /// before the reset.
    fn reset_usage(
        &mut self,
        period: crate::policy::fup::Period,
        today: chrono::NaiveDate,
    ) -> Result<Option<Vec<(String, crate::policy::fup::Levels)>>>;
    /// The stored counters of sessions: (acctuniqueid, input + output
    /// octets, session time), for the writer's usage deltas.
    fn session_counters(&mut self, unique_ids: &[String]) -> Result<Vec<(String, u64, u32)>>;
    /// How many sessions are open (no stop time), for the metrics.
    fn open_session_count(&mut self) -> Result<u64>;
    /// Sessions, newest first: open ones only unless `all`; optionally one user's.
    fn sessions(
        &mut self,
        username: Option<&str>,
        all: bool,
        limit: usize,
    ) -> Result<Vec<SessionRow>>;
}

/// Opens the store a URL names.
pub fn open(url: &DatabaseUrl) -> Result<Box<dyn Store>> {
    match url {
        DatabaseUrl::Sqlite(path) => Ok(Box::new(SqliteStore::open(path)?)),
        DatabaseUrl::Postgres(url) => Ok(Box::new(PgStore::connect(url.expose())?)),
    }
}
