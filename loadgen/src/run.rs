//! The load loop: subscribers living the PPPoE life over several UDP
//! sockets (each with its own 256 identifiers), paced by the scenario.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use shardius::nas_client::{self as nas, AcctRecord, Session};
use shardius::proto::dict::acct_status;
use shardius::proto::Secret;
use shardius::server::udp_batch::{RecvBatch, SendBatch};

use crate::report::Report;
use crate::sim::{InFlight, Kind, Outcome, SentCredentials, Socket};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Closed loop: logins as fast as the server answers, --inflight at a time.
    Max,
    /// Closed loop: Interim-Updates as fast as the server acknowledges them
    /// (each acknowledged only once durable), --inflight at a time.
    MaxAcct,
    /// Every subscriber logs in and starts accounting at once (a BNG reboot).
    Storm,
    /// Everyone logs in, then sends Interim-Updates every --interim seconds
    /// (divided by --compression) for --duration, then stops.
    Steady,
    /// Steady, plus --churn-rate sessions per second ending and starting again.
    Churn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    Pap,
    Chap,
    Mschapv2,
}

pub struct Plan {
    pub auth: SocketAddr,
    pub acct: SocketAddr,
    pub secret: Secret,
    pub method: Method,
    pub scenario: Scenario,
    pub subscribers: usize,
    pub user_pattern: String,
    pub pass_pattern: String,
    pub inflight: usize,
    pub requests: Option<u64>,
    pub duration: Duration,
    pub interim: Duration,
    pub churn_per_sec: f64,
    pub timeout: Duration,
    pub retries: u8,
    /// max/max-acct: send at this many requests per second (open loop)
    /// instead of as fast as replies come back.
    pub rate: Option<f64>,
    pub progress: bool,
    /// Access-Accept/Reject must carry a Message-Authenticator.
    pub require_message_authenticator: bool,
    /// The subscriber numbers ({n}) to simulate; empty: 1..=subscribers.
    pub numbers: Vec<usize>,
    /// storm: send each session's Stop right after its Start is acknowledged.
    pub stop_after_start: bool,
    /// Mixed into every Acct-Session-Id of the run.
    pub salt: u32,
}

/// One simulated subscriber's login, for `--addresses`.
pub struct Login {
    pub n: usize,
    pub user: String,
    /// accept, reject, timeout or invalid.
    pub result: &'static str,
    pub framed_ip: Option<std::net::Ipv4Addr>,
    pub session_id: String,
    pub port_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Busy,
    Online,
    Done,
}

struct Sub {
    n: usize,
    user: String,
    /// The Access-Accept's Framed-IP-Address, reported in accounting.
    framed_ip: Option<std::net::Ipv4Addr>,
    accepted: bool,
    /// accept, reject, timeout or invalid ("" before any answer).
    auth_result: &'static str,
    /// The Acct-Session-Id of the last Start.
    last_session_id: String,
    password: String,
    mac: String,
    port_id: String,
    phase: Phase,
    session: u32,
    started: Option<Instant>,
    next_interim: Instant,
    octets: u64,
}

#[derive(Clone, Copy, Debug)]
struct Job {
    kind: Kind,
    sub: usize,
}

fn expand(pattern: &str, n: usize) -> String {
    pattern.replace("{n}", &n.to_string())
}

/// Runs `plan`; also returns each subscriber's login as it last was.
pub fn run_logins(plan: &Plan) -> std::io::Result<(Report, Vec<Login>)> {
    let socket_count = plan.inflight.div_ceil(256).max(1);
    let mut sockets: Vec<(UdpSocket, Socket)> = Vec::with_capacity(socket_count);
    for _ in 0..socket_count {
        let s = UdpSocket::bind(if plan.auth.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        })?;
        s.set_nonblocking(true)?;
        // Replies arrive in bursts; a stock receive buffer drops them (each
        // datagram costs ~1 KiB of buffer). The kernel caps this at rmem_max.
        set_recv_buffer(&s, 8 << 20);
        sockets.push((s, Socket::default()));
    }
    let now = Instant::now();
    let numbers: Vec<usize> = if plan.numbers.is_empty() {
        (1..=plan.subscribers).collect()
    } else {
        plan.numbers.clone()
    };
    let mut subs: Vec<Sub> = numbers
        .into_iter()
        .map(|n| Sub {
            n,
            framed_ip: None,
            accepted: false,
            auth_result: "",
            last_session_id: String::new(),
            user: expand(&plan.user_pattern, n),
            password: expand(&plan.pass_pattern, n),
            mac: format!(
                "02:00:{:02X}:{:02X}:{:02X}:{:02X}",
                (n >> 24) & 255,
                (n >> 16) & 255,
                (n >> 8) & 255,
                n & 255
            ),
            port_id: format!("pppoe-{n}"),
            phase: Phase::Idle,
            session: 0,
            started: None,
            next_interim: now,
            octets: 0,
        })
        .collect();
    let mut queue: VecDeque<Job> = VecDeque::new();
    if !matches!(plan.scenario, Scenario::Max | Scenario::MaxAcct) {
        queue.extend((0..subs.len()).map(|sub| Job {
            kind: Kind::Auth,
            sub,
        }));
    }
    let mut report = Report::default();
    let started = Instant::now();
    let mut max_sent = 0u64;
    let mut max_next = 0usize;
    let mut churn_credit = 0f64;
    let mut last_tick = started;
    let mut last_progress = started;
    let mut buf = [0u8; 4096];
    // One sendmmsg(2) per socket per pass and one recvmmsg(2) per batch of
    // replies: at 200,000 requests/s a syscall per datagram made the load
    // generator, not the server, the limit.
    let mut outgoing: Vec<SendBatch> = sockets.iter().map(|_| SendBatch::new()).collect();
    let mut incoming = RecvBatch::new();
    let mut online = 0usize;
    let mut all_started = false;
    let mut received_any = false;
    let mut last_expire = started;

    loop {
        let now = Instant::now();
        let in_flight: usize = sockets.iter().map(|(_, s)| s.in_flight()).sum();
        let stopping = now.duration_since(started) >= plan.duration;
        // Decide whether we are done.
        match plan.scenario {
            Scenario::Max | Scenario::MaxAcct => {
                let kind = if plan.scenario == Scenario::Max {
                    Kind::Auth
                } else {
                    Kind::AcctInterim
                };
                let limit_hit = plan.requests.is_some_and(|r| max_sent >= r)
                    || (plan.requests.is_none() && stopping);
                if limit_hit && in_flight == 0 {
                    break;
                }
                // At a fixed rate, only what is due by now may be queued.
                let due = plan.rate.map_or(u64::MAX, |r| {
                    (now.duration_since(started).as_secs_f64() * r) as u64 + 1
                });
                while !limit_hit
                    && in_flight + queue.len() < plan.inflight
                    && max_sent + (queue.len() as u64) < due
                    && plan
                        .requests
                        .is_none_or(|r| max_sent + (queue.len() as u64) < r)
                {
                    queue.push_back(Job {
                        kind,
                        sub: max_next,
                    });
                    max_next = (max_next + 1) % subs.len();
                }
            }
            Scenario::Storm => {
                if queue.is_empty() && in_flight == 0 {
                    break;
                }
            }
            Scenario::Steady | Scenario::Churn => {
                if stopping {
                    for (i, s) in subs.iter_mut().enumerate() {
                        if s.phase == Phase::Online {
                            s.phase = Phase::Busy;
                            queue.push_back(Job {
                                kind: Kind::AcctStop,
                                sub: i,
                            });
                        }
                    }
                    if queue.is_empty() && in_flight == 0 {
                        break;
                    }
                } else {
                    for (i, s) in subs.iter_mut().enumerate() {
                        if s.phase == Phase::Online && now >= s.next_interim {
                            s.phase = Phase::Busy;
                            s.next_interim = now + plan.interim;
                            queue.push_back(Job {
                                kind: Kind::AcctInterim,
                                sub: i,
                            });
                        }
                    }
                    if plan.scenario == Scenario::Churn {
                        churn_credit +=
                            now.duration_since(last_tick).as_secs_f64() * plan.churn_per_sec;
                        while churn_credit >= 1.0 {
                            churn_credit -= 1.0;
                            let pick = rand::random::<usize>() % subs.len();
                            if subs[pick].phase == Phase::Online {
                                subs[pick].phase = Phase::Busy;
                                queue.push_back(Job {
                                    kind: Kind::AcctStop,
                                    sub: pick,
                                });
                            }
                        }
                    }
                }
            }
        }
        last_tick = now;

        // Send what fits.
        'send: while let Some(job) = queue.front().copied() {
            let in_flight: usize = sockets.iter().map(|(_, s)| s.in_flight()).sum();
            if in_flight >= plan.inflight {
                break;
            }
            for ((udp, sock), out) in sockets.iter_mut().zip(outgoing.iter_mut()) {
                let Some(id) = sock.free_id() else { continue };
                queue.pop_front();
                let request = build(plan, &mut subs[job.sub], job, id, &mut buf, now);
                let to = if job.kind == Kind::Auth {
                    plan.auth
                } else {
                    plan.acct
                };
                if out.is_full() {
                    send_batch(udp, out);
                }
                out.push_copy(&request.bytes, to);
                report.kind(job.kind).sent += 1;
                max_sent += 1;
                sock.sent(request);
                continue 'send;
            }
            break;
        }
        for ((udp, _), out) in sockets.iter().zip(outgoing.iter_mut()) {
            send_batch(udp, out);
        }

        // Receive. Poll only when the last pass found nothing: under load
        // the sockets always have data and the syscall is pure overhead.
        if !received_any {
            wait_readable(&sockets, Duration::from_millis(1));
        }
        received_any = false;
        for (udp, sock) in sockets.iter_mut() {
            loop {
                let received = incoming.recv(udp.as_fd()).unwrap_or(0);
                if received == 0 {
                    break;
                }
                received_any = true;
                for i in 0..received {
                    let Some((reply, _)) = incoming.get(i) else {
                        continue;
                    };
                    let Some((request, outcome)) =
                        sock.received(reply, &plan.secret, plan.require_message_authenticator)
                    else {
                        continue;
                    };
                    let latency = request.first_sent.elapsed();
                    report.record(request.kind, &outcome, latency);
                    advance(
                        plan,
                        stopping,
                        &mut subs,
                        &request,
                        &outcome,
                        &mut queue,
                        &mut online,
                    );
                }
            }
        }

        // Retransmit or give up, checked once a millisecond.
        let now = Instant::now();
        if now.duration_since(last_expire) >= Duration::from_millis(1) {
            last_expire = now;
            for (udp, sock) in sockets.iter_mut() {
                let (resend, gave_up) = sock.expire(now, plan.timeout, plan.retries);
                for (kind, bytes) in resend {
                    let to = if kind == Kind::Auth {
                        plan.auth
                    } else {
                        plan.acct
                    };
                    let _ = udp.send_to(&bytes, to);
                    report.kind(kind).retransmits += 1;
                }
                for request in gave_up {
                    report.record(request.kind, &Outcome::TimedOut, Duration::ZERO);
                    advance(
                        plan,
                        stopping,
                        &mut subs,
                        &request,
                        &Outcome::TimedOut,
                        &mut queue,
                        &mut online,
                    );
                }
            }
        }

        if plan.scenario == Scenario::Storm
            && report.all_authenticated_after.is_none()
            && report
                .kinds
                .get(&Kind::Auth)
                .is_some_and(|k| (k.latency_us.len() + k.timeouts) as usize >= subs.len())
        {
            report.all_authenticated_after = Some(started.elapsed());
        }
        if plan.scenario == Scenario::Storm
            && !all_started
            && subs
                .iter()
                .all(|s| s.phase != Phase::Idle && s.phase != Phase::Busy)
        {
            all_started = true;
            report.all_started_after = Some(started.elapsed());
        }
        if plan.progress && now.duration_since(last_progress) >= Duration::from_secs(1) {
            last_progress = now;
            let done: u64 = report
                .kinds
                .values()
                .map(|k| k.latency_us.len() + k.timeouts)
                .sum();
            eprintln!(
                "[{:>5.1}s] done {done}, in flight {}, queued {}, online {online}, invalid {}, timeouts {}",
                started.elapsed().as_secs_f64(),
                sockets.iter().map(|(_, s)| s.in_flight()).sum::<usize>(),
                queue.len(),
                report.invalid(),
                report.timeouts()
            );
        }
    }
    report.elapsed = started.elapsed();
    let logins = subs
        .iter()
        .map(|s| Login {
            n: s.n,
            user: s.user.clone(),
            result: s.auth_result,
            framed_ip: s.framed_ip,
            session_id: s.last_session_id.clone(),
            port_id: s.port_id.clone(),
        })
        .collect();
    Ok((report, logins))
}

/// The Acct-Session-Id of subscriber index `i`'s `session`-th session:
/// distinct within a run, and from run to run (`salt`), as a BNG's are
/// (a session id used again would name a finished session).
fn session_id(salt: u32, i: usize, session: u32) -> String {
    format!(
        "{:08x}",
        (i as u32).wrapping_mul(2654435761) ^ (session << 24) ^ salt
    )
}

/// Moves a subscriber along its life after a reply (or a give-up).
fn advance(
    plan: &Plan,
    ending: bool,
    subs: &mut [Sub],
    request: &InFlight,
    outcome: &Outcome,
    queue: &mut VecDeque<Job>,
    online: &mut usize,
) {
    if matches!(plan.scenario, Scenario::Max | Scenario::MaxAcct) {
        subs[request.subscriber].phase = Phase::Idle;
        return;
    }
    let sub = &mut subs[request.subscriber];
    let i = request.subscriber;
    match (request.kind, outcome) {
        (Kind::Auth, Outcome::Accept(ip)) => {
            sub.accepted = true;
            sub.auth_result = "accept";
            sub.framed_ip = *ip;
            queue.push_back(Job {
                kind: Kind::AcctStart,
                sub: i,
            })
        }
        (Kind::Auth, other) => {
            sub.accepted = false;
            sub.auth_result = match other {
                Outcome::Reject => "reject",
                Outcome::TimedOut => "timeout",
                _ => "invalid",
            };
            sub.phase = Phase::Done
        }
        (Kind::AcctStart, Outcome::Acknowledged) if plan.stop_after_start => {
            sub.phase = Phase::Busy;
            queue.push_back(Job {
                kind: Kind::AcctStop,
                sub: i,
            });
        }
        (Kind::AcctStart, Outcome::Acknowledged) => {
            sub.phase = if plan.scenario == Scenario::Storm {
                Phase::Done
            } else {
                Phase::Online
            };
            sub.next_interim = Instant::now() + plan.interim.mul_f64(rand::random::<f64>());
            *online += 1;
        }
        (Kind::AcctInterim, Outcome::Acknowledged) => sub.phase = Phase::Online,
        (Kind::AcctStop, _) => {
            *online = online.saturating_sub(1);
            sub.session += 1;
            sub.octets = 0;
            sub.started = None;
            if plan.scenario == Scenario::Churn && !ending {
                sub.phase = Phase::Busy;
                queue.push_back(Job {
                    kind: Kind::Auth,
                    sub: i,
                });
            } else {
                sub.phase = Phase::Done;
            }
        }
        _ => sub.phase = Phase::Done,
    }
}

fn build(
    plan: &Plan,
    sub: &mut Sub,
    job: Job,
    id: u8,
    buf: &mut [u8; 4096],
    now: Instant,
) -> InFlight {
    let session = Session {
        nas_ip: std::net::Ipv4Addr::LOCALHOST,
        nas_identifier: b"loadgen",
        nas_port: job.sub as u32,
        nas_port_id: sub.port_id.as_bytes(),
        calling_station_id: sub.mac.as_bytes(),
        called_station_id: b"pppoe-service",
    };
    sub.phase = Phase::Busy;
    let (bytes, credentials) = if job.kind == Kind::Auth {
        let challenge: [u8; 16] = rand::random();
        let creds = match plan.method {
            Method::Pap => SentCredentials::Pap(sub.password.clone()),
            Method::Chap => SentCredentials::Chap {
                ident: id,
                challenge,
                password: sub.password.clone(),
            },
            Method::Mschapv2 => SentCredentials::MsChapV2 {
                ident: id,
                auth_challenge: challenge,
                peer_challenge: rand::random(),
                password: sub.password.clone(),
            },
        };
        let authenticator: [u8; 16] = rand::random();
        let bytes = nas::access_request(
            buf,
            id,
            &authenticator,
            &plan.secret,
            sub.user.as_bytes(),
            &creds.as_credentials(),
            &session,
        )
        .expect("requests fit in 4096 bytes")
        .to_vec();
        (bytes, Some(creds))
    } else {
        let status = match job.kind {
            Kind::AcctStart => acct_status::START,
            Kind::AcctInterim => acct_status::INTERIM_UPDATE,
            _ => acct_status::STOP,
        };
        let started = *sub.started.get_or_insert(now);
        if job.kind == Kind::AcctInterim {
            // ~700 MB per interim: a session crosses 4 GiB after 7 interims.
            sub.octets += 700_000_000 + rand::random::<u32>() as u64 % 1_000_000;
        }
        let session_id = session_id(plan.salt, job.sub, sub.session);
        if job.kind == Kind::AcctStart {
            sub.last_session_id = session_id.clone();
        }
        let record = AcctRecord {
            status,
            session_id: session_id.as_bytes(),
            user_name: sub.user.as_bytes(),
            session_time: now.duration_since(started).as_secs() as u32,
            input_octets: sub.octets / 5,
            output_octets: sub.octets,
            framed_ip: sub.framed_ip,
            terminate_cause: (status == acct_status::STOP).then_some(1),
            class: None,
        };
        let bytes = nas::accounting_request(buf, id, &plan.secret, &record, &session)
            .expect("requests fit in 4096 bytes")
            .to_vec();
        (bytes, None)
    };
    InFlight {
        kind: job.kind,
        subscriber: job.sub,
        bytes,
        user: sub.user.clone(),
        credentials,
        first_sent: now,
        last_sent: now,
        tries: 0,
    }
}

/// Sends what `out` holds in as few calls as the socket allows; a
/// datagram the socket will not take now is left to the retransmission
/// timer, as a lost one would be.
fn send_batch(udp: &UdpSocket, out: &mut SendBatch) {
    let mut at = 0;
    while at < out.len() {
        match out.send_from(udp.as_fd(), at) {
            Ok(n) if n > 0 => at += n,
            _ => at += 1,
        }
    }
    out.clear();
}

fn set_recv_buffer(socket: &UdpSocket, bytes: i32) {
    // SAFETY: setsockopt with a valid fd and an i32 option value.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
}

/// Blocks until a socket is readable or `timeout` passes.
fn wait_readable(sockets: &[(UdpSocket, Socket)], timeout: Duration) {
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|(s, _)| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: fds points at a live array of pollfd of the given length.
    unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout.as_millis() as i32,
        );
    }
}
