//! Black-box tests of the real `shardius` binary over UDP on 127.0.0.1:
//! an independent client (radclient), our MS-CHAPv2 NAS, every reject
//! reason, unknown NAS, retransmissions, live reload and shard spreading.

use std::time::{Duration, Instant};

use crate::common::server::{mschap, radclient, shard_counters, Backend, Install, TestNas, SECRET};
use shardius::nas_client::{Credentials, Session};
use shardius::proto::dict::{mikrotik, ms, vendor};
use shardius::proto::{Code, Packet};

fn radclient_authenticates_pap_and_chap_and_sees_the_mikrotik_reply(backend: Backend) {
    let install = Install::new_on(backend);
    let server = install.serve(2);
    let pap = radclient(
        server.auth,
        "auth",
        "User-Name = \"alice\"\nUser-Password = \"s3cret\"\nMessage-Authenticator = 0x00\n",
    );
    assert!(pap.contains("Received Access-Accept"), "{pap}");
    assert!(
        pap.contains("Mikrotik-Rate-Limit = \"2000k/10000k\""),
        "{pap}"
    );
    assert!(pap.contains("Framed-Pool = \"pppoe-pool\""), "{pap}");
    assert!(pap.contains("Acct-Interim-Interval = 30"), "{pap}");

    let chap = radclient(
        server.auth,
        "auth",
        "User-Name = \"alice\"\nCHAP-Password = \"s3cret\"\nMessage-Authenticator = 0x00\n",
    );
    assert!(chap.contains("Received Access-Accept"), "{chap}");
    assert!(
        chap.contains("Mikrotik-Rate-Limit = \"2000k/10000k\""),
        "{chap}"
    );

    let wrong = radclient(
        server.auth,
        "auth",
        "User-Name = \"alice\"\nUser-Password = \"nope\"\nMessage-Authenticator = 0x00\n",
    );
    assert!(wrong.contains("Received Access-Reject"), "{wrong}");

    let status = radclient(server.auth, "status", "Message-Authenticator = 0x00\n");
    assert!(status.contains("Received Access-Accept"), "{status}");
    let status = radclient(server.acct, "status", "Message-Authenticator = 0x00\n");
    assert!(status.contains("Received Accounting-Response"), "{status}");
    let (clean, _) = server.stop();
    assert!(clean, "serve did not exit 0 on SIGTERM");
}

fn mschapv2_logins_get_ms_chap2_success_and_mppe_keys_that_decrypt(backend: Backend) {
    let install = Install::new_on(backend);
    let server = install.serve(2);
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    for _ in 0..20 {
        // login() verifies the Response Authenticator, Message-Authenticator,
        // MS-CHAP2-Success and both MPPE keys, and panics on any mismatch.
        assert_eq!(
            nas.login(
                server.auth,
                "alice",
                &mschap(b"s3cret"),
                &Session::default()
            ),
            Some(Code::ACCESS_ACCEPT)
        );
    }
    let (_, _, reply) = nas.exchange(
        server.auth,
        "alice",
        &mschap(b"s3cret"),
        &Session::default(),
    );
    let reply = reply.unwrap();
    let p = Packet::parse(&reply).unwrap();
    assert!(p
        .vendor_attr(vendor::MICROSOFT, ms::MPPE_SEND_KEY)
        .is_some());
    assert_eq!(
        p.vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT),
        Some(&b"2000k/10000k"[..])
    );

    let (_, _, reply) = nas.exchange(server.auth, "alice", &mschap(b"wrong"), &Session::default());
    let p_reply = reply.unwrap();
    let p = Packet::parse(&p_reply).unwrap();
    assert_eq!(p.code(), Code::ACCESS_REJECT);
    assert!(p.vendor_attr(vendor::MICROSOFT, ms::CHAP_ERROR).unwrap()[1..].starts_with(b"E=691"));
}

fn every_reject_reason_is_an_access_reject_with_its_reason_logged(backend: Backend) {
    let install = Install::new_on(backend);
    install.ok(&[
        "subscriber",
        "add",
        "--username",
        "off",
        "--password",
        "pw",
        "--service",
        "10M",
        "--disabled",
    ]);
    install.ok(&[
        "subscriber",
        "add",
        "--username",
        "old",
        "--password",
        "pw",
        "--service",
        "10M",
        "--expiry",
        "2020-01-31",
    ]);
    install.ok(&[
        "subscriber",
        "add",
        "--username",
        "pinned",
        "--password",
        "pw",
        "--service",
        "10M",
        "--mac",
        "aa-bb-cc-00-11-22",
    ]);
    let mut server = install.serve(2);
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    let session = Session::default(); // Calling-Station-Id AA:BB:CC:DD:EE:FF
    for (user, password, reason) in [
        ("nobody", "pw", "unknown user"),
        ("alice", "wrong", "bad password"),
        ("off", "pw", "disabled"),
        ("old", "pw", "expired"),
        ("pinned", "pw", "mac mismatch"),
    ] {
        let code = nas.login(
            server.auth,
            user,
            &Credentials::Pap {
                password: password.as_bytes(),
            },
            &session,
        );
        assert_eq!(code, Some(Code::ACCESS_REJECT), "{user}");
        server.wait_for_log(
            &format!("user={user} method=\"pap\" reason=\"{reason}\""),
            Duration::from_secs(5),
        );
    }
    // The MAC binding accepts the bound MAC in another notation.
    let bound = Session {
        calling_station_id: b"AA:BB:CC:00:11:22",
        ..Session::default()
    };
    assert_eq!(
        nas.login(
            server.auth,
            "pinned",
            &Credentials::Pap { password: b"pw" },
            &bound
        ),
        Some(Code::ACCESS_ACCEPT)
    );
    let (_, log) = server.stop();
    assert_eq!(
        shard_counters(&log, "rejects").iter().sum::<u64>(),
        5,
        "{log}"
    );
}

fn an_unknown_nas_gets_no_answer_and_is_logged_and_counted(backend: Backend) {
    let install = Install::new_on(backend);
    let mut server = install.serve(2);
    let mut stranger = TestNas::bind("127.0.0.2", SECRET);
    let creds = Credentials::Pap {
        password: b"s3cret",
    };
    assert_eq!(
        stranger.login(server.auth, "alice", &creds, &Session::default()),
        None
    );
    assert_eq!(
        stranger.login(server.auth, "alice", &creds, &Session::default()),
        None
    );
    server.wait_for_log("unknown NAS: 127.0.0.2", Duration::from_secs(5));
    let (_, log) = server.stop();
    assert_eq!(
        log.matches("unknown NAS: 127.0.0.2").count(),
        1,
        "rate-limited to one line a minute:\n{log}"
    );
    assert_eq!(
        shard_counters(&log, "unknown_nas").iter().sum::<u64>(),
        2,
        "{log}"
    );
}

fn a_wrong_secret_never_gets_an_accept(backend: Backend) {
    let install = Install::new_on(backend);
    let server = install.serve(1);
    let mut nas = TestNas::bind("127.0.0.1", "not-the-secret");
    let (_, _, reply) = nas.exchange(
        server.auth,
        "alice",
        &Credentials::Pap {
            password: b"s3cret",
        },
        &Session::default(),
    );
    // The Message-Authenticator does not verify: silently dropped.
    assert_eq!(reply, None);
    let (_, _, reply) = nas.exchange(
        server.auth,
        "alice",
        &mschap(b"s3cret"),
        &Session::default(),
    );
    assert_eq!(reply, None);
}

fn a_retransmission_gets_the_identical_reply_from_the_duplicate_cache_of_its_shard(
    backend: Backend,
) {
    let install = Install::new_on(backend);
    let server = install.serve(2);
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    let (request, _, first) = nas.exchange(
        server.auth,
        "alice",
        &mschap(b"s3cret"),
        &Session::default(),
    );
    let first = first.expect("an answer");
    // Each evaluation draws fresh MPPE salts, so identical bytes mean the cache answered.
    let again = nas
        .send_raw(server.auth, &request)
        .expect("an answer to the retransmission");
    assert_eq!(again, first);
    let (_, log) = server.stop();
    let requests = shard_counters(&log, "auth_requests");
    let duplicates = shard_counters(&log, "duplicates");
    let shard = duplicates
        .iter()
        .position(|d| *d == 1)
        .unwrap_or_else(|| panic!("{log}"));
    // The shard that answered from its cache is the one that evaluated the original.
    assert_eq!(requests[shard], 2, "{log}");
    assert_eq!(requests.iter().sum::<u64>(), 2, "{log}");
}

fn one_nas_source_port_is_spread_over_every_shard(backend: Backend) {
    let install = Install::new_on(backend);
    let server = install.serve(2);
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    for _ in 0..200 {
        let code = nas.login(
            server.auth,
            "alice",
            &Credentials::Pap {
                password: b"s3cret",
            },
            &Session::default(),
        );
        assert_eq!(code, Some(Code::ACCESS_ACCEPT));
    }
    let (_, log) = server.stop();
    let per_shard = shard_counters(&log, "accepts");
    assert_eq!(per_shard.len(), 2, "{log}");
    assert_eq!(per_shard.iter().sum::<u64>(), 200, "{log}");
    assert!(
        per_shard.iter().all(|n| *n >= 40),
        "uneven spread {per_shard:?}"
    );
}

fn a_nas_added_with_the_cli_while_running_is_served_without_a_restart(backend: Backend) {
    let install = Install::new_on(backend);
    let mut server = install.serve(2);
    let mut newcomer = TestNas::bind("127.0.0.3", "n3w-s3cret");
    let creds = Credentials::Pap {
        password: b"s3cret",
    };
    assert_eq!(
        newcomer.login(server.auth, "alice", &creds, &Session::default()),
        None
    );
    let added = Instant::now();
    install.ok(&[
        "nas",
        "add",
        "--name",
        "BNG-3",
        "--ip",
        "127.0.0.3",
        "--secret",
        "n3w-s3cret",
        "--type",
        "generic",
    ]);
    server.wait_for_log("Loaded 2 NAS secrets", Duration::from_secs(10));
    loop {
        if newcomer.login(server.auth, "alice", &creds, &Session::default())
            == Some(Code::ACCESS_ACCEPT)
        {
            break;
        }
        assert!(
            added.elapsed() < Duration::from_secs(10),
            "not served within 10 s"
        );
    }
    // Subscriber changes are picked up the same way.
    install.ok(&[
        "subscriber",
        "add",
        "--username",
        "bob",
        "--password",
        "b0b",
        "--service",
        "10M",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let bob = Credentials::Pap { password: b"b0b" };
    while newcomer.login(server.auth, "bob", &bob, &Session::default()) != Some(Code::ACCESS_ACCEPT)
    {
        assert!(
            Instant::now() < deadline,
            "new subscriber not served within 10 s"
        );
    }
    install.ok(&["subscriber", "rm", "bob"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while newcomer.login(server.auth, "bob", &bob, &Session::default()) != Some(Code::ACCESS_REJECT)
    {
        assert!(
            Instant::now() < deadline,
            "removed subscriber still accepted after 10 s"
        );
    }
}

fn the_server_refuses_to_start_without_a_usable_key_file(backend: Backend) {
    let install = Install::new_on(backend);
    std::fs::set_permissions(
        install.key(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let err = install.fails(&[
        "serve",
        "--listen-auth",
        "127.0.0.1:0",
        "--listen-acct",
        "127.0.0.1:0",
    ]);
    assert!(err.contains("readable by other users"), "{err}");
    std::fs::remove_file(install.key()).unwrap();
    let err = install.fails(&[
        "serve",
        "--listen-auth",
        "127.0.0.1:0",
        "--listen-acct",
        "127.0.0.1:0",
    ]);
    assert!(
        err.contains("does not exist") && err.contains("shardius keygen"),
        "{err}"
    );
}

fn a_wrong_master_key_is_a_counted_reject_not_a_crash(backend: Backend) {
    let install = Install::new_on(backend);
    std::fs::remove_file(install.key()).unwrap();
    install.ok(&["keygen", "--out", install.key().to_str().unwrap()]);
    let mut server = install.serve(1);
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    let code = nas.login(
        server.auth,
        "alice",
        &Credentials::Pap {
            password: b"s3cret",
        },
        &Session::default(),
    );
    assert_eq!(code, Some(Code::ACCESS_REJECT));
    server.wait_for_log("reason=\"password decrypt failed\"", Duration::from_secs(5));
}

on_both_backends!(
    radclient_authenticates_pap_and_chap_and_sees_the_mikrotik_reply,
    mschapv2_logins_get_ms_chap2_success_and_mppe_keys_that_decrypt,
    every_reject_reason_is_an_access_reject_with_its_reason_logged,
    an_unknown_nas_gets_no_answer_and_is_logged_and_counted,
    a_wrong_secret_never_gets_an_accept,
    a_retransmission_gets_the_identical_reply_from_the_duplicate_cache_of_its_shard,
    one_nas_source_port_is_spread_over_every_shard,
    a_nas_added_with_the_cli_while_running_is_served_without_a_restart,
    the_server_refuses_to_start_without_a_usable_key_file,
    a_wrong_master_key_is_a_counted_reject_not_a_crash,
);

/// Sends `n` PAP logins for alice back to back from one socket, then
/// collects the replies; returns how many were accepted.
fn burst_logins(to: std::net::SocketAddr, n: u8) -> usize {
    use shardius::nas_client as nas;
    use shardius::proto::Secret;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let secret = Secret::new(SECRET.as_bytes());
    let creds = Credentials::Pap {
        password: b"s3cret",
    };
    let mut auths = std::collections::HashMap::new();
    for id in 0..n {
        let auth: [u8; 16] = rand::random();
        let mut buf = [0u8; 4096];
        let req = nas::access_request(
            &mut buf,
            id,
            &auth,
            &secret,
            b"alice",
            &creds,
            &Session::default(),
        )
        .unwrap();
        socket.send_to(req, to).unwrap();
        auths.insert(id, auth);
    }
    let mut accepted = 0;
    let mut reply = [0u8; 4096];
    while let Ok(len) = socket.recv(&mut reply) {
        let id = reply[1];
        if let Some(auth) = auths.remove(&id) {
            if nas::check_access_reply(&reply[..len], id, &auth, &secret, b"alice", &creds)
                .map(|r| r.code)
                == Ok(Code::ACCESS_ACCEPT)
            {
                accepted += 1;
            }
        }
        if auths.is_empty() {
            break;
        }
    }
    accepted
}

fn accepts_rejects_and_accounting_are_written_to_radius_logs(backend: Backend) {
    let install = Install::new_on(backend);
    let server = install.serve(2);
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
    assert_eq!(
        nas.login(
            server.auth,
            "alice",
            &Credentials::Pap { password: b"nope" },
            &Session::default()
        ),
        Some(Code::ACCESS_REJECT)
    );
    let out = radclient(
        server.acct,
        "acct",
        "Acct-Status-Type = Start\nAcct-Session-Id = \"log-1\"\nUser-Name = \"alice\"\n",
    );
    assert!(out.contains("Received Accounting-Response"), "{out}");
    // Hostile names reach radius_logs in their stored form: a NUL and a
    // byte that is not UTF-8, and one too long to be kept inline.
    let hostile: [&[u8]; 2] = [b"ev\0il\xff", &[b'x'; 200]];
    for name in hostile {
        let mut buf = [0u8; 4096];
        let request = shardius::nas_client::access_request(
            &mut buf,
            9,
            &rand::random(),
            &shardius::proto::Secret::new(SECRET.as_bytes()),
            name,
            &Credentials::Pap { password: b"pw" },
            &Session::default(),
        )
        .unwrap()
        .to_vec();
        let reply = nas.send_raw(server.auth, &request).expect("answered");
        assert_eq!(Code(reply[0]), Code::ACCESS_REJECT);
    }
    let stored: Vec<String> = hostile
        .iter()
        .map(|n| shardius::text::stored(n).into_owned())
        .collect();
    assert!(stored[0].contains("\\x00"), "{}", stored[0]);
    let mut store =
        shardius::store::open(&shardius::store::DatabaseUrl::parse(&install.db_url).unwrap())
            .unwrap();
    let want = [
        ("alice", "auth", "accept", None),
        ("alice", "auth", "reject", Some("bad password")),
        ("alice", "acct", "start", None),
        (stored[0].as_str(), "auth", "reject", Some("unknown user")),
        (stored[1].as_str(), "auth", "reject", Some("unknown user")),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = store.recent_logs(10).unwrap();
        let has = |w: &(&str, &str, &str, Option<&str>)| {
            rows.iter()
                .any(|r| r.0 == w.0 && r.1 == w.1 && r.2 == w.2 && r.3.as_deref() == w.3)
        };
        if want.iter().all(has) {
            break;
        }
        assert!(Instant::now() < deadline, "radius_logs has {rows:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn a_full_log_queue_drops_and_counts_without_slowing_authentication(backend: Backend) {
    let install = Install::new_on(backend);
    install.write_config(
        "[database]\nreload_interval_secs = 1\n[log]\nqueue_capacity = 1\nworkers = 1\n",
    );
    let server = install.serve(1);
    assert_eq!(
        burst_logins(server.auth, 200),
        200,
        "every login answered while logs are dropped"
    );
    let (_, log) = server.stop();
    let dropped: u64 = shard_counters(&log, "log_dropped").iter().sum();
    assert!(dropped > 0, "no drops counted:\n{log}");
    assert!(log.contains("radius_logs stopped: written="), "{log}");
}

on_both_backends!(
    accepts_rejects_and_accounting_are_written_to_radius_logs,
    a_full_log_queue_drops_and_counts_without_slowing_authentication,
);

/// The CPUs each of the server's threads may run on, by thread name.
fn thread_cpus(pid: u32) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let dir = task.path();
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue;
        };
        if let Some(list) = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        {
            out.insert(comm.trim().to_owned(), list.trim().to_owned());
        }
    }
    out
}

/// With a CPU to spare, one shard has its own and the background threads
/// the rest (`server.background_cpus = "auto"`); "shared" leaves them
/// where the kernel puts them.
#[test]
fn background_threads_keep_off_the_shards_cpu_when_one_is_spare() {
    let allowed = shardius::server::cpus::allowed();
    let install = Install::new();
    let mut server = install.serve(1);
    let line = server.wait_for_log("shards on CPUs", Duration::from_secs(10));
    // Every thread is up (the radius_logs workers start last).
    let names = [
        "acct-writer",
        "jobs",
        "loader",
        "usage",
        "cluster",
        "radius-log-0",
    ];
    let mut threads = thread_cpus(server.pid());
    let up = crate::common::pg::eventually(Duration::from_secs(10), || {
        threads = thread_cpus(server.pid());
        names.iter().all(|n| threads.contains_key(*n))
    });
    assert!(up, "{threads:?}");
    let fmt = shardius::server::cpus::format_list;
    // glommio names the executor's thread "shard-0-<executor id>".
    let shard = threads
        .iter()
        .find(|(name, _)| name.starts_with("shard-0"))
        .map(|(_, cpus)| cpus.clone());
    assert_eq!(shard, Some(allowed[0].to_string()), "{threads:?}");
    if allowed.len() > 1 {
        let rest = fmt(&allowed[1..]);
        assert!(
            line.contains(&format!("background threads on CPUs {rest}")),
            "{line}"
        );
        for name in names {
            assert_eq!(threads[name], rest, "{name}: {threads:?}");
        }
    } else {
        assert!(line.contains("share them"), "{line}");
    }
    drop(server);

    let mut server = install.serve_with_env(
        &["--shards", "1"],
        &[("SHARDIUS_SERVER_BACKGROUND_CPUS", "shared")],
    );
    server.wait_for_log("share them", Duration::from_secs(10));
    let mut threads = thread_cpus(server.pid());
    let up = crate::common::pg::eventually(Duration::from_secs(10), || {
        threads = thread_cpus(server.pid());
        threads.contains_key("acct-writer")
    });
    assert!(up, "{threads:?}");
    assert_eq!(threads["acct-writer"], fmt(&allowed), "{threads:?}");
    drop(server);

    // A bad setting is a clear error.
    let out = install
        .command(&["check-config"])
        .env("SHARDIUS_SERVER_BACKGROUND_CPUS", "7-2")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SHARDIUS_SERVER_BACKGROUND_CPUS"));
}
