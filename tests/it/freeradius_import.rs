//! `shardius import freeradius` from a database made with FreeRADIUS's own
//! schema.sql and from a users file; then every imported user logs in to
//! shardius as to FreeRADIUS 3.2 (Debian's, reading the same database and
//! file), and gets the same reply attributes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use shardius::nas_client::{Credentials, Session};
use shardius::proto::Code;

use crate::common::freeradius::{at, free_udp_port, schema_database, sql_module, FreeRadius};
use crate::common::pg::shared;
use crate::common::server::{mschap, radclient, Install, TestNas, SECRET};

fn pg(db: &str, sql: &str) -> String {
    shared()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .psql(db, sql)
}

const USERS_FILE: &str = "# a users file as a FreeRADIUS shop has it\n\
carol\tCleartext-Password := \"c4rol pass\", Simultaneous-Use := 2\n\
\tWISPr-Bandwidth-Max-Down = 20000000,\n\
\tFramed-IPv6-Prefix = 2001:db8:c::/64,\n\
\tMikrotik-Rate-Limit = \"5M/20M\"\n\
\n\
dave\tNT-Password := 0x8846F7EAEE8FB117AD06BDD830B7586C\n\
\tReply-Message = \"hello dave\"\n\
\n\
DEFAULT\tFramed-Protocol == PPP\n\
\tFramed-Compression = Van-Jacobson-TCP-IP\n";

/// The FreeRADIUS database: users with Cleartext-Password and with
/// NT-Password, groups with Mikrotik-Rate-Limit, radreply rows with
/// Cisco-AVPair and Framed-IPv6-Prefix, NAS rows, and what cannot move.
fn freeradius_db() -> (String, u16) {
    let db = schema_database("frsrc");
    let nt = hex::encode(shardius::auth::mschapv2::nt_password_hash(b"n7 pass"));
    pg(
        &db,
        &format!(
            "INSERT INTO nas (nasname, shortname, type, secret) VALUES
                ('127.0.0.1', 'lo-bng', 'mikrotik', '{SECRET}'),
                ('10.9.0.0/16', 'a-net', 'other', 'x'),
                ('10.9.9.9', 'c-bng', 'cisco', 'ciscosecret');
             INSERT INTO radcheck (username, attribute, op, value) VALUES
                ('alice', 'Cleartext-Password', ':=', 's3cret'),
                ('alice', 'Expiration', ':=', 'Jan 01 2099'),
                ('ntuser', 'NT-Password', ':=', '{nt}'),
                ('bob', 'Cleartext-Password', ':=', 'b0b'),
                ('bob', 'Calling-Station-Id', '==', 'AA-BB-CC-DD-EE-01'),
                ('hashed', 'Crypt-Password', ':=', '$1$abc$xyz');
             INSERT INTO radusergroup (username, groupname, priority) VALUES
                ('alice', 'gold', 1), ('ntuser', 'silver', 1), ('bob', 'silver', 1);
             INSERT INTO radgroupcheck (groupname, attribute, op, value) VALUES
                ('gold', 'Simultaneous-Use', ':=', '2');
             INSERT INTO radgroupreply (groupname, attribute, op, value) VALUES
                ('gold', 'Mikrotik-Rate-Limit', ':=', '2M/10M'),
                ('gold', 'Acct-Interim-Interval', ':=', '300'),
                ('silver', 'Mikrotik-Rate-Limit', ':=', '1M/4M');
             INSERT INTO radreply (username, attribute, op, value) VALUES
                ('alice', 'Cisco-AVPair', '+=', 'ip:addr-pool=gold'),
                ('alice', 'Cisco-AVPair', '+=', 'subscriber:sub-qos-policy-in=UP-2M'),
                ('alice', 'Framed-IPv6-Prefix', ':=', '2001:db8:a::/64'),
                ('ntuser', 'Framed-IP-Address', ':=', '100.64.0.77'),
                ('ntuser', 'No-Such-Attribute', ':=', '1');"
        ),
    );
    let port = shared().lock().unwrap_or_else(|e| e.into_inner()).port;
    (db, port)
}

/// The reply attributes radclient printed after "Received Access-Accept",
/// minus the ones that differ by design (Message-Authenticator, and the
/// Class cookie shardius adds), Mikrotik-Rate-Limit in kbit/s.
fn accept_attributes(out: &str) -> BTreeSet<String> {
    let tail = out
        .split("Received Access-Accept")
        .nth(1)
        .unwrap_or_else(|| panic!("no Access-Accept: {out}"));
    tail.lines()
        .skip(1)
        .map(str::trim)
        .take_while(|l| !l.is_empty() && l.contains(" = "))
        .filter(|l| !l.starts_with("Message-Authenticator") && !l.starts_with("Class "))
        .map(|l| match l.strip_prefix("Mikrotik-Rate-Limit = ") {
            Some(v) => format!("Mikrotik-Rate-Limit = {}", kbps_pair(v.trim_matches('"'))),
            None => l.to_owned(),
        })
        .collect()
}

fn kbps_pair(v: &str) -> String {
    let kbps = |s: &str| -> u64 {
        match s.strip_suffix('M') {
            Some(m) => m.parse::<u64>().unwrap() * 1000,
            None => s.trim_end_matches('k').parse().unwrap(),
        }
    };
    let (a, b) = v.split_once('/').unwrap();
    format!("{}k/{}k", kbps(a), kbps(b))
}

fn pap(to: std::net::SocketAddr, user: &str, password: &str) -> String {
    radclient(
        to,
        "auth",
        &format!(
            "User-Name = \"{user}\"\nUser-Password = \"{password}\"\nNAS-IP-Address = 127.0.0.1\n\
             Calling-Station-Id = \"AA-BB-CC-DD-EE-01\"\nMessage-Authenticator = 0x00\n"
        ),
    )
}

#[test]
fn freeradius_users_move_with_their_passwords_and_replies() {
    let (src_db, port) = freeradius_db();
    let src_url = format!("postgres://postgres@127.0.0.1:{port}/{src_db}");
    let install = Install::empty();
    install.ok(&["keygen", "--out", install.key().to_str().unwrap()]);
    let users = install.path("users");
    std::fs::write(&users, USERS_FILE).unwrap();
    let users = users.to_str().unwrap();

    // --dry-run: counts, what cannot move and why, and nothing written.
    let dry = install.ok(&[
        "import",
        "freeradius",
        "--from-sql",
        &src_url,
        "--users",
        users,
        "--dry-run",
    ]);
    assert!(
        dry.contains("would import: 2 NAS entries, 2 services, 5 subscribers (2 by NT hash), 8 radreply rows"),
        "{dry}"
    );
    for why in [
        "\"hashed\": Crypt-Password is a hash",
        "10.9.0.0/16",
        "No-Such-Attribute",
        "DEFAULT",
    ] {
        assert!(dry.contains(why), "dry run does not say {why}: {dry}");
    }
    assert!(
        dry.contains("\"ntuser\": known only by its NT hash"),
        "dry run does not note the NT-hash user: {dry}"
    );
    assert!(install.ok(&["subscriber", "list"]).lines().count() <= 1);

    // The import, twice: the same result.
    let first = install.ok(&[
        "import",
        "freeradius",
        "--from-sql",
        &src_url,
        "--users",
        users,
    ]);
    assert!(
        first.contains("imported: 2 NAS entries, 2 services, 5 subscribers, 8 radreply rows"),
        "{first}"
    );
    let listed = install.ok(&["subscriber", "list"]);
    install.ok(&[
        "import",
        "freeradius",
        "--from-sql",
        &src_url,
        "--users",
        users,
    ]);
    assert_eq!(install.ok(&["subscriber", "list"]), listed);
    let nas = install.ok(&["nas", "list"]);
    assert_eq!(nas.lines().count(), 3, "{nas}");
    assert!(nas.contains("cisco") && nas.contains("mikrotik"), "{nas}");
    let db = install.db_url.trim_start_matches("sqlite:").to_owned();
    let conn = rusqlite::Connection::open(db).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM radreply"), 8);
    assert_eq!(
        count("SELECT max_sessions FROM subscribers WHERE username = 'carol'"),
        2
    );
    // A group's Simultaneous-Use is its service's limit.
    assert_eq!(
        count("SELECT max_sessions FROM services WHERE name = 'gold'"),
        2
    );

    // Both servers, on the same users: FreeRADIUS reads its database and
    // the users file; shardius what it imported.
    let server = install.serve(1);
    let fr_auth = free_udp_port();
    let site = format!(
        "server auth {{
    listen {{
        type = auth
        ipaddr = 127.0.0.1
        port = {fr_auth}
    }}
    authorize {{
        preprocess
        chap
        mschap
        files
        sql
        pap
    }}
    authenticate {{
        Auth-Type PAP {{
            pap
        }}
        Auth-Type CHAP {{
            chap
        }}
        Auth-Type MS-CHAP {{
            mschap
        }}
    }}
}}
"
    );
    let fr = FreeRadius::start(&[
        ("mods-enabled/sql", sql_module("sql", port, &src_db)),
        ("sites-enabled/auth", site),
        ("mods-config/files/authorize", USERS_FILE.to_owned()),
        (
            "clients.conf",
            format!("client lo {{\n    ipaddr = 127.0.0.1\n    secret = {SECRET}\n}}\n"),
        ),
    ]);

    // PAP (radclient decodes both replies): the same attributes.
    for (user, password) in [
        ("alice", "s3cret"),
        ("ntuser", "n7 pass"),
        ("bob", "b0b"),
        ("carol", "c4rol pass"),
        ("dave", "password"),
    ] {
        let theirs = accept_attributes(&pap(at(fr_auth), user, password));
        let ours = accept_attributes(&pap(server.auth, user, password));
        // shardius adds its interim interval where FreeRADIUS sends none.
        let extra: BTreeSet<String> = ours.difference(&theirs).cloned().collect();
        assert!(
            theirs.is_subset(&ours) && extra.iter().all(|a| a.starts_with("Acct-Interim-Interval")),
            "{user}: FreeRADIUS {theirs:?}\nshardius {ours:?}\n{}",
            fr.log()
        );
        // A wrong password is wrong on both.
        for to in [at(fr_auth), server.auth] {
            let out = pap(to, user, "wrong");
            assert!(out.contains("Received Access-Reject"), "{user}: {out}");
        }
    }

    // MS-CHAPv2 (MPPE keys checked against the password) for a cleartext
    // and an NT-hash user, on both; CHAP cannot work for the NT-hash user
    // on either, and does for the others.
    let session = Session {
        nas_ip: Ipv4Addr::LOCALHOST,
        calling_station_id: b"AA:BB:CC:DD:EE:01",
        ..Session::default()
    };
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    nas.set_timeout(Duration::from_secs(5));
    // FreeRADIUS 3.2.1 (before its BlastRADIUS fixes) sends no
    // Message-Authenticator in its answers, which the hardened test client
    // requires: its answers are checked by Response Authenticator and code.
    let freeradius_says = |nas: &mut TestNas, user: &str, creds: &Credentials<'_>| -> Code {
        let (_, auth, reply) = nas.exchange(at(fr_auth), user, creds, &session);
        let reply = reply.expect("FreeRADIUS answers");
        let packet = shardius::proto::Packet::parse(&reply).unwrap();
        assert!(shardius::proto::authenticator::verify_response(
            &packet,
            &auth,
            &shardius::proto::Secret::new(SECRET.as_bytes())
        ));
        packet.code()
    };
    for (user, password) in [
        ("alice", &b"s3cret"[..]),
        ("ntuser", b"n7 pass"),
        ("dave", b"password"),
    ] {
        assert_eq!(
            freeradius_says(&mut nas, user, &mschap(password)),
            Code::ACCESS_ACCEPT,
            "MS-CHAPv2 {user} at FreeRADIUS"
        );
        assert_eq!(
            nas.login(server.auth, user, &mschap(password), &session),
            Some(Code::ACCESS_ACCEPT),
            "MS-CHAPv2 {user} at shardius (MPPE keys checked)"
        );
        let chap = Credentials::Chap {
            ident: 3,
            challenge: rand::random(),
            password,
        };
        let want = if user == "alice" {
            Code::ACCESS_ACCEPT
        } else {
            Code::ACCESS_REJECT
        };
        assert_eq!(
            freeradius_says(&mut nas, user, &chap),
            want,
            "CHAP {user} at FreeRADIUS"
        );
        assert_eq!(
            nas.login(server.auth, user, &chap, &session),
            Some(want),
            "CHAP {user} at shardius"
        );
    }
    let (ok, log) = server.stop();
    assert!(ok, "{log}");
}

#[test]
fn a_broken_source_imports_nothing_and_says_why() {
    let install = Install::new();
    // Unreachable database: an error naming it, nothing written.
    let err = install.fails(&[
        "import",
        "freeradius",
        "--from-sql",
        "postgres://postgres@127.0.0.1:1/nowhere",
    ]);
    assert!(err.contains("127.0.0.1:1"), "{err}");
    // A users file with hostile and broken lines: the good entry comes in,
    // each bad one is named; a NUL or control byte in a name is refused.
    let users = install.path("users");
    std::fs::write(
        &users,
        "good Cleartext-Password := \"pw\"\n\
         \"bad\u{1}name\" Cleartext-Password := \"pw\"\n\
         broken Cleartext-Password\n\
         \tReply-Message = \"orphan\"\n\
         nopass Reply-Message := \"x\"\n\
         toolong Cleartext-Password := \"",
    )
    .unwrap();
    let before = install.ok(&["subscriber", "list"]);
    let out = install.ok(&["import", "freeradius", "--users", users.to_str().unwrap()]);
    assert!(
        out.contains("imported: 0 NAS entries, 0 services, 1 subscribers"),
        "{out}"
    );
    for why in [
        "control characters",
        "users:3",
        "outside an entry",
        "\"nopass\"",
        "users:6",
    ] {
        assert!(out.contains(why), "{why}: {out}");
    }
    let after = install.ok(&["subscriber", "list"]);
    assert!(
        after.contains("good") && !before.contains("good"),
        "{after}"
    );
    // A NAS that collides with an existing entry by name: the whole import
    // is refused and nothing of it is written.
    std::fs::write(&users, "fresh Cleartext-Password := \"pw\"\n").unwrap();
    let (db, port) = {
        let db = schema_database("frbad");
        pg(&db, "INSERT INTO nas (nasname, shortname, type, secret) VALUES ('127.0.0.77', 'BNG-1', 'other', 'x')");
        (db, shared().lock().unwrap_or_else(|e| e.into_inner()).port)
    };
    let err = install.fails(&[
        "import",
        "freeradius",
        "--from-sql",
        &format!("postgres://postgres@127.0.0.1:{port}/{db}"),
        "--users",
        users.to_str().unwrap(),
    ]);
    assert!(err.contains("nothing was written"), "{err}");
    assert!(!install.ok(&["subscriber", "list"]).contains("fresh"));
}

#[test]
fn the_import_into_postgresql_gives_the_same_rows_and_runs_again_unchanged() {
    let (src_db, port) = freeradius_db();
    let src_url = format!("postgres://postgres@127.0.0.1:{port}/{src_db}");
    let install = Install::empty_on(crate::common::server::Backend::Postgres);
    install.ok(&["keygen", "--out", install.key().to_str().unwrap()]);
    let users = install.path("users");
    std::fs::write(&users, USERS_FILE).unwrap();
    let args = [
        "import",
        "freeradius",
        "--from-sql",
        &src_url,
        "--users",
        users.to_str().unwrap(),
    ];
    let out = install.ok(&args);
    assert!(
        out.contains("imported: 2 NAS entries, 2 services, 5 subscribers, 8 radreply rows"),
        "{out}"
    );
    let target = install.db_url.rsplit_once('/').unwrap().1.to_owned();
    let state = || {
        pg(
            &target,
            "SELECT string_agg(s.username || ':' || s.password_kind || ':' || coalesce(v.name, '-') || ':'
                     || coalesce(s.max_sessions::text, '-') || ':' || coalesce(s.expiry_date::text, '-')
                     || ':' || coalesce(s.mac_address, '-'), ',' ORDER BY s.username)
                 || '|' || (SELECT count(*) FROM radreply)
                 || '|' || (SELECT string_agg(name || '=' || download_kbps || '/' || upload_kbps || '/' || max_sessions, ',' ORDER BY name) FROM services)
             FROM subscribers s LEFT JOIN services v ON v.id = s.service_id",
        )
    };
    let first = state();
    assert_eq!(
        first,
        "alice:cleartext:gold:-:2098-12-31:-,bob:cleartext:silver:-:-:AA:BB:CC:DD:EE:01,\
         carol:cleartext:-:2:-:-,dave:nt-hash:-:-:-:-,ntuser:nt-hash:silver:-:-:-|8|gold=10000/2000/2,silver=4000/1000/0"
    );
    install.ok(&args);
    assert_eq!(state(), first);
}

#[test]
fn a_subscriber_added_by_nt_hash_logs_in_by_mschapv2_and_pap_but_not_chap() {
    let install = Install::new();
    let hash = hex::encode(shardius::auth::mschapv2::nt_password_hash(b"by hash"));
    install.ok(&[
        "subscriber",
        "add",
        "--username",
        "nt",
        "--nt-hash",
        &hash,
        "--service",
        "10M",
    ]);
    for (args, says) in [
        (vec!["--nt-hash", "abc"], "32 hex digits"),
        (
            vec!["--nt-hash", &hash, "--password", "x"],
            "cannot be used with",
        ),
        (vec![], "--password"),
    ] {
        let mut cmd = vec![
            "subscriber",
            "add",
            "--username",
            "other",
            "--service",
            "10M",
        ];
        cmd.extend(args);
        let err = install.fails(&cmd);
        assert!(err.contains(says), "{err}");
    }
    let server = install.serve(1);
    let session = Session::default();
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    nas.set_timeout(Duration::from_secs(5));
    assert_eq!(
        nas.login(server.auth, "nt", &mschap(b"by hash"), &session),
        Some(Code::ACCESS_ACCEPT)
    );
    assert_eq!(
        nas.login(server.auth, "nt", &mschap(b"wrong"), &session),
        Some(Code::ACCESS_REJECT)
    );
    let out = pap(server.auth, "nt", "by hash");
    assert!(out.contains("Received Access-Accept"), "{out}");
    let chap = Credentials::Chap {
        ident: 1,
        challenge: rand::random(),
        password: b"by hash",
    };
    assert_eq!(
        nas.login(server.auth, "nt", &chap, &session),
        Some(Code::ACCESS_REJECT)
    );
    let mut server = server;
    server.wait_for_log("chap needs the cleartext password", Duration::from_secs(5));
}
