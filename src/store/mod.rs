//! The database, role by role, on two backends: the embedded SQLite
//! default and PostgreSQL for production, with the same schema (the
//! migrations in `migrations/`, one folder per backend). The shards never
//! call a store; each other thread holds the one role it uses
//! (`roles`): the loader a [`SnapshotSource`], the accounting writer an
//! [`AccountingSink`], the usage and jobs threads a [`UsageStore`], the
//! radius_logs workers a [`LogSink`], the CLI all of them ([`Store`]).

mod postgres;
mod roles;
mod split;
mod sqlite;
mod url;

// The rows, where the roles' signatures name them (they live in `model`).
pub use crate::model::{
    format_nas_ip_addresses, parse_nas_ip_addresses, Burst, ChangeVersions, LogEntry, LogRow,
    MaPolicy, NasRecord, NasType, RadreplyRecord, ServiceRecord, SessionRow, SubscriberRecord,
    UsageRow,
};
pub use postgres::PgStore;
pub use roles::{
    AccountingSink, AddressConflict, Admin, ClusterStore, JobsStore, LogSink, PoolStore,
    RemovePool, SnapshotSource, Store, UsageStore,
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

/// Two subscribers of one batch with the same static IP: refused before
/// anything is written (the database has no unique index on it, so that a
/// panel's conflicting row is detected at load rather than refused).
pub(crate) fn static_ips_unique_in(subscribers: &[crate::model::SubscriberRecord]) -> Result<()> {
    let mut seen = std::collections::HashMap::new();
    for s in subscribers {
        if let Some(ip) = s.static_ip {
            if let Some(first) = seen.insert(ip, s.username.as_str()) {
                return Err(StoreError::Invalid(format!(
                    "static IP {ip} given to both {:?} and {:?}",
                    crate::text::printable(first),
                    crate::text::printable(&s.username)
                )));
            }
        }
    }
    Ok(())
}

/// A static IP another subscriber has (its static_ip or a radreply Framed-IP-Address).
pub(crate) fn static_ip_taken(ip: String, username: String) -> StoreError {
    StoreError::Invalid(format!(
        "static IP {} is already {:?}'s; one address, one subscriber",
        crate::text::printable(&ip),
        crate::text::printable(&username)
    ))
}

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
    /// The database refused the statement for another reason: a missing
    /// table or column, permissions (a read-only standby is Unavailable). Not the rows'
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

/// `nas_devices.nas_ip_addresses` of row `id`; entries that are not
/// addresses are skipped with a warning (a panel's typo must not take the
/// NAS out).
fn nas_ip_addresses_of(id: i64, text: &str) -> Vec<std::net::IpAddr> {
    let (good, bad) = parse_nas_ip_addresses(text);
    for b in bad {
        tracing::warn!(
            "nas_devices row {id}: nas_ip_addresses entry {:?} is not an address (skipped)",
            crate::text::printable(&b)
        );
    }
    good
}

/// Opens the store a URL names.
pub fn open(url: &DatabaseUrl) -> Result<Box<dyn Store>> {
    match url {
        DatabaseUrl::Sqlite(path) => Ok(Box::new(SqliteStore::open(path)?)),
        DatabaseUrl::Postgres(url) => Ok(Box::new(PgStore::connect(url.expose())?)),
    }
}
