//! Rows as the store hands them over: validated Rust types, one per table.

use std::net::{IpAddr, Ipv4Addr};

use chrono::NaiveDate;

/// How a NAS is spoken to: MikroTik gets Mikrotik-Rate-Limit, generic
/// (Cisco, Juniper, Huawei) gets Filter-Id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NasType {
    Mikrotik,
    Generic,
    /// Cisco ISG / IOS-XE BNG: Cisco-AVPair QoS policy names.
    Cisco,
    /// Juniper MX (ERX attributes): ingress/egress policy or QoS profile names.
    Juniper,
    /// Huawei ME60/NE40E: Huawei-Input/Output-Average-Rate in bit/s.
    Huawei,
    /// accel-ppp: its shaper's Filter-Id "down/up" in kbit/s.
    AccelPpp,
}

impl NasType {
    pub const ALL: [NasType; 6] = [
        NasType::Mikrotik,
        NasType::Generic,
        NasType::Cisco,
        NasType::Juniper,
        NasType::Huawei,
        NasType::AccelPpp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NasType::Mikrotik => "mikrotik",
            NasType::Generic => "generic",
            NasType::Cisco => "cisco",
            NasType::Juniper => "juniper",
            NasType::Huawei => "huawei",
            NasType::AccelPpp => "accel-ppp",
        }
    }

    pub fn parse(s: &str) -> Option<NasType> {
        NasType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// MikroTik and Cisco (`aaa server radius dynamic-author`) listen for
    /// CoA on 1700; RFC 5176 says 3799, which the others use.
    pub fn default_coa_port(self) -> u16 {
        match self {
            NasType::Mikrotik | NasType::Cisco => 1700,
            _ => 3799,
        }
    }
}

/// Per-NAS Message-Authenticator requirement on Access-Requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaPolicy {
    /// Required from the first request that carries one (BlastRADIUS).
    Auto,
    Yes,
    No,
}

impl MaPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            MaPolicy::Auto => "auto",
            MaPolicy::Yes => "yes",
            MaPolicy::No => "no",
        }
    }

    pub fn parse(s: &str) -> Option<MaPolicy> {
        match s {
            "auto" => Some(MaPolicy::Auto),
            "yes" => Some(MaPolicy::Yes),
            "no" => Some(MaPolicy::No),
            _ => None,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct NasRecord {
    pub id: i64,
    pub name: String,
    pub short_name: Option<String>,
    /// NAS-Identifier, for SaaS mode.
    pub identifier: Option<String>,
    pub ip_address: IpAddr,
    pub secret: String,
    pub nas_type: NasType,
    pub coa_port: u16,
    pub require_message_authenticator: MaPolicy,
    pub is_active: bool,
    pub api_username: Option<String>,
    pub api_password: Option<String>,
    /// Other NAS-IP-Address values this NAS's accounting may carry
    /// (`nas_devices.nas_ip_addresses`).
    pub nas_ip_addresses: Vec<IpAddr>,
    /// A trusted proxy: its requests are attributed to the registered NAS
    /// they name (NAS-IP-Address, NAS-Identifier).
    pub is_proxy: bool,
    /// The proxy entry (by name) CoA for this NAS goes through; None:
    /// straight to the NAS.
    pub coa_via: Option<String>,
    /// Where CoA goes straight to, when not `ip_address`.
    pub coa_address: Option<IpAddr>,
}

/// Parses `nas_devices.nas_ip_addresses` (commas or spaces between
/// addresses); entries that are not addresses are returned apart, for a
/// warning.
pub fn parse_nas_ip_addresses(text: &str) -> (Vec<IpAddr>, Vec<String>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for part in text.split([',', ' ', '\t', '\n']).filter(|p| !p.is_empty()) {
        match part.parse::<IpAddr>() {
            Ok(ip) if !good.contains(&ip) => good.push(ip),
            Ok(_) => {}
            Err(_) => bad.push(part.to_owned()),
        }
    }
    (good, bad)
}

/// The column text for a list of addresses.
pub fn format_nas_ip_addresses(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Everything but the secrets.
impl std::fmt::Debug for NasRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NasRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("ip_address", &self.ip_address)
            .field("secret", &"***")
            .field("nas_type", &self.nas_type)
            .field("coa_port", &self.coa_port)
            .field(
                "require_message_authenticator",
                &self.require_message_authenticator,
            )
            .field("is_active", &self.is_active)
            .field("api_username", &self.api_username)
            .field("api_password", &self.api_password.as_ref().map(|_| "***"))
            .field("nas_ip_addresses", &self.nas_ip_addresses)
            .finish_non_exhaustive()
    }
}

impl NasRecord {
    /// Whether `ip` is this entry's address or one of its other
    /// NAS-IP-Addresses.
    pub fn has_address(&self, ip: IpAddr) -> bool {
        self.ip_address == ip || self.nas_ip_addresses.contains(&ip)
    }

    /// An active NAS with the defaults: CoA port by type, Message-Authenticator `auto`.
    pub fn new(name: &str, ip_address: IpAddr, secret: &str, nas_type: NasType) -> NasRecord {
        NasRecord {
            id: 0,
            name: name.to_owned(),
            short_name: None,
            identifier: None,
            ip_address,
            secret: secret.to_owned(),
            nas_type,
            coa_port: nas_type.default_coa_port(),
            require_message_authenticator: MaPolicy::Auto,
            is_active: true,
            api_username: None,
            api_password: None,
            nas_ip_addresses: Vec::new(),
            is_proxy: false,
            coa_via: None,
            coa_address: None,
        }
    }
}

/// MikroTik burst settings, all in kbit/s except the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Burst {
    pub download_kbps: u32,
    pub upload_kbps: u32,
    pub threshold_download_kbps: u32,
    pub threshold_upload_kbps: u32,
    pub time_secs: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRecord {
    pub id: i64,
    pub name: String,
    pub download_kbps: u32,
    pub upload_kbps: u32,
    pub burst: Option<Burst>,
    pub pool_name: Option<String>,
    pub filter_id: Option<String>,
    pub idle_timeout: Option<u32>,
    pub daily_quota_bytes: Option<i64>,
    pub monthly_quota_bytes: Option<i64>,
    /// The service's own reply attributes, one "Attribute op value" per
    /// line (a FreeRADIUS group's radgroupreply).
    pub reply_attributes: String,
    /// Open sessions a subscriber may have; 0 = no limit.
    pub max_sessions: u32,
    /// What a login over `max_sessions` gets.
    pub over_limit: OverLimit,
    /// What a login of an expired subscriber gets.
    pub on_expired: LapseAction,
    /// What a login of a disabled subscriber gets.
    pub on_disabled: LapseAction,
    /// What reaching `daily_quota_bytes` or `monthly_quota_bytes` does.
    pub quota_action: QuotaAction,
    /// The speed of `QuotaAction::Throttle`.
    pub quota_download_kbps: u32,
    pub quota_upload_kbps: u32,
}

/// A change to a service's quota settings; None leaves one as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaSettings {
    /// Some(0): no daily quota.
    pub daily_bytes: Option<u64>,
    pub monthly_bytes: Option<u64>,
    pub action: Option<QuotaAction>,
    pub download_kbps: Option<u32>,
    pub upload_kbps: Option<u32>,
}

impl QuotaSettings {
    /// What `service` has after this change (as `Admin::set_service_quota`
    /// stores it).
    pub fn apply(&self, service: &mut ServiceRecord) {
        let bytes = |b: u64| (b > 0).then(|| b.min(i64::MAX as u64) as i64);
        if let Some(b) = self.daily_bytes {
            service.daily_quota_bytes = bytes(b);
        }
        if let Some(b) = self.monthly_bytes {
            service.monthly_quota_bytes = bytes(b);
        }
        if let Some(a) = self.action {
            service.quota_action = a;
        }
        if let Some(k) = self.download_kbps {
            service.quota_download_kbps = k;
        }
        if let Some(k) = self.upload_kbps {
            service.quota_upload_kbps = k;
        }
    }
}

/// What a subscriber who reached their service's byte quota gets (README
/// "Quota and fair usage").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QuotaAction {
    /// The quota speed, by CoA and at every login.
    #[default]
    Throttle,
    /// Access-Reject "quota exceeded"; live sessions are disconnected.
    Reject,
    /// The walled garden.
    Portal,
}

impl QuotaAction {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaAction::Throttle => "throttle",
            QuotaAction::Reject => "reject",
            QuotaAction::Portal => "portal",
        }
    }

    pub fn parse(s: &str) -> Option<QuotaAction> {
        match s {
            "throttle" => Some(QuotaAction::Throttle),
            "reject" => Some(QuotaAction::Reject),
            "portal" => Some(QuotaAction::Portal),
            _ => None,
        }
    }
}

/// What a login of an expired or disabled subscriber gets (README
/// "Walled garden").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LapseAction {
    /// Access-Reject `expired` / `disabled`, as without a portal.
    #[default]
    Reject,
    /// Access-Accept into the captive state of `[portal]`.
    Portal,
}

impl LapseAction {
    pub fn as_str(self) -> &'static str {
        match self {
            LapseAction::Reject => "reject",
            LapseAction::Portal => "portal",
        }
    }

    pub fn parse(s: &str) -> Option<LapseAction> {
        match s {
            "reject" => Some(LapseAction::Reject),
            "portal" => Some(LapseAction::Portal),
            _ => None,
        }
    }
}

impl ServiceRecord {
    /// A service with only speeds: no burst, pool, quota, limit or
    /// settings of its own.
    pub fn with_speeds(id: i64, name: &str, download_kbps: u32, upload_kbps: u32) -> ServiceRecord {
        ServiceRecord {
            id,
            name: name.to_owned(),
            download_kbps,
            upload_kbps,
            burst: None,
            pool_name: None,
            filter_id: None,
            idle_timeout: None,
            daily_quota_bytes: None,
            monthly_quota_bytes: None,
            reply_attributes: String::new(),
            max_sessions: 0,
            over_limit: OverLimit::default(),
            on_expired: LapseAction::default(),
            on_disabled: LapseAction::default(),
            quota_action: QuotaAction::default(),
            quota_download_kbps: 0,
            quota_upload_kbps: 0,
        }
    }
}

/// What a login over a subscriber's session limit gets (README
/// "Simultaneous use").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OverLimit {
    /// Access-Reject `simultaneous use`.
    #[default]
    Reject,
    /// Access-Accept, and the oldest open session is disconnected.
    Replace,
}

impl OverLimit {
    pub fn as_str(self) -> &'static str {
        match self {
            OverLimit::Reject => "reject",
            OverLimit::Replace => "replace",
        }
    }

    pub fn parse(s: &str) -> Option<OverLimit> {
        match s {
            "reject" => Some(OverLimit::Reject),
            "replace" => Some(OverLimit::Replace),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriberRecord {
    pub id: i64,
    pub username: String,
    /// AES-256-GCM record (see `keyfile`).
    pub password_enc: Vec<u8>,
    pub service_id: Option<i64>,
    pub is_active: bool,
    /// The last day that still authenticates (server local time).
    pub expiry_date: Option<NaiveDate>,
    /// Normalised "AA:BB:CC:DD:EE:FF".
    pub mac_address: Option<String>,
    pub static_ip: Option<Ipv4Addr>,
    pub updated_at: i64,
    /// What `password_enc` holds.
    pub password_kind: PasswordKind,
    /// Open sessions this subscriber may have, over its service's limit
    /// (0 = no limit); None = the service's. FreeRADIUS's Simultaneous-Use.
    pub max_sessions: Option<u32>,
}

/// What a subscriber's encrypted password field holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PasswordKind {
    /// The password itself: PAP, CHAP and MS-CHAPv2 work.
    #[default]
    Cleartext,
    /// Its 16-byte NT hash (a FreeRADIUS NT-Password): MS-CHAPv2 and PAP
    /// work, CHAP cannot.
    NtHash,
}

impl PasswordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PasswordKind::Cleartext => "cleartext",
            PasswordKind::NtHash => "nt-hash",
        }
    }

    pub fn parse(s: &str) -> Option<PasswordKind> {
        match s {
            "cleartext" | "" => Some(PasswordKind::Cleartext),
            "nt-hash" => Some(PasswordKind::NtHash),
            _ => None,
        }
    }
}

/// A FreeRADIUS-style per-user reply attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RadreplyRecord {
    pub username: String,
    pub attribute: String,
    pub op: String,
    pub value: String,
}

/// Per-table change counters (see `Store::change_versions`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangeVersions {
    pub nas_devices: i64,
    pub services: i64,
    pub subscribers: i64,
    pub radreply: i64,
    pub system_preferences: i64,
    /// FUP tiers, free hours and subscribers' tier levels.
    pub fup: i64,
}

/// One subscriber's quota usage and tier levels (`subscriber_usage`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    pub username: String,
    pub daily_bytes: u64,
    pub monthly_bytes: u64,
    pub levels: super::Levels,
}

/// A `radacct` row as `shardius sessions` and the tests read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    pub unique_id: String,
    pub session_id: String,
    pub username: String,
    pub nas_ip: String,
    pub start_time: Option<chrono::DateTime<chrono::Utc>>,
    pub update_time: Option<chrono::DateTime<chrono::Utc>>,
    pub stop_time: Option<chrono::DateTime<chrono::Utc>>,
    pub session_time: Option<i64>,
    pub input_octets: Option<i64>,
    pub output_octets: Option<i64>,
    pub terminate_cause: Option<String>,
    pub framed_ip: Option<String>,
}

/// A time-of-day bandwidth rule as stored (README "Bandwidth rules").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRecord {
    pub id: i64,
    pub name: String,
    /// Bits 0..6: Monday..Sunday, the days its window starts on; 0 = every day.
    pub days: u8,
    /// Minutes after local midnight; `start > end` crosses midnight.
    pub start_minute: u16,
    pub end_minute: u16,
    pub download_percent: u16,
    pub upload_percent: u16,
    /// Comma-separated service names; empty = every service.
    pub services: String,
    /// On overlap the lowest wins.
    pub priority: i32,
}

impl RuleRecord {
    pub fn service_names(&self) -> impl Iterator<Item = &str> {
        self.services
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
}

/// Where a subscriber stands now, for the expiry job's sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    Valid,
    Disabled,
    /// Past the last valid day.
    Expired,
    /// Deleted (a tombstone, no subscriber of that name).
    Deleted,
    /// At a byte quota (`subscriber_usage` level 7).
    OverQuota,
}

/// An open session the expiry job looks at: one of a subscriber who is
/// disabled, expired or deleted, or one in the walled garden.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepRow {
    pub session: SessionRow,
    pub standing: Standing,
    /// In the walled garden: logged in captive (its Class says so) or
    /// moved there by CoA (`portal_sessions`).
    pub captive: bool,
}

/// The Class prefix of a login accepted into the walled garden (the
/// ordinary one is "SHD1"): radacct keeps it (as FreeRADIUS writes
/// octets: `0x53484450...`), so the sweep knows which sessions are captive
/// without a write at login.
pub const CAPTIVE_CLASS_PREFIX: &[u8; 4] = b"SHDP";

/// One `radius_logs` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub at: chrono::DateTime<chrono::Utc>,
    pub nas_ip: IpAddr,
    /// Stored form ([`crate::text::stored`]); inline up to 24 bytes, so a
    /// logged login allocates nothing for it.
    pub username: compact_str::CompactString,
    /// "auth", "acct", "coa" or "disconnect".
    pub event: &'static str,
    /// "accept", "reject", "start", "interim", "stop", "nas-reboot"; for
    /// CoA: "ack", "nak", "timeout", "bad_response", "error".
    pub result: &'static str,
    pub reason: Option<&'static str>,
    pub shard: u16,
}

/// A `radius_logs` row as read back: username, event, result, reason.
pub type LogRow = (String, String, String, Option<String>);

/// What `shardius import freeradius` writes, in one transaction
/// (`Admin::import`): NAS entries by address, services by name,
/// subscribers by username (upserted), and the imported users' radreply
/// rows (replaced).
#[derive(Debug, Default)]
pub struct ImportBatch {
    pub nas: Vec<NasRecord>,
    pub services: Vec<ServiceRecord>,
    /// Each subscriber with the name of its service.
    pub subscribers: Vec<(SubscriberRecord, Option<String>)>,
    pub radreply: Vec<RadreplyRecord>,
}
