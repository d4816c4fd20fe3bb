//! Criterion benchmarks of the sans-IO core: what one Access-Request or
//! Accounting-Request costs on one core, without sockets.
//!
//! Run: `cargo bench --bench core` (medians go in README "Performance").
#![allow(clippy::unwrap_used)] // a benchmark: its set-up may panic

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use shardius::auth::{chap, mschapv2, pap};
use shardius::nas_client::{self as nas, Credentials, Session};
use shardius::proto::authenticator::{check_message_authenticator, verify_request_authenticator};
use shardius::proto::dict::{acct_status, attr, mikrotik, vendor};
use shardius::proto::{Code, MessageAuthenticatorCheck, Packet, PacketBuf, PacketWriter, Secret};

const PASSWORD: &[u8] = b"pass12345";

fn request(creds: &Credentials<'_>) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    nas::access_request(
        &mut buf,
        7,
        &[0x42; 16],
        &secret(),
        b"user12345",
        creds,
        &Session::default(),
    )
    .expect("request fits")
    .to_vec()
}

fn secret() -> Secret {
    Secret::new(b"testing123")
}

fn mschapv2_creds() -> Credentials<'static> {
    Credentials::MsChapV2 {
        ident: 1,
        auth_challenge: [0x11; 16],
        peer_challenge: [0x22; 16],
        password: PASSWORD,
    }
}

/// Parse, check Message-Authenticator, verify MS-CHAPv2 and build the
/// signed MikroTik Access-Accept: the whole core work for one PPPoE login.
fn answer_mschapv2(request: &[u8], secret: &Secret, out: &mut PacketBuf) -> usize {
    let p = Packet::parse(request).expect("valid");
    assert_eq!(
        check_message_authenticator(&p, secret, None),
        MessageAuthenticatorCheck::Valid
    );
    let user = p.attr(attr::USER_NAME).expect("user");
    let challenge = p.vendor_attr(vendor::MICROSOFT, 11).expect("challenge");
    let response =
        mschapv2::Response::parse(p.vendor_attr(vendor::MICROSOFT, 25).expect("resp")).expect("50");
    let ok = mschapv2::verify(challenge, &response, user, PASSWORD).expect("password");
    build_accept(&p, &ok, secret, out)
}

fn build_accept(
    p: &Packet<'_>,
    ok: &mschapv2::Success,
    secret: &Secret,
    out: &mut PacketBuf,
) -> usize {
    let mut w = PacketWriter::new(out, Code::ACCESS_ACCEPT, p.identifier(), p.authenticator());
    w.message_authenticator().expect("fits");
    ok.write_accept_attributes(&mut w, secret, p.authenticator(), [0x80, 0x10])
        .expect("fits");
    w.vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT, b"2000k/10000k")
        .expect("fits");
    w.attr(attr::FRAMED_POOL, b"pppoe-pool").expect("fits");
    w.attr_u32(attr::ACCT_INTERIM_INTERVAL, 30).expect("fits");
    w.attr_u32(attr::IDLE_TIMEOUT, 600).expect("fits");
    w.attr(attr::CLASS, &[0xC1; 16]).expect("fits");
    w.finish_response(p.authenticator(), secret).len()
}

fn accounting_request() -> Vec<u8> {
    let mut buf = [0u8; 4096];
    let mut w = PacketWriter::new(&mut buf, Code::ACCOUNTING_REQUEST, 3, &[0; 16]);
    w.attr_u32(attr::ACCT_STATUS_TYPE, acct_status::INTERIM_UPDATE)
        .unwrap();
    w.attr(attr::USER_NAME, b"user12345").unwrap();
    w.attr(attr::ACCT_SESSION_ID, b"81a00003").unwrap();
    w.attr_u32(attr::ACCT_SESSION_TIME, 3600).unwrap();
    w.attr_u32(attr::ACCT_INPUT_OCTETS, 123_456_789).unwrap();
    w.attr_u32(attr::ACCT_OUTPUT_OCTETS, 987_654_321).unwrap();
    w.attr_u32(attr::ACCT_INPUT_GIGAWORDS, 1).unwrap();
    w.attr_u32(attr::ACCT_OUTPUT_GIGAWORDS, 4).unwrap();
    w.attr_ipv4(attr::FRAMED_IP_ADDRESS, [100, 64, 0, 7].into())
        .unwrap();
    w.attr(attr::CALLING_STATION_ID, b"AA:BB:CC:DD:EE:FF")
        .unwrap();
    w.attr(attr::NAS_PORT_ID, b"ether1").unwrap();
    w.attr_ipv4(attr::NAS_IP_ADDRESS, [10, 0, 0, 1].into())
        .unwrap();
    w.attr(attr::CLASS, &[0xC1; 16]).unwrap();
    w.finish_request(&secret()).to_vec()
}

fn benches(c: &mut Criterion) {
    let secret = secret();
    let mut out = Box::new([0u8; 4096]);

    let pap_req = request(&Credentials::Pap { password: PASSWORD });
    c.bench_function(
        "parse_verify_access_request_with_message_authenticator",
        |b| {
            b.iter(|| {
                let p = Packet::parse(black_box(&pap_req)).unwrap();
                check_message_authenticator(&p, &secret, None)
            })
        },
    );
    let p = Packet::parse(&pap_req).unwrap();
    let hidden = p.attr(attr::USER_PASSWORD).unwrap();
    c.bench_function("pap_verify", |b| {
        b.iter(|| pap::verify(black_box(hidden), &secret, p.authenticator(), PASSWORD))
    });

    let chap_req = request(&Credentials::Chap {
        ident: 1,
        challenge: [0x11; 16],
        password: PASSWORD,
    });
    let p = Packet::parse(&chap_req).unwrap();
    let (chap_password, challenge) = (
        p.attr(attr::CHAP_PASSWORD).unwrap(),
        p.attr(attr::CHAP_CHALLENGE).unwrap(),
    );
    c.bench_function("chap_verify", |b| {
        b.iter(|| chap::verify(black_box(chap_password), challenge, PASSWORD))
    });

    let ms_req = request(&mschapv2_creds());
    let p = Packet::parse(&ms_req).unwrap();
    let challenge = p.vendor_attr(vendor::MICROSOFT, 11).unwrap();
    let response =
        mschapv2::Response::parse(p.vendor_attr(vendor::MICROSOFT, 25).unwrap()).unwrap();
    c.bench_function("mschapv2_verify_with_success_and_mppe_keys", |b| {
        b.iter(|| {
            mschapv2::verify(black_box(challenge), &response, b"user12345", PASSWORD).unwrap()
        })
    });

    let ok = mschapv2::verify(challenge, &response, b"user12345", PASSWORD).unwrap();
    c.bench_function("build_mikrotik_mschapv2_access_accept", |b| {
        b.iter(|| build_accept(black_box(&p), &ok, &secret, &mut out))
    });

    let acct = accounting_request();
    c.bench_function("parse_verify_accounting_request", |b| {
        b.iter(|| {
            let p = Packet::parse(black_box(&acct)).unwrap();
            assert!(verify_request_authenticator(&p, &secret));
            (
                p.attr_u32(attr::ACCT_STATUS_TYPE),
                p.attr(attr::ACCT_SESSION_ID),
                p.attr_u32(attr::ACCT_INPUT_OCTETS),
                p.attr_u32(attr::ACCT_INPUT_GIGAWORDS),
            )
        })
    });

    c.bench_function("full_mschapv2_login_parse_verify_build", |b| {
        b.iter(|| answer_mschapv2(black_box(&ms_req), &secret, &mut out))
    });
}

/// The whole shard-side work for one datagram, minus the socket calls:
/// NAS lookup, Message-Authenticator, subscriber lookup, AES-GCM password
/// decrypt, credential check, reply, duplicate-cache insert.
fn engine_benches(c: &mut Criterion) {
    use shardius::engine::{Context, Engine, Now, Port};
    use shardius::keyfile::PasswordKey;
    use shardius::policy::Snapshot;
    use shardius::store::{NasRecord, NasType, ServiceRecord, SubscriberRecord};
    use std::time::{Duration, Instant};

    let key = PasswordKey::from_master(&[5; 32]);
    let mut snapshot = Snapshot::default();
    snapshot.set_nas(&[NasRecord::new(
        "bng",
        "127.0.0.1".parse().unwrap(),
        "testing123",
        NasType::Mikrotik,
    )]);
    snapshot.set_services(&[ServiceRecord {
        id: 1,
        name: "10M".into(),
        download_kbps: 10_000,
        upload_kbps: 2_000,
        pool_name: Some("pppoe-pool".into()),
        ..ServiceRecord::with_speeds(0, "", 0, 0)
    }]);
    let subscribers: Vec<SubscriberRecord> = (0..30_000)
        .map(|i| SubscriberRecord {
            id: i,
            username: if i == 12345 {
                "user12345".into()
            } else {
                format!("u{i}")
            },
            password_enc: key.encrypt(PASSWORD),
            service_id: Some(1),
            is_active: true,
            expiry_date: None,
            mac_address: None,
            static_ip: None,
            updated_at: 0,
            password_kind: Default::default(),
            max_sessions: None,
        })
        .collect();
    snapshot.apply_subscribers(&subscribers, &[]);
    let src = "127.0.0.1:40000".parse().unwrap();
    let mut out = Box::new([0u8; 4096]);
    for (name, creds) in [
        (
            "engine_handle_pap_request",
            Credentials::Pap { password: PASSWORD },
        ),
        ("engine_handle_mschapv2_request", mschapv2_creds()),
    ] {
        let mut engine = Engine::new(Duration::from_secs(30), 200_000, 7);
        // Distinct authenticators, so no request is answered from the cache.
        let requests: Vec<Vec<u8>> = (0..4096u32)
            .map(|i| {
                let mut buf = [0u8; 4096];
                let mut auth = [0u8; 16];
                auth[..4].copy_from_slice(&i.to_be_bytes());
                nas::access_request(
                    &mut buf,
                    i as u8,
                    &auth,
                    &secret(),
                    b"user12345",
                    &creds,
                    &Session::default(),
                )
                .unwrap()
                .to_vec()
            })
            .collect();
        let t0 = Instant::now();
        let mut i = 0usize;
        let mut tick = 0u64;
        c.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % requests.len();
                // Each call 31 s after the previous: past the duplicate window,
                // so every request is evaluated, as first transmissions are.
                tick += 31;
                let ctx = Context {
                    snapshot: &snapshot,
                    key: &key,
                    now: Now {
                        mono: t0 + Duration::from_secs(tick),
                        local: chrono::NaiveDate::from_ymd_opt(2026, 11, 24)
                            .unwrap()
                            .and_hms_opt(12, 0, 0)
                            .unwrap(),
                        utc: chrono::DateTime::from_timestamp(1_795_521_600, 0).unwrap(),
                    },
                    committed: 0,
                    pools: &shardius::pool::NoPools,
                    sessions: &shardius::policy::sessions::NoLimits,
                };
                engine.handle(Port::Auth, src, black_box(&requests[i]), &ctx, &mut out)
            })
        });
    }
}

criterion_group!(core, benches, engine_benches);
criterion_main!(core);
