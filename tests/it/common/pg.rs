//! Throwaway PostgreSQL clusters for the tests: initdb + pg_ctl of the
//! installed server, on a free port of 127.0.0.1, in a temp dir removed
//! afterwards. Never a server someone left running.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// initdb refuses to run as root: then everything runs as `postgres`.
    run_as: Option<String>,
}

fn server_bin_dir() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates
        .into_iter()
        .rev()
        .find(|b| b.join("initdb").exists() && b.join("postgres").exists())
        .expect("PostgreSQL server binaries not found: install them with `apt-get install postgresql` (./scripts/test does it as root)")
}

/// A temp dir for a cluster's data, owned by `run_as` when set.
fn cluster_dir(prefix: &str, run_as: &Option<String>) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    if let Some(user) = run_as {
        let status = Command::new("chown")
            .arg(format!("{user}:"))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "chown of {} failed", dir.path().display());
    }
    dir
}

/// A TCP port free on 127.0.0.1 now (the cluster binds it just after).
fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    pub fn start() -> Cluster {
        let bin = server_bin_dir();
        // SAFETY: geteuid has no preconditions.
        let run_as = (unsafe { libc::geteuid() } == 0).then(|| "postgres".to_string());
        let dir = cluster_dir("shardius-pg-", &run_as);
        let port = free_tcp_port();
        let cluster = Cluster {
            dir,
            bin,
            port,
            run_as,
        };
        let data = cluster.data();
        cluster.ok(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        cluster.pg_ctl_start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.args(args).current_dir("/");
        cmd
    }

    fn ok(&self, tool: &str, args: &[&str]) -> Output {
        let out = self
            .command(tool, args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.ok(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
    }

    pub fn stop(&self) {
        self.ok(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    pub fn restart(&self) {
        self.pg_ctl_start();
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started on a
    /// free port of its own.
    pub fn standby_of(primary: &Cluster) -> Cluster {
        let dir = cluster_dir("shardius-pg-standby-", &primary.run_as);
        let port = free_tcp_port();
        let standby = Cluster {
            dir,
            bin: primary.bin.clone(),
            port,
            run_as: primary.run_as.clone(),
        };
        let data = standby.data();
        let primary_port = primary.port.to_string();
        standby.ok(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary_port,
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                // An immediate checkpoint: the default spreads it over a minute or more.
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        standby.pg_ctl_start();
        standby
    }

    /// Promotes a standby to a primary and waits until it takes writes.
    pub fn promote(&self) {
        self.ok(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "promote",
            ],
        );
    }

    /// Stops the server at once, as a crash would (no shutdown checkpoint).
    pub fn crash(&self) {
        let out = self.stop_immediately();
        assert!(
            out.status.success(),
            "pg_ctl stop -m immediate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop_immediately(&self) -> Output {
        let data = self.data();
        self.command(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
        .output()
        .expect("run pg_ctl")
    }

    /// Creates a database and returns its URL.
    pub fn database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with psql; returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let out = self.ok(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop_immediately();
    }
}

/// One cluster shared by the tests of a test binary, stopped at exit.
pub fn shared() -> &'static Mutex<Cluster> {
    static CLUSTER: OnceLock<Mutex<Cluster>> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        extern "C" fn stop_at_exit() {
            if let Some(c) = CLUSTER.get() {
                // A test that panicked while holding the lock poisons it;
                // the cluster must be stopped all the same.
                {
                    let c = c.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = c
                        .command(
                            "pg_ctl",
                            &[
                                "-D",
                                c.data().to_str().unwrap(),
                                "-m",
                                "immediate",
                                "-w",
                                "stop",
                            ],
                        )
                        .output();
                    let _ = std::fs::remove_dir_all(c.path());
                }
            }
        }
        // SAFETY: registering a plain extern "C" fn with atexit.
        unsafe {
            libc::atexit(stop_at_exit);
        }
        Mutex::new(Cluster::start())
    })
}

/// A fresh database on the shared cluster, with a unique name.
pub fn fresh_database() -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("t{}_{n}", std::process::id());
    shared()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .database(&name)
}

/// Waits until `check` is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}
