//! FreeRADIUS 3.2 from Debian (installed by scripts/test), run in the
//! foreground from a temporary copy of /etc/freeradius/3.0 (never /etc
//! itself) with virtual servers of the test's own, on free ports.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SYSTEM_RADDB: &str = "/etc/freeradius/3.0";

/// A running FreeRADIUS; killed on drop.
pub struct FreeRadius {
    child: Child,
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

/// An rlm_sql PostgreSQL instance named `name` writing to `db` on
/// 127.0.0.1:`port`, with FreeRADIUS's stock queries.conf.
pub fn sql_module(name: &str, port: u16, db: &str) -> String {
    format!(
        r#"sql {name} {{
    dialect = "postgresql"
    driver = "rlm_sql_postgresql"
    server = "127.0.0.1"
    port = {port}
    login = "postgres"
    password = ""
    radius_db = "{db}"
    acct_table1 = "radacct"
    acct_table2 = "radacct"
    postauth_table = "radpostauth"
    authcheck_table = "radcheck"
    groupcheck_table = "radgroupcheck"
    authreply_table = "radreply"
    groupreply_table = "radgroupreply"
    usergroup_table = "radusergroup"
    read_groups = yes
    read_clients = no
    client_table = "nas"
    group_attribute = "{name}-SQL-Group"
    pool {{
        start = 1
        min = 1
        max = 4
        spare = 1
        uses = 0
        retry_delay = 1
        lifetime = 0
        idle_timeout = 60
    }}
    $INCLUDE ${{modconfdir}}/${{.:name}}/main/${{dialect}}/queries.conf
}}
"#
    )
}

/// A new database on the shared PostgreSQL cluster made with FreeRADIUS
/// 3.2's own PostgreSQL schema.sql (as a FreeRADIUS shop has it); its name.
pub fn schema_database(prefix: &str) -> String {
    let db = format!("{prefix}_{}", free_udp_port());
    let schema = std::fs::read_to_string(format!(
        "{SYSTEM_RADDB}/mods-config/sql/main/postgresql/schema.sql"
    ))
    .unwrap();
    let cluster = super::pg::shared()
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    cluster.psql("postgres", &format!("CREATE DATABASE {db}"));
    cluster.psql(&db, &schema);
    db
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl FreeRadius {
    /// Starts FreeRADIUS with `files` (paths relative to raddb, e.g.
    /// `mods-enabled/sql_a`, `sites-enabled/x`, `clients.conf`,
    /// `proxy.conf`) written over the copy. The Class column of FreeRADIUS's
    /// queries is switched on, as its queries.conf says to when the schema
    /// has one (both schemas do).
    pub fn start(files: &[(&str, String)]) -> Self {
        assert!(
            Path::new("/usr/sbin/freeradius").exists(),
            "FreeRADIUS not found: install Debian's freeradius and freeradius-postgresql (./scripts/test installs them when run as root)"
        );
        let dir = tempfile::tempdir().unwrap();
        let raddb = dir.path().join("raddb");
        let status = Command::new("cp")
            .args(["-a", SYSTEM_RADDB])
            .arg(&raddb)
            .status()
            .unwrap();
        assert!(status.success(), "copying {SYSTEM_RADDB}");
        for sub in ["sites-enabled", "mods-enabled"] {
            for name in ["default", "inner-tunnel", "status", "eap", "control-socket"] {
                let _ = std::fs::remove_file(raddb.join(sub).join(name));
            }
        }
        // Run as whoever runs the tests, with state and logs in the temp dir.
        let conf = std::fs::read_to_string(raddb.join("radiusd.conf")).unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        let conf: String = conf
            .lines()
            .map(|l| {
                let t = l.trim_start();
                if t.starts_with("user =") || t.starts_with("group =") {
                    String::new()
                } else if t.starts_with("logdir =") {
                    format!("logdir = {}", run.display())
                } else if t.starts_with("run_dir =") {
                    format!("run_dir = {}", run.display())
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(raddb.join("radiusd.conf"), conf).unwrap();
        let queries = raddb.join("mods-config/sql/main/postgresql/queries.conf");
        let q = std::fs::read_to_string(&queries)
            .unwrap()
            .replace("column_name =\t# \", Class\"", "column_name = \", Class\"")
            .replace(
                "packet_xlat =\t# \", '%{Class}'\"",
                "packet_xlat = \", '%{Class}'\"",
            )
            .replace(
                "reply_xlat =\t# \", '%{reply:Class}'\"",
                "reply_xlat = \", '%{reply:Class}'\"",
            );
        std::fs::write(&queries, q).unwrap();
        for (name, text) in files {
            std::fs::write(raddb.join(name), text).unwrap();
        }
        let log = dir.path().join("freeradius.log");
        // FREERADIUS_TEST_DEBUG=1: FreeRADIUS's debug output (-X) in the log.
        let debug = std::env::var_os("FREERADIUS_TEST_DEBUG").is_some();
        let mut cmd = Command::new("/usr/sbin/freeradius");
        if debug {
            let out = std::fs::File::create(&log).unwrap();
            cmd.args(["-X", "-d"])
                .arg(&raddb)
                .stdout(out.try_clone().unwrap())
                .stderr(out);
        } else {
            cmd.args(["-f", "-d"])
                .arg(&raddb)
                .arg("-l")
                .arg(&log)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
        let child = cmd.spawn().unwrap();
        let mut fr = FreeRadius { child, dir, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if fr.log().contains("Ready to process requests") {
                break;
            }
            if let Ok(Some(status)) = fr.child.try_wait() {
                panic!("FreeRADIUS exited ({status}):\n{}", fr.log());
            }
            assert!(
                Instant::now() < deadline,
                "FreeRADIUS did not start:\n{}",
                fr.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        fr
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn raddb(&self) -> PathBuf {
        self.dir.path().join("raddb")
    }
}

impl Drop for FreeRadius {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address of a FreeRADIUS listener on 127.0.0.1.
pub fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
