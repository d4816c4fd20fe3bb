//! The `shardius` command line: serve, migrate, keygen, check-config and
//! the admin commands. Every error ends in one message naming the bad
//! value and a non-zero exit.

mod accounting;
mod admin;
mod cluster;
mod coa;
mod demo;
mod freeradius;
mod import;
mod pool;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::keyfile::{self, PasswordKey};
use crate::store::{self, DatabaseUrl, Store};

pub use admin::{NasCommand, RuleCommand, ServiceCommand, SubscriberCommand};

#[derive(Parser, Debug)]
#[command(
    name = "shardius",
    version,
    about = "Thread-per-core RADIUS server for ISPs (PPPoE, MikroTik first)",
    after_help = "Configuration: defaults < --config file < SHARDIUS_* environment < flags. See README.md."
)]
pub struct Cli {
    /// TOML config file [default: /etc/shardius/shardius.toml if it exists]
    #[arg(long, global = true, env = "SHARDIUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database: sqlite:PATH (embedded) or postgres://... [default: sqlite:./shardius.db]
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Master key file for subscriber passwords [default: ./shardius.key]
    #[arg(long, global = true)]
    pub key_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the RADIUS server
    Serve(ServeArgs),
    /// Apply database migrations
    Migrate,
    /// Create a new master key file (mode 0600)
    Keygen {
        /// Where to write the key; an existing file is never overwritten
        #[arg(long)]
        out: PathBuf,
    },
    /// Validate the configuration, key file and database, then exit
    CheckConfig,
    /// Manage NAS devices (BNGs)
    #[command(subcommand)]
    Nas(NasCommand),
    /// Manage services (plans)
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Manage subscribers
    #[command(subcommand)]
    Subscriber(SubscriberCommand),
    /// Time-of-day bandwidth rules: speeds multiplied while a window is open
    #[command(subcommand)]
    Rule(RuleCommand),
    /// Accounting maintenance: write set-aside events again
    #[command(subcommand)]
    Accounting(accounting::AccountingCommand),
    /// Nodes on this database and the leader of each singleton job
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Server-side address pools (IPv4, IPv6 delegated and framed prefixes)
    #[command(subcommand)]
    Pool(pool::PoolCommand),
    /// Import from another RADIUS server
    #[command(subcommand)]
    Import(ImportCommand),
    /// List accounting sessions (open ones, newest first)
    Sessions {
        /// Only this subscriber's sessions
        #[arg(long)]
        user: Option<String>,
        /// Include stopped sessions
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Disconnect a subscriber's open sessions (Disconnect-Request to each session's NAS)
    #[command(after_help = "Prints one line per session, e.g.\n  \
        alice session=81a00003 nas=10.0.0.1:1700 disconnect: ACK\n  \
        alice session=81a00004 nas=10.0.0.2:1700 disconnect: NAK Session-Context-Not-Found (503)\n\
        Exit status 0 when every session answered ACK. With http.admin_token set and the server \
        running, the request goes through the server (and is counted in its metrics).")]
    Disconnect {
        /// The subscriber (User-Name as in radacct)
        #[arg(long)]
        user: String,
        /// Only this session (Acct-Session-Id exactly as the NAS sent it)
        #[arg(long)]
        session: Option<String>,
    },
    /// Change the speed of a subscriber's open sessions (CoA-Request)
    #[command(
        after_help = "A MikroTik NAS gets Mikrotik-Rate-Limit = RATE (rx/tx from the router's \
        view: upload/download); a generic NAS gets Filter-Id = --filter-id, else RATE.\n\
        Prints one line per session, e.g.\n  \
        alice session=81a00003 nas=10.0.0.1:1700 coa: ACK\n\
        Exit status 0 when every session answered ACK."
    )]
    Coa {
        /// The subscriber (User-Name as in radacct)
        #[arg(long)]
        user: String,
        /// New rate limit, e.g. 2M/10M
        #[arg(long = "rate-limit", value_name = "RATE")]
        rate_limit: String,
        /// Filter-Id for generic NASes (default: the rate limit)
        #[arg(long = "filter-id")]
        filter_id: Option<String>,
        /// Only this session (Acct-Session-Id exactly as the NAS sent it)
        #[arg(long)]
        session: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// NAS entries, subscribers, groups and reply attributes from FreeRADIUS
    /// (its rlm_sql PostgreSQL database and/or a users file)
    Freeradius(freeradius::ImportFreeradius),
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Create a key, the embedded database, a NAS 127.0.0.1 (secret testing123),
    /// a service and subscribers user1..user1000 / pass1..pass1000 if missing, then serve
    #[arg(long)]
    pub demo: bool,
    /// Authentication listen address (repeatable) [default: 0.0.0.0:1812]
    #[arg(long = "listen-auth", value_name = "ADDR")]
    pub listen_auth: Vec<SocketAddr>,
    /// Accounting listen address (repeatable) [default: 0.0.0.0:1813]
    #[arg(long = "listen-acct", value_name = "ADDR")]
    pub listen_acct: Vec<SocketAddr>,
    /// Shards (executor threads, one per core); 0 = all available cores
    #[arg(long)]
    pub shards: Option<usize>,
    /// HTTP listener for /metrics, /healthz and the admin API [default: 127.0.0.1:9812]
    #[arg(long = "listen-http", value_name = "ADDR")]
    pub listen_http: Option<SocketAddr>,
    /// Serve no HTTP at all (no metrics, health or admin API); overrides --listen-http
    #[arg(long = "no-http")]
    pub no_http: bool,
    /// This node's name in a cluster (cluster.node_name) [default: the host name]
    #[arg(long = "node-name", value_name = "NAME")]
    pub node_name: Option<String>,
    /// For tests: shift the server's local wall clock (expiry days,
    /// bandwidth rules, resets) by this many seconds
    #[arg(long, hide = true, allow_negative_numbers = true, value_name = "SECS")]
    pub clock_offset_secs: Option<i64>,
}

/// Runs the CLI; the returned error is printed by `main`.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(url) = cli.database_url {
        config.database.url = DatabaseUrl::parse(&url).context("--database-url")?;
    }
    if let Some(path) = cli.key_file {
        config.security.key_file = path;
    }
    if let Command::Serve(args) = &cli.command {
        if !args.listen_auth.is_empty() {
            config.server.listen_auth = args.listen_auth.clone();
        }
        if !args.listen_acct.is_empty() {
            config.server.listen_acct = args.listen_acct.clone();
        }
        if let Some(n) = args.shards {
            config.server.shards = n;
        }
        if let Some(addr) = args.listen_http {
            config.http.listen = addr;
        }
        if args.no_http {
            config.http.enabled = false;
        }
        if let Some(name) = &args.node_name {
            config.cluster.node_name = name.clone();
        }
        if let Some(secs) = args.clock_offset_secs {
            config.clock_offset_secs = secs;
        }
    }
    config.validate()?;
    init_logging(&config.log.level, config.log.format);

    match cli.command {
        Command::Serve(args) => serve(config, args.demo),
        Command::Migrate => {
            let mut store = open_store(&config)?;
            let applied = store.migrate()?;
            println!(
                "schema version {} ({applied} migration(s) applied)",
                store.schema_version()?
            );
            Ok(())
        }
        Command::Keygen { out } => {
            keyfile::generate(&out)?;
            println!(
                "wrote {} (mode 0600); point --key-file or security.key_file at it",
                out.display()
            );
            Ok(())
        }
        Command::CheckConfig => check_config(&config),
        Command::Nas(cmd) => admin::nas(&mut *open_migrated(&config)?, cmd),
        Command::Service(cmd) => admin::service(&mut *open_migrated(&config)?, cmd),
        Command::Rule(cmd) => admin::rule(&mut *open_migrated(&config)?, cmd),
        Command::Accounting(cmd) => accounting::run(&mut *open_migrated(&config)?, cmd),
        Command::Cluster(cmd) => cluster::run(&mut *open_migrated(&config)?, &config, cmd),
        Command::Pool(cmd) => pool::run(&mut *open_migrated(&config)?, cmd),
        Command::Import(ImportCommand::Freeradius(args)) => {
            let key = PasswordKey::load(&config.security.key_file)?;
            let (dictionary, _) = config.dictionary.load().map_err(anyhow::Error::msg)?;
            freeradius::run(&mut *open_migrated(&config)?, &key, &dictionary, args)
        }
        Command::Sessions { user, all, limit } => {
            admin::sessions(&mut *open_migrated(&config)?, user.as_deref(), all, limit)
        }
        Command::Subscriber(cmd) => {
            let mut store = open_migrated(&config)?;
            admin::subscriber(&mut *store, &config, cmd)
        }
        Command::Disconnect { user, session } => coa::change_sessions(
            || open_migrated(&config),
            &config,
            &user,
            session.as_deref(),
            crate::coa::Change::Disconnect,
        ),
        Command::Coa {
            user,
            rate_limit,
            filter_id,
            session,
        } => {
            crate::coa::validate_rate_limit(&rate_limit)
                .map_err(|e| anyhow::anyhow!("--rate-limit: {e}"))?;
            coa::change_sessions(
                || open_migrated(&config),
                &config,
                &user,
                session.as_deref(),
                crate::coa::Change::Speed {
                    rate: crate::policy::vendor_speed::Rate::from_rate_limit(&rate_limit)
                        .unwrap_or_default(),
                    rate_limit,
                    filter_id,
                },
            )
        }
    }
}

fn serve(config: Config, demo: bool) -> anyhow::Result<()> {
    if demo {
        demo::prepare(&config)?;
    }
    let key = PasswordKey::load(&config.security.key_file)?;
    let mut store = open_store(&config)?;
    let version = store.schema_version()?;
    if version == 0 {
        let applied = store.migrate()?;
        tracing::info!("empty database: applied {applied} migration(s)");
    } else if version < store.target_schema_version() {
        bail!(
            "database schema is at version {version}, this build needs {}: run `shardius migrate` first",
            store.target_schema_version()
        );
    }
    drop(store);
    if demo {
        demo::print_instructions(&config);
    }
    let url = config.database.url.clone();
    crate::server::serve(config, key, &|| store::open(&url))?;
    Ok(())
}

fn check_config(config: &Config) -> anyhow::Result<()> {
    PasswordKey::load(&config.security.key_file)?;
    let mut store = open_store(config)?;
    let version = store.schema_version()?;
    if version == 0 {
        bail!(
            "database {} has no schema yet: run `shardius migrate`",
            config.database.url
        );
    }
    // Rows that do not encode are data, not configuration: the server
    // leaves them out and logs them, so they are warnings here (the
    // systemd unit runs check-config before every start).
    let (dictionary, problems) = config.dictionary.load().map_err(anyhow::Error::msg)?;
    for p in &problems {
        println!("warning: dictionary {p}: left out");
    }
    let mut snapshot = crate::policy::Snapshot {
        dictionary: Some(dictionary.clone()),
        ..Default::default()
    };
    let mut bad_rows = 0usize;
    snapshot.set_radreply(&store.radreply()?, |w| {
        bad_rows += 1;
        println!("warning: {w}");
    });
    snapshot.set_services_reporting(&store.services()?, &mut |w| {
        bad_rows += 1;
        println!("warning: {w}");
    });
    println!(
        "ok: config valid, key file {} readable, database {} at schema version {version}, {} shard(s), {} dictionary attributes, {bad_rows} reply attribute row(s) left out",
        config.security.key_file.display(),
        config.database.url,
        config.shard_count(),
        dictionary.len()
    );
    Ok(())
}

pub(crate) fn open_store(config: &Config) -> anyhow::Result<Box<dyn Store>> {
    let url = &config.database.url;
    match url {
        // rusqlite's errors do not name the file; PostgreSQL's already name the (redacted) URL.
        DatabaseUrl::Sqlite(path) => {
            store::open(url).with_context(|| format!("opening {}", path.display()))
        }
        DatabaseUrl::Postgres(_) => Ok(store::open(url)?),
    }
}

/// Opens the store, creating the schema on first use (admin commands on a
/// fresh database just work).
fn open_migrated(config: &Config) -> anyhow::Result<Box<dyn Store>> {
    let mut store = open_store(config)?;
    store.migrate()?;
    Ok(store)
}

/// One line per event on stderr (journald under systemd), level from
/// `log.level` / `SHARDIUS_LOG_LEVEL`, as text or JSON (`log.format`).
///
/// Secrets and passwords never reach a log call: the engine's events carry
/// usernames, addresses and reasons only; tokio-postgres, which logs every
/// statement's parameters (a NAS secret in `nas add`) at debug, is held at
/// info whatever the filter says. In the text format every field and
/// message is passed through [`crate::text::printable`], so a User-Name
/// with a newline or an escape sequence can neither forge a log line nor
/// drive the terminal; JSON escapes them itself.
fn init_logging(level: &str, format: crate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(level))
        .unwrap_or_else(|_| log_filter("info").into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        crate::config::LogFormat::Text => {
            use tracing_subscriber::field::MakeExt;
            let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
                let rendered = format!("{value:?}");
                let rendered = crate::text::printable(&rendered);
                match field.name() {
                    "message" => write!(w, "{rendered}"),
                    name => write!(w, "{name}={rendered}"),
                }
            })
            .delimited(" ");
            builder
                .fmt_fields(fields)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .try_init()
        }
        crate::config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// The operator's filter with every directive for tokio-postgres replaced
/// by `tokio_postgres=info` (at debug it logs statement parameters).
fn log_filter(level: &str) -> String {
    let mut directives: Vec<&str> = level
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.starts_with("tokio_postgres"))
        .collect();
    directives.push("tokio_postgres=info");
    directives.join(",")
}
