//! Simultaneous use (issue 17 part 1), with real sockets and databases: a
//! limit of 1 with `reject` (a second router is refused while the first
//! one's session is open, and admitted after its Stop), the per-subscriber
//! override, `replace` (the oldest session gets a Disconnect-Request at a
//! fake NAS), 100 double logins fired at once over 2 shards (exactly one
//! of each pair passes), and two nodes on one PostgreSQL (a session one
//! node records is counted by the other once a sync that began after its
//! commit has finished; two logins at the same instant on two nodes pass
//! at most once per node).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::common::fake_nas::FakeNas;
use crate::common::pg::eventually;
use crate::common::server::{
    acct_record, send_accounting, Backend, Install, Server, TestNas, SECRET,
};
use shardius::nas_client::{self as nas, Credentials, Session};
use shardius::proto::dict::{acct_status, attr};
use shardius::proto::{Code, Secret};

on_both_backends!(
    a_second_router_is_rejected_while_the_first_session_is_open,
    the_sync_leaves_out_radacct_rows_it_cannot_count,
    a_limit_set_while_serving_counts_the_sessions_already_open,
    replace_disconnects_the_oldest_session_at_its_nas,
    double_logins_fired_at_once_over_two_shards_pass_once,
);

const PASSWORD: Credentials<'static> = Credentials::Pap {
    password: b"s3cret",
};
const FIRST: &[u8] = b"AA:BB:CC:DD:EE:FF";
const SECOND: &[u8] = b"02:00:00:00:00:02";

fn router(station: &[u8]) -> Session<'_> {
    Session {
        calling_station_id: station,
        ..Session::default()
    }
}

fn login(nas: &mut TestNas, server: &Server, user: &str, station: &[u8]) -> Code {
    nas.login(server.auth, user, &PASSWORD, &router(station))
        .unwrap_or_else(|| panic!("{user}: no answer"))
}

/// Waits for the shards' published counters to show `n` Access-Rejects
/// for simultaneous use (they publish every few hundred milliseconds).
fn assert_rejected_for_simultaneous_use(server: &Server, n: f64) {
    let series = r#"shardius_access_rejects_total{reason="simultaneous_use"}"#;
    let seen = eventually(Duration::from_secs(10), || server.metric(series) >= n);
    assert!(seen, "{series} reached {}", server.metric(series));
    assert_eq!(server.metric(series), n);
}

/// `extra_config` appended to the test config; the NAS 127.0.0.1 takes CoA
/// on `coa_port`; alice and bob on the 10M service.
fn install(backend: Backend, coa_port: u16) -> Install {
    let install = Install::empty_on(backend);
    install.write_config(
        "[database]\nreload_interval_secs = 1\n\n[coa]\ntries = 3\ntimeout_ms = 300\n\n\
         [sessions]\nsync_interval_ms = 200\n",
    );
    install.provision_nas("mikrotik", coa_port);
    install.add_user("alice");
    install.add_user("bob");
    install
}

fn a_second_router_is_rejected_while_the_first_session_is_open(backend: Backend) {
    let install = install(backend, 1700);
    let out = install.ok(&["service", "set", "10M", "--max-sessions", "1"]);
    assert!(out.contains("service 10M sessions: 1 reject"), "{out}");
    assert!(install.ok(&["service", "list"]).contains("1 reject"));
    let server = install.serve(2);
    let mut nas = TestNas::bind("127.0.0.1", SECRET);

    assert_eq!(
        login(&mut nas, &server, "alice", FIRST),
        Code::ACCESS_ACCEPT
    );
    // Before the first router's Start: its login holds the place.
    assert_eq!(
        login(&mut nas, &server, "alice", SECOND),
        Code::ACCESS_REJECT
    );
    // The first router again (its Accept was lost): not a second login.
    assert_eq!(
        login(&mut nas, &server, "alice", FIRST),
        Code::ACCESS_ACCEPT
    );
    // Another subscriber is not affected.
    assert_eq!(login(&mut nas, &server, "bob", SECOND), Code::ACCESS_ACCEPT);

    send_accounting(
        server.acct,
        &acct_record(acct_status::START, "alice", "sess-1", 0, 0, None),
    );
    assert_eq!(
        login(&mut nas, &server, "alice", SECOND),
        Code::ACCESS_REJECT
    );
    assert_rejected_for_simultaneous_use(&server, 2.0);

    send_accounting(
        server.acct,
        &acct_record(acct_status::STOP, "alice", "sess-1", 60, 1000, None),
    );
    assert_eq!(
        login(&mut nas, &server, "alice", SECOND),
        Code::ACCESS_ACCEPT
    );

    // The reason is logged and written to radius_logs.
    let mut store =
        shardius::store::open(&shardius::store::DatabaseUrl::parse(&install.db_url).unwrap())
            .unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        store
            .recent_logs(100)
            .unwrap()
            .iter()
            .any(|(u, e, r, reason)| {
                u == "alice"
                    && e == "auth"
                    && r == "reject"
                    && reason.as_deref() == Some("simultaneous use")
            })
    }));

    // A subscriber's own limit overrides the service's: bob may have 2.
    install.ok(&["subscriber", "set", "bob", "--max-sessions", "2"]);
    send_accounting(
        server.acct,
        &acct_record(acct_status::START, "bob", "bob-1", 0, 0, None),
    );
    let third = b"02:00:00:00:00:03";
    // The loader picks the change up within a second or two.
    assert!(eventually(Duration::from_secs(10), || {
        login(&mut nas, &server, "bob", FIRST) == Code::ACCESS_ACCEPT
    }));
    assert_eq!(login(&mut nas, &server, "bob", third), Code::ACCESS_REJECT);
    // `service` gives the service's limit back; 0 means none at all.
    install.ok(&["subscriber", "set", "bob", "--max-sessions", "0"]);
    assert!(eventually(Duration::from_secs(10), || {
        login(&mut nas, &server, "bob", third) == Code::ACCESS_ACCEPT
    }));
    let out = install.ok(&["subscriber", "set", "bob", "--max-sessions", "service"]);
    assert!(out.contains("the service's limit"), "{out}");

    // Bad input is a clear error.
    let err = install.fails(&["service", "set", "10M", "--over-limit", "kick"]);
    assert!(err.contains("`reject` or `replace`"), "{err}");
    let err = install.fails(&["service", "set", "10M"]);
    assert!(err.contains("nothing to set"), "{err}");
    let err = install.fails(&["subscriber", "set", "bob", "--max-sessions=-1"]);
    assert!(err.contains("or `service`"), "{err}");
    let err = install.fails(&["subscriber", "set", "nobody", "--max-sessions", "1"]);
    assert!(err.contains("no subscriber"), "{err}");
}

fn replace_disconnects_the_oldest_session_at_its_nas(backend: Backend) {
    let fake = FakeNas::start(SECRET);
    let install = install(backend, fake.addr.port());
    let out = install.ok(&[
        "service",
        "set",
        "10M",
        "--max-sessions",
        "1",
        "--over-limit",
        "replace",
    ]);
    assert!(out.contains("1 replace"), "{out}");
    let server = install.serve(2);
    let mut nas = TestNas::bind("127.0.0.1", SECRET);

    assert_eq!(
        login(&mut nas, &server, "alice", FIRST),
        Code::ACCESS_ACCEPT
    );
    send_accounting(
        server.acct,
        &acct_record(acct_status::START, "alice", "stale-1", 0, 0, None),
    );
    // The router behind FIRST is gone without a Stop (the classic stale
    // session); the subscriber dials in from another one: accepted, and
    // the old session is disconnected.
    assert_eq!(
        login(&mut nas, &server, "alice", SECOND),
        Code::ACCESS_ACCEPT
    );
    let got = fake.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "one Disconnect-Request");
    assert_eq!(got[0].code, Code::DISCONNECT_REQUEST);
    assert_eq!(got[0].attr(attr::USER_NAME), Some(&b"alice"[..]));
    assert_eq!(got[0].attr(attr::ACCT_SESSION_ID), Some(&b"stale-1"[..]));
    assert!(got[0].request_authenticator_ok && got[0].message_authenticator_ok);
    assert_eq!(server.metric("shardius_sessions_replaced_total"), 1.0);

    // A third router before the second one's Start: only a reservation is
    // in the way, nothing can be disconnected: refused.
    assert_eq!(
        login(&mut nas, &server, "alice", b"02:00:00:00:00:03"),
        Code::ACCESS_REJECT
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fake.received().len(), 1, "no second Disconnect");
}

/// One Access-Request of `user` from `station`, with its authenticator.
fn request(id: u8, user: &str, station: &[u8]) -> (Vec<u8>, [u8; 16]) {
    let authenticator: [u8; 16] = rand::random();
    let mut buf = [0u8; 4096];
    let bytes = nas::access_request(
        &mut buf,
        id,
        &authenticator,
        &Secret::new(SECRET.as_bytes()),
        user.as_bytes(),
        &PASSWORD,
        &router(station),
    )
    .unwrap()
    .to_vec();
    (bytes, authenticator)
}

/// Sends every user's login from two routers back to back, all before
/// reading a reply; returns the accepts per user. The routers are 8 pairs
/// of sockets (user i on pair i % 8) so that SO_REUSEPORT spreads them
/// over the shards; the second router of a pair sends to the last target.
fn fire_double_logins(targets: &[SocketAddr], users: &[String]) -> HashMap<String, usize> {
    const PAIRS: usize = 8;
    let sockets: Vec<[UdpSocket; 2]> = (0..PAIRS)
        .map(|_| {
            [(); 2].map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                s
            })
        })
        .collect();
    let stations = [FIRST, SECOND];
    let mut sent = HashMap::new();
    for (i, user) in users.iter().enumerate() {
        for (r, socket) in sockets[i % PAIRS].iter().enumerate() {
            let (bytes, auth) = request(i as u8, user, stations[r]);
            socket.send_to(&bytes, targets[r % targets.len()]).unwrap();
            sent.insert((i % PAIRS, r, i as u8), auth);
        }
    }
    let secret = Secret::new(SECRET.as_bytes());
    let mut accepts: HashMap<String, usize> = users.iter().map(|u| (u.clone(), 0)).collect();
    let mut answered = 0;
    for (pair, routers) in sockets.iter().enumerate() {
        let expected = (pair..users.len()).step_by(PAIRS).count();
        for (r, socket) in routers.iter().enumerate() {
            let mut buf = [0u8; 4096];
            for _ in 0..expected {
                let n = socket.recv(&mut buf).expect("every login is answered");
                let id = buf[1];
                let auth = sent[&(pair, r, id)];
                let user = &users[usize::from(id)];
                let checked = nas::check_access_reply(
                    &buf[..n],
                    id,
                    &auth,
                    &secret,
                    user.as_bytes(),
                    &PASSWORD,
                )
                .unwrap();
                answered += 1;
                if checked.code == Code::ACCESS_ACCEPT {
                    *accepts.get_mut(user).unwrap() += 1;
                }
            }
        }
    }
    assert_eq!(answered, 2 * users.len());
    accepts
}

fn double_logins_fired_at_once_over_two_shards_pass_once(backend: Backend) {
    let install = install(backend, 1700);
    install.ok(&["service", "set", "10M", "--max-sessions", "1"]);
    let users: Vec<String> = (0..100).map(|i| format!("twin{i:03}")).collect();
    for u in &users {
        install.add_user(u);
    }
    let server = install.serve(2);
    let accepts = fire_double_logins(&[server.auth], &users);
    for (user, n) in &accepts {
        assert_eq!(
            *n, 1,
            "{user}: exactly one of two simultaneous logins passes"
        );
    }
    assert_rejected_for_simultaneous_use(&server, 100.0);
    // Both shards decided logins (16 sockets all hashed to one shard would
    // make this a one-shard test).
    for shard in ["0", "1"] {
        let handled = server.metric(&format!(
            r#"shardius_shard_requests_total{{shard="{shard}"}}"#
        ));
        assert!(handled > 0.0, "shard {shard} handled none of the logins");
    }
}

/// Two nodes on one PostgreSQL database. A node learns of the other's
/// sessions by its sync (every `sessions.sync_interval_ms`): a session
/// committed on node A is counted on node B once a sync that began after
/// the commit has finished. Logins at the same instant on both nodes are
/// each checked against the other's sessions as of its last sync, so at
/// most `limit` pass per node.
#[test]
fn two_nodes_count_each_others_sessions_after_a_sync() {
    let install = install(Backend::Postgres, 1700);
    install.ok(&["service", "set", "10M", "--max-sessions", "1"]);
    let users: Vec<String> = (0..50).map(|i| format!("pair{i:03}")).collect();
    for u in &users {
        install.add_user(u);
    }
    let port = |_: ()| {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (auth_port, acct_port) = (port(()), port(()));
    let addr = |node: u8, port: u16| SocketAddr::from(([127, 0, 0, 2 + node], port));
    let nodes: Vec<Server> = (0..2)
        .map(|i| {
            install.serve_at(
                addr(i, auth_port),
                addr(i, acct_port),
                &["--shards", "2", "--node-name", &format!("node-{i}")],
                &[],
            )
        })
        .collect();
    let mut nas = TestNas::bind("127.0.0.1", SECRET);

    // alice on node 0, with her Start recorded there.
    assert_eq!(
        login(&mut nas, &nodes[0], "alice", FIRST),
        Code::ACCESS_ACCEPT
    );
    send_accounting(
        nodes[0].acct,
        &acct_record(acct_status::START, "alice", "a-1", 0, 0, None),
    );
    // Node 1 counts it once a sync that began after the commit is done.
    let syncs = nodes[1].metric("shardius_session_syncs_total");
    assert!(eventually(Duration::from_secs(10), || {
        nodes[1].metric("shardius_session_syncs_total") >= syncs + 2.0
    }));
    assert_eq!(
        login(&mut nas, &nodes[1], "alice", SECOND),
        Code::ACCESS_REJECT
    );
    // Her Stop, recorded on node 1, frees the place on node 0 (through
    // node 0's sync) and on node 1 (at once).
    send_accounting(
        nodes[1].acct,
        &acct_record(acct_status::STOP, "alice", "a-1", 30, 10, None),
    );
    let syncs = nodes[0].metric("shardius_session_syncs_total");
    assert!(eventually(Duration::from_secs(10), || {
        nodes[0].metric("shardius_session_syncs_total") >= syncs + 2.0
    }));
    assert_eq!(
        login(&mut nas, &nodes[0], "alice", SECOND),
        Code::ACCESS_ACCEPT
    );

    // 50 pairs at the same instant, one login of each pair per node: the
    // stated bound is one per node, so at most two, and at least one.
    let accepts = fire_double_logins(&[nodes[0].auth, nodes[1].auth], &users);
    for (user, n) in &accepts {
        assert!(
            (1..=2).contains(n),
            "{user}: {n} accepts; at most one per node"
        );
    }
}

/// Rows a billing panel or another server wrote without a username, or
/// with an address that is not one, are left out of the sync (before, a
/// NULL username made the PostgreSQL read panic in the loader thread).
fn the_sync_leaves_out_radacct_rows_it_cannot_count(backend: Backend) {
    let install = install(backend, 1700);
    install.sql(
        "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress)
         VALUES ('a', 'u1', 'alice', '10.0.0.1'), ('b', 'u2', NULL, '10.0.0.1'),
                ('c', 'u3', '', '10.0.0.1')",
    );
    let mut store =
        shardius::store::open(&shardius::store::DatabaseUrl::parse(&install.db_url).unwrap())
            .unwrap();
    let rows = store.open_sessions().unwrap();
    let users: Vec<&str> = rows.iter().map(|r| r.username.as_str()).collect();
    assert_eq!(users, ["alice"]);
}

/// Without limits nothing is kept up to date; the first limit set while
/// serving makes the node read the open sessions before the limit is
/// applied, so a session started earlier counts.
fn a_limit_set_while_serving_counts_the_sessions_already_open(backend: Backend) {
    let install = install(backend, 1700);
    let server = install.serve(1);
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    assert_eq!(
        login(&mut nas, &server, "alice", FIRST),
        Code::ACCESS_ACCEPT
    );
    send_accounting(
        server.acct,
        &acct_record(acct_status::START, "alice", "early-1", 0, 0, None),
    );
    // No limit yet: a second router is welcome.
    assert_eq!(
        login(&mut nas, &server, "alice", SECOND),
        Code::ACCESS_ACCEPT
    );
    install.ok(&["service", "set", "10M", "--max-sessions", "1"]);
    // Once the loader has the limit, alice's session started before it
    // (which the writer did not track then) counts: a third router is
    // refused. bob, with nothing open, is still welcome.
    let third = b"02:00:00:00:00:03";
    assert!(eventually(Duration::from_secs(10), || {
        login(&mut nas, &server, "alice", third) == Code::ACCESS_REJECT
    }));
    assert_eq!(login(&mut nas, &server, "bob", FIRST), Code::ACCESS_ACCEPT);
}
