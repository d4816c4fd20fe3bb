//! The real server against an attacker and against peers that do things
//! the other way: a flood of spoofed unknown sources, User-Names that try
//! to forge log lines, a proxy's Proxy-State, a second instance on the
//! same ports, a NAS that writes accounting in another NAS's name.

use std::net::UdpSocket;
use std::time::Duration;

use crate::common::pg::eventually;
use crate::common::server::{radclient, Backend, Install, TestNas, SECRET};
use shardius::nas_client::{Credentials, Session};
use shardius::proto::Code;

const FORGED: &str =
    "x\n2026-12-01T00:00:00Z  INFO accept shard=0 nas=127.0.0.1 user=admin method=pap";
const TERMINAL: &str = "a\x1b[2J\r\x08\0b";

fn forge(server_auth: std::net::SocketAddr) {
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    let creds = Credentials::Pap { password: b"pw" };
    for user in [FORGED, TERMINAL] {
        assert_eq!(
            nas.login(server_auth, user, &creds, &Session::default()),
            Some(Code::ACCESS_REJECT)
        );
    }
}

#[test]
fn a_user_name_can_neither_forge_a_text_log_line_nor_reach_the_terminal() {
    let install = Install::new();
    let mut server = install.serve(1);
    forge(server.auth);
    server.wait_for_log("reject", Duration::from_secs(5));
    let (_, log) = server.stop();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-01T00:00:00Z")),
        "a forged line:\n{log}"
    );
    assert!(
        log.contains("user=x\\n2026-12-01T00:00:00Z  INFO accept"),
        "{log}"
    );
    assert!(log.contains("user=a\\u{1b}[2J\\r\\u{8}\\x00b"), "{log}");
    for raw in ['\x1b', '\r', '\x08', '\0'] {
        assert!(!log.contains(raw), "{raw:?} reached the log:\n{log:?}");
    }
}

#[test]
fn json_logs_keep_a_user_name_as_sent_inside_one_json_string() {
    let install = Install::new();
    let mut server = install.serve_with_env(&["--shards", "1"], &[("SHARDIUS_LOG_FORMAT", "json")]);
    forge(server.auth);
    server.wait_for_log("reject", Duration::from_secs(5));
    let (_, log) = server.stop();
    let mut users = Vec::new();
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if value["message"] == "reject" {
            users.push(value["user"].as_str().unwrap().to_owned());
        }
    }
    // The NUL is in stored form (`\x00`), as radius_logs has it.
    assert_eq!(users, [FORGED.to_owned(), TERMINAL.replace('\0', "\\x00")]);
}

fn every_reply_to_radclient_echoes_its_proxy_states(backend: Backend) {
    let install = Install::new_on(backend);
    let server = install.serve(1);
    let states = "Proxy-State = 0x01020304\nProxy-State = 0x616263\n";
    let auth = radclient(
        server.auth,
        "auth",
        &format!("User-Name = \"alice\"\nUser-Password = \"s3cret\"\nMessage-Authenticator = 0x00\n{states}"),
    );
    let acct = radclient(
        server.acct,
        "acct",
        &format!(
            "Acct-Status-Type = Start\nAcct-Session-Id = \"ps-1\"\nUser-Name = \"alice\"\n{states}"
        ),
    );
    for (out, kind) in [(&auth, "Access-Accept"), (&acct, "Accounting-Response")] {
        let reply = out
            .split_once(&format!("Received {kind}"))
            .unwrap_or_else(|| panic!("no {kind}:\n{out}"))
            .1;
        let a = reply.find("Proxy-State = 0x01020304").expect(reply);
        let b = reply.find("Proxy-State = 0x616263").expect(reply);
        assert!(a < b, "in order:\n{reply}");
    }
}

/// Thousands of distinct unknown sources (each a real socket on its own
/// 127.x address): every packet is counted, the log stays bounded, the
/// registered NAS is served throughout.
#[test]
fn a_flood_of_distinct_unknown_sources_is_counted_with_a_bounded_log() {
    let install = Install::new();
    let server = install.serve(2);
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    let creds = Credentials::Pap {
        password: b"s3cret",
    };
    let (request, _, _) = {
        let mut probe = TestNas::bind("127.0.0.1", SECRET);
        probe.set_timeout(Duration::from_millis(50));
        probe.exchange(server.auth, "alice", &creds, &Session::default())
    };
    const SOURCES: u32 = 5_000;
    for i in 0..SOURCES {
        let ip = std::net::Ipv4Addr::new(127, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8);
        let s = UdpSocket::bind((ip, 0)).unwrap();
        s.send_to(&request, server.auth).unwrap();
        if i % 500 == 0 {
            assert_eq!(
                nas.login(server.auth, "alice", &creds, &Session::default()),
                Some(Code::ACCESS_ACCEPT)
            );
        }
    }
    assert!(
        eventually(Duration::from_secs(10), || server
            .metric("shardius_unknown_nas_packets_total")
            >= f64::from(SOURCES)),
        "{}",
        server.metric("shardius_unknown_nas_packets_total")
    );
    let suppressed = server.metric("shardius_unknown_nas_log_suppressed_total");
    let (_, log) = server.stop();
    let lines = log.matches("WARN unknown NAS: 127.").count() as f64;
    assert!(lines <= 30.0, "{lines} unknown NAS lines");
    assert!(lines >= 1.0);
    assert_eq!(
        lines + suppressed,
        f64::from(SOURCES),
        "every line logged or counted"
    );
    assert!(
        log.contains(&format!("unknown NAS: {suppressed} more lines suppressed")),
        "{log}"
    );
}

on_both_backends!(every_reply_to_radclient_echoes_its_proxy_states);

/// No password or secret in anything shardius prints: `check-config` (its
/// output lands in the journal as ExecStartPre), errors about a malformed
/// URL whatever it looks like, and debug logs with tokio-postgres on.
#[test]
fn passwords_and_secrets_never_reach_the_output_or_the_logs() {
    let url = crate::common::pg::fresh_database();
    let with_password = url.replacen("postgres@", "postgres:TraceSecretPG9@", 1);
    let install = Install::on_url(with_password.clone());
    install.provision();
    let out = install.ok(&["check-config"]);
    assert!(out.contains("postgres:***@127.0.0.1"), "{out}");
    assert!(!out.contains("TraceSecretPG9"), "{out}");
    let rest = with_password.split_once("://").unwrap().1;
    for bad in [
        format!("postgress://{rest}"),
        format!("pg://{rest}"),
        format!("Postgres:/{rest}"),
        " mysql://u:TraceSecretPG9@h/db".to_owned(),
        "host=127.0.0.1 password=TraceSecretPG9 user=radius port=1".to_owned(),
    ] {
        let flag = Install::on_url(bad.clone());
        let out = flag.run(&["check-config"]);
        let env = install
            .command(&["check-config"])
            .env("SHARDIUS_DATABASE_URL", &bad)
            .output()
            .unwrap();
        for (how, out) in [("flag", &out), ("env", &env)] {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!text.contains("TraceSecretPG9"), "{how} {bad:?}: {text}");
        }
    }
    let debug = install
        .command(&[
            "nas",
            "add",
            "--name",
            "BNG-9",
            "--ip",
            "127.0.0.9",
            "--secret",
            "TraceSecretNAS3",
        ])
        .env("SHARDIUS_LOG_LEVEL", "debug,tokio_postgres=trace")
        .output()
        .unwrap();
    assert!(debug.status.success());
    let stderr = String::from_utf8_lossy(&debug.stderr);
    assert!(!stderr.contains("TraceSecretNAS3"), "{stderr}");
    assert!(!stderr.contains("TraceSecretPG9"), "{stderr}");
}

#[test]
fn a_second_instance_on_the_same_addresses_refuses_to_start() {
    let install = Install::new();
    let server = install.serve(1);
    let other = Install::new();
    for (auth, acct) in [
        (server.auth.to_string(), "127.0.0.1:0".to_owned()),
        ("127.0.0.1:0".to_owned(), server.acct.to_string()),
        (
            format!("0.0.0.0:{}", server.auth.port()),
            "127.0.0.1:0".to_owned(),
        ),
    ] {
        let out = other.run(&[
            "serve",
            "--listen-auth",
            &auth,
            "--listen-acct",
            &acct,
            "--no-http",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("address in use"), "{stderr}");
        assert!(!stderr.contains("listening"), "{stderr}");
    }
    // The first one still serves.
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    assert_eq!(
        nas.login(
            server.auth,
            "alice",
            &Credentials::Pap {
                password: b"s3cret"
            },
            &Session::default()
        ),
        Some(Code::ACCESS_ACCEPT)
    );
}

/// Sends one Accounting-Request from `from` naming `nas_ip`; true if answered.
fn acct_from(from: &str, to: std::net::SocketAddr, status: u32, sid: &str, nas_ip: &str) -> bool {
    use shardius::nas_client::AcctRecord;
    let socket = UdpSocket::bind((from, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let record = AcctRecord {
        status,
        session_id: sid.as_bytes(),
        user_name: b"alice",
        session_time: 0,
        input_octets: 0,
        output_octets: 0,
        framed_ip: None,
        terminate_cause: None,
        class: None,
    };
    let session = Session {
        nas_ip: nas_ip.parse().unwrap(),
        ..Session::default()
    };
    let mut buf = [0u8; 4096];
    let secret = shardius::proto::Secret::new(SECRET.as_bytes());
    let bytes =
        shardius::nas_client::accounting_request(&mut buf, 1, &secret, &record, &session).unwrap();
    socket.send_to(bytes, to).unwrap();
    let mut reply = [0u8; 4096];
    socket.recv(&mut reply).is_ok()
}

fn accounting_is_tied_to_the_nas_entry_it_came_from(backend: Backend) {
    use shardius::proto::dict::acct_status::{ACCOUNTING_ON, START};
    let install = Install::new_on(backend);
    // On PostgreSQL with two writer connections: an Accounting-On (which
    // closes sessions of every lane) is written by the writer alone.
    install.write_config("[accounting]\nwriter_connections = 2\n");
    for (name, ip, extra) in [
        ("BNG-2", "127.0.0.2", None),
        ("BNG-3", "127.0.0.3", Some("10.9.9.9")),
    ] {
        let mut args = vec!["nas", "add", "--name", name, "--ip", ip, "--secret", SECRET];
        if let Some(e) = extra {
            args.extend(["--nas-ip-address", e]);
        }
        install.ok(&args);
    }
    let mut server = install.serve(2);
    assert!(acct_from(
        "127.0.0.2",
        server.acct,
        START,
        "b-1",
        "127.0.0.2"
    ));
    assert!(acct_from(
        "127.0.0.3",
        server.acct,
        START,
        "c-1",
        "10.9.9.9"
    ));
    assert!(acct_from(
        "127.0.0.3",
        server.acct,
        START,
        "c-2",
        "127.0.0.3"
    ));
    // BNG-1 (127.0.0.1) names BNG-2's address: an Accounting-On closes
    // none of BNG-2's sessions, a Start is recorded under its own address.
    assert!(acct_from(
        "127.0.0.1",
        server.acct,
        ACCOUNTING_ON,
        "",
        "127.0.0.2"
    ));
    assert!(acct_from(
        "127.0.0.1",
        server.acct,
        START,
        "spoofed",
        "127.0.0.2"
    ));
    server.wait_for_log("names NAS-IP-Address 127.0.0.2", Duration::from_secs(5));
    let sessions = |install: &Install| {
        let mut store =
            shardius::store::open(&shardius::store::DatabaseUrl::parse(&install.db_url).unwrap())
                .unwrap();
        store.sessions(None, true, 100).unwrap()
    };
    let rows = sessions(&install);
    let row = |sid: &str| rows.iter().find(|r| r.session_id == sid).unwrap().clone();
    assert!(row("b-1").stop_time.is_none(), "another NAS closed b-1");
    assert_eq!(row("spoofed").nas_ip, "127.0.0.1");
    assert_eq!(row("c-1").nas_ip, "10.9.9.9");
    assert!(
        eventually(Duration::from_secs(5), || server
            .metric("shardius_accounting_nas_ip_mismatch_total")
            == 2.0),
        "{}",
        server.metric("shardius_accounting_nas_ip_mismatch_total")
    );
    // BNG-3's own Accounting-On closes its sessions under both its addresses, no others.
    assert!(acct_from(
        "127.0.0.3",
        server.acct,
        ACCOUNTING_ON,
        "",
        "10.9.9.9"
    ));
    let rows = sessions(&install);
    let row = |sid: &str| rows.iter().find(|r| r.session_id == sid).unwrap().clone();
    assert_eq!(row("c-1").terminate_cause.as_deref(), Some("NAS-Reboot"));
    assert_eq!(row("c-2").terminate_cause.as_deref(), Some("NAS-Reboot"));
    assert!(row("b-1").stop_time.is_none());
    assert!(row("spoofed").stop_time.is_none());
    assert!(install.ok(&["nas", "list"]).contains("10.9.9.9"));
}

on_both_backends!(accounting_is_tied_to_the_nas_entry_it_came_from);
