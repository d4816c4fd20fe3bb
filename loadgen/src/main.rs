//! loadgen: simulates thousands of PPPoE subscribers against any RADIUS
//! server (shardius, FreeRADIUS, ...), verifies every reply, and reports
//! throughput and HdrHistogram latency per packet type.

mod flood;
mod plot;
mod report;
mod run;
mod sim;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shardius::proto::Secret;

use run::{Method, Plan, Scenario};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Simulates PPPoE subscribers against a RADIUS server: logins (PAP, CHAP, MS-CHAPv2) and accounting Start/Interim/Stop, every reply verified",
    after_help = "Exit status: 0 if every reply verified, 1 if any reply was invalid, 2 on a usage or socket error.\n\
                  Examples:\n  loadgen --scenario storm --subscribers 30000\n  \
                  loadgen --scenario max --auth pap --requests 300000 --inflight 64\n  \
                  loadgen --scenario steady --subscribers 30000 --interim 30 --compression 10 --duration 60"
)]
struct Args {
    /// RADIUS server address.
    #[arg(long, default_value = "127.0.0.1")]
    server: std::net::IpAddr,
    #[arg(long, default_value_t = 1812)]
    auth_port: u16,
    #[arg(long, default_value_t = 1813)]
    acct_port: u16,
    #[arg(long, default_value = "testing123")]
    secret: String,
    #[arg(long, value_enum, default_value_t = Scenario::Storm)]
    scenario: Scenario,
    /// Authentication method.
    #[arg(long, value_enum, default_value_t = Method::Mschapv2)]
    auth: Method,
    /// Simulated subscribers.
    #[arg(long, visible_alias = "count", default_value_t = 1000)]
    subscribers: usize,
    /// User-Name pattern; {n} is the subscriber number from 1.
    #[arg(long, default_value = "user{n}")]
    user_pattern: String,
    /// Password pattern.
    #[arg(long, default_value = "pass{n}")]
    pass_pattern: String,
    /// Requests kept in flight (over ceil(K/256) sockets, 256 identifiers each).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    inflight: u32,
    /// max/max-acct: stop after this many requests (else after --duration).
    #[arg(long)]
    requests: Option<u64>,
    /// How long steady, churn and unbounded max runs last, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Acct-Interim-Interval the simulated BNG uses, in seconds.
    #[arg(long, default_value_t = 30.0)]
    interim: f64,
    /// Time compression: --interim 30 --compression 10 sends interims every 3 s.
    #[arg(long, default_value_t = 1.0)]
    compression: f64,
    /// churn: sessions ended and started again per second.
    #[arg(long, default_value_t = 10.0)]
    churn_rate: f64,
    /// Per-request timeout before a retransmission (same identifier and authenticator).
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    /// max/max-acct: send at this many requests per second (open loop,
    /// for latency at a fixed load) instead of as fast as replies come back.
    #[arg(long)]
    rate: Option<f64>,
    /// Instead of generating load, answer every Access-Request on this UDP
    /// port of --server with a correctly signed, empty Access-Accept and
    /// nothing else: the do-nothing floor to compare servers' latency with.
    #[arg(long, value_name = "PORT")]
    respond_on: Option<u16>,
    /// Instead of generating load, flood --server:--auth-port with
    /// Access-Requests from this many distinct spoofed source addresses
    /// (127.1.0.0 and up) through a raw socket for --duration seconds, as
    /// fast as one thread can (needs root): the unknown-NAS attack.
    #[arg(long, value_name = "SOURCES")]
    spoof_flood: Option<u32>,
    /// Retransmissions before giving up (counted as a timeout).
    #[arg(long, default_value_t = 2)]
    retries: u8,
    /// Simulate only these subscriber numbers ({n}), one per line, instead
    /// of 1..=--subscribers.
    #[arg(long, value_name = "FILE")]
    numbers: Option<PathBuf>,
    /// storm: end each session (Accounting Stop) as soon as its Start is
    /// acknowledged.
    #[arg(long)]
    stop_after_start: bool,
    /// Write each subscriber's login: n, user, accept|reject|timeout, the
    /// Framed-IP-Address given ('-' if none), Acct-Session-Id, NAS-Port-Id
    /// (tab-separated, one line each; line k used NAS-Port k-1).
    #[arg(long, value_name = "FILE")]
    addresses: Option<PathBuf>,
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write HdrHistogram percentile distributions (.hgrm).
    #[arg(long)]
    hgrm: Option<PathBuf>,
    /// Write the latency percentile curve as SVG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
    /// Accept Access-Accept/Reject without Message-Authenticator (servers
    /// from before the BlastRADIUS fixes); one that is present is still verified.
    #[arg(long)]
    allow_missing_message_authenticator: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(port) = args.respond_on {
        return match respond(
            SocketAddr::new(args.server, port),
            &Secret::new(args.secret.as_bytes()),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadgen: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(sources) = args.spoof_flood {
        let std::net::IpAddr::V4(server) = args.server else {
            eprintln!("loadgen: --spoof-flood needs an IPv4 --server");
            return ExitCode::from(2);
        };
        let to = std::net::SocketAddrV4::new(server, args.auth_port);
        return match flood::run(to, sources.max(1), Duration::from_secs_f64(args.duration)) {
            Ok(sent) => {
                println!(
                    "spoofed flood: {} packets from {sources} sources in {:.2} s ({:.0}/s), {} send errors",
                    sent.packets,
                    sent.elapsed.as_secs_f64(),
                    sent.packets as f64 / sent.elapsed.as_secs_f64(),
                    sent.errors
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("loadgen: {e}");
                ExitCode::from(2)
            }
        };
    }
    if args.subscribers == 0
        || args.interim <= 0.0
        || args.compression <= 0.0
        || args.duration < 0.0
    {
        eprintln!("loadgen: --subscribers, --interim and --compression must be positive");
        return ExitCode::from(2);
    }
    let numbers = match &args.numbers {
        None => Vec::new(),
        Some(path) => match read_numbers(path) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("loadgen: --numbers {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let plan = Plan {
        auth: SocketAddr::new(args.server, args.auth_port),
        acct: SocketAddr::new(args.server, args.acct_port),
        secret: Secret::new(args.secret.as_bytes()),
        method: args.auth,
        scenario: args.scenario,
        subscribers: args.subscribers,
        user_pattern: args.user_pattern.clone(),
        pass_pattern: args.pass_pattern.clone(),
        inflight: args.inflight as usize,
        requests: args.requests,
        duration: Duration::from_secs_f64(args.duration),
        interim: Duration::from_secs_f64(args.interim / args.compression),
        churn_per_sec: args.churn_rate,
        timeout: Duration::from_millis(args.timeout_ms),
        retries: args.retries,
        rate: args.rate,
        progress: !args.quiet,
        require_message_authenticator: !args.allow_missing_message_authenticator,
        numbers,
        stop_after_start: args.stop_after_start,
        salt: rand::random(),
    };
    let (report, logins) = match run::run_logins(&plan) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.text());
    let title = format!(
        "{:?} {:?} against {}",
        args.scenario, args.auth, args.server
    );
    let addresses = args.addresses.as_ref().map(|_| {
        logins
            .iter()
            .map(|l| {
                format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\n",
                    l.n,
                    l.user,
                    if l.result.is_empty() { "-" } else { l.result },
                    l.framed_ip.map_or("-".to_string(), |ip| ip.to_string()),
                    if l.session_id.is_empty() {
                        "-"
                    } else {
                        &l.session_id
                    },
                    l.port_id
                )
            })
            .collect::<String>()
    });
    let written = [
        (&args.json, report.json()),
        (&args.hgrm, report.hgrm()),
        (&args.addresses, addresses.unwrap_or_default()),
    ]
    .into_iter()
    .filter_map(|(path, text)| {
        path.as_ref()
            .map(|p| (p, std::fs::write(p, text).map_err(|e| e.to_string())))
    })
    .chain(
        args.plot
            .as_ref()
            .map(|p| (p, plot::write_svg(&report, p, &title))),
    );
    for (path, result) in written {
        if let Err(e) = result {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.invalid() > 0 {
        eprintln!("loadgen: {} invalid replies", report.invalid());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Subscriber numbers, one per line (blank lines skipped).
fn read_numbers(path: &std::path::Path) -> Result<Vec<usize>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let numbers = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            l.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    format!(
                        "line {}: not a subscriber number: {:?}",
                        i + 1,
                        crate::printable(l)
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if numbers.is_empty() {
        return Err("no subscriber numbers".into());
    }
    Ok(numbers)
}

fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    shardius::text::printable(s)
}

/// The trivial responder: a signed Access-Accept with a Message-Authenticator
/// for every Access-Request, no lookup, no credential check. Runs until killed.
fn respond(on: SocketAddr, secret: &Secret) -> std::io::Result<()> {
    use shardius::proto::{Code, Packet, PacketWriter};
    let socket = std::net::UdpSocket::bind(on)?;
    eprintln!("responding on {}", socket.local_addr()?);
    let mut buf = [0u8; 4096];
    let mut out = [0u8; 4096];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        let Ok(p) = Packet::parse(&buf[..n]) else {
            continue;
        };
        let mut w = PacketWriter::new(
            &mut out,
            Code::ACCESS_ACCEPT,
            p.identifier(),
            p.authenticator(),
        );
        if w.message_authenticator().is_err() {
            continue;
        }
        let reply = w.finish_response(p.authenticator(), secret);
        let _ = socket.send_to(reply, from);
    }
}
