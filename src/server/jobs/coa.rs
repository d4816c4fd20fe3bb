//! Drives the sans-IO [`CoaClient`] over real UDP sockets: as many per
//! address family as the machine asks for (a second one once 256 requests
//! are in flight to one NAS), waited on together with poll(2), so one
//! thread keeps thousands of CoA and Disconnect requests in flight. Used
//! by the jobs thread and, with [`Driver::finish_all`], by the CLI.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::coa::{Action, CoaClient, Outcome, RequestId, Retry, Target};
use crate::proto::{EncodeError, Secret, MAX_PACKET_LEN};

pub struct Driver {
    client: CoaClient,
    v4: Vec<UdpSocket>,
    v6: Vec<UdpSocket>,
}

impl Driver {
    pub fn new(retry: Retry) -> Driver {
        Driver {
            client: CoaClient::new(retry),
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }

    /// Queues a request; it is sent by the next [`Driver::turn`].
    pub fn send(
        &mut self,
        to: SocketAddr,
        secret: &Secret,
        target: &Target<'_>,
        action: &Action,
        event_timestamp: u32,
    ) -> Result<RequestId, EncodeError> {
        self.client
            .send(Instant::now(), to, secret, target, action, event_timestamp)
    }

    pub fn in_flight(&self) -> usize {
        self.client.in_flight()
    }

    /// Sends what is due, waits for answers until `until` at the latest
    /// (earlier when a retransmission is due), and returns what finished.
    pub fn turn(&mut self, until: Instant) -> std::io::Result<Vec<(RequestId, Outcome)>> {
        self.open_sockets()?;
        let mut done = Vec::new();
        self.transmit(Instant::now());
        let wait_until = self.client.poll_timeout().map_or(until, |t| t.min(until));
        self.wait(wait_until)?;
        let now = Instant::now();
        self.receive(now, &mut done);
        done.extend(self.client.handle_timeout(now));
        self.transmit(now);
        Ok(done)
    }

    /// Runs until every request has ended: the CLI's blocking loop.
    pub fn finish_all(&mut self) -> std::io::Result<Vec<(RequestId, Outcome)>> {
        let mut done = Vec::new();
        while self.client.in_flight() > 0 {
            done.extend(self.turn(Instant::now() + Duration::from_secs(1))?);
        }
        Ok(done)
    }

    /// As many sockets per family as the machine has used, and one of
    /// each to start with.
    fn open_sockets(&mut self) -> std::io::Result<()> {
        let need = self.client.sockets();
        for (sockets, any) in [
            (&mut self.v4, SocketAddr::from(([0, 0, 0, 0], 0))),
            (
                &mut self.v6,
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
            ),
        ] {
            while sockets.len() < need {
                let s = match coa_socket(any) {
                    Ok(s) => s,
                    // A host without IPv6 sends CoA over IPv4 only.
                    Err(_) if any.is_ipv6() && sockets.is_empty() => break,
                    Err(e) => return Err(e),
                };
                sockets.push(s);
            }
        }
        Ok(())
    }

    fn transmit(&mut self, now: Instant) {
        let mut buf = [0u8; MAX_PACKET_LEN];
        while let Some(t) = self.client.poll_transmit(now, &mut buf) {
            let family = if t.to.is_ipv4() { &self.v4 } else { &self.v6 };
            if let Some(socket) = family.get(t.socket) {
                // A failed send is retried by the retransmission timer and
                // reported as a timeout if it never gets through.
                let _ = socket.send_to(&buf[..t.len], t.to);
            }
        }
    }

    fn receive(&mut self, now: Instant, done: &mut Vec<(RequestId, Outcome)>) {
        let mut buf = [0u8; MAX_PACKET_LEN];
        for sockets in [&self.v4, &self.v6] {
            for (i, socket) in sockets.iter().enumerate() {
                // Nonblocking: read until the socket is empty.
                while let Ok((n, from)) = socket.recv_from(&mut buf) {
                    if let Some(end) = self.client.handle(now, i, from, &buf[..n]) {
                        done.push(end);
                    }
                }
            }
        }
    }

    /// Sleeps until a socket is readable or `until`.
    fn wait(&self, until: Instant) -> std::io::Result<()> {
        let mut fds: Vec<libc::pollfd> = self
            .v4
            .iter()
            .chain(&self.v6)
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let timeout = until.saturating_duration_since(Instant::now());
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()`
        // pollfd structs that outlives the call; poll(2) only writes `revents`.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            // A signal (SIGTERM) interrupts the wait: the caller loops.
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }
}

/// A nonblocking UDP socket with a receive buffer for a sweep's answers:
/// thousands of ACKs arrive in a burst, and the default buffer (about 200
/// datagrams on loopback) dropped most of them (19,224 drops in a 10,000
/// session sweep). The kernel caps it at net.core.rmem_max.
fn coa_socket(any: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(any), Type::DGRAM, Some(Protocol::UDP))?;
    if any.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Smaller than asked for is not an error (tuning.md: rmem_max).
    let _ = socket.set_recv_buffer_size(COA_RECV_BUFFER);
    socket.bind(&any.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

const COA_RECV_BUFFER: usize = 8 << 20;
