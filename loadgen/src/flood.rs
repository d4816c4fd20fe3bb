//! `--spoof-flood N`: the attack of an outsider who cannot sign anything:
//! Access-Requests from N distinct spoofed source addresses (127.1.0.0 and
//! up, so it stays on the loopback), sent through a raw socket as fast as
//! one thread can, for `--duration` seconds. Needs CAP_NET_RAW (root).
//! Every one of them is from an unknown NAS; the server must drop them in
//! O(1) while its registered NASes are served.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use shardius::nas_client::{self as nas, Credentials, Session};
use shardius::proto::Secret;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// What the flood sent.
pub struct Sent {
    pub packets: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

pub fn run(to: SocketAddrV4, sources: u32, duration: Duration) -> std::io::Result<Sent> {
    // IPPROTO_RAW implies IP_HDRINCL: we write the IPv4 header, source
    // address included; the kernel fills in the header checksum.
    let socket = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )?;
    let mut buf = [0u8; 4096];
    let payload = nas::access_request(
        &mut buf,
        1,
        &[0x5A; 16],
        &Secret::new(b"not-the-secret"),
        b"user1",
        &Credentials::Pap { password: b"pass1" },
        &Session::default(),
    )
    .map_err(|e| std::io::Error::other(format!("{e:?}")))?
    .to_vec();
    let mut datagram = vec![0u8; 28 + payload.len()];
    datagram[28..].copy_from_slice(&payload);
    let dest = SockAddr::from(to);
    let started = Instant::now();
    let mut sent = Sent {
        packets: 0,
        errors: 0,
        elapsed: Duration::ZERO,
    };
    let mut i: u32 = 0;
    while started.elapsed() < duration {
        for _ in 0..1024 {
            let src = Ipv4Addr::from(0x7F01_0000 + (i % sources));
            write_headers(
                &mut datagram,
                src,
                *to.ip(),
                1024 + (i % 60000) as u16,
                to.port(),
            );
            match socket.send_to(&datagram, &dest) {
                Ok(_) => sent.packets += 1,
                Err(_) => sent.errors += 1,
            }
            i = i.wrapping_add(1);
        }
    }
    sent.elapsed = started.elapsed();
    Ok(sent)
}

/// The IPv4 and UDP headers in front of the payload (UDP checksum 0:
/// none, allowed over IPv4).
fn write_headers(d: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) {
    let total = d.len() as u16;
    d[0] = 0x45;
    d[1] = 0;
    d[2..4].copy_from_slice(&total.to_be_bytes());
    d[4..8].fill(0);
    d[8] = 64;
    d[9] = libc::IPPROTO_UDP as u8;
    d[10..12].fill(0);
    d[12..16].copy_from_slice(&src.octets());
    d[16..20].copy_from_slice(&dst.octets());
    let checksum = ipv4_checksum(&d[..20]);
    d[10..12].copy_from_slice(&checksum.to_be_bytes());
    d[20..22].copy_from_slice(&sport.to_be_bytes());
    d[22..24].copy_from_slice(&dport.to_be_bytes());
    d[24..26].copy_from_slice(&(total - 20).to_be_bytes());
    d[26..28].fill(0);
}

/// RFC 791 header checksum (written by hand: eight lines, no crate needed).
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipv4_checksum_verifies() {
        let mut d = [0u8; 40];
        write_headers(
            &mut d,
            Ipv4Addr::new(127, 1, 2, 3),
            Ipv4Addr::LOCALHOST,
            5000,
            1812,
        );
        assert_eq!(ipv4_checksum(&d[..20]), 0);
        assert_eq!(&d[12..16], &[127, 1, 2, 3]);
    }
}
