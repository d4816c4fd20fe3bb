//! The immutable view the shards answer from: NAS registry, services,
//! subscribers (passwords still encrypted), radreply rows, preferences.
//!
//! The loader builds a new `Snapshot` off the packet path and publishes it
//! atomically; shards keep answering from the old one meanwhile. Entries
//! are `Arc`s so a delta refresh copies pointers, not subscribers.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::NaiveDate;

use super::mac;
use super::speed::Kbps;
use crate::model::{
    Burst, ChangeVersions, LapseAction, MaPolicy, NasRecord, NasType, OverLimit, PasswordKind,
    QuotaAction, RadreplyRecord, ServiceRecord, SubscriberRecord,
};
use crate::proto::dict::attr;
use crate::proto::dictionary::{self, Dictionary};
use crate::proto::{Packet, Secret};

/// A registered, active NAS.
#[derive(Debug)]
pub struct Nas {
    pub id: i64,
    pub name: String,
    pub ip: IpAddr,
    pub secret: Secret,
    pub nas_type: NasType,
    pub coa_port: u16,
    pub ma_policy: MaPolicy,
    /// Other NAS-IP-Address values its accounting may carry.
    pub other_addresses: Box<[IpAddr]>,
    /// A trusted proxy: see [`Snapshot::speaks_for`].
    pub is_proxy: bool,
    /// The proxy entry (by name) CoA for this NAS goes through.
    pub coa_via: Option<String>,
    /// Where CoA goes when straight to the NAS, if not `ip`.
    pub coa_address: Option<IpAddr>,
    /// The NAS-Identifier values that name it behind a proxy: its name,
    /// short name and identifier.
    pub identifiers: Box<[Box<[u8]>]>,
    /// Under `auto`: this NAS has sent a Message-Authenticator, so from now
    /// on one is required. Shared by all shards; carried across reloads.
    ma_seen: AtomicBool,
}

impl Nas {
    pub fn from_record(r: &NasRecord) -> Nas {
        Nas {
            id: r.id,
            name: r.name.clone(),
            ip: r.ip_address,
            secret: Secret::new(r.secret.as_bytes()),
            nas_type: r.nas_type,
            coa_port: r.coa_port,
            ma_policy: r.require_message_authenticator,
            other_addresses: r.nas_ip_addresses.iter().copied().collect(),
            is_proxy: r.is_proxy,
            coa_via: r.coa_via.clone(),
            coa_address: r.coa_address,
            identifiers: identifiers_of(r),
            ma_seen: AtomicBool::new(false),
        }
    }

    /// Whether accounting from this NAS may name `ip` as its NAS-IP-Address.
    pub fn has_address(&self, ip: IpAddr) -> bool {
        self.ip == ip || self.other_addresses.contains(&ip)
    }

    /// Every address whose sessions are this NAS's: its own and the others.
    pub fn addresses(&self) -> Vec<IpAddr> {
        std::iter::once(self.ip)
            .chain(self.other_addresses.iter().copied())
            .collect()
    }

    /// Whether an Access-Request from this NAS must carry a Message-Authenticator.
    pub fn requires_message_authenticator(&self) -> bool {
        match self.ma_policy {
            MaPolicy::Yes => true,
            MaPolicy::No => false,
            MaPolicy::Auto => self.ma_seen.load(Ordering::Relaxed),
        }
    }

    /// Records that a valid Message-Authenticator arrived from this NAS.
    pub fn note_message_authenticator(&self) {
        if self.ma_policy == MaPolicy::Auto && !self.ma_seen.load(Ordering::Relaxed) {
            self.ma_seen.store(true, Ordering::Relaxed);
        }
    }

    fn same_config(&self, r: &NasRecord) -> bool {
        self.name == r.name
            && self.ip == r.ip_address
            && self.secret.as_bytes() == r.secret.as_bytes()
            && self.nas_type == r.nas_type
            && self.coa_port == r.coa_port
            && self.ma_policy == r.require_message_authenticator
            && *self.other_addresses == *r.nas_ip_addresses
            && self.is_proxy == r.is_proxy
            && self.coa_via == r.coa_via
            && self.coa_address == r.coa_address
            && self.identifiers == identifiers_of(r)
    }
}

fn identifiers_of(r: &NasRecord) -> Box<[Box<[u8]>]> {
    let mut ids: Vec<Box<[u8]>> = Vec::new();
    for id in [Some(&r.name), r.short_name.as_ref(), r.identifier.as_ref()]
        .into_iter()
        .flatten()
        .filter(|id| !id.is_empty())
    {
        if !ids.iter().any(|x| **x == *id.as_bytes()) {
            ids.push(id.as_bytes().into());
        }
    }
    ids.into()
}

#[derive(Debug)]
pub struct Service {
    pub id: i64,
    pub name: String,
    pub download_kbps: u32,
    pub upload_kbps: u32,
    pub pool_name: Option<String>,
    pub filter_id: Option<String>,
    pub idle_timeout: Option<u32>,
    /// Mikrotik-Rate-Limit, precomputed: "rx/tx" from the router's view,
    /// i.e. upload/download, then the optional burst fields.
    pub rate_limit: String,
    /// The service's own reply attributes (`services.reply_attributes`,
    /// a FreeRADIUS group's radgroupreply), with their operators.
    pub reply: Box<[(ReplyOp, ReplyAttr)]>,
    /// Open sessions per subscriber; 0 = no limit.
    pub max_sessions: u32,
    pub over_limit: OverLimit,
    /// What logins of expired and disabled subscribers get.
    pub on_expired: LapseAction,
    pub on_disabled: LapseAction,
    /// MikroTik burst fields (bandwidth rules scale them).
    pub burst: Option<Burst>,
    /// Byte quotas (None: none) and what reaching one does; see
    /// `fup::Quota`, which the FUP policy builds from these.
    pub daily_quota_bytes: Option<u64>,
    pub monthly_quota_bytes: Option<u64>,
    pub quota_action: QuotaAction,
    pub quota_download_kbps: u32,
    pub quota_upload_kbps: u32,
}

impl Service {
    /// Whether the service has a byte quota.
    pub fn has_quota(&self) -> bool {
        self.daily_quota_bytes.is_some() || self.monthly_quota_bytes.is_some()
    }

    /// The Filter-Id a generic NAS gets: the service's, else its name.
    pub fn filter(&self) -> &str {
        self.filter_id.as_deref().unwrap_or(&self.name)
    }

    pub fn from_record(r: &ServiceRecord) -> Service {
        Service {
            id: r.id,
            name: r.name.clone(),
            download_kbps: r.download_kbps,
            upload_kbps: r.upload_kbps,
            pool_name: r.pool_name.clone().filter(|s| !s.is_empty()),
            filter_id: r.filter_id.clone().filter(|s| !s.is_empty()),
            idle_timeout: r.idle_timeout.filter(|t| *t > 0),
            rate_limit: rate_limit(r.upload_kbps, r.download_kbps, r.burst),
            reply: Box::new([]),
            max_sessions: r.max_sessions,
            over_limit: r.over_limit,
            on_expired: r.on_expired,
            on_disabled: r.on_disabled,
            burst: r.burst,
            daily_quota_bytes: r.daily_quota_bytes.filter(|b| *b > 0).map(|b| b as u64),
            monthly_quota_bytes: r.monthly_quota_bytes.filter(|b| *b > 0).map(|b| b as u64),
            quota_action: r.quota_action,
            quota_download_kbps: r.quota_download_kbps,
            quota_upload_kbps: r.quota_upload_kbps,
        }
    }

    /// [`Service::from_record`] with its reply attributes encoded through
    /// `dictionary`; each line that cannot be sent goes to `warn`.
    pub fn from_record_with(
        r: &ServiceRecord,
        dictionary: &Dictionary,
        warn: &mut dyn FnMut(String),
    ) -> Service {
        let mut reply = Vec::new();
        for (n, line) in r.reply_attributes.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let encoded = parse_reply_line(line).and_then(|(attribute, op, value)| {
                let op = ReplyOp::parse(op)?;
                let record = RadreplyRecord {
                    username: String::new(),
                    attribute: attribute.into(),
                    op: String::new(),
                    value: value.into(),
                };
                Ok((op, ReplyAttr::from_record(&record, dictionary)?))
            });
            match encoded {
                Ok(x) => reply.push(x),
                Err(e) => warn(format!(
                    "service {:?} reply attribute line {} {line:?} left out: {e}",
                    r.name,
                    n + 1
                )),
            }
        }
        Service {
            reply: reply.into(),
            ..Service::from_record(r)
        }
    }
}

/// One "Attribute op value" line of `services.reply_attributes` (the value
/// may be double-quoted, as in FreeRADIUS's files).
pub fn parse_reply_line(line: &str) -> Result<(&str, &str, &str), String> {
    let line = line.trim();
    let (attribute, rest) = line
        .split_once(char::is_whitespace)
        .ok_or_else(|| "expected: Attribute op value".to_owned())?;
    let rest = rest.trim_start();
    let (op, value) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| "expected: Attribute op value".to_owned())?;
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    Ok((attribute, op, value))
}

/// The Mikrotik-Rate-Limit string: `rx/tx [rx-burst/tx-burst
/// rx-threshold/tx-threshold rx-time/tx-time]`, rx = the subscriber's upload.
pub fn rate_limit(upload_kbps: u32, download_kbps: u32, burst: Option<Burst>) -> String {
    let mut s = format!("{}/{}", Kbps(upload_kbps), Kbps(download_kbps));
    if let Some(b) = burst {
        s.push_str(&format!(
            " {}/{} {}/{} {}/{}",
            Kbps(b.upload_kbps),
            Kbps(b.download_kbps),
            Kbps(b.threshold_upload_kbps),
            Kbps(b.threshold_download_kbps),
            b.time_secs,
            b.time_secs
        ));
    }
    s
}

#[derive(Debug)]
pub struct Subscriber {
    pub id: i64,
    /// Shared with the snapshot's map key: one allocation per subscriber.
    pub username: Arc<[u8]>,
    pub password_enc: Box<[u8]>,
    pub service_id: Option<i64>,
    pub is_active: bool,
    pub expiry_date: Option<NaiveDate>,
    pub mac: Option<[u8; 6]>,
    pub static_ip: Option<Ipv4Addr>,
    pub password_kind: PasswordKind,
    /// Its own session limit (0 = none); None = its service's.
    pub max_sessions: Option<u32>,
}

impl Subscriber {
    pub fn from_record(r: &SubscriberRecord) -> Subscriber {
        Subscriber {
            id: r.id,
            username: r.username.as_bytes().into(),
            password_enc: r.password_enc.as_slice().into(),
            service_id: r.service_id,
            is_active: r.is_active,
            expiry_date: r.expiry_date,
            mac: r
                .mac_address
                .as_deref()
                .and_then(|m| mac::parse(m.as_bytes())),
            static_ip: r.static_ip,
            password_kind: r.password_kind,
            max_sessions: r.max_sessions,
        }
    }

    /// The session limit of this subscriber on `service`: its own, else
    /// the service's; None when there is none (README "Simultaneous use").
    /// Why the subscriber may not have its service on local day `today`:
    /// disabled, or past its last valid day (`expiry_date`).
    pub fn lapsed(&self, today: NaiveDate) -> Option<super::RejectReason> {
        if !self.is_active {
            Some(super::RejectReason::Disabled)
        } else if self.expiry_date.is_some_and(|last_day| today > last_day) {
            Some(super::RejectReason::Expired)
        } else {
            None
        }
    }

    pub fn session_limit(&self, service: Option<&Service>) -> Option<super::sessions::Limit> {
        let over = service.map_or(OverLimit::Reject, |s| s.over_limit);
        let max = self.max_sessions.or(service.map(|s| s.max_sessions))?;
        (max > 0).then_some(super::sessions::Limit { max, over })
    }
}

/// One extra reply attribute, encoded once at load time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyAttr {
    /// 0 for standard attributes.
    pub vendor: u32,
    pub ty: u8,
    pub value: Box<[u8]>,
}

impl ReplyAttr {
    /// Encodes a radreply row through `dictionary`; `Err` names what is
    /// wrong with it.
    pub fn from_record(r: &RadreplyRecord, dictionary: &Dictionary) -> Result<ReplyAttr, String> {
        let e = dictionary.encode(r.attribute.trim(), &r.value)?;
        Ok(ReplyAttr {
            vendor: e.vendor,
            ty: e.ty,
            value: e.value,
        })
    }
}

/// What a radreply row's `op` does among the user's rows, in row order
/// (FreeRADIUS's reply operators): `=` adds the attribute unless an
/// earlier row has it, `:=` replaces any earlier ones, `+=` always adds
/// (several Cisco-AVPair rows). Any row replaces the attribute shardius
/// would generate itself, as a FreeRADIUS user reply beats a group reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyOp {
    Add,
    Set,
    Append,
}

impl ReplyOp {
    fn parse(op: &str) -> Result<ReplyOp, String> {
        match op.trim() {
            "=" | "" => Ok(ReplyOp::Add),
            ":=" => Ok(ReplyOp::Set),
            "+=" => Ok(ReplyOp::Append),
            other => Err(format!(
                "op {other:?} is not a reply operator (=, := or +=)"
            )),
        }
    }
}

/// The `system_preferences` shardius reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preferences {
    /// Acct-Interim-Interval in every Access-Accept.
    pub interim_interval_secs: u32,
    /// Session-Timeout up to the end of the expiry date.
    pub expiry_hard_cut: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            interim_interval_secs: 30,
            expiry_hard_cut: false,
        }
    }
}

impl Preferences {
    /// Reads known keys; a bad value keeps the default and is reported.
    pub fn from_pairs(pairs: &[(String, String)], mut warn: impl FnMut(String)) -> Preferences {
        let mut p = Preferences::default();
        for (key, value) in pairs {
            match key.as_str() {
                "radius_interim_update_seconds" => match value.trim().parse::<u32>() {
                    Ok(v) if v >= 10 => p.interim_interval_secs = v,
                    _ => warn(format!(
                        "system_preferences {key} = {value:?}: expected seconds >= 10"
                    )),
                },
                "radius_expiry_hard_cut" => match value.trim() {
                    "true" | "1" | "yes" => p.expiry_hard_cut = true,
                    "false" | "0" | "no" => p.expiry_hard_cut = false,
                    _ => warn(format!(
                        "system_preferences {key} = {value:?}: expected true or false"
                    )),
                },
                _ => {}
            }
        }
        p
    }
}

/// Everything a shard needs to answer, frozen at one point in time.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub nas: HashMap<IpAddr, Arc<Nas>>,
    /// The NAS entries by the NAS-Identifier values that name them
    /// ([`Snapshot::speaks_for`]).
    pub nas_by_identifier: HashMap<Box<[u8]>, Arc<Nas>>,
    pub services: HashMap<i64, Arc<Service>>,
    /// Keyed by the subscriber's own username allocation, so cloning the
    /// map for a delta refresh copies pointers and allocates nothing per entry.
    pub subscribers: HashMap<Arc<[u8]>, Arc<Subscriber>>,
    pub radreply: HashMap<Box<[u8]>, Arc<[ReplyAttr]>>,
    /// What radreply rows are encoded through (None: the built-in
    /// dictionaries; the server sets the built-in ones plus
    /// `dictionary.directory`).
    pub dictionary: Option<Arc<Dictionary>>,
    /// The speed attribute templates of `[speeds]`.
    pub speeds: Arc<super::vendor_speed::VendorSpeeds>,
    /// What a captive login gets (`[portal]`).
    pub portal: Arc<super::portal::Portal>,
    pub preferences: Preferences,
    /// FUP tiers and free hours, by service id (only services that have them).
    pub fup: super::fup::FupPolicy,
    /// Time-of-day bandwidth rules (`policy::rules`).
    pub rules: Arc<[super::rules::Rule]>,
    /// The tiers subscribers are in, when not 0 (from `subscriber_usage`).
    pub fup_levels: HashMap<Box<[u8]>, super::fup::Levels>,
    /// The store's change counters this snapshot reflects.
    pub versions: ChangeVersions,
}

impl Snapshot {
    /// Whether any subscriber has a session limit (its own or its
    /// service's): only then is `radacct` read for open sessions. O(n).
    pub fn has_session_limits(&self) -> bool {
        self.services.values().any(|s| s.max_sessions > 0)
            || self
                .subscribers
                .values()
                .any(|s| s.max_sessions.is_some_and(|n| n > 0))
    }

    /// Static IPs that more than one subscriber has (subscriber static_ip
    /// or a radreply Framed-IP-Address), each with its subscribers, sorted:
    /// rows a panel wrote in plain SQL past the CLI's check.
    /// Every static IPv4 address (subscriber static_ip, radreply
    /// Framed-IP-Address): no server-side pool hands these out.
    pub fn static_ips(&self) -> std::collections::HashSet<std::net::IpAddr> {
        let mut out = std::collections::HashSet::new();
        for s in self.subscribers.values() {
            if let Some(ip) = s.static_ip {
                out.insert(std::net::IpAddr::V4(ip));
            }
        }
        for attrs in self.radreply.values() {
            for a in attrs
                .iter()
                .filter(|a| a.vendor == 0 && a.ty == crate::proto::dict::attr::FRAMED_IP_ADDRESS)
            {
                if let Ok(octets) = <[u8; 4]>::try_from(&a.value[..]) {
                    out.insert(std::net::IpAddr::V4(Ipv4Addr::from(octets)));
                }
            }
        }
        out
    }

    pub fn static_ip_conflicts(&self) -> Vec<(Ipv4Addr, Vec<String>)> {
        let mut by_ip: HashMap<Ipv4Addr, Vec<String>> = HashMap::new();
        let mut add = |ip: Ipv4Addr, user: &[u8]| {
            let users = by_ip.entry(ip).or_default();
            let user = String::from_utf8_lossy(user).into_owned();
            if !users.contains(&user) {
                users.push(user);
            }
        };
        for (user, s) in &self.subscribers {
            if let Some(ip) = s.static_ip {
                add(ip, user);
            }
        }
        for (user, attrs) in &self.radreply {
            for a in attrs
                .iter()
                .filter(|a| a.vendor == 0 && a.ty == crate::proto::dict::attr::FRAMED_IP_ADDRESS)
            {
                if let Ok(octets) = <[u8; 4]>::try_from(&a.value[..]) {
                    add(Ipv4Addr::from(octets), user);
                }
            }
        }
        let mut out: Vec<_> = by_ip
            .into_iter()
            .filter(|(_, users)| users.len() > 1)
            .map(|(ip, mut users)| {
                users.sort();
                (ip, users)
            })
            .collect();
        out.sort();
        out
    }

    /// The speed that applies to `username` on `service`: the effective
    /// FUP tier when the subscriber is in one, else `None` (the service's).
    pub fn fup_tier(&self, username: &[u8], service_id: i64) -> Option<&super::fup::Tier> {
        // Most services have no tiers: skip hashing the username for them.
        let fup = self.fup.get(&service_id)?;
        fup.effective(*self.fup_levels.get(username)?)
    }

    pub fn subscriber(&self, username: &[u8]) -> Option<&Subscriber> {
        self.subscribers.get(username).map(|s| &**s)
    }

    pub fn service(&self, id: Option<i64>) -> Option<&Service> {
        id.and_then(|id| self.services.get(&id)).map(|s| &**s)
    }

    pub fn reply_attributes(&self, username: &[u8]) -> &[ReplyAttr] {
        self.radreply.get(username).map_or(&[], |r| &**r)
    }

    /// Replaces the NAS registry with the active rows, keeping the state
    /// (Message-Authenticator seen) of NASes whose configuration is unchanged.
    pub fn set_nas(&mut self, records: &[NasRecord]) {
        let old = std::mem::take(&mut self.nas);
        self.nas_by_identifier.clear();
        for r in records.iter().filter(|r| r.is_active) {
            let nas = match old.get(&r.ip_address) {
                Some(existing) if existing.same_config(r) => existing.clone(),
                Some(existing) => {
                    let nas = Nas::from_record(r);
                    nas.ma_seen
                        .store(existing.ma_seen.load(Ordering::Relaxed), Ordering::Relaxed);
                    Arc::new(nas)
                }
                None => Arc::new(Nas::from_record(r)),
            };
            for id in nas.identifiers.iter() {
                self.nas_by_identifier
                    .entry(id.clone())
                    .or_insert_with(|| nas.clone());
            }
            self.nas.insert(r.ip_address, nas);
        }
    }

    /// The NAS a request from `nas` speaks for: a trusted proxy's request
    /// speaks for the registered NAS its NAS-IP-Address (or
    /// NAS-IPv6-Address), else its NAS-Identifier (a NAS's name, short
    /// name or identifier) names; anything else, and a proxy's request
    /// naming no registered NAS (or another proxy), for the entry itself.
    pub fn speaks_for<'s>(&'s self, nas: &'s Arc<Nas>, packet: &Packet<'_>) -> &'s Arc<Nas> {
        if !nas.is_proxy {
            return nas;
        }
        let by_address = packet
            .attr_ipv4(attr::NAS_IP_ADDRESS)
            .map(IpAddr::V4)
            .or_else(|| {
                packet
                    .attr(attr::NAS_IPV6_ADDRESS)
                    .and_then(|v| <[u8; 16]>::try_from(v).ok())
                    .map(|v| IpAddr::V6(v.into()))
            })
            .and_then(|ip| self.nas.get(&ip));
        let by_identifier = || {
            packet
                .attr(attr::NAS_IDENTIFIER)
                .and_then(|id| self.nas_by_identifier.get(id))
        };
        by_address
            .or_else(by_identifier)
            .filter(|inner| !inner.is_proxy)
            .unwrap_or(nas)
    }

    /// A NAS entry by name (CoA through a proxy).
    pub fn nas_named(&self, name: &str) -> Option<&Arc<Nas>> {
        self.nas.values().find(|n| n.name == name)
    }

    pub fn set_services(&mut self, records: &[ServiceRecord]) {
        self.set_services_reporting(records, &mut |_| {});
    }

    /// [`Snapshot::set_services`], passing each reply attribute line that
    /// cannot be sent to `warn` (the loader logs them, check-config prints them).
    pub fn set_services_reporting(
        &mut self,
        records: &[ServiceRecord],
        warn: &mut dyn FnMut(String),
    ) {
        let dictionary = self.dictionary.clone();
        let dictionary = dictionary
            .as_deref()
            .unwrap_or_else(|| dictionary::builtin());
        self.services = records
            .iter()
            .map(|r| {
                (
                    r.id,
                    Arc::new(Service::from_record_with(r, dictionary, warn)),
                )
            })
            .collect();
    }

    /// The reply attributes of a login: the subscriber's radreply rows,
    /// then the service's own merged over them with their operators (as
    /// FreeRADIUS merges a group's radgroupreply over the user's radreply:
    /// `:=` replaces, `=` adds if absent, `+=` appends).
    pub fn login_reply<'s>(
        &'s self,
        username: &[u8],
        service: Option<&Service>,
    ) -> std::borrow::Cow<'s, [ReplyAttr]> {
        let user = self.reply_attributes(username);
        let Some(service) = service.filter(|s| !s.reply.is_empty()) else {
            return std::borrow::Cow::Borrowed(user);
        };
        let mut merged = user.to_vec();
        for (op, a) in service.reply.iter() {
            let same = |x: &ReplyAttr| x.vendor == a.vendor && x.ty == a.ty;
            match op {
                ReplyOp::Add if merged.iter().any(same) => {}
                ReplyOp::Set => {
                    merged.retain(|x| !same(x));
                    merged.push(a.clone());
                }
                ReplyOp::Add | ReplyOp::Append => merged.push(a.clone()),
            }
        }
        std::borrow::Cow::Owned(merged)
    }

    /// Applies changed rows and deletions (a full load is a delta from empty).
    pub fn apply_subscribers(&mut self, changed: &[SubscriberRecord], deleted: &[String]) {
        for name in deleted {
            self.subscribers.remove(name.as_bytes());
        }
        for r in changed {
            self.insert_subscriber(r);
        }
    }

    /// Adds or replaces one subscriber.
    pub fn insert_subscriber(&mut self, r: &SubscriberRecord) {
        let subscriber = Subscriber::from_record(r);
        self.subscribers
            .insert(subscriber.username.clone(), Arc::new(subscriber));
    }

    /// The dictionary radreply rows are encoded through.
    pub fn dictionary(&self) -> &Dictionary {
        self.dictionary
            .as_deref()
            .unwrap_or_else(|| dictionary::builtin())
    }

    /// Replaces radreply rows (in `id` order), applying their operators;
    /// a row that does not encode is passed to `warn` with its user,
    /// attribute and value, and left out.
    pub fn set_radreply(&mut self, records: &[RadreplyRecord], mut warn: impl FnMut(String)) {
        let mut by_user: HashMap<Box<[u8]>, Vec<ReplyAttr>> = HashMap::new();
        for r in records {
            let encoded = ReplyOp::parse(&r.op)
                .and_then(|op| Ok((op, ReplyAttr::from_record(r, self.dictionary())?)));
            let (op, a) = match encoded {
                Ok(x) => x,
                Err(e) => {
                    warn(format!(
                        "radreply row {:?} {} {} {:?} left out: {e}",
                        r.username, r.attribute, r.op, r.value
                    ));
                    continue;
                }
            };
            let attrs = by_user.entry(r.username.as_bytes().into()).or_default();
            let same = |x: &ReplyAttr| x.vendor == a.vendor && x.ty == a.ty;
            match op {
                ReplyOp::Add if attrs.iter().any(same) => {}
                ReplyOp::Set => {
                    attrs.retain(|x| !same(x));
                    attrs.push(a);
                }
                ReplyOp::Add | ReplyOp::Append => attrs.push(a),
            }
        }
        self.radreply = by_user.into_iter().map(|(k, v)| (k, v.into())).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nas(secret: &str) -> NasRecord {
        NasRecord::new(
            "BNG-1",
            "10.0.0.1".parse().unwrap(),
            secret,
            NasType::Mikrotik,
        )
    }

    #[test]
    fn rate_limit_is_upload_slash_download_with_optional_burst() {
        assert_eq!(rate_limit(2000, 10000, None), "2000k/10000k");
        let burst = Burst {
            download_kbps: 20000,
            upload_kbps: 4000,
            threshold_download_kbps: 8000,
            threshold_upload_kbps: 1500,
            time_secs: 16,
        };
        assert_eq!(
            rate_limit(2000, 10000, Some(burst)),
            "2000k/10000k 4000k/20000k 1500k/8000k 16/16"
        );
    }

    #[test]
    fn the_message_authenticator_requirement_survives_a_reload_and_disabled_nas_go() {
        let mut s = Snapshot::default();
        s.set_nas(&[nas("a")]);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(!s.nas[&ip].requires_message_authenticator());
        s.nas[&ip].note_message_authenticator();
        s.set_nas(&[nas("b")]);
        assert!(s.nas[&ip].requires_message_authenticator());
        assert_eq!(s.nas[&ip].secret, Secret::new(b"b"));
        let mut off = nas("b");
        off.is_active = false;
        s.set_nas(&[off]);
        assert!(s.nas.is_empty());
    }

    #[test]
    fn radreply_rows_are_encoded_or_reported() {
        let row = |a: &str, v: &str| RadreplyRecord {
            username: "u".into(),
            attribute: a.into(),
            op: ":=".into(),
            value: v.into(),
        };
        let mut warnings = vec![];
        let mut s = Snapshot::default();
        s.set_radreply(
            &[
                row("Framed-IP-Address", "100.64.0.9"),
                row("Session-Timeout", "x"),
                row("No-Such", "1"),
            ],
            |w| warnings.push(w),
        );
        assert_eq!(s.reply_attributes(b"u").len(), 1);
        assert_eq!(&*s.reply_attributes(b"u")[0].value, &[100, 64, 0, 9]);
        assert_eq!(warnings.len(), 2);
    }

    #[test]
    fn preferences_fall_back_to_defaults_on_bad_values() {
        let mut warnings = 0;
        let p = Preferences::from_pairs(
            &[
                ("radius_interim_update_seconds".into(), "60".into()),
                ("radius_expiry_hard_cut".into(), "maybe".into()),
            ],
            |_| warnings += 1,
        );
        assert_eq!(p.interim_interval_secs, 60);
        assert!(!p.expiry_hard_cut);
        assert_eq!(warnings, 1);
    }
}
