//! The CoA client as a state machine without IO (the shape of quinn's
//! `Connection`): requests go in with [`CoaClient::send`], datagrams to
//! send come out of [`CoaClient::poll_transmit`], answers go in with
//! [`CoaClient::handle`], and [`CoaClient::poll_timeout`] /
//! [`CoaClient::handle_timeout`] drive retransmissions (the same bytes,
//! RFC 5176 §2.3 via RFC 5080) and give-ups. Every call takes `now`; the
//! shell owns the sockets and the clock, so thousands of requests are in
//! flight at once from one thread, and the tests run on a virtual clock.
//!
//! Identifiers are per (socket, NAS): never two requests in flight with
//! one identifier to one NAS from one socket. With 256 in flight to a NAS
//! the next request goes on the next socket; [`CoaClient::sockets`] says
//! how many the shell must have open (per address family).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::packet::{build_request, check_answer, Action, Answer, AnswerError, Target};
use crate::proto::{EncodeError, PacketBuf, Secret};

/// How patiently to ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Transmissions in all (the first plus retransmissions).
    pub tries: u32,
    /// Wait for an answer after each transmission.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            tries: 3,
            timeout: Duration::from_secs(2),
        }
    }
}

/// Names a request for its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A datagram to send: `len` bytes of the caller's buffer, to `to`, from
/// socket `socket` of `to`'s address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub socket: usize,
    pub to: SocketAddr,
    pub len: usize,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Answer(Answer),
    /// The NAS answered, but the answer does not verify (usually a wrong
    /// secret on one side) or is not an answer to this request.
    BadAnswer(AnswerError),
    /// No answer to `tries` transmissions.
    TimedOut {
        tries: u32,
    },
}

/// Where a request is in flight: socket, NAS, identifier.
type Slot = (usize, SocketAddr, u8);

struct Pending {
    id: RequestId,
    bytes: Vec<u8>,
    secret: Secret,
    sent: u32,
    deadline: Instant,
}

/// The requests in flight, their identifiers and their timers.
pub struct CoaClient {
    retry: Retry,
    next_request: u64,
    pending: HashMap<Slot, Pending>,
    /// Datagrams due for (re)transmission, in order.
    due: VecDeque<Slot>,
    /// Deadlines; entries whose request is gone or re-armed are skipped.
    timers: BinaryHeap<Reverse<(Instant, Slot, RequestId)>>,
    /// Per (socket, NAS): requests in flight and the next identifier to try.
    per_nas: HashMap<(usize, SocketAddr), (u16, u8)>,
    sockets: usize,
}

impl CoaClient {
    pub fn new(retry: Retry) -> CoaClient {
        CoaClient {
            retry: Retry {
                tries: retry.tries.max(1),
                ..retry
            },
            next_request: 0,
            pending: HashMap::new(),
            due: VecDeque::new(),
            timers: BinaryHeap::new(),
            per_nas: HashMap::new(),
            sockets: 1,
        }
    }

    /// Queues `action` for `target` to the NAS at `to`; the first
    /// transmission comes out of the next [`CoaClient::poll_transmit`].
    pub fn send(
        &mut self,
        now: Instant,
        to: SocketAddr,
        secret: &Secret,
        target: &Target<'_>,
        action: &Action,
        event_timestamp: u32,
    ) -> Result<RequestId, EncodeError> {
        let slot = self.free_slot(to);
        let mut buf = [0u8; crate::proto::MAX_PACKET_LEN];
        let bytes =
            build_request(&mut buf, slot.2, secret, target, action, event_timestamp)?.to_vec();
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let entry = self.per_nas.entry((slot.0, to)).or_insert((0, 0));
        entry.0 += 1;
        entry.1 = slot.2.wrapping_add(1);
        self.pending.insert(
            slot,
            Pending {
                id,
                bytes,
                secret: secret.clone(),
                sent: 0,
                deadline: now,
            },
        );
        self.due.push_back(slot);
        Ok(id)
    }

    /// The lowest socket with an identifier free toward `to`, and that
    /// identifier (the one after the last used, so a late answer to a
    /// finished request is unlikely to meet a new one).
    fn free_slot(&mut self, to: SocketAddr) -> Slot {
        let mut socket = 0;
        loop {
            let (in_flight, next) = self.per_nas.get(&(socket, to)).copied().unwrap_or((0, 0));
            if in_flight < 256 {
                let identifier = (0..=255u8)
                    .map(|k| next.wrapping_add(k))
                    .find(|i| !self.pending.contains_key(&(socket, to, *i)))
                    .expect("fewer than 256 in flight leaves an identifier free");
                self.sockets = self.sockets.max(socket + 1);
                return (socket, to, identifier);
            }
            socket += 1;
        }
    }

    /// How many sockets per address family the shell must have open.
    pub fn sockets(&self) -> usize {
        self.sockets
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The next datagram to send, written into `buf`.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut PacketBuf) -> Option<Transmit> {
        while let Some(slot) = self.due.pop_front() {
            let Some(p) = self.pending.get_mut(&slot) else {
                continue;
            };
            buf[..p.bytes.len()].copy_from_slice(&p.bytes);
            p.sent += 1;
            p.deadline = now + self.retry.timeout;
            self.timers.push(Reverse((p.deadline, slot, p.id)));
            return Some(Transmit {
                socket: slot.0,
                to: slot.1,
                len: p.bytes.len(),
            });
        }
        None
    }

    /// A datagram received on `socket` from `from`: the outcome of the
    /// request it answers, or `None` for a stray datagram (another source,
    /// an identifier not in flight), which is ignored.
    pub fn handle(
        &mut self,
        _now: Instant,
        socket: usize,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Option<(RequestId, Outcome)> {
        let identifier = *datagram.get(1)?;
        let slot = (socket, from, identifier);
        let p = self.pending.get(&slot)?;
        let outcome = match check_answer(datagram, &p.bytes, &p.secret) {
            Ok(answer) => Outcome::Answer(answer),
            // Not an answer to this request after all: keep waiting.
            Err(AnswerError::WrongIdentifier) => return None,
            Err(e) => Outcome::BadAnswer(e),
        };
        let p = self.finish(slot)?;
        Some((p.id, outcome))
    }

    /// When [`CoaClient::handle_timeout`] has work next. Call
    /// [`CoaClient::poll_transmit`] until it returns `None` first: what it
    /// holds is due now.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Retransmits what timed out with tries left (queued for
    /// [`CoaClient::poll_transmit`]) and gives up on the rest.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<(RequestId, Outcome)> {
        let mut given_up = Vec::new();
        while let Some(Reverse((at, slot, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(p) = self.pending.get(&slot) else {
                continue;
            };
            if p.id != id || p.deadline != at {
                continue;
            }
            if p.sent < self.retry.tries {
                self.due.push_back(slot);
            } else if let Some(p) = self.finish(slot) {
                given_up.push((p.id, Outcome::TimedOut { tries: p.sent }));
            }
        }
        given_up
    }

    fn finish(&mut self, slot: Slot) -> Option<Pending> {
        let p = self.pending.remove(&slot)?;
        // The entry stays (its next identifier too): one per socket and NAS.
        if let Some(entry) = self.per_nas.get_mut(&(slot.0, slot.1)) {
            entry.0 -= 1;
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Code, Packet, PacketWriter, MAX_PACKET_LEN};

    fn target() -> Target<'static> {
        Target {
            user_name: b"alice",
            acct_session_id: b"81a00003",
            nas_ip: None,
            framed_ip: None,
        }
    }

    fn nas(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 1700))
    }

    /// What a NAS answers to `request` with `secret`.
    fn answer(request: &[u8], code: Code, secret: &Secret) -> Vec<u8> {
        let p = Packet::parse(request).unwrap();
        let mut buf = [0u8; MAX_PACKET_LEN];
        let mut w = PacketWriter::new(&mut buf, code, p.identifier(), p.authenticator());
        w.message_authenticator().unwrap();
        w.finish_response(p.authenticator(), secret).to_vec()
    }

    fn drain(c: &mut CoaClient, now: Instant) -> Vec<(Transmit, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_PACKET_LEN];
        while let Some(t) = c.poll_transmit(now, &mut buf) {
            out.push((t, buf[..t.len].to_vec()));
        }
        out
    }

    /// A client with one Disconnect-Request queued to `nas(1)`.
    fn one_request(retry: Retry) -> (Instant, Secret, CoaClient, RequestId) {
        let t0 = Instant::now();
        let secret = Secret::new(b"s3cr3t");
        let mut c = CoaClient::new(retry);
        let id = c
            .send(t0, nas(1), &secret, &target(), &Action::Disconnect, 0)
            .unwrap();
        (t0, secret, c, id)
    }

    #[test]
    fn an_answered_request_ends_with_its_answer() {
        let (t0, secret, mut c, id) = one_request(Retry::default());
        let sent = drain(&mut c, t0);
        assert_eq!(sent.len(), 1);
        let (t, bytes) = &sent[0];
        let ack = answer(bytes, Code::DISCONNECT_ACK, &secret);
        assert_eq!(
            c.handle(t0, t.socket, nas(1), &ack),
            Some((id, Outcome::Answer(Answer::Ack)))
        );
        assert_eq!(c.in_flight(), 0);
        assert!(c.handle_timeout(t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(c.handle(t0, t.socket, nas(1), &ack), None, "answered once");
    }

    #[test]
    fn silence_is_retransmitted_with_the_same_bytes_then_given_up_on_a_virtual_clock() {
        let (t0, _, mut c, id) = one_request(Retry {
            tries: 3,
            timeout: Duration::from_secs(2),
        });
        let mut sent = drain(&mut c, t0);
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        assert!(c
            .handle_timeout(t0 + Duration::from_millis(1999))
            .is_empty());
        assert!(drain(&mut c, t0 + Duration::from_millis(1999)).is_empty());
        for k in 1..=2u64 {
            let at = t0 + Duration::from_secs(2 * k);
            assert!(c.handle_timeout(at).is_empty());
            sent.extend(drain(&mut c, at));
        }
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|(_, b)| *b == sent[0].1), "the same bytes");
        assert_eq!(
            c.handle_timeout(t0 + Duration::from_secs(6)),
            vec![(id, Outcome::TimedOut { tries: 3 })]
        );
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn stray_datagrams_are_ignored_and_a_wrong_secret_is_reported() {
        let (t0, secret, mut c, id) = one_request(Retry::default());
        let (t, bytes) = drain(&mut c, t0).remove(0);
        let ack = answer(&bytes, Code::DISCONNECT_ACK, &secret);
        assert_eq!(c.handle(t0, t.socket, nas(2), &ack), None, "another source");
        assert_eq!(
            c.handle(t0, t.socket + 1, nas(1), &ack),
            None,
            "another socket"
        );
        let mut other_id = ack.clone();
        other_id[1] ^= 1;
        assert_eq!(c.handle(t0, t.socket, nas(1), &other_id), None);
        assert_eq!(c.handle(t0, t.socket, nas(1), &[1]), None);
        let forged = answer(&bytes, Code::DISCONNECT_ACK, &Secret::new(b"other"));
        assert_eq!(
            c.handle(t0, t.socket, nas(1), &forged),
            Some((id, Outcome::BadAnswer(AnswerError::BadAuthenticator)))
        );
    }

    #[test]
    fn identifiers_are_unique_per_nas_and_socket_and_a_second_socket_opens_past_256() {
        let t0 = Instant::now();
        let secret = Secret::new(b"s3cr3t");
        let mut c = CoaClient::new(Retry::default());
        for i in 0..300 {
            let to = if i % 3 == 0 { nas(2) } else { nas(1) };
            c.send(t0, to, &secret, &target(), &Action::Disconnect, 0)
                .unwrap();
        }
        let sent = drain(&mut c, t0);
        assert_eq!(sent.len(), 300);
        let mut seen = std::collections::HashSet::new();
        for (t, bytes) in &sent {
            assert!(seen.insert((t.socket, t.to, bytes[1])), "{t:?} reused");
        }
        // 200 to nas 1 and 100 to nas 2 fit on one socket each.
        assert_eq!(c.sockets(), 1);
        for _ in 0..100 {
            c.send(t0, nas(1), &secret, &target(), &Action::Disconnect, 0)
                .unwrap();
        }
        let more = drain(&mut c, t0);
        assert_eq!(more.iter().filter(|(t, _)| t.socket == 1).count(), 44);
        assert_eq!(c.sockets(), 2);
        // Once one finishes, its identifier is free again on socket 0.
        let (t, bytes) = &sent[1];
        let ack = answer(bytes, Code::DISCONNECT_ACK, &secret);
        assert!(c.handle(t0, t.socket, t.to, &ack).is_some());
        c.send(t0, nas(1), &secret, &target(), &Action::Disconnect, 0)
            .unwrap();
        let (t, b) = drain(&mut c, t0).remove(0);
        assert_eq!((t.socket, b[1]), (0, bytes[1]));
    }
}
