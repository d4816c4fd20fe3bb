//! Accounting end to end on the real server, on both stores: every
//! Accounting-Response means the event is in radacct, whatever happens
//! to the server afterwards.

use std::collections::HashSet;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::server::{radclient, send_all, Backend, Install, SECRET};
use shardius::nas_client::{self as nas, AcctRecord, Session};
use shardius::proto::dict::acct_status;
use shardius::proto::Secret;

fn record(status: u32, sid: &str, secs: u32, octets: u64) -> AcctRecord<'_> {
    AcctRecord {
        status,
        session_id: sid.as_bytes(),
        user_name: b"alice",
        session_time: secs,
        input_octets: octets,
        output_octets: octets / 2,
        framed_ip: Some("100.64.0.9".parse().unwrap()),
        terminate_cause: (status == acct_status::STOP).then_some(1),
        class: Some(b"SHD1-cookie"),
    }
}

fn writer_field(log: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("writer stopped:"))
        .unwrap_or_else(|| panic!("{log}"));
    let start = line.find(&format!("{key}=")).unwrap() + key.len() + 1;
    line[start..].split(' ').next().unwrap().parse().unwrap()
}

fn a_session_lifecycle_lands_in_radacct_as_one_row(backend: Backend) {
    let install = Install::new_on(backend);
    let server = install.serve(2);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let gib = 1u64 << 30;
    let lifecycle = [
        record(acct_status::START, "81a00003", 0, 0),
        record(acct_status::INTERIM_UPDATE, "81a00003", 30, 3 * gib),
        record(acct_status::INTERIM_UPDATE, "81a00003", 60, 5 * gib),
        record(acct_status::STOP, "81a00003", 90, 6 * gib + 5),
    ];
    for r in &lifecycle {
        assert_eq!(
            send_all(&socket, server.acct, std::slice::from_ref(r)).len(),
            1
        );
    }
    let rows = install.sessions();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.session_id, "81a00003");
    assert_eq!(row.username, "alice");
    assert_eq!(row.input_octets, Some(6 * gib as i64 + 5));
    assert_eq!(row.session_time, Some(90));
    assert_eq!(row.terminate_cause.as_deref(), Some("User-Request"));
    assert_eq!(row.framed_ip.as_deref(), Some("100.64.0.9"));
    assert!(row.stop_time.is_some());
    let listing = install.ok(&["sessions", "--all"]);
    assert!(
        listing.contains("81a00003") && listing.contains("User-Request"),
        "{listing}"
    );
}

fn radclient_accounting_is_acknowledged_and_recorded(backend: Backend) {
    let install = Install::new_on(backend);
    let server = install.serve(1);
    let out = radclient(
        server.acct,
        "acct",
        "Acct-Status-Type = Start\nAcct-Session-Id = \"rc-1\"\nUser-Name = \"alice\"\nNAS-Port-Id = \"ether1\"\n",
    );
    assert!(out.contains("Received Accounting-Response"), "{out}");
    let open = install.ok(&["sessions", "--user", "alice"]);
    assert!(open.contains("rc-1") && open.contains("open"), "{open}");
}

fn interims_are_coalesced_into_far_fewer_commits_than_packets(backend: Backend) {
    let install = Install::new_on(backend);
    install.write_config(
        "[database]\nreload_interval_secs = 1\n[accounting]\nbatch_max_wait_ms = 20\n",
    );
    let server = install.serve(2);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let records: Vec<AcctRecord> = (1..=1000)
        .map(|i| record(acct_status::INTERIM_UPDATE, "busy", i, u64::from(i) * 1000))
        .collect();
    let acked = send_all(&socket, server.acct, &records);
    assert_eq!(acked.len(), 1000);
    let (_, log) = server.stop();
    let (events, batches) = (writer_field(&log, "events"), writer_field(&log, "batches"));
    assert_eq!(events, 1000, "{log}");
    assert!(
        batches * 5 <= events,
        "{batches} commits for {events} interims"
    );
    let rows = install.sessions();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].input_octets, Some(1_000_000));
}

fn a_retransmitted_accounting_request_is_answered_once_stored_and_counted_once(backend: Backend) {
    let install = Install::new_on(backend);
    let server = install.serve(2);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let request = nas::accounting_request(
        &mut buf,
        7,
        &Secret::new(SECRET.as_bytes()),
        &record(acct_status::START, "dup", 0, 0),
        &Session::default(),
    )
    .unwrap()
    .to_vec();
    let mut first = [0u8; 4096];
    socket.send_to(&request, server.acct).unwrap();
    let n = socket.recv(&mut first).unwrap();
    socket.send_to(&request, server.acct).unwrap();
    let mut again = [0u8; 4096];
    let m = socket.recv(&mut again).unwrap();
    assert_eq!(&first[..n], &again[..m]);
    let (_, log) = server.stop();
    assert_eq!(
        writer_field(&log, "events"),
        1,
        "the retransmission was written again:\n{log}"
    );
}

fn sigterm_commits_and_answers_everything_queued(backend: Backend) {
    let install = Install::new_on(backend);
    let server = install.serve(2);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let names: Vec<String> = (0..300).map(|i| format!("t{i}")).collect();
    let records: Vec<AcctRecord> = names
        .iter()
        .map(|n| record(acct_status::START, n, 0, 0))
        .collect();
    let acked = send_all(&socket, server.acct, &records);
    let (clean, _) = server.stop();
    assert!(clean);
    let stored: HashSet<String> = install
        .sessions()
        .into_iter()
        .map(|r| r.session_id)
        .collect();
    for i in acked {
        assert!(
            stored.contains(&names[i]),
            "{} acknowledged but not stored",
            names[i]
        );
    }
}

fn kill_9_under_load_loses_nothing_that_was_acknowledged(backend: Backend) {
    let install = Install::new_on(backend);
    let server = install.serve(2);
    let to = server.acct;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                let names: Vec<String> = (0..100).map(|i| format!("k{round}-{i}")).collect();
                let records: Vec<AcctRecord> = names
                    .iter()
                    .map(|n| record(acct_status::START, n, 0, 0))
                    .collect();
                let got = send_all(&socket, to, &records);
                acked
                    .lock()
                    .unwrap()
                    .extend(got.into_iter().map(|i| names[i].clone()));
                round += 1;
            }
        })
    };
    let started = Instant::now();
    while acked.lock().unwrap().len() < 500 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 500,
        "the load did not get going: {} acknowledged",
        acked.len()
    );
    let stored: HashSet<String> = install
        .sessions()
        .into_iter()
        .map(|r| r.session_id)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

on_both_backends!(
    a_session_lifecycle_lands_in_radacct_as_one_row,
    radclient_accounting_is_acknowledged_and_recorded,
    interims_are_coalesced_into_far_fewer_commits_than_packets,
    a_retransmitted_accounting_request_is_answered_once_stored_and_counted_once,
    sigterm_commits_and_answers_everything_queued,
    kill_9_under_load_loses_nothing_that_was_acknowledged,
);
