//! Speed attributes per BNG vendor (issue 17, part 5): Cisco, Juniper,
//! Huawei and accel-ppp NASes each get their own in the Access-Accept and
//! in a CoA, from the same service speed and the `[speeds]` templates.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use shardius::nas_client::{self as nas, Credentials, Session};
use shardius::proto::dict::{acct_status, attr, mikrotik, vendor};
use shardius::proto::{Code, Packet, Secret};

use crate::common::fake_nas::FakeNas;
use crate::common::server::{acct_record, Install, TestNas, SECRET};

const TYPES: [(&str, &str); 4] = [
    ("cisco", "127.0.0.11"),
    ("juniper", "127.0.0.12"),
    ("huawei", "127.0.0.13"),
    ("accel-ppp", "127.0.0.14"),
];

fn login(server_auth: std::net::SocketAddr, from: &str) -> Vec<u8> {
    let mut bng = TestNas::bind(from, SECRET);
    bng.set_timeout(Duration::from_secs(5));
    let session = Session {
        nas_ip: from.parse().unwrap(),
        ..Session::default()
    };
    let creds = Credentials::Pap {
        password: b"s3cret",
    };
    let (request, auth, reply) = bng.exchange(server_auth, "alice", &creds, &session);
    let reply = reply.expect("an answer");
    let checked = nas::check_access_reply(
        &reply,
        request[1],
        &auth,
        &Secret::new(SECRET.as_bytes()),
        b"alice",
        &creds,
    )
    .unwrap();
    assert_eq!(checked.code, Code::ACCESS_ACCEPT);
    reply
}

fn vendor_values(reply: &[u8], vendor_id: u32, ty: u8) -> Vec<Vec<u8>> {
    // Every VSA of the vendor and type, in order.
    let p = Packet::parse(reply).unwrap();
    p.attributes()
        .filter_map(|a| {
            let vsa = a.vendor_specific()?;
            let d = vsa.data;
            (vsa.vendor_id == vendor_id && d.first() == Some(&ty)).then(|| d[2..].to_vec())
        })
        .collect()
}

fn start(acct: std::net::SocketAddr, from: &str, session_id: &str) {
    let socket = UdpSocket::bind(format!("{from}:0")).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let record = acct_record(
        acct_status::START,
        "alice",
        session_id,
        0,
        0,
        Some(Ipv4Addr::new(100, 64, 0, 9)),
    );
    let session = Session {
        nas_ip: from.parse().unwrap(),
        ..Session::default()
    };
    let request = nas::accounting_request(
        &mut buf,
        7,
        &Secret::new(SECRET.as_bytes()),
        &record,
        &session,
    )
    .unwrap()
    .to_vec();
    socket.send_to(&request, acct).unwrap();
    let mut reply = [0u8; 4096];
    socket.recv(&mut reply).expect("Accounting-Response");
}

#[test]
fn each_bng_vendor_gets_its_own_speed_attributes_at_login_and_by_coa() {
    let install = Install::empty();
    install.write_config(
        "[database]\nreload_interval_secs = 1\n\n[coa]\ntries = 2\ntimeout_ms = 500\n\n\
         [http]\nadmin_token = \"test-token-0123456789abcdef\"\n\n\
         [speeds]\njuniper_qos_profile = \"qos-{download}k\"\n",
    );
    install.ok(&["keygen", "--out", install.key().to_str().unwrap()]);
    let fakes: Vec<FakeNas> = TYPES
        .iter()
        .map(|(_, ip)| FakeNas::start_on(ip, SECRET))
        .collect();
    for ((ty, ip), fake) in TYPES.iter().zip(&fakes) {
        let port = fake.addr.port().to_string();
        install.ok(&[
            "nas",
            "add",
            "--name",
            ty,
            "--ip",
            ip,
            "--secret",
            SECRET,
            "--type",
            ty,
            "--coa-port",
            &port,
        ]);
    }
    install.add_service("gold", "10M", "2M");
    install.add_subscriber("alice", "gold");
    let server = install.serve(1);

    let cisco = login(server.auth, "127.0.0.11");
    assert_eq!(
        vendor_values(&cisco, 9, 1),
        [
            b"subscriber:sub-qos-policy-in=gold-in".to_vec(),
            b"subscriber:sub-qos-policy-out=gold-out".to_vec()
        ]
    );
    let juniper = login(server.auth, "127.0.0.12");
    assert_eq!(vendor_values(&juniper, 4874, 10), [b"gold-in".to_vec()]);
    assert_eq!(vendor_values(&juniper, 4874, 11), [b"gold-out".to_vec()]);
    assert_eq!(vendor_values(&juniper, 4874, 26), [b"qos-10000k".to_vec()]);
    let huawei = login(server.auth, "127.0.0.13");
    assert_eq!(
        vendor_values(&huawei, 2011, 2),
        [2_000_000u32.to_be_bytes().to_vec()],
        "upload in bit/s"
    );
    assert_eq!(
        vendor_values(&huawei, 2011, 5),
        [10_000_000u32.to_be_bytes().to_vec()],
        "download in bit/s"
    );
    let accel = login(server.auth, "127.0.0.14");
    assert_eq!(
        Packet::parse(&accel).unwrap().attr(attr::FILTER_ID),
        Some(&b"10000/2000"[..])
    );
    for reply in [&cisco, &juniper, &huawei, &accel] {
        assert!(vendor_values(reply, vendor::MIKROTIK, mikrotik::RATE_LIMIT).is_empty());
    }

    // A CoA with a new speed: each NAS gets its own attributes; a policy
    // NAS cannot be given a speed by hand (no policy name) and says so.
    for (i, (_, ip)) in TYPES.iter().enumerate() {
        start(server.acct, ip, &format!("s{i}"));
    }
    let out = install.run(&["coa", "--user", "alice", "--rate-limit", "1M/4M"]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("session=s0")
            && text.contains("a cisco NAS")
            && text.contains("needs the service's name"),
        "{text}"
    );
    assert!(
        text.contains("session=s2") && text.contains("coa: ACK"),
        "{text}"
    );
    let huawei_coa = fakes[2].wait_for(1, Duration::from_secs(5));
    assert_eq!(huawei_coa[0].code, Code::COA_REQUEST);
    assert_eq!(
        huawei_coa[0].vendor_attr(2011, 2),
        Some(1_000_000u32.to_be_bytes().to_vec())
    );
    assert_eq!(
        huawei_coa[0].vendor_attr(2011, 5),
        Some(4_000_000u32.to_be_bytes().to_vec())
    );
    let accel_coa = fakes[3].wait_for(1, Duration::from_secs(5));
    assert_eq!(accel_coa[0].attr(attr::FILTER_ID), Some(&b"4000/1000"[..]));
    assert!(fakes[0].received().is_empty(), "nothing sent to the Cisco");

    // Through the running server (the admin API, where `shardius coa`
    // goes when it runs), the subscriber's service names the policies.
    let (status, body) = crate::common::server::http_request(
        server.http,
        "POST",
        "/api/coa",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer test-token-0123456789abcdef"),
        ],
        r#"{"user":"alice","rate_limit":"1M/4M"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{body}");
    assert!(results.iter().all(|r| r["result"] == "ack"), "{body}");
    let cisco_coa = fakes[0].wait_for(1, Duration::from_secs(5));
    let avpairs: Vec<Vec<u8>> = cisco_coa[0]
        .attributes
        .iter()
        .filter(|(t, v)| *t == attr::VENDOR_SPECIFIC && v.starts_with(&9u32.to_be_bytes()))
        .map(|(_, v)| v[6..].to_vec())
        .collect();
    assert_eq!(
        avpairs,
        [
            b"subscriber:sub-qos-policy-in=gold-in".to_vec(),
            b"subscriber:sub-qos-policy-out=gold-out".to_vec()
        ]
    );
    let juniper_coa = fakes[1].wait_for(1, Duration::from_secs(5));
    assert_eq!(
        juniper_coa[0].vendor_attr(4874, 26),
        Some(b"qos-4000k".to_vec())
    );
    let (ok, log) = server.stop();
    assert!(ok, "{log}");
}

/// Every NAS type is stored and read back on both backends (migration 11
/// widened the type check; SQLite rebuilt the table).
fn every_nas_type_is_stored(backend: crate::common::server::Backend) {
    let install = Install::empty_on(backend);
    install.ok(&["keygen", "--out", install.key().to_str().unwrap()]);
    for (i, ty) in [
        "mikrotik",
        "generic",
        "cisco",
        "juniper",
        "huawei",
        "accel-ppp",
    ]
    .iter()
    .enumerate()
    {
        let ip = format!("10.0.0.{}", i + 1);
        install.ok(&[
            "nas", "add", "--name", ty, "--ip", &ip, "--secret", "s", "--type", ty,
        ]);
    }
    let list = install.ok(&["nas", "list"]);
    for (ty, port) in [
        ("mikrotik", 1700),
        ("generic", 3799),
        ("cisco", 1700),
        ("juniper", 3799),
        ("huawei", 3799),
        ("accel-ppp", 3799),
    ] {
        let line = list
            .lines()
            .find(|l| l.starts_with(ty))
            .unwrap_or_else(|| panic!("{ty}: {list}"));
        assert!(
            line.contains(&format!(" {ty} ")) && line.contains(&port.to_string()),
            "{line}"
        );
    }
    let err = install.fails(&[
        "nas", "add", "--name", "x", "--ip", "10.0.0.9", "--secret", "s", "--type", "ascend",
    ]);
    assert!(err.contains("ascend"), "{err}");
}

on_both_backends!(every_nas_type_is_stored);
