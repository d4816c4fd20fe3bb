//! A harness that runs the real `shardius` binary: CLI commands against a
//! temporary database, and `serve` on free ports of 127.0.0.1.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardius::nas_client::{self as nas, AcctRecord, Credentials, Session};
use shardius::proto::{Code, Secret};

pub const SECRET: &str = "testing123";

/// Which store an installation uses; the store tests run on both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A temporary installation: config, key and a database (an SQLite file,
/// or a fresh database on the test binary's throwaway PostgreSQL cluster).
pub struct Install {
    pub dir: tempfile::TempDir,
    pub db_url: String,
}

impl Install {
    /// A fresh SQLite installation with a key, a NAS for 127.0.0.1, the
    /// 10M service and the subscriber alice/s3cret.
    pub fn new() -> Install {
        Install::new_on(Backend::Sqlite)
    }

    /// The same, on `backend`.
    pub fn new_on(backend: Backend) -> Install {
        let install = Install::empty_on(backend);
        install.provision();
        install
    }

    /// Adds a key, the MikroTik NAS BNG-1 for 127.0.0.1, the 10M service
    /// and alice/s3cret.
    pub fn provision(&self) {
        self.provision_nas("mikrotik", 1700);
        self.add_alice();
    }

    /// Adds the subscriber alice/s3cret on the 10M service.
    pub fn add_alice(&self) {
        self.add_user("alice");
    }

    /// Adds `user` with password s3cret on the 10M service.
    pub fn add_user(&self, user: &str) {
        self.add_subscriber(user, "10M");
    }

    /// Adds `user` with password s3cret on `service`.
    pub fn add_subscriber(&self, user: &str, service: &str) {
        self.ok(&[
            "subscriber",
            "add",
            "--username",
            user,
            "--password",
            "s3cret",
            "--service",
            service,
        ]);
    }

    /// Adds tier `level` of `period` ("daily"/"monthly") to `service`: from
    /// `threshold` bytes on, `download`/`upload`.
    pub fn add_tier(
        &self,
        service: &str,
        period: &str,
        level: &str,
        threshold: &str,
        download: &str,
        upload: &str,
    ) {
        self.ok(&[
            "service",
            "tier",
            "--service",
            service,
            "--period",
            period,
            "--level",
            level,
            "--threshold",
            threshold,
            "--download",
            download,
            "--upload",
            upload,
        ]);
    }

    /// Adds the service `name` with the given download and upload speeds.
    pub fn add_service(&self, name: &str, download: &str, upload: &str) {
        self.ok(&[
            "service",
            "add",
            "--name",
            name,
            "--download",
            download,
            "--upload",
            upload,
        ]);
    }

    /// A key and the NAS BNG-1 for 127.0.0.1 of `nas_type` taking CoA on
    /// `coa_port`.
    pub fn add_key_and_nas(&self, nas_type: &str, coa_port: u16) {
        self.ok(&["keygen", "--out", self.key().to_str().unwrap()]);
        self.ok(&[
            "nas",
            "add",
            "--name",
            "BNG-1",
            "--ip",
            "127.0.0.1",
            "--secret",
            SECRET,
            "--type",
            nas_type,
            "--coa-port",
            &coa_port.to_string(),
        ]);
    }

    /// `subscriber import` of user1..=count / pass1..=count on `service`.
    pub fn import_subscribers(&self, count: usize, service: &str) {
        let csv = self.path("subs.csv");
        let mut text = String::from("username,password,service\n");
        for n in 1..=count {
            text.push_str(&format!("user{n},pass{n},{service}\n"));
        }
        std::fs::write(&csv, text).unwrap();
        assert!(self
            .ok(&["subscriber", "import", csv.to_str().unwrap()])
            .contains(&format!("imported {count}")));
    }

    /// Every radacct row, open and closed, as `shardius sessions` reads them.
    pub fn sessions(&self) -> Vec<shardius::store::SessionRow> {
        let url = shardius::store::DatabaseUrl::parse(&self.db_url).unwrap();
        let mut store = shardius::store::open(&url).unwrap();
        store.sessions(None, true, 1_000_000).unwrap()
    }

    /// Runs SQL on the installation's database, the way a billing panel would.
    pub fn sql(&self, statement: &str) {
        if let Some(path) = self.db_url.strip_prefix("sqlite:") {
            rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(statement)
                .unwrap();
        } else {
            let db = self.db_url.rsplit('/').next().unwrap().to_owned();
            crate::common::pg::shared()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .psql(&db, statement);
        }
    }

    /// [`Install::add_key_and_nas`], and the 10M service with pool
    /// pppoe-pool (no subscribers).
    pub fn provision_nas(&self, nas_type: &str, coa_port: u16) {
        self.add_key_and_nas(nas_type, coa_port);
        self.ok(&[
            "service",
            "add",
            "--name",
            "10M",
            "--download",
            "10M",
            "--upload",
            "2M",
            "--pool",
            "pppoe-pool",
        ]);
    }

    /// Config and directory only.
    pub fn empty() -> Install {
        Install::empty_on(Backend::Sqlite)
    }

    pub fn empty_on(backend: Backend) -> Install {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("shardius.toml"),
            "[database]\nreload_interval_secs = 1\nopen_sessions_interval_secs = 1\n",
        )
        .unwrap();
        let db_url = match backend {
            Backend::Sqlite => format!("sqlite:{}", dir.path().join("shardius.db").display()),
            Backend::Postgres => super::pg::fresh_database(),
        };
        Install { dir, db_url }
    }

    /// An installation on an existing database URL.
    pub fn on_url(db_url: String) -> Install {
        let install = Install::empty();
        Install { db_url, ..install }
    }

    /// Replaces the config file.
    pub fn write_config(&self, toml: &str) {
        std::fs::write(self.dir.path().join("shardius.toml"), toml).unwrap();
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("shardius.key")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `shardius <args>` with this installation's config, database and key.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_on(&self.db_url, args)
    }

    /// `command`, on another URL of the same database (a relay, a replica).
    pub fn command_on(&self, db_url: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardius"));
        cmd.args(args)
            .arg("--config")
            .arg(self.dir.path().join("shardius.toml"))
            .arg("--database-url")
            .arg(db_url)
            .arg("--key-file")
            .arg(self.key())
            .current_dir(self.dir.path())
            .env_remove("SHARDIUS_CONFIG")
            .env("SHARDIUS_LOG_LEVEL", "info");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run shardius")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "shardius {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "shardius {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Starts `shardius serve` on free ports with `shards` shards.
    pub fn serve(&self, shards: usize) -> Server {
        self.serve_with(&["--shards", &shards.to_string()])
    }

    pub fn serve_with(&self, extra: &[&str]) -> Server {
        self.serve_with_env(extra, &[])
    }

    /// `serve_with`, with extra environment variables.
    pub fn serve_with_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Server {
        self.serve_at(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            extra,
            env,
        )
    }

    /// `serve` on the given auth and accounting addresses (the nodes of a
    /// cluster test: 127.0.0.2, .3, ... on the same ports).
    pub fn serve_at(
        &self,
        auth: SocketAddr,
        acct: SocketAddr,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        self.serve_at_on(&self.db_url, auth, acct, extra, env)
    }

    /// `serve_at`, on another URL of the same database.
    pub fn serve_at_on(
        &self,
        db_url: &str,
        auth: SocketAddr,
        acct: SocketAddr,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let (auth, acct) = (auth.to_string(), acct.to_string());
        let mut args = vec![
            "serve",
            "--listen-auth",
            &auth,
            "--listen-acct",
            &acct,
            "--listen-http",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut child = self
            .command_on(db_url, &args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shardius serve");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut server = Server {
            child,
            log,
            reader: Some(reader),
            auth: "0.0.0.0:0".parse().unwrap(),
            acct: "0.0.0.0:0".parse().unwrap(),
            http: "0.0.0.0:0".parse().unwrap(),
        };
        let line = server.wait_for_log("listening auth=", Duration::from_secs(20));
        let field = |name: &str| -> Option<SocketAddr> {
            let start = line.find(name)? + name.len();
            line[start..].split([' ', ',']).next()?.parse().ok()
        };
        server.auth = field("auth=").unwrap();
        server.acct = field("acct=").unwrap();
        // "http=off" with --no-http.
        server.http = field("http=").unwrap_or(server.http);
        server
    }
}

/// A running server; SIGTERM on drop.
pub struct Server {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    pub auth: SocketAddr,
    pub acct: SocketAddr,
    /// The HTTP listener: /metrics, /healthz, the admin API.
    pub http: SocketAddr,
}

impl Server {
    /// `GET path` on the HTTP listener: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_request(self.http, "GET", path, &[], "")
    }

    /// The value of one sample line of `/metrics`, e.g.
    /// `shardius_access_rejects_total{reason="bad_password"}`; 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "{body}");
        metric_value(&body, series)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a log line containing `needle`; returns the line.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "shardius exited ({status}) before logging {needle:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the crash the accounting guarantees are about.
    pub fn kill9(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.log()
    }

    /// SIGTERM, wait for exit; returns the exit status success and the whole log.
    pub fn stop(mut self) -> (bool, String) {
        let ok = self.terminate();
        (ok, self.log())
    }

    fn terminate(&mut self) -> bool {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        status.is_some_and(|s| s.success())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.reader.is_some() {
            self.terminate();
        }
    }
}

/// Sums a `key=value` field over the per-shard summary lines.
pub fn shard_counters(log: &str, key: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("shard=") && l.contains("auth_requests="))
        .map(|l| {
            let start = l.find(&format!(" {key}=")).unwrap() + key.len() + 2;
            l[start..].split(' ').next().unwrap().parse().unwrap()
        })
        .collect()
}

/// A simulated NAS on one UDP socket (one source port, like RouterOS).
pub struct TestNas {
    pub socket: UdpSocket,
    pub secret: Secret,
    next_id: u8,
}

impl TestNas {
    pub fn bind(ip: &str, secret: &str) -> TestNas {
        let socket = UdpSocket::bind(format!("{ip}:0")).expect("bind test NAS");
        socket
            .set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        TestNas {
            socket,
            secret: Secret::new(secret.as_bytes()),
            next_id: 0,
        }
    }

    pub fn set_timeout(&self, timeout: Duration) {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
    }

    /// Sends one Access-Request; returns the raw request and the raw reply, if any.
    pub fn exchange(
        &mut self,
        to: SocketAddr,
        user: &str,
        creds: &Credentials<'_>,
        session: &Session<'_>,
    ) -> (Vec<u8>, [u8; 16], Option<Vec<u8>>) {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let authenticator: [u8; 16] = rand::random();
        let mut buf = [0u8; 4096];
        let request = nas::access_request(
            &mut buf,
            id,
            &authenticator,
            &self.secret,
            user.as_bytes(),
            creds,
            session,
        )
        .unwrap()
        .to_vec();
        let reply = self.send_raw(to, &request);
        (request, authenticator, reply)
    }

    pub fn send_raw(&self, to: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
        self.socket.send_to(datagram, to).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    /// Logs in and returns the checked reply code (None: no answer).
    pub fn login(
        &mut self,
        to: SocketAddr,
        user: &str,
        creds: &Credentials<'_>,
        session: &Session<'_>,
    ) -> Option<Code> {
        let (request, auth, reply) = self.exchange(to, user, creds, session);
        let reply = reply?;
        let id = request[1];
        let checked =
            nas::check_access_reply(&reply, id, &auth, &self.secret, user.as_bytes(), creds)
                .unwrap_or_else(|e| panic!("{user}: invalid reply {e:?}"));
        Some(checked.code)
    }
}

/// MS-CHAPv2 credentials with fresh random challenges.
pub fn mschap(password: &[u8]) -> Credentials<'_> {
    Credentials::MsChapV2 {
        ident: 1,
        auth_challenge: rand::random(),
        peer_challenge: rand::random(),
        password,
    }
}

/// radclient from Debian's freeradius-utils, which scripts/test installs.
pub fn radclient(to: SocketAddr, kind: &str, attributes: &str) -> String {
    let mut child = Command::new("radclient")
        .args(["-x", "-r", "2", "-t", "2", &to.to_string(), kind, SECRET])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("radclient not found: install Debian's freeradius-utils (./scripts/test installs it when run as root)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(attributes.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// One HTTP/1.1 request over a fresh connection: (status, body). Written
/// by hand so the tests need no HTTP client crate.
pub fn http_request(
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(to).expect("connect to the HTTP listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of `series` (the whole name and label part) in a text exposition.
pub fn metric_value(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

/// One accounting event for a session: `each_way` octets in and out.
pub fn acct_record<'a>(
    status: u32,
    user: &'a str,
    session_id: &'a str,
    session_time: u32,
    each_way: u64,
    framed_ip: Option<std::net::Ipv4Addr>,
) -> nas::AcctRecord<'a> {
    nas::AcctRecord {
        session_time,
        input_octets: each_way,
        output_octets: each_way,
        framed_ip,
        ..acct_bytes(status, user.as_bytes(), session_id.as_bytes())
    }
}

/// An event of `status` with no counters, for any bytes of User-Name and
/// Acct-Session-Id.
pub fn acct_bytes<'a>(status: u32, user: &'a [u8], session_id: &'a [u8]) -> nas::AcctRecord<'a> {
    nas::AcctRecord {
        status,
        session_id,
        user_name: user,
        session_time: 0,
        input_octets: 0,
        output_octets: 0,
        framed_ip: None,
        terminate_cause: None,
        class: None,
    }
}

/// Sends one Accounting-Request from a fresh socket and waits for its
/// Accounting-Response (sent only once the event is durable).
pub fn send_accounting(to: SocketAddr, record: &nas::AcctRecord<'_>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let request = nas::accounting_request(
        &mut buf,
        rand::random(),
        &Secret::new(SECRET.as_bytes()),
        record,
        &Session::default(),
    )
    .unwrap()
    .to_vec();
    socket.send_to(&request, to).unwrap();
    let mut reply = [0u8; 4096];
    socket.recv(&mut reply).expect("Accounting-Response");
}

/// Sends Accounting-Requests, up to 200 in flight, from one socket;
/// returns the indexes whose Accounting-Response verified.
pub fn send_all(socket: &UdpSocket, to: SocketAddr, records: &[AcctRecord<'_>]) -> HashSet<usize> {
    send_all_as(socket, to, records, &Session::default())
}

/// [`send_all`] with the NAS's session details (its NAS-IP-Address, ...).
pub fn send_all_as(
    socket: &UdpSocket,
    to: SocketAddr,
    records: &[AcctRecord<'_>],
    session: &Session<'_>,
) -> HashSet<usize> {
    let secret = Secret::new(SECRET.as_bytes());
    socket
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut acked = HashSet::new();
    for (chunk_no, chunk) in records.chunks(200).enumerate() {
        let mut pending: HashMap<u8, (usize, [u8; 16])> = HashMap::new();
        for (i, r) in chunk.iter().enumerate() {
            let mut buf = [0u8; 4096];
            let id = i as u8;
            let bytes = nas::accounting_request(&mut buf, id, &secret, r, session).unwrap();
            pending.insert(id, (chunk_no * 200 + i, bytes[4..20].try_into().unwrap()));
            socket.send_to(bytes, to).unwrap();
        }
        let mut reply = [0u8; 4096];
        while !pending.is_empty() {
            let Ok(n) = socket.recv(&mut reply) else {
                break;
            };
            if let Some((index, auth)) = pending.remove(&reply[1]) {
                nas::check_accounting_reply(&reply[..n], reply[1], &auth, &secret)
                    .expect("a valid Accounting-Response");
                acked.insert(index);
            }
        }
    }
    acked
}
