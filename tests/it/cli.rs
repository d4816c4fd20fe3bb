//! The admin CLI: input is validated with errors naming the field, the
//! CSV import is all or nothing, check-config and migrate behave.

use crate::common::server::{Backend, Install};

fn nas_add_list_and_rm(backend: Backend) {
    let i = Install::new_on(backend);
    i.ok(&[
        "nas", "add", "--name", "BNG-2", "--ip", "10.0.0.2", "--secret", "x", "--type", "generic",
    ]);
    let list = i.ok(&["nas", "list"]);
    assert!(
        list.contains("BNG-2")
            && list.contains("10.0.0.2")
            && list.contains("generic")
            && list.contains("3799"),
        "{list}"
    );
    assert!(
        !list.contains("testing123"),
        "secrets are never listed: {list}"
    );
    i.ok(&["nas", "rm", "10.0.0.2"]);
    assert!(!i.ok(&["nas", "list"]).contains("BNG-2"));
    assert!(i.fails(&["nas", "rm", "BNG-2"]).contains("no NAS"));
}

fn bad_input_fails_with_the_field_named(backend: Backend) {
    let i = Install::new_on(backend);
    let cases: [(&[&str], &str); 8] = [
        (
            &[
                "nas",
                "add",
                "--name",
                "x",
                "--ip",
                "10.0.0.300",
                "--secret",
                "s",
            ],
            "--ip",
        ),
        (
            &[
                "nas",
                "add",
                "--name",
                "x",
                "--ip",
                "10.0.0.9",
                "--secret",
                &"s".repeat(101),
            ],
            "--secret",
        ),
        (
            &[
                "nas",
                "add",
                "--name",
                "y",
                "--ip",
                "127.0.0.1",
                "--secret",
                "s",
            ],
            "already exists",
        ),
        (
            &[
                "service",
                "add",
                "--name",
                "s",
                "--download",
                "10X",
                "--upload",
                "1M",
            ],
            "--download",
        ),
        (
            &[
                "service",
                "add",
                "--name",
                "s",
                "--download",
                "1.5k",
                "--upload",
                "1M",
            ],
            "--download",
        ),
        (
            &[
                "subscriber",
                "add",
                "--username",
                "u",
                "--password",
                "p",
                "--service",
                "nope",
            ],
            "unknown service \"nope\"",
        ),
        (
            &[
                "subscriber",
                "add",
                "--username",
                "u",
                "--password",
                "p",
                "--service",
                "10M",
                "--expiry",
                "2027-02-30",
            ],
            "--expiry",
        ),
        (
            &[
                "subscriber",
                "add",
                "--username",
                "u",
                "--password",
                "p",
                "--service",
                "10M",
                "--mac",
                "AA:BB",
            ],
            "--mac",
        ),
    ];
    for (args, needle) in cases {
        let err = i.fails(args);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

fn speeds_are_normalised_when_written(backend: Backend) {
    let i = Install::new_on(backend);
    i.ok(&[
        "service",
        "add",
        "--name",
        "odd",
        "--download",
        "1.5M",
        "--upload",
        "512k",
    ]);
    let list = i.ok(&["service", "list"]);
    assert!(list.contains("512k/1500k"), "{list}");
}

fn csv_import_applies_every_line_or_none(backend: Backend) {
    let i = Install::new_on(backend);
    let good = i.path("good.csv");
    std::fs::write(
        &good,
        "username,password,service,expiry,mac,static_ip,active\n\
         u1,p1,10M,2030-01-01,aa:bb:cc:dd:ee:01,100.64.0.1,true\n\
         u2,p2,10M,,,,\n\
         u3,p3,10M,,,,false\n",
    )
    .unwrap();
    assert!(i
        .ok(&["subscriber", "import", good.to_str().unwrap()])
        .contains("imported 3"));
    let list = i.ok(&["subscriber", "list"]);
    assert!(
        list.contains("u1") && list.contains("AA:BB:CC:DD:EE:01") && list.contains("100.64.0.1"),
        "{list}"
    );

    let bad = i.path("bad.csv");
    std::fs::write(
        &bad,
        "username,password,service\nv1,p,10M\nv2,p,10M\nv3,p,nosuch\n",
    )
    .unwrap();
    let err = i.fails(&["subscriber", "import", bad.to_str().unwrap()]);
    assert!(
        err.contains("line 4") && err.contains("unknown service"),
        "{err}"
    );
    assert!(
        !i.ok(&["subscriber", "list"]).contains("v1"),
        "nothing of a bad file is applied"
    );

    let dup = i.path("dup.csv");
    std::fs::write(&dup, "username,password,service\nw1,p,10M\nu2,p,10M\n").unwrap();
    let err = i.fails(&["subscriber", "import", dup.to_str().unwrap()]);
    assert!(err.contains("line 3") && err.contains("u2"), "{err}");
    assert!(!i.ok(&["subscriber", "list"]).contains("w1"));

    let broken = i.path("broken.csv");
    std::fs::write(&broken, "username,password,service\nx1,p,10M,extra\n").unwrap();
    assert!(i
        .fails(&["subscriber", "import", broken.to_str().unwrap()])
        .contains("line 2"));
}

fn check_config_reports_problems_and_passes_when_all_is_well(backend: Backend) {
    let i = Install::new_on(backend);
    assert!(i.ok(&["check-config"]).starts_with("ok:"));
    std::fs::write(i.path("shardius.toml"), "[server]\nshards = \"many\"\n").unwrap();
    assert!(i.fails(&["check-config"]).contains("shardius.toml"));
    std::fs::write(i.path("shardius.toml"), "[databse]\nurl = \"sqlite:x\"\n").unwrap();
    assert!(i.fails(&["check-config"]).contains("databse"));
    // A bad URL from the file (the harness's --database-url is left out here).
    std::fs::write(i.path("shardius.toml"), "[database]\nurl = \"mysql://x\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardius"))
        .args(["check-config", "--config"])
        .arg(i.path("shardius.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("database.url"),
        "{err}"
    );
}

fn migrate_is_idempotent_and_reports_the_version(backend: Backend) {
    let i = Install::empty_on(backend);
    assert!(i
        .ok(&["migrate"])
        .contains("schema version 16 (16 migration(s) applied)"));
    assert!(i
        .ok(&["migrate"])
        .contains("schema version 16 (0 migration(s) applied)"));
}

fn keygen_never_overwrites(backend: Backend) {
    let i = Install::empty_on(backend);
    let key = i.key();
    i.ok(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(i
        .fails(&["keygen", "--out", key.to_str().unwrap()])
        .contains("already exists"));
}

fn every_command_has_help(backend: Backend) {
    let i = Install::empty_on(backend);
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["nas", "add", "--help"],
        &["service", "add", "--help"],
        &["subscriber", "import", "--help"],
        &["pool", "add", "--help"],
        &["check-config", "--help"],
    ] {
        assert!(!i.ok(args).is_empty(), "{args:?}");
    }
}

on_both_backends!(
    nas_add_list_and_rm,
    bad_input_fails_with_the_field_named,
    speeds_are_normalised_when_written,
    csv_import_applies_every_line_or_none,
    check_config_reports_problems_and_passes_when_all_is_well,
    migrate_is_idempotent_and_reports_the_version,
    keygen_never_overwrites,
    every_command_has_help,
);
