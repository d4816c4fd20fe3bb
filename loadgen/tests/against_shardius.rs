//! loadgen against the real shardius (demo data, free ports on 127.0.0.1):
//! every reply verifies, nothing times out, every subscriber gets in.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    auth: String,
    acct: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// The shardius binary the workspace build put next to loadgen.
fn shardius_bin() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_loadgen")).with_file_name("shardius");
    assert!(
        path.exists(),
        "{} missing: run the workspace tests (./scripts/test)",
        path.display()
    );
    path
}

fn demo_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("none.toml"), "").unwrap();
    let mut child = Command::new(shardius_bin())
        .args([
            "serve",
            "--demo",
            "--shards",
            "2",
            "--listen-auth",
            "127.0.0.1:0",
            "--listen-acct",
            "127.0.0.1:0",
            "--listen-http",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .env("SHARDIUS_CONFIG", dir.path().join("none.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let line = lines.next().expect("shardius exited").unwrap();
        if line.contains("listening auth=") {
            break line;
        }
        assert!(Instant::now() < deadline);
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let field = |name: &str| {
        line[line.find(name).unwrap() + name.len()..]
            .split([' ', ','])
            .next()
            .unwrap()
            .to_owned()
    };
    Server {
        auth: field("auth="),
        acct: field("acct="),
        child,
        _dir: dir,
    }
}

fn loadgen(server: &Server, args: &[&str]) -> serde_json::Value {
    let json = tempfile::NamedTempFile::new().unwrap();
    let port = |a: &str| a.rsplit(':').next().unwrap().to_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--auth-port",
            &port(&server.auth),
            "--acct-port",
            &port(&server.acct),
            "--quiet",
            "--json",
        ])
        .arg(json.path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loadgen {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(json.path()).unwrap()).unwrap()
}

fn kind<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

#[test]
fn a_storm_of_every_demo_subscriber_is_accepted_and_started() {
    let server = demo_server();
    for method in ["mschapv2", "pap", "chap"] {
        let report = loadgen(
            &server,
            &[
                "--scenario",
                "storm",
                "--subscribers",
                "1000",
                "--auth",
                method,
            ],
        );
        let auth = kind(&report, "access-request");
        assert_eq!(auth["accepts"], 1000, "{method}: {report}");
        assert_eq!(
            kind(&report, "acct-start")["acknowledged"],
            1000,
            "{report}"
        );
        for k in report["kinds"].as_array().unwrap() {
            assert_eq!(k["invalid"], 0, "{report}");
            assert_eq!(k["timeouts"], 0, "{report}");
        }
        let authenticated = report["all_authenticated_after_s"].as_f64().unwrap();
        assert!(authenticated <= report["all_started_after_s"].as_f64().unwrap());
    }
}

#[test]
fn a_steady_population_sends_verified_interims_and_stops() {
    let server = demo_server();
    let report = loadgen(
        &server,
        &[
            "--scenario",
            "steady",
            "--subscribers",
            "300",
            "--interim",
            "30",
            "--compression",
            "60",
            "--duration",
            "2",
        ],
    );
    assert_eq!(kind(&report, "access-request")["accepts"], 300, "{report}");
    assert!(
        kind(&report, "acct-interim")["acknowledged"]
            .as_u64()
            .unwrap()
            >= 300,
        "{report}"
    );
    assert_eq!(kind(&report, "acct-stop")["acknowledged"], 300, "{report}");
    for k in report["kinds"].as_array().unwrap() {
        assert_eq!(k["invalid"], 0, "{report}");
        assert_eq!(k["timeouts"], 0, "{report}");
    }
}

#[test]
fn wrong_passwords_are_rejects_not_invalid_replies() {
    let server = demo_server();
    let report = loadgen(
        &server,
        &[
            "--scenario",
            "max",
            "--requests",
            "200",
            "--pass-pattern",
            "wrong{n}",
        ],
    );
    let auth = kind(&report, "access-request");
    assert_eq!(auth["rejects"], 200, "{report}");
    assert_eq!(auth["invalid"], 0, "{report}");
}
