//! The PostgreSQL store: tokio-postgres on a small current-thread runtime
//! owned by the store, so its callers (the loader thread, the admin CLI,
//! later the accounting writer) stay synchronous and each owns exactly one
//! connection. Changes by any client arrive as NOTIFY on `shardius_changes`.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::StreamExt;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Row};

use crate::policy::fup::{
    monthly_reset_due, FreeHours, FupPolicy, Levels, Period, ServiceFup, Tier,
};

use super::records::*;
use super::{redact_url as redact, Result, Store, StoreError};
use crate::accounting::{AcctEvent, AcctKind};

/// Versioned migrations shipped in the binary, applied in order.
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("migrations/postgres/0001_subscribers.sql")),
    (2, include_str!("migrations/postgres/0002_radacct.sql")),
    (3, include_str!("migrations/postgres/0003_radius_logs.sql")),
    (4, include_str!("migrations/postgres/0004_fup.sql")),
    (
        5,
        include_str!("migrations/postgres/0005_nas_addresses.sql"),
    ),
];

const CHANNEL: &str = "shardius_changes";
const NOW_MICROS: &str = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint";
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PgStore {
    runtime: Runtime,
    config: Config,
    /// `None` while disconnected.
    client: Option<Client>,
    notifications: mpsc::UnboundedReceiver<()>,
    notify_tx: mpsc::UnboundedSender<()>,
    /// Earliest next reconnect attempt, and the wait after a failure.
    retry_at: Instant,
    backoff: Duration,
}

impl PgStore {
    /// Parses the URL and connects; both failures are reported at once.
    pub fn connect(url: &str) -> Result<PgStore> {
        let mut config = Config::from_str(url)
            .map_err(|e| StoreError::Config(format!("{}: {e}", redact(url))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("shardius");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("tokio runtime: {e}")))?;
        let (notify_tx, notifications) = mpsc::unbounded_channel();
        let mut store = PgStore {
            runtime,
            config,
            client: None,
            notifications,
            notify_tx,
            retry_at: Instant::now(),
            backoff: Duration::from_millis(250),
        };
        store.reconnect().map_err(|e| match e {
            StoreError::Postgres(e) => StoreError::Unavailable(format!(
                "cannot connect to {}: {}",
                redact(url),
                describe(&e)
            )),
            other => other,
        })?;
        Ok(store)
    }

    fn reconnect(&mut self) -> Result<()> {
        let (client, mut connection) = self.runtime.block_on(self.config.connect(NoTls))?;
        let tx = self.notify_tx.clone();
        // The connection task drives the socket and forwards notifications.
        self.runtime.spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        let _ = tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        self.runtime
            .block_on(client.batch_execute(&format!("LISTEN {CHANNEL}")))?;
        self.client = Some(client);
        self.backoff = Duration::from_millis(250);
        // Whatever changed while we were away is found by the next poll.
        let _ = self.notify_tx.send(());
        Ok(())
    }

    /// The runtime and the live client, reconnecting (with backoff) when
    /// the last connection died.
    fn conn(&mut self) -> Result<(&Runtime, &Client)> {
        self.ensure_connected()?;
        let this = &*self;
        Ok((
            &this.runtime,
            this.client.as_ref().expect("connected above"),
        ))
    }

    fn ensure_connected(&mut self) -> Result<()> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            if Instant::now() < self.retry_at {
                return Err(StoreError::Unavailable(
                    "PostgreSQL connection lost; retrying".into(),
                ));
            }
            if let Err(e) = self.reconnect() {
                self.retry_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                return Err(e);
            }
        }
        Ok(())
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let (runtime, client) = self.conn()?;
        Ok(runtime.block_on(client.query(sql, params))?)
    }

    fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        let (runtime, client) = self.conn()?;
        Ok(runtime.block_on(client.execute(sql, params))?)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        let (runtime, client) = self.conn()?;
        Ok(runtime.block_on(client.batch_execute(sql))?)
    }

    /// Claims today's daily reset and resets in one statement.
    fn reset_daily(&mut self, today: NaiveDate) -> Result<Option<Vec<(String, Levels)>>> {
        let rows = self.query(
            "WITH claim AS (
                 INSERT INTO quota_resets (period, done_on) VALUES ('daily', $1)
                 ON CONFLICT (period) DO UPDATE SET done_on = EXCLUDED.done_on
                     WHERE quota_resets.done_on < EXCLUDED.done_on
                 RETURNING 1
             ), before AS (
                 SELECT username, daily_level, monthly_level FROM subscriber_usage
                 WHERE daily_level > 0 AND EXISTS (SELECT 1 FROM claim)
             ), reset AS (
                 UPDATE subscriber_usage SET daily_bytes = 0, daily_level = 0
                 WHERE (daily_bytes <> 0 OR daily_level <> 0) AND EXISTS (SELECT 1 FROM claim)
                 RETURNING 1
             )
             SELECT EXISTS (SELECT 1 FROM claim), (SELECT count(*) FROM reset),
                    b.username, b.daily_level, b.monthly_level
             FROM (SELECT 1) AS one LEFT JOIN before b ON true",
            &[&today],
        )?;
        if !rows.first().is_some_and(|r| r.get::<_, bool>(0)) {
            return Ok(None);
        }
        Ok(Some(
            rows.iter()
                .filter_map(|r| {
                    let name: Option<String> = r.get(2);
                    Some((
                        name?,
                        Levels {
                            daily: r.get::<_, Option<i16>>(3)? as u8,
                            monthly: r.get::<_, Option<i16>>(4)? as u8,
                        },
                    ))
                })
                .collect(),
        ))
    }

    /// Inside a transaction: claims today's monthly check, then resets
    /// every subscriber with an anniversary since their last reset.
    fn reset_monthly(&mut self, today: NaiveDate) -> Result<Option<Vec<(String, Levels)>>> {
        let claimed = self.execute(
            "INSERT INTO quota_resets (period, done_on) VALUES ('monthly', $1)
             ON CONFLICT (period) DO UPDATE SET done_on = EXCLUDED.done_on
                 WHERE quota_resets.done_on < EXCLUDED.done_on",
            &[&today],
        )?;
        if claimed == 0 {
            return Ok(None);
        }
        let mut due = Vec::new();
        let mut tiered = Vec::new();
        for r in self.query(
            "SELECT username, daily_level, monthly_level, anniversary_day, monthly_reset_on
             FROM subscriber_usage",
            &[],
        )? {
            let day = r.get::<_, i16>(3).clamp(1, 31) as u8;
            if !monthly_reset_due(today, day, r.get(4)) {
                continue;
            }
            let user: String = r.get(0);
            let levels = Levels {
                daily: r.get::<_, i16>(1) as u8,
                monthly: r.get::<_, i16>(2) as u8,
            };
            if levels.monthly > 0 {
                tiered.push((user.clone(), levels));
            }
            due.push(user);
        }
        self.execute(
            "UPDATE subscriber_usage SET monthly_bytes = 0, monthly_level = 0, monthly_reset_on = $2
             WHERE username = ANY($1)",
            &[&due, &today],
        )?;
        Ok(Some(tiered))
    }
}

/// Classifies a PostgreSQL error by its SQLSTATE (Appendix A of the
/// PostgreSQL manual): class 22 (data exception, e.g. 22021 "invalid byte
/// sequence") and 23 (integrity constraint violation) are the rows' fault;
/// class 08 (connection exception) and 57P01-57P03 (the server shutting
/// down or starting) mean it is unavailable, as does any error without a
/// SQLSTATE (a closed connection, a socket error, a timeout).
pub(super) fn failure(e: &tokio_postgres::Error) -> super::Failure {
    use super::Failure;
    match e.code().map(SqlState::code) {
        Some(code) if code.starts_with("22") || code.starts_with("23") => Failure::Data,
        Some(code) if code.starts_with("08") || code.starts_with("57P") => Failure::Unavailable,
        Some(_) => Failure::Refused,
        None => Failure::Unavailable,
    }
}

/// A tokio-postgres error with its cause chain ("error connecting to
/// server: Connection refused"), which its Display leaves out.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn unique(e: tokio_postgres::Error, what: impl FnOnce() -> String) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::Duplicate(what())
    } else {
        StoreError::Postgres(e)
    }
}

fn invalid(table: &str, id: i64, what: &str) -> StoreError {
    StoreError::Invalid(format!("{table} row {id}: {what}"))
}

fn nas_from_row(r: &Row) -> Result<NasRecord> {
    let id: i64 = r.get("id");
    let ip: String = r.get("ip");
    let nas_type: String = r.get("type");
    let ma: String = r.get("require_message_authenticator");
    Ok(NasRecord {
        id,
        name: r.get("name"),
        short_name: r.get("short_name"),
        identifier: r.get("identifier"),
        ip_address: ip
            .parse::<IpAddr>()
            .map_err(|_| invalid("nas_devices", id, "bad ip_address"))?,
        secret: r.get("secret"),
        nas_type: NasType::parse(&nas_type)
            .ok_or_else(|| invalid("nas_devices", id, "bad type"))?,
        coa_port: u16::try_from(r.get::<_, i32>("coa_port"))
            .map_err(|_| invalid("nas_devices", id, "bad coa_port"))?,
        require_message_authenticator: MaPolicy::parse(&ma)
            .ok_or_else(|| invalid("nas_devices", id, "bad require_message_authenticator"))?,
        is_active: r.get("is_active"),
        api_username: r.get("api_username"),
        api_password: r.get("api_password"),
        nas_ip_addresses: nas_ip_addresses_of(id, r.get("nas_ip_addresses")),
    })
}

fn u32_col(r: &Row, col: &str) -> Option<u32> {
    r.get::<_, Option<i32>>(col)
        .and_then(|v| u32::try_from(v).ok())
}

fn service_from_row(r: &Row) -> ServiceRecord {
    let burst = match (
        u32_col(r, "burst_download_kbps"),
        u32_col(r, "burst_upload_kbps"),
    ) {
        (Some(download_kbps), Some(upload_kbps)) => Some(Burst {
            download_kbps,
            upload_kbps,
            threshold_download_kbps: u32_col(r, "burst_threshold_download_kbps").unwrap_or(0),
            threshold_upload_kbps: u32_col(r, "burst_threshold_upload_kbps").unwrap_or(0),
            time_secs: u32_col(r, "burst_time_secs").unwrap_or(0),
        }),
        _ => None,
    };
    ServiceRecord {
        id: r.get("id"),
        name: r.get("name"),
        download_kbps: u32_col(r, "download_kbps").unwrap_or(0),
        upload_kbps: u32_col(r, "upload_kbps").unwrap_or(0),
        burst,
        pool_name: r.get("pool_name"),
        filter_id: r.get("filter_id"),
        idle_timeout: u32_col(r, "idle_timeout"),
        daily_quota_bytes: r.get("daily_quota_bytes"),
        monthly_quota_bytes: r.get("monthly_quota_bytes"),
    }
}

const SUBSCRIBER_SELECT: &str =
    "SELECT s.id, s.username, s.password_enc, s.service_id, s.is_active, s.expiry_date,
        s.mac_address, host(s.static_ip) AS static_ip,
        (extract(epoch FROM s.updated_at) * 1000000)::bigint AS updated_micros
     FROM subscribers s";

fn subscriber_from_row(r: &Row) -> Result<SubscriberRecord> {
    let id: i64 = r.get("id");
    let static_ip: Option<String> = r.get("static_ip");
    Ok(SubscriberRecord {
        id,
        username: r.get("username"),
        password_enc: r.get("password_enc"),
        service_id: r.get("service_id"),
        is_active: r.get("is_active"),
        expiry_date: r.get::<_, Option<NaiveDate>>("expiry_date"),
        mac_address: r.get("mac_address"),
        static_ip: static_ip
            .map(|s| s.parse::<Ipv4Addr>())
            .transpose()
            .map_err(|_| invalid("subscribers", id, "static_ip is not IPv4"))?,
        updated_at: r.get("updated_micros"),
    })
}

impl Store for PgStore {
    fn migrate(&mut self) -> Result<u32> {
        let (runtime, client) = self.conn()?;
        runtime.block_on(client.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        ))?;
        let mut applied = 0;
        for (version, sql) in MIGRATIONS {
            let version = *version as i32;
            // One transaction per migration; the advisory lock keeps two
            // nodes migrating at once from both applying it.
            let fut = async {
                client
                    .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(74657322)")
                    .await?;
                let done = client
                    .query_opt(
                        "SELECT 1 FROM schema_migrations WHERE version = $1",
                        &[&version],
                    )
                    .await?
                    .is_some();
                if done {
                    client.batch_execute("COMMIT").await?;
                    return Ok::<bool, tokio_postgres::Error>(false);
                }
                if let Err(e) = client.batch_execute(sql).await {
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err(e);
                }
                client
                    .execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)",
                        &[&version],
                    )
                    .await?;
                client.batch_execute("COMMIT").await?;
                Ok(true)
            };
            if runtime.block_on(fut)? {
                applied += 1;
            }
        }
        Ok(applied)
    }

    fn target_schema_version(&self) -> u32 {
        MIGRATIONS.last().map_or(0, |(v, _)| *v)
    }

    fn schema_version(&mut self) -> Result<u32> {
        let rows = self.query(
            "SELECT CASE WHEN to_regclass('schema_migrations') IS NULL THEN 0
                    ELSE (SELECT coalesce(max(version), 0) FROM schema_migrations) END AS v",
            &[],
        )?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i32>("v") as u32))
    }

    fn change_versions(&mut self) -> Result<ChangeVersions> {
        let mut v = ChangeVersions::default();
        for row in self.query("SELECT table_name, version FROM change_versions", &[])? {
            let n: i64 = row.get(1);
            match row.get::<_, &str>(0) {
                "nas_devices" => v.nas_devices = n,
                "services" => v.services = n,
                "subscribers" => v.subscribers = n,
                "radreply" => v.radreply = n,
                "system_preferences" => v.system_preferences = n,
                "fup" => v.fup = n,
                _ => {}
            }
        }
        Ok(v)
    }

    fn now_micros(&mut self) -> Result<i64> {
        Ok(self.query(&format!("SELECT {NOW_MICROS}"), &[])?[0].get(0))
    }

    fn nas_devices(&mut self) -> Result<Vec<NasRecord>> {
        self.query(
            "SELECT *, host(ip_address) AS ip FROM nas_devices ORDER BY name",
            &[],
        )?
        .iter()
        .map(nas_from_row)
        .collect()
    }

    fn services(&mut self) -> Result<Vec<ServiceRecord>> {
        Ok(self
            .query("SELECT * FROM services ORDER BY name", &[])?
            .iter()
            .map(service_from_row)
            .collect())
    }

    fn subscribers_changed_since(
        &mut self,
        since_micros: i64,
        sink: &mut dyn FnMut(SubscriberRecord),
    ) -> Result<usize> {
        let (runtime, client) = self.conn()?;
        let sql = format!(
            "{SUBSCRIBER_SELECT} WHERE s.updated_at >= to_timestamp($1::bigint / 1000000.0)"
        );
        let fut = async {
            let stmt = client.prepare(&sql).await?;
            let rows = client.query_raw(&stmt, [since_micros]).await?;
            futures_util::pin_mut!(rows);
            let mut n = 0;
            while let Some(row) = rows.next().await {
                match subscriber_from_row(&row?) {
                    Ok(record) => sink(record),
                    Err(e) => tracing::warn!("subscriber skipped: {e}"),
                }
                n += 1;
            }
            Ok::<usize, StoreError>(n)
        };
        runtime.block_on(fut)
    }

    fn subscribers_deleted_since(&mut self, since_micros: i64) -> Result<Vec<String>> {
        Ok(self
            .query(
                "SELECT username FROM deleted_subscribers WHERE deleted_at >= to_timestamp($1::bigint / 1000000.0)",
                &[&since_micros],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn radreply(&mut self) -> Result<Vec<RadreplyRecord>> {
        Ok(self
            .query(
                "SELECT username, attribute, op, value FROM radreply ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| RadreplyRecord {
                username: r.get(0),
                attribute: r.get(1),
                op: r.get(2),
                value: r.get(3),
            })
            .collect())
    }

    fn preferences(&mut self) -> Result<Vec<(String, String)>> {
        Ok(self
            .query("SELECT key, value FROM system_preferences", &[])?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn add_nas(&mut self, n: &NasRecord) -> Result<i64> {
        let ip = n.ip_address.to_string();
        let coa = i32::from(n.coa_port);
        let rows = self
            .query(
                "INSERT INTO nas_devices (name, short_name, identifier, ip_address, secret, type, coa_port,
                     require_message_authenticator, is_active, api_username, api_password, nas_ip_addresses)
                 VALUES ($1, $2, $3, $4::text::inet, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
                &[
                    &n.name,
                    &n.short_name,
                    &n.identifier,
                    &ip,
                    &n.secret,
                    &n.nas_type.as_str(),
                    &coa,
                    &n.require_message_authenticator.as_str(),
                    &n.is_active,
                    &n.api_username,
                    &n.api_password,
                    &format_nas_ip_addresses(&n.nas_ip_addresses),
                ],
            )
            .map_err(|e| match e {
                StoreError::Postgres(e) => unique(e, || format!("a NAS named {:?} or with IP {}", n.name, n.ip_address)),
                other => other,
            })?;
        Ok(rows[0].get(0))
    }

    fn remove_nas(&mut self, name_or_ip: &str) -> Result<bool> {
        let ip = name_or_ip.parse::<IpAddr>().map(|ip| ip.to_string()).ok();
        Ok(self.execute(
            "DELETE FROM nas_devices WHERE name = $1 OR ip_address = $2::text::inet",
            &[&name_or_ip, &ip],
        )? > 0)
    }

    fn add_service(&mut self, s: &ServiceRecord) -> Result<i64> {
        let b = s.burst;
        let int = |v: Option<u32>| v.map(|v| v as i32);
        let rows = self
            .query(
                "INSERT INTO services (name, download_kbps, upload_kbps, burst_download_kbps, burst_upload_kbps,
                     burst_threshold_download_kbps, burst_threshold_upload_kbps, burst_time_secs,
                     pool_name, filter_id, idle_timeout, daily_quota_bytes, monthly_quota_bytes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
                &[
                    &s.name,
                    &(s.download_kbps as i32),
                    &(s.upload_kbps as i32),
                    &int(b.map(|b| b.download_kbps)),
                    &int(b.map(|b| b.upload_kbps)),
                    &int(b.map(|b| b.threshold_download_kbps)),
                    &int(b.map(|b| b.threshold_upload_kbps)),
                    &int(b.map(|b| b.time_secs)),
                    &s.pool_name,
                    &s.filter_id,
                    &int(s.idle_timeout),
                    &s.daily_quota_bytes,
                    &s.monthly_quota_bytes,
                ],
            )
            .map_err(|e| match e {
                StoreError::Postgres(e) => unique(e, || format!("a service named {:?}", s.name)),
                other => other,
            })?;
        Ok(rows[0].get(0))
    }

    fn remove_service(&mut self, name: &str) -> Result<bool> {
        let in_use: i64 = self.query(
            "SELECT count(*) FROM subscribers s JOIN services v ON v.id = s.service_id WHERE v.name = $1",
            &[&name],
        )?[0]
            .get(0);
        if in_use > 0 {
            return Err(StoreError::Invalid(format!(
                "service {name:?} is used by {in_use} subscriber(s); move them to another service first"
            )));
        }
        Ok(self.execute("DELETE FROM services WHERE name = $1", &[&name])? > 0)
    }

    fn service_id(&mut self, name: &str) -> Result<Option<i64>> {
        Ok(self
            .query("SELECT id FROM services WHERE name = $1", &[&name])?
            .first()
            .map(|r| r.get(0)))
    }

    fn add_subscribers(&mut self, subscribers: &[SubscriberRecord]) -> Result<usize> {
        // One statement over arrays: all rows or none, at bulk-load speed.
        let usernames: Vec<&str> = subscribers.iter().map(|s| s.username.as_str()).collect();
        let passwords: Vec<&[u8]> = subscribers
            .iter()
            .map(|s| s.password_enc.as_slice())
            .collect();
        let services: Vec<Option<i64>> = subscribers.iter().map(|s| s.service_id).collect();
        let active: Vec<bool> = subscribers.iter().map(|s| s.is_active).collect();
        let expiry: Vec<Option<NaiveDate>> = subscribers.iter().map(|s| s.expiry_date).collect();
        let macs: Vec<Option<&str>> = subscribers
            .iter()
            .map(|s| s.mac_address.as_deref())
            .collect();
        let ips: Vec<Option<String>> = subscribers
            .iter()
            .map(|s| s.static_ip.map(|ip| ip.to_string()))
            .collect();
        self.execute(
            "INSERT INTO subscribers (username, password_enc, service_id, is_active, expiry_date, mac_address, static_ip)
             SELECT u, p, s, a, e, m, i::inet
             FROM unnest($1::text[], $2::bytea[], $3::bigint[], $4::bool[], $5::date[], $6::text[], $7::text[])
                  AS t (u, p, s, a, e, m, i)",
            &[&usernames, &passwords, &services, &active, &expiry, &macs, &ips],
        )
        .map_err(|e| match e {
            StoreError::Postgres(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let detail = e.as_db_error().and_then(|d| d.detail()).unwrap_or_default().to_owned();
                // detail: Key (username)=(alice) already exists.
                let name = detail
                    .split_once("=(")
                    .and_then(|(_, rest)| rest.split_once(')'))
                    .map_or(detail.clone(), |(n, _)| n.to_owned());
                StoreError::Duplicate(format!("subscriber {name:?}"))
            }
            other => other,
        })?;
        Ok(subscribers.len())
    }

    fn remove_subscriber(&mut self, username: &str) -> Result<bool> {
        Ok(self.execute("DELETE FROM subscribers WHERE username = $1", &[&username])? > 0)
    }

    fn set_subscriber_active(&mut self, username: &str, active: bool) -> Result<bool> {
        Ok(self.execute(
            "UPDATE subscribers SET is_active = $2 WHERE username = $1",
            &[&username, &active],
        )? > 0)
    }

    fn write_logs(&mut self, entries: &[LogEntry]) -> Result<()> {
        let (runtime, client) = self.conn()?;
        let fut = async {
            let sink = client
                .copy_in("COPY radius_logs (logged_at, nas_ip, username, event, result, reason, shard) FROM STDIN BINARY")
                .await?;
            let types = [
                Type::TIMESTAMPTZ,
                Type::INET,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT4,
            ];
            let writer = BinaryCopyInWriter::new(sink, &types);
            futures_util::pin_mut!(writer);
            for e in entries {
                let shard = i32::from(e.shard);
                writer
                    .as_mut()
                    .write(&[
                        &e.at,
                        &e.nas_ip,
                        &e.username,
                        &e.event,
                        &e.result,
                        &e.reason,
                        &shard,
                    ])
                    .await?;
            }
            writer.finish().await?;
            Ok::<(), tokio_postgres::Error>(())
        };
        Ok(runtime.block_on(fut)?)
    }

    fn recent_logs(&mut self, limit: usize) -> Result<Vec<LogRow>> {
        Ok(self
            .query(
                "SELECT username, event, result, reason FROM radius_logs ORDER BY id DESC LIMIT $1",
                &[&(limit as i64)],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    fn wait_for_change(&mut self, timeout: Duration) -> Result<bool> {
        // A dead connection is noticed (and retried) here too.
        self.ensure_connected()?;
        let notified = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, self.notifications.recv()).await });
        let got = matches!(notified, Ok(Some(())));
        while self.notifications.try_recv().is_ok() {}
        Ok(got)
    }

    fn list_subscribers(
        &mut self,
        limit: usize,
    ) -> Result<Vec<(SubscriberRecord, Option<String>)>> {
        let rows = self.query(
            &format!(
                "{} , v.name AS service_name FROM subscribers s LEFT JOIN services v ON v.id = s.service_id
                 ORDER BY s.username LIMIT $1",
                SUBSCRIBER_SELECT.trim_end_matches("FROM subscribers s").trim_end()
            ),
            &[&(limit as i64)],
        )?;
        rows.iter()
            .map(|r| Ok((subscriber_from_row(r)?, r.get("service_name"))))
            .collect()
    }

    fn write_accounting(&mut self, events: &[AcctEvent]) -> Result<()> {
        let (runtime, client) = self.conn()?;
        let fut = async {
            client.batch_execute("BEGIN").await?;
            let result = async {
                client.batch_execute(STAGING).await?;
                let sink = client
                    .copy_in(&format!("COPY radacct_staging ({STAGING_COLUMNS}) FROM STDIN BINARY"))
                    .await?;
                let types = [
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INET,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                    Type::INT8,
                    Type::INT8,
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INET,
                    Type::TEXT,
                ];
                let writer = BinaryCopyInWriter::new(sink, &types);
                futures_util::pin_mut!(writer);
                let mut reboots = Vec::new();
                for e in events {
                    if e.kind == AcctKind::NasReboot {
                        reboots.push(e);
                        continue;
                    }
                    let stop = (e.kind == AcctKind::Stop).then_some(e.event_time);
                    let cause = e.terminate_cause.as_ref().filter(|_| e.kind == AcctKind::Stop);
                    let framed: Option<IpAddr> = e.framed_ip.map(IpAddr::V4);
                    writer
                        .as_mut()
                        .write(&[
                            &e.session_id,
                            &e.unique_id,
                            &e.username,
                            &e.nas_ip,
                            &e.nas_port_id,
                            &e.nas_port_type,
                            &e.start_time,
                            &e.event_time,
                            &stop,
                            &e.session_time.map(i64::from),
                            &e.input_octets.map(|v| v as i64),
                            &e.output_octets.map(|v| v as i64),
                            &e.called_station_id,
                            &e.calling_station_id,
                            &cause,
                            &framed,
                            &e.class,
                        ])
                        .await?;
                }
                writer.finish().await?;
                client.batch_execute(RADACCT_UPSERT).await?;
                for e in reboots {
                    client
                        .execute(
                            "UPDATE radacct SET AcctStopTime = $2, AcctUpdateTime = $2, AcctTerminateCause = 'NAS-Reboot'
                             WHERE NASIPAddress = ANY($1) AND AcctStopTime IS NULL AND AcctStartTime <= $2",
                            &[&e.reboot_scope(), &e.event_time],
                        )
                        .await?;
                }
                Ok::<(), tokio_postgres::Error>(())
            }
            .await;
            match result {
                Ok(()) => client.batch_execute("COMMIT").await,
                Err(e) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    Err(e)
                }
            }
        };
        Ok(runtime.block_on(fut)?)
    }

    fn close_stale_sessions(&mut self, before: DateTime<Utc>) -> Result<u64> {
        self.execute(
            "UPDATE radacct SET AcctStopTime = COALESCE(AcctUpdateTime, AcctStartTime), AcctTerminateCause = 'Stale-Session'
             WHERE AcctStopTime IS NULL AND COALESCE(AcctUpdateTime, AcctStartTime) < $1",
            &[&before],
        )
    }

    fn sessions_to_cut(&mut self, today: chrono::NaiveDate) -> Result<Vec<SessionRow>> {
        Ok(self
            .query(
                "SELECT r.*, host(r.NASIPAddress) AS nas_ip, host(r.FramedIPAddress) AS framed_ip
                 FROM radacct r LEFT JOIN subscribers s ON s.username = r.UserName
                 WHERE r.AcctStopTime IS NULL
                   AND (NOT s.is_active OR s.expiry_date < $1
                        OR (s.id IS NULL AND r.UserName IN (SELECT username FROM deleted_subscribers)))",
                &[&today],
            )?
            .iter()
            .map(session_from_pg)
            .collect())
    }

    fn try_lead(&mut self, job: &str) -> Result<bool> {
        // A session-level advisory lock keyed by the job name: it belongs
        // to this connection, so if the node dies or its connection drops,
        // another node takes the job over at its next try. Re-taking a lock
        // this session holds succeeds (and only bumps a local count).
        let key = 0x5348_0000_0000_i64 | i64::from(crc32fast::hash(job.as_bytes()));
        let rows = self.query("SELECT pg_try_advisory_lock($1)", &[&key])?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }

    fn fup_policy(&mut self) -> Result<FupPolicy> {
        let mut services: HashMap<i64, ServiceFup> = HashMap::new();
        for r in self.query(
            "SELECT service_id, period, level, threshold_bytes, download_kbps, upload_kbps, filter_id
             FROM service_fup_tiers ORDER BY service_id, period, level",
            &[],
        )? {
            let tier = Tier::new(
                r.get::<_, i16>(2) as u8,
                r.get::<_, i64>(3).max(0) as u64,
                r.get::<_, i32>(4).max(0) as u32,
                r.get::<_, i32>(5).max(0) as u32,
                r.get(6),
            );
            let fup = services.entry(r.get(0)).or_default();
            match Period::parse(r.get(1)) {
                Some(Period::Daily) => fup.daily.push(tier),
                Some(Period::Monthly) => fup.monthly.push(tier),
                None => {}
            }
        }
        for r in self.query(
            "SELECT service_id, start_minute, end_minute, free_percent FROM service_free_hours",
            &[],
        )? {
            services.entry(r.get(0)).or_default().free_hours = Some(FreeHours {
                start_minute: r.get::<_, i16>(1) as u16,
                end_minute: r.get::<_, i16>(2) as u16,
                free_percent: r.get::<_, i16>(3) as u8,
            });
        }
        Ok(services
            .into_iter()
            .map(|(id, f)| (id, std::sync::Arc::new(f)))
            .collect())
    }

    fn set_fup_tier(&mut self, service_id: i64, period: Period, tier: &Tier) -> Result<()> {
        self.execute(
            "INSERT INTO service_fup_tiers (service_id, period, level, threshold_bytes, download_kbps, upload_kbps, filter_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (service_id, period, level) DO UPDATE SET threshold_bytes = EXCLUDED.threshold_bytes,
                 download_kbps = EXCLUDED.download_kbps, upload_kbps = EXCLUDED.upload_kbps, filter_id = EXCLUDED.filter_id",
            &[
                &service_id,
                &period.as_str(),
                &i16::from(tier.level),
                &(tier.threshold_bytes as i64),
                &(tier.download_kbps as i32),
                &(tier.upload_kbps as i32),
                &tier.filter_id,
            ],
        )?;
        Ok(())
    }

    fn set_free_hours(&mut self, service_id: i64, free: Option<FreeHours>) -> Result<()> {
        match free {
            Some(f) => self.execute(
                "INSERT INTO service_free_hours (service_id, start_minute, end_minute, free_percent)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (service_id) DO UPDATE SET start_minute = EXCLUDED.start_minute,
                     end_minute = EXCLUDED.end_minute, free_percent = EXCLUDED.free_percent",
                &[
                    &service_id,
                    &(f.start_minute as i16),
                    &(f.end_minute as i16),
                    &i16::from(f.free_percent),
                ],
            )?,
            None => self.execute(
                "DELETE FROM service_free_hours WHERE service_id = $1",
                &[&service_id],
            )?,
        };
        Ok(())
    }

    fn fup_levels(&mut self) -> Result<Vec<(String, Levels)>> {
        Ok(self
            .query(
                "SELECT username, daily_level, monthly_level FROM subscriber_usage
                 WHERE daily_level > 0 OR monthly_level > 0",
                &[],
            )?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    Levels {
                        daily: r.get::<_, i16>(1) as u8,
                        monthly: r.get::<_, i16>(2) as u8,
                    },
                )
            })
            .collect())
    }

    fn add_usage(&mut self, deltas: &[(String, u64)]) -> Result<Vec<UsageRow>> {
        // One statement over arrays: the whole batch or nothing.
        let names: Vec<&str> = deltas.iter().map(|(u, _)| u.as_str()).collect();
        let bytes: Vec<i64> = deltas.iter().map(|(_, b)| *b as i64).collect();
        Ok(self
            .query(
                "INSERT INTO subscriber_usage AS u (username, daily_bytes, monthly_bytes, anniversary_day)
                 SELECT d.username, d.bytes, d.bytes, coalesce(EXTRACT(DAY FROM s.created_at)::smallint, 1)
                 FROM unnest($1::text[], $2::bigint[]) AS d (username, bytes)
                 LEFT JOIN subscribers s ON s.username = d.username
                 ON CONFLICT (username) DO UPDATE SET daily_bytes = u.daily_bytes + EXCLUDED.daily_bytes,
                     monthly_bytes = u.monthly_bytes + EXCLUDED.monthly_bytes, updated_at = clock_timestamp()
                 RETURNING u.username, u.daily_bytes, u.monthly_bytes, u.daily_level, u.monthly_level",
                &[&names, &bytes],
            )?
            .iter()
            .map(usage_from_pg)
            .collect())
    }

    fn set_fup_levels(&mut self, username: &str, levels: Levels) -> Result<()> {
        self.execute(
            "INSERT INTO subscriber_usage (username, daily_level, monthly_level) VALUES ($1, $2, $3)
             ON CONFLICT (username) DO UPDATE SET daily_level = EXCLUDED.daily_level,
                 monthly_level = EXCLUDED.monthly_level",
            &[
                &username,
                &i16::from(levels.daily),
                &i16::from(levels.monthly),
            ],
        )?;
        Ok(())
    }

    fn usage(&mut self, username: &str) -> Result<Option<UsageRow>> {
        Ok(self
            .query(
                "SELECT username, daily_bytes, monthly_bytes, daily_level, monthly_level
                 FROM subscriber_usage WHERE username = $1",
                &[&username],
            )?
            .first()
            .map(usage_from_pg))
    }

    fn reset_usage(
        &mut self,
        period: Period,
        today: NaiveDate,
    ) -> Result<Option<Vec<(String, Levels)>>> {
        match period {
            Period::Daily => self.reset_daily(today),
            Period::Monthly => {
                // Claim and reset in one transaction, so a crash between the
                // two never loses a reset.
                self.batch("BEGIN")?;
                match self.reset_monthly(today) {
                    Ok(reset) => {
                        self.batch("COMMIT")?;
                        Ok(reset)
                    }
                    Err(e) => {
                        let _ = self.batch("ROLLBACK");
                        Err(e)
                    }
                }
            }
        }
    }

    fn session_counters(&mut self, unique_ids: &[String]) -> Result<Vec<(String, u64, u32)>> {
        Ok(self
            .query(
                "SELECT AcctUniqueId, coalesce(AcctInputOctets, 0) + coalesce(AcctOutputOctets, 0),
                        coalesce(AcctSessionTime, 0)
                 FROM radacct WHERE AcctUniqueId = ANY($1)",
                &[&unique_ids],
            )?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get::<_, i64>(1).max(0) as u64,
                    r.get::<_, i64>(2).max(0) as u32,
                )
            })
            .collect())
    }

    fn open_session_count(&mut self) -> Result<u64> {
        let rows = self.query(
            "SELECT count(*) FROM radacct WHERE AcctStopTime IS NULL",
            &[],
        )?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as u64)
    }

    fn sessions(
        &mut self,
        username: Option<&str>,
        all: bool,
        limit: usize,
    ) -> Result<Vec<SessionRow>> {
        Ok(self
            .query(
                "SELECT *, host(NASIPAddress) AS nas_ip, host(FramedIPAddress) AS framed_ip FROM radacct
                 WHERE ($1::text IS NULL OR UserName = $1) AND ($2 OR AcctStopTime IS NULL)
                 ORDER BY AcctStartTime DESC, RadAcctId DESC LIMIT $3",
                &[&username, &all, &(limit as i64)],
            )?
            .iter()
            .map(session_from_pg)
            .collect())
    }
}

/// Staging table for the binary COPY of one batch; emptied at commit.
const STAGING: &str = "CREATE TEMP TABLE IF NOT EXISTS radacct_staging (
        acctsessionid text, acctuniqueid text, username text, nasipaddress inet, nasportid text,
        nasporttype text, acctstarttime timestamptz, acctupdatetime timestamptz, acctstoptime timestamptz,
        acctsessiontime bigint, acctinputoctets bigint, acctoutputoctets bigint, calledstationid text,
        callingstationid text, acctterminatecause text, framedipaddress inet, class text
    ) ON COMMIT DELETE ROWS";

const STAGING_COLUMNS: &str =
    "acctsessionid, acctuniqueid, username, nasipaddress, nasportid, nasporttype,
    acctstarttime, acctupdatetime, acctstoptime, acctsessiontime, acctinputoctets, acctoutputoctets,
    calledstationid, callingstationid, acctterminatecause, framedipaddress, class";

/// One upsert for the whole staged batch, with the rules of
/// `AcctEvent::absorb`: counters and times never go backwards, the first
/// Stop wins, a late Interim does not reopen a session.
const RADACCT_UPSERT: &str = "INSERT INTO radacct (AcctSessionId, AcctUniqueId, UserName, NASIPAddress, NASPortId,
        NASPortType, AcctStartTime, AcctUpdateTime, AcctStopTime, AcctSessionTime, AcctInputOctets,
        AcctOutputOctets, CalledStationId, CallingStationId, AcctTerminateCause, FramedIPAddress, Class)
    SELECT acctsessionid, acctuniqueid, username, nasipaddress, nasportid, nasporttype,
        acctstarttime, acctupdatetime, acctstoptime, acctsessiontime, acctinputoctets, acctoutputoctets,
        calledstationid, callingstationid, acctterminatecause, framedipaddress, class
    FROM radacct_staging
    ON CONFLICT (AcctUniqueId) DO UPDATE SET
        AcctStartTime = LEAST(radacct.AcctStartTime, EXCLUDED.AcctStartTime),
        AcctUpdateTime = GREATEST(radacct.AcctUpdateTime, EXCLUDED.AcctUpdateTime),
        AcctStopTime = COALESCE(radacct.AcctStopTime, EXCLUDED.AcctStopTime),
        AcctSessionTime = GREATEST(radacct.AcctSessionTime, EXCLUDED.AcctSessionTime),
        AcctInputOctets = GREATEST(radacct.AcctInputOctets, EXCLUDED.AcctInputOctets),
        AcctOutputOctets = GREATEST(radacct.AcctOutputOctets, EXCLUDED.AcctOutputOctets),
        AcctTerminateCause = CASE WHEN radacct.AcctStopTime IS NULL THEN EXCLUDED.AcctTerminateCause
                                  ELSE radacct.AcctTerminateCause END,
        FramedIPAddress = COALESCE(EXCLUDED.FramedIPAddress, radacct.FramedIPAddress),
        CallingStationId = COALESCE(radacct.CallingStationId, EXCLUDED.CallingStationId),
        CalledStationId = COALESCE(radacct.CalledStationId, EXCLUDED.CalledStationId),
        Class = COALESCE(radacct.Class, EXCLUDED.Class)";

fn usage_from_pg(r: &Row) -> UsageRow {
    UsageRow {
        username: r.get(0),
        daily_bytes: r.get::<_, i64>(1).max(0) as u64,
        monthly_bytes: r.get::<_, i64>(2).max(0) as u64,
        levels: Levels {
            daily: r.get::<_, i16>(3) as u8,
            monthly: r.get::<_, i16>(4) as u8,
        },
    }
}

fn session_from_pg(r: &Row) -> SessionRow {
    SessionRow {
        unique_id: r.get("acctuniqueid"),
        session_id: r.get("acctsessionid"),
        username: r.get::<_, Option<String>>("username").unwrap_or_default(),
        nas_ip: r.get("nas_ip"),
        start_time: r.get("acctstarttime"),
        update_time: r.get("acctupdatetime"),
        stop_time: r.get("acctstoptime"),
        session_time: r.get("acctsessiontime"),
        input_octets: r.get("acctinputoctets"),
        output_octets: r.get("acctoutputoctets"),
        terminate_cause: r.get("acctterminatecause"),
        framed_ip: r.get("framed_ip"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_url_is_a_config_error() {
        assert!(matches!(
            PgStore::connect("postgres://x:y@h:notaport/db"),
            Err(StoreError::Config(_))
        ));
    }
}
