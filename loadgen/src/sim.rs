//! The simulated NAS, without IO: identifiers per socket, requests in
//! flight, retransmission of the same bytes (same identifier and
//! authenticator) on timeout, and verification of every reply. Time is
//! passed in, so the logic is unit-tested without a network.

use std::time::{Duration, Instant};

use shardius::nas_client::{self as nas, Credentials, ReplyError};
use shardius::proto::{Code, Secret};

/// What a request is, for the per-type histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Auth,
    AcctStart,
    AcctInterim,
    AcctStop,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Auth => "access-request",
            Kind::AcctStart => "acct-start",
            Kind::AcctInterim => "acct-interim",
            Kind::AcctStop => "acct-stop",
        }
    }
}

/// The credentials an Access-Request used, kept to verify its reply.
#[derive(Clone, Debug)]
pub enum SentCredentials {
    Pap(String),
    Chap {
        ident: u8,
        challenge: [u8; 16],
        password: String,
    },
    MsChapV2 {
        ident: u8,
        auth_challenge: [u8; 16],
        peer_challenge: [u8; 16],
        password: String,
    },
}

impl SentCredentials {
    pub fn as_credentials(&self) -> Credentials<'_> {
        match self {
            SentCredentials::Pap(p) => Credentials::Pap {
                password: p.as_bytes(),
            },
            SentCredentials::Chap {
                ident,
                challenge,
                password,
            } => Credentials::Chap {
                ident: *ident,
                challenge: *challenge,
                password: password.as_bytes(),
            },
            SentCredentials::MsChapV2 {
                ident,
                auth_challenge,
                peer_challenge,
                password,
            } => Credentials::MsChapV2 {
                ident: *ident,
                auth_challenge: *auth_challenge,
                peer_challenge: *peer_challenge,
                password: password.as_bytes(),
            },
        }
    }
}

/// One request in flight.
#[derive(Debug)]
pub struct InFlight {
    pub kind: Kind,
    pub subscriber: usize,
    pub bytes: Vec<u8>,
    pub user: String,
    pub credentials: Option<SentCredentials>,
    pub first_sent: Instant,
    pub last_sent: Instant,
    pub tries: u8,
}

impl InFlight {
    fn authenticator(&self) -> [u8; 16] {
        self.bytes[4..20].try_into().expect("a RADIUS header")
    }
}

/// How a reply or a timeout ended a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// With the Framed-IP-Address the server gave, if any.
    Accept(Option<std::net::Ipv4Addr>),
    Reject,
    /// Accounting-Response received and verified.
    Acknowledged,
    Invalid(ReplyError),
    TimedOut,
}

/// The 256 identifiers of one socket and the requests using them.
pub struct Socket {
    slots: Vec<Option<InFlight>>,
    next: u8,
    in_use: usize,
}

impl Default for Socket {
    fn default() -> Self {
        Socket {
            slots: (0..256).map(|_| None).collect(),
            next: 0,
            in_use: 0,
        }
    }
}

impl Socket {
    pub fn in_flight(&self) -> usize {
        self.in_use
    }

    /// A free identifier, or `None` when all 256 are in flight.
    pub fn free_id(&mut self) -> Option<u8> {
        if self.in_use == 256 {
            return None;
        }
        while self.slots[usize::from(self.next)].is_some() {
            self.next = self.next.wrapping_add(1);
        }
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        Some(id)
    }

    /// Records a request sent with identifier `id` (its byte 1).
    pub fn sent(&mut self, request: InFlight) {
        let id = usize::from(request.bytes[1]);
        debug_assert!(
            self.slots[id].is_none(),
            "identifier reused while in flight"
        );
        self.slots[id] = Some(request);
        self.in_use += 1;
    }

    /// Matches a reply to its request and verifies it. `None` for a reply
    /// to nothing in flight (late, after a timeout).
    pub fn received(
        &mut self,
        reply: &[u8],
        secret: &Secret,
        require_ma: bool,
    ) -> Option<(InFlight, Outcome)> {
        let id = usize::from(*reply.get(1)?);
        let request = self.slots[id].take()?;
        self.in_use -= 1;
        let outcome = verify(&request, reply, secret, require_ma);
        Some((request, outcome))
    }

    /// Requests to send again (same bytes) and requests given up on.
    pub fn expire(
        &mut self,
        now: Instant,
        timeout: Duration,
        max_tries: u8,
    ) -> (Vec<(Kind, Vec<u8>)>, Vec<InFlight>) {
        let mut resend = Vec::new();
        let mut gave_up = Vec::new();
        for slot in self.slots.iter_mut() {
            let Some(r) = slot else { continue };
            if now.duration_since(r.last_sent) < timeout {
                continue;
            }
            if r.tries >= max_tries {
                gave_up.push(slot.take().expect("checked above"));
                self.in_use -= 1;
            } else {
                r.tries += 1;
                r.last_sent = now;
                resend.push((r.kind, r.bytes.clone()));
            }
        }
        (resend, gave_up)
    }
}

/// The Framed-IP-Address of a (verified) Access-Accept: a real NAS gives
/// it to the subscriber and reports it in accounting.
fn framed_ip(reply: &[u8]) -> Option<std::net::Ipv4Addr> {
    let p = shardius::proto::Packet::parse(reply).ok()?;
    let v = p.attr(shardius::proto::dict::attr::FRAMED_IP_ADDRESS)?;
    <[u8; 4]>::try_from(v).ok().map(std::net::Ipv4Addr::from)
}

fn verify(request: &InFlight, reply: &[u8], secret: &Secret, require_ma: bool) -> Outcome {
    let id = request.bytes[1];
    let authenticator = request.authenticator();
    match request.kind {
        Kind::Auth => {
            let creds = request
                .credentials
                .as_ref()
                .expect("auth requests keep their credentials");
            match nas::check_access_reply_with(
                reply,
                id,
                &authenticator,
                secret,
                request.user.as_bytes(),
                &creds.as_credentials(),
                require_ma,
            ) {
                Ok(r) if r.code == Code::ACCESS_ACCEPT => Outcome::Accept(framed_ip(reply)),
                Ok(_) => Outcome::Reject,
                Err(e) => Outcome::Invalid(e),
            }
        }
        _ => match nas::check_accounting_reply(reply, id, &authenticator, secret) {
            Ok(()) => Outcome::Acknowledged,
            Err(e) => Outcome::Invalid(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardius::nas_client::Session;
    use shardius::proto::{PacketBuf, PacketWriter};

    fn auth_request(socket: &mut Socket, secret: &Secret, at: Instant) -> InFlight {
        let id = socket.free_id().unwrap();
        let creds = SentCredentials::MsChapV2 {
            ident: 1,
            auth_challenge: [1; 16],
            peer_challenge: [2; 16],
            password: "pass1".into(),
        };
        let mut buf = [0u8; 4096];
        let bytes = nas::access_request(
            &mut buf,
            id,
            &[id; 16],
            secret,
            b"user1",
            &creds.as_credentials(),
            &Session::default(),
        )
        .unwrap()
        .to_vec();
        InFlight {
            kind: Kind::Auth,
            subscriber: 0,
            bytes,
            user: "user1".into(),
            credentials: Some(creds),
            first_sent: at,
            last_sent: at,
            tries: 0,
        }
    }

    /// What a correct server answers, built with the server's own engine
    /// pieces: an MS-CHAPv2 accept with success and MPPE keys.
    fn server_reply(request: &[u8], secret: &Secret) -> Vec<u8> {
        use shardius::auth::mschapv2;
        use shardius::proto::dict::{ms, vendor};
        use shardius::proto::Packet;
        let p = Packet::parse(request).unwrap();
        let response = mschapv2::Response::parse(
            p.vendor_attr(vendor::MICROSOFT, ms::CHAP2_RESPONSE)
                .unwrap(),
        )
        .unwrap();
        let ok = mschapv2::verify(
            p.vendor_attr(vendor::MICROSOFT, ms::CHAP_CHALLENGE)
                .unwrap(),
            &response,
            b"user1",
            b"pass1",
        )
        .unwrap();
        let mut out: PacketBuf = [0; 4096];
        let mut w = PacketWriter::new(
            &mut out,
            Code::ACCESS_ACCEPT,
            p.identifier(),
            p.authenticator(),
        );
        w.message_authenticator().unwrap();
        ok.write_accept_attributes(&mut w, secret, p.authenticator(), [0x80, 2])
            .unwrap();
        w.finish_response(p.authenticator(), secret).to_vec()
    }

    #[test]
    fn a_timed_out_request_is_resent_byte_for_byte_then_given_up() {
        let secret = Secret::new(b"s");
        let t0 = Instant::now();
        let mut socket = Socket::default();
        let request = auth_request(&mut socket, &secret, t0);
        let original = request.bytes.clone();
        socket.sent(request);
        let timeout = Duration::from_secs(1);
        assert!(socket
            .expire(t0 + Duration::from_millis(999), timeout, 2)
            .0
            .is_empty());
        let (resend, gave_up) = socket.expire(t0 + timeout, timeout, 2);
        assert_eq!(
            resend,
            vec![(Kind::Auth, original.clone())],
            "same identifier and authenticator"
        );
        assert!(gave_up.is_empty());
        let (resend, _) = socket.expire(t0 + timeout * 2, timeout, 2);
        assert_eq!(resend.len(), 1);
        let (resend, gave_up) = socket.expire(t0 + timeout * 3, timeout, 2);
        assert!(resend.is_empty());
        assert_eq!(gave_up.len(), 1);
        assert_eq!(socket.in_flight(), 0);
    }

    #[test]
    fn identifiers_are_not_reused_while_in_flight_and_run_out_at_256() {
        let secret = Secret::new(b"s");
        let t0 = Instant::now();
        let mut socket = Socket::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..256 {
            let r = auth_request(&mut socket, &secret, t0);
            assert!(seen.insert(r.bytes[1]));
            socket.sent(r);
        }
        assert_eq!(socket.free_id(), None);
        // A verified reply frees its identifier for the next request.
        let request = socket.slots[7].as_ref().unwrap().bytes.clone();
        let (_, outcome) = socket
            .received(&server_reply(&request, &secret), &secret, true)
            .unwrap();
        assert_eq!(outcome, Outcome::Accept(None));
        assert_eq!(socket.free_id(), Some(7));
    }

    #[test]
    fn a_corrupted_reply_is_caught_as_invalid() {
        let secret = Secret::new(b"s");
        let t0 = Instant::now();
        for flip in [4usize, 30, 60] {
            let mut socket = Socket::default();
            let r = auth_request(&mut socket, &secret, t0);
            let mut reply = server_reply(&r.bytes, &secret);
            socket.sent(r);
            let i = flip.min(reply.len() - 1);
            reply[i] ^= 0x01;
            let (_, outcome) = socket.received(&reply, &secret, true).unwrap();
            assert!(
                matches!(outcome, Outcome::Invalid(_)),
                "byte {i}: {outcome:?}"
            );
        }
    }

    #[test]
    fn a_reply_for_nothing_in_flight_is_ignored() {
        let mut socket = Socket::default();
        assert!(socket
            .received(
                &[2, 9, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                &Secret::new(b"s"),
                true
            )
            .is_none());
    }
}
