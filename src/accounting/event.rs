//! Accounting-Requests as events (RFC 2866, RFC 2869 §5.1–5.2), without IO:
//! a parsed, authenticated packet and the time go in, an [`AcctEvent`]
//! comes out, with 64-bit counters and a stable `acctuniqueid`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, Duration, Utc};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::proto::dict::{acct_status, attr};
use crate::proto::Packet;

/// Acct-Status-Type, as far as shardius acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AcctKind {
    Start,
    Interim,
    Stop,
    /// Accounting-On / Accounting-Off: the NAS (re)started; its open
    /// sessions are over (`NAS-Reboot`).
    NasReboot,
}

/// One accounting event, ready for the writer. Text fields that come from
/// the request hold the bytes the NAS sent in [`crate::text::stored`] form
/// (NUL and non-UTF-8 bytes as `\xHH`), so both databases can store them
/// and a CoA can echo the original bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcctEvent {
    pub kind: AcctKind,
    /// `acctuniqueid`: FreeRADIUS's own (see [`freeradius_unique_id`]),
    /// so a session has one row whichever of the two servers records it.
    /// After the writer found the session under its key of schema version 8
    /// and older ([`legacy_unique_id`]), that key.
    pub unique_id: String,
    /// The key shardius used before it computed FreeRADIUS's
    /// ([`legacy_unique_id`]): a session that was open across the upgrade
    /// continues on its row. None in events spooled by older versions,
    /// whose `unique_id` is that key already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_id: Option<String>,
    /// Byte for byte as the NAS sent it, in stored form (CoA must echo it exactly).
    pub session_id: String,
    pub username: String,
    pub nas_ip: IpAddr,
    /// NAS-Port-Id, else NAS-Port in decimal (FreeRADIUS's `nasportid`).
    pub nas_port_id: Option<String>,
    /// NAS-Port-Type by its dictionary name (`Virtual`, `Ethernet`, ...).
    pub nas_port_type: Option<String>,
    /// When the event happened: Event-Timestamp (RFC 2869 §5.3) when the
    /// NAS sent a plausible one, else arrival minus Acct-Delay-Time.
    pub event_time: DateTime<Utc>,
    /// When the session started, as this event tells it (the event time
    /// of a Start, else the event time minus Acct-Session-Time).
    pub start_time: DateTime<Utc>,
    pub session_time: Option<u32>,
    pub input_octets: Option<u64>,
    pub output_octets: Option<u64>,
    pub framed_ip: Option<Ipv4Addr>,
    /// Framed-IPv6-Address (RFC 6911).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framed_ipv6_address: Option<Ipv6Addr>,
    /// Framed-IPv6-Prefix (RFC 3162 §2.3) as `2001:db8:1::/64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framed_ipv6_prefix: Option<String>,
    /// Delegated-IPv6-Prefix (RFC 4818) as `2001:db8:100::/56`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated_ipv6_prefix: Option<String>,
    pub calling_station_id: Option<String>,
    pub called_station_id: Option<String>,
    pub terminate_cause: Option<String>,
    /// Class as FreeRADIUS prints an octets value: `0x` and hex.
    pub class: Option<String>,
    /// Acct-Authentic by name (`RADIUS`, `Local`, `Remote`, `Diameter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acct_authentic: Option<String>,
    /// Service-Type by name (`Framed-User`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    /// Framed-Protocol by name (`PPP`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framed_protocol: Option<String>,
    /// Framed-Interface-Id (RFC 3162 §2.2) as FreeRADIUS prints it:
    /// four 16-bit groups in hex, `0:0:0:1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framed_interface_id: Option<String>,
    /// Connect-Info of the session's Start or Interim (`connectinfo_start`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_info_start: Option<String>,
    /// Connect-Info of its Stop (`connectinfo_stop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_info_stop: Option<String>,
    /// For a NAS reboot: every address of the NAS entry the packet came
    /// from; the reboot closes the open sessions recorded under them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nas_addresses: Vec<IpAddr>,
    /// An octet counter was above what a signed 64-bit column holds
    /// (Gigawords >= 2^31) and was clamped to `i64::MAX`.
    #[serde(skip)]
    pub clamped: bool,
}

/// The largest octet count both databases store (`bigint`, SQLite INTEGER).
pub const MAX_OCTETS: u64 = i64::MAX as u64;

/// How far an Event-Timestamp may be from the arrival time and still be
/// believed. A router without a battery-backed clock (many MikroTiks)
/// counts from 1970 until NTP syncs; its timestamps would put sessions
/// decades in the past. FreeRADIUS takes any value; shardius then uses
/// arrival minus Acct-Delay-Time, as for a packet without one.
pub const EVENT_TIMESTAMP_TRUSTED: i64 = 86_400;

/// Why an Accounting-Request was not turned into an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcctParseError {
    MissingStatusType,
    /// Status types shardius does not record (e.g. Failed, tunnel types).
    UnsupportedStatusType(u32),
    MissingSessionId,
}

impl AcctEvent {
    /// Builds the event for `packet`, received at `now`, recorded under
    /// NAS address `nas_ip`: the packet's NAS-IP-Address once the caller
    /// has checked it belongs to the NAS entry the packet came from (see
    /// [`AcctEvent::nas_ip_of`]), else the entry's own address.
    ///
    /// `source` is the address the packet came from: FreeRADIUS keys a
    /// session by it when the packet names no NAS address.
    pub fn from_packet(
        packet: &Packet<'_>,
        nas_ip: IpAddr,
        source: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<AcctEvent, AcctParseError> {
        let status = packet
            .attr_u32(attr::ACCT_STATUS_TYPE)
            .ok_or(AcctParseError::MissingStatusType)?;
        let kind = match status {
            acct_status::START => AcctKind::Start,
            acct_status::INTERIM_UPDATE => AcctKind::Interim,
            acct_status::STOP => AcctKind::Stop,
            acct_status::ACCOUNTING_ON | acct_status::ACCOUNTING_OFF => AcctKind::NasReboot,
            other => return Err(AcctParseError::UnsupportedStatusType(other)),
        };
        let text = |ty| packet.attr(ty).map(|v| crate::text::stored(v).into_owned());
        let raw_session_id = match kind {
            AcctKind::NasReboot => packet.attr(attr::ACCT_SESSION_ID).unwrap_or_default(),
            _ => packet
                .attr(attr::ACCT_SESSION_ID)
                .ok_or(AcctParseError::MissingSessionId)?,
        };
        let raw_username = packet.attr(attr::USER_NAME).unwrap_or_default();
        let raw_port_id = packet.attr(attr::NAS_PORT_ID);
        let delay = packet
            .attr_u32(attr::ACCT_DELAY_TIME)
            .unwrap_or(0)
            .min(86_400);
        let mut clamped = false;
        let mut octets = |low, high| {
            let total = packet
                .attr_u32(low)
                .map(|l| u64::from(l) + (u64::from(packet.attr_u32(high).unwrap_or(0)) << 32))?;
            clamped |= total > MAX_OCTETS;
            Some(total.min(MAX_OCTETS))
        };
        let input_octets = octets(attr::ACCT_INPUT_OCTETS, attr::ACCT_INPUT_GIGAWORDS);
        let output_octets = octets(attr::ACCT_OUTPUT_OCTETS, attr::ACCT_OUTPUT_GIGAWORDS);
        let event_time = packet
            .attr_u32(attr::EVENT_TIMESTAMP)
            .and_then(|t| DateTime::from_timestamp(i64::from(t), 0))
            .filter(|t| (*t - now).num_seconds().abs() <= EVENT_TIMESTAMP_TRUSTED)
            .unwrap_or_else(|| now - Duration::seconds(i64::from(delay)));
        // A Start without counters starts them at zero, as FreeRADIUS's
        // start query writes them.
        let (session_time, input_octets, output_octets) = match kind {
            AcctKind::Start => (
                Some(packet.attr_u32(attr::ACCT_SESSION_TIME).unwrap_or(0)),
                input_octets.or(Some(0)),
                output_octets.or(Some(0)),
            ),
            _ => (
                packet.attr_u32(attr::ACCT_SESSION_TIME),
                input_octets,
                output_octets,
            ),
        };
        let connect_info = text(attr::CONNECT_INFO);
        let (connect_info_start, connect_info_stop) = match kind {
            AcctKind::Stop => (None, connect_info),
            _ => (connect_info, None),
        };
        let start_time = match kind {
            AcctKind::Start => event_time,
            _ => event_time - Duration::seconds(i64::from(session_time.unwrap_or(0))),
        };
        Ok(AcctEvent {
            unique_id: freeradius_unique_id(packet, source),
            legacy_id: Some(legacy_unique_id(
                &nas_ip,
                raw_session_id,
                raw_username,
                raw_port_id,
            )),
            kind,
            session_id: crate::text::stored(raw_session_id).into_owned(),
            username: crate::text::stored(raw_username).into_owned(),
            nas_ip,
            nas_port_id: raw_port_id
                .map(|v| crate::text::stored(v).into_owned())
                .or_else(|| packet.attr_u32(attr::NAS_PORT).map(|p| p.to_string())),
            nas_port_type: packet
                .attr_u32(attr::NAS_PORT_TYPE)
                .map(|v| value_name(attr::NAS_PORT_TYPE, v)),
            event_time,
            start_time,
            session_time,
            input_octets,
            output_octets,
            framed_ip: packet.attr_ipv4(attr::FRAMED_IP_ADDRESS),
            framed_ipv6_address: packet
                .attr(attr::FRAMED_IPV6_ADDRESS)
                .and_then(|v| <[u8; 16]>::try_from(v).ok())
                .map(Ipv6Addr::from),
            framed_ipv6_prefix: packet.attr(attr::FRAMED_IPV6_PREFIX).and_then(ipv6_prefix),
            delegated_ipv6_prefix: packet
                .attr(attr::DELEGATED_IPV6_PREFIX)
                .and_then(ipv6_prefix),
            calling_station_id: text(attr::CALLING_STATION_ID),
            called_station_id: text(attr::CALLED_STATION_ID),
            terminate_cause: packet
                .attr_u32(attr::ACCT_TERMINATE_CAUSE)
                .map(|v| value_name(attr::ACCT_TERMINATE_CAUSE, v)),
            class: packet
                .attr(attr::CLASS)
                .map(|c| format!("0x{}", hex::encode(c))),
            acct_authentic: packet
                .attr_u32(attr::ACCT_AUTHENTIC)
                .map(|v| value_name(attr::ACCT_AUTHENTIC, v)),
            service_type: packet
                .attr_u32(attr::SERVICE_TYPE)
                .map(|v| value_name(attr::SERVICE_TYPE, v)),
            framed_protocol: packet
                .attr_u32(attr::FRAMED_PROTOCOL)
                .map(|v| value_name(attr::FRAMED_PROTOCOL, v)),
            framed_interface_id: packet
                .attr(attr::FRAMED_INTERFACE_ID)
                .and_then(interface_id),
            connect_info_start,
            connect_info_stop,
            nas_addresses: Vec::new(),
            clamped,
        })
    }

    /// The address a session of `packet` is recorded under, given the NAS
    /// entry it came from (`entry_ip`) and whether an address is one of
    /// the entry's: the packet's NAS-IP-Address when it is, else the
    /// entry's own. The second value is a NAS-IP-Address that is not.
    pub fn nas_ip_of(
        packet: &Packet<'_>,
        entry_ip: IpAddr,
        is_entrys: impl Fn(IpAddr) -> bool,
    ) -> (IpAddr, Option<IpAddr>) {
        match packet.attr_ipv4(attr::NAS_IP_ADDRESS).map(IpAddr::V4) {
            Some(ip) if is_entrys(ip) => (ip, None),
            Some(foreign) => (entry_ip, Some(foreign)),
            None => (entry_ip, None),
        }
    }

    /// The NAS addresses whose open sessions a NAS reboot closes (events
    /// spooled before `nas_addresses` existed name only `nas_ip`).
    pub fn reboot_scope(&self) -> Vec<IpAddr> {
        if self.nas_addresses.is_empty() {
            vec![self.nas_ip]
        } else {
            self.nas_addresses.clone()
        }
    }

    /// Converts an event written before request text was kept in stored
    /// form (spool format 1: lossy UTF-8 with NUL bytes as they came) to
    /// that form, as a new event from the same packet would have it.
    pub fn convert_legacy_strings(&mut self) {
        fn convert(s: &mut String) {
            if let std::borrow::Cow::Owned(stored) = crate::text::stored(s.as_bytes()) {
                *s = stored;
            }
        }
        convert(&mut self.session_id);
        convert(&mut self.username);
        for s in [
            &mut self.nas_port_id,
            &mut self.calling_station_id,
            &mut self.called_station_id,
        ]
        .into_iter()
        .flatten()
        {
            convert(s);
        }
    }

    /// Folds a later event of the same session into this one with the
    /// rules the database upsert applies, so a batch holds one row per
    /// session: counters and times never move backwards, the first Stop
    /// wins, and an Interim after a Stop does not reopen the session.
    pub fn absorb(&mut self, later: &AcctEvent) {
        debug_assert_eq!(self.unique_id, later.unique_id);
        let stopped = self.kind == AcctKind::Stop;
        self.session_time = max_opt(self.session_time, later.session_time);
        self.input_octets = max_opt(self.input_octets, later.input_octets);
        self.output_octets = max_opt(self.output_octets, later.output_octets);
        self.start_time = self.start_time.min(later.start_time);
        self.event_time = self.event_time.max(later.event_time);
        self.framed_ip = later.framed_ip.or(self.framed_ip);
        self.class = self.class.take().or_else(|| later.class.clone());
        self.calling_station_id = self
            .calling_station_id
            .take()
            .or_else(|| later.calling_station_id.clone());
        self.called_station_id = self
            .called_station_id
            .take()
            .or_else(|| later.called_station_id.clone());
        self.framed_ipv6_address = later.framed_ipv6_address.or(self.framed_ipv6_address);
        for (mine, theirs) in [
            (&mut self.framed_ipv6_prefix, &later.framed_ipv6_prefix),
            (
                &mut self.delegated_ipv6_prefix,
                &later.delegated_ipv6_prefix,
            ),
            (&mut self.framed_interface_id, &later.framed_interface_id),
        ] {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
        for (mine, theirs) in [
            (&mut self.acct_authentic, &later.acct_authentic),
            (&mut self.service_type, &later.service_type),
            (&mut self.framed_protocol, &later.framed_protocol),
            (&mut self.connect_info_start, &later.connect_info_start),
            (&mut self.connect_info_stop, &later.connect_info_stop),
        ] {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
        if !stopped && later.kind == AcctKind::Stop {
            self.kind = AcctKind::Stop;
            self.terminate_cause = later.terminate_cause.clone();
        }
    }
}

fn max_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// `acctuniqueid` exactly as FreeRADIUS 3.2's default `acct_unique`
/// policy (raddb/policy.d/accounting, run in `preacct` after
/// `preprocess`) computes it, so that FreeRADIUS and shardius writing one
/// radacct put a session on one row:
///
/// - a Class that starts with `ai:` and 32 hex digits (FreeRADIUS's
///   `insert_acct_class`): hex MD5 of `"<those 32 digits>,<Acct-Session-Id>"`;
/// - else hex MD5 of "User-Name,Acct-Session-Id,NAS-Address,NAS-Identifier,
///   NAS-Port-Id,NAS-Port", where NAS-Address is NAS-IPv6-Address or else
///   NAS-IP-Address, and `preprocess` first supplies the one of the
///   source's family from the source address when the packet lacks it.
///   A missing attribute is empty; values are the raw bytes (FreeRADIUS
///   does not escape them here: checked against FreeRADIUS itself by
///   `tests/it/freeradius.rs`), NAS-Port in decimal.
///
/// Start, Interims and Stop of a session carry the same attributes, so
/// they share the key.
pub fn freeradius_unique_id(packet: &Packet<'_>, source: IpAddr) -> String {
    use std::fmt::Write as _;
    let session_id = packet.attr(attr::ACCT_SESSION_ID).unwrap_or_default();
    let mut md5 = Md5::new();
    if let Some(key) = packet.attr(attr::CLASS).and_then(class_key) {
        md5.update(key);
        md5.update(b",");
        md5.update(session_id);
        return hex::encode(md5.finalize());
    }
    let nas_ipv6 = packet
        .attr(attr::NAS_IPV6_ADDRESS)
        .and_then(|v| <[u8; 16]>::try_from(v).ok())
        .map(Ipv6Addr::from)
        .or(match source {
            IpAddr::V6(v6) => Some(v6),
            IpAddr::V4(_) => None,
        });
    let nas_address = match nas_ipv6 {
        Some(v6) => IpAddr::V6(v6),
        None => packet
            .attr_ipv4(attr::NAS_IP_ADDRESS)
            .map(IpAddr::V4)
            .unwrap_or(source),
    };
    md5.update(packet.attr(attr::USER_NAME).unwrap_or_default());
    md5.update(b",");
    md5.update(session_id);
    md5.update(b",");
    // Text into the digest without a String per packet.
    let _ = write!(Md5Text(&mut md5), "{nas_address}");
    md5.update(b",");
    md5.update(packet.attr(attr::NAS_IDENTIFIER).unwrap_or_default());
    md5.update(b",");
    md5.update(packet.attr(attr::NAS_PORT_ID).unwrap_or_default());
    md5.update(b",");
    if let Some(port) = packet.attr_u32(attr::NAS_PORT) {
        let _ = write!(Md5Text(&mut md5), "{port}");
    }
    hex::encode(md5.finalize())
}

/// Feeds formatted text to a digest.
struct Md5Text<'a>(&'a mut Md5);

impl std::fmt::Write for Md5Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// The 32 hex digits of a Class FreeRADIUS's `insert_acct_class` made
/// (`ai:` then `[0-9a-f]{32}`, matched without regard to case).
fn class_key(class: &[u8]) -> Option<&[u8]> {
    let key = class.strip_prefix(b"ai:")?.get(..32)?;
    key.iter().all(u8::is_ascii_hexdigit).then_some(key)
}

/// The session key of shardius up to schema version 8: hex MD5 over NAS-IP-Address
/// (as text), and the raw bytes of Acct-Session-Id, User-Name and
/// NAS-Port-Id, each followed by a NUL. Kept so that sessions open across
/// the upgrade continue on their rows (see [`AcctEvent::legacy_id`]).
pub fn legacy_unique_id(
    nas_ip: &IpAddr,
    session_id: &[u8],
    username: &[u8],
    nas_port_id: Option<&[u8]>,
) -> String {
    use std::fmt::Write as _;
    let mut md5 = Md5::new();
    let _ = write!(Md5Text(&mut md5), "{nas_ip}");
    md5.update([0]);
    for part in [session_id, username, nas_port_id.unwrap_or_default()] {
        md5.update(part);
        md5.update([0]);
    }
    hex::encode(md5.finalize())
}

/// An enumerated value by the name FreeRADIUS's dictionaries give it
/// (the first name defined for the number, which is the one FreeRADIUS
/// prints), or the number in decimal when it has none, as FreeRADIUS
/// prints an unnamed value.
pub fn value_name(attribute: u8, v: u32) -> String {
    const NAS_PORT_TYPE: &[&str] = &[
        "Async",
        "Sync",
        "ISDN",
        "ISDN-V120",
        "ISDN-V110",
        "Virtual",
        "PIAFS",
        "HDLC-Clear-Channel",
        "X.25",
        "X.75",
        "G.3-Fax",
        "SDSL",
        "ADSL-CAP",
        "ADSL-DMT",
        "IDSL",
        "Ethernet",
        "xDSL",
        "Cable",
        "Wireless-Other",
        "Wireless-802.11",
        "Token-Ring",
        "FDDI",
        "Wireless-CDMA2000",
        "Wireless-UMTS",
        "Wireless-1X-EV",
        "IAPP",
        "FTTP",
        "Wireless-802.16",
        "Wireless-802.20",
        "Wireless-802.22",
        "PPPoA",
        "PPPoEoA",
        "PPPoEoE",
        "PPPoEoVLAN",
        "PPPoEoQinQ",
        "xPON",
        "Wireless-XGP",
    ];
    const SERVICE_TYPE: &[&str] = &[
        "",
        "Login-User",
        "Framed-User",
        "Callback-Login-User",
        "Callback-Framed-User",
        "Outbound-User",
        "Administrative-User",
        "NAS-Prompt-User",
        "Authenticate-Only",
        "Callback-NAS-Prompt",
        "Call-Check",
        "Callback-Administrative",
        "Voice",
        "Fax",
        "Modem-Relay",
        "IAPP-Register",
        "IAPP-AP-Check",
        "Authorize-Only",
        "Framed-Management",
    ];
    const FRAMED_PROTOCOL: &[&str] = &[
        "",
        "PPP",
        "SLIP",
        "ARAP",
        "Gandalf-SLML",
        "Xylogics-IPX-SLIP",
        "X.75-Synchronous",
        "GPRS-PDP-Context",
        "",
        "PPTP",
    ];
    const ACCT_AUTHENTIC: &[&str] = &["", "RADIUS", "Local", "Remote", "Diameter"];
    const TERMINATE_CAUSE: &[&str] = &[
        "",
        "User-Request",
        "Lost-Carrier",
        "Lost-Service",
        "Idle-Timeout",
        "Session-Timeout",
        "Admin-Reset",
        "Admin-Reboot",
        "Port-Error",
        "NAS-Error",
        "NAS-Request",
        "NAS-Reboot",
        "Port-Unneeded",
        "Port-Preempted",
        "Port-Suspended",
        "Service-Unavailable",
        "Callback",
        "User-Error",
        "Host-Request",
        "Supplicant-Restart",
        "Reauthentication-Failure",
        "Port-Reinit",
        "Port-Disabled",
    ];
    let names = match attribute {
        attr::NAS_PORT_TYPE => NAS_PORT_TYPE,
        attr::SERVICE_TYPE => SERVICE_TYPE,
        attr::FRAMED_PROTOCOL => FRAMED_PROTOCOL,
        attr::ACCT_AUTHENTIC => ACCT_AUTHENTIC,
        attr::ACCT_TERMINATE_CAUSE => TERMINATE_CAUSE,
        _ => &[],
    };
    match names.get(v as usize) {
        Some(name) if !name.is_empty() => (*name).to_string(),
        _ => v.to_string(),
    }
}

/// A Framed-Interface-Id (8 octets) as FreeRADIUS prints an `ifid`: four
/// 16-bit groups in hex without leading zeros (`0:0:0:1`, checked against
/// FreeRADIUS by `tests/it/freeradius.rs`).
fn interface_id(v: &[u8]) -> Option<String> {
    let v = <[u8; 8]>::try_from(v).ok()?;
    let group = |i: usize| u16::from_be_bytes([v[i], v[i + 1]]);
    Some(format!(
        "{:x}:{:x}:{:x}:{:x}",
        group(0),
        group(2),
        group(4),
        group(6)
    ))
}

/// A session event at `secs` into a session that started at a fixed time,
/// for the unit tests of the accounting modules.
#[cfg(test)]
pub(crate) fn test_event(kind: AcctKind, session_id: &str, secs: u32, octets: u64) -> AcctEvent {
    let nas_ip = "10.0.0.1".parse().expect("literal");
    let start = DateTime::from_timestamp(1_800_000_000, 0).expect("literal");
    AcctEvent {
        kind,
        unique_id: legacy_unique_id(&nas_ip, session_id.as_bytes(), b"u", None),
        legacy_id: None,
        session_id: session_id.into(),
        username: "u".into(),
        nas_ip,
        nas_port_id: None,
        nas_port_type: None,
        event_time: start + Duration::seconds(i64::from(secs)),
        start_time: start,
        session_time: Some(secs),
        input_octets: Some(octets),
        output_octets: Some(octets),
        framed_ip: None,
        framed_ipv6_address: None,
        framed_ipv6_prefix: None,
        delegated_ipv6_prefix: None,
        calling_station_id: None,
        called_station_id: None,
        terminate_cause: None,
        class: None,
        acct_authentic: None,
        service_type: None,
        framed_protocol: None,
        framed_interface_id: None,
        connect_info_start: None,
        connect_info_stop: None,
        nas_addresses: Vec::new(),
        clamped: false,
    }
}

/// An RFC 3162 §2.3 prefix value (reserved octet, length, up to 16
/// octets of prefix) as `addr/len`, the bits past the length cleared;
/// None when malformed (length over 128, or fewer octets than it needs).
pub fn ipv6_prefix(value: &[u8]) -> Option<String> {
    let (&len, rest) = value.get(1..)?.split_first()?;
    if len > 128 || rest.len() > 16 || rest.len() < usize::from(len).div_ceil(8) {
        return None;
    }
    let mut octets = [0u8; 16];
    octets[..rest.len()].copy_from_slice(rest);
    let bits = u128::from_be_bytes(octets);
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    };
    Some(format!("{}/{len}", Ipv6Addr::from(bits & mask)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_prefixes_are_read_as_rfc_3162_says_and_bad_ones_ignored() {
        assert_eq!(
            ipv6_prefix(&[0, 56, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 1]).as_deref(),
            Some("2001:db8:0:100::/56")
        );
        assert_eq!(
            ipv6_prefix(&[0, 64, 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0xff]).as_deref(),
            Some("2001:db8:1::/64")
        );
        assert_eq!(ipv6_prefix(&[0, 0]).as_deref(), Some("::/0"));
        for bad in [
            &[][..],
            &[0],
            &[0, 129],
            &[0, 64, 0x20],
            &[
                0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
            ],
        ] {
            assert_eq!(ipv6_prefix(bad), None, "{bad:?}");
        }
    }
    use crate::proto::{Code, PacketWriter, Secret};

    fn packet(status: u32, session_time: u32, input: u32, giga: u32, delay: u32) -> Vec<u8> {
        let mut buf = [0u8; 4096];
        let mut w = PacketWriter::new(&mut buf, Code::ACCOUNTING_REQUEST, 1, &[0; 16]);
        w.attr_u32(attr::ACCT_STATUS_TYPE, status).unwrap();
        w.attr(attr::ACCT_SESSION_ID, b"81a00003").unwrap();
        w.attr(attr::USER_NAME, b"alice").unwrap();
        w.attr(attr::NAS_PORT_ID, b"ether1").unwrap();
        w.attr_u32(attr::ACCT_SESSION_TIME, session_time).unwrap();
        w.attr_u32(attr::ACCT_INPUT_OCTETS, input).unwrap();
        w.attr_u32(attr::ACCT_INPUT_GIGAWORDS, giga).unwrap();
        w.attr_u32(attr::ACCT_DELAY_TIME, delay).unwrap();
        w.attr_u32(attr::ACCT_TERMINATE_CAUSE, 1).unwrap();
        w.finish_request(&Secret::new(b"s")).to_vec()
    }

    fn event(status: u32, session_time: u32, input: u32, giga: u32) -> AcctEvent {
        let bytes = packet(status, session_time, input, giga, 2);
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        AcctEvent::from_packet(
            &Packet::parse(&bytes).unwrap(),
            "10.0.0.1".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            now,
        )
        .unwrap()
    }

    #[test]
    fn gigawords_make_64_bit_counters_and_delay_moves_the_event_back() {
        let e = event(acct_status::INTERIM_UPDATE, 60, 5, 2);
        assert_eq!(e.input_octets, Some(5 + (2 << 32)));
        assert_eq!(e.event_time.timestamp(), 1_800_000_000 - 2);
        assert_eq!(e.start_time.timestamp(), 1_800_000_000 - 62);
        assert_eq!(e.session_id, "81a00003");
        assert_eq!(e.nas_ip, "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn start_interim_and_stop_of_a_session_share_the_unique_id() {
        let ids: Vec<String> = [1, 3, 2]
            .iter()
            .map(|s| event(*s, 0, 0, 0).unique_id)
            .collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(ids[0].len(), 32);
        assert_ne!(
            legacy_unique_id(&"10.0.0.1".parse().unwrap(), b"a", b"bc", None),
            legacy_unique_id(&"10.0.0.1".parse().unwrap(), b"ab", b"c", None)
        );
    }

    #[test]
    fn absorbing_keeps_the_highest_counters_and_the_first_stop() {
        let mut a = event(acct_status::INTERIM_UPDATE, 120, 900, 0);
        a.absorb(&event(acct_status::INTERIM_UPDATE, 60, 100, 0));
        assert_eq!(
            (a.kind, a.input_octets, a.session_time),
            (AcctKind::Interim, Some(900), Some(120))
        );
        let mut stop = event(acct_status::STOP, 180, 1000, 0);
        stop.terminate_cause = Some("Lost-Carrier".into());
        a.absorb(&stop);
        assert_eq!(a.kind, AcctKind::Stop);
        assert_eq!(a.terminate_cause.as_deref(), Some("Lost-Carrier"));
        // A late interim does not reopen it; a duplicate stop changes nothing.
        a.absorb(&event(acct_status::INTERIM_UPDATE, 150, 950, 0));
        a.absorb(&event(acct_status::STOP, 180, 1000, 0));
        assert_eq!(
            (a.kind, a.input_octets, a.terminate_cause.as_deref()),
            (AcctKind::Stop, Some(1000), Some("Lost-Carrier"))
        );
    }

    #[test]
    fn accounting_on_and_off_are_nas_reboots_and_unknown_types_are_refused() {
        assert_eq!(
            event(acct_status::ACCOUNTING_ON, 0, 0, 0).kind,
            AcctKind::NasReboot
        );
        assert_eq!(
            event(acct_status::ACCOUNTING_OFF, 0, 0, 0).kind,
            AcctKind::NasReboot
        );
        let bytes = packet(15, 0, 0, 0, 0);
        let err = AcctEvent::from_packet(
            &Packet::parse(&bytes).unwrap(),
            "10.0.0.1".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            Utc::now(),
        );
        assert_eq!(err, Err(AcctParseError::UnsupportedStatusType(15)));
    }

    fn event_with(session_id: &[u8], user: &[u8], giga: u32) -> AcctEvent {
        let mut buf = [0u8; 4096];
        let mut w = PacketWriter::new(&mut buf, Code::ACCOUNTING_REQUEST, 1, &[0; 16]);
        w.attr_u32(attr::ACCT_STATUS_TYPE, acct_status::INTERIM_UPDATE)
            .unwrap();
        w.attr(attr::ACCT_SESSION_ID, session_id).unwrap();
        w.attr(attr::USER_NAME, user).unwrap();
        w.attr_u32(attr::ACCT_INPUT_OCTETS, 7).unwrap();
        w.attr_u32(attr::ACCT_INPUT_GIGAWORDS, giga).unwrap();
        let bytes = w.finish_request(&Secret::new(b"s")).to_vec();
        AcctEvent::from_packet(
            &Packet::parse(&bytes).unwrap(),
            "10.0.0.1".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn nul_and_non_utf8_ids_are_stored_escaped_and_keyed_on_their_raw_bytes() {
        let nul = event_with(b"81a\x0000003", b"al\0ice", 0);
        assert_eq!(nul.session_id, "81a\\x0000003");
        assert_eq!(nul.username, "al\\x00ice");
        let (ff, fe) = (
            event_with(b"id\xff", b"u", 0),
            event_with(b"id\xfe", b"u", 0),
        );
        assert_eq!(
            (ff.session_id.as_str(), fe.session_id.as_str()),
            ("id\\xff", "id\\xfe")
        );
        assert_ne!(ff.unique_id, fe.unique_id, "two sessions must not merge");
        assert_eq!(&*crate::text::unstored(&ff.session_id), b"id\xff");
        // Valid UTF-8 keys exactly as before the raw-byte change.
        assert_eq!(
            event_with(b"81a00003", b"alice", 0).legacy_id.unwrap(),
            legacy_unique_id(&"10.0.0.1".parse().unwrap(), b"81a00003", b"alice", None)
        );
    }

    #[test]
    fn counters_past_a_signed_64_bit_column_are_clamped_and_flagged() {
        let e = event_with(b"s", b"u", u32::MAX);
        assert_eq!(e.input_octets, Some(MAX_OCTETS));
        assert!(e.clamped);
        let fine = event_with(b"s", b"u", (1 << 31) - 1);
        assert_eq!(fine.input_octets, Some(((1u64 << 31) - 1) << 32 | 7));
        assert!(!fine.clamped);
    }

    fn key_of(attrs: &[(u8, &[u8])], source: &str) -> String {
        let mut buf = [0u8; 4096];
        let mut w = PacketWriter::new(&mut buf, Code::ACCOUNTING_REQUEST, 1, &[0; 16]);
        for (ty, v) in attrs {
            w.attr(*ty, v).unwrap();
        }
        let bytes = w.finish_request(&Secret::new(b"s")).to_vec();
        freeradius_unique_id(&Packet::parse(&bytes).unwrap(), source.parse().unwrap())
    }

    fn md5_of(text: &[u8]) -> String {
        hex::encode(Md5::digest(text))
    }

    #[test]
    fn the_key_is_freeradius_acct_unique_with_preprocess_supplying_the_nas_address() {
        let port = 7u32.to_be_bytes();
        let full: Vec<(u8, &[u8])> = vec![
            (attr::USER_NAME, b"alice"),
            (attr::ACCT_SESSION_ID, b"81a00003"),
            (attr::NAS_IP_ADDRESS, &[10, 0, 0, 9]),
            (attr::NAS_IDENTIFIER, b"bng-1"),
            (attr::NAS_PORT_ID, b"ether1"),
            (attr::NAS_PORT, &port),
        ];
        assert_eq!(
            key_of(&full, "192.0.2.1"),
            md5_of(b"alice,81a00003,10.0.0.9,bng-1,ether1,7")
        );
        // Missing attributes are empty; no NAS-IP-Address: the source's.
        let bare: Vec<(u8, &[u8])> = vec![(attr::ACCT_SESSION_ID, b"s1")];
        assert_eq!(key_of(&bare, "192.0.2.1"), md5_of(b",s1,192.0.2.1,,,"));
        // NAS-IPv6-Address wins; an IPv6 source is supplied as it.
        let mut v6 = bare.clone();
        let addr = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        v6.push((attr::NAS_IPV6_ADDRESS, &addr));
        v6.push((attr::NAS_IP_ADDRESS, &[10, 0, 0, 9]));
        assert_eq!(key_of(&v6, "192.0.2.1"), md5_of(b",s1,2001:db8::1,,,"));
        let mut v4 = bare.clone();
        v4.push((attr::NAS_IP_ADDRESS, &[10, 0, 0, 9]));
        assert_eq!(key_of(&v4, "2001:db8::7"), md5_of(b",s1,2001:db8::7,,,"));
        // Raw bytes, not escaped.
        let odd: Vec<(u8, &[u8])> = vec![
            (attr::USER_NAME, b"a\xff,\\"),
            (attr::ACCT_SESSION_ID, b"s\x00"),
        ];
        assert_eq!(
            key_of(&odd, "192.0.2.1"),
            md5_of(b"a\xff,\\,s\x00,192.0.2.1,,,")
        );
    }

    #[test]
    fn an_insert_acct_class_cookie_keys_the_session_by_class_and_session_id() {
        let hexkey = b"0123456789abcdefABCDEF0123456789";
        let mut class = b"ai:".to_vec();
        class.extend_from_slice(hexkey);
        class.extend_from_slice(b"-trailing");
        let with = |class: &[u8]| {
            key_of(
                &[
                    (attr::USER_NAME, b"alice"),
                    (attr::ACCT_SESSION_ID, b"s1"),
                    (attr::CLASS, class),
                ],
                "192.0.2.1",
            )
        };
        assert_eq!(with(&class), md5_of(b"0123456789abcdefABCDEF0123456789,s1"));
        // Not a cookie (short, not hex, other prefix, shardius's own): the
        // attribute formula.
        let plain = md5_of(b"alice,s1,192.0.2.1,,,");
        for other in [
            &b"ai:0123"[..],
            b"ai:0123456789abcdefABCDEF012345678g",
            b"AI:0123456789abcdefABCDEF0123456789",
            b"SHD1\0\0\0\0\0\0\0\x01abcd",
        ] {
            assert_eq!(with(other), plain, "{other:?}");
        }
    }

    #[test]
    fn a_believable_event_timestamp_is_the_event_time_and_a_wild_one_is_not() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |ts: Option<u32>| {
            let mut buf = [0u8; 4096];
            let mut w = PacketWriter::new(&mut buf, Code::ACCOUNTING_REQUEST, 1, &[0; 16]);
            w.attr_u32(attr::ACCT_STATUS_TYPE, acct_status::INTERIM_UPDATE)
                .unwrap();
            w.attr(attr::ACCT_SESSION_ID, b"s").unwrap();
            w.attr_u32(attr::ACCT_DELAY_TIME, 5).unwrap();
            if let Some(ts) = ts {
                w.attr_u32(attr::EVENT_TIMESTAMP, ts).unwrap();
            }
            let bytes = w.finish_request(&Secret::new(b"s")).to_vec();
            let ip = "10.0.0.1".parse().unwrap();
            AcctEvent::from_packet(&Packet::parse(&bytes).unwrap(), ip, ip, now)
                .unwrap()
                .event_time
                .timestamp()
        };
        // Within a day: taken as sent (Acct-Delay-Time is not applied to it).
        assert_eq!(at(Some(1_800_000_000 - 3_600)), 1_800_000_000 - 3_600);
        assert_eq!(at(Some(1_800_000_000 + 60)), 1_800_000_060);
        // None, a clockless router's 1970, 0, the far future: arrival - delay.
        for wild in [
            None,
            Some(0),
            Some(3_600),
            Some(u32::MAX),
            Some(1_800_000_000 + 86_401),
        ] {
            assert_eq!(at(wild), 1_800_000_000 - 5, "{wild:?}");
        }
    }

    #[test]
    fn the_names_radacct_gets_are_the_builtin_dictionarys() {
        // value_name keeps its tables for the packet path (an index, no
        // lookup); the dictionary is the other copy: they must agree.
        let dictionary = crate::proto::dictionary::builtin();
        for (attribute, name) in [
            (attr::NAS_PORT_TYPE, "NAS-Port-Type"),
            (attr::SERVICE_TYPE, "Service-Type"),
            (attr::FRAMED_PROTOCOL, "Framed-Protocol"),
            (attr::ACCT_AUTHENTIC, "Acct-Authentic"),
            (attr::ACCT_TERMINATE_CAUSE, "Acct-Terminate-Cause"),
        ] {
            for n in 0..64u32 {
                let value = value_name(attribute, n);
                if value == n.to_string() {
                    continue;
                }
                let encoded = dictionary.encode(name, &value).unwrap();
                assert_eq!(&*encoded.value, n.to_be_bytes(), "{name} {value}");
            }
        }
    }
}
