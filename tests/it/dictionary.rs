//! radreply rows naming any dictionary attribute, encoded by type and
//! operator, as an independent client (Debian's radclient, with
//! FreeRADIUS's dictionaries) decodes them; bad rows reported, not sent.

use std::time::Duration;

use crate::common::server::{radclient, Install};

fn add_rows(install: &Install, rows: &[(&str, &str, &str, &str)]) {
    let db = install.db_url.trim_start_matches("sqlite:").to_owned();
    let conn = rusqlite::Connection::open(db).unwrap();
    for (user, attribute, op, value) in rows {
        conn.execute(
            "INSERT INTO radreply (username, attribute, op, value) VALUES (?1, ?2, ?3, ?4)",
            [user, attribute, op, value],
        )
        .unwrap();
    }
}

const LOGIN: &str =
    "User-Name = \"alice\"\nUser-Password = \"s3cret\"\nMessage-Authenticator = 0x00\n";

#[test]
fn radreply_rows_of_any_vendor_reach_the_nas_as_freeradius_would_send_them() {
    let install = Install::new();
    add_rows(
        &install,
        &[
            ("alice", "Cisco-AVPair", "+=", "ip:addr-pool=gold"),
            (
                "alice",
                "Cisco-AVPair",
                "+=",
                "subscriber:sub-qos-policy-in=UP-10M",
            ),
            ("alice", "WISPr-Bandwidth-Max-Down", ":=", "10000000"),
            ("alice", "Framed-IPv6-Prefix", ":=", "2001:db8:1::/64"),
            ("alice", "Delegated-IPv6-Prefix", ":=", "2001:db8:100::/56"),
            ("alice", "Framed-Route", "+=", "192.0.2.0/24 0.0.0.0 1"),
            ("alice", "MS-Primary-DNS-Server", ":=", "192.0.2.53"),
            ("alice", "Tunnel-Type:1", ":=", "VLAN"),
            ("alice", "Tunnel-Medium-Type:1", ":=", "IEEE-802"),
            ("alice", "Tunnel-Private-Group-Id:1", ":=", "100"),
            ("alice", "Service-Type", "=", "Framed-User"),
            // `=` after an earlier row of the attribute: not added.
            ("alice", "Service-Type", "=", "Login-User"),
            // `:=` replaces the earlier row and shardius's own rate.
            ("alice", "Mikrotik-Rate-Limit", ":=", "1M/1M"),
            ("alice", "Mikrotik-Rate-Limit", ":=", "5M/20M"),
            // Hostile and broken rows: each reported, none sent.
            ("alice", "No-Such-Attribute", ":=", "1"),
            ("alice", "Session-Timeout", ":=", "soon"),
            ("alice", "Framed-IP-Address", ":=", "10.0.0.999"),
            (
                "alice",
                "Reply-Message",
                "==",
                "check operators are not reply operators",
            ),
            ("alice", "Cleartext-Password", ":=", "leak"),
            ("alice", "Tunnel-Password:1", ":=", "secret"),
            ("alice", "Filter-Id", ":=", &"x".repeat(300)),
        ],
    );
    let check = install.ok(&["check-config"]);
    assert!(
        check.contains("7 reply attribute row(s) left out"),
        "{check}"
    );
    for bad in [
        "No-Such-Attribute",
        "soon",
        "10.0.0.999",
        "\"==\"",
        "Cleartext-Password",
        "encrypted",
        "longer than 253",
    ] {
        assert!(
            check.contains(bad),
            "check-config does not report {bad}: {check}"
        );
    }
    let mut server = install.serve(1);
    let log = server.wait_for_log("Filter-Id", Duration::from_secs(10));
    assert!(log.contains("left out"), "{log}");
    let out = radclient(server.auth, "auth", LOGIN);
    assert!(out.contains("Received Access-Accept"), "{out}");
    for want in [
        "Cisco-AVPair = \"ip:addr-pool=gold\"",
        "Cisco-AVPair = \"subscriber:sub-qos-policy-in=UP-10M\"",
        "WISPr-Bandwidth-Max-Down = 10000000",
        "Framed-IPv6-Prefix = 2001:db8:1::/64",
        "Delegated-IPv6-Prefix = 2001:db8:100::/56",
        "Framed-Route = \"192.0.2.0/24 0.0.0.0 1\"",
        "MS-Primary-DNS-Server = 192.0.2.53",
        "Tunnel-Type:1 = VLAN",
        "Tunnel-Medium-Type:1 = IEEE-802",
        "Tunnel-Private-Group-Id:1 = \"100\"",
        "Service-Type = Framed-User",
        "Mikrotik-Rate-Limit = \"5M/20M\"",
    ] {
        assert!(out.contains(want), "missing {want}: {out}");
    }
    for unwanted in [
        "Login-User",
        "1M/1M",
        "Session-Timeout",
        "leak",
        "Filter-Id",
        "Tunnel-Password",
    ] {
        assert!(!out.contains(unwanted), "{unwanted} sent: {out}");
    }
    assert_eq!(out.matches("Mikrotik-Rate-Limit").count(), 1, "{out}");
}

#[test]
fn a_freeradius_dictionary_directory_adds_attributes_and_an_unreadable_one_is_refused() {
    let install = Install::new();
    // Acme's attribute exists only in the directory's dictionary.
    let dir = install.path("dict");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("dictionary"),
        "$INCLUDE dictionary.acme\nNOT-A-KEYWORD here\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("dictionary.acme"),
        "VENDOR Acme 32473\nBEGIN-VENDOR Acme\nATTRIBUTE Acme-Speed 1 integer\nVALUE Acme-Speed Fast 100\nEND-VENDOR Acme\n",
    )
    .unwrap();
    add_rows(&install, &[("alice", "Acme-Speed", ":=", "Fast")]);
    let config = std::fs::read_to_string(install.path("shardius.toml")).unwrap();
    install.write_config(&format!(
        "{config}\n[dictionary]\ndirectory = \"{}\"\n",
        dir.display()
    ));
    let check = install.ok(&["check-config"]);
    assert!(
        check.contains("0 reply attribute row(s) left out"),
        "{check}"
    );
    assert!(check.contains("NOT-A-KEYWORD"), "{check}");
    let server = install.serve(1);
    // radclient does not know Acme: it prints the raw vendor attribute.
    let out = radclient(server.auth, "auth", LOGIN);
    assert!(out.contains("Received Access-Accept"), "{out}");
    assert!(
        out.contains("26.32473.1 = 0x00000064") || out.contains("Attr-26.32473.1 = 0x00000064"),
        "{out}"
    );
    drop(server);
    // A directory without a `dictionary` file: refused, by name.
    install.write_config(&format!(
        "{config}\n[dictionary]\ndirectory = \"{}\"\n",
        install.path("nowhere").display()
    ));
    let err = install.fails(&["check-config"]);
    assert!(err.contains("nowhere/dictionary"), "{err}");
}
