//! The walled garden (issue 17 part 3), with real sockets and databases:
//! an expired subscriber of a `portal` service logs in and gets the
//! portal's attributes on a MikroTik NAS (checked byte for byte and by
//! radclient with FreeRADIUS's dictionaries) and on a generic one; a
//! disabled one is rejected until the service says `portal` too; a live
//! session that expires is moved into the portal by one CoA, and renewing
//! the expiry disconnects it (its next login gets the full service); a
//! session that logged in captive is disconnected on renewal as well.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::fake_nas::FakeNas;
use crate::common::pg::eventually;
use crate::common::server::{
    acct_record, mschap, radclient, send_accounting, Backend, Install, Server, TestNas, SECRET,
};
use shardius::nas_client::{self as nas, Credentials, Session};
use shardius::proto::dict::{acct_status, attr, mikrotik, vendor};
use shardius::proto::{Code, Packet};

on_both_backends!(
    an_expired_subscriber_logs_in_into_the_portal,
    a_live_session_moves_into_the_portal_by_coa_and_out_when_renewed,
);

const PASSWORD: Credentials<'static> = Credentials::Pap {
    password: b"s3cret",
};

const PORTAL: &str = "[portal]\npool = \"portal-pool\"\naddress_list = \"expired\"\n\
    filter_id = \"pay-first\"\ndownload = \"1M\"\nupload = \"512k\"\nsession_timeout_secs = 600\n";

fn install(backend: Backend, coa_port: u16) -> Install {
    let install = Install::empty_on(backend);
    install.write_config(&format!(
        "[database]\nreload_interval_secs = 1\n\n[coa]\ntries = 3\ntimeout_ms = 300\n\
         expiry_check_interval_secs = 1\n\n{PORTAL}"
    ));
    install.provision_nas("mikrotik", coa_port);
    install
}

fn add(install: &Install, user: &str, extra: &[&str]) {
    let mut args = vec![
        "subscriber",
        "add",
        "--username",
        user,
        "--password",
        "s3cret",
        "--service",
        "10M",
        "--static-ip",
    ];
    // A static IP the portal pool must take the place of.
    let ip = format!("100.64.9.{}", user.as_bytes()[0]);
    args.push(&ip);
    args.extend_from_slice(extra);
    install.ok(&args);
}

/// The reply to a PAP login of `user` from `nas`.
fn reply(nas: &mut TestNas, to: SocketAddr, user: &str) -> Vec<u8> {
    let (_, _, reply) = nas.exchange(to, user, &PASSWORD, &Session::default());
    reply.unwrap_or_else(|| panic!("{user}: no answer"))
}

fn vendor_attr(reply: &[u8], v: u32, ty: u8) -> Option<Vec<u8>> {
    Packet::parse(reply)
        .unwrap()
        .vendor_attr(v, ty)
        .map(<[u8]>::to_vec)
}

fn plain_attr(reply: &[u8], ty: u8) -> Option<Vec<u8>> {
    Packet::parse(reply).unwrap().attr(ty).map(<[u8]>::to_vec)
}

fn portal_logins(server: &Server, reason: &str) -> f64 {
    server.metric(&format!(
        r#"shardius_portal_logins_total{{reason="{reason}"}}"#
    ))
}

fn an_expired_subscriber_logs_in_into_the_portal(backend: Backend) {
    let install = install(backend, 1700);
    install.ok(&[
        "nas",
        "add",
        "--name",
        "GEN",
        "--ip",
        "127.0.0.2",
        "--secret",
        SECRET,
        "--type",
        "generic",
    ]);
    let out = install.ok(&["service", "set", "10M", "--on-expired", "portal"]);
    assert!(out.contains("expired: portal, disabled: reject"), "{out}");
    let list = install.ok(&["service", "list"]);
    assert!(list.contains("portal   reject"), "{list}");
    add(&install, "alice", &["--expiry", "2020-01-31"]);
    add(&install, "bob", &["--disabled"]);
    add(&install, "carol", &[]);
    let server = install.serve(1);
    let mut mikrotik_nas = TestNas::bind("127.0.0.1", SECRET);

    // MikroTik: the portal's speed (upload/download), address list, pool
    // (not the static IP), Session-Timeout, and a captive Class.
    let r = reply(&mut mikrotik_nas, server.auth, "alice");
    let packet = Packet::parse(&r).unwrap();
    assert_eq!(packet.code(), Code::ACCESS_ACCEPT);
    assert_eq!(
        vendor_attr(&r, vendor::MIKROTIK, mikrotik::RATE_LIMIT).as_deref(),
        Some(&b"512k/1000k"[..])
    );
    assert_eq!(
        vendor_attr(&r, vendor::MIKROTIK, mikrotik::ADDRESS_LIST).as_deref(),
        Some(&b"expired"[..])
    );
    assert_eq!(
        plain_attr(&r, attr::FRAMED_POOL).as_deref(),
        Some(&b"portal-pool"[..])
    );
    assert_eq!(plain_attr(&r, attr::FRAMED_IP_ADDRESS), None);
    assert_eq!(
        plain_attr(&r, attr::SESSION_TIMEOUT).as_deref(),
        Some(&600u32.to_be_bytes()[..])
    );
    assert_eq!(
        plain_attr(&r, attr::FILTER_ID),
        None,
        "MikroTik: the address list"
    );
    assert_eq!(&plain_attr(&r, attr::CLASS).unwrap()[..4], b"SHDP");

    // The same Access-Accept as FreeRADIUS's radclient decodes it.
    let out = radclient(
        server.auth,
        "auth",
        "User-Name = \"alice\"\nUser-Password = \"s3cret\"\nMessage-Authenticator = 0x00\n",
    );
    assert!(out.contains("Received Access-Accept"), "{out}");
    for want in [
        "Mikrotik-Rate-Limit = \"512k/1000k\"",
        "Mikrotik-Address-List = \"expired\"",
        "Framed-Pool = \"portal-pool\"",
        "Session-Timeout = 600",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    // MS-CHAPv2 (MikroTik's PPPoE default) too, with its success.
    assert_eq!(
        mikrotik_nas.login(
            server.auth,
            "alice",
            &mschap(b"s3cret"),
            &Session::default()
        ),
        Some(Code::ACCESS_ACCEPT)
    );
    // A wrong password is still wrong: the portal is no way around it.
    let wrong = Credentials::Pap { password: b"guess" };
    assert_eq!(
        mikrotik_nas.login(server.auth, "alice", &wrong, &Session::default()),
        Some(Code::ACCESS_REJECT)
    );

    // A generic NAS: the portal's Filter-Id, no MikroTik attributes.
    let mut generic = TestNas::bind("127.0.0.2", SECRET);
    let r = reply(&mut generic, server.auth, "alice");
    assert_eq!(Packet::parse(&r).unwrap().code(), Code::ACCESS_ACCEPT);
    assert_eq!(
        plain_attr(&r, attr::FILTER_ID).as_deref(),
        Some(&b"pay-first"[..])
    );
    assert_eq!(
        vendor_attr(&r, vendor::MIKROTIK, mikrotik::RATE_LIMIT),
        None
    );

    // A subscriber in good standing gets the service, not the portal.
    let r = reply(&mut mikrotik_nas, server.auth, "carol");
    assert_eq!(
        vendor_attr(&r, vendor::MIKROTIK, mikrotik::RATE_LIMIT).as_deref(),
        Some(&b"2000k/10000k"[..])
    );
    assert_eq!(&plain_attr(&r, attr::CLASS).unwrap()[..4], b"SHD1");

    // Disabled: the service still says reject for that, until it says portal.
    assert_eq!(
        Packet::parse(&reply(&mut mikrotik_nas, server.auth, "bob"))
            .unwrap()
            .code(),
        Code::ACCESS_REJECT
    );
    install.ok(&["service", "set", "10M", "--on-disabled", "portal"]);
    assert!(eventually(Duration::from_secs(10), || {
        Packet::parse(&reply(&mut mikrotik_nas, server.auth, "bob"))
            .unwrap()
            .code()
            == Code::ACCESS_ACCEPT
    }));

    // Counted and logged with the reason.
    assert!(eventually(Duration::from_secs(10), || {
        portal_logins(&server, "expired") == 4.0 && portal_logins(&server, "disabled") >= 1.0
    }));
    let mut store =
        shardius::store::open(&shardius::store::DatabaseUrl::parse(&install.db_url).unwrap())
            .unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        store
            .recent_logs(200)
            .unwrap()
            .iter()
            .any(|(u, e, r, reason)| {
                u == "alice" && e == "auth" && r == "accept" && reason.as_deref() == Some("expired")
            })
    }));

    // Bad settings are clear errors.
    let err = install.fails(&["service", "set", "10M", "--on-expired", "redirect"]);
    assert!(err.contains("`reject` or `portal`"), "{err}");
    install.write_config("[portal]\ndownload = \"fast\"\n");
    let err = install.fails(&["check-config"]);
    assert!(err.contains("portal.download"), "{err}");
    install.write_config("[portal]\naddress_list = \"a\\u0000b\"\n");
    let err = install.fails(&["check-config"]);
    assert!(err.contains("portal.address_list"), "{err}");
}

fn a_live_session_moves_into_the_portal_by_coa_and_out_when_renewed(backend: Backend) {
    let fake = FakeNas::start(SECRET);
    let install = install(backend, fake.addr.port());
    install.ok(&["service", "set", "10M", "--on-expired", "portal"]);
    add(&install, "alice", &[]);
    add(&install, "bob", &["--expiry", "2020-01-31"]);
    let server = install.serve(1);
    let mut nas = TestNas::bind("127.0.0.1", SECRET);

    // alice online with the full service.
    let r = reply(&mut nas, server.auth, "alice");
    assert_eq!(Packet::parse(&r).unwrap().code(), Code::ACCESS_ACCEPT);
    let class = plain_attr(&r, attr::CLASS).unwrap();
    send_accounting(
        server.acct,
        &nas::AcctRecord {
            class: Some(&class),
            ..acct_record(acct_status::START, "alice", "a-1", 0, 0, None)
        },
    );
    // bob online in the portal (he logged in expired).
    let r = reply(&mut nas, server.auth, "bob");
    let class = plain_attr(&r, attr::CLASS).unwrap();
    assert_eq!(&class[..4], b"SHDP");
    send_accounting(
        server.acct,
        &nas::AcctRecord {
            class: Some(&class),
            ..acct_record(acct_status::START, "bob", "b-1", 0, 0, None)
        },
    );

    // alice expires: one CoA into the portal.
    install.ok(&["subscriber", "set", "alice", "--expiry", "2020-01-31"]);
    let got = fake.wait_for(1, Duration::from_secs(15));
    assert_eq!(got.len(), 1, "{got:?}");
    let coa = &got[0];
    assert_eq!(coa.code, Code::COA_REQUEST);
    assert_eq!(coa.attr(attr::USER_NAME), Some(&b"alice"[..]));
    assert_eq!(coa.attr(attr::ACCT_SESSION_ID), Some(&b"a-1"[..]));
    assert_eq!(
        coa.vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT)
            .as_deref(),
        Some(&b"512k/1000k"[..])
    );
    assert_eq!(
        coa.vendor_attr(vendor::MIKROTIK, mikrotik::ADDRESS_LIST)
            .as_deref(),
        Some(&b"expired"[..])
    );
    assert!(coa.request_authenticator_ok && coa.message_authenticator_ok);

    // Renewed: disconnected (its next login gets a real address and the
    // full service). The sweeps in between sent nothing more: the
    // Disconnect comes from a later sweep than the CoA.
    install.ok(&["subscriber", "set", "alice", "--expiry", "none"]);
    let got = fake.wait_for(2, Duration::from_secs(15));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].code, Code::DISCONNECT_REQUEST);
    assert_eq!(got[1].attr(attr::ACCT_SESSION_ID), Some(&b"a-1"[..]));
    assert_eq!(
        Packet::parse(&reply(&mut nas, server.auth, "alice"))
            .unwrap()
            .code(),
        Code::ACCESS_ACCEPT
    );

    // bob, captive since his login: no CoA so far; renewed, disconnected.
    assert!(got
        .iter()
        .all(|r| r.attr(attr::USER_NAME) != Some(&b"bob"[..])));
    install.ok(&["subscriber", "set", "bob", "--expiry", "2099-12-31"]);
    let got = fake.wait_for(3, Duration::from_secs(15));
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2].code, Code::DISCONNECT_REQUEST);
    assert_eq!(got[2].attr(attr::USER_NAME), Some(&b"bob"[..]));
    assert_eq!(got[2].attr(attr::ACCT_SESSION_ID), Some(&b"b-1"[..]));
    assert_eq!(
        server.metric(r#"shardius_coa_requests_total{kind="coa",result="ack"}"#),
        1.0
    );
}
