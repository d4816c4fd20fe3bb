//! The systemd files in `systemd/`: the unit verifies, the install script
//! stages every file. (Readiness and watchdog notifications are checked
//! against a live server in tests/operations.rs.)

use std::path::Path;
use std::process::Command;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn the_unit_verifies_without_a_single_warning() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze missing in CI: scripts/test installs it"
        );
        eprintln!("systemd-analyze not installed: skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The unit as installed, pointing at this build's binary.
    let unit = std::fs::read_to_string(repo("systemd/shardius.service"))
        .unwrap()
        .replace("/usr/local/bin/shardius", env!("CARGO_BIN_EXE_shardius"));
    let path = dir.path().join("shardius.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown keys and bad values are only warnings: none may mention the unit.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("shardius.service"))
        .collect();
    assert!(about_unit.is_empty(), "{stderr}");
}

#[test]
fn the_unit_is_type_notify_unprivileged_and_hardened() {
    let unit = std::fs::read_to_string(repo("systemd/shardius.service")).unwrap();
    let has = |line: &str| unit.lines().any(|l| l.trim() == line);
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "User=shardius",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "StateDirectory=shardius",
    ] {
        assert!(has(line), "{line} missing from the unit");
    }
    assert!(unit.contains("\nWatchdogSec="), "no watchdog");
    assert!(unit.contains("\nLimitMEMLOCK="), "no memlock limit");
    assert!(unit.contains("\nLimitNOFILE="), "no file limit");
}

#[test]
fn install_sh_stages_binary_unit_sysctl_and_config() {
    let dest = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(repo("systemd/install.sh"))
        .env("DESTDIR", dest.path())
        .env("BIN", env!("CARGO_BIN_EXE_shardius"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [
        ("usr/local/bin/shardius", 0o755),
        ("etc/systemd/system/shardius.service", 0o644),
        ("usr/lib/sysusers.d/shardius.conf", 0o644),
        ("etc/sysctl.d/60-shardius.conf", 0o644),
        ("etc/shardius/shardius.toml", 0o640),
        ("etc/shardius/shardius.env", 0o640),
    ] {
        let meta =
            std::fs::metadata(dest.path().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{path}");
    }
    // An operator's edited config is never overwritten.
    let config = dest.path().join("etc/shardius/shardius.toml");
    std::fs::write(&config, "# mine\n").unwrap();
    let again = Command::new("bash")
        .arg(repo("systemd/install.sh"))
        .env("DESTDIR", dest.path())
        .env("BIN", env!("CARGO_BIN_EXE_shardius"))
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");
}

#[test]
fn the_sysctl_drop_in_raises_the_receive_buffer_cap() {
    let text = std::fs::read_to_string(repo("systemd/60-shardius.conf")).unwrap();
    let value = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(key)?
                    .trim()
                    .strip_prefix('=')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{key} missing"))
    };
    // At least the 8 MiB each shard socket asks for (server.recv_buffer_bytes).
    assert!(value("net.core.rmem_max") >= 8 << 20);
    assert!(value("net.core.netdev_max_backlog") > 1000);
}
