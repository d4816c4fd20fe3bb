//! Time-of-day bandwidth rules (issue 17 part 4), on a virtual clock (the
//! hidden `serve --clock-offset-secs`): a window from Monday 23:59 to
//! 00:01 crosses midnight; a second rule from 00:00 overlaps it with a
//! higher priority number and loses where both apply. Live sessions get
//! one CoA when a window opens and one when it closes, exactly the
//! affected ones; an Access-Accept inside the window carries the
//! multiplied speed; the rule multiplies the FUP tier's speed. The server
//! is restarted in the middle (the clock jumps to past midnight): the new
//! leader sends what changed since the stored time, not again and not
//! never.

use std::net::Ipv4Addr;
use std::time::Duration;

use chrono::{Datelike, NaiveDateTime};

use crate::common::fake_nas::{FakeNas, Received};
use crate::common::server::{
    acct_record, send_accounting, Backend, Install, Server, TestNas, SECRET,
};
use shardius::nas_client::{Credentials, Session};
use shardius::proto::dict::{acct_status, attr, mikrotik, vendor};
use shardius::proto::{Code, Packet};

on_both_backends!(a_window_across_midnight_opens_and_closes_with_coas_to_exactly_its_sessions);

fn setup(backend: Backend, coa_port: u16) -> Install {
    let install = Install::empty_on(backend);
    install.write_config(
        "[database]\nreload_interval_secs = 1\n\n[coa]\ntimeout_ms = 300\nexpiry_check_interval_secs = 1\n",
    );
    install.add_key_and_nas("mikrotik", coa_port);
    for (name, down, up, user) in [
        ("10M", "10M", "2M", "a"),
        ("20M", "20M", "4M", "b"),
        ("5M", "5M", "1M", "c"),
    ] {
        install.add_service(name, down, up);
        install.add_subscriber(user, name);
    }
    install.add_tier("10M", "daily", "1", "1M", "5M", "1M");
    let out = install.ok(&[
        "rule",
        "add",
        "--name",
        "night",
        "--days",
        "mon",
        "--from",
        "23:59",
        "--to",
        "00:01",
        "--download",
        "50",
        "--upload",
        "50",
        "--service",
        "10M",
        "--priority",
        "10",
    ]);
    assert!(
        out.contains("mon 23:59-00:01 download 50% upload 50% for 10M"),
        "{out}"
    );
    install.ok(&[
        "rule",
        "add",
        "--name",
        "late",
        "--from",
        "00:00",
        "--to",
        "00:01",
        "--download",
        "25",
        "--upload",
        "25",
        "--service",
        "20M",
        "--service",
        "10M",
        "--priority",
        "20",
    ]);
    let list = install.ok(&["rule", "list"]);
    assert!(
        list.contains("night") && list.contains("every day") && list.contains("20M,10M"),
        "{list}"
    );
    install
}

/// Seconds from the real local clock to `target` (local).
fn offset_to(target: NaiveDateTime) -> String {
    (target - chrono::Local::now().naive_local())
        .num_seconds()
        .to_string()
}

fn login_rate(server: &Server, user: &str) -> String {
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    let creds = Credentials::Pap {
        password: b"s3cret",
    };
    let (_, _, reply) = nas.exchange(server.auth, user, &creds, &Session::default());
    let reply = reply.expect("an answer");
    let p = Packet::parse(&reply).unwrap();
    assert_eq!(p.code(), Code::ACCESS_ACCEPT, "{user}");
    String::from_utf8(
        p.vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT)
            .unwrap()
            .to_vec(),
    )
    .unwrap()
}

/// (user, rate) of each CoA-Request.
fn coas(got: &[Received]) -> Vec<(String, String)> {
    got.iter()
        .map(|r| {
            assert_eq!(r.code, Code::COA_REQUEST);
            (
                String::from_utf8(r.attr(attr::USER_NAME).unwrap().to_vec()).unwrap(),
                String::from_utf8(
                    r.vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT)
                        .unwrap(),
                )
                .unwrap(),
            )
        })
        .collect()
}

fn a_window_across_midnight_opens_and_closes_with_coas_to_exactly_its_sessions(backend: Backend) {
    let fake = FakeNas::start(SECRET);
    let install = setup(backend, fake.addr.port());
    // The next Monday, 23:58:45 on the server's clock.
    let today = chrono::Local::now().date_naive();
    let monday = today + chrono::Days::new(u64::from(7 - today.weekday().num_days_from_monday()));
    let start = monday.and_hms_opt(23, 58, 45).unwrap();
    let mut server =
        install.serve_with(&["--shards", "1", "--clock-offset-secs", &offset_to(start)]);
    // The first check claims the day's (empty) reset; wait for it so it
    // does not zero the usage below.
    server.wait_for_log("monthly usage reset for", Duration::from_secs(10));
    assert_eq!(
        login_rate(&server, "a"),
        "2000k/10000k",
        "before the window"
    );

    let framed = Some(Ipv4Addr::new(100, 64, 0, 9));
    for user in ["a", "b", "c"] {
        let sid = format!("{user}-1");
        send_accounting(
            server.acct,
            &acct_record(acct_status::START, user, &sid, 0, 0, framed),
        );
    }
    // a reaches FUP tier 1 (1.2 MB): its speed is the tier's from now on.
    send_accounting(
        server.acct,
        &acct_record(acct_status::INTERIM_UPDATE, "a", "a-1", 30, 600_000, framed),
    );
    let got = fake.wait_for(1, Duration::from_secs(10));
    assert_eq!(coas(&got), [("a".into(), "1000k/5000k".into())], "the tier");

    // 23:59: "night" opens for 10M: a alone gets the tier's speed halved.
    let got = fake.wait_for(2, Duration::from_secs(40));
    assert_eq!(
        coas(&got[1..]),
        [("a".into(), "500k/2500k".into())],
        "night opens"
    );
    assert_eq!(
        login_rate(&server, "a"),
        "500k/2500k",
        "an Accept inside the window"
    );
    assert_eq!(login_rate(&server, "b"), "4000k/20000k");
    assert!(server.log().contains("bandwidth rule window changed"));
    let (stopped, _) = server.stop();
    assert!(stopped);

    // The clock jumps past midnight (Tuesday 00:00:45) and a new process
    // leads: since the stored 23:59, "late" opened for 20M (b: a quarter);
    // a stays in "night", which wins over "late" by priority.
    let restart = start + chrono::TimeDelta::minutes(2);
    let server = install.serve_with(&["--shards", "1", "--clock-offset-secs", &offset_to(restart)]);
    let got = fake.wait_for(3, Duration::from_secs(15));
    assert_eq!(
        coas(&got[2..]),
        [("b".into(), "1000k/5000k".into())],
        "late opens for 20M"
    );
    assert_eq!(
        login_rate(&server, "a"),
        "500k/2500k",
        "night wins over late"
    );
    assert_eq!(login_rate(&server, "b"), "1000k/5000k");

    // 00:01: both close: a back to its tier, b to its service.
    let got = fake.wait_for(5, Duration::from_secs(40));
    let mut closed = coas(&got[3..]);
    closed.sort();
    assert_eq!(
        closed,
        [
            ("a".into(), "1000k/5000k".into()),
            ("b".into(), "4000k/20000k".into())
        ]
    );
    assert_eq!(login_rate(&server, "a"), "1000k/5000k");
    // c's service has no rule: it never got a CoA.
    assert!(fake
        .received()
        .iter()
        .all(|r| r.attr(attr::USER_NAME) != Some(&b"c"[..])));
    assert_eq!(fake.received().len(), 5);

    // Bad rules are clear errors.
    for (bad, want) in [
        (("--days", "funday"), "not a day"),
        (("--download", "0"), "--download"),
        (("--from", "25:00"), "not HH:MM"),
        (("--service", "nope"), "no service named"),
        (("--name", "night"), "night"),
    ] {
        let mut full = vec!["rule", "add"];
        for (flag, value) in [
            ("--name", "x"),
            ("--from", "01:00"),
            ("--to", "02:00"),
            ("--download", "50"),
            ("--upload", "50"),
            ("--days", "mon"),
            ("--service", "5M"),
        ] {
            full.push(flag);
            full.push(if flag == bad.0 { bad.1 } else { value });
        }
        let err = install.fails(&full);
        assert!(err.contains(want), "{bad:?}: {err}");
    }
    let err = install.fails(&["rule", "rm", "nope"]);
    assert!(err.contains("no rule named"), "{err}");
    install.ok(&["rule", "rm", "late"]);
    assert!(!install.ok(&["rule", "list"]).contains("late"));
}
