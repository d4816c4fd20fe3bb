//! NASes behind a trusted proxy: FreeRADIUS 3.2 (Debian's) proxies two
//! BNGs of different types to shardius; each gets its own type's reply,
//! accounting is recorded under each BNG, and a Disconnect-Request for a
//! session behind the proxy reaches the BNG through it.

use std::net::Ipv4Addr;
use std::time::Duration;

use shardius::nas_client::{AcctRecord, Credentials, Session};
use shardius::proto::dict::{attr, mikrotik, vendor};
use shardius::proto::{Code, Packet, Secret};

use crate::common::fake_nas::FakeNas;
use crate::common::freeradius::{at, free_udp_port, FreeRadius};
use crate::common::server::{mschap, radclient, Install, TestNas, SECRET};

/// The secret between the BNGs and the proxy (shardius never sees it).
const NAS_SECRET: &str = "bng-to-proxy";
/// The secret between the proxy and the BNGs' CoA ports.
const COA_SECRET: &str = "proxy-to-bng";

struct Proxied {
    install: Install,
    server: crate::common::server::Server,
    fr: FreeRadius,
    fr_auth: u16,
    fr_acct: u16,
    fake: FakeNas,
}

fn setup() -> Proxied {
    let install = Install::empty();
    let fr_coa = free_udp_port();
    // The BNG at 127.0.0.5 takes Disconnect-Requests, from the proxy only.
    let fake = FakeNas::start_on("127.0.0.5", COA_SECRET);
    install.ok(&["keygen", "--out", install.key().to_str().unwrap()]);
    let coa = fr_coa.to_string();
    install.ok(&[
        "nas",
        "add",
        "--name",
        "FR-PROXY",
        "--ip",
        "127.0.0.1",
        "--secret",
        SECRET,
        "--type",
        "generic",
        "--proxy",
        "--coa-port",
        &coa,
    ]);
    install.ok(&[
        "nas",
        "add",
        "--name",
        "BNG-M",
        "--ip",
        "127.0.0.5",
        "--secret",
        "unused-m",
        "--type",
        "mikrotik",
        "--coa-via",
        "FR-PROXY",
    ]);
    install.ok(&[
        "nas",
        "add",
        "--name",
        "BNG-G",
        "--ip",
        "127.0.0.6",
        "--secret",
        "unused-g",
        "--type",
        "generic",
        "--identifier",
        "bng-g.example",
    ]);
    install.ok(&[
        "service",
        "add",
        "--name",
        "10M",
        "--download",
        "10M",
        "--upload",
        "2M",
        "--filter-id",
        "plan-10M",
    ]);
    install.add_user("alice");
    let server = install.serve(2);
    let (fr_auth, fr_acct) = (free_udp_port(), free_udp_port());
    let proxy_conf = format!(
        "proxy server {{
    default_fallback = no
}}
home_server shardius-auth {{
    type = auth
    ipaddr = 127.0.0.1
    port = {auth}
    secret = {SECRET}
    status_check = none
}}
home_server shardius-acct {{
    type = acct
    ipaddr = 127.0.0.1
    port = {acct}
    secret = {SECRET}
    status_check = none
}}
home_server bng-m-coa {{
    type = coa
    ipaddr = 127.0.0.5
    port = {coa}
    secret = {COA_SECRET}
    coa {{
        irt = 2
        mrt = 16
        mrc = 5
        mrd = 30
    }}
}}
home_server_pool shardius-auth {{
    type = fail-over
    home_server = shardius-auth
}}
home_server_pool shardius-acct {{
    type = fail-over
    home_server = shardius-acct
}}
home_server_pool bng-m-coa {{
    type = fail-over
    home_server = bng-m-coa
}}
realm shardius {{
    auth_pool = shardius-auth
    acct_pool = shardius-acct
    nostrip
}}
",
        auth = server.auth.port(),
        acct = server.acct.port(),
        coa = fake.addr.port(),
    );
    let site = format!(
        "server proxy {{
    listen {{
        type = auth
        ipaddr = 127.0.0.1
        port = {fr_auth}
    }}
    listen {{
        type = acct
        ipaddr = 127.0.0.1
        port = {fr_acct}
    }}
    authorize {{
        update control {{
            &Proxy-To-Realm := \"shardius\"
        }}
    }}
    authenticate {{
    }}
    preacct {{
        update control {{
            &Proxy-To-Realm := \"shardius\"
        }}
    }}
    accounting {{
    }}
}}
server coa {{
    listen {{
        type = coa
        ipaddr = 127.0.0.1
        port = {fr_coa}
    }}
    recv-coa {{
        update control {{
            &Home-Server-Pool := \"bng-m-coa\"
        }}
        ok
    }}
    send-coa {{
        ok
    }}
}}
"
    );
    let clients = format!(
        "client bngs {{\n    ipaddr = 127.0.0.0/8\n    secret = {NAS_SECRET}\n}}\nclient shardius {{\n    ipaddr = 127.0.0.1\n    secret = {SECRET}\n}}\n"
    );
    let fr = FreeRadius::start(&[
        ("proxy.conf", proxy_conf),
        ("sites-enabled/proxy", site),
        ("clients.conf", clients),
    ]);
    Proxied {
        install,
        server,
        fr,
        fr_auth,
        fr_acct,
        fake,
    }
}

fn session(nas_ip: Ipv4Addr, identifier: &'static [u8]) -> Session<'static> {
    Session {
        nas_ip,
        nas_identifier: identifier,
        ..Session::default()
    }
}

/// Logs in through the proxy as a BNG would; returns the checked reply.
fn login(p: &Proxied, from: &str, creds: &Credentials<'_>, s: &Session<'_>) -> Vec<u8> {
    let mut nas = TestNas::bind(from, NAS_SECRET);
    nas.set_timeout(Duration::from_secs(5));
    let (request, auth, reply) = nas.exchange(at(p.fr_auth), "alice", creds, s);
    let reply = reply.unwrap_or_else(|| panic!("no answer through the proxy:\n{}", p.fr.log()));
    let checked = shardius::nas_client::check_access_reply(
        &reply,
        request[1],
        &auth,
        &Secret::new(NAS_SECRET.as_bytes()),
        b"alice",
        creds,
    )
    .unwrap_or_else(|e| panic!("invalid reply through the proxy: {e:?}"));
    assert_eq!(checked.code, Code::ACCESS_ACCEPT);
    reply
}

#[test]
fn two_bngs_behind_a_freeradius_proxy_get_their_own_replies_accounting_and_disconnects() {
    let p = setup();
    let m = session(Ipv4Addr::new(127, 0, 0, 5), b"BNG-M");
    // BNG-G named by NAS-Identifier only: its NAS-IP-Address is not registered.
    let g = session(Ipv4Addr::new(127, 0, 0, 66), b"bng-g.example");

    // PAP, CHAP and MS-CHAPv2 (MPPE keys re-encrypted by the proxy for
    // the BNG, checked by check_access_reply) from the MikroTik: its rate.
    for creds in [
        Credentials::Pap {
            password: b"s3cret",
        },
        Credentials::Chap {
            ident: 7,
            challenge: rand::random(),
            password: b"s3cret",
        },
        mschap(b"s3cret"),
    ] {
        let reply = login(&p, "127.0.0.5", &creds, &m);
        let reply = Packet::parse(&reply).unwrap();
        assert!(
            reply
                .vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT)
                .is_some(),
            "BNG-M is a MikroTik"
        );
        assert_eq!(reply.attr(attr::FILTER_ID), None);
    }
    // The generic BNG: Filter-Id, no MikroTik attribute.
    let reply = login(&p, "127.0.0.6", &mschap(b"s3cret"), &g);
    let reply = Packet::parse(&reply).unwrap();
    assert_eq!(reply.attr(attr::FILTER_ID), Some(&b"plan-10M"[..]));
    assert!(reply
        .vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT)
        .is_none());

    // Accounting through the proxy is recorded under the BNG.
    let record = AcctRecord {
        framed_ip: Some(Ipv4Addr::new(100, 64, 0, 9)),
        ..crate::common::server::acct_bytes(1, b"alice", b"sess-m-1")
    };
    let mut buf = [0u8; 4096];
    let request = shardius::nas_client::accounting_request(
        &mut buf,
        9,
        &Secret::new(NAS_SECRET.as_bytes()),
        &record,
        &m,
    )
    .unwrap()
    .to_vec();
    let bng = std::net::UdpSocket::bind("127.0.0.5:0").unwrap();
    bng.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    bng.send_to(&request, at(p.fr_acct)).unwrap();
    let mut answer = [0u8; 4096];
    let n = bng
        .recv(&mut answer)
        .expect("Accounting-Response through the proxy");
    assert_eq!(answer[0], Code::ACCOUNTING_RESPONSE.0);
    assert!(answer[..n].len() >= 20);
    let sessions = p.install.ok(&["sessions", "--user", "alice"]);
    assert!(
        sessions.contains("127.0.0.5") && sessions.contains("sess-m-1"),
        "{sessions}"
    );

    // Disconnect: shardius -> the proxy (its CoA port, its secret) -> BNG-M.
    let out = p.install.run(&["disconnect", "--user", "alice"]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.contains("disconnect: ACK"), "{out}\n{}", p.fr.log());
    let got = p.fake.wait_for(1, Duration::from_secs(5));
    assert_eq!(got[0].code, Code::DISCONNECT_REQUEST);
    assert!(
        got[0].request_authenticator_ok,
        "signed with the proxy's secret to the BNG"
    );
    assert_eq!(got[0].attr(attr::USER_NAME), Some(&b"alice"[..]));
    assert_eq!(got[0].attr(attr::ACCT_SESSION_ID), Some(&b"sess-m-1"[..]));
    let list = p.install.ok(&["nas", "list"]);
    assert!(
        list.contains("proxy") && list.contains("via FR-PROXY"),
        "{list}"
    );
    drop(p.fr);
    let (ok, log) = p.server.stop();
    assert!(ok, "{log}");
}

#[test]
fn replies_to_a_proxy_echo_its_proxy_state_and_unknown_bngs_get_the_proxys_entry() {
    let install = Install::empty();
    install.ok(&["keygen", "--out", install.key().to_str().unwrap()]);
    install.ok(&[
        "nas",
        "add",
        "--name",
        "FR-PROXY",
        "--ip",
        "127.0.0.1",
        "--secret",
        SECRET,
        "--type",
        "generic",
        "--proxy",
    ]);
    install.add_service("10M", "10M", "2M");
    install.add_user("alice");
    // CoA through an entry that is not a proxy, or none: refused by name.
    install.ok(&[
        "nas",
        "add",
        "--name",
        "PLAIN",
        "--ip",
        "127.0.0.9",
        "--secret",
        "x",
    ]);
    for via in ["PLAIN", "NOWHERE"] {
        let err = install.fails(&[
            "nas",
            "add",
            "--name",
            "B",
            "--ip",
            "127.0.0.10",
            "--secret",
            "x",
            "--coa-via",
            via,
        ]);
        assert!(err.contains(via), "{err}");
    }
    let server = install.serve(1);
    let out = radclient(
        server.auth,
        "auth",
        "User-Name = \"alice\"\nUser-Password = \"s3cret\"\nNAS-IP-Address = 192.0.2.77\nNAS-Identifier = \"nobody\"\nProxy-State = 0x6869\nProxy-State = 0x7468657265\nMessage-Authenticator = 0x00\n",
    );
    assert!(out.contains("Received Access-Accept"), "{out}");
    // Both Proxy-States, in order; the proxy's own (generic) reply.
    let tail = out.split("Received Access-Accept").nth(1).unwrap();
    let first = tail.find("Proxy-State = 0x6869").expect(&out);
    let second = tail.find("Proxy-State = 0x7468657265").expect(&out);
    assert!(first < second, "{out}");
    assert!(tail.contains("Filter-Id = \"10M\""), "{out}");
    // Hostile: a proxy naming another proxy, or itself, is still itself.
    let out = radclient(
        server.auth,
        "auth",
        "User-Name = \"alice\"\nUser-Password = \"s3cret\"\nNAS-IP-Address = 127.0.0.1\nMessage-Authenticator = 0x00\n",
    );
    assert!(out.contains("Received Access-Accept"), "{out}");
}
