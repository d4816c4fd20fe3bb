//! Accounting under hostile input and damage, on the real server and both
//! stores: a NUL or non-UTF-8 byte in an id, a row the database refuses,
//! a damaged, huge or full spool, counters past 2^63. Whatever happens,
//! what was acknowledged is in radacct, set aside in a file beside the
//! spool, or (damaged on disk) kept in a file and reported.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::common::fake_nas::{FakeNas, Mode};
use crate::common::pg::{eventually, Cluster};
use crate::common::server::{acct_bytes, send_all, Backend, Install, SECRET};
use shardius::accounting::{legacy_unique_id as unique_id, AcctEvent, AcctKind};
use shardius::nas_client::AcctRecord;
use shardius::proto::dict::{acct_status, attr};
use shardius::server::accounting::spool::{encode_record, Spool};

fn start(sid: &[u8]) -> AcctRecord<'_> {
    start_of(sid, b"alice")
}

fn start_of<'a>(sid: &'a [u8], user: &'a [u8]) -> AcctRecord<'a> {
    acct_bytes(acct_status::START, user, sid)
}

/// A Start event as the writer spools it, at a fixed time.
fn spooled_start(sid: &str, user: &str, nas_port_id: Option<String>) -> AcctEvent {
    let nas_ip = "127.0.0.1".parse().unwrap();
    let t0 = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    AcctEvent {
        kind: AcctKind::Start,
        unique_id: unique_id(&nas_ip, sid.as_bytes(), user.as_bytes(), None),
        legacy_id: None,
        session_id: sid.into(),
        username: user.into(),
        nas_ip,
        nas_port_id,
        nas_port_type: None,
        event_time: t0,
        start_time: t0,
        session_time: Some(0),
        input_octets: Some(0),
        output_octets: Some(0),
        framed_ip: None,
        framed_ipv6_address: None,
        framed_ipv6_prefix: None,
        delegated_ipv6_prefix: None,
        calling_station_id: None,
        called_station_id: None,
        terminate_cause: None,
        class: None,
        acct_authentic: None,
        service_type: None,
        framed_protocol: None,
        framed_interface_id: None,
        connect_info_start: None,
        connect_info_stop: None,
        nas_addresses: Vec::new(),
        clamped: false,
    }
}

/// Runs SQL on the installation's database (a test playing the operator).
fn sql(install: &Install, backend: Backend, postgres: &str, sqlite: &str) {
    match backend {
        Backend::Postgres => {
            let db = install.db_url.rsplit('/').next().unwrap().to_owned();
            crate::common::pg::shared()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .psql(&db, postgres);
        }
        Backend::Sqlite => {
            let path = install.db_url.strip_prefix("sqlite:").unwrap();
            rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(sqlite)
                .unwrap();
        }
    }
}

/// A rule of the operator's that refuses every radacct row of user `evil`:
/// a CHECK constraint on PostgreSQL, a trigger on SQLite.
fn refuse_user_evil(install: &Install, backend: Backend) {
    sql(
        install,
        backend,
        "ALTER TABLE radacct ADD CONSTRAINT no_evil CHECK (UserName <> 'evil')",
        "CREATE TRIGGER no_evil BEFORE INSERT ON radacct WHEN NEW.username = 'evil'
         BEGIN SELECT RAISE(ABORT, 'no evil'); END;",
    );
}

fn allow_user_evil(install: &Install, backend: Backend) {
    sql(
        install,
        backend,
        "ALTER TABLE radacct DROP CONSTRAINT no_evil",
        "DROP TRIGGER no_evil",
    );
}

/// Short batch waits, and on PostgreSQL two writer connections (lanes):
/// hostile input takes the lanes' path there (SQLite keeps one).
fn fast_batches(install: &Install) {
    install.write_config(
        "[database]\nreload_interval_secs = 1\n[accounting]\nbatch_max_wait_ms = 20\nwriter_connections = 2\n",
    );
}

fn nul_and_non_utf8_ids_are_acknowledged_stored_escaped_and_kept_apart(backend: Backend) {
    let install = Install::new_on(backend);
    fast_batches(&install);
    let server = install.serve(2);
    let names: Vec<String> = (0..50).map(|i| format!("innocent-{i}")).collect();
    let mut records: Vec<AcctRecord> = names.iter().map(|n| start(n.as_bytes())).collect();
    records.push(start(b"nul\0id"));
    records.push(start_of(b"nul-user", b"al\0ice"));
    records.push(start(b"id\xff"));
    records.push(start(b"id\xfe"));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let acked = send_all(&socket, server.acct, &records);
    assert_eq!(acked.len(), records.len(), "{}", server.log());
    let rows = install.sessions();
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r.session_id.as_str()).collect();
    assert_eq!(rows.len(), records.len(), "{ids:?}");
    for n in &names {
        assert!(ids.contains(n.as_str()), "{n} missing");
    }
    for stored in ["nul\\x00id", "id\\xff", "id\\xfe", "nul-user"] {
        assert!(ids.contains(stored), "{stored} missing from {ids:?}");
    }
    let user = rows.iter().find(|r| r.session_id == "nul-user").unwrap();
    assert_eq!(user.username, "al\\x00ice");
    assert_eq!(
        server.metric("shardius_accounting_events_rejected_total"),
        0.0
    );
    assert!(
        !server.log().contains("database unavailable"),
        "{}",
        server.log()
    );
}

fn a_coa_echoes_the_bytes_of_a_non_utf8_session_id(backend: Backend) {
    let install = Install::empty_on(backend);
    let nas = FakeNas::start(SECRET);
    nas.set_mode(Mode::Ack);
    install.provision_nas("mikrotik", nas.addr.port());
    install.add_alice();
    let server = install.serve(1);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        send_all(&socket, server.acct, &[start(b"81a\xff")]).len(),
        1
    );
    assert_eq!(
        send_all(&socket, server.acct, &[start(b"81a\xfe")]).len(),
        1
    );
    let out = install.ok(&["disconnect", "--user", "alice", "--session", "81a\\xff"]);
    assert!(out.contains("disconnect: ACK"), "{out}");
    let got = nas.wait_for(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attr(attr::ACCT_SESSION_ID), Some(&b"81a\xff"[..]));
    assert_eq!(got[0].attr(attr::USER_NAME), Some(&b"alice"[..]));
    drop(server);
}

fn a_row_the_database_refuses_is_set_aside_and_the_rest_of_its_batch_written(backend: Backend) {
    let install = Install::new_on(backend);
    fast_batches(&install);
    install.ok(&["migrate"]);
    refuse_user_evil(&install, backend);
    let mut server = install.serve(2);
    let names: Vec<String> = (0..50).map(|i| format!("good-{i}")).collect();
    let mut records: Vec<AcctRecord> = names.iter().map(|n| start(n.as_bytes())).collect();
    records.insert(20, start_of(b"evil-1", b"evil"));
    records.push(start_of(b"evil-2", b"evil"));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let acked = send_all(&socket, server.acct, &records);
    assert_eq!(acked.len(), records.len(), "{}", server.log());
    server.wait_for_log("set aside in", Duration::from_secs(5));
    let rows = install.sessions();
    assert_eq!(rows.len(), 50, "every innocent event is in radacct");
    assert!(rows.iter().all(|r| r.username == "alice"));
    let rejected = install.path("shardius-acct.spool.rejected");
    let (events, bad) = shardius::server::accounting::rejected::read(&rejected).unwrap();
    assert!(bad.is_empty());
    let mut set_aside: Vec<&str> = events.iter().map(|e| e.event.session_id.as_str()).collect();
    set_aside.sort();
    assert_eq!(set_aside, ["evil-1", "evil-2"]);
    assert!(
        events.iter().all(|e| e.error.contains("evil")),
        "{events:?}"
    );
    assert_eq!(
        server.metric("shardius_accounting_events_rejected_total"),
        2.0
    );
    // Nothing went to the spool: the database was up all along.
    assert_eq!(
        server.metric("shardius_accounting_spooled_batches_total"),
        0.0
    );
    // On PostgreSQL a lane's transaction failed on the refused row, and
    // the writer wrote that batch again, splitting it around the row.
    let rewrites = server.metric("shardius_accounting_lane_rewrites_total");
    match backend {
        Backend::Postgres => assert!(rewrites >= 1.0, "{}", server.log()),
        Backend::Sqlite => assert_eq!(rewrites, 0.0),
    }
    // The operator fixes the cause and writes them again.
    allow_user_evil(&install, backend);
    let out = install.run(&["accounting", "replay", rejected.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(install.sessions().len(), 52);
}

/// A spool as a previous run may leave it: a format-1 record (written
/// before stored-form text) with a NUL in an id, then format-2 records,
/// one with a row the database refuses and one damaged on disk.
fn damaged_spool(install: &Install) -> (Vec<String>, Vec<String>, u64) {
    let event = |sid: &str, user: &str| spooled_start(sid, user, None);
    let mut bytes = Vec::new();
    let legacy = serde_json::to_vec(&vec![event("old\0nul", "alice")]).unwrap();
    bytes.extend_from_slice(&(legacy.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&legacy).to_le_bytes());
    bytes.extend_from_slice(&legacy);
    let mut expected = vec!["old\\x00nul".to_owned()];
    let mut lost = Vec::new();
    let mut damaged_len = 0;
    for r in 0..30 {
        let mut batch: Vec<AcctEvent> = (0..20)
            .map(|i| event(&format!("r{r}-{i}"), "alice"))
            .collect();
        if r == 3 {
            batch.push(event("r3-evil", "evil"));
        }
        let mut record = encode_record(&serde_json::to_vec(&batch).unwrap());
        let ids = batch
            .iter()
            .map(|e| e.session_id.clone())
            .filter(|s| s != "r3-evil");
        if r == 10 {
            record[40] ^= 0x04;
            damaged_len = record.len() as u64;
            lost.extend(ids);
        } else {
            expected.extend(ids);
        }
        bytes.extend_from_slice(&record);
    }
    std::fs::write(install.path("shardius-acct.spool"), &bytes).unwrap();
    (expected, lost, damaged_len)
}

fn a_spool_with_a_refused_row_and_a_damaged_record_replays_everything_else(backend: Backend) {
    let install = Install::new_on(backend);
    install.ok(&["migrate"]);
    refuse_user_evil(&install, backend);
    let (expected, lost, damaged_len) = damaged_spool(&install);
    let mut server = install.serve(2);
    server.wait_for_log("accounting spool replayed", Duration::from_secs(30));
    let log = server.log();
    assert!(
        log.contains(
            "hold no readable record (damaged): acknowledged accounting may have been in them"
        ),
        "{log}"
    );
    let stored: std::collections::HashSet<String> = install
        .sessions()
        .into_iter()
        .map(|r| r.session_id)
        .collect();
    for sid in &expected {
        assert!(stored.contains(sid), "{sid} not replayed:\n{log}");
    }
    for sid in &lost {
        assert!(!stored.contains(sid));
    }
    assert_eq!(stored.len(), expected.len());
    let (rejected, _) =
        shardius::server::accounting::rejected::read(&install.path("shardius-acct.spool.rejected"))
            .unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].event.session_id, "r3-evil");
    let unreadable = std::fs::read(install.path("shardius-acct.spool.unreadable")).unwrap();
    assert_eq!(unreadable.len() as u64, damaged_len);
    assert_eq!(
        server.metric("shardius_accounting_spool_unreadable_bytes_total"),
        damaged_len as f64
    );
    assert_eq!(
        std::fs::metadata(install.path("shardius-acct.spool"))
            .unwrap()
            .len(),
        0
    );
}

fn counters_past_2_63_are_stored_clamped_and_counted_never_negative(backend: Backend) {
    let install = Install::new_on(backend);
    let server = install.serve(1);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut huge = start(b"huge");
    huge.status = acct_status::INTERIM_UPDATE;
    huge.input_octets = u64::MAX;
    huge.output_octets = (1 << 40) + 5;
    assert_eq!(send_all(&socket, server.acct, &[huge]).len(), 1);
    let rows = install.sessions();
    assert_eq!(rows[0].input_octets, Some(i64::MAX));
    assert_eq!(rows[0].output_octets, Some((1 << 40) + 5));
    assert_eq!(
        server.metric("shardius_accounting_counters_clamped_total"),
        1.0
    );
}

/// radius_logs lives in a file of its own on the embedded store: a log
/// writer holding its write lock (as a preempted SCHED_IDLE worker does)
/// never makes accounting wait.
#[test]
fn radius_logs_on_the_embedded_store_never_hold_up_accounting() {
    let install = Install::new();
    let server = install.serve(2);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(send_all(&socket, server.acct, &[start(b"first")]).len(), 1);
    let logs = install.path("shardius-logs.db");
    assert!(
        eventually(Duration::from_secs(5), || {
            rusqlite::Connection::open(&logs)
                .and_then(|c| {
                    c.query_row("SELECT count(*) FROM radius_logs", [], |r| {
                        r.get::<_, i64>(0)
                    })
                })
                .is_ok_and(|n| n >= 1)
        }),
        "radius_logs are written to shardius-logs.db"
    );
    let lock = rusqlite::Connection::open(&logs).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE; INSERT INTO radius_logs (logged_at, event, result) VALUES ('x', 'x', 'x');")
        .unwrap();
    let names: Vec<String> = (0..40).map(|i| format!("while-locked-{i}")).collect();
    let started = Instant::now();
    let mut acked = 0;
    for n in &names {
        acked += send_all(&socket, server.acct, &[start(n.as_bytes())]).len();
    }
    let took = started.elapsed();
    lock.execute_batch("COMMIT").unwrap();
    assert_eq!(acked, names.len(), "accounting waited for radius_logs");
    eprintln!("40 acknowledgements one by one while radius_logs was locked: {took:?}");
    let stored = install.sessions();
    assert_eq!(stored.len(), 41);
}

/// A spool far larger than one record is replayed holding one record in
/// memory: while the database refuses writes the writer probes and reads
/// a record a second, not the whole file.
#[test]
fn a_huge_spool_is_replayed_with_memory_that_does_not_grow_with_it() {
    let cluster = Cluster::start();
    let install = Install::on_url(cluster.database("huge"));
    install.provision();
    install.ok(&["migrate"]);
    // Writes refused as a read-only standby refuses them.
    cluster.psql(
        "huge",
        "CREATE FUNCTION deny() RETURNS trigger AS $$ BEGIN
             RAISE EXCEPTION 'standby' USING ERRCODE = 'read_only_sql_transaction'; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER deny BEFORE INSERT OR UPDATE ON radacct EXECUTE FUNCTION deny();",
    );
    let path = install.path("shardius-acct.spool");
    let (mut spool, _) = Spool::open(&path, 1 << 32).unwrap();
    let pad = "x".repeat(200);
    let mut total = 0;
    for r in 0..200 {
        let batch: Vec<AcctEvent> = (0..1024)
            .map(|i| spooled_start(&format!("h{r}-{i}"), "alice", Some(pad.clone())))
            .collect();
        total += batch.len();
        spool.append(&batch).unwrap();
    }
    drop(spool);
    let spool_bytes = std::fs::metadata(&path).unwrap().len();
    assert!(spool_bytes > 110 << 20, "{spool_bytes}");
    let mut server = install.serve(2);
    // (a read-only refusal, SQLSTATE 25006, is the database being away,
    // not a refused row: the spool waits for a writable primary)
    server.wait_for_log(
        "database unavailable: PostgreSQL: db error: ERROR: standby",
        Duration::from_secs(20),
    );
    // Several probes and refused replays of the first record.
    std::thread::sleep(Duration::from_secs(3));
    let peak_refused = peak_rss_kib(server.pid());
    cluster.psql("huge", "DROP TRIGGER deny ON radacct");
    server.wait_for_log("accounting spool replayed", Duration::from_secs(120));
    let peak = peak_rss_kib(server.pid());
    let rows = cluster.psql("huge", "SELECT count(*) FROM radacct");
    assert_eq!(rows, total.to_string());
    eprintln!(
        "spool {} MiB: peak RSS {} MiB while refused, {} MiB after the replay",
        spool_bytes >> 20,
        peak_refused >> 10,
        peak >> 10
    );
    // Reading the spool whole took RSS to several times its size; one
    // record at a time, the spool never fits in the peak (idle: ~50 MiB).
    assert!(
        peak < 96 << 10,
        "peak RSS {peak} KiB for a {spool_bytes}-byte spool"
    );
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// SIGTERM with the database down and the spool full: what cannot be
/// made durable is abandoned unacknowledged (the NAS retransmits) and the
/// process exits; everything acknowledged is replayed at the next start.
#[test]
fn sigterm_exits_promptly_with_the_database_down_and_the_spool_full() {
    let cluster = Cluster::start();
    let install = Install::on_url(cluster.database("spoolfull"));
    install.provision();
    install.write_config(
        "[database]\nreload_interval_secs = 1\n[accounting]\nspool_max_bytes = 16384\nbatch_max_wait_ms = 5\n",
    );
    let mut server = install.serve(2);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let names: Vec<String> = (0..200).map(|i| format!("f{i}")).collect();
    let mut acked = Vec::new();
    for n in &names[..10] {
        assert_eq!(
            send_all(&socket, server.acct, &[start(n.as_bytes())]).len(),
            1
        );
        acked.push(n.clone());
    }
    cluster.stop();
    // One at a time until the spool is full and acknowledgements stop.
    for n in &names[10..] {
        if send_all(&socket, server.acct, &[start(n.as_bytes())]).is_empty() {
            break;
        }
        acked.push(n.clone());
    }
    assert!(
        acked.len() > 10 && acked.len() < names.len(),
        "{}",
        acked.len()
    );
    server.wait_for_log("not acknowledged, retrying", Duration::from_secs(5));
    let stopping = Instant::now();
    let (clean, log) = server.stop();
    assert!(clean, "no clean exit within 10 s:\n{log}");
    assert!(log.contains("abandoned unacknowledged"), "{log}");
    eprintln!("exit {:?} after SIGTERM", stopping.elapsed());
    cluster.restart();
    let mut server = install.serve(2);
    server.wait_for_log("accounting spool replayed", Duration::from_secs(20));
    let stored: std::collections::HashSet<String> = cluster
        .psql("spoolfull", "SELECT AcctSessionId FROM radacct")
        .lines()
        .map(str::to_owned)
        .collect();
    for n in &acked {
        assert!(stored.contains(n), "{n} acknowledged but lost");
    }
}

on_both_backends!(
    nul_and_non_utf8_ids_are_acknowledged_stored_escaped_and_kept_apart,
    a_coa_echoes_the_bytes_of_a_non_utf8_session_id,
    a_row_the_database_refuses_is_set_aside_and_the_rest_of_its_batch_written,
    a_spool_with_a_refused_row_and_a_damaged_record_replays_everything_else,
    counters_past_2_63_are_stored_clamped_and_counted_never_negative,
);
