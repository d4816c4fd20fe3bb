//! Byte quotas (issue 17 part 2), with real sockets and databases: three
//! services with a 1 MB daily quota, one per action. Interims cross the
//! quota: `throttle` gets one CoA with the quota speed (and logins carry
//! it), `reject` has its session disconnected and its logins rejected
//! "quota exceeded", `portal` is moved into the walled garden by CoA (and
//! logs in captive). The daily reset undoes each: the speed back by CoA,
//! the captive session disconnected, logins accepted again.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::common::fake_nas::{FakeNas, Received};
use crate::common::pg::eventually;
use crate::common::server::{
    acct_record, send_accounting, Backend, Install, Server, TestNas, SECRET,
};
use shardius::nas_client::{Credentials, Session};
use shardius::proto::dict::{acct_status, attr, mikrotik, vendor};
use shardius::proto::{Code, Packet};

on_both_backends!(each_quota_action_applies_at_the_quota_and_the_daily_reset_undoes_it);

const PASSWORD: Credentials<'static> = Credentials::Pap {
    password: b"s3cret",
};

fn setup(backend: Backend, coa_port: u16) -> Install {
    let install = Install::empty_on(backend);
    install.write_config(
        "[database]\nreload_interval_secs = 1\n\n[coa]\ntimeout_ms = 300\nexpiry_check_interval_secs = 1\n\n\
         [quota]\ndaily_reset_time = \"00:00\"\n\n[portal]\naddress_list = \"over-quota\"\n",
    );
    install.add_key_and_nas("mikrotik", coa_port);
    for (service, action) in [("T", "throttle"), ("R", "reject"), ("P", "portal")] {
        install.add_service(service, "10M", "2M");
        let mut args = vec![
            "service",
            "set",
            service,
            "--daily-quota",
            "1M",
            "--quota-action",
            action,
        ];
        if action == "throttle" {
            args.extend_from_slice(&["--quota-download", "256k", "--quota-upload", "128k"]);
        }
        let out = install.ok(&args);
        assert!(out.contains("daily 1000000 bytes"), "{out}");
        install.add_subscriber(&service.to_lowercase(), service);
    }
    install
}

/// The reply to a PAP login of `user`.
fn login(server: &Server, user: &str) -> Vec<u8> {
    let mut nas = TestNas::bind("127.0.0.1", SECRET);
    let (_, _, reply) = nas.exchange(server.auth, user, &PASSWORD, &Session::default());
    reply.unwrap_or_else(|| panic!("{user}: no answer"))
}

fn code(reply: &[u8]) -> Code {
    Packet::parse(reply).unwrap().code()
}

fn rate(reply: &[u8]) -> Option<String> {
    Packet::parse(reply)
        .unwrap()
        .vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT)
        .map(|r| String::from_utf8(r.to_vec()).unwrap())
}

fn address_list(reply: &[u8]) -> Option<Vec<u8>> {
    Packet::parse(reply)
        .unwrap()
        .vendor_attr(vendor::MIKROTIK, mikrotik::ADDRESS_LIST)
        .map(<[u8]>::to_vec)
}

/// One request as the test compares it: code, rate, address list.
type Seen = (Code, Option<String>, Option<Vec<u8>>);

/// The requests the NAS received, by user.
fn by_user(got: &[Received]) -> HashMap<String, Vec<Seen>> {
    let mut out: HashMap<String, Vec<_>> = HashMap::new();
    for r in got {
        let user = String::from_utf8(r.attr(attr::USER_NAME).unwrap().to_vec()).unwrap();
        out.entry(user).or_default().push((
            r.code,
            r.vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT)
                .map(|v| String::from_utf8(v).unwrap()),
            r.vendor_attr(vendor::MIKROTIK, mikrotik::ADDRESS_LIST),
        ));
    }
    out
}

fn each_quota_action_applies_at_the_quota_and_the_daily_reset_undoes_it(backend: Backend) {
    let fake = FakeNas::start(SECRET);
    let install = setup(backend, fake.addr.port());
    let list = install.ok(&["service", "list"]);
    assert!(
        list.contains("daily 1000000 bytes: throttle 128k/256k"),
        "{list}"
    );
    let mut server = install.serve(1);
    // The first check claims today's (empty) reset; wait for it so it does
    // not zero the usage below.
    server.wait_for_log("monthly usage reset for", Duration::from_secs(10));
    for user in ["t", "r", "p"] {
        let reply = login(&server, user);
        assert_eq!(code(&reply), Code::ACCESS_ACCEPT, "{user}");
        assert_eq!(rate(&reply).as_deref(), Some("2000k/10000k"), "{user}");
    }

    // Each uses 1.2 MB (600 kB each way): past the quota.
    let framed = Some(Ipv4Addr::new(100, 64, 0, 9));
    for user in ["t", "r", "p"] {
        let sid = format!("{user}-1");
        send_accounting(
            server.acct,
            &acct_record(acct_status::START, user, &sid, 0, 0, framed),
        );
        send_accounting(
            server.acct,
            &acct_record(acct_status::INTERIM_UPDATE, user, &sid, 60, 600_000, framed),
        );
    }
    let got = fake.wait_for(3, Duration::from_secs(15));
    assert_eq!(got.len(), 3, "{got:?}");
    let got = by_user(&got);
    // throttle: the quota speed, by the quota job.
    assert_eq!(
        got["t"],
        [(Code::COA_REQUEST, Some("128k/256k".into()), None)]
    );
    // reject: disconnected, by the expiry sweep.
    assert_eq!(got["r"], [(Code::DISCONNECT_REQUEST, None, None)]);
    // portal: into the walled garden, by the expiry sweep.
    assert_eq!(
        got["p"],
        [(
            Code::COA_REQUEST,
            Some("512k/512k".into()),
            Some(b"over-quota".to_vec())
        )]
    );

    // Logins meanwhile: the quota speed, a reject, a captive accept.
    assert!(eventually(Duration::from_secs(10), || {
        rate(&login(&server, "t")).as_deref() == Some("128k/256k")
    }));
    assert!(eventually(Duration::from_secs(10), || {
        code(&login(&server, "r")) == Code::ACCESS_REJECT
    }));
    let p = login(&server, "p");
    assert_eq!(code(&p), Code::ACCESS_ACCEPT);
    assert_eq!(address_list(&p).as_deref(), Some(&b"over-quota"[..]));
    let usage = install.ok(&["subscriber", "usage", "r"]);
    assert!(
        usage.contains("daily 1200000 bytes (at the quota)"),
        "{usage}"
    );
    assert!(eventually(Duration::from_secs(10), || {
        server.metric(r#"shardius_access_rejects_total{reason="quota"}"#) >= 1.0
            && server.metric(r#"shardius_portal_logins_total{reason="quota"}"#) >= 1.0
    }));

    // The daily reset (pretend it last ran long ago) undoes each.
    install.sql("UPDATE quota_resets SET done_on = '2000-01-01' WHERE period = 'daily'");
    let got = fake.wait_for(5, Duration::from_secs(15));
    assert_eq!(got.len(), 5, "{got:?}");
    let got = by_user(&got[3..]);
    assert_eq!(
        got["t"],
        [(Code::COA_REQUEST, Some("2000k/10000k".into()), None)]
    );
    assert_eq!(got["p"], [(Code::DISCONNECT_REQUEST, None, None)]);
    assert!(!got.contains_key("r"), "r's session was cut already");
    for user in ["t", "r", "p"] {
        assert!(
            eventually(Duration::from_secs(10), || {
                let reply = login(&server, user);
                code(&reply) == Code::ACCESS_ACCEPT
                    && rate(&reply).as_deref() == Some("2000k/10000k")
                    && address_list(&reply).is_none()
            }),
            "{user}: full service after the reset"
        );
    }
    assert_eq!(fake.received().len(), 5);

    // Bad settings are clear errors.
    let err = install.fails(&["service", "set", "R", "--quota-action", "slow"]);
    assert!(err.contains("`throttle`, `reject` or `portal`"), "{err}");
    let err = install.fails(&["service", "set", "R", "--quota-action", "throttle"]);
    assert!(err.contains("needs --quota-download"), "{err}");
    for bad in [
        "--daily-quota=lots",
        "--monthly-quota=-5",
        "--daily-quota=1e30G",
    ] {
        let err = install.fails(&["service", "set", "R", bad]);
        assert!(err.contains("invalid value"), "{bad}: {err}");
    }
}
