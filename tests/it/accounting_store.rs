//! The radacct upsert rules, on both stores: a session's events in any
//! order, split over any batches, give the same row.

use crate::common::server::{Backend, Install};
use chrono::{DateTime, Duration, Utc};
use shardius::accounting::{legacy_unique_id as unique_id, AcctEvent, AcctKind};
use shardius::store::{self, DatabaseUrl, SessionRow, Store};

fn open(backend: Backend) -> (Install, Box<dyn Store>) {
    let install = Install::empty_on(backend);
    let mut store = store::open(&DatabaseUrl::parse(&install.db_url).unwrap()).unwrap();
    store.migrate().unwrap();
    (install, store)
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

/// An event of session `sid` at `secs` into the session with `octets` in.
fn event(kind: AcctKind, sid: &str, secs: u32, octets: u64) -> AcctEvent {
    let nas_ip = "10.0.0.1".parse().unwrap();
    let event_time = t0() + Duration::seconds(i64::from(secs));
    AcctEvent {
        kind,
        unique_id: unique_id(&nas_ip, sid.as_bytes(), b"alice", Some(b"ether1")),
        legacy_id: None,
        session_id: sid.into(),
        username: "alice".into(),
        nas_ip,
        nas_port_id: Some("ether1".into()),
        nas_port_type: Some("Ethernet".into()),
        event_time,
        start_time: t0(),
        session_time: Some(secs),
        input_octets: Some(octets),
        output_octets: Some(octets * 3),
        framed_ip: Some("100.64.0.7".parse().unwrap()),
        framed_ipv6_address: None,
        framed_ipv6_prefix: None,
        delegated_ipv6_prefix: None,
        calling_station_id: Some("AA:BB:CC:DD:EE:FF".into()),
        called_station_id: None,
        terminate_cause: (kind == AcctKind::Stop).then(|| "User-Request".into()),
        class: Some("53484431".into()),
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

fn lifecycle(sid: &str) -> Vec<AcctEvent> {
    let gib = 1u64 << 30;
    vec![
        event(AcctKind::Start, sid, 0, 0),
        event(AcctKind::Interim, sid, 30, 3 * gib),
        event(AcctKind::Interim, sid, 60, 5 * gib), // crosses 4 GiB
        event(AcctKind::Stop, sid, 90, 6 * gib + 7),
    ]
}

fn row(store: &mut dyn Store, sid: &str) -> SessionRow {
    let rows = store.sessions(Some("alice"), true, 100).unwrap();
    rows.into_iter()
        .find(|r| r.session_id == sid)
        .expect("a radacct row")
}

fn a_session_lifecycle_gives_one_row_with_64_bit_counters(backend: Backend) {
    let (_i, mut store) = open(backend);
    for e in lifecycle("s1") {
        store.write_accounting(&[e]).unwrap();
    }
    let r = row(&mut *store, "s1");
    assert_eq!(r.input_octets, Some((6i64 << 30) + 7));
    assert_eq!(r.output_octets, Some(((6i64 << 30) + 7) * 3));
    assert_eq!(r.session_time, Some(90));
    assert_eq!(r.start_time, Some(t0()));
    assert_eq!(r.stop_time, Some(t0() + Duration::seconds(90)));
    assert_eq!(r.terminate_cause.as_deref(), Some("User-Request"));
    assert_eq!(r.framed_ip.as_deref(), Some("100.64.0.7"));
    assert_eq!(store.sessions(Some("alice"), true, 100).unwrap().len(), 1);
    assert!(
        store
            .sessions(Some("alice"), false, 100)
            .unwrap()
            .is_empty(),
        "stopped: not open"
    );
}

fn out_of_order_arrival_gives_the_same_final_row(backend: Backend) {
    let (_i, mut store) = open(backend);
    let in_order = {
        for e in lifecycle("ordered") {
            store.write_accounting(&[e]).unwrap();
        }
        row(&mut *store, "ordered")
    };
    // Interim before Start, Stop before the last Interim, a duplicate Stop.
    let l = lifecycle("shuffled");
    for e in [&l[1], &l[0], &l[3], &l[2], &l[3]] {
        store.write_accounting(std::slice::from_ref(e)).unwrap();
    }
    let shuffled = row(&mut *store, "shuffled");
    let strip = |r: SessionRow| SessionRow {
        unique_id: String::new(),
        session_id: String::new(),
        ..r
    };
    assert_eq!(strip(shuffled), strip(in_order));
}

fn a_nas_reboot_closes_its_open_sessions_and_stale_ones_are_closed(backend: Backend) {
    let (_i, mut store) = open(backend);
    store
        .write_accounting(&[
            event(AcctKind::Start, "a", 0, 0),
            event(AcctKind::Start, "b", 0, 0),
        ])
        .unwrap();
    let mut reboot = event(AcctKind::NasReboot, "", 100, 0);
    reboot.unique_id = "reboot".into();
    store.write_accounting(&[reboot]).unwrap();
    for sid in ["a", "b"] {
        assert_eq!(
            row(&mut *store, sid).terminate_cause.as_deref(),
            Some("NAS-Reboot")
        );
    }
    store
        .write_accounting(&[event(AcctKind::Interim, "c", 30, 10)])
        .unwrap();
    assert_eq!(
        store
            .close_stale_sessions(t0() + Duration::seconds(29))
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .close_stale_sessions(t0() + Duration::seconds(31))
            .unwrap(),
        1
    );
    let c = row(&mut *store, "c");
    assert_eq!(c.terminate_cause.as_deref(), Some("Stale-Session"));
    assert_eq!(c.stop_time, Some(t0() + Duration::seconds(30)));
}

/// The indexes FreeRADIUS's schema.sql creates on radacct.class and on
/// radreply (username, attribute) exist under its names and columns.
fn the_freeradius_indexes_exist_as_freeradius_has_them(backend: Backend) {
    let (install, _store) = open(backend);
    let columns = |index: &str| -> String {
        match backend {
            Backend::Sqlite => {
                let db = install.db_url.trim_start_matches("sqlite:").to_owned();
                let conn = rusqlite::Connection::open(db).unwrap();
                let mut stmt = conn
                    .prepare(&format!(
                        "SELECT name FROM pragma_index_info('{index}') ORDER BY seqno"
                    ))
                    .unwrap();
                let names: Vec<String> = stmt
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                names.join(",")
            }
            Backend::Postgres => {
                let db = install.db_url.rsplit('/').next().unwrap().to_owned();
                let def = crate::common::pg::shared()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .psql(
                        &db,
                        &format!("SELECT indexdef FROM pg_indexes WHERE indexname = '{index}'"),
                    );
                def.rsplit_once('(')
                    .map(|(_, cols)| cols.trim_end_matches(')').replace(' ', ""))
                    .unwrap_or_default()
            }
        }
    };
    assert_eq!(columns("radacct_calss_idx"), "class");
    assert_eq!(columns("radreply_username"), "username,attribute");
}

/// One row of `sql` with its columns joined by `|` (NULL as empty), on
/// either backend.
fn query_row(install: &Install, backend: Backend, sql: &str) -> String {
    match backend {
        Backend::Sqlite => {
            let db = install.db_url.trim_start_matches("sqlite:").to_owned();
            let conn = rusqlite::Connection::open(db).unwrap();
            conn.query_row(sql, [], |r| {
                let n = r.as_ref().column_count();
                Ok((0..n)
                    .map(|i| match r.get_ref(i).unwrap() {
                        rusqlite::types::ValueRef::Null => String::new(),
                        rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                        rusqlite::types::ValueRef::Text(t) => {
                            String::from_utf8_lossy(t).into_owned()
                        }
                        other => format!("{other:?}"),
                    })
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap()
        }
        Backend::Postgres => {
            let db = install.db_url.rsplit('/').next().unwrap().to_owned();
            crate::common::pg::shared()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .psql(&db, sql)
        }
    }
}

/// The columns FreeRADIUS's queries fill beyond shardius's first set:
/// acctinterval (seconds since the row's last update, set by an Interim
/// only), Acct-Authentic, Service-Type, Framed-Protocol,
/// Framed-Interface-Id, Connect-Info of the Start and of the Stop. And
/// `existing_sessions`, which sessions open across the key change use.
fn the_columns_freeradius_fills_are_written(backend: Backend) {
    let (install, mut store) = open(backend);
    let mut start = event(AcctKind::Start, "f", 0, 0);
    start.acct_authentic = Some("RADIUS".into());
    start.service_type = Some("Framed-User".into());
    start.framed_protocol = Some("PPP".into());
    start.framed_interface_id = Some("0:0:0:1".into());
    start.connect_info_start = Some("1000 Mbps".into());
    let mut stop = event(AcctKind::Stop, "f", 150, 900);
    stop.connect_info_stop = Some("down".into());
    stop.service_type = Some("Login-User".into());
    for batch in [
        vec![start],
        vec![event(AcctKind::Interim, "f", 60, 100)],
        vec![event(AcctKind::Interim, "f", 90, 200)],
        vec![stop],
        // Late: a stopped session's interval stays.
        vec![event(AcctKind::Interim, "f", 120, 300)],
    ] {
        store.write_accounting(&batch).unwrap();
    }
    let key = event(AcctKind::Start, "f", 0, 0).unique_id;
    let got = query_row(
        &install,
        backend,
        &format!(
            "SELECT acctinterval, acctauthentic, servicetype, framedprotocol, framedinterfaceid,
                connectinfo_start, connectinfo_stop, acctinputoctets, acctsessiontime
             FROM radacct WHERE acctuniqueid = '{key}'"
        ),
    );
    assert_eq!(
        got,
        "30|RADIUS|Framed-User|PPP|0:0:0:1|1000 Mbps|down|900|150"
    );
    let found = store.existing_sessions(&[&key, "0123"]).unwrap();
    assert_eq!(found.into_iter().collect::<Vec<_>>(), vec![key]);
}

/// Two nodes write counted batches of the same sessions at once, half of
/// them unknown to radacct at first (both race to insert them; the other
/// half started): the counters each write reports as stored before it
/// make every byte count exactly once, as the quota bookkeeping counts.
fn counted_writes_of_the_same_sessions_on_two_nodes_count_every_byte_once(backend: Backend) {
    use shardius::policy::fup::usage_delta;
    let (install, mut store) = open(backend);
    let url = DatabaseUrl::parse(&install.db_url).unwrap();
    let sids: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    let starts: Vec<AcctEvent> = sids[..10]
        .iter()
        .map(|sid| event(AcctKind::Start, sid, 0, 0))
        .collect();
    store.write_accounting(&starts).unwrap();
    let steps = 30u32;
    let nodes: Vec<_> = (0..2u32)
        .map(|node| {
            let (url, sids) = (url.clone(), sids.clone());
            std::thread::spawn(move || {
                let mut store = store::open(&url).unwrap();
                let mut counted = vec![0u64; sids.len()];
                for step in 0..steps {
                    // Node 0 writes the even values, node 1 the odd ones:
                    // each node's go up, and they interleave.
                    let n = 2 * step + node + 1;
                    let batch: Vec<AcctEvent> = sids
                        .iter()
                        .map(|sid| event(AcctKind::Interim, sid, 60 * n, 1000 * u64::from(n)))
                        .collect();
                    let before = store.write_accounting_counted(&batch).unwrap();
                    assert_eq!(before.len(), batch.len());
                    for (i, (e, prev)) in batch.iter().zip(before).enumerate() {
                        let octets = e.input_octets.unwrap() + e.output_octets.unwrap();
                        counted[i] += usage_delta(prev, octets, e.session_time.unwrap());
                    }
                }
                counted
            })
        })
        .collect();
    let counted: Vec<Vec<u64>> = nodes.into_iter().map(|n| n.join().unwrap()).collect();
    // What is stored now: the largest value either node wrote, 4 × 1000 ×
    // (2 × steps) octets (input, and output three times that).
    let probe: Vec<AcctEvent> = sids
        .iter()
        .map(|sid| event(AcctKind::Interim, sid, 1, 0))
        .collect();
    let stored = store.write_accounting_counted(&probe).unwrap();
    let last = 4 * 1000 * u64::from(2 * steps);
    for (i, sid) in sids.iter().enumerate() {
        assert_eq!(stored[i].map(|(octets, _)| octets), Some(last), "{sid}");
        assert_eq!(
            counted[0][i] + counted[1][i],
            last,
            "{sid}: every byte once"
        );
    }
}

on_both_backends!(
    counted_writes_of_the_same_sessions_on_two_nodes_count_every_byte_once,
    the_columns_freeradius_fills_are_written,
    the_freeradius_indexes_exist_as_freeradius_has_them,
    a_session_lifecycle_gives_one_row_with_64_bit_counters,
    out_of_order_arrival_gives_the_same_final_row,
    a_nas_reboot_closes_its_open_sessions_and_stale_ones_are_closed,
);
