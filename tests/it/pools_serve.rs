//! Server-side addressing end to end: the real server, loadgen storms over
//! UDP, radclient, a fake NAS for the conflict CoA, and the database read
//! back. One address is never on two open sessions, a returning subscriber
//! gets its address back, an exhausted pool rejects with the reason.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shardius::nas_client::{self as nas, Session};
use shardius::proto::dict::{acct_status, attr};
use shardius::proto::Secret;

use crate::common::fake_nas::FakeNas;
use crate::common::pg;
use crate::common::server::{
    acct_record, radclient, send_accounting, Backend, Install, Server, SECRET,
};

/// loadgen, built next to shardius by the workspace build.
fn loadgen_bin() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_shardius")).with_file_name("loadgen");
    assert!(
        path.exists(),
        "{} missing: run the workspace tests (./scripts/test)",
        path.display()
    );
    path
}

/// One line of loadgen's `--addresses` file.
#[derive(Clone, Debug)]
struct Login {
    n: usize,
    user: String,
    result: String,
    ip: Option<Ipv4Addr>,
    session_id: String,
    port_id: String,
    /// The NAS-Port loadgen used (the line's position).
    nas_port: u32,
}

/// A loadgen storm (MS-CHAPv2, Start after each accept) of `numbers`
/// (None: user1..=count) against `auth`/`acct`; returns every login.
fn storm(
    dir: &Path,
    tag: &str,
    auth: SocketAddr,
    acct: SocketAddr,
    count: usize,
    numbers: Option<&[usize]>,
    stop_after_start: bool,
) -> Vec<Login> {
    let out = dir.join(format!("{tag}.tsv"));
    let mut cmd = Command::new(loadgen_bin());
    cmd.args([
        "--server",
        &auth.ip().to_string(),
        "--auth-port",
        &auth.port().to_string(),
        "--acct-port",
        &acct.port().to_string(),
        "--secret",
        SECRET,
        "--scenario",
        "storm",
        "--auth",
        "mschapv2",
        "--subscribers",
        &count.to_string(),
        "--inflight",
        "256",
        "--timeout-ms",
        "2000",
        "--retries",
        "4",
        "--quiet",
        "--addresses",
    ])
    .arg(&out);
    if let Some(numbers) = numbers {
        let file = dir.join(format!("{tag}.numbers"));
        let text: String = numbers.iter().map(|n| format!("{n}\n")).collect();
        std::fs::write(&file, text).unwrap();
        cmd.arg("--numbers").arg(file);
    }
    if stop_after_start {
        cmd.arg("--stop-after-start");
    }
    let run = cmd.output().expect("run loadgen");
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "loadgen {tag}: {report}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let logins = read_logins(&out);
    assert!(
        logins
            .iter()
            .all(|l| l.result == "accept" || l.result == "reject"),
        "{tag}: every login answered: {:?}\n{report}",
        logins
            .iter()
            .filter(|l| l.result != "accept" && l.result != "reject")
            .take(5)
            .collect::<Vec<_>>()
    );
    logins
}

fn read_logins(path: &Path) -> Vec<Login> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 6, "{line}");
            Login {
                n: f[0].parse().unwrap(),
                user: f[1].into(),
                result: f[2].into(),
                ip: f[3].parse().ok(),
                session_id: f[4].into(),
                port_id: f[5].into(),
                nas_port: i as u32,
            }
        })
        .collect()
}

/// Ends the sessions of `logins` as loadgen's NAS would (same NAS-IP,
/// session id, NAS-Port, NAS-Port-Id, so the same radacct row), each
/// Stop acknowledged.
fn stop_all(acct: SocketAddr, logins: &[&Login]) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let secret = Secret::new(SECRET.as_bytes());
    for l in logins {
        let mac = format!(
            "02:00:{:02X}:{:02X}:{:02X}:{:02X}",
            (l.n >> 24) & 255,
            (l.n >> 16) & 255,
            (l.n >> 8) & 255,
            l.n & 255
        );
        let session = Session {
            nas_ip: Ipv4Addr::LOCALHOST,
            nas_identifier: b"loadgen",
            nas_port: l.nas_port,
            nas_port_id: l.port_id.as_bytes(),
            calling_station_id: mac.as_bytes(),
            called_station_id: b"pppoe-service",
        };
        let mut record = acct_record(acct_status::STOP, &l.user, &l.session_id, 60, 1000, l.ip);
        record.terminate_cause = Some(1);
        let mut buf = [0u8; 4096];
        let request = nas::accounting_request(&mut buf, 7, &secret, &record, &session)
            .unwrap()
            .to_vec();
        let mut acked = false;
        for _ in 0..5 {
            socket.send_to(&request, acct).unwrap();
            let mut reply = [0u8; 4096];
            if let Ok(n) = socket.recv(&mut reply) {
                nas::check_accounting_reply(
                    &reply[..n],
                    7,
                    request[4..20].try_into().unwrap(),
                    &secret,
                )
                .expect("a valid Accounting-Response");
                acked = true;
                break;
            }
        }
        assert!(acked, "Stop of {} acknowledged", l.user);
    }
}

/// An installation with NAS 127.0.0.1 (CoA to `coa_port`), service 10M on
/// pool `pool` defined by `pool_args`, and `extra` config.
fn install_with_pool(backend: Backend, coa_port: u16, pool_args: &[&str], extra: &str) -> Install {
    let install = Install::empty_on(backend);
    install.write_config(&format!(
        "[database]\nreload_interval_secs = 1\nopen_sessions_interval_secs = 1\n\n[coa]\ntries = 3\ntimeout_ms = 300\n{extra}"
    ));
    install.provision_nas("mikrotik", coa_port);
    let mut args = vec!["pool", "add"];
    args.extend_from_slice(pool_args);
    install.ok(&args);
    let pool = pool_args[1];
    assert!(install
        .ok(&["service", "set", "10M", "--pool", pool])
        .contains(pool));
    install
}

/// `pool list`'s counts for `pool`: (size, in use, held, offered, free).
fn counts(install: &Install, pool: &str) -> [u64; 5] {
    let list = install.ok(&["pool", "list"]);
    let line = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some(pool))
        .unwrap_or_else(|| panic!("{list}"));
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(2)
        .map(|x| x.parse().unwrap())
        .collect();
    [f[0], f[1], f[2], f[3], f[4]]
}

fn wait_for_counts(install: &Install, pool: &str, want: impl Fn([u64; 5]) -> bool) -> [u64; 5] {
    let mut last = [0; 5];
    let ok = pg::eventually(Duration::from_secs(20), || {
        last = counts(install, pool);
        want(last)
    });
    assert!(
        ok,
        "pool {pool}: [size, in_use, held, offered, free] = {last:?}"
    );
    last
}

/// Every address handed out once: (user → address) of the accepted.
fn distinct(logins: &[Login]) -> HashMap<String, Ipv4Addr> {
    let mut by_ip: HashMap<Ipv4Addr, &str> = HashMap::new();
    let mut by_user = HashMap::new();
    for l in logins.iter().filter(|l| l.result == "accept") {
        let ip =
            l.ip.unwrap_or_else(|| panic!("{} accepted without an address", l.user));
        if let Some(other) = by_ip.insert(ip, &l.user) {
            panic!("{ip} given to {other} and {}", l.user);
        }
        by_user.insert(l.user.clone(), ip);
    }
    by_user
}

#[test]
fn a_storm_on_a_full_pool_gets_distinct_addresses_and_each_its_own_again() {
    // 10.64.0.1 .. 10.64.19.136: exactly 5,000 usable addresses.
    let install = install_with_pool(
        Backend::Sqlite,
        1700,
        &["--name", "full", "--range", "10.64.0.1-10.64.19.136"],
        "",
    );
    install.import_subscribers(5000, "10M");
    let server = install.serve(2);
    let dir = install.path("");
    let first = storm(&dir, "first", server.auth, server.acct, 5000, None, true);
    let got = distinct(&first);
    assert_eq!(got.len(), 5000, "all accepted, each its own address");
    // The Stops reached the database: every address held for its subscriber.
    wait_for_counts(&install, "full", |c| c == [5000, 0, 5000, 0, 0]);

    let again = storm(&dir, "again", server.auth, server.acct, 5000, None, true);
    let got_again = distinct(&again);
    assert_eq!(got_again.len(), 5000);
    let moved: Vec<_> = got
        .iter()
        .filter(|(u, ip)| got_again.get(*u) != Some(ip))
        .take(5)
        .collect();
    assert!(
        moved.is_empty(),
        "every subscriber its previous address: {moved:?}"
    );
    assert_eq!(server.metric("shardius_ip_conflicts_total"), 0.0);
    assert_eq!(
        server.metric(r#"shardius_access_rejects_total{reason="pool_exhausted"}"#),
        0.0
    );
}

#[test]
fn an_exhausted_pool_rejects_and_reuses_the_longest_held_for_newcomers() {
    // 10.65.0.1 .. 10.65.15.160: 4,000 addresses for 5,000 subscribers.
    let install = install_with_pool(
        Backend::Sqlite,
        1700,
        &["--name", "small", "--range", "10.65.0.1-10.65.15.160"],
        "",
    );
    install.import_subscribers(5000, "10M");
    let server = install.serve(2);
    let dir = install.path("");
    let first = storm(&dir, "first", server.auth, server.acct, 5000, None, false);
    let got = distinct(&first);
    assert_eq!(got.len(), 4000, "as many accepted as there are addresses");
    let rejected: Vec<usize> = first
        .iter()
        .filter(|l| l.result == "reject")
        .map(|l| l.n)
        .collect();
    assert_eq!(rejected.len(), 1000);
    assert_eq!(
        server.metric(r#"shardius_access_rejects_total{reason="pool_exhausted"}"#),
        1000.0
    );
    assert_eq!(
        server.metric(r#"shardius_pool_exhausted_total{pool="small"}"#),
        1000.0
    );
    assert!(server.log().contains("pool small exhausted"));
    wait_for_counts(&install, "small", |c| c == [4000, 4000, 0, 0, 0]);

    // 500 sessions end: their addresses are held for their subscribers,
    // then (no free address left) the longest held go to newcomers.
    let stopped: Vec<&Login> = first
        .iter()
        .filter(|l| l.result == "accept")
        .take(500)
        .collect();
    stop_all(server.acct, &stopped);
    wait_for_counts(&install, "small", |c| c == [4000, 3500, 500, 0, 0]);
    // A row that changed hands is not given to another subscriber within
    // 10 s (another node may still answer from memory).
    std::thread::sleep(Duration::from_secs(10));
    let second = storm(
        &dir,
        "second",
        server.auth,
        server.acct,
        1000,
        Some(&rejected),
        false,
    );
    let newcomers = distinct(&second);
    assert_eq!(newcomers.len(), 500, "500 of the rejected log in");
    let freed: HashSet<Ipv4Addr> = stopped.iter().map(|l| l.ip.unwrap()).collect();
    assert!(
        newcomers.values().all(|ip| freed.contains(ip)),
        "only the addresses of the ended sessions are reused"
    );
    wait_for_counts(&install, "small", |c| c == [4000, 4000, 0, 0, 0]);
}

/// Logs in `user` (MS-CHAPv2 via the test NAS); the Access-Accept's
/// Framed-IP-Address and Delegated-IPv6-Prefix.
fn login(server: &Server, user: &str) -> (Option<Ipv4Addr>, Option<Vec<u8>>) {
    let out = radclient(
        server.auth,
        "auth",
        &format!("User-Name = \"{user}\", User-Password = \"s3cret\""),
    );
    assert!(out.contains("Received Access-Accept"), "{out}");
    let v4 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Framed-IP-Address = "))
        .map(|ip| ip.trim().parse().unwrap());
    let v6 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Delegated-IPv6-Prefix = "))
        .map(|p| p.trim().as_bytes().to_vec());
    (v4, v6)
}

#[test]
fn an_offer_without_a_start_is_free_again_after_the_offer_timeout() {
    let install = install_with_pool(
        Backend::Sqlite,
        1700,
        &[
            "--name",
            "short",
            "--range",
            "10.66.0.1-10.66.0.4",
            "--offer-timeout-secs",
            "2",
        ],
        "",
    );
    install.add_user("alice");
    let server = install.serve(1);
    let (ip, _) = login(&server, "alice");
    assert_eq!(ip, Some(Ipv4Addr::new(10, 66, 0, 1)));
    // Positive signal first: the offer is in the database.
    wait_for_counts(&install, "short", |c| c == [4, 0, 0, 1, 3]);
    // No Start: free again after 2 s (+ up to a 1 s sweep).
    wait_for_counts(&install, "short", |c| c == [4, 0, 0, 0, 4]);
    assert!(install.ok(&["pool", "show", "short"]).lines().count() <= 2);
}

fn a_conflicting_start_is_counted_and_the_older_session_disconnected(backend: Backend) {
    let fake = FakeNas::start(SECRET);
    let install = install_with_pool(
        backend,
        fake.addr.port(),
        &["--name", "c", "--range", "10.67.0.1-10.67.0.8"],
        "\n[pools]\nresolve_conflicts = \"disconnect-older\"\n",
    );
    install.add_user("alice");
    install.add_user("bob");
    let server = install.serve(1);
    let (ip, _) = login(&server, "alice");
    let ip = ip.expect("alice gets an address");
    send_accounting(
        server.acct,
        &acct_record(acct_status::START, "alice", "sess-a", 0, 0, Some(ip)),
    );
    wait_for_counts(&install, "c", |c| c[1] == 1);
    // bob's router allocated by itself: alice's address.
    send_accounting(
        server.acct,
        &acct_record(acct_status::START, "bob", "sess-b", 0, 0, Some(ip)),
    );
    let got = fake.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "one Disconnect-Request");
    assert_eq!(got[0].code, shardius::proto::Code::DISCONNECT_REQUEST);
    assert_eq!(got[0].attr(attr::USER_NAME), Some(&b"alice"[..]));
    assert_eq!(got[0].attr(attr::ACCT_SESSION_ID), Some(&b"sess-a"[..]));
    assert!(pg::eventually(Duration::from_secs(5), || server
        .metric("shardius_ip_conflicts_total")
        == 1.0));
    assert!(server.log().contains("address conflict: 10.67.0."));
    // Counted once while it lasts: still 1 two sweeps later.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(server.metric("shardius_ip_conflicts_total"), 1.0);
    assert_eq!(fake.received().len(), 1);
}

on_both_backends!(a_conflicting_start_is_counted_and_the_older_session_disconnected);

#[test]
fn dual_stack_gets_a_sticky_delegated_prefix_and_radacct_has_it() {
    let install = install_with_pool(
        Backend::Sqlite,
        1700,
        &["--name", "v4", "--range", "10.68.0.1-10.68.0.9"],
        "",
    );
    install.ok(&[
        "pool",
        "add",
        "--name",
        "pd",
        "--ipv6-prefix",
        "2001:db8:ff00::/48",
        "--prefix-len",
        "56",
    ]);
    install.ok(&[
        "pool",
        "add",
        "--name",
        "link6",
        "--ipv6-prefix",
        "2001:db8:fe00::/60",
        "--prefix-len",
        "64",
        "--framed",
    ]);
    install.ok(&[
        "service", "set", "10M", "--pool", "v4", "--pool", "pd", "--pool", "link6",
    ]);
    install.add_user("alice");
    install.add_user("bob");
    let server = install.serve(1);
    // Framed-IPv6-Prefix from the /64 pool, one per subscriber, sticky.
    let framed = |user: &str| {
        let out = radclient(
            server.auth,
            "auth",
            &format!("User-Name = \"{user}\", User-Password = \"s3cret\""),
        );
        out.lines()
            .find_map(|l| l.trim().strip_prefix("Framed-IPv6-Prefix = "))
            .map(|p| p.trim().to_owned())
            .unwrap_or_else(|| panic!("{out}"))
    };
    let (fa, fb) = (framed("alice"), framed("bob"));
    assert!(
        fa.starts_with("2001:db8:fe00:") && fa.ends_with("/64"),
        "{fa}"
    );
    assert_ne!(fa, fb);
    assert_eq!(framed("alice"), fa);
    let (a4, a6) = login(&server, "alice");
    let (b4, b6) = login(&server, "bob");
    assert!(a4.is_some() && b4.is_some() && a4 != b4);
    let (a6, b6) = (a6.expect("alice's prefix"), b6.expect("bob's prefix"));
    assert_ne!(a6, b6, "one prefix, one subscriber");
    assert_eq!(login(&server, "alice"), (a4, Some(a6.clone())), "sticky");
    let prefix = String::from_utf8(a6).unwrap();
    assert!(
        prefix.ends_with("/56") && prefix.starts_with("2001:db8:ff00:"),
        "{prefix}"
    );
    let out = radclient(
        server.acct,
        "acct",
        &format!(
            "Acct-Status-Type = Start, User-Name = \"alice\", Acct-Session-Id = \"v6s\", \
             NAS-IP-Address = 127.0.0.1, Framed-IP-Address = {}, Delegated-IPv6-Prefix = {prefix}",
            a4.unwrap()
        ),
    );
    assert!(out.contains("Accounting-Response"), "{out}");
    wait_for_counts(&install, "pd", |c| c[1] == 1);
    let show = install.ok(&["pool", "show", "pd"]);
    assert!(
        show.lines()
            .any(|l| l.starts_with(&prefix) && l.contains("in_use") && l.contains("alice")),
        "{show}"
    );
    // radacct's column, read back from the database.
    let db = install.db_url.trim_start_matches("sqlite:").to_owned();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: String = conn
        .query_row(
            "SELECT delegatedipv6prefix FROM radacct WHERE acctsessionid = 'v6s'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, prefix);
}

#[test]
fn kill_9_under_login_load_hands_no_address_to_two_sessions() {
    let install = install_with_pool(
        Backend::Sqlite,
        1700,
        &["--name", "k", "--range", "10.69.0.1-10.69.11.184"],
        "",
    );
    // 3,000 addresses, 2,000 subscribers.
    install.import_subscribers(2000, "10M");
    let dir = install.path("");
    let server = install.serve(2);
    let (auth, acct) = (server.auth, server.acct);
    let load = std::thread::spawn({
        let dir = dir.clone();
        move || {
            let out = dir.join("killed.tsv");
            Command::new(loadgen_bin())
                .args([
                    "--server",
                    "127.0.0.1",
                    "--auth-port",
                    &auth.port().to_string(),
                    "--acct-port",
                    &acct.port().to_string(),
                    "--scenario",
                    "storm",
                    "--subscribers",
                    "2000",
                    "--inflight",
                    "64",
                    "--timeout-ms",
                    "300",
                    "--retries",
                    "1",
                    "--quiet",
                    "--addresses",
                ])
                .arg(&out)
                .output()
                .unwrap();
            read_logins(&out)
        }
    });
    // Some addresses claimed, then the crash mid-storm.
    wait_for_counts(&install, "k", |c| c[1] + c[3] >= 200);
    server.kill9();
    let before = load.join().unwrap();
    let answered_before = distinct(&before);

    let server = install.serve(2);
    let after = storm(&dir, "after", server.auth, server.acct, 2000, None, false);
    let got = distinct(&after);
    assert_eq!(
        got.len(),
        2000,
        "everyone in after the restart, each its own address"
    );
    // Whoever got an address before the crash has the same one now.
    for (user, ip) in &answered_before {
        assert_eq!(got.get(user), Some(ip), "{user} before and after the crash");
    }
    // The database agrees: every open session's address is its own.
    wait_for_counts(&install, "k", |c| c[1] == 2000);
    let show = install.ok(&["pool", "show", "k"]);
    let mut users = HashSet::new();
    for line in show.lines().skip(2) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) == Some(&"in_use") {
            assert!(users.insert(f[2].to_owned()), "{} has two addresses", f[2]);
            assert_eq!(
                got.get(f[2]).map(|ip| ip.to_string()).as_deref(),
                Some(f[0])
            );
        }
    }
    assert_eq!(users.len(), 2000);
}

#[test]
fn two_nodes_on_one_postgresql_never_share_an_address_and_stay_sticky() {
    let url = pg::fresh_database();
    let install = Install::on_url(url.clone());
    install.write_config(
        "[database]\nreload_interval_secs = 1\nopen_sessions_interval_secs = 1\n\n[cluster]\nheartbeat_ms = 500\n",
    );
    install.provision_nas("mikrotik", 1700);
    install.ok(&[
        "pool",
        "add",
        "--name",
        "both",
        "--range",
        "10.70.0.1-10.70.11.184",
    ]);
    install.ok(&["service", "set", "10M", "--pool", "both"]);
    install.import_subscribers(2000, "10M");
    let port = |_| {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (auth_port, acct_port) = (port(0), port(1));
    let addr = |i: u8, p: u16| SocketAddr::from(([127, 0, 0, 2 + i], p));
    let nodes: Vec<Server> = (0..2u8)
        .map(|i| {
            install.serve_at(
                addr(i, auth_port),
                addr(i, acct_port),
                &["--shards", "1", "--node-name", &format!("node-{i}")],
                &[],
            )
        })
        .collect();
    let dir = install.path("");
    let db = url.rsplit('/').next().unwrap().to_owned();
    let psql = |sql: &str| {
        pg::shared()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .psql(&db, sql)
    };
    let no_shared_address = |when: &str| {
        let shared = psql(
            "SELECT count(*) FROM (SELECT framedipaddress FROM radacct WHERE acctstoptime IS NULL
             GROUP BY framedipaddress HAVING count(*) > 1) d",
        );
        assert_eq!(shared, "0", "{when}: two open sessions with one address");
        let doubled = psql(
            "SELECT count(*) FROM (SELECT username FROM pool_addresses WHERE state = 'in_use'
             GROUP BY username HAVING count(*) > 1) d",
        );
        assert_eq!(doubled, "0", "{when}: a subscriber with two rows in use");
        let mismatched = psql(
            "SELECT count(*) FROM radacct r JOIN pool_addresses a ON a.address = host(r.framedipaddress)
             WHERE r.acctstoptime IS NULL AND a.username IS DISTINCT FROM r.username",
        );
        assert_eq!(
            mismatched, "0",
            "{when}: an open session on another subscriber's row"
        );
    };

    // Each subscriber to a random node, both nodes at once; returns each
    // login with the node it went through.
    let run = |tag: &str| -> Vec<(usize, Login)> {
        let mut split: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
        for n in 1..=2000 {
            split[rand::random::<usize>() % 2].push(n);
        }
        let handles: Vec<_> = split
            .into_iter()
            .enumerate()
            .map(|(i, numbers)| {
                let (auth, acct) = (addr(i as u8, auth_port), addr(i as u8, acct_port));
                let dir = dir.clone();
                let tag = format!("{tag}-{i}");
                std::thread::spawn(move || {
                    storm(&dir, &tag, auth, acct, numbers.len(), Some(&numbers), false)
                        .into_iter()
                        .map(|l| (i, l))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    };
    let logins = |via: &[(usize, Login)]| via.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>();
    let first = run("first");
    let got = distinct(&logins(&first));
    assert_eq!(got.len(), 2000);
    assert!(pg::eventually(Duration::from_secs(20), || psql(
        "SELECT count(*) FROM pool_addresses WHERE state = 'in_use'"
    ) == "2000"));
    no_shared_address("after the first logins");
    // Each Stop to the node that saw the session (the NAS's accounting server).
    for i in 0..2 {
        let mine: Vec<&Login> = first
            .iter()
            .filter(|(n, _)| *n == i)
            .map(|(_, l)| l)
            .collect();
        stop_all(addr(i as u8, acct_port), &mine);
    }
    assert!(pg::eventually(Duration::from_secs(20), || psql(
        "SELECT count(*) FROM pool_addresses WHERE state = 'held'"
    ) == "2000"));

    let second = run("second");
    let got_again = distinct(&logins(&second));
    assert_eq!(got_again.len(), 2000);
    let moved: Vec<_> = got
        .iter()
        .filter(|(u, ip)| got_again.get(*u) != Some(ip))
        .take(5)
        .collect();
    assert!(moved.is_empty(), "sticky across nodes: {moved:?}");
    assert!(
        pg::eventually(Duration::from_secs(20), || psql(
            "SELECT count(*) FROM pool_addresses WHERE state = 'in_use'"
        ) == "2000"),
        "{}\n{}",
        psql("SELECT state, node, count(*) FROM pool_addresses WHERE username IS NOT NULL GROUP BY 1, 2"),
        psql("SELECT a.address, a.username, a.state, a.node, a.acctuniqueid, r.acctuniqueid, r.acctstarttime, r.acctstoptime, a.expires_ms FROM pool_addresses a LEFT JOIN radacct r ON r.username = a.username AND r.acctstoptime IS NULL WHERE a.state <> 'in_use' AND a.username IS NOT NULL LIMIT 5")
    );
    no_shared_address("after the second logins");
    for n in &nodes {
        assert_eq!(n.metric("shardius_ip_conflicts_total"), 0.0);
    }
    drop(nodes);
}

#[test]
fn rows_a_panel_broke_are_left_out_and_bad_pool_names_refused() {
    let install = install_with_pool(
        Backend::Sqlite,
        1700,
        &["--name", "h", "--range", "10.71.0.1-10.71.0.3"],
        "",
    );
    install.add_user("alice");
    let hostile = "o'brien\"; DROP TABLE pool_addresses; -- müller😀";
    install.add_user(hostile);
    // A panel's plain SQL: addresses that do not parse, one of them held
    // (so a sweep would try to free it), in the pool's name.
    let db = install.db_url.trim_start_matches("sqlite:").to_owned();
    let conn = rusqlite::Connection::open(&db).unwrap();
    for (address, state) in [
        ("not-an-ip", "held"),
        ("10.71.0.999", "offered"),
        ("10.71.0.2\u{0}", "free"),
    ] {
        conn.execute(
            "INSERT INTO pool_addresses (address, pool, state, username, expires_ms) VALUES (?1, 'h', ?2, 'mallory', 1)",
            [address, state],
        )
        .unwrap();
    }
    drop(conn);
    let mut server = install.serve(1);
    // The good rows are served; the broken ones are reported, never handed out.
    assert_eq!(login(&server, "alice").0, Some(Ipv4Addr::new(10, 71, 0, 1)));
    let line = server.wait_for_log("row(s) do not read", Duration::from_secs(10));
    assert!(line.contains("3 pool_addresses row(s)"), "{line}");
    // `pool list` counts rows as stored: the three broken ones (held,
    // offered, free) and the good three (alice's offer, two free).
    wait_for_counts(&install, "h", |c| c == [6, 0, 1, 2, 3]);
    assert!(!server.log().contains("pools: cannot"), "{}", server.log());

    // A subscriber whose name is quotes, SQL and non-ASCII claims an
    // address like anyone (the claims bind it as data) and shows in `pool show`.
    let mut nas = crate::common::server::TestNas::bind("127.0.0.1", SECRET);
    nas.set_timeout(Duration::from_secs(3));
    let creds = nas::Credentials::Pap {
        password: b"s3cret",
    };
    let mut reply = None;
    for _ in 0..3 {
        let (_, _, r) = nas.exchange(server.auth, hostile, &creds, &Session::default());
        if r.is_some() {
            reply = r;
            break;
        }
    }
    let reply = reply.expect("an answer");
    let packet = shardius::proto::Packet::parse(&reply).unwrap();
    assert_eq!(
        packet.code(),
        shardius::proto::Code::ACCESS_ACCEPT,
        "{}",
        server.log()
    );
    assert_eq!(
        packet.attr(attr::FRAMED_IP_ADDRESS),
        Some(&[10, 71, 0, 2][..]),
        "the next free address"
    );
    wait_for_counts(&install, "h", |c| c[3] == 3);
    assert!(install.ok(&["service", "list"]).contains("10M"));

    for bad in ["a,b", "x\u{1b}[2J", " "] {
        let err = install.fails(&["service", "set", "10M", "--pool", bad]);
        assert!(err.contains("--pool"), "{err}");
    }
    assert!(install
        .fails(&["service", "set", "nosuch", "--pool", "h"])
        .contains("no service named"));
    assert!(install
        .ok(&["service", "set", "10M", "--no-pool"])
        .contains("none"));
    assert!(install.fails(&["service", "set", "10M"]).contains("--pool"));
}

/// radclient login; the Framed-IP-Address, or None without an answer.
fn try_login(server: &Server, user: &str) -> Option<Option<Ipv4Addr>> {
    let out = radclient(
        server.auth,
        "auth",
        &format!("User-Name = \"{user}\", User-Password = \"s3cret\""),
    );
    out.contains("Received Access-Accept").then(|| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix("Framed-IP-Address = "))
            .map(|ip| ip.trim().parse().unwrap())
    })
}

#[test]
fn with_the_database_away_returning_subscribers_are_served_from_memory_for_5_s_and_newcomers_wait()
{
    let cluster = pg::Cluster::start();
    let install = Install::on_url(cluster.database("pools_down"));
    install.write_config("[database]\nreload_interval_secs = 1\nopen_sessions_interval_secs = 1\n");
    install.provision_nas("mikrotik", 1700);
    install.ok(&[
        "pool",
        "add",
        "--name",
        "d",
        "--range",
        "10.72.0.1-10.72.0.9",
    ]);
    install.ok(&["service", "set", "10M", "--pool", "d"]);
    install.add_user("alice");
    install.add_user("bob");
    let mut server = install.serve(1);
    let ip = login(&server, "alice").0.expect("alice's address");
    // The address is alice's in the database (the view the node reloads).
    wait_for_counts(&install, "d", |c| c[3] == 1);

    cluster.stop();
    server.wait_for_log("pools: cannot", Duration::from_secs(10));
    // Within 5 s of the last reload: alice from memory, the same address.
    assert_eq!(try_login(&server, "alice"), Some(Some(ip)));
    // bob needs a claim: no answer while the database is away (never an
    // address that is not committed).
    assert_eq!(try_login(&server, "bob"), None, "{}", server.log());
    assert!(server.metric(r#"shardius_dropped_packets_total{reason="address_pending"}"#) >= 1.0);
    // Past 5 s without a reload, nothing is handed out from memory either.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(try_login(&server, "alice"), None);

    cluster.restart();
    server.wait_for_log("pools: database reachable again", Duration::from_secs(40));
    assert_eq!(try_login(&server, "alice"), Some(Some(ip)));
    let bob = try_login(&server, "bob")
        .expect("bob answered")
        .expect("bob's address");
    assert_ne!(bob, ip);
}
