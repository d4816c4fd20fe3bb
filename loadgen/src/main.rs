//! loadgen: simulates PPPoE subscribers against any RADIUS server.
//!
//! This cut sends Access-Requests from one simulated BNG (one UDP socket,
//! like RouterOS) for subscribers user1..userN, keeping up to `--inflight`
//! requests outstanding, and checks every reply: identifier, Response
//! Authenticator, Message-Authenticator, MS-CHAP2-Success and MPPE keys.
//! Scenarios, accounting and hdrhistogram reports come with the loadgen issue.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use shardius::nas::{self, Credentials, Session};
use shardius::proto::{Code, Secret};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Simulates PPPoE subscribers against a RADIUS server and verifies every reply"
)]
struct Args {
    /// RADIUS server address.
    #[arg(long, default_value = "127.0.0.1")]
    server: std::net::IpAddr,
    /// Authentication port.
    #[arg(long, default_value_t = 1812)]
    auth_port: u16,
    /// Shared secret.
    #[arg(long, default_value = "testing123")]
    secret: String,
    /// What to send: logins to --auth-port, or Interim-Updates to --acct-port.
    #[arg(long, value_enum, default_value_t = Scenario::Auth)]
    scenario: Scenario,
    /// Accounting port.
    #[arg(long, default_value_t = 1813)]
    acct_port: u16,
    /// Authentication method.
    #[arg(long, value_enum, default_value_t = Method::Mschapv2)]
    auth: Method,
    /// Number of subscribers (user1..userN with passwords pass1..passN).
    #[arg(long, default_value_t = 10)]
    count: u32,
    /// Total logins to send, cycling through the subscribers [default: --count].
    #[arg(long)]
    requests: Option<u64>,
    /// Requests kept outstanding (1..=256: one identifier space).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    inflight: u16,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Access-Requests (PAP, CHAP or MS-CHAPv2), every reply verified.
    Auth,
    /// Accounting Interim-Updates with rising counters for --count
    /// sessions, every Accounting-Response verified (sent by the server
    /// only once the update is durable).
    AcctInterim,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Method {
    Pap,
    Chap,
    Mschapv2,
}

/// One outstanding request.
struct Pending {
    user: String,
    password: String,
    authenticator: [u8; 16],
    sent: Instant,
}

impl Pending {
    fn credentials(&self, method: Method) -> Credentials<'_> {
        let a = self.authenticator;
        match method {
            Method::Pap => Credentials::Pap {
                password: self.password.as_bytes(),
            },
            Method::Chap => Credentials::Chap {
                ident: a[0],
                challenge: a,
                password: self.password.as_bytes(),
            },
            Method::Mschapv2 => Credentials::MsChapV2 {
                ident: a[0],
                auth_challenge: a,
                peer_challenge: a.map(|b| b ^ 0x5A),
                password: self.password.as_bytes(),
            },
        }
    }
}

#[derive(Default)]
struct Tally {
    accepts: u64,
    rejects: u64,
    timeouts: u64,
    invalid: u64,
    latencies_us: Vec<u32>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

/// Returns whether every reply verified and none timed out.
fn run(args: &Args) -> std::io::Result<bool> {
    let port = match args.scenario {
        Scenario::Auth => args.auth_port,
        Scenario::AcctInterim => args.acct_port,
    };
    let server = SocketAddr::new(args.server, port);
    let socket = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    let timeout = Duration::from_millis(args.timeout_ms);
    socket.set_read_timeout(Some(Duration::from_millis(50).min(timeout)))?;
    let secret = Secret::new(args.secret.as_bytes());
    let total = args.requests.unwrap_or(u64::from(args.count));
    let mut pending: Vec<Option<Pending>> = (0..256).map(|_| None).collect();
    let mut next_id: u8 = 0;
    let mut sent = 0u64;
    let mut done = 0u64;
    let mut tally = Tally::default();
    let mut buf = [0u8; 4096];
    let mut reply = [0u8; 4096];
    let started = Instant::now();

    while done < total {
        // Fill the window.
        while sent < total
            && pending.iter().filter(|p| p.is_some()).count() < usize::from(args.inflight)
        {
            while pending[usize::from(next_id)].is_some() {
                next_id = next_id.wrapping_add(1);
            }
            let id = next_id;
            next_id = next_id.wrapping_add(1);
            let n = sent % u64::from(args.count.max(1)) + 1;
            let mut p = Pending {
                user: format!("user{n}"),
                password: format!("pass{n}"),
                authenticator: rand::random(),
                sent: Instant::now(),
            };
            let request = match args.scenario {
                Scenario::Auth => nas::access_request(
                    &mut buf,
                    id,
                    &p.authenticator,
                    &secret,
                    p.user.as_bytes(),
                    &p.credentials(args.auth),
                    &Session::default(),
                ),
                Scenario::AcctInterim => {
                    let round = sent / u64::from(args.count.max(1));
                    let session_id = format!("{n:08x}");
                    let record = nas::AcctRecord {
                        status: shardius::proto::dict::acct_status::INTERIM_UPDATE,
                        session_id: session_id.as_bytes(),
                        user_name: p.user.as_bytes(),
                        session_time: (round * 30) as u32,
                        input_octets: round * 150_000_000,
                        output_octets: round * 900_000_000,
                        framed_ip: None,
                        terminate_cause: None,
                        class: None,
                    };
                    nas::accounting_request(&mut buf, id, &secret, &record, &Session::default())
                }
            }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
            if args.scenario == Scenario::AcctInterim {
                p.authenticator = request[4..20].try_into().expect("header");
            }
            socket.send_to(request, server)?;
            pending[usize::from(id)] = Some(p);
            sent += 1;
        }
        match socket.recv(&mut reply) {
            Ok(len) if len >= 20 => {
                let id = reply[1];
                let Some(p) = pending[usize::from(id)].take() else {
                    continue; // a late reply to a request already timed out
                };
                done += 1;
                let micros = p.sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                let checked = match args.scenario {
                    Scenario::Auth => nas::check_access_reply(
                        &reply[..len],
                        id,
                        &p.authenticator,
                        &secret,
                        p.user.as_bytes(),
                        &p.credentials(args.auth),
                    )
                    .map(|r| r.code == Code::ACCESS_ACCEPT),
                    Scenario::AcctInterim => {
                        nas::check_accounting_reply(&reply[..len], id, &p.authenticator, &secret)
                            .map(|()| true)
                    }
                };
                match checked {
                    Ok(true) => tally.accepts += 1,
                    Ok(false) => tally.rejects += 1,
                    Err(e) => {
                        tally.invalid += 1;
                        eprintln!("{}: invalid reply: {e:?}", p.user);
                    }
                }
                tally.latencies_us.push(micros);
            }
            Ok(_) => tally.invalid += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
        for slot in pending.iter_mut() {
            if slot.as_ref().is_some_and(|p| p.sent.elapsed() >= timeout) {
                *slot = None;
                tally.timeouts += 1;
                done += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    tally.latencies_us.sort_unstable();
    let pct = |q: f64| -> u32 {
        let v = &tally.latencies_us;
        if v.is_empty() {
            0
        } else {
            v[((v.len() - 1) as f64 * q) as usize]
        }
    };
    println!(
        "requests={total} accepts={} rejects={} timeouts={} invalid={} elapsed_ms={} rate={:.0}/s p50_us={} p99_us={} max_us={}",
        tally.accepts,
        tally.rejects,
        tally.timeouts,
        tally.invalid,
        elapsed.as_millis(),
        total as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        tally.latencies_us.last().copied().unwrap_or(0)
    );
    Ok(tally.invalid == 0 && tally.timeouts == 0)
}
