//! The embedded store: SQLite through rusqlite (bundled), so the first
//! README command works with nothing else installed.
//!
//! This file: opening (WAL, the radius_logs file of its own), error
//! classification and row mappers. One file per role, as for PostgreSQL:
//! `snapshot.rs`, `accounting.rs`, `usage.rs`, `cluster.rs`, `logs.rs`,
//! `admin.rs`.

mod accounting;
mod admin;
mod cluster;
mod logs;
mod pools;
mod snapshot;
mod usage;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use rusqlite::{Connection, ErrorCode, Row};

use super::{nas_ip_addresses_of, Result, StoreError};
use crate::model::QuotaAction;
use crate::model::{
    Burst, LapseAction, Levels, MaPolicy, NasRecord, NasType, OverLimit, PasswordKind,
    ServiceRecord, SessionRow, SubscriberRecord, UsageRow,
};

/// Versioned migrations shipped in the binary, applied in order.
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_subscribers.sql")),
    (2, include_str!("../migrations/sqlite/0002_radacct.sql")),
    (3, include_str!("../migrations/sqlite/0003_radius_logs.sql")),
    (4, include_str!("../migrations/sqlite/0004_fup.sql")),
    (
        5,
        include_str!("../migrations/sqlite/0005_nas_addresses.sql"),
    ),
    (6, include_str!("../migrations/sqlite/0006_cluster.sql")),
    (7, include_str!("../migrations/sqlite/0007_pools.sql")),
    (
        8,
        include_str!("../migrations/sqlite/0008_freeradius_indexes.sql"),
    ),
    (9, include_str!("../migrations/sqlite/0009_nas_proxies.sql")),
    (
        10,
        include_str!("../migrations/sqlite/0010_freeradius_import.sql"),
    ),
    (11, include_str!("../migrations/sqlite/0011_nas_types.sql")),
    (
        12,
        include_str!("../migrations/sqlite/0012_session_limits.sql"),
    ),
    (
        13,
        include_str!("../migrations/sqlite/0013_walled_garden.sql"),
    ),
    (
        14,
        include_str!("../migrations/sqlite/0014_quota_actions.sql"),
    ),
    (
        15,
        include_str!("../migrations/sqlite/0015_bandwidth_rules.sql"),
    ),
    (
        16,
        include_str!("../migrations/sqlite/0016_radacct_hot_updates.sql"),
    ),
];

const NOW_MICROS: &str = "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)";

pub struct SqliteStore {
    conn: Connection,
    /// `radius_logs`, in a database file of its own (see [`logs_path`]);
    /// opened on first use.
    logs: Option<Connection>,
    logs_path: PathBuf,
}

/// The schema of the `radius_logs` file.
const LOGS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS radius_logs (
        id INTEGER PRIMARY KEY,
        logged_at TEXT NOT NULL,
        nas_ip TEXT,
        username TEXT,
        event TEXT NOT NULL,
        result TEXT NOT NULL,
        reason TEXT,
        shard INTEGER
    );
    CREATE INDEX IF NOT EXISTS radius_logs_logged_at ON radius_logs (logged_at);
    CREATE INDEX IF NOT EXISTS radius_logs_username ON radius_logs (username, logged_at);";

/// Where the embedded store keeps `radius_logs`: beside the database, with
/// `-logs` before the extension (`shardius.db` → `shardius-logs.db`).
/// SQLite has one write lock per file; a log writer that holds it while
/// the shards keep its core busy must never make accounting wait for it.
pub fn logs_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_os_string())
        .unwrap_or_default();
    let mut name = stem;
    name.push("-logs");
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    path.with_file_name(name)
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        // WAL: the loader reads while the CLI or the writer writes.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // Every transaction takes the write lock at BEGIN (IMMEDIATE): a
        // deferred one that reads and then writes fails at once with
        // "database is locked" (SQLITE_BUSY_SNAPSHOT, no busy wait) when
        // another connection committed in between; the fenced job writes,
        // the counted accounting write and the resets all read first.
        let mut conn = conn;
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        Ok(SqliteStore {
            conn,
            logs: None,
            logs_path: logs_path(path),
        })
    }

    /// The `radius_logs` connection, opened (and the table created) on
    /// first use. Best-effort observability: `synchronous = NORMAL`.
    fn logs(&mut self) -> Result<&mut Connection> {
        if self.logs.is_none() {
            let conn = Connection::open(&self.logs_path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.execute_batch(LOGS_SCHEMA)?;
            self.logs = Some(conn);
        }
        Ok(self.logs.as_mut().expect("opened above"))
    }

    fn version(&self, table: &str) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT version FROM change_versions WHERE table_name = ?1",
            [table],
            |r| r.get(0),
        )?)
    }
}

/// Classifies an SQLite error: a busy or locked database and I/O errors
/// are unavailability; constraint violations (including a trigger's
/// `RAISE(ABORT)`), type mismatches and oversized values are the rows'
/// fault; the rest (read-only file, missing table) is a refusal.
pub(in crate::store) fn failure(e: &rusqlite::Error) -> super::Failure {
    use super::Failure;
    match e {
        rusqlite::Error::SqliteFailure(err, _) => match err.code {
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::DiskFull
            | ErrorCode::OutOfMemory
            | ErrorCode::FileLockingProtocolFailed => Failure::Unavailable,
            ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig => {
                Failure::Data
            }
            _ => Failure::Refused,
        },
        rusqlite::Error::ToSqlConversionFailure(_)
        | rusqlite::Error::IntegralValueOutOfRange(..) => Failure::Data,
        _ => Failure::Refused,
    }
}

/// Maps a UNIQUE violation to a message naming what already exists.
fn unique(what: impl FnOnce() -> String) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) if e.to_string().contains("UNIQUE") => {
            StoreError::Duplicate(what())
        }
        _ => StoreError::Sqlite(e),
    }
}

fn bad_row(table: &str, id: i64, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("{table} row {id}: {what}").into(),
    )
}

fn nas_from_row(r: &Row<'_>) -> rusqlite::Result<NasRecord> {
    let id: i64 = r.get("id")?;
    let ip: String = r.get("ip_address")?;
    let nas_type: String = r.get("type")?;
    let ma: String = r.get("require_message_authenticator")?;
    Ok(NasRecord {
        id,
        name: r.get("name")?,
        short_name: r.get("short_name")?,
        identifier: r.get("identifier")?,
        ip_address: ip
            .parse()
            .map_err(|_| bad_row("nas_devices", id, "bad ip_address"))?,
        secret: r.get("secret")?,
        nas_type: NasType::parse(&nas_type)
            .ok_or_else(|| bad_row("nas_devices", id, "bad type"))?,
        coa_port: r.get("coa_port")?,
        require_message_authenticator: MaPolicy::parse(&ma)
            .ok_or_else(|| bad_row("nas_devices", id, "bad require_message_authenticator"))?,
        is_active: r.get("is_active")?,
        api_username: r.get("api_username")?,
        api_password: r.get("api_password")?,
        nas_ip_addresses: nas_ip_addresses_of(id, &r.get::<_, String>("nas_ip_addresses")?),
        is_proxy: r.get("is_proxy")?,
        coa_via: r
            .get::<_, Option<String>>("coa_via")?
            .filter(|v| !v.is_empty()),
        coa_address: match r
            .get::<_, Option<String>>("coa_address")?
            .filter(|v| !v.is_empty())
        {
            None => None,
            Some(a) => Some(
                a.parse()
                    .map_err(|_| bad_row("nas_devices", id, "bad coa_address"))?,
            ),
        },
    })
}

fn service_from_row(r: &Row<'_>) -> rusqlite::Result<ServiceRecord> {
    let burst = match (
        r.get::<_, Option<u32>>("burst_download_kbps")?,
        r.get::<_, Option<u32>>("burst_upload_kbps")?,
    ) {
        (Some(download_kbps), Some(upload_kbps)) => Some(Burst {
            download_kbps,
            upload_kbps,
            threshold_download_kbps: r
                .get::<_, Option<u32>>("burst_threshold_download_kbps")?
                .unwrap_or(0),
            threshold_upload_kbps: r
                .get::<_, Option<u32>>("burst_threshold_upload_kbps")?
                .unwrap_or(0),
            time_secs: r.get::<_, Option<u32>>("burst_time_secs")?.unwrap_or(0),
        }),
        _ => None,
    };
    Ok(ServiceRecord {
        id: r.get("id")?,
        name: r.get("name")?,
        download_kbps: r.get("download_kbps")?,
        upload_kbps: r.get("upload_kbps")?,
        burst,
        pool_name: r.get("pool_name")?,
        filter_id: r.get("filter_id")?,
        idle_timeout: r.get("idle_timeout")?,
        daily_quota_bytes: r.get("daily_quota_bytes")?,
        monthly_quota_bytes: r.get("monthly_quota_bytes")?,
        reply_attributes: r.get("reply_attributes")?,
        max_sessions: r.get::<_, Option<u32>>("max_sessions")?.unwrap_or(0),
        over_limit: OverLimit::parse(&r.get::<_, String>("over_limit")?).unwrap_or_default(),
        on_expired: LapseAction::parse(&r.get::<_, String>("on_expired")?).unwrap_or_default(),
        on_disabled: LapseAction::parse(&r.get::<_, String>("on_disabled")?).unwrap_or_default(),
        quota_action: QuotaAction::parse(&r.get::<_, String>("quota_action")?).unwrap_or_default(),
        quota_download_kbps: r.get::<_, Option<u32>>("quota_download_kbps")?.unwrap_or(0),
        quota_upload_kbps: r.get::<_, Option<u32>>("quota_upload_kbps")?.unwrap_or(0),
    })
}

fn subscriber_from_row(r: &Row<'_>) -> rusqlite::Result<SubscriberRecord> {
    let id: i64 = r.get("id")?;
    let expiry: Option<String> = r.get("expiry_date")?;
    let static_ip: Option<String> = r.get("static_ip")?;
    Ok(SubscriberRecord {
        id,
        username: r.get("username")?,
        password_enc: r.get("password_enc")?,
        service_id: r.get("service_id")?,
        is_active: r.get("is_active")?,
        expiry_date: expiry
            .filter(|s| !s.is_empty())
            .map(|s| NaiveDate::parse_from_str(&s, "%Y-%m-%d"))
            .transpose()
            .map_err(|_| bad_row("subscribers", id, "bad expiry_date"))?,
        mac_address: r.get("mac_address")?,
        static_ip: static_ip
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<Ipv4Addr>())
            .transpose()
            .map_err(|_| bad_row("subscribers", id, "bad static_ip"))?,
        updated_at: r.get("updated_at")?,
        password_kind: PasswordKind::parse(&r.get::<_, String>("password_kind")?)
            .ok_or_else(|| bad_row("subscribers", id, "bad password_kind"))?,
        max_sessions: r
            .get::<_, Option<i64>>("max_sessions")?
            .and_then(|n| u32::try_from(n).ok()),
    })
}

const SUBSCRIBER_COLUMNS: &str =
    "id, username, password_enc, service_id, is_active, expiry_date, mac_address, static_ip, updated_at, password_kind, max_sessions";

/// SQLite keeps times as UTC text that sorts as it compares.
fn sql_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn parse_time(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|s| NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S").ok())
        .map(|t| t.and_utc())
}

/// (username, daily_level, monthly_level).
fn user_levels(r: &Row<'_>) -> rusqlite::Result<(String, Levels)> {
    Ok((
        r.get(0)?,
        Levels {
            daily: r.get::<_, i64>(1)? as u8,
            monthly: r.get::<_, i64>(2)? as u8,
        },
    ))
}

fn usage_from_row(r: &Row<'_>) -> rusqlite::Result<UsageRow> {
    Ok(UsageRow {
        username: r.get(0)?,
        daily_bytes: r.get::<_, i64>(1)?.max(0) as u64,
        monthly_bytes: r.get::<_, i64>(2)?.max(0) as u64,
        levels: Levels {
            daily: r.get::<_, i64>(3)? as u8,
            monthly: r.get::<_, i64>(4)? as u8,
        },
    })
}

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        unique_id: r.get("acctuniqueid")?,
        session_id: r.get("acctsessionid")?,
        username: r.get::<_, Option<String>>("username")?.unwrap_or_default(),
        nas_ip: r.get("nasipaddress")?,
        start_time: parse_time(r.get("acctstarttime")?),
        update_time: parse_time(r.get("acctupdatetime")?),
        stop_time: parse_time(r.get("acctstoptime")?),
        session_time: r.get("acctsessiontime")?,
        input_octets: r.get("acctinputoctets")?,
        output_octets: r.get("acctoutputoctets")?,
        terminate_cause: r.get("acctterminatecause")?,
        framed_ip: r.get("framedipaddress")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Admin, SnapshotSource};

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        assert_eq!(s.migrate().unwrap(), 16);
        (dir, s)
    }

    fn subscriber(name: &str) -> SubscriberRecord {
        SubscriberRecord {
            id: 0,
            username: name.into(),
            password_enc: vec![1, 2, 3],
            service_id: None,
            is_active: true,
            expiry_date: NaiveDate::from_ymd_opt(2030, 1, 31),
            mac_address: Some("AA:BB:CC:DD:EE:FF".into()),
            // One address per name: two subscribers never share a static IP.
            static_ip: Some(Ipv4Addr::new(100, 64, name.len() as u8, name.as_bytes()[0])),
            updated_at: 0,
            password_kind: Default::default(),
            max_sessions: None,
        }
    }

    fn changed(s: &mut SqliteStore, since: i64) -> Vec<SubscriberRecord> {
        let mut v = Vec::new();
        s.subscribers_changed_since(since, &mut |r| v.push(r))
            .unwrap();
        v
    }

    #[test]
    fn open_sessions_leave_out_rows_without_a_username_or_a_nas_address() {
        let (_d, mut s) = store();
        s.conn
            .execute_batch(
                "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress)
                 VALUES ('a', 'u1', 'alice', '10.0.0.1'), ('b', 'u2', NULL, '10.0.0.1'),
                        ('c', 'u3', '', '10.0.0.1'), ('d', 'u4', 'bob', 'not an address')",
            )
            .unwrap();
        let rows = s.open_sessions().unwrap();
        let users: Vec<&str> = rows.iter().map(|r| r.username.as_str()).collect();
        assert_eq!(users, ["alice"]);
    }

    #[test]
    fn migrations_are_idempotent() {
        let (_d, mut s) = store();
        assert_eq!(s.migrate().unwrap(), 0);
        assert_eq!(s.schema_version().unwrap(), 16);
    }

    #[test]
    fn every_write_bumps_the_table_version_and_deletions_leave_tombstones() {
        let (_d, mut s) = store();
        let v0 = s.change_versions().unwrap();
        let t0 = s.now_micros().unwrap();
        s.add_subscribers(&[subscriber("a"), subscriber("b")])
            .unwrap();
        let v1 = s.change_versions().unwrap();
        assert!(v1.subscribers > v0.subscribers);
        assert_eq!(v1.nas_devices, v0.nas_devices);
        let got = changed(&mut s, t0);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].expiry_date, subscriber("a").expiry_date);
        std::thread::sleep(Duration::from_millis(2));
        let t1 = s.now_micros().unwrap();
        // A plain SQL update (as a billing panel would do) refreshes updated_at.
        s.conn
            .execute(
                "UPDATE subscribers SET is_active = 0 WHERE username = 'a'",
                [],
            )
            .unwrap();
        let after = changed(&mut s, t1);
        assert_eq!(after.len(), 1);
        assert!(!after[0].is_active);
        assert!(s.remove_subscriber("b").unwrap());
        assert_eq!(
            s.subscribers_deleted_since(t1).unwrap(),
            vec!["b".to_string()]
        );
        assert!(s.change_versions().unwrap().subscribers > v1.subscribers);
    }

    #[test]
    fn duplicates_are_reported_by_name_and_a_failed_batch_inserts_nothing() {
        let (_d, mut s) = store();
        s.add_subscribers(&[subscriber("a")]).unwrap();
        let err = s
            .add_subscribers(&[subscriber("b"), subscriber("a")])
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Duplicate(ref m) if m.contains("\"a\"")),
            "{err}"
        );
        assert_eq!(s.list_subscribers(10).unwrap().len(), 1);
    }
}
