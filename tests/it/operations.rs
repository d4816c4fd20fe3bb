//! Operations (issue 7): `/metrics` moves by exactly what was sent and
//! passes `promtool check metrics`, `/healthz`, systemd readiness and
//! watchdog notifications, and the log lines operators grep for.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::server::{
    acct_record, metric_value, send_accounting, Backend, Install, Server, TestNas, SECRET,
};
use shardius::nas_client::{Credentials, Session};
use shardius::proto::dict::acct_status;
use shardius::proto::Code;

on_both_backends!(metrics_count_exactly_what_was_sent);

/// Polls `/metrics` until `series` reaches `want` (shards publish their
/// counters every 200 ms); returns the whole exposition.
fn wait_for_metric(server: &Server, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = server.http_get("/metrics");
        assert_eq!(status, 200, "{body}");
        if metric_value(&body, series) >= want || Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `promtool check metrics` (Debian's prometheus package, which
/// scripts/test installs) on an exposition.
fn promtool_check(exposition: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool missing in CI: scripts/test installs Debian's prometheus package"
        );
        eprintln!("promtool not installed: skipping the lint (scripts/test installs it)");
        return;
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metrics_count_exactly_what_was_sent(backend: Backend) {
    let install = Install::new_on(backend);
    let server = install.serve(2);
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    let good = Credentials::Pap {
        password: b"s3cret",
    };
    let bad = Credentials::Pap { password: b"nope" };
    for _ in 0..100 {
        assert_eq!(
            nas.login(server.auth, "alice", &good, &Session::default()),
            Some(Code::ACCESS_ACCEPT)
        );
    }
    for _ in 0..3 {
        assert_eq!(
            nas.login(server.auth, "alice", &bad, &Session::default()),
            Some(Code::ACCESS_REJECT)
        );
    }
    let mut stranger = TestNas::bind("127.0.0.2", SECRET);
    stranger.set_timeout(Duration::from_millis(200));
    assert_eq!(
        stranger.login(server.auth, "alice", &good, &Session::default()),
        None
    );
    // One accounting Start: written, committed, one open session.
    send_accounting(
        server.acct,
        &acct_record(acct_status::START, "alice", "81a00001", 0, 0, None),
    );

    wait_for_metric(&server, "shardius_open_sessions", 1.0);
    let body = wait_for_metric(&server, "shardius_unknown_nas_packets_total", 1.0);
    let m = |series: &str| metric_value(&body, series);
    assert_eq!(m("shardius_access_accepts_total"), 100.0, "{body}");
    assert_eq!(
        m("shardius_access_rejects_total{reason=\"bad_password\"}"),
        3.0
    );
    assert_eq!(
        m("shardius_access_rejects_total{reason=\"unknown_user\"}"),
        0.0
    );
    assert_eq!(m("shardius_requests_total{type=\"access\"}"), 103.0);
    assert_eq!(m("shardius_requests_total{type=\"accounting\"}"), 1.0);
    assert_eq!(m("shardius_unknown_nas_packets_total"), 1.0);
    assert_eq!(
        m("shardius_dropped_packets_total{reason=\"unknown_nas\"}"),
        1.0
    );
    assert_eq!(m("shardius_message_authenticator_failures_total"), 0.0);
    assert_eq!(m("shardius_auth_latency_seconds_count"), 103.0);
    assert_eq!(
        m("shardius_auth_latency_seconds_bucket{le=\"+Inf\"}"),
        103.0
    );
    assert!(m("shardius_auth_latency_seconds_sum") > 0.0);
    assert_eq!(m("shardius_accounting_events_written_total"), 1.0);
    assert_eq!(m("shardius_accounting_batches_committed_total"), 1.0);
    assert_eq!(m("shardius_accounting_batch_size_count"), 1.0);
    assert_eq!(m("shardius_accounting_commit_seconds_count"), 1.0);
    assert_eq!(m("shardius_accounting_backpressure_drops_total"), 0.0);
    assert_eq!(m("shardius_accounting_queue_depth"), 0.0);
    assert_eq!(m("shardius_open_sessions"), 1.0);
    assert_eq!(m("shardius_nas_loaded"), 1.0);
    assert_eq!(m("shardius_subscribers_cached"), 1.0);
    assert_eq!(m("shardius_shards"), 2.0);
    assert_eq!(m("shardius_shards_alive"), 2.0);
    assert_eq!(m("shardius_database_up"), 1.0);
    assert!(m("shardius_snapshot_age_seconds") < 10.0, "{body}");
    assert_eq!(
        m("shardius_coa_requests_total{kind=\"coa\",result=\"ack\"}"),
        0.0
    );
    // The per-shard split adds up to the total.
    assert_eq!(
        m("shardius_shard_requests_total{shard=\"0\"}")
            + m("shardius_shard_requests_total{shard=\"1\"}"),
        104.0
    );
    // No username, password or NAS address ever becomes a label.
    for forbidden in ["alice", "s3cret", "127.0.0.2", SECRET] {
        assert!(!body.contains(forbidden), "{forbidden} in:\n{body}");
    }
    promtool_check(&body);
}

#[test]
fn a_message_authenticator_failure_is_counted() {
    let install = Install::new();
    let server = install.serve(1);
    // Signed with the wrong secret: the Message-Authenticator does not verify.
    let mut nas = TestNas::bind("127.0.0.1", "not-the-secret");
    let creds = Credentials::Pap {
        password: b"s3cret",
    };
    nas.set_timeout(Duration::from_millis(200));
    assert_eq!(
        nas.login(server.auth, "alice", &creds, &Session::default()),
        None
    );
    let body = wait_for_metric(
        &server,
        "shardius_message_authenticator_failures_total",
        1.0,
    );
    assert_eq!(
        metric_value(&body, "shardius_message_authenticator_failures_total"),
        1.0,
        "{body}"
    );
    assert_eq!(
        metric_value(
            &body,
            "shardius_dropped_packets_total{reason=\"bad_message_authenticator\"}"
        ),
        1.0
    );
}

/// A datagram longer than any RADIUS packet whose first 4096 bytes are a
/// valid Access-Request: the batch receive must not hand the cut copy on
/// as that request. It is counted as malformed, and the shard answers the
/// same login sent properly right after it.
#[test]
fn an_oversized_datagram_is_dropped_whole_not_answered_cut() {
    let install = Install::new();
    let server = install.serve(1);
    let nas = TestNas::bind("127.0.0.1", SECRET);
    nas.set_timeout(Duration::from_millis(300));
    let creds = Credentials::Pap {
        password: b"s3cret",
    };
    let mut buf = [0u8; 4096];
    let request = shardius::nas_client::access_request(
        &mut buf,
        7,
        &rand::random(),
        &shardius::proto::Secret::new(SECRET.as_bytes()),
        b"alice",
        &creds,
        &Session::default(),
    )
    .unwrap()
    .to_vec();
    let mut oversized = request.clone();
    oversized.resize(5000, 0);
    assert_eq!(nas.send_raw(server.auth, &oversized), None, "no answer");
    let body = wait_for_metric(
        &server,
        "shardius_dropped_packets_total{reason=\"bad_length\"}",
        1.0,
    );
    assert_eq!(
        metric_value(
            &body,
            "shardius_dropped_packets_total{reason=\"bad_length\"}"
        ),
        1.0,
        "{body}"
    );
    nas.set_timeout(Duration::from_secs(5));
    let reply = nas
        .send_raw(server.auth, &request)
        .expect("the request alone is answered");
    assert_eq!(Code(reply[0]), Code::ACCESS_ACCEPT);
}

#[test]
fn healthz_reports_shards_database_and_snapshot_age() {
    let install = Install::new();
    let server = install.serve(2);
    let (status, body) = server.http_get("/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    assert!(body.contains("\"shards\":2"), "{body}");
    assert!(body.contains("\"shards_alive\":2"), "{body}");
    assert!(body.contains("\"database\":\"up\""), "{body}");
    assert!(body.contains("\"subscribers\":1"), "{body}");
    let (status, _) = server.http_get("/nope");
    assert_eq!(status, 404);
}

#[test]
fn the_http_listener_can_be_turned_off() {
    let install = Install::new();
    let mut server = install.serve_with(&["--shards", "1", "--no-http"]);
    let line = server.wait_for_log("listening auth=", Duration::from_secs(5));
    assert!(line.contains("http=off"), "{line}");
}

#[test]
fn a_taken_http_port_fails_the_start_with_the_key_named() {
    let install = Install::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = install.fails(&[
        "serve",
        "--listen-auth",
        "127.0.0.1:0",
        "--listen-acct",
        "127.0.0.1:0",
        "--listen-http",
        &addr,
    ]);
    assert!(err.contains("http.listen"), "{err}");
    assert!(err.contains(&addr), "{err}");
}

/// Reads notify messages until one contains `needle`.
fn wait_for_notify(socket: &UnixDatagram, needle: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.lines().any(|l| l == needle);
            seen.push(msg);
            if hit {
                return;
            }
        }
    }
    panic!("no {needle} notification; got {seen:?}");
}

#[test]
fn systemd_gets_ready_watchdog_and_stopping() {
    let install = Install::new();
    let path = install.path("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let server = install.serve_with_env(
        &["--shards", "2"],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut seen = Vec::new();
    // READY is sent after "listening", which serve_with already waited for.
    wait_for_notify(&socket, "READY=1", &mut seen);
    assert!(
        seen.iter().any(|m| m.contains("STATUS=serving 1 NAS")),
        "{seen:?}"
    );
    wait_for_notify(&socket, "WATCHDOG=1", &mut seen);
    wait_for_notify(&socket, "WATCHDOG=1", &mut seen);
    let (ok, log) = server.stop();
    assert!(ok, "{log}");
    wait_for_notify(&socket, "STOPPING=1", &mut seen);
}

#[test]
fn json_logs_are_one_object_per_line_with_the_operator_lines() {
    let install = Install::new();
    let mut stranger = TestNas::bind("127.0.0.2", SECRET);
    stranger.set_timeout(Duration::from_millis(200));
    let mut server = install.serve_with_env(
        &["--shards", "1"],
        &[
            ("SHARDIUS_LOG_FORMAT", "json"),
            ("SHARDIUS_LOG_LEVEL", "debug"),
        ],
    );
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    for password in [&b"s3cret"[..], b"wrong-pass"] {
        nas.login(
            server.auth,
            "alice",
            &Credentials::Pap { password },
            &Session::default(),
        );
    }
    let creds = Credentials::Pap {
        password: b"s3cret",
    };
    stranger.login(server.auth, "alice", &creds, &Session::default());
    server.wait_for_log("unknown NAS: 127.0.0.2", Duration::from_secs(5));
    let (_, log) = server.stop();
    let mut messages = Vec::new();
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["timestamp"].is_string(), "{line}");
        messages.push(value["message"].as_str().unwrap_or_default().to_owned());
    }
    assert!(
        messages.iter().any(|m| m == "Loaded 1 NAS secrets"),
        "{log}"
    );
    assert!(
        messages.iter().any(|m| m == "unknown NAS: 127.0.0.2"),
        "{log}"
    );
    // Even at debug level no password or secret reaches the log.
    for secret in ["s3cret", "wrong-pass", SECRET] {
        assert!(!log.contains(secret), "{secret} logged:\n{log}");
    }
}

#[test]
fn too_little_locked_memory_fails_the_start_naming_the_fix() {
    use std::os::unix::process::CommandExt;
    let install = Install::new();
    let mut cmd = install.command(&[
        "serve",
        "--listen-auth",
        "127.0.0.1:0",
        "--listen-acct",
        "127.0.0.1:0",
        "--no-http",
    ]);
    // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: 64 << 10,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("RLIMIT_MEMLOCK is 64 KiB"), "{stderr}");
    assert!(stderr.contains("LimitMEMLOCK="), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}
