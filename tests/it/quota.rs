//! Quota and FUP (issue 8): interim updates add to usage, crossing a tier
//! sends exactly one CoA with the tier's speed, an Access-Accept carries
//! the tier speed, counter resets and reordered interims are handled, free
//! hours count only the paid share, and the daily reset restores the speed.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use crate::common::fake_nas::{FakeNas, Received};
use crate::common::pg::eventually;
use crate::common::server::{
    acct_record, send_accounting, send_all, Backend, Install, Server, TestNas, SECRET,
};
use shardius::nas_client::{AcctRecord, Credentials, Session};
use shardius::proto::dict::{acct_status, mikrotik, vendor};
use shardius::proto::{Code, Packet};
use shardius::store::{self, DatabaseUrl};

on_both_backends!(tiers_are_crossed_once_each_carried_at_login_and_reset_daily);

fn accounting(server: &Server, status: u32, user: &str, sid: &str, secs: u32, each_way: u64) {
    let framed = Some(Ipv4Addr::new(100, 64, 0, 9));
    send_accounting(
        server.acct,
        &acct_record(status, user, sid, secs, each_way, framed),
    );
}

fn rate(r: &Received) -> String {
    String::from_utf8(
        r.vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT)
            .unwrap(),
    )
    .unwrap()
}

/// The Mikrotik-Rate-Limit of alice's Access-Accept.
fn login_rate(server: &Server) -> String {
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    let (_, _, reply) = nas.exchange(
        server.auth,
        "alice",
        &Credentials::Pap {
            password: b"s3cret",
        },
        &Session::default(),
    );
    let reply = reply.expect("an answer");
    let p = Packet::parse(&reply).unwrap();
    assert_eq!(p.code(), Code::ACCESS_ACCEPT);
    String::from_utf8(
        p.vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT)
            .unwrap()
            .to_vec(),
    )
    .unwrap()
}

/// Usage is counted just after the Accounting-Response is sent.
fn assert_usage(install: &Install, want: &str) {
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(5), || {
        last = install
            .ok(&["subscriber", "usage", "alice"])
            .trim()
            .to_owned();
        last == want
    });
    assert!(ok, "usage: {last}\nwanted: {want}");
}

fn setup(backend: Backend) -> (FakeNas, Install) {
    let fake = FakeNas::start(SECRET);
    let install = Install::empty_on(backend);
    install.write_config(
        "[database]\nreload_interval_secs = 1\n\n[coa]\ntimeout_ms = 300\nexpiry_check_interval_secs = 1\n\n[quota]\ndaily_reset_time = \"00:00\"\n",
    );
    install.add_key_and_nas("mikrotik", fake.addr.port());
    install.add_service("10M", "10M", "2M");
    install.add_tier("10M", "daily", "1", "1M", "5M", "1M");
    install.add_tier("10M", "daily", "2", "2M", "2M", "512k");
    install.add_alice();
    (fake, install)
}

fn tiers_are_crossed_once_each_carried_at_login_and_reset_daily(backend: Backend) {
    let (fake, install) = setup(backend);
    let mut server = install.serve(1);
    // The first check claims today's (empty) reset; wait for it so it does
    // not zero the usage below.
    server.wait_for_log("monthly usage reset for", Duration::from_secs(10));
    assert_eq!(login_rate(&server), "2000k/10000k");

    accounting(&server, acct_status::START, "alice", "s1", 0, 0);
    accounting(
        &server,
        acct_status::INTERIM_UPDATE,
        "alice",
        "s1",
        30,
        300_000,
    ); // 600 kB
    std::thread::sleep(Duration::from_millis(300));
    assert!(fake.received().is_empty(), "below tier 1: no CoA");
    accounting(
        &server,
        acct_status::INTERIM_UPDATE,
        "alice",
        "s1",
        60,
        500_000,
    ); // 1.0 MB: tier 1
    let got = fake.wait_for(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].code, Code::COA_REQUEST);
    assert_eq!(rate(&got[0]), "1000k/5000k");
    accounting(
        &server,
        acct_status::INTERIM_UPDATE,
        "alice",
        "s1",
        90,
        800_000,
    ); // 1.6 MB
    accounting(
        &server,
        acct_status::INTERIM_UPDATE,
        "alice",
        "s1",
        120,
        1_100_000,
    ); // 2.2 MB: tier 2
    let got = fake.wait_for(2, Duration::from_secs(5));
    assert_eq!(got.len(), 2);
    assert_eq!(rate(&got[1]), "512k/2000k");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fake.received().len(), 2, "exactly two CoAs");

    // A login now gets the tier speed.
    assert!(
        eventually(Duration::from_secs(5), || login_rate(&server)
            == "512k/2000k"),
        "the Access-Accept carries the tier speed"
    );

    // The NAS reset its counters (session time went on): 200 kB counts.
    accounting(
        &server,
        acct_status::INTERIM_UPDATE,
        "alice",
        "s1",
        150,
        100_000,
    );
    // A late, reordered interim (older session time) counts nothing.
    accounting(
        &server,
        acct_status::INTERIM_UPDATE,
        "alice",
        "s1",
        140,
        50_000,
    );
    assert_usage(
        &install,
        "alice: daily 2400000 bytes (tier 2), monthly 2400000 bytes (tier 0)",
    );

    // The daily reset (pretend it last ran long ago) restores the speed.
    install.sql("UPDATE quota_resets SET done_on = '2000-01-01' WHERE period = 'daily'");
    let got = fake.wait_for(3, Duration::from_secs(10));
    assert_eq!(got.len(), 3, "a CoA restoring the speed");
    assert_eq!(rate(&got[2]), "2000k/10000k");
    assert_usage(
        &install,
        "alice: daily 0 bytes (tier 0), monthly 2400000 bytes (tier 0)",
    );
    assert!(
        eventually(Duration::from_secs(5), || login_rate(&server)
            == "2000k/10000k"),
        "full speed at login again"
    );
    assert_eq!(server.metric("shardius_fup_tier_changes_total"), 2.0);
    assert_eq!(
        server.metric("shardius_coa_requests_total{kind=\"coa\",result=\"ack\"}"),
        3.0
    );
}

#[test]
fn free_hours_count_only_the_paid_share() {
    let (fake, install) = setup(Backend::Sqlite);
    // The whole day (from == to) is a free-hours window at 50%.
    install.ok(&[
        "service",
        "free-hours",
        "--service",
        "10M",
        "--from",
        "00:00",
        "--to",
        "00:00",
        "--free",
        "50",
    ]);
    let mut server = install.serve(1);
    server.wait_for_log("monthly usage reset for", Duration::from_secs(10));
    accounting(&server, acct_status::START, "alice", "s1", 0, 0);
    // 1.2 MB of traffic counts as 600 kB: below tier 1.
    accounting(
        &server,
        acct_status::INTERIM_UPDATE,
        "alice",
        "s1",
        30,
        600_000,
    );
    assert_usage(
        &install,
        "alice: daily 600000 bytes (tier 0), monthly 600000 bytes (tier 0)",
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(fake.received().is_empty());
    let err = install.fails(&[
        "service",
        "free-hours",
        "--service",
        "10M",
        "--from",
        "25:00",
        "--to",
        "01:00",
        "--free",
        "10",
    ]);
    assert!(err.contains("HH:MM"), "{err}");
    let err = install.fails(&[
        "service",
        "tier",
        "--service",
        "10M",
        "--period",
        "daily",
        "--level",
        "7",
        "--threshold",
        "1G",
        "--download",
        "1M",
        "--upload",
        "1M",
    ]);
    assert!(err.contains("--level"), "{err}");
}

on_both_backends!(monthly_resets_follow_the_anniversary_day_once_per_day);

fn monthly_resets_follow_the_anniversary_day_once_per_day(backend: Backend) {
    use chrono::NaiveDate;
    use shardius::policy::fup::{Levels, Period};
    let install = Install::empty_on(backend);
    let url = shardius::store::DatabaseUrl::parse(&install.db_url).unwrap();
    let mut store = shardius::store::open(&url).unwrap();
    store.migrate().unwrap();
    let usage = |store: &mut Box<dyn shardius::store::Store>, users: &[&str]| {
        let deltas: Vec<(String, u64)> = users.iter().map(|u| (u.to_string(), 1000)).collect();
        store.add_usage(&deltas).unwrap();
    };
    usage(&mut store, &["d15", "d31", "d1"]);
    install.sql("UPDATE subscriber_usage SET anniversary_day = 15 WHERE username = 'd15'");
    install.sql("UPDATE subscriber_usage SET anniversary_day = 31 WHERE username = 'd31'");
    // Counting began on 1 March.
    install.sql("UPDATE subscriber_usage SET monthly_reset_on = '2026-03-01'");
    let tiered = Levels {
        daily: 0,
        monthly: 2,
    };
    store.set_fup_levels("d15", tiered).unwrap();
    let monthly = |store: &mut Box<dyn shardius::store::Store>, u: &str| {
        let row = store.usage(u).unwrap().unwrap();
        (row.monthly_bytes, row.levels.monthly)
    };
    let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();

    // 15 March: d15's anniversary.
    let reset = store.reset_usage(Period::Monthly, d(2026, 3, 15)).unwrap();
    assert_eq!(reset, Some(vec![("d15".to_string(), tiered)]));
    assert_eq!(monthly(&mut store, "d15"), (0, 0));
    assert_eq!(monthly(&mut store, "d31"), (1000, 0));
    assert_eq!(monthly(&mut store, "d1"), (1000, 0));
    // Once per day.
    assert_eq!(
        store.reset_usage(Period::Monthly, d(2026, 3, 15)).unwrap(),
        None
    );

    // 31 March: d31's.
    assert_eq!(
        store.reset_usage(Period::Monthly, d(2026, 3, 31)).unwrap(),
        Some(vec![])
    );
    assert_eq!(monthly(&mut store, "d31"), (0, 0));
    assert_eq!(monthly(&mut store, "d1"), (1000, 0));

    // The server was down all of 1 April, d1's anniversary: caught up on the 2nd.
    store.reset_usage(Period::Monthly, d(2026, 4, 2)).unwrap();
    assert_eq!(monthly(&mut store, "d1"), (0, 0));

    // 28 February is d31's anniversary in a month without a 31st.
    usage(&mut store, &["d31"]);
    install
        .sql("UPDATE subscriber_usage SET monthly_reset_on = '2027-01-31' WHERE username = 'd31'");
    store.reset_usage(Period::Monthly, d(2027, 2, 27)).unwrap();
    assert_eq!(monthly(&mut store, "d31"), (1000, 0));
    store.reset_usage(Period::Monthly, d(2027, 2, 28)).unwrap();
    assert_eq!(monthly(&mut store, "d31"), (0, 0));

    // Daily: everyone, daily counters only, once per day.
    usage(&mut store, &["d1"]);
    assert!(store
        .reset_usage(Period::Daily, d(2027, 2, 28))
        .unwrap()
        .is_some());
    assert_eq!(store.usage("d1").unwrap().unwrap().daily_bytes, 0);
    assert_eq!(store.usage("d1").unwrap().unwrap().monthly_bytes, 1000);
    assert_eq!(
        store.reset_usage(Period::Daily, d(2027, 2, 28)).unwrap(),
        None
    );
}

on_both_backends!(interims_written_side_by_side_count_every_byte_once);

/// Four NAS threads send the rounds of the same 300 sessions at once
/// (thread t rounds t, t + 4, t + 8), so that on PostgreSQL each batch,
/// holding rounds of many sessions, is split among four writer
/// connections written side by side, and a session's rounds from
/// different threads meet in one batch or follow each other. Every
/// request is acknowledged; radacct keeps each session's last round; every
/// subscriber's usage is its session's traffic, each byte counted once.
/// On SQLite the writer keeps one connection (it takes one writer).
fn interims_written_side_by_side_count_every_byte_once(backend: Backend) {
    const USERS: usize = 300;
    const ROUNDS: u32 = 12;
    let install = Install::new_on(backend);
    install.write_config(
        "[database]\nreload_interval_secs = 1\n[accounting]\nwriter_connections = 4\nbatch_max_wait_ms = 1\n[quota]\ndaily_reset_time = \"00:00\"\n",
    );
    install.add_service("fup", "10M", "2M");
    install.add_tier("fup", "daily", "1", "1T", "5M", "1M");
    install.import_subscribers(USERS, "fup");
    let mut server = install.serve(2);
    // Today's resets (due from 00:00) first: they zero the usage.
    server.wait_for_log("monthly usage reset for", Duration::from_secs(10));
    let to = server.acct;
    let names: Vec<(String, String)> = (1..=USERS)
        .map(|n| (format!("user{n}"), format!("side-{n}")))
        .collect();
    let round = |r: u32| -> Vec<AcctRecord<'_>> {
        names
            .iter()
            .map(|(user, sid)| AcctRecord {
                status: if r == 0 {
                    acct_status::START
                } else {
                    acct_status::INTERIM_UPDATE
                },
                session_id: sid.as_bytes(),
                user_name: user.as_bytes(),
                session_time: r * 10,
                input_octets: u64::from(r) * 1000,
                output_octets: u64::from(r) * 500,
                framed_ip: None,
                terminate_cause: None,
                class: None,
            })
            .collect()
    };
    let unanswered: Vec<(u32, usize)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let round = &round;
                scope.spawn(move || {
                    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                    (t..ROUNDS)
                        .step_by(4)
                        .map(|r| (r, USERS - send_all(&socket, to, &round(r)).len()))
                        .filter(|(_, missing)| *missing > 0)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    assert!(
        unanswered.is_empty(),
        "rounds with requests not acknowledged: {unanswered:?}\n{}",
        server.log()
    );
    let last = u64::from(ROUNDS - 1);
    let rows = install.sessions();
    assert_eq!(rows.len(), USERS);
    for row in &rows {
        assert_eq!(row.input_octets, Some(last as i64 * 1000), "{row:?}");
        assert_eq!(row.session_time, Some(last as i64 * 10), "{row:?}");
    }
    let mut store = store::open(&DatabaseUrl::parse(&install.db_url).unwrap()).unwrap();
    let want = last * 1500;
    let mut wrong = Vec::new();
    let counted = eventually(Duration::from_secs(10), || {
        wrong = names
            .iter()
            .map(|(u, _)| u.clone())
            .filter_map(|u| {
                let got = store.usage(&u).unwrap().map_or(0, |r| r.daily_bytes);
                (got != want).then_some((u, got))
            })
            .collect();
        wrong.is_empty()
    });
    assert!(
        counted,
        "usage not {want} for {} users, e.g. {:?}\n{}",
        wrong.len(),
        &wrong[..wrong.len().min(5)],
        server.log()
    );
    let overlapped = server.metric("shardius_accounting_overlapped_batches_total");
    match backend {
        Backend::Postgres => assert!(overlapped > 0.0, "the batches were written side by side"),
        Backend::Sqlite => assert_eq!(overlapped, 0.0, "SQLite keeps one writer connection"),
    }
    assert_eq!(
        server.metric("shardius_accounting_lane_rewrites_total"),
        0.0,
        "{}",
        server.log()
    );
}
