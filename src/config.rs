//! Configuration: defaults < TOML file < `SHARDIUS_*` environment < CLI flags.
//!
//! The file is parsed with `deny_unknown_fields`, so a misspelt key is an
//! error naming the key, not a silently ignored setting. `shardius
//! check-config` runs exactly this parsing plus the checks `serve` makes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where `--config` points when not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/shardius/shardius.toml";

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub accounting: AccountingConfig,
    pub database: DatabaseConfig,
    pub security: SecurityConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub coa: CoaConfig,
    pub quota: QuotaConfig,
    pub sessions: SessionsConfig,
    pub cluster: ClusterConfig,
    pub pools: PoolsConfig,
    pub dictionary: DictionaryConfig,
    /// Speed attribute templates of NAS types with named policies
    /// (`policy::vendor_speed`).
    pub speeds: crate::policy::vendor_speed::VendorSpeeds,
    /// The walled garden (`policy::portal`).
    pub portal: crate::policy::portal::PortalConfig,
    /// Shifts the server's local wall clock (`serve --clock-offset-secs`,
    /// for tests of time-of-day behaviour); not a file setting.
    #[serde(skip)]
    pub clock_offset_secs: i64,
}

/// Attribute dictionaries: radreply rows may name any attribute of the
/// built-in dictionaries (RFC, Microsoft, MikroTik, Cisco, Juniper/ERX,
/// Huawei, WISPr) or of a FreeRADIUS dictionary directory.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DictionaryConfig {
    /// A directory of FreeRADIUS-format dictionaries read over the built-in
    /// ones: its file `dictionary` and what that `$INCLUDE`s, e.g.
    /// `/usr/share/freeradius`.
    pub directory: Option<PathBuf>,
}

impl DictionaryConfig {
    /// The built-in dictionaries, plus the directory's when one is set.
    /// Err when the directory's `dictionary` file cannot be read; the
    /// lines it holds that shardius does not understand come back as
    /// warnings (file:line: what).
    pub fn load(
        &self,
    ) -> Result<
        (
            std::sync::Arc<crate::proto::dictionary::Dictionary>,
            Vec<String>,
        ),
        String,
    > {
        let builtin = crate::proto::dictionary::builtin();
        let Some(dir) = &self.directory else {
            return Ok((builtin.clone(), Vec::new()));
        };
        let top = dir.join("dictionary");
        let text = std::fs::read_to_string(&top)
            .map_err(|e| format!("dictionary.directory: cannot read {}: {e}", top.display()))?;
        let mut dict = (**builtin).clone();
        let problems = dict.parse(&top.display().to_string(), &text, &mut |name| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        });
        Ok((std::sync::Arc::new(dict), problems))
    }
}

/// Server-side address pools (README "Address pools").
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PoolsConfig {
    /// Two open sessions reporting one IPv4 address (a router that
    /// allocated by itself, a static IP given twice): "log" counts and logs
    /// it; "disconnect-older" also sends the older session a
    /// Disconnect-Request.
    pub resolve_conflicts: ResolveConflicts,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ResolveConflicts {
    #[default]
    Log,
    DisconnectOlder,
}

impl Default for PoolsConfig {
    fn default() -> Self {
        PoolsConfig {
            resolve_conflicts: ResolveConflicts::Log,
        }
    }
}

/// Several nodes on one database: each registers under its name and
/// heartbeats; singleton jobs run on the holder of a lease.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name in `cluster_nodes` and in leases; empty = the host
    /// name. Unique per node: two nodes of one name share their leases.
    pub node_name: String,
    /// How often the node heartbeats and renews (or tries to take) leases.
    pub heartbeat_ms: u64,
    /// How long a lease lasts without renewal: a dead leader's jobs move
    /// to another node at most lease_ms + heartbeat_ms after its last
    /// renewal. A leader stops acting when its renewal is this old (less a
    /// margin), before any other node can take over.
    pub lease_ms: u64,
    /// A node whose heartbeat is older than this shows as dead.
    pub node_dead_after_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_name: String::new(),
            heartbeat_ms: 1000,
            lease_ms: 3000,
            node_dead_after_ms: 5000,
        }
    }
}

impl ClusterConfig {
    /// The configured name, else the host name, else `shardius`.
    pub fn node_name(&self) -> String {
        let name = self.node_name.trim();
        if !name.is_empty() {
            return name.to_owned();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            // The name goes into logs and `cluster status`: the same rule
            // as for a configured one (validate).
            .filter(|h| !h.is_empty() && h.len() <= 128 && !h.chars().any(char::is_control))
            .unwrap_or_else(|| "shardius".into())
    }
}

/// Simultaneous use (README "Simultaneous use").
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// How often the node reads every open `radacct` row (only while some
    /// subscriber has a session limit): how late it learns of the other
    /// nodes' sessions, and of sessions the database closed by itself.
    pub sync_interval_ms: u64,
    /// How long an accepted login holds its place under the limit while
    /// its Accounting-Start has not been recorded.
    pub reservation_secs: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            sync_interval_ms: 2000,
            reservation_secs: 30,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// Local time ("HH:MM") at which daily usage resets, and monthly usage
    /// on each subscriber's anniversary day.
    pub daily_reset_time: String,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            daily_reset_time: "00:05".into(),
        }
    }
}

impl QuotaConfig {
    /// The reset time; validated by [`Config::validate`].
    pub fn reset_time(&self) -> chrono::NaiveTime {
        chrono::NaiveTime::parse_from_str(self.daily_reset_time.trim(), "%H:%M")
            .unwrap_or(chrono::NaiveTime::MIN)
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CoaConfig {
    /// Transmissions of a CoA/Disconnect request before giving up.
    pub tries: u32,
    /// Wait for an answer after each transmission.
    pub timeout_ms: u64,
    /// How often open sessions of expired or disabled subscribers are
    /// looked for and disconnected.
    pub expiry_check_interval_secs: u64,
}

impl Default for CoaConfig {
    fn default() -> Self {
        CoaConfig {
            tries: 3,
            timeout_ms: 2000,
            expiry_check_interval_secs: 30,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve `/metrics`, `/healthz` and the admin API.
    pub enabled: bool,
    /// TCP address of the HTTP listener; keep it on localhost or a
    /// management network.
    pub listen: SocketAddr,
    /// Bearer token for the admin API (`POST /api/...`); without one the
    /// admin endpoints answer 403 and only `/metrics` and `/healthz` work.
    pub admin_token: Option<SecretString>,
}

/// A secret from the configuration (the admin token): `Debug` never
/// shows it; [`SecretString::expose`] does, for the one place that needs it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: impl Into<String>) -> SecretString {
        SecretString(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(***)")
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9812)),
            admin_token: None,
        }
    }
}

/// How log lines look: one line per event either way.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-12-01T09:00:00Z  INFO message key=value ...`
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Authentication listeners (UDP); one socket per shard on each.
    pub listen_auth: Vec<SocketAddr>,
    /// Accounting listeners (UDP).
    pub listen_acct: Vec<SocketAddr>,
    /// Number of shards (executor threads); 0 = one per available core.
    pub shards: usize,
    /// SO_RCVBUF per socket, in bytes (the kernel caps it at net.core.rmem_max).
    pub recv_buffer_bytes: usize,
    /// How long a reply is kept for retransmissions (RFC 5080 §2.2.2).
    pub duplicate_window_secs: u64,
    /// Upper bound on cached replies per shard (two generations of half
    /// each: a reply stays at least until half the window has passed or
    /// half this many newer replies came, whichever is first, and never
    /// past the window).
    pub duplicate_cache_entries: usize,
    /// Where the background threads (accounting writer, loader, jobs,
    /// radius_logs workers, ...) run: "auto" = the CPUs no shard has, if
    /// any; "shared" = among the shards; or a list like "2-3".
    pub background_cpus: crate::server::cpus::BackgroundCpus,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AccountingConfig {
    /// Bounded queue from the shards to the writer; a full queue drops
    /// (unacknowledged, the NAS retransmits) and counts `acct_backpressure`.
    pub queue_capacity: usize,
    /// A batch commits at this many events ...
    pub batch_max_events: usize,
    /// ... or this long after its first event, whichever comes first.
    pub batch_max_wait_ms: u64,
    /// PostgreSQL: connections writing batches at once, so that the next
    /// batch is written while the previous one commits (acknowledged in
    /// order all the same). 1 = one batch at a time. SQLite: always 1.
    pub writer_connections: usize,
    /// Open sessions without an update for this long are closed (`Stale-Session`).
    pub stale_after_secs: u64,
    /// How often the stale-session job runs (the first run is 10 s after start).
    pub stale_check_interval_secs: u64,
    /// Local spool for accounting while the database is unreachable or
    /// read-only; replayed when it is back, and at the next start.
    pub spool_path: std::path::PathBuf,
    /// When the spool reaches this size, accounting is no longer acknowledged.
    pub spool_max_bytes: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite:PATH` (embedded, the default) or `postgres://...`; shown
    /// only with its password redacted.
    pub url: crate::store::DatabaseUrl,
    /// Optional: where the snapshot loader reads (a nearby streaming
    /// replica); every writer uses `url`.
    pub read_url: Option<crate::store::DatabaseUrl>,
    /// How often the loader polls for changed NAS devices, services and subscribers.
    pub reload_interval_secs: u64,
    /// How often the open-session count (`shardius_open_sessions`) is refreshed.
    pub open_sessions_interval_secs: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Master key for subscriber passwords at rest (`shardius keygen`).
    pub key_file: PathBuf,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `shardius=debug,warn`, ...
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
    /// Write every accept, reject and accounting event to `radius_logs`.
    pub radius_logs: bool,
    /// Bounded queue to the `radius_logs` workers; full = dropped and counted.
    pub queue_capacity: usize,
    /// Workers (database connections) draining the queue.
    pub workers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen_auth: vec![SocketAddr::from(([0, 0, 0, 0], 1812))],
            listen_acct: vec![SocketAddr::from(([0, 0, 0, 0], 1813))],
            shards: 0,
            recv_buffer_bytes: 8 << 20,
            duplicate_window_secs: 30,
            duplicate_cache_entries: 200_000,
            background_cpus: crate::server::cpus::BackgroundCpus::Auto,
        }
    }
}

impl Default for AccountingConfig {
    fn default() -> Self {
        AccountingConfig {
            queue_capacity: 65_536,
            batch_max_events: 1024,
            batch_max_wait_ms: 2,
            writer_connections: 1,
            stale_after_secs: 1800,
            stale_check_interval_secs: 300,
            spool_path: "./shardius-acct.spool".into(),
            spool_max_bytes: 1 << 30,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: crate::store::DatabaseUrl::default(),
            read_url: None,
            reload_interval_secs: 5,
            open_sessions_interval_secs: 30,
        }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            key_file: PathBuf::from("./shardius.key"),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
            radius_logs: true,
            queue_capacity: 4096,
            workers: 8,
        }
    }
}

/// A configuration problem, naming the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}={value:?}: {message}")]
    Env {
        name: String,
        value: String,
        message: String,
    },
    #[error("unknown environment variable {0} (see README: Configuration)")]
    UnknownEnv(String),
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// `[portal]`, checked.
    pub fn portal(&self) -> Result<crate::policy::portal::Portal, ConfigError> {
        crate::policy::portal::Portal::from_config(&self.portal).map_err(|message| {
            ConfigError::Invalid {
                key: "portal",
                message,
            }
        })
    }

    /// Loads the file (if `path` is given it must exist; the default path
    /// may be absent) and applies the environment.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(p) => Config::from_file(p)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                Config::from_file(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message: crate::store::redact_url(&message),
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Applies `SHARDIUS_<SECTION>_<KEY>` variables, e.g.
    /// `SHARDIUS_DATABASE_URL`. `SHARDIUS_KEY_FILE` is accepted as a short
    /// form of `SHARDIUS_SECURITY_KEY_FILE`. Unknown `SHARDIUS_*` names are
    /// errors, so a typo is not silently ignored.
    pub fn apply_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (name, value) in env {
            if !name.starts_with("SHARDIUS_") {
                continue;
            }
            // The value may hold a password (a database URL) or a token:
            // an error quotes it redacted, or not at all.
            let bad = |message: String| ConfigError::Env {
                name: name.clone(),
                value: match name.as_str() {
                    "SHARDIUS_HTTP_ADMIN_TOKEN" => "***".into(),
                    _ => crate::store::redact_url(&value),
                },
                message,
            };
            match name.as_str() {
                "SHARDIUS_SERVER_LISTEN_AUTH" => {
                    self.server.listen_auth = parse_addrs(&value).map_err(bad)?
                }
                "SHARDIUS_SERVER_LISTEN_ACCT" => {
                    self.server.listen_acct = parse_addrs(&value).map_err(bad)?
                }
                "SHARDIUS_SERVER_SHARDS" => self.server.shards = parse_num(&value).map_err(bad)?,
                "SHARDIUS_SERVER_BACKGROUND_CPUS" => {
                    self.server.background_cpus =
                        crate::server::cpus::BackgroundCpus::parse(&value).map_err(bad)?
                }
                "SHARDIUS_SERVER_RECV_BUFFER_BYTES" => {
                    self.server.recv_buffer_bytes = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_SERVER_DUPLICATE_WINDOW_SECS" => {
                    self.server.duplicate_window_secs = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_SERVER_DUPLICATE_CACHE_ENTRIES" => {
                    self.server.duplicate_cache_entries = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_ACCOUNTING_QUEUE_CAPACITY" => {
                    self.accounting.queue_capacity = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_ACCOUNTING_BATCH_MAX_EVENTS" => {
                    self.accounting.batch_max_events = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_ACCOUNTING_BATCH_MAX_WAIT_MS" => {
                    self.accounting.batch_max_wait_ms = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_ACCOUNTING_WRITER_CONNECTIONS" => {
                    self.accounting.writer_connections = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_ACCOUNTING_STALE_AFTER_SECS" => {
                    self.accounting.stale_after_secs = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_ACCOUNTING_STALE_CHECK_INTERVAL_SECS" => {
                    self.accounting.stale_check_interval_secs = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_ACCOUNTING_SPOOL_PATH" => {
                    self.accounting.spool_path = value.clone().into()
                }
                "SHARDIUS_ACCOUNTING_SPOOL_MAX_BYTES" => {
                    self.accounting.spool_max_bytes = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_DATABASE_URL" => {
                    self.database.url =
                        crate::store::DatabaseUrl::parse(&value).map_err(|e| bad(e.to_string()))?
                }
                "SHARDIUS_DATABASE_READ_URL" => {
                    self.database.read_url = Some(
                        crate::store::DatabaseUrl::parse(&value).map_err(|e| bad(e.to_string()))?,
                    )
                }
                "SHARDIUS_CLUSTER_NODE_NAME" => self.cluster.node_name = value.clone(),
                "SHARDIUS_POOLS_RESOLVE_CONFLICTS" => {
                    self.pools.resolve_conflicts = match value.as_str() {
                        "log" => ResolveConflicts::Log,
                        "disconnect-older" => ResolveConflicts::DisconnectOlder,
                        _ => return Err(bad("log or disconnect-older".into())),
                    }
                }
                "SHARDIUS_CLUSTER_HEARTBEAT_MS" => {
                    self.cluster.heartbeat_ms = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_CLUSTER_LEASE_MS" => {
                    self.cluster.lease_ms = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_CLUSTER_NODE_DEAD_AFTER_MS" => {
                    self.cluster.node_dead_after_ms = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_DATABASE_OPEN_SESSIONS_INTERVAL_SECS" => {
                    self.database.open_sessions_interval_secs = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_DATABASE_RELOAD_INTERVAL_SECS" => {
                    self.database.reload_interval_secs = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_SECURITY_KEY_FILE" | "SHARDIUS_KEY_FILE" => {
                    self.security.key_file = PathBuf::from(&value)
                }
                "SHARDIUS_LOG_LEVEL" => self.log.level = value.clone(),
                "SHARDIUS_LOG_FORMAT" => {
                    self.log.format = match value.trim() {
                        "text" => LogFormat::Text,
                        "json" => LogFormat::Json,
                        _ => return Err(bad("expected text or json".into())),
                    }
                }
                "SHARDIUS_HTTP_ENABLED" => {
                    self.http.enabled = value
                        .trim()
                        .parse()
                        .map_err(|_| bad("expected true or false".into()))?
                }
                "SHARDIUS_HTTP_LISTEN" => {
                    self.http.listen = value
                        .trim()
                        .parse()
                        .map_err(|e| bad(format!("not IP:PORT ({e})")))?
                }
                "SHARDIUS_HTTP_ADMIN_TOKEN" => {
                    self.http.admin_token = Some(SecretString::new(value.clone()))
                }
                "SHARDIUS_QUOTA_DAILY_RESET_TIME" => self.quota.daily_reset_time = value.clone(),
                "SHARDIUS_SESSIONS_SYNC_INTERVAL_MS" => {
                    self.sessions.sync_interval_ms = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_SESSIONS_RESERVATION_SECS" => {
                    self.sessions.reservation_secs = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_COA_TRIES" => self.coa.tries = parse_num(&value).map_err(bad)?,
                "SHARDIUS_COA_TIMEOUT_MS" => {
                    self.coa.timeout_ms = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_COA_EXPIRY_CHECK_INTERVAL_SECS" => {
                    self.coa.expiry_check_interval_secs = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_LOG_RADIUS_LOGS" => {
                    self.log.radius_logs = value
                        .trim()
                        .parse()
                        .map_err(|_| bad("expected true or false".into()))?
                }
                "SHARDIUS_LOG_QUEUE_CAPACITY" => {
                    self.log.queue_capacity = parse_num(&value).map_err(bad)?
                }
                "SHARDIUS_LOG_WORKERS" => self.log.workers = parse_num(&value).map_err(bad)?,
                // Read by the CLI itself (clap), not a config key.
                "SHARDIUS_CONFIG" => {}
                _ => return Err(ConfigError::UnknownEnv(name)),
            }
        }
        Ok(())
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.listen_auth.is_empty() {
            return Err(invalid(
                "server.listen_auth",
                "at least one address is needed",
            ));
        }
        if self.server.listen_acct.is_empty() {
            return Err(invalid(
                "server.listen_acct",
                "at least one address is needed",
            ));
        }
        if self.server.shards > 1024 {
            return Err(invalid("server.shards", "at most 1024"));
        }
        if self.server.duplicate_window_secs == 0 || self.server.duplicate_window_secs > 300 {
            return Err(invalid("server.duplicate_window_secs", "must be 1..=300"));
        }
        let a = &self.accounting;
        if a.queue_capacity == 0 {
            return Err(invalid("accounting.queue_capacity", "must be at least 1"));
        }
        if a.batch_max_events == 0 {
            return Err(invalid("accounting.batch_max_events", "must be at least 1"));
        }
        if a.batch_max_wait_ms > 1000 {
            return Err(invalid(
                "accounting.batch_max_wait_ms",
                "at most 1000 (NASes give up within seconds)",
            ));
        }
        if !(1..=16).contains(&a.writer_connections) {
            return Err(invalid("accounting.writer_connections", "must be 1..=16"));
        }
        if a.stale_after_secs < 60 || a.stale_check_interval_secs == 0 {
            return Err(invalid(
                "accounting.stale_after_secs",
                "stale_after_secs must be at least 60 and stale_check_interval_secs at least 1",
            ));
        }
        if self.log.radius_logs
            && (self.log.queue_capacity == 0 || !(1..=64).contains(&self.log.workers))
        {
            return Err(invalid(
                "log.workers",
                "1..=64 workers and a queue_capacity of at least 1",
            ));
        }
        if self.database.open_sessions_interval_secs == 0 {
            return Err(invalid(
                "database.open_sessions_interval_secs",
                "must be at least 1",
            ));
        }
        let c = &self.cluster;
        if c.heartbeat_ms < 100 || c.lease_ms < 2 * c.heartbeat_ms {
            return Err(invalid(
                "cluster.lease_ms",
                "heartbeat_ms must be at least 100 and lease_ms at least twice heartbeat_ms",
            ));
        }
        if c.node_name.len() > 128 || c.node_name.chars().any(|ch| ch.is_control()) {
            return Err(invalid(
                "cluster.node_name",
                "at most 128 characters, no control characters",
            ));
        }
        self.portal()?;
        if !(100..=600_000).contains(&self.sessions.sync_interval_ms) {
            return Err(invalid("sessions.sync_interval_ms", "must be 100..=600000"));
        }
        if !(1..=3600).contains(&self.sessions.reservation_secs) {
            return Err(invalid("sessions.reservation_secs", "must be 1..=3600"));
        }
        if self.database.reload_interval_secs == 0 {
            return Err(invalid(
                "database.reload_interval_secs",
                "must be at least 1",
            ));
        }
        if chrono::NaiveTime::parse_from_str(self.quota.daily_reset_time.trim(), "%H:%M").is_err() {
            return Err(invalid(
                "quota.daily_reset_time",
                "expected HH:MM, e.g. 00:05",
            ));
        }
        if !(1..=10).contains(&self.coa.tries) {
            return Err(invalid("coa.tries", "must be 1..=10"));
        }
        if !(100..=30_000).contains(&self.coa.timeout_ms) {
            return Err(invalid("coa.timeout_ms", "must be 100..=30000"));
        }
        if !(1..=3600).contains(&self.coa.expiry_check_interval_secs) {
            return Err(invalid(
                "coa.expiry_check_interval_secs",
                "must be 1..=3600",
            ));
        }
        if let Some(token) = self.http.admin_token.as_ref().map(SecretString::expose) {
            if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "http.admin_token",
                    "at least 16 characters, no spaces (e.g. `openssl rand -hex 24`)",
                ));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", &e.to_string()))?;
        Ok(())
    }

    /// The shard count after resolving 0 to the available cores.
    pub fn shard_count(&self) -> usize {
        match self.server.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

fn invalid(key: &'static str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.to_owned(),
    }
}

fn parse_addrs(value: &str) -> Result<Vec<SocketAddr>, String> {
    value
        .split(',')
        .map(|a| {
            a.trim()
                .parse()
                .map_err(|e| format!("{a:?} is not IP:PORT ({e})"))
        })
        .collect()
}

fn parse_num<T: std::str::FromStr>(value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e| format!("not a number ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_shows_the_defaults() {
        let example = Config::from_toml(include_str!("../systemd/shardius.toml")).unwrap();
        let mut expected = Config::default();
        expected.security.key_file = "/etc/shardius/shardius.key".into();
        assert_eq!(example, expected);
        example.validate().unwrap();
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn no_config_error_and_no_debug_output_shows_a_password_or_token() {
        let err = Config::from_toml("[database]\nurl = \"postgress://radius:HuntEr2@db/radius\"\n")
            .unwrap_err();
        assert!(!crate::store::redact_url(&err).contains("HuntEr2"), "{err}");
        let path =
            std::env::temp_dir().join(format!("shardius-redact-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[database]\nurl = \"postgress://radius:HuntEr2@db/radius\"\n",
        )
        .unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
        let _ = std::fs::remove_file(&path);
        assert!(
            !err.contains("HuntEr2") && err.contains("database.url"),
            "{err}"
        );
        let mut c = Config::default();
        let err = c
            .apply_env([(
                "SHARDIUS_DATABASE_URL".into(),
                "pg://radius:HuntEr2@db/radius".into(),
            )])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("HuntEr2"), "{err}");
        c.apply_env([
            (
                "SHARDIUS_DATABASE_URL".into(),
                "postgres://radius:HuntEr2@db/radius".into(),
            ),
            (
                "SHARDIUS_HTTP_ADMIN_TOKEN".into(),
                "TokenTokenToken123".into(),
            ),
        ])
        .unwrap();
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("HuntEr2") && !debug.contains("TokenToken"),
            "{debug}"
        );
        assert_eq!(c.http.admin_token.unwrap().expose(), "TokenTokenToken123");
    }

    #[test]
    fn a_misspelt_key_is_an_error_naming_it() {
        let err = Config::from_toml("[server]\nlisten_auht = [\"0.0.0.0:1812\"]\n").unwrap_err();
        assert!(err.contains("listen_auht"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file_and_rejects_unknown_names() {
        let mut c = Config::from_toml("[database]\nurl = \"sqlite:/a.db\"\n").unwrap();
        c.apply_env([("SHARDIUS_DATABASE_URL".into(), "sqlite:/b.db".into())])
            .unwrap();
        assert_eq!(c.database.url.to_string(), "sqlite:/b.db");
        c.apply_env([("SHARDIUS_KEY_FILE".into(), "/k".into())])
            .unwrap();
        assert_eq!(c.security.key_file, PathBuf::from("/k"));
        let err = c
            .apply_env([("SHARDIUS_DATABSE_URL".into(), "x".into())])
            .unwrap_err();
        assert!(err.to_string().contains("SHARDIUS_DATABSE_URL"));
        let err = c
            .apply_env([("SHARDIUS_SERVER_SHARDS".into(), "two".into())])
            .unwrap_err();
        assert!(err.to_string().contains("SHARDIUS_SERVER_SHARDS"));
    }

    #[test]
    fn validation_names_the_bad_key() {
        // A database URL is checked when it is read.
        let err = Config::from_toml("[database]\nurl = \"mysql://x\"\n").unwrap_err();
        assert!(err.contains("database.url"), "{err}");
        let mut c = Config::default();
        c.server.duplicate_window_secs = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("server.duplicate_window_secs"));
    }
}
