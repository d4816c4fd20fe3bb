//! Address pools on both stores: `pool add|list|show|rm` with hostile
//! input, one address in one pool only, the claims' compare-and-set (two
//! nodes claiming one free row: one wins; never onto an address an open
//! session reports), and static IPs that two subscribers cannot share.

use chrono::{DateTime, Utc};
use shardius::accounting::{legacy_unique_id as unique_id, AcctEvent, AcctKind};
use shardius::pool::{Claim, ClaimKind, PoolAddr};
use shardius::store::{self, DatabaseUrl, Store};

use crate::common::server::{Backend, Install};

fn open(install: &Install) -> Box<dyn Store> {
    let mut store = store::open(&DatabaseUrl::parse(&install.db_url).unwrap()).unwrap();
    store.migrate().unwrap();
    store
}

fn claim(pool: &str, user: &str, addr: &str, kind: ClaimKind) -> Claim {
    Claim {
        pool: pool.into(),
        username: user.into(),
        addr: addr.parse::<PoolAddr>().unwrap(),
        kind,
        offer_timeout_secs: 60,
    }
}

fn pool_commands_and_hostile_input(backend: Backend) {
    let i = Install::new_on(backend);
    assert!(
        i.ok(&[
            "pool",
            "add",
            "--name",
            "cgnat",
            "--range",
            "100.64.0.0/29",
            "--range",
            "100.64.0.20-100.64.0.21",
            "--exclude",
            "100.64.0.3"
        ])
        .contains("6 addresses"),
        "/29 less network, gateway, broadcast, one exclusion: 4; plus 2"
    );
    let list = i.ok(&["pool", "list"]);
    let line = list
        .lines()
        .find(|l| l.starts_with("cgnat"))
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["cgnat", "ipv4", "6", "0", "0", "0", "6"]
    );
    assert!(i
        .ok(&[
            "pool",
            "add",
            "--name",
            "pd",
            "--ipv6-prefix",
            "2001:db8::/48",
            "--prefix-len",
            "56"
        ])
        .contains("256 prefixes (ipv6-delegated)"));
    assert!(i
        .ok(&[
            "pool",
            "add",
            "--name",
            "link6",
            "--ipv6-prefix",
            "2001:db8:1::/60",
            "--prefix-len",
            "64",
            "--framed"
        ])
        .contains("16 prefixes (ipv6-framed)"));

    // One address, one pool: an overlapping pool is refused whole.
    let err = i.fails(&[
        "pool",
        "add",
        "--name",
        "other",
        "--range",
        "100.64.0.6-100.64.0.9",
    ]);
    assert!(err.contains("100.64.0.6") && err.contains("cgnat"), "{err}");
    assert!(!i.ok(&["pool", "list"]).contains("other"));
    let err = i.fails(&[
        "pool",
        "add",
        "--name",
        "pd2",
        "--ipv6-prefix",
        "2001:db8::/52",
        "--prefix-len",
        "56",
    ]);
    assert!(
        err.contains("2001:db8:") && err.contains("/56") && err.contains("\"pd\""),
        "{err}"
    );
    assert!(i
        .fails(&["pool", "add", "--name", "cgnat", "--range", "10.9.0.1"])
        .contains("already exists"));

    for (args, needle) in [
        (
            &["--name", "a\u{1b}[2Jb", "--range", "10.1.0.1"][..],
            "pool name",
        ),
        (
            &["--name", "a'b;DROP TABLE ip_pools", "--range", "10.1.0.1"],
            "pool name",
        ),
        (
            &["--name", "x", "--range", "10.1.0.9-10.1.0.1"],
            "not a range",
        ),
        (&["--name", "x", "--range", "10.1.0.0/33"], "not a range"),
        (&["--name", "x", "--range", "0.0.0.0/0"], "at most"),
        (&["--name", "x", "--range", "2001:db8::/64"], "family"),
        (
            &[
                "--name",
                "x",
                "--ipv6-prefix",
                "2001:db8::/16",
                "--prefix-len",
                "64",
            ],
            "at most",
        ),
        (
            &[
                "--name",
                "x",
                "--ipv6-prefix",
                "2001:db8::/64",
                "--prefix-len",
                "56",
            ],
            "not a range",
        ),
        (
            &[
                "--name",
                "x",
                "--range",
                "10.1.0.1",
                "--exclude",
                "10.1.0.1",
            ],
            "no usable",
        ),
        (
            &["--name", "x", "--range", "10.1.0.1", "--exclude", "bogus"],
            "not an address",
        ),
        (&["--name", "x"], "--range"),
        (
            &[
                "--name",
                "x",
                "--range",
                "10.1.0.1",
                "--offer-timeout-secs",
                "0",
            ],
            "offer-timeout",
        ),
    ] {
        let err = i.fails(&[&["pool", "add"][..], args].concat());
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains('\u{1b}'), "{err:?}");
    }
    assert_eq!(
        i.ok(&["pool", "list"]).lines().count(),
        4,
        "only the three good pools"
    );

    // A claim names a hostile subscriber: `pool show` prints it escaped.
    let mut store = open(&i);
    let nasty = "ev\u{1b}[2Jil\nroot";
    let (won, _) = store
        .claim_addresses(
            "node-a",
            &[claim("cgnat", nasty, "100.64.0.2", ClaimKind::Free)],
        )
        .unwrap();
    assert_eq!(won, [true]);
    let show = i.ok(&["pool", "show", "cgnat"]);
    assert!(show.contains("1 offered, 5 free"), "{show}");
    let row = show
        .lines()
        .find(|l| l.starts_with("100.64.0.2"))
        .unwrap_or_else(|| panic!("{show}"));
    assert!(
        row.contains("offered") && row.contains("node-a") && !row.contains('\u{1b}'),
        "{row:?}"
    );
    assert!(!show.contains("\nroot"), "{show:?}");
    assert!(i.fails(&["pool", "show", "nosuch"]).contains("no pool"));

    // Refused while an address is offered; the others go.
    let err = i.fails(&["pool", "rm", "cgnat"]);
    assert!(err.contains("1 addresses offered or in use"), "{err}");
    assert!(i.ok(&["pool", "rm", "pd"]).contains("removed"));
    assert!(i.fails(&["pool", "rm", "pd"]).contains("no pool"));
    // Its prefixes are gone with it: a new pool may take them.
    i.ok(&[
        "pool",
        "add",
        "--name",
        "pd2",
        "--ipv6-prefix",
        "2001:db8::/52",
        "--prefix-len",
        "56",
    ]);
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn start(user: &str, sid: &str, ip: &str) -> AcctEvent {
    let nas_ip = "10.0.0.1".parse().unwrap();
    AcctEvent {
        kind: AcctKind::Start,
        unique_id: unique_id(&nas_ip, sid.as_bytes(), user.as_bytes(), None),
        legacy_id: None,
        session_id: sid.into(),
        username: user.into(),
        nas_ip,
        nas_port_id: None,
        nas_port_type: None,
        event_time: t0(),
        start_time: t0(),
        session_time: Some(0),
        input_octets: Some(0),
        output_octets: Some(0),
        framed_ip: Some(ip.parse().unwrap()),
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

fn claims_are_compare_and_set(backend: Backend) {
    let i = Install::new_on(backend);
    i.ok(&["pool", "add", "--name", "p", "--range", "10.5.0.1-10.5.0.3"]);
    let mut a = open(&i);
    let mut b = open(&i);
    // Two nodes claim the same free row for two subscribers: one wins.
    let (won_a, now) = a
        .claim_addresses(
            "node-a",
            &[claim("p", "alice", "10.5.0.1", ClaimKind::Free)],
        )
        .unwrap();
    let (won_b, _) = b
        .claim_addresses("node-b", &[claim("p", "bob", "10.5.0.1", ClaimKind::Free)])
        .unwrap();
    assert_eq!((won_a, won_b), (vec![true], vec![false]));
    assert!(now > 1_700_000_000_000, "unix ms: {now}");
    // Only alice may take it again ("Same"), from any node; a reuse of an
    // offered (not held) row is refused.
    let (won, _) = b
        .claim_addresses(
            "node-b",
            &[
                claim("p", "bob", "10.5.0.1", ClaimKind::Same),
                claim(
                    "p",
                    "bob",
                    "10.5.0.1",
                    ClaimKind::Reuse {
                        previous: "alice".into(),
                    },
                ),
                claim("p", "alice", "10.5.0.1", ClaimKind::Same),
            ],
        )
        .unwrap();
    assert_eq!(won, [false, false, true]);
    let rows = a.pool_rows("p").unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].username.as_deref(), rows[0].node.as_deref()),
        (Some("alice"), Some("node-b"))
    );
    // A router that allocated 10.5.0.2 by itself: an open session reports
    // it, so no claim hands it out.
    a.write_accounting(&[start("carol", "s-1", "10.5.0.2")])
        .unwrap();
    let (won, _) = a
        .claim_addresses("node-a", &[claim("p", "dave", "10.5.0.2", ClaimKind::Free)])
        .unwrap();
    assert_eq!(won, [false]);
    // A claim in a pool that does not hold the address, or of an address
    // no pool has, changes nothing.
    let (won, _) = a
        .claim_addresses(
            "node-a",
            &[
                claim("nosuch", "dave", "10.5.0.3", ClaimKind::Free),
                claim("p", "dave", "10.9.9.9", ClaimKind::Free),
            ],
        )
        .unwrap();
    assert_eq!(won, [false, false]);
    let (won, _) = a
        .claim_addresses("node-a", &[claim("p", "dave", "10.5.0.3", ClaimKind::Free)])
        .unwrap();
    assert_eq!(won, [true]);
    let counts = a.pool_counts().unwrap();
    assert_eq!(
        (counts[0].size, counts[0].offered, counts[0].free),
        (3, 2, 1)
    );
}

fn static_ips_are_one_subscribers(backend: Backend) {
    let i = Install::new_on(backend);
    let add = |user: &str, ip: &str| {
        i.run(&[
            "subscriber",
            "add",
            "--username",
            user,
            "--password",
            "p",
            "--service",
            "10M",
            "--static-ip",
            ip,
        ])
    };
    assert!(add("u1", "100.64.9.1").status.success());
    let out = add("u2", "100.64.9.1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("100.64.9.1") && err.contains("u1"),
        "{err}"
    );
    let csv = i.path("ips.csv");
    std::fs::write(
        &csv,
        "username,password,service,static_ip\nv1,p,10M,100.64.9.2\nv2,p,10M,100.64.9.2\n",
    )
    .unwrap();
    let err = i.fails(&["subscriber", "import", csv.to_str().unwrap()]);
    assert!(
        err.contains("100.64.9.2") && err.contains("v1") && err.contains("v2"),
        "{err}"
    );
    std::fs::write(
        &csv,
        "username,password,service,static_ip\nv3,p,10M,100.64.9.3\nv4,p,10M,100.64.9.1\n",
    )
    .unwrap();
    let err = i.fails(&["subscriber", "import", csv.to_str().unwrap()]);
    assert!(err.contains("100.64.9.1") && err.contains("u1"), "{err}");
    let list = i.ok(&["subscriber", "list"]);
    assert!(
        !list.contains("v1") && !list.contains("v3") && !list.contains("u2"),
        "nothing applied: {list}"
    );
}

on_both_backends!(
    pool_commands_and_hostile_input,
    claims_are_compare_and_set,
    static_ips_are_one_subscribers,
);

/// The install's database as a panel sees it: plain SQL on SQLite
/// (`sqlite`) or on PostgreSQL (`pg`, given a connected client).
fn with_db<T>(
    install: &Install,
    sqlite: impl FnOnce(rusqlite::Connection) -> T,
    pg: impl AsyncFnOnce(tokio_postgres::Client) -> T,
) -> T {
    if let Some(path) = install.db_url.strip_prefix("sqlite:") {
        return sqlite(rusqlite::Connection::open(path).unwrap());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&install.db_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        pg(client).await
    })
}

/// One radacct column of session `sid`, as text, read with SQL.
fn radacct_text(install: &Install, sid: &str, column: &str) -> Option<String> {
    with_db(
        install,
        |conn| {
            let sql = format!("SELECT {column} FROM radacct WHERE acctsessionid = ?1");
            conn.query_row(&sql, [sid], |r| r.get(0)).unwrap()
        },
        async |client| {
            let sql = format!("SELECT {column}::text FROM radacct WHERE acctsessionid = $1");
            client.query_one(&sql, &[&sid]).await.unwrap().get(0)
        },
    )
}

fn ipv6_accounting_fills_the_radacct_ipv6_columns(backend: Backend) {
    let install = Install::new_on(backend);
    let server = install.serve(1);
    // radclient (FreeRADIUS's encoder, not ours) sends a dual-stack Start
    // and then an Interim that repeats nothing but the delegated prefix.
    let out = crate::common::server::radclient(
        server.acct,
        "acct",
        "Acct-Status-Type = Start\nAcct-Session-Id = \"v6-1\"\nUser-Name = \"alice\"\n\
         Framed-IP-Address = 100.64.0.9\nFramed-IPv6-Prefix = 2001:db8:1:2::/64\n\
         Delegated-IPv6-Prefix = 2001:db8:ff00:100::/56\nFramed-IPv6-Address = 2001:db8:1:2::1\n",
    );
    assert!(out.contains("Received Accounting-Response"), "{out}");
    let out = crate::common::server::radclient(
        server.acct,
        "acct",
        "Acct-Status-Type = Interim-Update\nAcct-Session-Id = \"v6-1\"\nUser-Name = \"alice\"\n\
         Acct-Session-Time = 60\n",
    );
    assert!(out.contains("Received Accounting-Response"), "{out}");
    let pg = backend == Backend::Postgres;
    assert_eq!(
        radacct_text(&install, "v6-1", "delegatedipv6prefix").as_deref(),
        Some("2001:db8:ff00:100::/56")
    );
    assert_eq!(
        radacct_text(&install, "v6-1", "framedipv6prefix").as_deref(),
        Some("2001:db8:1:2::/64")
    );
    assert_eq!(
        radacct_text(&install, "v6-1", "framedipv6address").as_deref(),
        Some(if pg {
            "2001:db8:1:2::1/128"
        } else {
            "2001:db8:1:2::1"
        })
    );
    assert_eq!(
        radacct_text(&install, "v6-1", "framedipaddress").as_deref(),
        Some(if pg { "100.64.0.9/32" } else { "100.64.0.9" })
    );
    // Malformed prefixes are left out with the session still recorded:
    // `accounting::event` tests (radclient cannot send one).
}

on_both_backends!(ipv6_accounting_fills_the_radacct_ipv6_columns);

/// Runs `sql` on the install's database, as a panel writing plain SQL would.
fn exec_sql(install: &Install, sql: &str) {
    with_db(
        install,
        |conn| conn.execute_batch(sql).unwrap(),
        async |client| client.batch_execute(sql).await.unwrap(),
    )
}

fn a_static_ip_conflict_written_in_plain_sql_is_logged_and_counted_at_load(backend: Backend) {
    let install = Install::new_on(backend);
    for (user, ip) in [
        ("s1", "100.64.8.1"),
        ("s2", "100.64.8.2"),
        ("s3", "100.64.8.3"),
    ] {
        install.ok(&[
            "subscriber",
            "add",
            "--username",
            user,
            "--password",
            "p",
            "--service",
            "10M",
            "--static-ip",
            ip,
        ]);
    }
    // Past the CLI: s2 takes s1's address, and a radreply row gives s3's
    // address to alice too.
    exec_sql(
        &install,
        "UPDATE subscribers SET static_ip = '100.64.8.1' WHERE username = 's2';
         INSERT INTO radreply (username, attribute, op, value) VALUES ('alice', 'Framed-IP-Address', ':=', '100.64.8.3');",
    );
    let mut server = install.serve(1);
    server.wait_for_log(
        "static IP 100.64.8.1 is given to 2 subscribers: s1, s2",
        std::time::Duration::from_secs(10),
    );
    server.wait_for_log(
        "static IP 100.64.8.3 is given to 2 subscribers: alice, s3",
        std::time::Duration::from_secs(10),
    );
    assert_eq!(server.metric("shardius_static_ip_conflicts"), 2.0);
}

on_both_backends!(a_static_ip_conflict_written_in_plain_sql_is_logged_and_counted_at_load);
