//! loadgen: simulates PPPoE subscribers against any RADIUS server.
//!
//! This is the first cut: it sends `--count` Access-Requests from one
//! simulated BNG, one at a time, checks every reply (authenticators,
//! MS-CHAP2-Success, MPPE keys) and prints accepts, rejects and timeouts.
//! Scenarios, in-flight windows, accounting and hdrhistogram reports come
//! with the loadgen issue.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

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
    /// Authentication method.
    #[arg(long, value_enum, default_value_t = Method::Mschapv2)]
    auth: Method,
    /// Number of subscribers (user1..userN with passwords pass1..passN).
    #[arg(long, default_value_t = 10)]
    count: u32,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Method {
    Pap,
    Chap,
    Mschapv2,
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

/// Returns whether every reply verified.
fn run(args: &Args) -> std::io::Result<bool> {
    let server = SocketAddr::new(args.server, args.auth_port);
    let socket = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    socket.set_read_timeout(Some(Duration::from_millis(args.timeout_ms)))?;
    let secret = Secret::new(args.secret.as_bytes());
    let (mut accepts, mut rejects, mut timeouts, mut invalid) = (0u32, 0u32, 0u32, 0u32);
    let mut buf = [0u8; 4096];
    let mut reply = [0u8; 4096];
    for n in 1..=args.count {
        let user = format!("user{n}");
        let password = format!("pass{n}");
        let seed = n.to_be_bytes();
        let authenticator: [u8; 16] =
            std::array::from_fn(|i| seed[i % 4] ^ (i as u8).wrapping_mul(37));
        let creds = match args.auth {
            Method::Pap => Credentials::Pap {
                password: password.as_bytes(),
            },
            Method::Chap => Credentials::Chap {
                ident: n as u8,
                challenge: authenticator,
                password: password.as_bytes(),
            },
            Method::Mschapv2 => Credentials::MsChapV2 {
                ident: n as u8,
                auth_challenge: authenticator,
                peer_challenge: authenticator.map(|b| b ^ 0x5A),
                password: password.as_bytes(),
            },
        };
        let id = n as u8;
        let request = nas::access_request(
            &mut buf,
            id,
            &authenticator,
            &secret,
            user.as_bytes(),
            &creds,
            &Session::default(),
        )
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        socket.send_to(request, server)?;
        match socket.recv(&mut reply) {
            Ok(len) => match nas::check_access_reply(
                &reply[..len],
                id,
                &authenticator,
                &secret,
                user.as_bytes(),
                &creds,
            ) {
                Ok(r) if r.code == Code::ACCESS_ACCEPT => accepts += 1,
                Ok(_) => rejects += 1,
                Err(e) => {
                    invalid += 1;
                    eprintln!("{user}: invalid reply: {e:?}");
                }
            },
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                timeouts += 1
            }
            Err(e) => return Err(e),
        }
    }
    println!("accepts={accepts} rejects={rejects} timeouts={timeouts} invalid={invalid}");
    Ok(invalid == 0)
}
