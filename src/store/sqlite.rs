//! The embedded store: SQLite through rusqlite (bundled), so the first
//! README command works with nothing else installed.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row};

use std::collections::HashMap;

use super::records::*;
use super::{Result, Store, StoreError};
use crate::accounting::{AcctEvent, AcctKind};
use crate::policy::fup::{
    monthly_reset_due, FreeHours, FupPolicy, Levels, Period, ServiceFup, Tier,
};

/// Versioned migrations shipped in the binary, applied in order.
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_subscribers.sql")),
    (2, include_str!("migrations/sqlite/0002_radacct.sql")),
    (3, include_str!("migrations/sqlite/0003_radius_logs.sql")),
    (4, include_str!("migrations/sqlite/0004_fup.sql")),
    (5, include_str!("migrations/sqlite/0005_nas_addresses.sql")),
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
pub(super) fn failure(e: &rusqlite::Error) -> super::Failure {
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
    })
}

const SUBSCRIBER_COLUMNS: &str =
    "id, username, password_enc, service_id, is_active, expiry_date, mac_address, static_ip, updated_at";

impl Store for SqliteStore {
    fn migrate(&mut self) -> Result<u32> {
        let tx = self.conn.transaction()?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")?;
        let current: u32 = tx.query_row(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?;
        let mut applied = 0;
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            tx.execute_batch(sql)?;
            tx.execute(
                &format!(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, {NOW_MICROS})"
                ),
                [version],
            )?;
            applied += 1;
        }
        tx.commit()?;
        Ok(applied)
    }

    fn target_schema_version(&self) -> u32 {
        MIGRATIONS.last().map_or(0, |(v, _)| *v)
    }

    fn schema_version(&mut self) -> Result<u32> {
        let exists: bool = self.conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
            [],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(0);
        }
        Ok(self.conn.query_row(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?)
    }

    fn change_versions(&mut self) -> Result<ChangeVersions> {
        Ok(ChangeVersions {
            nas_devices: self.version("nas_devices")?,
            services: self.version("services")?,
            subscribers: self.version("subscribers")?,
            radreply: self.version("radreply")?,
            system_preferences: self.version("system_preferences")?,
            fup: self.version("fup")?,
        })
    }

    fn now_micros(&mut self) -> Result<i64> {
        Ok(self
            .conn
            .query_row(&format!("SELECT {NOW_MICROS}"), [], |r| r.get(0))?)
    }

    fn nas_devices(&mut self) -> Result<Vec<NasRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM nas_devices ORDER BY name")?;
        let rows = stmt
            .query_map([], nas_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn services(&mut self) -> Result<Vec<ServiceRecord>> {
        let mut stmt = self.conn.prepare("SELECT * FROM services ORDER BY name")?;
        let rows = stmt
            .query_map([], service_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn subscribers_changed_since(
        &mut self,
        since_micros: i64,
        sink: &mut dyn FnMut(SubscriberRecord),
    ) -> Result<usize> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE updated_at >= ?1"
        ))?;
        let mut rows = stmt.query([since_micros])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            sink(subscriber_from_row(row)?);
            n += 1;
        }
        Ok(n)
    }

    fn subscribers_deleted_since(&mut self, since_micros: i64) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT username FROM deleted_subscribers WHERE deleted_at >= ?1")?;
        let rows = stmt
            .query_map([since_micros], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn radreply(&mut self) -> Result<Vec<RadreplyRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT username, attribute, op, value FROM radreply ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RadreplyRecord {
                    username: r.get(0)?,
                    attribute: r.get(1)?,
                    op: r.get(2)?,
                    value: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn preferences(&mut self) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, value FROM system_preferences")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn add_nas(&mut self, n: &NasRecord) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO nas_devices (name, short_name, identifier, ip_address, secret, type, coa_port,
                     require_message_authenticator, is_active, api_username, api_password, nas_ip_addresses)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    n.name,
                    n.short_name,
                    n.identifier,
                    n.ip_address.to_string(),
                    n.secret,
                    n.nas_type.as_str(),
                    n.coa_port,
                    n.require_message_authenticator.as_str(),
                    n.is_active,
                    n.api_username,
                    n.api_password,
                    format_nas_ip_addresses(&n.nas_ip_addresses)
                ],
            )
            .map_err(unique(|| format!("a NAS named {:?} or with IP {}", n.name, n.ip_address)))?;
        Ok(self.conn.last_insert_rowid())
    }

    fn remove_nas(&mut self, name_or_ip: &str) -> Result<bool> {
        let ip = name_or_ip.parse::<IpAddr>().map(|ip| ip.to_string()).ok();
        let n = self.conn.execute(
            "DELETE FROM nas_devices WHERE name = ?1 OR ip_address = ?2",
            params![name_or_ip, ip],
        )?;
        Ok(n > 0)
    }

    fn add_service(&mut self, s: &ServiceRecord) -> Result<i64> {
        let b = s.burst;
        self.conn
            .execute(
                "INSERT INTO services (name, download_kbps, upload_kbps, burst_download_kbps, burst_upload_kbps,
                     burst_threshold_download_kbps, burst_threshold_upload_kbps, burst_time_secs,
                     pool_name, filter_id, idle_timeout, daily_quota_bytes, monthly_quota_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    s.name,
                    s.download_kbps,
                    s.upload_kbps,
                    b.map(|b| b.download_kbps),
                    b.map(|b| b.upload_kbps),
                    b.map(|b| b.threshold_download_kbps),
                    b.map(|b| b.threshold_upload_kbps),
                    b.map(|b| b.time_secs),
                    s.pool_name,
                    s.filter_id,
                    s.idle_timeout,
                    s.daily_quota_bytes,
                    s.monthly_quota_bytes
                ],
            )
            .map_err(unique(|| format!("a service named {:?}", s.name)))?;
        Ok(self.conn.last_insert_rowid())
    }

    fn remove_service(&mut self, name: &str) -> Result<bool> {
        let in_use: i64 = self.conn.query_row(
            "SELECT count(*) FROM subscribers s JOIN services v ON v.id = s.service_id WHERE v.name = ?1",
            [name],
            |r| r.get(0),
        )?;
        if in_use > 0 {
            return Err(StoreError::Invalid(format!(
                "service {name:?} is used by {in_use} subscriber(s); move them to another service first"
            )));
        }
        Ok(self
            .conn
            .execute("DELETE FROM services WHERE name = ?1", [name])?
            > 0)
    }

    fn service_id(&mut self, name: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row("SELECT id FROM services WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn add_subscribers(&mut self, subscribers: &[SubscriberRecord]) -> Result<usize> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO subscribers (username, password_enc, service_id, is_active, expiry_date, mac_address, static_ip)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for s in subscribers {
                stmt.execute(params![
                    s.username,
                    s.password_enc,
                    s.service_id,
                    s.is_active,
                    s.expiry_date.map(|d| d.format("%Y-%m-%d").to_string()),
                    s.mac_address,
                    s.static_ip.map(|ip| ip.to_string()),
                ])
                .map_err(unique(|| format!("subscriber {:?}", s.username)))?;
            }
        }
        tx.commit()?;
        Ok(subscribers.len())
    }

    fn remove_subscriber(&mut self, username: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM subscribers WHERE username = ?1", [username])?
            > 0)
    }

    fn set_subscriber_active(&mut self, username: &str, active: bool) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE subscribers SET is_active = ?2 WHERE username = ?1",
            params![username, active],
        )? > 0)
    }

    fn list_subscribers(
        &mut self,
        limit: usize,
    ) -> Result<Vec<(SubscriberRecord, Option<String>)>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT s.{}, v.name AS service_name FROM subscribers s LEFT JOIN services v ON v.id = s.service_id
             ORDER BY s.username LIMIT ?1",
            SUBSCRIBER_COLUMNS.replace(", ", ", s.")
        ))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok((subscriber_from_row(r)?, r.get("service_name")?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn write_accounting(&mut self, events: &[AcctEvent]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(RADACCT_UPSERT)?;
            for e in events {
                if e.kind == AcctKind::NasReboot {
                    let mut close = tx.prepare_cached(
                        "UPDATE radacct SET acctstoptime = ?2, acctupdatetime = ?2, acctterminatecause = 'NAS-Reboot'
                         WHERE nasipaddress = ?1 AND acctstoptime IS NULL AND acctstarttime <= ?2",
                    )?;
                    for ip in e.reboot_scope() {
                        close.execute(params![ip.to_string(), sql_time(e.event_time)])?;
                    }
                    continue;
                }
                let stop = (e.kind == AcctKind::Stop).then(|| sql_time(e.event_time));
                upsert.execute(params![
                    e.session_id,
                    e.unique_id,
                    e.username,
                    e.nas_ip.to_string(),
                    e.nas_port_id,
                    e.nas_port_type,
                    sql_time(e.start_time),
                    sql_time(e.event_time),
                    stop,
                    e.session_time,
                    e.input_octets.map(|v| v as i64),
                    e.output_octets.map(|v| v as i64),
                    e.called_station_id,
                    e.calling_station_id,
                    e.terminate_cause
                        .as_ref()
                        .filter(|_| e.kind == AcctKind::Stop),
                    e.framed_ip.map(|ip| ip.to_string()),
                    e.class,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn write_logs(&mut self, entries: &[LogEntry]) -> Result<()> {
        let tx = self.logs()?.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO radius_logs (logged_at, nas_ip, username, event, result, reason, shard)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for e in entries {
                stmt.execute(params![
                    sql_time(e.at),
                    e.nas_ip.to_string(),
                    e.username,
                    e.event,
                    e.result,
                    e.reason,
                    e.shard
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn recent_logs(&mut self, limit: usize) -> Result<Vec<LogRow>> {
        let mut stmt = self.logs()?.prepare(
            "SELECT username, event, result, reason FROM radius_logs ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn close_stale_sessions(&mut self, before: DateTime<Utc>) -> Result<u64> {
        Ok(self.conn.execute(
            "UPDATE radacct SET acctstoptime = coalesce(acctupdatetime, acctstarttime), acctterminatecause = 'Stale-Session'
             WHERE acctstoptime IS NULL AND coalesce(acctupdatetime, acctstarttime) < ?1",
            [sql_time(before)],
        )? as u64)
    }

    fn sessions_to_cut(&mut self, today: chrono::NaiveDate) -> Result<Vec<SessionRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT r.* FROM radacct r LEFT JOIN subscribers s ON s.username = r.username
             WHERE r.acctstoptime IS NULL
               AND (s.is_active = 0 OR s.expiry_date < ?1
                    OR (s.id IS NULL AND r.username IN (SELECT username FROM deleted_subscribers)))",
        )?;
        let rows = stmt
            .query_map([today.format("%Y-%m-%d").to_string()], session_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn try_lead(&mut self, _job: &str) -> Result<bool> {
        Ok(true)
    }

    fn fup_policy(&mut self) -> Result<FupPolicy> {
        let mut services: HashMap<i64, ServiceFup> = HashMap::new();
        let mut stmt = self.conn.prepare(
            "SELECT service_id, period, level, threshold_bytes, download_kbps, upload_kbps, filter_id
             FROM service_fup_tiers ORDER BY service_id, period, level",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                Tier::new(
                    r.get::<_, i64>(2)? as u8,
                    r.get::<_, i64>(3)?.max(0) as u64,
                    r.get::<_, i64>(4)? as u32,
                    r.get::<_, i64>(5)? as u32,
                    r.get(6)?,
                ),
            ))
        })?;
        for row in rows {
            let (service, period, tier) = row?;
            let fup = services.entry(service).or_default();
            match Period::parse(&period) {
                Some(Period::Daily) => fup.daily.push(tier),
                Some(Period::Monthly) => fup.monthly.push(tier),
                None => {}
            }
        }
        let mut stmt = self.conn.prepare(
            "SELECT service_id, start_minute, end_minute, free_percent FROM service_free_hours",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                FreeHours {
                    start_minute: r.get::<_, i64>(1)? as u16,
                    end_minute: r.get::<_, i64>(2)? as u16,
                    free_percent: r.get::<_, i64>(3)? as u8,
                },
            ))
        })?;
        for row in rows {
            let (service, free) = row?;
            services.entry(service).or_default().free_hours = Some(free);
        }
        Ok(services
            .into_iter()
            .map(|(id, f)| (id, std::sync::Arc::new(f)))
            .collect())
    }

    fn set_fup_tier(&mut self, service_id: i64, period: Period, tier: &Tier) -> Result<()> {
        self.conn.execute(
            "INSERT INTO service_fup_tiers (service_id, period, level, threshold_bytes, download_kbps, upload_kbps, filter_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (service_id, period, level) DO UPDATE SET threshold_bytes = excluded.threshold_bytes,
                 download_kbps = excluded.download_kbps, upload_kbps = excluded.upload_kbps, filter_id = excluded.filter_id",
            params![
                service_id,
                period.as_str(),
                tier.level,
                tier.threshold_bytes as i64,
                tier.download_kbps,
                tier.upload_kbps,
                tier.filter_id
            ],
        )?;
        Ok(())
    }

    fn set_free_hours(&mut self, service_id: i64, free: Option<FreeHours>) -> Result<()> {
        match free {
            Some(f) => self.conn.execute(
                "INSERT INTO service_free_hours (service_id, start_minute, end_minute, free_percent)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (service_id) DO UPDATE SET start_minute = excluded.start_minute,
                     end_minute = excluded.end_minute, free_percent = excluded.free_percent",
                params![service_id, f.start_minute, f.end_minute, f.free_percent],
            )?,
            None => self.conn.execute(
                "DELETE FROM service_free_hours WHERE service_id = ?1",
                [service_id],
            )?,
        };
        Ok(())
    }

    fn fup_levels(&mut self) -> Result<Vec<(String, Levels)>> {
        let mut stmt = self.conn.prepare(
            "SELECT username, daily_level, monthly_level FROM subscriber_usage
             WHERE daily_level > 0 OR monthly_level > 0",
        )?;
        let rows = stmt
            .query_map([], user_levels)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn add_usage(&mut self, deltas: &[(String, u64)]) -> Result<Vec<UsageRow>> {
        let tx = self.conn.transaction()?;
        let mut out = Vec::with_capacity(deltas.len());
        {
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT INTO subscriber_usage (username, daily_bytes, monthly_bytes, anniversary_day)
                 VALUES (?1, ?2, ?2, coalesce((SELECT CAST(strftime('%d', created_at / 1000000, 'unixepoch', 'localtime') AS INTEGER)
                                               FROM subscribers WHERE username = ?1), 1))
                 ON CONFLICT (username) DO UPDATE SET daily_bytes = daily_bytes + excluded.daily_bytes,
                     monthly_bytes = monthly_bytes + excluded.monthly_bytes, updated_at = {NOW_MICROS}
                 RETURNING username, daily_bytes, monthly_bytes, daily_level, monthly_level"
            ))?;
            for (username, bytes) in deltas {
                out.push(stmt.query_row(params![username, *bytes as i64], usage_from_row)?);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn set_fup_levels(&mut self, username: &str, levels: Levels) -> Result<()> {
        self.conn.execute(
            "INSERT INTO subscriber_usage (username, daily_level, monthly_level) VALUES (?1, ?2, ?3)
             ON CONFLICT (username) DO UPDATE SET daily_level = excluded.daily_level,
                 monthly_level = excluded.monthly_level",
            params![username, levels.daily, levels.monthly],
        )?;
        Ok(())
    }

    fn usage(&mut self, username: &str) -> Result<Option<UsageRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT username, daily_bytes, monthly_bytes, daily_level, monthly_level
                 FROM subscriber_usage WHERE username = ?1",
                [username],
                usage_from_row,
            )
            .optional()?)
    }

    fn reset_usage(
        &mut self,
        period: Period,
        today: NaiveDate,
    ) -> Result<Option<Vec<(String, Levels)>>> {
        let day = today.format("%Y-%m-%d").to_string();
        let tx = self.conn.transaction()?;
        let claimed = tx.execute(
            "INSERT INTO quota_resets (period, done_on) VALUES (?1, ?2)
             ON CONFLICT (period) DO UPDATE SET done_on = excluded.done_on WHERE done_on < excluded.done_on",
            params![period.as_str(), day],
        )?;
        if claimed == 0 {
            return Ok(None);
        }
        let tiered = match period {
            Period::Daily => {
                let tiered: Vec<(String, Levels)> = {
                    let mut stmt = tx.prepare(
                        "SELECT username, daily_level, monthly_level FROM subscriber_usage WHERE daily_level > 0",
                    )?;
                    let rows = stmt
                        .query_map([], user_levels)?
                        .collect::<rusqlite::Result<_>>()?;
                    rows
                };
                tx.execute(
                    "UPDATE subscriber_usage SET daily_bytes = 0 WHERE daily_bytes <> 0",
                    [],
                )?;
                // Only rows whose level changes, so the 'fup' trigger fires for them alone.
                tx.execute(
                    "UPDATE subscriber_usage SET daily_level = 0 WHERE daily_level > 0",
                    [],
                )?;
                tiered
            }
            Period::Monthly => {
                let rows: Vec<(String, Levels, i64, String)> = {
                    let mut stmt = tx.prepare(
                        "SELECT username, daily_level, monthly_level, anniversary_day, monthly_reset_on
                         FROM subscriber_usage",
                    )?;
                    let rows = stmt
                        .query_map([], |r| {
                            let (user, levels) = user_levels(r)?;
                            Ok((user, levels, r.get(3)?, r.get(4)?))
                        })?
                        .collect::<rusqlite::Result<_>>()?;
                    rows
                };
                let mut tiered = Vec::new();
                let mut stmt = tx.prepare(
                    "UPDATE subscriber_usage SET monthly_bytes = 0, monthly_level = 0, monthly_reset_on = ?2
                     WHERE username = ?1",
                )?;
                for (user, levels, anniversary, last) in rows {
                    let last =
                        NaiveDate::parse_from_str(&last, "%Y-%m-%d").unwrap_or(NaiveDate::MIN);
                    if !monthly_reset_due(today, anniversary.clamp(1, 31) as u8, last) {
                        continue;
                    }
                    stmt.execute(params![user, day])?;
                    if levels.monthly > 0 {
                        tiered.push((user, levels));
                    }
                }
                drop(stmt);
                tiered
            }
        };
        tx.commit()?;
        Ok(Some(tiered))
    }

    fn session_counters(&mut self, unique_ids: &[String]) -> Result<Vec<(String, u64, u32)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT acctuniqueid, coalesce(acctinputoctets, 0) + coalesce(acctoutputoctets, 0),
                    coalesce(acctsessiontime, 0)
             FROM radacct WHERE acctuniqueid = ?1",
        )?;
        let mut out = Vec::new();
        for id in unique_ids {
            if let Some(row) = stmt
                .query_row([id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?.max(0) as u64,
                        r.get::<_, i64>(2)?.max(0) as u32,
                    ))
                })
                .optional()?
            {
                out.push(row);
            }
        }
        Ok(out)
    }

    fn open_session_count(&mut self) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM radacct WHERE acctstoptime IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    fn sessions(
        &mut self,
        username: Option<&str>,
        all: bool,
        limit: usize,
    ) -> Result<Vec<SessionRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT * FROM radacct WHERE (?1 IS NULL OR username = ?1) AND (?2 OR acctstoptime IS NULL)
             ORDER BY acctstarttime DESC, radacctid DESC LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![username, all, limit as i64], session_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }
}

/// SQLite keeps times as UTC text that sorts as it compares.
fn sql_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn parse_time(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|s| NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S").ok())
        .map(|t| t.and_utc())
}

/// The upsert (SQLite's max()/min() return NULL on any NULL argument,
/// hence the coalesces).
const RADACCT_UPSERT: &str = "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, nasportid,
        nasporttype, acctstarttime, acctupdatetime, acctstoptime, acctsessiontime, acctinputoctets,
        acctoutputoctets, calledstationid, callingstationid, acctterminatecause, framedipaddress, class)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
    ON CONFLICT (acctuniqueid) DO UPDATE SET
        acctstarttime = min(coalesce(radacct.acctstarttime, excluded.acctstarttime), coalesce(excluded.acctstarttime, radacct.acctstarttime)),
        acctupdatetime = max(coalesce(radacct.acctupdatetime, excluded.acctupdatetime), coalesce(excluded.acctupdatetime, radacct.acctupdatetime)),
        acctstoptime = coalesce(radacct.acctstoptime, excluded.acctstoptime),
        acctsessiontime = max(coalesce(radacct.acctsessiontime, 0), coalesce(excluded.acctsessiontime, 0)),
        acctinputoctets = max(coalesce(radacct.acctinputoctets, 0), coalesce(excluded.acctinputoctets, 0)),
        acctoutputoctets = max(coalesce(radacct.acctoutputoctets, 0), coalesce(excluded.acctoutputoctets, 0)),
        acctterminatecause = CASE WHEN radacct.acctstoptime IS NULL THEN excluded.acctterminatecause ELSE radacct.acctterminatecause END,
        framedipaddress = coalesce(excluded.framedipaddress, radacct.framedipaddress),
        callingstationid = coalesce(radacct.callingstationid, excluded.callingstationid),
        calledstationid = coalesce(radacct.calledstationid, excluded.calledstationid),
        class = coalesce(radacct.class, excluded.class)";

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

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        assert_eq!(s.migrate().unwrap(), 5);
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
            static_ip: Some(Ipv4Addr::new(100, 64, 0, 1)),
            updated_at: 0,
        }
    }

    fn changed(s: &mut SqliteStore, since: i64) -> Vec<SubscriberRecord> {
        let mut v = Vec::new();
        s.subscribers_changed_since(since, &mut |r| v.push(r))
            .unwrap();
        v
    }

    #[test]
    fn migrations_are_idempotent() {
        let (_d, mut s) = store();
        assert_eq!(s.migrate().unwrap(), 0);
        assert_eq!(s.schema_version().unwrap(), 5);
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
