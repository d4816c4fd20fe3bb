//! What only the PostgreSQL store does: instant reload through
//! LISTEN/NOTIFY when a billing panel writes plain SQL, riding out a
//! database restart, and clear errors for bad URLs.

use std::time::{Duration, Instant};

use crate::common::pg::{self, Cluster};
use crate::common::server::{Install, TestNas, SECRET};
use shardius::nas_client::{Credentials, Session};
use shardius::proto::Code;

const PAP: Credentials<'static> = Credentials::Pap {
    password: b"s3cret",
};

/// Logs in until `want` comes back; returns how long it took.
fn until(
    nas: &mut TestNas,
    to: std::net::SocketAddr,
    want: Option<Code>,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        if nas.login(to, "alice", &PAP, &Session::default()) == want {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "no {want:?} within {limit:?}");
    }
}

#[test]
fn plain_sql_from_a_billing_panel_is_served_within_a_second() {
    let install = Install::new_on(crate::common::server::Backend::Postgres);
    // A 60 s poll: only LISTEN/NOTIFY can make changes visible faster.
    install.write_config("[database]\nreload_interval_secs = 60\n");
    let server = install.serve(2);
    let db = install.db_url.rsplit('/').next().unwrap().to_owned();
    let cluster = pg::shared().lock().unwrap_or_else(|e| e.into_inner());

    let mut panel_nas = TestNas::bind("127.0.0.9", "s9");
    panel_nas.set_timeout(Duration::from_millis(50));
    assert_eq!(
        panel_nas.login(server.auth, "alice", &PAP, &Session::default()),
        None
    );
    cluster.psql(
        &db,
        "INSERT INTO nas_devices (name, ip_address, secret) VALUES ('BNG-9', '127.0.0.9', 's9')",
    );
    let took = until(
        &mut panel_nas,
        server.auth,
        Some(Code::ACCESS_ACCEPT),
        Duration::from_secs(1),
    );
    eprintln!("new NAS served after {took:?}");

    cluster.psql(
        &db,
        "UPDATE subscribers SET is_active = false WHERE username = 'alice'",
    );
    let took = until(
        &mut panel_nas,
        server.auth,
        Some(Code::ACCESS_REJECT),
        Duration::from_secs(1),
    );
    eprintln!("disabled subscriber rejected after {took:?}");

    cluster.psql(
        &db,
        "UPDATE nas_devices SET is_active = false WHERE name = 'BNG-9'",
    );
    until(&mut panel_nas, server.auth, None, Duration::from_secs(1));
}

#[test]
fn authentication_survives_a_database_restart_and_later_changes_are_picked_up() {
    let cluster = Cluster::start();
    let install = Install::on_url(cluster.database("restart"));
    install.provision();
    let mut server = install.serve(2);
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    assert_eq!(
        nas.login(server.auth, "alice", &PAP, &Session::default()),
        Some(Code::ACCESS_ACCEPT)
    );

    cluster.stop();
    server.wait_for_log("serving from the cached snapshot", Duration::from_secs(10));
    for _ in 0..20 {
        assert_eq!(
            nas.login(server.auth, "alice", &PAP, &Session::default()),
            Some(Code::ACCESS_ACCEPT)
        );
    }
    // Several reload intervals pass during the outage; it is logged once.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        server.log().matches("snapshot reload failed").count(),
        1,
        "{}",
        server.log()
    );

    cluster.restart();
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
    let bob = Credentials::Pap { password: b"b0b" };
    assert!(
        pg::eventually(Duration::from_secs(40), || nas.login(
            server.auth,
            "bob",
            &bob,
            &Session::default()
        ) == Some(Code::ACCESS_ACCEPT)),
        "a subscriber added after the restart was not served:\n{}",
        server.log()
    );
    server.wait_for_log("database reachable again", Duration::from_secs(5));
}

#[test]
fn unreachable_or_malformed_database_urls_fail_at_start_with_one_clear_error() {
    let unreachable = Install::on_url("postgres://postgres:pw@127.0.0.1:1/radius".into());
    unreachable.ok(&["keygen", "--out", unreachable.key().to_str().unwrap()]);
    let err = unreachable.fails(&["check-config"]);
    assert!(
        err.contains("cannot connect to postgres://postgres:***@127.0.0.1:1/radius"),
        "{err}"
    );
    assert!(
        !err.contains(":pw@"),
        "the password must not be printed: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let err = unreachable.fails(&[
        "serve",
        "--listen-auth",
        "127.0.0.1:0",
        "--listen-acct",
        "127.0.0.1:0",
    ]);
    assert!(err.contains("cannot connect"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let malformed = Install::on_url("postgres://x@h:notaport/db".into());
    malformed.ok(&["keygen", "--out", malformed.key().to_str().unwrap()]);
    let err = malformed.fails(&["check-config"]);
    assert!(err.contains("postgres://x@h:notaport/db"), "{err}");
}

/// Accounting through a database outage: acknowledged from the spool, a
/// crash during the outage loses nothing, and once the database is back
/// every acknowledged event is in radacct exactly once.
#[test]
fn accounting_is_spooled_through_a_database_outage_and_replayed_exactly_once() {
    use shardius::nas_client::{self as nas, AcctRecord};
    use shardius::proto::dict::acct_status;
    use shardius::proto::Secret;
    use std::net::UdpSocket;

    let cluster = Cluster::start();
    let install = Install::on_url(cluster.database("outage"));
    // Two writer connections (lanes): the outage hits them first.
    install.write_config("[accounting]\nwriter_connections = 2\n");
    install.ok(&["keygen", "--out", install.key().to_str().unwrap()]);
    install.ok(&[
        "nas",
        "add",
        "--name",
        "BNG-1",
        "--ip",
        "127.0.0.1",
        "--secret",
        SECRET,
    ]);
    let mut server = install.serve(2);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let secret = Secret::new(SECRET.as_bytes());
    let start = |socket: &UdpSocket, to, sid: &str, id: u8| -> Option<Duration> {
        let record = AcctRecord {
            status: acct_status::START,
            session_id: sid.as_bytes(),
            user_name: b"alice",
            session_time: 0,
            input_octets: 0,
            output_octets: 0,
            framed_ip: None,
            terminate_cause: None,
            class: None,
        };
        let mut buf = [0u8; 4096];
        let bytes = nas::accounting_request(&mut buf, id, &secret, &record, &Session::default())
            .unwrap()
            .to_vec();
        let sent = Instant::now();
        socket.send_to(&bytes, to).unwrap();
        let mut reply = [0u8; 4096];
        let n = socket.recv(&mut reply).ok()?;
        nas::check_accounting_reply(&reply[..n], id, bytes[4..20].try_into().unwrap(), &secret)
            .ok()?;
        Some(sent.elapsed())
    };
    let mut acked = Vec::new();
    for i in 0..20u8 {
        let sid = format!("before-{i}");
        assert!(start(&socket, server.acct, &sid, i).is_some());
        acked.push(sid);
    }
    cluster.stop();
    let mut latencies = Vec::new();
    for i in 0..100u8 {
        let sid = format!("during-{i}");
        let took = start(&socket, server.acct, &sid, i).unwrap_or_else(|| {
            panic!(
                "{sid} not acknowledged during the outage:\n{}",
                server.log()
            )
        });
        latencies.push(took);
        acked.push(sid);
    }
    latencies.sort();
    eprintln!(
        "acknowledgements during the outage: p50 {:?}, max {:?}",
        latencies[50], latencies[99]
    );
    server.wait_for_log("acknowledged from the spool", Duration::from_secs(5));
    // A crash during the outage: the spool is all that holds these events.
    server.kill9();
    cluster.restart();
    let mut server = install.serve(2);
    server.wait_for_log("accounting spool replayed", Duration::from_secs(20));
    // And the lanes write again.
    for i in 0..20u8 {
        let sid = format!("after-{i}");
        assert!(
            start(&socket, server.acct, &sid, i).is_some(),
            "{}",
            server.log()
        );
        acked.push(sid);
    }
    let db = "outage";
    let rows = cluster.psql(
        db,
        "SELECT count(*), count(DISTINCT AcctSessionId) FROM radacct",
    );
    assert_eq!(rows, format!("{}|{}", acked.len(), acked.len()));
    let missing = cluster.psql(
        db,
        &format!(
            "SELECT count(*) FROM unnest(ARRAY[{}]) AS a(sid) WHERE NOT EXISTS (SELECT 1 FROM radacct WHERE AcctSessionId = a.sid)",
            acked.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(",")
        ),
    );
    assert_eq!(missing, "0");
    let spool = install.path("shardius-acct.spool");
    assert_eq!(
        std::fs::metadata(&spool).unwrap().len(),
        0,
        "the spool is emptied after the replay"
    );
    drop(server);
}

/// Interim-Updates rewrite the radacct row in place (HOT): no index on
/// AcctUpdateTime, room left in each page. Migration 16; the figures are
/// in the README's performance section.
#[test]
fn interim_updates_are_hot_updates_of_radacct() {
    use crate::common::server::{acct_record, send_accounting, Backend};
    use shardius::proto::dict::acct_status;
    let install = Install::new_on(Backend::Postgres);
    let db = install.db_url.rsplit('/').next().unwrap().to_owned();
    let psql = |sql: &str| {
        pg::shared()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .psql(&db, sql)
    };
    assert_eq!(
        psql("SELECT count(*) FROM pg_indexes WHERE tablename = 'radacct' AND indexdef ILIKE '%acctupdatetime%'"),
        "0",
        "no index on AcctUpdateTime"
    );
    assert!(
        psql("SELECT reloptions::text FROM pg_class WHERE relname = 'radacct'")
            .contains("fillfactor=80")
    );
    let server = install.serve(1);
    for user in ["alice", "bob"] {
        let sid = format!("{user}-1");
        let started = Instant::now();
        send_accounting(
            server.acct,
            &acct_record(acct_status::START, user, &sid, 0, 0, None),
        );
        for t in 1..=10u32 {
            // A real NAS's session time: whole seconds since the Start (so
            // the start time it implies never moves earlier).
            let session_time = started.elapsed().as_secs() as u32;
            send_accounting(
                server.acct,
                &acct_record(
                    acct_status::INTERIM_UPDATE,
                    user,
                    &sid,
                    session_time,
                    u64::from(t) * 1000,
                    None,
                ),
            );
        }
    }
    // Every interim is acknowledged after its commit; the writer's
    // connection reports its statistics when idle (PostgreSQL 15: within
    // about 10 s).
    let hot = || {
        let row = psql("SELECT n_tup_upd || ' ' || n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'radacct'");
        let mut it = row.split(' ').map(|n| n.parse::<u64>().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    };
    let mut last = (0, 0);
    let seen = crate::common::pg::eventually(Duration::from_secs(30), || {
        last = hot();
        last.0 >= 20
    });
    assert!(seen, "updates counted: {last:?}");
    assert!(last.1 * 10 >= last.0 * 9, "at least 90% HOT: {last:?}");
}
