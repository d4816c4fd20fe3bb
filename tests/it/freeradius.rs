//! FreeRADIUS 3.2 (Debian's, with its stock rlm_sql PostgreSQL queries
//! and `acct_unique` policy) and shardius writing one radacct during a
//! cutover: a session has one row whichever server sees which packet, and
//! the row is what FreeRADIUS alone writes for the same packets.

use md5::Digest as _;

use crate::common::freeradius::{at, free_udp_port, schema_database, sql_module, FreeRadius};
use crate::common::pg::shared;
use crate::common::server::{radclient, Backend, Install, Server};

/// Every radacct column FreeRADIUS's queries fill, in schema order.
const COLUMNS: &str = "acctsessionid, acctuniqueid, username, realm, nasipaddress, nasportid,
    nasporttype, acctstarttime, acctupdatetime, acctstoptime, acctinterval, acctsessiontime,
    acctauthentic, connectinfo_start, connectinfo_stop, acctinputoctets, acctoutputoctets,
    calledstationid, callingstationid, acctterminatecause, servicetype, framedprotocol,
    framedipaddress, framedipv6address, framedipv6prefix, framedinterfaceid,
    delegatedipv6prefix, class";

struct Cutover {
    _install: Install,
    server: Server,
    _fr: FreeRadius,
    /// FreeRADIUS accounting into shardius's database.
    fr_shared: u16,
    /// FreeRADIUS accounting into a database of its own schema, alone.
    fr_alone: u16,
    shared_db: String,
    alone_db: String,
}

fn pg(db: &str, sql: &str) -> String {
    shared()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .psql(db, sql)
}

fn site(name: &str, port: u16, sql: &str) -> String {
    format!(
        "server {name} {{
    listen {{
        type = acct
        ipaddr = 127.0.0.1
        port = {port}
    }}
    preacct {{
        preprocess
        acct_unique
        suffix
    }}
    accounting {{
        {sql}
    }}
}}
"
    )
}

fn cutover() -> Cutover {
    let install = Install::new_on(Backend::Postgres);
    let server = install.serve(2);
    let (port, shared_db) = {
        let rest = install.db_url.rsplit_once(':').unwrap().1;
        let (port, db) = rest.split_once('/').unwrap();
        (port.parse::<u16>().unwrap(), db.to_owned())
    };
    let alone_db = schema_database("fr_alone");
    let (fr_shared, fr_alone) = (free_udp_port(), free_udp_port());
    let fr = FreeRadius::start(&[
        (
            "mods-enabled/sql_shared",
            sql_module("shared", port, &shared_db),
        ),
        (
            "mods-enabled/sql_alone",
            sql_module("alone", port, &alone_db),
        ),
        ("sites-enabled/shared", site("shared", fr_shared, "shared")),
        ("sites-enabled/alone", site("alone", fr_alone, "alone")),
        (
            "clients.conf",
            "client local {\n    ipaddr = 127.0.0.1\n    secret = testing123\n}\n".into(),
        ),
    ]);
    Cutover {
        _install: install,
        server,
        _fr: fr,
        fr_shared,
        fr_alone,
        shared_db,
        alone_db,
    }
}

/// Sends `attrs` as an Accounting-Request with radclient and expects the
/// response (sent by both servers only once the row is written).
fn acct(to: std::net::SocketAddr, attrs: &str) {
    let out = radclient(to, "acct", attrs);
    assert!(
        out.contains("Received Accounting-Response"),
        "no Accounting-Response from {to}: {out}"
    );
}

/// The attributes a MikroTik-like BNG sends, at `t` seconds.
fn packet(status: &str, session: &str, t: u64, extra: &str) -> String {
    format!(
        "User-Name = \"alice\"\nAcct-Session-Id = \"{session}\"\nAcct-Status-Type = {status}\n\
         NAS-IP-Address = 127.0.0.1\nNAS-Identifier = \"BNG-1\"\nNAS-Port = 15728643\n\
         NAS-Port-Type = Ethernet\nService-Type = Framed-User\nFramed-Protocol = PPP\n\
         Framed-IP-Address = 100.64.0.7\nFramed-Interface-Id = 0000:0000:0000:0001\n\
         Framed-IPv6-Prefix = 2001:db8:1::/64\nDelegated-IPv6-Prefix = 2001:db8:100::/56\n\
         Calling-Station-Id = \"AA:BB:CC:DD:EE:01\"\nCalled-Station-Id = \"pppoe-isp\"\n\
         Acct-Authentic = RADIUS\nClass = 0x534844310000000000000001\n\
         Event-Timestamp = {t}\nAcct-Delay-Time = 0\n{extra}"
    )
}

fn rows(db: &str, session: &str) -> String {
    pg(
        db,
        &format!(
            "SELECT {COLUMNS} FROM radacct WHERE acctsessionid = '{session}' ORDER BY radacctid"
        ),
    )
}

/// Start, Interim and Stop of `session`, each to the server `route`
/// names ('F' FreeRADIUS on the shared database, 'S' shardius), and all
/// three to FreeRADIUS alone; the two rows must be equal.
fn session_across(c: &Cutover, session: &str, route: [char; 3], port_id: bool) {
    let t0 = chrono::Utc::now().timestamp() as u64 - 600;
    let port_id = if port_id {
        "NAS-Port-Id = \"vlan100\"\n"
    } else {
        ""
    };
    let start = packet(
        "Start",
        session,
        t0,
        &format!("{port_id}Connect-Info = \"1000 Mbps\"\n"),
    );
    let interim = packet(
        "Interim-Update",
        session,
        t0 + 60,
        &format!(
            "{port_id}Acct-Session-Time = 60\nAcct-Input-Octets = 1000\nAcct-Output-Octets = 5000\n\
             Acct-Input-Gigawords = 1\n"
        ),
    );
    let stop = packet(
        "Stop",
        session,
        t0 + 150,
        &format!(
            "{port_id}Acct-Session-Time = 150\nAcct-Input-Octets = 2000\nAcct-Output-Octets = 9000\n\
             Acct-Input-Gigawords = 1\nAcct-Terminate-Cause = User-Request\n\
             Connect-Info = \"1000 Mbps down\"\n"
        ),
    );
    for (packet, to) in [start, interim, stop].iter().zip(route) {
        acct(at(c.fr_alone), packet);
        match to {
            'F' => acct(at(c.fr_shared), packet),
            _ => acct(c.server.acct, packet),
        }
    }
    let alone = rows(&c.alone_db, session);
    let shared = rows(&c.shared_db, session);
    assert_eq!(alone.lines().count(), 1, "FreeRADIUS alone: {alone}");
    assert_eq!(
        shared, alone,
        "route {route:?}: shardius's database (first) differs from FreeRADIUS alone (second)"
    );
    // The counters, spelled out: 64-bit with Gigawords, from the Stop.
    let sums = pg(
        &c.shared_db,
        &format!("SELECT acctinputoctets, acctoutputoctets, acctsessiontime, acctinterval FROM radacct WHERE acctsessionid = '{session}'"),
    );
    assert_eq!(sums, format!("{}|9000|150|60", (1u64 << 32) + 2000));
}

#[test]
fn a_session_seen_by_both_servers_is_one_row_as_freeradius_alone_writes_it() {
    let c = cutover();
    // Start and Stop through FreeRADIUS, the Interim through shardius.
    session_across(&c, "fr-s-fr", ['F', 'S', 'F'], true);
    // The reverse, and NAS-Port standing in for a missing NAS-Port-Id.
    session_across(&c, "s-fr-s", ['S', 'F', 'S'], false);
    // Every packet through shardius: the row FreeRADIUS would write.
    session_across(&c, "s-s-s", ['S', 'S', 'S'], true);
    let (ok, log) = c.server.stop();
    assert!(ok, "{log}");
}

#[test]
fn odd_names_a_class_cookie_and_a_missing_nas_address_key_sessions_as_freeradius_does() {
    let c = cutover();
    let t = chrono::Utc::now().timestamp() as u64 - 300;
    // Bytes FreeRADIUS might escape (a comma, UTF-8, a quote), FreeRADIUS's
    // own insert_acct_class cookie, and no NAS-IP-Address at all (the
    // source address stands in): Start through FreeRADIUS, Stop through
    // shardius, one row each.
    let cases = [
        (
            "odd-1",
            "User-Name = \"al,\u{ef}ce'\\\"x\"\nNAS-IP-Address = 127.0.0.1\n",
        ),
        (
            "cookie-1",
            "User-Name = \"alice\"\nNAS-IP-Address = 127.0.0.1\nClass = \"ai:0123456789abcdef0123456789ABCDEF\"\nNAS-Port = 7\n",
        ),
        ("no-nas-ip", "User-Name = \"alice\"\nNAS-Port-Id = \"ether 1\"\n"),
    ];
    for (session, attrs) in cases {
        let head = format!(
            "Acct-Session-Id = \"{session}\"\nEvent-Timestamp = {t}\n{attrs}NAS-Identifier = \"BNG-1\"\n"
        );
        acct(
            at(c.fr_shared),
            &format!("{head}Acct-Status-Type = Start\n"),
        );
        acct(
            c.server.acct,
            &format!(
                "{head}Acct-Status-Type = Stop\nAcct-Session-Time = 30\nAcct-Input-Octets = 700\nAcct-Output-Octets = 900\n"
            ),
        );
        let got = pg(
            &c.shared_db,
            &format!("SELECT count(*), max(acctinputoctets), max(acctoutputoctets), bool_and(acctstoptime IS NOT NULL) FROM radacct WHERE acctsessionid LIKE '{session}%'"),
        );
        assert_eq!(
            got,
            "1|700|900|t",
            "{session}: {}",
            rows(&c.shared_db, session)
        );
    }
}

#[test]
fn a_session_open_under_the_old_key_continues_on_its_row_after_the_upgrade() {
    // The row an older shardius wrote for a session still open: keyed by
    // MD5 of NAS-IP-Address, Acct-Session-Id, User-Name and NAS-Port-Id,
    // each NUL-terminated.
    let install = Install::new_on(Backend::Postgres);
    let old_key = shardius::accounting::legacy_unique_id(
        &"127.0.0.1".parse().unwrap(),
        b"up-1",
        b"alice",
        Some(b"vlan100"),
    );
    let db = install.db_url.rsplit_once('/').unwrap().1.to_owned();
    pg(
        &db,
        &format!(
            "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, nasportid,
                acctstarttime, acctupdatetime, acctsessiontime, acctinputoctets, acctoutputoctets)
             VALUES ('up-1', '{old_key}', 'alice', '127.0.0.1', 'vlan100',
                now() - interval '10 minutes', now() - interval '5 minutes', 300, 1000, 5000)"
        ),
    );
    let server = install.serve(2);
    let t = chrono::Utc::now().timestamp();
    let head = "User-Name = \"alice\"\nAcct-Session-Id = \"up-1\"\nNAS-IP-Address = 127.0.0.1\nNAS-Port-Id = \"vlan100\"\n";
    acct(
        server.acct,
        &format!("{head}Acct-Status-Type = Interim-Update\nEvent-Timestamp = {t}\nAcct-Session-Time = 600\nAcct-Input-Octets = 2000\nAcct-Output-Octets = 9000\n"),
    );
    acct(
        server.acct,
        &format!("{head}Acct-Status-Type = Stop\nEvent-Timestamp = {t}\nAcct-Session-Time = 610\nAcct-Input-Octets = 2100\nAcct-Output-Octets = 9100\n"),
    );
    // A session that starts after the upgrade gets FreeRADIUS's key.
    acct(
        server.acct,
        "User-Name = \"alice\"\nAcct-Session-Id = \"new-1\"\nNAS-IP-Address = 127.0.0.1\nNAS-Port-Id = \"vlan100\"\nAcct-Status-Type = Start\n",
    );
    let got = pg(
        &db,
        "SELECT acctsessionid, acctuniqueid, acctinputoctets, acctoutputoctets, acctsessiontime, acctstoptime IS NOT NULL
         FROM radacct ORDER BY radacctid",
    );
    let new_key = format!("{:x}", md5::Md5::digest(b"alice,new-1,127.0.0.1,,vlan100,"));
    assert_eq!(
        got,
        format!("up-1|{old_key}|2100|9100|610|t\nnew-1|{new_key}|0|0|0|f"),
    );
    let (ok, log) = server.stop();
    assert!(ok, "{log}");
}
