//! The PostgreSQL store: tokio-postgres on a small current-thread runtime
//! owned by the store, so its callers (the loader, the accounting writer,
//! the usage and jobs threads, each radius_logs worker, the admin CLI)
//! stay synchronous and each owns exactly one connection. Changes by any
//! client arrive as NOTIFY on `shardius_changes`.
//!
//! This file: connecting, reconnecting with backoff, query helpers, error
//! classification and row mappers. One file per role: `snapshot.rs`
//! (the loader's reads), `accounting.rs` (the radacct upsert, stale
//! sessions), `usage.rs` (usage, resets, sessions to cut), `cluster.rs` (nodes,
//! leases, fenced job runs),
//! `logs.rs` (radius_logs), `admin.rs` (migrations and the CLI's writes).

mod accounting;
mod admin;
mod cluster;
mod logs;
pub(crate) mod pools;
mod snapshot;
mod usage;

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use futures_util::StreamExt;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Row};

use super::{nas_ip_addresses_of, redact_url as redact, Result, StoreError};
use crate::model::QuotaAction;
use crate::model::{
    Burst, LapseAction, Levels, MaPolicy, NasRecord, NasType, OverLimit, PasswordKind,
    ServiceRecord, SessionRow, SubscriberRecord, UsageRow,
};

/// Versioned migrations shipped in the binary, applied in order.
const MIGRATIONS: &[(u32, &str)] = &[
    (
        1,
        include_str!("../migrations/postgres/0001_subscribers.sql"),
    ),
    (2, include_str!("../migrations/postgres/0002_radacct.sql")),
    (
        3,
        include_str!("../migrations/postgres/0003_radius_logs.sql"),
    ),
    (4, include_str!("../migrations/postgres/0004_fup.sql")),
    (
        5,
        include_str!("../migrations/postgres/0005_nas_addresses.sql"),
    ),
    (6, include_str!("../migrations/postgres/0006_cluster.sql")),
    (7, include_str!("../migrations/postgres/0007_pools.sql")),
    (
        8,
        include_str!("../migrations/postgres/0008_freeradius_indexes.sql"),
    ),
    (
        9,
        include_str!("../migrations/postgres/0009_nas_proxies.sql"),
    ),
    (
        10,
        include_str!("../migrations/postgres/0010_freeradius_import.sql"),
    ),
    (
        11,
        include_str!("../migrations/postgres/0011_nas_types.sql"),
    ),
    (
        12,
        include_str!("../migrations/postgres/0012_session_limits.sql"),
    ),
    (
        13,
        include_str!("../migrations/postgres/0013_walled_garden.sql"),
    ),
    (
        14,
        include_str!("../migrations/postgres/0014_quota_actions.sql"),
    ),
    (
        15,
        include_str!("../migrations/postgres/0015_bandwidth_rules.sql"),
    ),
    (
        16,
        include_str!("../migrations/postgres/0016_radacct_hot_updates.sql"),
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
    /// LISTENing for change notifications: only the snapshot loader's
    /// store does, from its first wait on. Every other connection (the
    /// accounting writer, the usage thread, the log workers, ...) would
    /// otherwise queue a notification per change that nobody reads.
    listening: bool,
}

/// LISTEN on the change channel. A standby (database.read_url) cannot
/// (25006, "cannot execute LISTEN during recovery"): its reader polls
/// instead.
fn listen(runtime: &Runtime, client: &Client) -> Result<()> {
    match runtime.block_on(client.batch_execute(&format!("LISTEN {CHANNEL}"))) {
        Err(e) if e.code() != Some(&SqlState::READ_ONLY_SQL_TRANSACTION) => Err(e.into()),
        _ => Ok(()),
    }
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
        // A dead peer (power loss, a cut network) is noticed in seconds,
        // not after the kernel's two hours: keepalives probe an idle
        // connection, the user timeout ends one with unacknowledged data.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3);
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(10));
        }
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
            listening: false,
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
        // A node cut off mid-transaction would keep its row locks until
        // the server noticed the dead connection (tcp_keepalives_idle:
        // two hours by default), blocking every other node's write of
        // those rows and, for a lease row, the takeover. Our transactions
        // never wait on anything but the database: 5 s idle inside one
        // means the client is gone, and the server ends the session.
        self.runtime
            .block_on(client.batch_execute("SET idle_in_transaction_session_timeout = '5s'"))?;
        if self.listening {
            listen(&self.runtime, &client)?;
        }
        self.client = Some(client);
        self.backoff = Duration::from_millis(250);
        // Whatever changed while we were away is found by the next poll.
        let _ = self.notify_tx.send(());
        Ok(())
    }

    /// The runtime and the live client, reconnecting (with backoff) when
    /// the last connection died. A transaction runs inside one such use
    /// (`client.transaction()`), never across a reconnect.
    fn conn(&mut self) -> Result<(&Runtime, &mut Client)> {
        self.ensure_connected()?;
        let PgStore {
            runtime, client, ..
        } = self;
        Ok((runtime, client.as_mut().expect("connected above")))
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

    /// Forgets the connection; the next use reconnects (after backoff).
    /// LISTENs from now on (this connection and every later one). False
    /// when it already did.
    fn start_listening(&mut self) -> Result<bool> {
        if self.listening {
            return Ok(false);
        }
        let (runtime, client) = self.conn()?;
        let result = listen(runtime, client);
        self.listening = result.is_ok();
        result.map(|()| true)
    }

    fn disconnect(&mut self) {
        self.client = None;
    }

    /// Passes a write's result on, dropping the connection when the error
    /// says this server cannot take writes: it is read-only (a standby,
    /// SQLSTATE 25006) or going away. The reconnect then looks for a
    /// writable host among the URL's hosts.
    fn after_write<T>(
        &mut self,
        result: std::result::Result<T, tokio_postgres::Error>,
    ) -> Result<T> {
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION)
                    || failure(&e) == super::Failure::Unavailable
                {
                    self.disconnect();
                }
                Err(e.into())
            }
        }
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
}

/// Classifies a PostgreSQL error by its SQLSTATE (Appendix A of the
/// PostgreSQL manual): class 22 (data exception, e.g. 22021 "invalid byte
/// sequence") and 23 (integrity constraint violation) are the rows' fault;
/// class 08 (connection exception) and 57P01-57P03 (the server shutting
/// down or starting) mean it is unavailable, as does any error without a
/// SQLSTATE (a closed connection, a socket error, a timeout).
pub(in crate::store) fn failure(e: &tokio_postgres::Error) -> super::Failure {
    use super::Failure;
    match e.code().map(SqlState::code) {
        Some(code) if code.starts_with("22") || code.starts_with("23") => Failure::Data,
        Some(code) if code.starts_with("08") || code.starts_with("57P") => Failure::Unavailable,
        // 25006 read_only_sql_transaction: a standby, or the primary was
        // demoted; the rows are fine, a writable primary will take them.
        Some("25006") => Failure::Unavailable,
        Some(_) => Failure::Refused,
        None => Failure::Unavailable,
    }
}

/// A tokio-postgres error with its cause chain ("error connecting to
/// server: Connection refused"), which its Display leaves out.
pub(in crate::store) fn describe(e: &tokio_postgres::Error) -> String {
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
        is_proxy: r.get("is_proxy"),
        coa_via: r
            .get::<_, Option<String>>("coa_via")
            .filter(|v| !v.is_empty()),
        coa_address: match r
            .get::<_, Option<String>>("coa_address")
            .filter(|v| !v.is_empty())
        {
            None => None,
            Some(a) => Some(
                a.parse()
                    .map_err(|_| invalid("nas_devices", id, "bad coa_address"))?,
            ),
        },
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
        reply_attributes: r.get("reply_attributes"),
        max_sessions: u32_col(r, "max_sessions").unwrap_or(0),
        over_limit: OverLimit::parse(r.get("over_limit")).unwrap_or_default(),
        on_expired: LapseAction::parse(r.get("on_expired")).unwrap_or_default(),
        on_disabled: LapseAction::parse(r.get("on_disabled")).unwrap_or_default(),
        quota_action: QuotaAction::parse(r.get("quota_action")).unwrap_or_default(),
        quota_download_kbps: u32_col(r, "quota_download_kbps").unwrap_or(0),
        quota_upload_kbps: u32_col(r, "quota_upload_kbps").unwrap_or(0),
    }
}

const SUBSCRIBER_SELECT: &str =
    "SELECT s.id, s.username, s.password_enc, s.service_id, s.is_active, s.expiry_date,
        s.mac_address, host(s.static_ip) AS static_ip,
        (extract(epoch FROM s.updated_at) * 1000000)::bigint AS updated_micros,
        s.password_kind, s.max_sessions
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
        password_kind: PasswordKind::parse(&r.get::<_, String>("password_kind"))
            .ok_or_else(|| invalid("subscribers", id, "bad password_kind"))?,
        max_sessions: r
            .get::<_, Option<i32>>("max_sessions")
            .and_then(|n| u32::try_from(n).ok()),
    })
}

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
