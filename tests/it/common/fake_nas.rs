//! A fake NAS for CoA tests: a UDP listener that checks every
//! CoA-Request / Disconnect-Request it receives (Request Authenticator with
//! the independent `radius` crate, Message-Authenticator by hand with
//! HMAC-MD5) and answers as told: ACK, NAK with an Error-Cause, nothing,
//! or an answer signed with another secret.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use md5::Md5;
use shardius::proto::dict::attr;
use shardius::proto::{Code, Packet, PacketWriter, Secret, MAX_PACKET_LEN};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Ack,
    Nak(u32),
    Silent,
    WrongSecret,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub bytes: Vec<u8>,
    pub code: Code,
    /// (type, value) of every attribute in order; vendor attributes whole.
    pub attributes: Vec<(u8, Vec<u8>)>,
    pub request_authenticator_ok: bool,
    pub message_authenticator_ok: bool,
}

impl Received {
    pub fn attr(&self, ty: u8) -> Option<&[u8]> {
        self.attributes
            .iter()
            .find(|(t, _)| *t == ty)
            .map(|(_, v)| v.as_slice())
    }

    pub fn vendor_attr(&self, vendor: u32, ty: u8) -> Option<Vec<u8>> {
        Packet::parse(&self.bytes)
            .ok()?
            .vendor_attr(vendor, ty)
            .map(<[u8]>::to_vec)
    }
}

pub struct FakeNas {
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    received: Arc<Mutex<Vec<Received>>>,
}

/// HMAC-MD5 over the packet with the Message-Authenticator zeroed and the
/// Authenticator field zeroed too (RFC 5176 §3.1 for requests).
fn message_authenticator_ok(bytes: &[u8], secret: &[u8]) -> bool {
    let Ok(packet) = Packet::parse(bytes) else {
        return false;
    };
    let Some(offset) = packet.message_authenticator_offset() else {
        return false;
    };
    let mut copy = bytes.to_vec();
    copy[4..20].fill(0);
    copy[offset..offset + 16].fill(0);
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(secret).unwrap();
    mac.update(&copy);
    mac.finalize().into_bytes().as_slice() == &bytes[offset..offset + 16]
}

impl FakeNas {
    /// Listens on 127.0.0.1 on a free port; checks requests with `secret`.
    pub fn start(secret: &str) -> FakeNas {
        FakeNas::start_on("127.0.0.1", secret)
    }

    /// Listens on `ip` (a loopback address) on a free port.
    pub fn start_on(ip: &str, secret: &str) -> FakeNas {
        // A buffer for a sweep's burst of requests, as a real BNG has.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        let _ = socket.set_recv_buffer_size(8 << 20);
        let addr: std::net::SocketAddr = format!("{ip}:0").parse().unwrap();
        socket.bind(&addr.into()).unwrap();
        let socket: UdpSocket = socket.into();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(Mode::Ack));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (m, r) = (mode.clone(), received.clone());
        let secret = secret.to_owned();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let (n, from) = match socket.recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(_) => {
                        // The test dropped its handle: stop.
                        if Arc::strong_count(&r) == 1 {
                            return;
                        }
                        continue;
                    }
                };
                let bytes = buf[..n].to_vec();
                let Ok(packet) = Packet::parse(&bytes) else {
                    continue;
                };
                let got = Received {
                    code: packet.code(),
                    attributes: packet
                        .attributes()
                        .map(|a| (a.ty, a.value.to_vec()))
                        .collect(),
                    request_authenticator_ok: radius::core::packet::Packet::is_authentic_request(
                        &bytes,
                        secret.as_bytes(),
                    ),
                    message_authenticator_ok: message_authenticator_ok(&bytes, secret.as_bytes()),
                    bytes: bytes.clone(),
                };
                let valid = got.request_authenticator_ok && got.message_authenticator_ok;
                r.lock().unwrap().push(got);
                if !valid {
                    continue; // a real NAS drops what does not verify
                }
                let mode = *m.lock().unwrap();
                let (ack, nak) = if packet.code() == Code::DISCONNECT_REQUEST {
                    (Code::DISCONNECT_ACK, Code::DISCONNECT_NAK)
                } else {
                    (Code::COA_ACK, Code::COA_NAK)
                };
                let (code, cause, sign_with) = match mode {
                    Mode::Silent => continue,
                    Mode::Ack => (ack, None, secret.clone()),
                    Mode::Nak(c) => (nak, Some(c), secret.clone()),
                    Mode::WrongSecret => (ack, None, "not-the-secret".to_owned()),
                };
                let mut out = [0u8; MAX_PACKET_LEN];
                let mut w = PacketWriter::new(&mut out, code, packet.identifier(), &[0; 16]);
                w.message_authenticator().unwrap();
                if let Some(c) = cause {
                    w.attr_u32(attr::ERROR_CAUSE, c).unwrap();
                }
                let reply =
                    w.finish_response(packet.authenticator(), &Secret::new(sign_with.as_bytes()));
                let _ = socket.send_to(reply, from);
            }
        });
        FakeNas {
            addr,
            mode,
            received,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.received.lock().unwrap().clear();
    }

    /// Waits until at least `n` requests arrived.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
