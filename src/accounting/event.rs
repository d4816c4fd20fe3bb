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
    /// hex MD5 over the raw bytes of NAS-IP-Address, Acct-Session-Id,
    /// User-Name and NAS-Port-Id (see [`unique_id`]).
    pub unique_id: String,
    /// Byte for byte as the NAS sent it, in stored form (CoA must echo it exactly).
    pub session_id: String,
    pub username: String,
    pub nas_ip: IpAddr,
    pub nas_port_id: Option<String>,
    pub nas_port_type: Option<String>,
    /// When the event happened: arrival minus Acct-Delay-Time.
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
    pub class: Option<String>,
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
    pub fn from_packet(
        packet: &Packet<'_>,
        nas_ip: IpAddr,
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
        let event_time = now - Duration::seconds(i64::from(delay));
        let session_time = packet.attr_u32(attr::ACCT_SESSION_TIME);
        let start_time = match kind {
            AcctKind::Start => event_time,
            _ => event_time - Duration::seconds(i64::from(session_time.unwrap_or(0))),
        };
        Ok(AcctEvent {
            unique_id: unique_id(&nas_ip, raw_session_id, raw_username, raw_port_id),
            kind,
            session_id: crate::text::stored(raw_session_id).into_owned(),
            username: crate::text::stored(raw_username).into_owned(),
            nas_ip,
            nas_port_id: raw_port_id.map(|v| crate::text::stored(v).into_owned()),
            nas_port_type: packet.attr_u32(attr::NAS_PORT_TYPE).map(port_type_name),
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
                .map(terminate_cause_name),
            class: packet.attr(attr::CLASS).map(hex::encode),
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

/// The stable session key: hex MD5 over NAS-IP-Address (as text), and the
/// raw bytes of Acct-Session-Id, User-Name and NAS-Port-Id, each followed
/// by a NUL. Start, Interims and Stop of a session map to one row; two
/// sessions whose ids differ in any byte (even one that is not UTF-8) do not.
pub fn unique_id(
    nas_ip: &IpAddr,
    session_id: &[u8],
    username: &[u8],
    nas_port_id: Option<&[u8]>,
) -> String {
    let mut md5 = Md5::new();
    for part in [
        nas_ip.to_string().as_bytes(),
        session_id,
        username,
        nas_port_id.unwrap_or_default(),
    ] {
        md5.update(part);
        md5.update([0]);
    }
    hex::encode(md5.finalize())
}

/// NAS-Port-Type names as FreeRADIUS stores them (RFC 2865 §5.41).
fn port_type_name(v: u32) -> String {
    match v {
        0 => "Async".into(),
        1 => "Sync".into(),
        2 => "ISDN".into(),
        5 => "Virtual".into(),
        15 => "Ethernet".into(),
        19 => "Wireless-802.11".into(),
        other => other.to_string(),
    }
}

/// Acct-Terminate-Cause names (RFC 2866 §5.10).
fn terminate_cause_name(v: u32) -> String {
    const NAMES: [&str; 19] = [
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
    ];
    v.checked_sub(1)
        .and_then(|i| NAMES.get(i as usize))
        .map_or_else(|| v.to_string(), |n| (*n).to_string())
}

/// A session event at `secs` into a session that started at a fixed time,
/// for the unit tests of the accounting modules.
#[cfg(test)]
pub(crate) fn test_event(kind: AcctKind, session_id: &str, secs: u32, octets: u64) -> AcctEvent {
    let nas_ip = "10.0.0.1".parse().expect("literal");
    let start = DateTime::from_timestamp(1_800_000_000, 0).expect("literal");
    AcctEvent {
        kind,
        unique_id: unique_id(&nas_ip, session_id.as_bytes(), b"u", None),
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
            unique_id(&"10.0.0.1".parse().unwrap(), b"a", b"bc", None),
            unique_id(&"10.0.0.1".parse().unwrap(), b"ab", b"c", None)
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
            event_with(b"81a00003", b"alice", 0).unique_id,
            unique_id(&"10.0.0.1".parse().unwrap(), b"81a00003", b"alice", None)
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
}
