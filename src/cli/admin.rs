//! `shardius nas|service|subscriber ...`: the admin commands. Input is
//! validated here, before anything is written, and errors name the field.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, Context};
use chrono::NaiveDate;
use clap::{Subcommand, ValueEnum};

use super::import;
use crate::config::Config;
use crate::keyfile::PasswordKey;
use crate::model::{LapseAction, OverLimit, QuotaAction};
use crate::policy::{mac, rate_limit, speed};
use crate::store::{Burst, MaPolicy, NasRecord, NasType, ServiceRecord, Store, SubscriberRecord};

#[derive(Subcommand, Debug)]
pub enum NasCommand {
    /// Register a NAS: its packets are accepted within one reload interval
    Add {
        /// A human label, e.g. BNG-Beirut-01
        #[arg(long)]
        name: String,
        /// The address the NAS sources RADIUS packets from
        #[arg(long)]
        ip: IpAddr,
        /// Shared secret, 1 to 100 characters
        #[arg(long)]
        secret: String,
        #[arg(long = "type", value_enum, default_value_t = NasKind::Mikrotik)]
        nas_type: NasKind,
        /// CoA/Disconnect port [default: 1700 for mikrotik and cisco, 3799 for the others]
        #[arg(long)]
        coa_port: Option<u16>,
        /// NAS-Identifier (SaaS mode)
        #[arg(long)]
        identifier: Option<String>,
        #[arg(long)]
        short_name: Option<String>,
        /// Require Message-Authenticator on Access-Requests
        #[arg(long, value_enum, default_value_t = MaKind::Auto)]
        require_message_authenticator: MaKind,
        /// Register it disabled (its packets are dropped like an unknown NAS's)
        #[arg(long)]
        disabled: bool,
        /// Another NAS-IP-Address this NAS's accounting may carry (it sources
        /// packets from --ip but names another interface, or sits behind NAT);
        /// repeatable. Accounting naming any other address is recorded under
        /// --ip, counted and logged.
        #[arg(long = "nas-ip-address", value_name = "ADDR")]
        nas_ip_addresses: Vec<IpAddr>,
        /// A trusted RADIUS proxy (e.g. a FreeRADIUS in front of shardius):
        /// each request from it is attributed to the registered NAS its
        /// NAS-IP-Address or NAS-Identifier names (that NAS's type,
        /// Message-Authenticator policy and CoA target apply), else to this
        /// entry
        #[arg(long)]
        proxy: bool,
        /// Send CoA and Disconnect for this NAS's sessions through the proxy
        /// entry of this name (to its --ip and --coa-port, with its secret;
        /// the proxy forwards them) instead of straight to the NAS
        #[arg(long, value_name = "PROXY")]
        coa_via: Option<String>,
        /// Send CoA straight to this address (at --coa-port) instead of --ip
        /// (a NAS behind a proxy whose NAS-IP-Address is not reachable)
        #[arg(long, value_name = "ADDR", conflicts_with = "coa_via")]
        coa_address: Option<IpAddr>,
    },
    /// List NAS devices (secrets are not shown)
    List,
    /// Remove a NAS by name or IP address
    Rm { name_or_ip: String },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NasKind {
    /// Mikrotik-Rate-Limit
    Mikrotik,
    /// Filter-Id (the service's, else its name)
    Generic,
    /// Cisco-AVPair QoS policy names ([speeds] cisco_avpairs)
    Cisco,
    /// ERX policy / QoS profile names ([speeds] juniper_*)
    Juniper,
    /// Huawei-Input/Output-Average-Rate in bit/s
    Huawei,
    /// Filter-Id "down/up" in kbit/s (its shaper's default)
    AccelPpp,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MaKind {
    Auto,
    Yes,
    No,
}

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Add a service (plan). Speeds: 2000, 2000k, 2M, 1.5M, 1G
    Add {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = speed::parse_kbps)]
        download: u32,
        #[arg(long, value_parser = speed::parse_kbps)]
        upload: u32,
        /// Address pool for subscribers without a static IP: a shardius
        /// pool (`shardius pool add`) is allocated here and answered as
        /// Framed-IP-Address / Framed-IPv6-Prefix / Delegated-IPv6-Prefix;
        /// any other name goes to the router as Framed-Pool. Repeat for
        /// dual stack (an IPv4 pool and an IPv6 one).
        #[arg(long)]
        pool: Vec<String>,
        /// Filter-Id sent to generic NASes [default: the service name]
        #[arg(long)]
        filter_id: Option<String>,
        /// Idle-Timeout in seconds
        #[arg(long)]
        idle_timeout: Option<u32>,
        /// MikroTik burst rate, download (needs all burst options)
        #[arg(long, value_parser = speed::parse_kbps, requires_all = ["burst_upload", "burst_threshold_download", "burst_threshold_upload", "burst_time"])]
        burst_download: Option<u32>,
        #[arg(long, value_parser = speed::parse_kbps, requires = "burst_download")]
        burst_upload: Option<u32>,
        #[arg(long, value_parser = speed::parse_kbps, requires = "burst_download")]
        burst_threshold_download: Option<u32>,
        #[arg(long, value_parser = speed::parse_kbps, requires = "burst_download")]
        burst_threshold_upload: Option<u32>,
        /// Burst time in seconds
        #[arg(long, requires = "burst_download")]
        burst_time: Option<u32>,
        /// Open sessions a subscriber may have at once (0 = no limit);
        /// `subscriber set --max-sessions` overrides it per subscriber
        #[arg(long, default_value_t = 0)]
        max_sessions: u32,
        /// A login over the limit: `reject` (Access-Reject "simultaneous
        /// use") or `replace` (accepted; the oldest open session is
        /// disconnected by CoA)
        #[arg(long, value_parser = parse_over_limit, default_value = "reject")]
        over_limit: OverLimit,
        /// A login of an expired subscriber: `reject` (Access-Reject
        /// "expired") or `portal` (accepted into the walled garden of
        /// `[portal]`)
        #[arg(long, value_parser = parse_lapse, default_value = "reject")]
        on_expired: LapseAction,
        /// A login of a disabled subscriber: `reject` or `portal`
        #[arg(long, value_parser = parse_lapse, default_value = "reject")]
        on_disabled: LapseAction,
        #[command(flatten)]
        quota: QuotaArgs,
    },
    /// Change a service: its pools (every subscriber of it, at their next
    /// login), its session limit and what lapsed subscribers get (at once)
    Set {
        name: String,
        /// The service's pools from now on (repeat for several)
        #[arg(long)]
        pool: Vec<String>,
        /// No pool: the router's own addressing
        #[arg(long, conflicts_with = "pool")]
        no_pool: bool,
        /// Open sessions a subscriber may have at once (0 = no limit)
        #[arg(long)]
        max_sessions: Option<u32>,
        /// A login over the limit: `reject` or `replace`
        #[arg(long, value_parser = parse_over_limit)]
        over_limit: Option<OverLimit>,
        /// A login of an expired subscriber: `reject` or `portal` (live
        /// sessions move at the next expiry check)
        #[arg(long, value_parser = parse_lapse)]
        on_expired: Option<LapseAction>,
        /// A login of a disabled subscriber: `reject` or `portal`
        #[arg(long, value_parser = parse_lapse)]
        on_disabled: Option<LapseAction>,
        #[command(flatten)]
        quota: QuotaArgs,
    },
    /// List services
    List,
    /// Remove a service (refused while subscribers use it)
    Rm { name: String },
    /// Set a FUP tier: past THRESHOLD of daily or monthly usage, subscribers
    /// of the service get this speed (by CoA at once, and at every login)
    Tier {
        #[arg(long)]
        service: String,
        #[arg(long, value_parser = ["daily", "monthly"])]
        period: String,
        /// 1..=6; a higher level is a later tier
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=6))]
        level: u8,
        /// Usage that reaches the tier: 5G, 500M, 1.5T (powers of 1000) or 5GiB
        #[arg(long, value_parser = crate::policy::fup::parse_bytes)]
        threshold: u64,
        #[arg(long, value_parser = speed::parse_kbps)]
        download: u32,
        #[arg(long, value_parser = speed::parse_kbps)]
        upload: u32,
        /// Filter-Id for generic NASes [default: the rate limit]
        #[arg(long)]
        filter_id: Option<String>,
    },
    /// Set free hours: inside the window (local time) only (100 - FREE)% of
    /// the traffic counts towards quotas
    FreeHours {
        #[arg(long)]
        service: String,
        /// Start, HH:MM
        #[arg(long, value_parser = crate::policy::fup::parse_minute_of_day, required_unless_present = "off")]
        from: Option<u16>,
        /// End, HH:MM (before the start: the window spans midnight)
        #[arg(long, value_parser = crate::policy::fup::parse_minute_of_day, required_unless_present = "off")]
        to: Option<u16>,
        /// Percent of the traffic that is free, 0..=100
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100), required_unless_present = "off")]
        free: Option<u8>,
        /// Remove the service's free hours
        #[arg(long, conflicts_with_all = ["from", "to", "free"])]
        off: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum RuleCommand {
    /// Add a rule: while its window is open (local time), the services it
    /// names (all without --service) get their speed, or their FUP tier's,
    /// multiplied; live sessions get the new speed by CoA when the window
    /// opens and when it closes
    Add {
        #[arg(long)]
        name: String,
        /// Days the window starts on: mon,tue or mon-fri or sat,sun [default: every day]
        #[arg(long, value_parser = crate::policy::rules::parse_days, default_value = "")]
        days: u8,
        /// Start, HH:MM local time
        #[arg(long, value_parser = crate::policy::fup::parse_minute_of_day)]
        from: u16,
        /// End, HH:MM (before the start: the window crosses midnight; the
        /// same as the start: the whole day)
        #[arg(long, value_parser = crate::policy::fup::parse_minute_of_day)]
        to: u16,
        /// Download speed in percent of what the subscriber has, 1..=1000
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1000))]
        download: u16,
        /// Upload speed in percent, 1..=1000
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1000))]
        upload: u16,
        /// A service the rule applies to (repeat; none: every service)
        #[arg(long)]
        service: Vec<String>,
        /// On overlap the lowest priority wins
        #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
        priority: i32,
    },
    /// List the rules
    List,
    /// Remove a rule
    Rm { name: String },
}

#[derive(Subcommand, Debug)]
pub enum SubscriberCommand {
    /// Add a subscriber
    Add {
        #[arg(long)]
        username: String,
        /// Stored encrypted (AES-256-GCM); at most 128 bytes (the PAP limit)
        #[arg(long, required_unless_present = "nt_hash", conflicts_with = "nt_hash")]
        password: Option<String>,
        /// Instead of --password: the NT hash (32 hex digits, a FreeRADIUS
        /// NT-Password). MS-CHAPv2 and PAP work; CHAP is rejected, as it
        /// needs the password itself
        #[arg(long, value_name = "HEX")]
        nt_hash: Option<String>,
        /// Service name
        #[arg(long)]
        service: String,
        /// Last day that still authenticates, YYYY-MM-DD (server local time)
        #[arg(long, value_parser = parse_date)]
        expiry: Option<NaiveDate>,
        /// Bind to this MAC (Calling-Station-Id), any common notation
        #[arg(long, value_parser = parse_mac)]
        mac: Option<[u8; 6]>,
        /// Framed-IP-Address to assign
        #[arg(long)]
        static_ip: Option<Ipv4Addr>,
        #[arg(long)]
        disabled: bool,
        /// Open sessions this subscriber may have at once, over its
        /// service's limit (0 = no limit) [default: the service's]
        #[arg(long)]
        max_sessions: Option<u32>,
    },
    /// Change a subscriber's own settings
    Set {
        username: String,
        /// Open sessions at once: a number (0 = no limit), or `service`
        /// for its service's limit
        #[arg(long, value_parser = parse_max_sessions)]
        max_sessions: Option<MaxSessions>,
        /// Last day that still authenticates, YYYY-MM-DD, or `none`
        /// (renewing an expired subscriber moves a session in the walled
        /// garden out at the next expiry check)
        #[arg(long, value_parser = parse_expiry)]
        expiry: Option<Expiry>,
    },
    /// List subscribers
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Remove a subscriber
    Rm { username: String },
    /// Suspend a subscriber: logins are rejected, and the server
    /// disconnects open sessions within coa.expiry_check_interval_secs
    Disable { username: String },
    /// Restore a suspended subscriber
    Enable { username: String },
    /// Show a subscriber's counted daily and monthly usage and FUP levels
    Usage { username: String },
    /// Import subscribers from CSV; all lines or none are applied.
    /// Header: `username,password,service[,expiry,mac,static_ip,active]`
    Import { file: std::path::PathBuf },
}

/// A subscriber's own session limit, or its service's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxSessions {
    Own(u32),
    Service,
}

fn parse_max_sessions(s: &str) -> Result<MaxSessions, String> {
    match s.trim() {
        "service" => Ok(MaxSessions::Service),
        n => n
            .parse()
            .map(MaxSessions::Own)
            .map_err(|_| format!("{s:?}: a number of sessions (0 = no limit) or `service`")),
    }
}

/// A service's byte quotas (README "Quota and fair usage").
#[derive(clap::Args, Debug, Default)]
pub struct QuotaArgs {
    /// Daily byte quota: 10G, 500M (powers of 1000) or 10GiB; 0 = none
    #[arg(long, value_parser = parse_quota_bytes)]
    daily_quota: Option<u64>,
    /// Monthly byte quota (from each subscriber's anniversary day); 0 = none
    #[arg(long, value_parser = parse_quota_bytes)]
    monthly_quota: Option<u64>,
    /// What reaching a quota does: `throttle` (the quota speed, by CoA and
    /// at login), `reject` (logins rejected "quota exceeded", live sessions
    /// disconnected) or `portal` (the walled garden); the resets undo it
    #[arg(long, value_parser = parse_quota_action)]
    quota_action: Option<QuotaAction>,
    /// The speed of `throttle`
    #[arg(long, value_parser = speed::parse_kbps)]
    quota_download: Option<u32>,
    #[arg(long, value_parser = speed::parse_kbps)]
    quota_upload: Option<u32>,
}

impl QuotaArgs {
    fn settings(&self) -> crate::model::QuotaSettings {
        crate::model::QuotaSettings {
            daily_bytes: self.daily_quota,
            monthly_bytes: self.monthly_quota,
            action: self.quota_action,
            download_kbps: self.quota_download,
            upload_kbps: self.quota_upload,
        }
    }

    fn is_empty(&self) -> bool {
        self.settings() == crate::model::QuotaSettings::default()
    }
}

/// A quota the server can enforce (`throttle` needs a speed): the
/// server's own check (`policy::fup::Quota::of`).
fn check_quota(service: &ServiceRecord) -> anyhow::Result<()> {
    match crate::policy::fup::Quota::of(&crate::policy::Service::from_record(service)) {
        Ok(_) => Ok(()),
        Err(_) => bail!("a throttle quota needs --quota-download and --quota-upload"),
    }
}

fn parse_quota_bytes(s: &str) -> Result<u64, String> {
    match s.trim() {
        "0" => Ok(0),
        other => crate::policy::fup::parse_bytes(other),
    }
}

fn parse_quota_action(s: &str) -> Result<QuotaAction, String> {
    QuotaAction::parse(s.trim()).ok_or_else(|| format!("{s:?}: `throttle`, `reject` or `portal`"))
}

/// "none", or "daily 10000000000 bytes: throttle 512k/1000k".
fn quota_text(s: &ServiceRecord) -> String {
    let size = |b: Option<i64>| b.filter(|b| *b > 0).map(|b| format!("{b} bytes"));
    let (daily, monthly) = (size(s.daily_quota_bytes), size(s.monthly_quota_bytes));
    if daily.is_none() && monthly.is_none() {
        return "none".into();
    }
    let mut out = Vec::new();
    if let Some(d) = daily {
        out.push(format!("daily {d}"));
    }
    if let Some(m) = monthly {
        out.push(format!("monthly {m}"));
    }
    let action = match s.quota_action {
        QuotaAction::Throttle => format!(
            "throttle {}",
            rate_limit(s.quota_upload_kbps, s.quota_download_kbps, None)
        ),
        other => other.as_str().to_owned(),
    };
    format!("{}: {action}", out.join(", "))
}

/// A new last valid day, or none.
#[derive(Clone, Copy, Debug)]
pub enum Expiry {
    On(NaiveDate),
    Never,
}

fn parse_expiry(s: &str) -> Result<Expiry, String> {
    match s.trim() {
        "none" => Ok(Expiry::Never),
        d => parse_date(d)
            .map(Expiry::On)
            .map_err(|e| format!("{e}, or `none`")),
    }
}

/// The service of that name, as stored (after a change, what it is now).
fn service_named(store: &mut dyn Store, name: &str) -> anyhow::Result<ServiceRecord> {
    store
        .services()?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| anyhow::anyhow!("no service named {:?}", crate::text::printable(name)))
}

fn parse_lapse(s: &str) -> Result<LapseAction, String> {
    LapseAction::parse(s.trim()).ok_or_else(|| format!("{s:?}: `reject` or `portal`"))
}

fn parse_over_limit(s: &str) -> Result<OverLimit, String> {
    OverLimit::parse(s.trim()).ok_or_else(|| format!("{s:?}: `reject` or `replace`"))
}

/// "unlimited", or "1 reject" / "2 replace".
fn session_limit_text(max: u32, over: OverLimit) -> String {
    if max == 0 {
        "unlimited".into()
    } else {
        format!("{max} {}", over.as_str())
    }
}

pub(crate) fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD)"))
}

pub(crate) fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    mac::parse(s.trim().as_bytes())
        .ok_or_else(|| format!("{s:?} is not a MAC address (e.g. AA:BB:CC:DD:EE:FF)"))
}

pub(crate) fn check_username(username: &str) -> Result<(), String> {
    if username.is_empty() || username.len() > 253 {
        return Err(format!("username {username:?}: 1 to 253 bytes"));
    }
    if username.chars().any(char::is_control) {
        return Err(format!(
            "username {username:?}: control characters are not allowed"
        ));
    }
    Ok(())
}

pub(crate) fn check_password(password: &str) -> Result<(), String> {
    if password.is_empty() || password.len() > 128 {
        return Err(format!("password: 1 to 128 bytes (got {})", password.len()));
    }
    Ok(())
}

pub fn nas(store: &mut dyn Store, cmd: NasCommand) -> anyhow::Result<()> {
    match cmd {
        NasCommand::Add {
            name,
            ip,
            secret,
            nas_type,
            coa_port,
            identifier,
            short_name,
            require_message_authenticator,
            disabled,
            nas_ip_addresses,
            proxy,
            coa_via,
            coa_address,
        } => {
            if name.trim().is_empty() {
                bail!("--name: must not be empty");
            }
            if let Some(via) = &coa_via {
                match store.nas_devices()?.iter().find(|n| &n.name == via) {
                    Some(p) if p.is_proxy => {}
                    Some(_) => bail!("--coa-via {via:?}: that NAS entry is not a proxy (add it with --proxy)"),
                    None => bail!("--coa-via {via:?}: no NAS entry of that name (add the proxy first, with --proxy)"),
                }
            }
            let len = secret.chars().count();
            if !(1..=100).contains(&len) {
                bail!("--secret: 1 to 100 characters (got {len})");
            }
            let nas_type = match nas_type {
                NasKind::Mikrotik => NasType::Mikrotik,
                NasKind::Generic => NasType::Generic,
                NasKind::Cisco => NasType::Cisco,
                NasKind::Juniper => NasType::Juniper,
                NasKind::Huawei => NasType::Huawei,
                NasKind::AccelPpp => NasType::AccelPpp,
            };
            let coa_port = coa_port.unwrap_or(nas_type.default_coa_port());
            if coa_port == 0 {
                bail!("--coa-port: 1 to 65535");
            }
            let record = NasRecord {
                id: 0,
                name,
                short_name,
                identifier,
                ip_address: ip,
                secret,
                nas_type,
                coa_port,
                require_message_authenticator: match require_message_authenticator {
                    MaKind::Auto => MaPolicy::Auto,
                    MaKind::Yes => MaPolicy::Yes,
                    MaKind::No => MaPolicy::No,
                },
                is_active: !disabled,
                api_username: None,
                api_password: None,
                nas_ip_addresses,
                is_proxy: proxy,
                coa_via,
                coa_address,
            };
            let id = store.add_nas(&record)?;
            println!("added NAS {} ({}) id {id}", record.name, record.ip_address);
        }
        NasCommand::List => {
            println!(
                "{:<24} {:<39} {:<9} {:>5} {:<4} {:<6} {:<24} NAS-IP-ADDRESSES",
                "NAME", "IP", "TYPE", "COA", "MA", "ACTIVE", "PROXY/COA-VIA"
            );
            for n in store.nas_devices()? {
                println!(
                    "{:<24} {:<39} {:<9} {:>5} {:<4} {:<6} {:<24} {}",
                    crate::text::printable(&n.name),
                    n.ip_address,
                    n.nas_type.as_str(),
                    n.coa_port,
                    n.require_message_authenticator.as_str(),
                    if n.is_active { "yes" } else { "no" },
                    match (n.is_proxy, &n.coa_via, n.coa_address) {
                        (true, _, _) => "proxy".to_owned(),
                        (_, Some(via), _) => format!("via {}", crate::text::printable(via)),
                        (_, _, Some(a)) => format!("coa to {a}"),
                        _ => "-".to_owned(),
                    },
                    crate::store::format_nas_ip_addresses(&n.nas_ip_addresses)
                );
            }
        }
        NasCommand::Rm { name_or_ip } => {
            if !store.remove_nas(&name_or_ip)? {
                bail!("no NAS named or with IP {name_or_ip:?}");
            }
            println!("removed NAS {name_or_ip}");
        }
    }
    Ok(())
}

/// `--pool a --pool b` as stored: `a,b`; none: None.
fn pools_field(pools: &[String]) -> anyhow::Result<Option<String>> {
    for p in pools {
        if p.trim().is_empty() || p.contains(',') || p.chars().any(char::is_control) {
            bail!(
                "--pool {:?}: a pool name, without commas or control characters",
                crate::text::printable(p)
            );
        }
    }
    Ok((!pools.is_empty()).then(|| pools.join(",")))
}

pub fn rule(store: &mut dyn Store, cmd: RuleCommand) -> anyhow::Result<()> {
    use crate::policy::rules::format_days;
    let hhmm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
    match cmd {
        RuleCommand::Add {
            name,
            days,
            from,
            to,
            download,
            upload,
            service,
            priority,
        } => {
            if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                bail!("--name: 1 to 64 characters, no control characters");
            }
            let known: Vec<String> = store.services()?.into_iter().map(|s| s.name).collect();
            for s in &service {
                if s.contains(',') || !known.contains(s) {
                    bail!("no service named {:?}", crate::text::printable(s));
                }
            }
            let record = crate::model::RuleRecord {
                id: 0,
                name,
                days,
                start_minute: from,
                end_minute: to,
                download_percent: download,
                upload_percent: upload,
                services: service.join(","),
                priority,
            };
            store.add_rule(&record)?;
            println!(
                "added rule {}: {} {}-{} download {download}% upload {upload}% for {} (priority {priority})",
                record.name,
                format_days(days),
                hhmm(from),
                hhmm(to),
                if service.is_empty() { "every service".to_owned() } else { service.join(", ") }
            );
        }
        RuleCommand::List => {
            println!(
                "{:<16} {:<28} {:<12} {:>9} {:>7} {:>8}  SERVICES",
                "NAME", "DAYS", "WINDOW", "DOWNLOAD", "UPLOAD", "PRIORITY"
            );
            for r in store.bandwidth_rules()? {
                println!(
                    "{:<16} {:<28} {:<12} {:>8}% {:>6}% {:>8}  {}",
                    crate::text::printable(&r.name),
                    format_days(r.days),
                    format!("{}-{}", hhmm(r.start_minute), hhmm(r.end_minute)),
                    r.download_percent,
                    r.upload_percent,
                    r.priority,
                    if r.services.is_empty() {
                        "all".into()
                    } else {
                        crate::text::printable(&r.services)
                    }
                );
            }
        }
        RuleCommand::Rm { name } => {
            if !store.remove_rule(&name)? {
                bail!("no rule named {:?}", crate::text::printable(&name));
            }
            println!("removed rule {}", crate::text::printable(&name));
        }
    }
    Ok(())
}

pub fn service(store: &mut dyn Store, cmd: ServiceCommand) -> anyhow::Result<()> {
    match cmd {
        ServiceCommand::Set {
            name,
            pool,
            no_pool,
            max_sessions,
            over_limit,
            on_expired,
            on_disabled,
            quota,
        } => {
            let pools = !pool.is_empty() || no_pool;
            let lapse = on_expired.is_some() || on_disabled.is_some();
            if !pools
                && max_sessions.is_none()
                && over_limit.is_none()
                && !lapse
                && quota.is_empty()
            {
                bail!("nothing to set: --pool, --no-pool, --max-sessions, --over-limit, --on-expired, --on-disabled or a --*quota* option");
            }
            // Everything is checked before anything is written.
            let pools_field = if pools {
                Some(pools_field(&pool)?)
            } else {
                None
            };
            if !quota.is_empty() {
                let mut after = service_named(store, &name)?;
                quota.settings().apply(&mut after);
                check_quota(&after)?;
            }
            let unknown =
                || anyhow::anyhow!("no service named {:?}", crate::text::printable(&name));
            if let Some(field) = pools_field {
                if !store.set_service_pools(&name, field.as_deref())? {
                    return Err(unknown());
                }
                println!(
                    "service {} pools: {}",
                    crate::text::printable(&name),
                    field.as_deref().unwrap_or("none")
                );
            }
            if max_sessions.is_some() || over_limit.is_some() {
                if !store.set_service_limit(&name, max_sessions, over_limit)? {
                    return Err(unknown());
                }
                let s = service_named(store, &name)?;
                println!(
                    "service {} sessions: {}",
                    crate::text::printable(&name),
                    session_limit_text(s.max_sessions, s.over_limit)
                );
            }
            if lapse {
                if !store.set_service_lapse(&name, on_expired, on_disabled)? {
                    return Err(unknown());
                }
                let s = service_named(store, &name)?;
                println!(
                    "service {} expired: {}, disabled: {}",
                    crate::text::printable(&name),
                    s.on_expired.as_str(),
                    s.on_disabled.as_str()
                );
            }
            if !quota.is_empty() {
                if !store.set_service_quota(&name, &quota.settings())? {
                    return Err(unknown());
                }
                let s = service_named(store, &name)?;
                println!(
                    "service {} quota: {}",
                    crate::text::printable(&name),
                    quota_text(&s)
                );
            }
        }
        ServiceCommand::Add {
            name,
            download,
            upload,
            pool,
            filter_id,
            idle_timeout,
            burst_download,
            burst_upload,
            burst_threshold_download,
            burst_threshold_upload,
            burst_time,
            max_sessions,
            over_limit,
            on_expired,
            on_disabled,
            quota,
        } => {
            if name.trim().is_empty() {
                bail!("--name: must not be empty");
            }
            let burst = match (
                burst_download,
                burst_upload,
                burst_threshold_download,
                burst_threshold_upload,
                burst_time,
            ) {
                (Some(d), Some(u), Some(td), Some(tu), Some(t)) => Some(Burst {
                    download_kbps: d,
                    upload_kbps: u,
                    threshold_download_kbps: td,
                    threshold_upload_kbps: tu,
                    time_secs: t,
                }),
                _ => None,
            };
            let mut record = ServiceRecord {
                pool_name: pools_field(&pool)?,
                filter_id,
                idle_timeout,
                burst,
                max_sessions,
                over_limit,
                on_expired,
                on_disabled,
                ..ServiceRecord::with_speeds(0, &name, download, upload)
            };
            quota.settings().apply(&mut record);
            check_quota(&record)?;
            store.add_service(&record)?;
            println!(
                "added service {} (Mikrotik-Rate-Limit {})",
                record.name,
                rate_limit(upload, download, burst)
            );
        }
        ServiceCommand::List => {
            println!(
                "{:<20} {:>10} {:>10} {:<16} {:<12} {:<8} {:<8} {:<24} QUOTA",
                "NAME",
                "DOWNLOAD",
                "UPLOAD",
                "POOL",
                "SESSIONS",
                "EXPIRED",
                "DISABLED",
                "RATE-LIMIT"
            );
            for s in store.services()? {
                println!(
                    "{:<20} {:>10} {:>10} {:<16} {:<12} {:<8} {:<8} {:<24} {}",
                    s.name,
                    speed::Kbps(s.download_kbps).to_string(),
                    speed::Kbps(s.upload_kbps).to_string(),
                    s.pool_name.as_deref().unwrap_or("-"),
                    session_limit_text(s.max_sessions, s.over_limit),
                    s.on_expired.as_str(),
                    s.on_disabled.as_str(),
                    rate_limit(s.upload_kbps, s.download_kbps, s.burst),
                    quota_text(&s)
                );
            }
        }
        ServiceCommand::Rm { name } => {
            if !store.remove_service(&name)? {
                bail!("no service named {name:?}");
            }
            println!("removed service {name}");
        }
        ServiceCommand::Tier {
            service,
            period,
            level,
            threshold,
            download,
            upload,
            filter_id,
        } => {
            let Some(id) = store.service_id(&service)? else {
                bail!("--service: no service named {service:?}");
            };
            let period = crate::model::Period::parse(&period).expect("clap checked it");
            store.set_fup_tier(&crate::model::TierRecord {
                service_id: id,
                period,
                level,
                threshold_bytes: threshold,
                download_kbps: download,
                upload_kbps: upload,
                filter_id,
            })?;
            println!(
                "service {service}: {} tier {level} from {threshold} bytes: {}",
                period.as_str(),
                rate_limit(upload, download, None)
            );
        }
        ServiceCommand::FreeHours {
            service,
            from,
            to,
            free,
            off,
        } => {
            let Some(id) = store.service_id(&service)? else {
                bail!("--service: no service named {service:?}");
            };
            let window = match (off, from, to, free) {
                (false, Some(start_minute), Some(end_minute), Some(free_percent)) => {
                    Some(crate::policy::fup::FreeHours {
                        start_minute,
                        end_minute,
                        free_percent,
                    })
                }
                _ => None,
            };
            store.set_free_hours(id, window)?;
            match window {
                Some(w) => println!(
                    "service {service}: {}% free from {:02}:{:02} to {:02}:{:02}",
                    w.free_percent,
                    w.start_minute / 60,
                    w.start_minute % 60,
                    w.end_minute / 60,
                    w.end_minute % 60
                ),
                None => println!("service {service}: no free hours"),
            }
        }
    }
    Ok(())
}

pub fn subscriber(
    store: &mut dyn Store,
    config: &Config,
    cmd: SubscriberCommand,
) -> anyhow::Result<()> {
    match cmd {
        SubscriberCommand::Add {
            username,
            password,
            service,
            expiry,
            mac,
            static_ip,
            disabled,
            nt_hash,
            max_sessions,
        } => {
            check_username(&username)
                .map_err(anyhow::Error::msg)
                .context("--username")?;
            let (kind, secret) = match (password, nt_hash) {
                (Some(password), _) => {
                    check_password(&password)
                        .map_err(anyhow::Error::msg)
                        .context("--password")?;
                    (crate::model::PasswordKind::Cleartext, password.into_bytes())
                }
                (None, Some(hex)) => {
                    let hash = hex::decode(hex.trim().trim_start_matches("0x"))
                        .ok()
                        .filter(|h| h.len() == 16)
                        .with_context(|| format!("--nt-hash {hex:?}: 32 hex digits"))?;
                    (crate::model::PasswordKind::NtHash, hash)
                }
                (None, None) => bail!("--password or --nt-hash"),
            };
            let service_id = store.service_id(&service)?.with_context(|| {
                format!("--service: unknown service {service:?} (see `shardius service list`)")
            })?;
            let key = PasswordKey::load(&config.security.key_file)?;
            let record = SubscriberRecord {
                id: 0,
                username,
                password_enc: key.encrypt(&secret),
                service_id: Some(service_id),
                is_active: !disabled,
                expiry_date: expiry,
                mac_address: mac.as_ref().map(mac::format),
                static_ip,
                updated_at: 0,
                password_kind: kind,
                max_sessions,
            };
            store.add_subscribers(std::slice::from_ref(&record))?;
            println!("added subscriber {}", record.username);
        }
        SubscriberCommand::List { limit } => {
            println!(
                "{:<24} {:<16} {:<6} {:<10} {:<17} STATIC-IP",
                "USERNAME", "SERVICE", "ACTIVE", "EXPIRY", "MAC"
            );
            for (s, service) in store.list_subscribers(limit)? {
                println!(
                    "{:<24} {:<16} {:<6} {:<10} {:<17} {}",
                    s.username,
                    service.as_deref().unwrap_or("-"),
                    if s.is_active { "yes" } else { "no" },
                    s.expiry_date.map_or("-".into(), |d| d.to_string()),
                    s.mac_address.as_deref().unwrap_or("-"),
                    s.static_ip.map_or("-".into(), |ip| ip.to_string())
                );
            }
        }
        SubscriberCommand::Rm { username } => {
            if !store.remove_subscriber(&username)? {
                bail!("no subscriber {username:?}");
            }
            println!("removed subscriber {username}");
        }
        SubscriberCommand::Set {
            username,
            max_sessions,
            expiry,
        } => {
            if max_sessions.is_none() && expiry.is_none() {
                bail!("nothing to set: --max-sessions or --expiry");
            }
            let who = crate::text::printable(&username);
            if let Some(max_sessions) = max_sessions {
                let max = match max_sessions {
                    MaxSessions::Own(n) => Some(n),
                    MaxSessions::Service => None,
                };
                if !store.set_subscriber_max_sessions(&username, max)? {
                    bail!("no subscriber {who:?}");
                }
                match max {
                    Some(0) => println!("subscriber {who} sessions: unlimited"),
                    Some(n) => println!("subscriber {who} sessions: {n}"),
                    None => println!("subscriber {who} sessions: the service's limit"),
                }
            }
            if let Some(expiry) = expiry {
                let last_day = match expiry {
                    Expiry::On(d) => Some(d),
                    Expiry::Never => None,
                };
                if !store.set_subscriber_expiry(&username, last_day)? {
                    bail!("no subscriber {who:?}");
                }
                match last_day {
                    Some(d) => println!("subscriber {who} expiry: {d} (the last valid day)"),
                    None => println!("subscriber {who} expiry: none"),
                }
            }
        }
        SubscriberCommand::Disable { username } => {
            if !store.set_subscriber_active(&username, false)? {
                bail!("no subscriber {username:?}");
            }
            println!("disabled subscriber {username}");
        }
        SubscriberCommand::Enable { username } => {
            if !store.set_subscriber_active(&username, true)? {
                bail!("no subscriber {username:?}");
            }
            println!("enabled subscriber {username}");
        }
        SubscriberCommand::Usage { username } => match store.usage(&username)? {
            Some(u) => {
                let level = |l: u8| match l {
                    crate::policy::fup::QUOTA_LEVEL => "at the quota".to_owned(),
                    l => format!("tier {l}"),
                };
                println!(
                    "{username}: daily {} bytes ({}), monthly {} bytes ({})",
                    u.daily_bytes,
                    level(u.levels.daily),
                    u.monthly_bytes,
                    level(u.levels.monthly)
                )
            }
            None => println!("{username}: no usage counted"),
        },
        SubscriberCommand::Import { file } => {
            let key = PasswordKey::load(&config.security.key_file)?;
            let n = import::import_csv(store, &key, &file)?;
            println!("imported {n} subscribers from {}", file.display());
        }
    }
    Ok(())
}

pub fn sessions(
    store: &mut dyn Store,
    user: Option<&str>,
    all: bool,
    limit: usize,
) -> anyhow::Result<()> {
    println!(
        "{:<20} {:<20} {:<16} {:<20} {:>8} {:>14} {:>14} {:<16} STOP",
        "USERNAME", "SESSION-ID", "NAS", "START (UTC)", "SECONDS", "INPUT", "OUTPUT", "FRAMED-IP"
    );
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
    };
    for s in store.sessions(user, all, limit)? {
        println!(
            "{:<20} {:<20} {:<16} {:<20} {:>8} {:>14} {:>14} {:<16} {}",
            s.username,
            s.session_id,
            s.nas_ip,
            time(s.start_time),
            s.session_time.unwrap_or(0),
            s.input_octets.unwrap_or(0),
            s.output_octets.unwrap_or(0),
            s.framed_ip.as_deref().unwrap_or("-"),
            match (&s.stop_time, &s.terminate_cause) {
                (Some(t), cause) =>
                    format!("{} {}", time(Some(*t)), cause.as_deref().unwrap_or("")),
                (None, _) => "open".into(),
            }
        );
    }
    Ok(())
}
