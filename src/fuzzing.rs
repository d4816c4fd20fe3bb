//! Entry points shared by the fuzz targets (`fuzz/`) and the property
//! tests, so both check the same properties.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::engine::{Context, Engine, Now, Port};
use crate::proto::authenticator::{
    check_message_authenticator, verify_request_authenticator, verify_response,
};
use crate::proto::dict::attr;
use crate::proto::password::{unhide_user_password, MAX_PASSWORD_LEN};
use crate::proto::{AuthenticatorKind, Code, Packet, PacketWriter, Secret, MAX_PACKET_LEN};

/// Parses `data` and walks everything the server would look at; when it
/// parses, re-encodes its attributes and checks decode → encode → decode
/// gives the same packet. Panics only if a property is broken.
pub fn parse_walk_round_trip(data: &[u8]) {
    let Ok(packet) = Packet::parse(data) else {
        return;
    };
    let secret = Secret::new(b"fuzz");
    for a in packet.attributes() {
        if let Some(vsa) = a.vendor_specific() {
            vsa.attributes().for_each(drop);
        }
    }
    let _ = crate::auth::Method::of(&packet);
    let _ = check_message_authenticator(&packet, &secret, Some(&[0; 16]));
    let _ = verify_request_authenticator(&packet, &secret);
    let _ = verify_response(&packet, &[0; 16], &secret);
    if let Some(hidden) = packet.attr(attr::USER_PASSWORD) {
        let mut out = [0u8; MAX_PASSWORD_LEN];
        let _ = unhide_user_password(hidden, &secret, packet.authenticator(), &mut out);
    }

    let mut buf = [0u8; crate::proto::MAX_PACKET_LEN];
    let mut w = PacketWriter::new(
        &mut buf,
        packet.code(),
        packet.identifier(),
        packet.authenticator(),
    );
    for a in packet.attributes() {
        w.attr(a.ty, a.value)
            .expect("a parsed attribute re-encodes");
    }
    let encoded = w.finish_unsigned();
    assert_eq!(
        encoded,
        packet.as_bytes(),
        "decode -> encode is the identity"
    );
    let again = Packet::parse(encoded).expect("re-encoded packet parses");
    assert!(again.attributes().eq(packet.attributes()));
}

/// The NAS every fuzzed datagram comes from, and its secret.
pub const FUZZ_NAS: &str = "127.0.0.1";
pub const FUZZ_SECRET: &[u8] = b"fuzz-secret";

fn fuzz_key() -> &'static crate::keyfile::PasswordKey {
    static KEY: OnceLock<crate::keyfile::PasswordKey> = OnceLock::new();
    KEY.get_or_init(|| crate::keyfile::PasswordKey::from_master(&[7; 32]))
}

/// A snapshot with one NAS of each type and policy, a service with FUP
/// tiers and a pool, and subscribers `alice` / `s3cret` and `bound`
/// (MAC-bound, static IP, radreply rows).
pub fn fuzz_snapshot() -> crate::policy::Snapshot {
    use crate::model::{
        MaPolicy, NasRecord, NasType, RadreplyRecord, ServiceRecord, SubscriberRecord,
    };
    let key = fuzz_key();
    let secret = std::str::from_utf8(FUZZ_SECRET).expect("ASCII");
    let mut snapshot = crate::policy::Snapshot::default();
    let mut generic = NasRecord::new(
        "g",
        "127.0.0.2".parse().expect("literal"),
        secret,
        NasType::Generic,
    );
    generic.require_message_authenticator = MaPolicy::No;
    generic.nas_ip_addresses = vec!["10.9.9.9".parse().expect("literal")];
    let mut strict = NasRecord::new(
        "s",
        "127.0.0.3".parse().expect("literal"),
        secret,
        NasType::Mikrotik,
    );
    strict.require_message_authenticator = MaPolicy::Yes;
    snapshot.set_nas(&[
        NasRecord::new(
            "m",
            FUZZ_NAS.parse().expect("literal"),
            secret,
            NasType::Mikrotik,
        ),
        generic,
        strict,
    ]);
    snapshot.set_services(&[ServiceRecord {
        id: 1,
        name: "10M".into(),
        download_kbps: 10_000,
        upload_kbps: 2_000,
        pool_name: Some("pool".into()),
        idle_timeout: Some(600),
        ..ServiceRecord::with_speeds(0, "", 0, 0)
    }]);
    let subscriber = |id, name: &str, password: &[u8]| SubscriberRecord {
        id,
        username: name.into(),
        password_enc: key.encrypt(password),
        service_id: Some(1),
        is_active: true,
        expiry_date: None,
        mac_address: None,
        static_ip: None,
        updated_at: 0,
        password_kind: Default::default(),
        max_sessions: None,
    };
    let mut bound = subscriber(2, "bound", b"pw");
    bound.mac_address = Some("AA:BB:CC:DD:EE:FF".into());
    bound.static_ip = Some("100.64.0.2".parse().expect("literal"));
    snapshot.apply_subscribers(&[subscriber(1, "alice", b"s3cret"), bound], &[]);
    snapshot.set_radreply(
        &[RadreplyRecord {
            username: "bound".into(),
            attribute: "Mikrotik-Address-List".into(),
            op: ":=".into(),
            value: "vip".into(),
        }],
        |_| {},
    );
    snapshot
}

/// `datagram` signed again with `secret` (its Request Authenticator for
/// accounting, its Message-Authenticator when it has one), as an attacker
/// who knows the secret would send it: the checks behind the signature
/// are reached too. Only requests are re-signed.
pub fn resign(datagram: &[u8], secret: &Secret) -> Option<Vec<u8>> {
    let p = Packet::parse(datagram).ok()?;
    if p.code().authenticator_kind() == AuthenticatorKind::Response {
        return None;
    }
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut w = PacketWriter::new(&mut buf, p.code(), p.identifier(), p.authenticator());
    if p.message_authenticator().is_some() {
        w.message_authenticator().ok()?;
    }
    for a in p
        .attributes()
        .filter(|a| a.ty != attr::MESSAGE_AUTHENTICATOR)
    {
        w.attr(a.ty, a.value).ok()?;
    }
    Some(w.finish_request(secret).to_vec())
}

/// The whole request path for one datagram: `control` picks the port,
/// the source (a registered NAS or a stranger) and whether to re-sign;
/// then `Engine::handle` with a real snapshot, twice (the second copy is
/// a retransmission). Panics only if a property is broken: every reply
/// parses, is a response to the request and verifies with the secret; an
/// accounting event's text is storable and reads back as the request's.
/// Returns the code of the first reply, if any.
pub fn engine_handle(control: u8, datagram: &[u8]) -> Option<Code> {
    let snapshot = fuzz_snapshot();
    let secret = Secret::new(FUZZ_SECRET);
    let resigned = if control & 0b100 != 0 {
        resign(datagram, &secret)
    } else {
        None
    };
    let datagram = resigned.as_deref().unwrap_or(datagram);
    let port = if control & 1 == 0 {
        Port::Auth
    } else {
        Port::Acct
    };
    let source = match (control >> 1) & 0b11 {
        0 | 1 => FUZZ_NAS,
        2 => "127.0.0.2",
        _ => "192.0.2.7",
    };
    let src: SocketAddr = format!("{source}:40000").parse().expect("literal");
    let t0 = Instant::now();
    let mut engine = Engine::new(Duration::from_secs(30), 64, u64::from(control));
    let mut first = None;
    for round in 0..2u64 {
        let now = Now {
            mono: t0 + Duration::from_secs(round),
            local: chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
                .and_then(|d| d.and_hms_opt(12, 0, 0))
                .expect("literal"),
            utc: chrono::DateTime::from_timestamp(1_795_000_000, 0).expect("literal"),
        };
        let ctx = Context {
            snapshot: &snapshot,
            key: fuzz_key(),
            now,
            committed: u64::MAX,
            pools: &crate::pool::NoPools,
            sessions: &crate::policy::sessions::NoLimits,
        };
        let mut out = [0u8; MAX_PACKET_LEN];
        let handled = engine.handle(port, src, datagram, &ctx, &mut out);
        if let Some(len) = handled.reply_len {
            let request = Packet::parse(datagram).expect("a datagram that got a reply parses");
            let reply = Packet::parse(&out[..len]).expect("a reply parses");
            assert_eq!(reply.identifier(), request.identifier());
            assert!(
                verify_response(&reply, request.authenticator(), &secret),
                "a reply verifies with the NAS secret"
            );
            assert!(matches!(
                reply.code(),
                Code::ACCESS_ACCEPT | Code::ACCESS_REJECT | Code::ACCOUNTING_RESPONSE
            ));
            if round == 0 {
                first = Some(reply.code());
            }
        }
        if let Some(queued) = engine.take_accounting() {
            check_event(&queued.event);
        }
    }
    first
}

/// An Accounting-Request as an event: never panics, and the event's text
/// reads back as the request's bytes and survives the spool's JSON.
pub fn accounting_event(data: &[u8]) {
    let Ok(packet) = Packet::parse(data) else {
        return;
    };
    let now = chrono::DateTime::from_timestamp(1_795_000_000, 0).expect("literal");
    let nas = FUZZ_NAS.parse().expect("literal");
    let (nas_ip, _) = crate::accounting::AcctEvent::nas_ip_of(&packet, nas, |ip| ip == nas);
    let Ok(event) = crate::accounting::AcctEvent::from_packet(&packet, nas_ip, nas, now) else {
        return;
    };
    check_event(&event);
    if let Some(user) = packet.attr(attr::USER_NAME) {
        assert_eq!(&*crate::text::unstored(&event.username), user);
    }
    if let Some(id) = packet.attr(attr::ACCT_SESSION_ID) {
        assert_eq!(&*crate::text::unstored(&event.session_id), id);
    }
    let mut folded = event.clone();
    folded.absorb(&event);
    assert_eq!(folded.input_octets, event.input_octets);
}

fn check_event(event: &crate::accounting::AcctEvent) {
    for text in [&event.session_id, &event.username] {
        assert!(!text.contains('\0'), "no NUL reaches a text column");
    }
    assert!(event.input_octets.unwrap_or(0) <= crate::accounting::event::MAX_OCTETS);
    assert!(event.output_octets.unwrap_or(0) <= crate::accounting::event::MAX_OCTETS);
    let json = serde_json::to_vec(std::slice::from_ref(event)).expect("an event serialises");
    let back: Vec<crate::accounting::AcctEvent> =
        serde_json::from_slice(&json).expect("and reads back");
    assert_eq!(back[0].session_id, event.session_id);
    assert_eq!(back[0].unique_id, event.unique_id);
}

/// A NAS's answer to a Disconnect-Request we sent: never panics; when
/// `resign` is set the answer is signed as a response to our request, so
/// the code and Error-Cause paths are reached.
pub fn coa_answer(resign_it: bool, data: &[u8]) {
    use crate::coa::packet::{build_request, check_answer, Action, Target};
    let secret = Secret::new(FUZZ_SECRET);
    let mut buf = [0u8; MAX_PACKET_LEN];
    let target = Target {
        user_name: b"alice",
        acct_session_id: b"81a00003",
        nas_ip: None,
        framed_ip: None,
    };
    let request = build_request(&mut buf, 7, &secret, &target, &Action::Disconnect, 0)
        .expect("fits")
        .to_vec();
    let mut answer = data.to_vec();
    if resign_it {
        if let Ok(p) = Packet::parse(data) {
            let mut out = [0u8; MAX_PACKET_LEN];
            let mut w = PacketWriter::new(&mut out, p.code(), 7, &[0; 16]);
            let mut ok = true;
            if p.message_authenticator().is_some() {
                ok &= w.message_authenticator().is_ok();
            }
            for a in p
                .attributes()
                .filter(|a| a.ty != attr::MESSAGE_AUTHENTICATOR)
            {
                ok &= w.attr(a.ty, a.value).is_ok();
            }
            if ok {
                let sent = Packet::parse(&request).expect("ours parses");
                answer = w.finish_response(sent.authenticator(), &secret).to_vec();
            }
        }
    }
    if let Ok(a) = check_answer(&answer, &request, &secret) {
        let _ = a.describe();
    }
}

/// A spool file of any bytes: the reader never panics, never loops, and
/// accounts for every byte (records and damaged stretches, in order).
pub fn spool_bytes(data: &[u8]) {
    let items = crate::server::accounting::spool::scan_bytes(data);
    let mut covered = 0u64;
    for item in &items {
        match item {
            Ok(events) => events.iter().for_each(check_event),
            Err((offset, len)) => {
                assert!(*offset >= covered && *len > 0);
                covered = offset + len;
            }
        }
    }
}
