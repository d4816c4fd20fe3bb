//! Listening sockets: one per shard per address, joined in a SO_REUSEPORT
//! group whose member is chosen by a classic BPF program.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `shards` UDP sockets on `addr` in one reuseport group. With port
/// 0 the first socket picks the port and the others join it (binding port
/// 0 N times would give N different ports).
pub fn bind_group(
    addr: SocketAddr,
    shards: usize,
    recv_buffer: usize,
) -> io::Result<Vec<UdpSocket>> {
    let mut sockets = Vec::with_capacity(shards);
    let mut addr = addr;
    for _ in 0..shards {
        let socket = bind_one(addr, recv_buffer)?;
        addr = socket.local_addr()?;
        sockets.push(socket);
    }
    if shards > 1 {
        attach_authenticator_selector(&sockets[0], shards as u32)?;
    }
    Ok(sockets)
}

fn bind_one(addr: SocketAddr, recv_buffer: usize) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    // The kernel caps this at net.core.rmem_max (see tuning.md); a smaller
    // buffer than asked for is not an error.
    let _ = socket.set_recv_buffer_size(recv_buffer);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Held while this process serves a listen address. SO_REUSEPORT lets any
/// process of the same user join a socket group, so a second shardius on
/// the same ports would bind without error, log "listening", receive no
/// traffic, and take over silently when the first exits. Each listen
/// address is therefore claimed by an abstract Unix socket named after it
/// (`@shardius-udp:127.0.0.1:1812`): it lives in the network namespace,
/// like the UDP port (so PrivateTmp and different users see the same
/// name), and the kernel releases it when the process dies, even by
/// SIGKILL.
#[derive(Debug)]
pub struct AddressLock {
    _claim: std::os::unix::net::UnixListener,
}

const LOCK_PREFIX: &str = "shardius-udp:";

/// Claims `addr` (with its real port) for this process; fails with
/// `AddrInUse` when another shardius serves it, or serves the wildcard
/// address of the same port (or, for a wildcard, any address of it).
pub fn lock_address(addr: SocketAddr) -> io::Result<AddressLock> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("{LOCK_PREFIX}{addr}");
    let claim = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .and_then(|a| std::os::unix::net::UnixListener::bind_addr(&a))
        .map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse => in_use(addr),
            _ => e,
        })?;
    if let Some(other) = overlapping_claim(addr)? {
        return Err(in_use(other));
    }
    Ok(AddressLock { _claim: claim })
}

fn in_use(addr: SocketAddr) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("address in use: another shardius serves {addr} (SO_REUSEPORT would let both bind and split the traffic)"),
    )
}

/// Another process's claim that overlaps `addr`: the same port and family
/// where one of the two is the wildcard address. Abstract names are listed
/// in /proc/net/unix (of this network namespace).
fn overlapping_claim(addr: SocketAddr) -> io::Result<Option<SocketAddr>> {
    let table = match std::fs::read_to_string("/proc/net/unix") {
        Ok(t) => t,
        // Without /proc only the exact address is checked.
        Err(_) => return Ok(None),
    };
    Ok(table
        .lines()
        .filter_map(|l| {
            l.rsplit_once(' ')?
                .1
                .strip_prefix('@')?
                .strip_prefix(LOCK_PREFIX)
        })
        .filter_map(|a| a.parse::<SocketAddr>().ok())
        .find(|other| {
            *other != addr
                && other.port() == addr.port()
                && other.is_ipv4() == addr.is_ipv4()
                && (other.ip().is_unspecified() || addr.ip().is_unspecified())
        }))
}

// Classic BPF opcodes (linux/bpf_common.h); libc does not export them.
/// BPF_LD (0x00) | BPF_W (0x00) | BPF_ABS (0x20): A = 32-bit word at offset k.
const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_ALU (0x04) | BPF_MOD (0x90) | BPF_K (0x00): A = A % k.
const BPF_ALU_MOD_K: u16 = 0x94;
/// BPF_RET (0x06) | BPF_A (0x10): return A.
const BPF_RET_A: u16 = 0x16;

/// Attaches the shard selector to the reuseport group of `socket`: the
/// kernel runs it on the UDP payload (the UDP header already pulled), and
/// it returns the first four Request Authenticator bytes modulo the shard
/// count. A NAS that sends everything from one source port (RouterOS does)
/// is spread over every shard, while a retransmission (same authenticator)
/// reaches the shard holding its duplicate-cache entry. A datagram too
/// short to load from makes the program return 0: shard 0 drops it.
#[allow(unsafe_code)] // SO_ATTACH_REUSEPORT_CBPF: socket2 has no wrapper for it
pub fn attach_authenticator_selector(socket: &UdpSocket, shards: u32) -> io::Result<()> {
    let mut program = [
        libc::sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 4,
        },
        libc::sock_filter {
            code: BPF_ALU_MOD_K,
            jt: 0,
            jf: 0,
            k: shards,
        },
        libc::sock_filter {
            code: BPF_RET_A,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `program`, which outlives the call; the
    // kernel copies the program before setsockopt returns.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn port_zero_gives_one_port_for_the_whole_group() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 3, 1 << 20).unwrap();
        let port = group[0].local_addr().unwrap().port();
        assert!(group.iter().all(|s| s.local_addr().unwrap().port() == port));
    }

    #[test]
    fn a_listen_address_is_claimed_once_and_overlapping_wildcards_refused() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let first = lock_address(addr).unwrap();
        let err = lock_address(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("address in use"), "{err}");
        let wildcard = SocketAddr::new("0.0.0.0".parse().unwrap(), addr.port());
        assert_eq!(
            lock_address(wildcard).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        // Another address of the same port, and the IPv6 wildcard, are fine.
        let other = SocketAddr::new("127.0.0.2".parse().unwrap(), addr.port());
        let _second = lock_address(other).unwrap();
        let v6 = SocketAddr::new("::".parse().unwrap(), addr.port());
        drop(lock_address(v6).unwrap());
        drop(first);
        drop(lock_address(addr).unwrap());
    }

    #[test]
    fn the_selector_routes_by_authenticator_bytes() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 2, 1 << 20).unwrap();
        for s in &group {
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
        }
        let to = group[0].local_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for shard in 0..2u8 {
            let mut datagram = [0u8; 20];
            datagram[7] = shard; // authenticator bytes 4..8 = shard number
            client.send_to(&datagram, to).unwrap();
            let mut buf = [0u8; 64];
            let n = group[usize::from(shard)]
                .recv(&mut buf)
                .expect("the chosen shard receives it");
            assert_eq!(buf[7], shard, "{n}");
        }
    }
}
