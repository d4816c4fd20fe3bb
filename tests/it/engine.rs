//! The request engine end to end, without sockets: deterministic, with
//! the clock passed in. Every reject reason, the reply attributes per NAS
//! type, duplicate detection and the Message-Authenticator policy.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use shardius::engine::{Context, Counter, DropReason, Engine, Event, Now, Port};
use shardius::keyfile::PasswordKey;
use shardius::nas_client::{self as nas, Credentials, Session};
use shardius::policy::{RejectReason, Snapshot};
use shardius::proto::dict::{attr, mikrotik, ms, vendor};
use shardius::proto::{Code, Packet, PacketWriter, Secret};
use shardius::store::{
    MaPolicy, NasRecord, NasType, RadreplyRecord, ServiceRecord, SubscriberRecord,
};

const SECRET: &[u8] = b"testing123";

struct World {
    snapshot: Snapshot,
    key: PasswordKey,
    engine: Engine,
    t0: Instant,
}

fn nas_record(ip: &str, nas_type: NasType, ma: MaPolicy) -> NasRecord {
    NasRecord {
        require_message_authenticator: ma,
        ..NasRecord::new(
            &format!("nas-{ip}"),
            ip.parse().unwrap(),
            "testing123",
            nas_type,
        )
    }
}

fn subscriber(key: &PasswordKey, id: i64, name: &str, password: &str) -> SubscriberRecord {
    SubscriberRecord {
        id,
        username: name.into(),
        password_enc: key.encrypt(password.as_bytes()),
        service_id: Some(1),
        is_active: true,
        expiry_date: None,
        mac_address: None,
        static_ip: None,
        updated_at: 0,
        password_kind: Default::default(),
        max_sessions: None,
    }
}

fn world() -> World {
    let key = PasswordKey::from_master(&[9; 32]);
    let mut snapshot = Snapshot::default();
    snapshot.set_nas(&[
        nas_record("127.0.0.1", NasType::Mikrotik, MaPolicy::Auto),
        nas_record("127.0.0.2", NasType::Generic, MaPolicy::No),
        nas_record("127.0.0.3", NasType::Mikrotik, MaPolicy::Yes),
    ]);
    snapshot.set_services(&[ServiceRecord {
        id: 1,
        name: "10M".into(),
        download_kbps: 10_000,
        upload_kbps: 2_000,
        pool_name: Some("pppoe-pool".into()),
        filter_id: Some("plan-10M".into()),
        idle_timeout: Some(600),
        ..ServiceRecord::with_speeds(0, "", 0, 0)
    }]);
    let mut disabled = subscriber(&key, 2, "disabled", "pw");
    disabled.is_active = false;
    let mut expired = subscriber(&key, 3, "expired", "pw");
    expired.expiry_date = NaiveDate::from_ymd_opt(2026, 11, 23);
    let mut last_day = subscriber(&key, 4, "lastday", "pw");
    last_day.expiry_date = NaiveDate::from_ymd_opt(2026, 11, 24);
    let mut bound = subscriber(&key, 5, "bound", "pw");
    bound.mac_address = Some("AA:BB:CC:DD:EE:FF".into());
    let mut static_ip = subscriber(&key, 6, "static", "pw");
    static_ip.static_ip = Some(Ipv4Addr::new(100, 64, 0, 6));
    let mut wrong_key = subscriber(&key, 7, "wrongkey", "pw");
    wrong_key.password_enc = PasswordKey::from_master(&[1; 32]).encrypt(b"pw");
    snapshot.apply_subscribers(
        &[
            subscriber(&key, 1, "alice", "s3cret"),
            disabled,
            expired,
            last_day,
            bound,
            static_ip,
            wrong_key,
        ],
        &[],
    );
    snapshot.set_radreply(
        &[RadreplyRecord {
            username: "alice".into(),
            attribute: "Mikrotik-Address-List".into(),
            op: ":=".into(),
            value: "vip".into(),
        }],
        |w| panic!("{w}"),
    );
    World {
        snapshot,
        key,
        engine: Engine::new(Duration::from_secs(30), 1000, 42),
        t0: Instant::now(),
    }
}

impl World {
    fn now(&self, secs: u64) -> Now {
        Now {
            mono: self.t0 + Duration::from_secs(secs),
            local: NaiveDate::from_ymd_opt(2026, 11, 24)
                .unwrap()
                .and_hms_opt(12, 0, 0)
                .unwrap(),
            utc: chrono::DateTime::from_timestamp(1_795_521_600, 0).unwrap(),
        }
    }

    fn send(&mut self, from: &str, request: &[u8], at: u64) -> (Option<Vec<u8>>, Event) {
        self.send_to(Port::Auth, from, request, at)
    }

    fn send_acct(&mut self, from: &str, request: &[u8], at: u64) -> (Option<Vec<u8>>, Event) {
        self.send_to(Port::Acct, from, request, at)
    }

    fn send_to(
        &mut self,
        port: Port,
        from: &str,
        request: &[u8],
        at: u64,
    ) -> (Option<Vec<u8>>, Event) {
        let mut out = [0u8; 4096];
        let now = self.now(at);
        let src: SocketAddr = format!("{from}:40000").parse().unwrap();
        let ctx = Context {
            snapshot: &self.snapshot,
            key: &self.key,
            now,
            committed: 0,
            pools: &shardius::pool::NoPools,
            sessions: &shardius::policy::sessions::NoLimits,
        };
        let h = self.engine.handle(port, src, request, &ctx, &mut out);
        (h.reply_len.map(|n| out[..n].to_vec()), h.event)
    }
}

fn request(
    user: &str,
    creds: &Credentials<'_>,
    session: &Session<'_>,
    id: u8,
) -> (Vec<u8>, [u8; 16]) {
    let auth = [id ^ 0x5A; 16];
    let mut buf = [0u8; 4096];
    let bytes = nas::access_request(
        &mut buf,
        id,
        &auth,
        &Secret::new(SECRET),
        user.as_bytes(),
        creds,
        session,
    )
    .unwrap()
    .to_vec();
    (bytes, auth)
}

fn mschap(password: &[u8]) -> Credentials<'_> {
    Credentials::MsChapV2 {
        ident: 7,
        auth_challenge: [0x11; 16],
        peer_challenge: [0x22; 16],
        password,
    }
}

#[test]
fn an_mschapv2_login_gets_a_verified_accept_with_the_mikrotik_reply() {
    let mut w = world();
    let creds = mschap(b"s3cret");
    let (req, auth) = request("alice", &creds, &Session::default(), 1);
    let (reply, event) = w.send("127.0.0.1", &req, 0);
    assert!(matches!(event, Event::Accepted { .. }), "{event:?}");
    let reply = reply.unwrap();
    let checked =
        nas::check_access_reply(&reply, 1, &auth, &Secret::new(SECRET), b"alice", &creds).unwrap();
    assert_eq!(checked.code, Code::ACCESS_ACCEPT);
    let p = Packet::parse(&reply).unwrap();
    assert!(p.message_authenticator_is_first());
    assert_eq!(
        p.vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT),
        Some(&b"2000k/10000k"[..])
    );
    assert_eq!(p.attr(attr::FRAMED_POOL), Some(&b"pppoe-pool"[..]));
    assert_eq!(p.attr_u32(attr::ACCT_INTERIM_INTERVAL), Some(30));
    assert_eq!(p.attr_u32(attr::IDLE_TIMEOUT), Some(600));
    assert_eq!(p.attr(attr::CLASS).map(|c| &c[..4]), Some(&b"SHD1"[..]));
    assert_eq!(
        p.vendor_attr(vendor::MIKROTIK, mikrotik::ADDRESS_LIST),
        Some(&b"vip"[..])
    );
    assert_eq!(p.attr(attr::SESSION_TIMEOUT), None);
    assert_eq!(w.engine.stats.get(Counter::Accepts), 1);
}

#[test]
fn pap_and_chap_logins_are_accepted() {
    let mut w = world();
    for (id, creds) in [
        (
            2,
            Credentials::Pap {
                password: b"s3cret",
            },
        ),
        (
            3,
            Credentials::Chap {
                ident: 3,
                challenge: [0x33; 16],
                password: b"s3cret",
            },
        ),
    ] {
        let (req, auth) = request("alice", &creds, &Session::default(), id);
        let (reply, event) = w.send("127.0.0.1", &req, 0);
        assert!(
            matches!(event, Event::Accepted { .. }),
            "{creds:?}: {event:?}"
        );
        nas::check_access_reply(
            &reply.unwrap(),
            id,
            &auth,
            &Secret::new(SECRET),
            b"alice",
            &creds,
        )
        .unwrap();
    }
}

#[test]
fn every_reject_reason_gives_an_access_reject() {
    let cases: [(&str, &[u8], RejectReason); 7] = [
        ("nobody", b"pw", RejectReason::UnknownUser),
        ("alice", b"wrong", RejectReason::BadPassword),
        ("disabled", b"pw", RejectReason::Disabled),
        ("expired", b"pw", RejectReason::Expired),
        ("bound", b"pw", RejectReason::MacMismatch),
        ("wrongkey", b"pw", RejectReason::DecryptFailed),
        ("alice", b"", RejectReason::BadPassword),
    ];
    let mut w = world();
    let session = Session {
        calling_station_id: b"11:22:33:44:55:66",
        ..Session::default()
    };
    for (i, (user, password, reason)) in cases.into_iter().enumerate() {
        let creds = Credentials::Pap { password };
        let (req, auth) = request(user, &creds, &session, i as u8);
        let (reply, event) = w.send("127.0.0.1", &req, 0);
        assert_eq!(
            event,
            Event::Rejected {
                method: shardius::auth::Method::Pap,
                reason,
                nas: "127.0.0.1".parse().unwrap(),
            },
            "{user}"
        );
        let r = nas::check_access_reply(
            &reply.unwrap(),
            i as u8,
            &auth,
            &Secret::new(SECRET),
            user.as_bytes(),
            &creds,
        );
        assert_eq!(r.unwrap().code, Code::ACCESS_REJECT, "{user}");
        assert!(w.engine.stats.get(Counter::Reject(reason)) > 0);
    }
}

#[test]
fn the_expiry_date_is_the_last_day_that_authenticates() {
    let mut w = world();
    let creds = Credentials::Pap { password: b"pw" };
    let (req, _) = request("lastday", &creds, &Session::default(), 1);
    assert!(matches!(
        w.send("127.0.0.1", &req, 0).1,
        Event::Accepted { .. }
    ));
}

#[test]
fn a_mac_bound_subscriber_is_accepted_from_its_mac_in_any_notation() {
    let mut w = world();
    let session = Session {
        calling_station_id: b"aa-bb-cc-dd-ee-ff",
        ..Session::default()
    };
    let (req, _) = request("bound", &Credentials::Pap { password: b"pw" }, &session, 1);
    assert!(matches!(
        w.send("127.0.0.1", &req, 0).1,
        Event::Accepted { .. }
    ));
}

#[test]
fn an_mschapv2_reject_carries_ms_chap_error_691() {
    let mut w = world();
    let (req, _) = request("alice", &mschap(b"wrong"), &Session::default(), 1);
    let (reply, _) = w.send("127.0.0.1", &req, 0);
    let reply = reply.unwrap();
    let p = Packet::parse(&reply).unwrap();
    assert_eq!(p.code(), Code::ACCESS_REJECT);
    let err = p.vendor_attr(vendor::MICROSOFT, ms::CHAP_ERROR).unwrap();
    assert_eq!(err[0], 7);
    assert!(err[1..].starts_with(b"E=691 R=0 C="));
}

#[test]
fn a_generic_nas_gets_filter_id_and_a_static_ip_replaces_the_pool() {
    let mut w = world();
    let (req, _) = request(
        "static",
        &Credentials::Pap { password: b"pw" },
        &Session::default(),
        1,
    );
    let (reply, event) = w.send("127.0.0.2", &req, 0);
    assert!(matches!(event, Event::Accepted { .. }));
    let reply = reply.unwrap();
    let p = Packet::parse(&reply).unwrap();
    assert_eq!(p.attr(attr::FILTER_ID), Some(&b"plan-10M"[..]));
    assert_eq!(p.vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT), None);
    assert_eq!(
        p.attr_ipv4(attr::FRAMED_IP_ADDRESS),
        Some(Ipv4Addr::new(100, 64, 0, 6))
    );
    assert_eq!(p.attr(attr::FRAMED_POOL), None);
}

#[test]
fn hard_cut_expiry_sends_the_seconds_left_as_session_timeout() {
    let mut w = world();
    w.snapshot.preferences.expiry_hard_cut = true;
    let (req, _) = request(
        "lastday",
        &Credentials::Pap { password: b"pw" },
        &Session::default(),
        1,
    );
    let reply = w.send("127.0.0.1", &req, 0).0.unwrap();
    // 12:00 on the last day: 12 hours left.
    assert_eq!(
        Packet::parse(&reply)
            .unwrap()
            .attr_u32(attr::SESSION_TIMEOUT),
        Some(12 * 3600)
    );
}

#[test]
fn a_retransmission_gets_the_identical_cached_reply_within_the_window_only() {
    let mut w = world();
    let (req, _) = request("alice", &mschap(b"s3cret"), &Session::default(), 9);
    let first = w.send("127.0.0.1", &req, 0).0.unwrap();
    let (again, event) = w.send("127.0.0.1", &req, 5);
    assert_eq!(event, Event::Duplicate);
    assert_eq!(again.unwrap(), first);
    // After the window the request is evaluated again: new MPPE salt, new bytes.
    let (later, event) = w.send("127.0.0.1", &req, 31);
    assert!(matches!(event, Event::Accepted { .. }));
    assert_ne!(later.unwrap(), first);
    assert_eq!(w.engine.stats.get(Counter::Duplicates), 1);
}

#[test]
fn an_unknown_nas_is_dropped_and_logged_once_a_minute() {
    let mut w = world();
    let (req, _) = request(
        "alice",
        &Credentials::Pap {
            password: b"s3cret",
        },
        &Session::default(),
        1,
    );
    let events: Vec<Event> = [0, 1, 61]
        .iter()
        .map(|t| w.send("10.9.9.9", &req, *t).1)
        .collect();
    let log: Vec<bool> = events
        .iter()
        .map(|e| match e {
            Event::Dropped {
                reason: DropReason::UnknownNas,
                log,
            } => *log,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(log, [true, false, true]);
    assert_eq!(
        w.engine.stats.get(Counter::Dropped(DropReason::UnknownNas)),
        3
    );
}

#[test]
fn a_flood_of_spoofed_sources_keeps_the_unknown_nas_table_bounded() {
    let mut w = world();
    let (req, _) = request(
        "alice",
        &Credentials::Pap {
            password: b"s3cret",
        },
        &Session::default(),
        1,
    );
    // 100,000 distinct sources within one minute (the old table grew to
    // all of them and scanned them all for every new one).
    for i in 0..100_000u32 {
        let ip = std::net::Ipv4Addr::from(0x0B00_0000 + i);
        let (_, event) = w.send(&ip.to_string(), &req, u64::from(i) / 2000);
        assert!(matches!(
            event,
            Event::Dropped {
                reason: DropReason::UnknownNas,
                ..
            }
        ));
    }
    assert!(w.engine.unknown_nas_remembered() <= 4096);
    assert_eq!(
        w.engine.stats.get(Counter::Dropped(DropReason::UnknownNas)),
        100_000
    );
    // A source seen just now is still within its minute.
    let (_, event) = w.send("11.1.134.159", &req, 50);
    assert_eq!(
        event,
        Event::Dropped {
            reason: DropReason::UnknownNas,
            log: false
        }
    );
}

#[test]
fn a_wrong_secret_never_gets_an_accept() {
    let mut w = world();
    let creds = Credentials::Pap {
        password: b"s3cret",
    };
    let mut buf = [0u8; 4096];
    let req = nas::access_request(
        &mut buf,
        1,
        &[1; 16],
        &Secret::new(b"not-the-secret"),
        b"alice",
        &creds,
        &Session::default(),
    )
    .unwrap()
    .to_vec();
    let (_, event) = w.send("127.0.0.1", &req, 0);
    assert_eq!(
        event,
        Event::Dropped {
            reason: DropReason::BadMessageAuthenticator,
            log: false
        }
    );
    // Without a Message-Authenticator the hidden password decodes to garbage: a reject.
    let (stripped, _) = strip_message_authenticator(&req);
    let (reply, event) = w.send("127.0.0.2", &stripped, 0);
    assert!(
        matches!(
            event,
            Event::Rejected {
                reason: RejectReason::BadPassword,
                ..
            }
        ),
        "{event:?}"
    );
    assert_eq!(
        Packet::parse(&reply.unwrap()).unwrap().code(),
        Code::ACCESS_REJECT
    );
}

/// Rebuilds a request without its Message-Authenticator (as an old NAS sends).
fn strip_message_authenticator(req: &[u8]) -> (Vec<u8>, [u8; 16]) {
    let p = Packet::parse(req).unwrap();
    let mut buf = [0u8; 4096];
    let mut w = PacketWriter::new(&mut buf, p.code(), p.identifier(), p.authenticator());
    for a in p
        .attributes()
        .filter(|a| a.ty != attr::MESSAGE_AUTHENTICATOR)
    {
        w.attr(a.ty, a.value).unwrap();
    }
    (w.finish_unsigned().to_vec(), *p.authenticator())
}

#[test]
fn auto_policy_requires_message_authenticator_once_a_nas_has_sent_one() {
    let mut w = world();
    let creds = Credentials::Pap {
        password: b"s3cret",
    };
    let (with_ma, _) = request("alice", &creds, &Session::default(), 1);
    let (without_ma, _) =
        strip_message_authenticator(&request("alice", &creds, &Session::default(), 2).0);
    // Before any Message-Authenticator: accepted without one.
    assert!(matches!(
        w.send("127.0.0.1", &without_ma, 0).1,
        Event::Accepted { .. }
    ));
    assert!(matches!(
        w.send("127.0.0.1", &with_ma, 0).1,
        Event::Accepted { .. }
    ));
    let (without_ma, _) =
        strip_message_authenticator(&request("alice", &creds, &Session::default(), 3).0);
    assert_eq!(
        w.send("127.0.0.1", &without_ma, 0).1,
        Event::Dropped {
            reason: DropReason::MissingMessageAuthenticator,
            log: false
        }
    );
    // `yes` requires it from the start; `no` never does.
    assert_eq!(
        w.send("127.0.0.3", &without_ma, 0).1,
        Event::Dropped {
            reason: DropReason::MissingMessageAuthenticator,
            log: false
        }
    );
    assert!(matches!(
        w.send("127.0.0.2", &without_ma, 0).1,
        Event::Accepted { .. }
    ));
}

#[test]
fn status_server_is_answered_on_both_ports_and_needs_a_message_authenticator() {
    let mut w = world();
    let secret = Secret::new(SECRET);
    let mut buf = [0u8; 4096];
    let mut pw = PacketWriter::new(&mut buf, Code::STATUS_SERVER, 4, &[4; 16]);
    pw.message_authenticator().unwrap();
    let req = pw.finish_request(&secret).to_vec();
    for (port, code) in [
        (Port::Auth, Code::ACCESS_ACCEPT),
        (Port::Acct, Code::ACCOUNTING_RESPONSE),
    ] {
        let mut out = [0u8; 4096];
        let ctx = Context {
            snapshot: &w.snapshot,
            key: &w.key,
            now: w.now(0),
            committed: 0,
            pools: &shardius::pool::NoPools,
            sessions: &shardius::policy::sessions::NoLimits,
        };
        let h = w
            .engine
            .handle(port, "127.0.0.1:1".parse().unwrap(), &req, &ctx, &mut out);
        assert_eq!(h.event, Event::StatusServer);
        let reply = Packet::parse(&out[..h.reply_len.unwrap()]).unwrap();
        assert_eq!(reply.code(), code);
        assert!(shardius::proto::authenticator::verify_response(
            &reply, &[4; 16], &secret
        ));
    }
    let (bare, _) = strip_message_authenticator(&req);
    assert_eq!(
        w.send("127.0.0.2", &bare, 0).1,
        Event::Dropped {
            reason: DropReason::MissingMessageAuthenticator,
            log: false
        }
    );
}

#[test]
fn malformed_datagrams_are_counted_by_reason() {
    let mut w = world();
    let (_, event) = w.send("127.0.0.1", &[1, 2, 3], 0);
    assert!(matches!(
        event,
        Event::Dropped {
            reason: DropReason::Malformed(_),
            ..
        }
    ));
    assert_eq!(
        w.engine.stats.get(Counter::Dropped(DropReason::Malformed(
            shardius::proto::ParseError::TooShort
        ))),
        1
    );
}

/// `req` (an Access-Request or Status-Server) re-signed with `extra`
/// attributes appended and a leading Message-Authenticator.
fn with_attributes(req: &[u8], extra: &[(u8, &[u8])]) -> Vec<u8> {
    let p = Packet::parse(req).unwrap();
    let mut buf = [0u8; 4096];
    let mut w = PacketWriter::new(&mut buf, p.code(), p.identifier(), p.authenticator());
    w.message_authenticator().unwrap();
    for a in p
        .attributes()
        .filter(|a| a.ty != attr::MESSAGE_AUTHENTICATOR)
    {
        w.attr(a.ty, a.value).unwrap();
    }
    for (ty, value) in extra {
        w.attr(*ty, value).unwrap();
    }
    w.finish_request(&Secret::new(SECRET)).to_vec()
}

fn proxy_states(reply: &[u8]) -> Vec<Vec<u8>> {
    Packet::parse(reply)
        .unwrap()
        .attributes()
        .filter(|a| a.ty == attr::PROXY_STATE)
        .map(|a| a.value.to_vec())
        .collect()
}

#[test]
fn every_reply_echoes_the_proxy_states_of_its_request_in_order() {
    let mut w = world();
    let states: [(u8, &[u8]); 3] = [
        (attr::PROXY_STATE, b"\x01proxy-a"),
        (attr::PROXY_STATE, b"\x00\xffb"),
        (attr::PROXY_STATE, b"c"),
    ];
    let expected: Vec<Vec<u8>> = states.iter().map(|(_, v)| v.to_vec()).collect();
    let pap = |pw: &'static [u8]| Credentials::Pap { password: pw };
    for (password, accepted) in [(&b"s3cret"[..], true), (&b"wrong"[..], false)] {
        let (req, _) = request("alice", &pap(password), &Session::default(), 9);
        let (reply, event) = w.send("127.0.0.1", &with_attributes(&req, &states), 100);
        assert_eq!(
            matches!(event, Event::Accepted { .. }),
            accepted,
            "{event:?}"
        );
        assert_eq!(proxy_states(&reply.unwrap()), expected);
    }
    // Status-Server.
    let mut buf = [0u8; 4096];
    let mut pw = PacketWriter::new(&mut buf, Code::STATUS_SERVER, 4, &[4; 16]);
    pw.message_authenticator().unwrap();
    for (ty, v) in &states {
        pw.attr(*ty, v).unwrap();
    }
    let status = pw.finish_request(&Secret::new(SECRET)).to_vec();
    let (reply, event) = w.send("127.0.0.1", &status, 100);
    assert_eq!(event, Event::StatusServer);
    assert_eq!(proxy_states(&reply.unwrap()), expected);
    // Accounting-Response.
    let mut buf = [0u8; 4096];
    let mut pw = PacketWriter::new(&mut buf, Code::ACCOUNTING_REQUEST, 5, &[0; 16]);
    pw.attr_u32(attr::ACCT_STATUS_TYPE, 1).unwrap();
    pw.attr(attr::ACCT_SESSION_ID, b"81a00003").unwrap();
    for (ty, v) in &states {
        pw.attr(*ty, v).unwrap();
    }
    let acct = pw.finish_request(&Secret::new(SECRET)).to_vec();
    let (reply, event) = w.send_acct("127.0.0.1", &acct, 100);
    assert_eq!(event, Event::AccountingQueued);
    assert_eq!(proxy_states(&reply.unwrap()), expected);
}

#[test]
fn only_an_access_request_with_a_message_authenticator_arms_the_auto_policy() {
    let mut w = world();
    let creds = Credentials::Pap {
        password: b"s3cret",
    };
    let secret = Secret::new(SECRET);
    // A proxy health-checks with Status-Server (Message-Authenticator mandatory) ...
    let mut buf = [0u8; 4096];
    let mut pw = PacketWriter::new(&mut buf, Code::STATUS_SERVER, 4, &[4; 16]);
    pw.message_authenticator().unwrap();
    let status = pw.finish_request(&secret).to_vec();
    assert_eq!(w.send("127.0.0.1", &status, 0).1, Event::StatusServer);
    // ... and sends accounting with one.
    let mut buf = [0u8; 4096];
    let mut pw = PacketWriter::new(&mut buf, Code::ACCOUNTING_REQUEST, 5, &[0; 16]);
    pw.message_authenticator().unwrap();
    pw.attr_u32(attr::ACCT_STATUS_TYPE, 1).unwrap();
    pw.attr(attr::ACCT_SESSION_ID, b"s").unwrap();
    let acct = pw.finish_request(&secret).to_vec();
    assert_eq!(
        w.send_acct("127.0.0.1", &acct, 0).1,
        Event::AccountingQueued
    );
    // Access-Requests without one (radsecproxy adds none) still pass.
    let (bare, _) =
        strip_message_authenticator(&request("alice", &creds, &Session::default(), 2).0);
    assert!(matches!(
        w.send("127.0.0.1", &bare, 1).1,
        Event::Accepted { .. }
    ));
    // An Access-Request that carries one arms it.
    let (with_ma, _) = request("alice", &creds, &Session::default(), 3);
    assert!(matches!(
        w.send("127.0.0.1", &with_ma, 2).1,
        Event::Accepted { .. }
    ));
    let (bare, _) =
        strip_message_authenticator(&request("alice", &creds, &Session::default(), 4).0);
    assert_eq!(
        w.send("127.0.0.1", &bare, 3).1,
        Event::Dropped {
            reason: DropReason::MissingMessageAuthenticator,
            log: false
        }
    );
}

#[test]
fn a_chap_challenge_shorter_than_5_octets_is_rejected() {
    let mut w = world();
    for challenge in [&b""[..], b"1234"] {
        let password = b"s3cret";
        let ident = 3u8;
        let mut response = vec![ident];
        response.extend_from_slice(&shardius::auth::chap::response(ident, password, challenge));
        let mut buf = [0u8; 4096];
        let mut pw = PacketWriter::new(&mut buf, Code::ACCESS_REQUEST, 8, &[8; 16]);
        pw.message_authenticator().unwrap();
        pw.attr(attr::USER_NAME, b"alice").unwrap();
        pw.attr(attr::CHAP_PASSWORD, &response).unwrap();
        pw.attr(attr::CHAP_CHALLENGE, challenge).unwrap();
        let req = pw.finish_request(&Secret::new(SECRET)).to_vec();
        let (reply, event) = w.send("127.0.0.1", &req, u64::from(challenge.len() as u8) * 40);
        assert!(
            matches!(
                event,
                Event::Rejected {
                    reason: RejectReason::BadChapChallenge,
                    ..
                }
            ),
            "{event:?}"
        );
        assert_eq!(
            Packet::parse(&reply.unwrap()).unwrap().code(),
            Code::ACCESS_REJECT
        );
    }
}

/// Answers from a script, in order: the engine's view of a pool.
struct ScriptedPool(std::cell::RefCell<std::collections::VecDeque<shardius::pool::Offer>>);

impl shardius::pool::AddressSource for ScriptedPool {
    fn kind(&self, pool: &str) -> Option<shardius::pool::PoolKind> {
        assert_eq!(pool, "pppoe-pool");
        Some(shardius::pool::PoolKind::Ipv4)
    }
    fn offer(&self, pool: &str, username: &str, _: Instant) -> shardius::pool::Offer {
        assert_eq!((pool, username), ("pppoe-pool", "alice"));
        self.0.borrow_mut().pop_front().expect("an offer scripted")
    }
}

#[test]
fn a_static_ip_on_a_pooled_service_is_never_offered_a_pool_address() {
    // An offer would queue a claim of an address the login never uses (in
    // a full pool, another subscriber's held one): the pool is not asked.
    let mut w = world();
    let pool = ScriptedPool(Default::default());
    let creds = mschap(b"pw");
    let (req, _) = request("static", &creds, &Session::default(), 3);
    let mut out = [0u8; 4096];
    let ctx = Context {
        snapshot: &w.snapshot,
        key: &w.key,
        now: w.now(0),
        committed: 0,
        pools: &pool,
        sessions: &shardius::policy::sessions::NoLimits,
    };
    let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let h = w.engine.handle(Port::Auth, src, &req, &ctx, &mut out);
    assert!(matches!(h.event, Event::Accepted { .. }), "{:?}", h.event);
    let p = Packet::parse(&out[..h.reply_len.unwrap()]).unwrap();
    assert_eq!(p.attr(attr::FRAMED_IP_ADDRESS), Some(&[100, 64, 0, 6][..]));
    assert_eq!(p.attr(attr::FRAMED_POOL), None);
}

#[test]
fn a_pooled_login_waits_for_its_address_uncached_then_carries_it_or_is_rejected() {
    use shardius::pool::{Offer, PoolAddr};
    let mut w = world();
    let addr: PoolAddr = "10.9.9.9".parse().unwrap();
    let pool = ScriptedPool(std::cell::RefCell::new(
        [
            Offer::Pending,
            Offer::Pending,
            Offer::Ready(addr),
            Offer::Exhausted,
        ]
        .into(),
    ));
    let creds = mschap(b"s3cret");
    let (req, auth) = request("alice", &creds, &Session::default(), 1);
    let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut out = [0u8; 4096];
    let handle = |w: &mut World, again: bool, bytes: &[u8], out: &mut [u8; 4096]| {
        let ctx = Context {
            snapshot: &w.snapshot,
            key: &w.key,
            now: w.now(0),
            committed: 0,
            pools: &pool,
            sessions: &shardius::policy::sessions::NoLimits,
        };
        if again {
            w.engine.handle_again(src, bytes, &ctx, out)
        } else {
            w.engine.handle(Port::Auth, src, bytes, &ctx, out)
        }
    };
    // Pending: no reply, and nothing cached: the NAS's retransmission is
    // evaluated again (not answered as a duplicate).
    let h = handle(&mut w, false, &req, &mut out);
    assert_eq!(
        (h.reply_len, h.event),
        (
            None,
            Event::AddressPending {
                method: shardius::auth::Method::MsChapV2
            }
        )
    );
    let h = handle(&mut w, false, &req, &mut out);
    assert!(
        matches!(h.event, Event::AddressPending { .. }),
        "{:?}",
        h.event
    );
    // Handed to the engine again once the claim is in: the Accept carries
    // the address, and no Framed-Pool.
    let h = handle(&mut w, true, &req, &mut out);
    assert!(matches!(h.event, Event::Accepted { .. }), "{:?}", h.event);
    let reply = out[..h.reply_len.unwrap()].to_vec();
    nas::check_access_reply(&reply, 1, &auth, &Secret::new(SECRET), b"alice", &creds).unwrap();
    let p = Packet::parse(&reply).unwrap();
    assert_eq!(p.attr(attr::FRAMED_IP_ADDRESS), Some(&[10, 9, 9, 9][..]));
    assert_eq!(p.attr(attr::FRAMED_POOL), None);
    // Counted once, however often it was handed over.
    assert_eq!(w.engine.stats.get(Counter::AuthRequests), 2);
    // A retransmission now gets the cached Accept: the pool is not asked.
    let h = handle(&mut w, false, &req, &mut out);
    assert_eq!(h.event, Event::Duplicate);
    // Another login: the pool has no address for it.
    let (req2, _) = request("alice", &creds, &Session::default(), 2);
    let h = handle(&mut w, false, &req2, &mut out);
    assert_eq!(
        h.event,
        Event::Rejected {
            method: shardius::auth::Method::MsChapV2,
            reason: RejectReason::PoolExhausted,
            nas: "127.0.0.1".parse().unwrap(),
        }
    );
    assert!(pool.0.borrow().is_empty());
}

/// An Accounting-On (status 7) from `from` naming NAS-IP-Address `nas_ip`.
fn accounting_on(nas_ip: [u8; 4], id: u8) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    let mut w =
        shardius::proto::PacketWriter::new(&mut buf, Code::ACCOUNTING_REQUEST, id, &[0; 16]);
    w.attr_u32(shardius::proto::dict::attr::ACCT_STATUS_TYPE, 7)
        .unwrap();
    w.attr(shardius::proto::dict::attr::NAS_IP_ADDRESS, &nas_ip)
        .unwrap();
    w.finish_request(&Secret::new(b"testing123")).to_vec()
}

#[test]
fn a_proxy_speaks_for_the_registered_nas_it_names_and_an_unregistered_one_closes_nothing_else() {
    let mut w = world();
    let mut proxy = nas_record("127.0.0.9", NasType::Generic, MaPolicy::No);
    proxy.is_proxy = true;
    let inner = nas_record("127.0.0.3", NasType::Mikrotik, MaPolicy::Yes);
    let mut records = vec![
        nas_record("127.0.0.1", NasType::Mikrotik, MaPolicy::Auto),
        proxy,
        inner,
    ];
    w.snapshot.set_nas(&records);
    // The inner NAS (MikroTik, Message-Authenticator required) named by
    // NAS-IP-Address through the proxy: its policy and its reply.
    let inner_session = Session {
        nas_ip: Ipv4Addr::new(127, 0, 0, 3),
        ..Session::default()
    };
    let (req, _) = request(
        "alice",
        &Credentials::Pap {
            password: b"s3cret",
        },
        &inner_session,
        31,
    );
    let (stripped, _) = strip_message_authenticator(&req);
    let (reply, event) = w.send("127.0.0.9", &stripped, 0);
    assert!(
        reply.is_none(),
        "{event:?}: the inner NAS requires a Message-Authenticator"
    );
    let (reply, event) = w.send("127.0.0.9", &req, 1);
    let reply = reply.expect("accepted");
    // Logged (radius_logs, the log line) under the NAS it speaks for.
    assert!(
        matches!(event, Event::Accepted { nas, .. } if nas == "127.0.0.3".parse::<std::net::IpAddr>().unwrap()),
        "{event:?}"
    );
    assert!(Packet::parse(&reply)
        .unwrap()
        .vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT)
        .is_some());
    // Accounting-On naming the inner NAS closes its sessions only; naming
    // an unregistered NAS, only that address's (none), never the proxy's.
    for (id, named, scope) in [
        (3, [127, 0, 0, 3], "127.0.0.3"),
        (4, [192, 0, 2, 7], "192.0.2.7"),
    ] {
        let (reply, _) = w.send_acct("127.0.0.9", &accounting_on(named, id), 2);
        assert!(reply.is_some());
        let queued = w.engine.take_accounting().expect("queued");
        let scope: Vec<std::net::IpAddr> = vec![scope.parse().unwrap()];
        assert_eq!(queued.event.reboot_scope(), scope);
    }
    // Not a proxy any more: the same Accounting-On is the entry's own.
    records[1].is_proxy = false;
    w.snapshot.set_nas(&records);
    w.send_acct("127.0.0.9", &accounting_on([127, 0, 0, 3], 5), 3);
    let queued = w.engine.take_accounting().expect("queued");
    assert_eq!(
        queued.event.reboot_scope(),
        vec!["127.0.0.9".parse::<std::net::IpAddr>().unwrap()]
    );
}
