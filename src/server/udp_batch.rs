//! Datagrams in batches: one `recvmmsg(2)` takes up to [`BATCH`] waiting
//! requests, one `sendmmsg(2)` sends the replies made of them. glommio
//! 0.9's `UdpSocket` does one `recvmsg` and one `sendmsg` per datagram, and
//! at 150,000 requests/s the syscall entries, exits and per-call socket
//! lookups were a large part of a shard's kernel time (issue 18's profile).
//!
//! Both calls are non-blocking (`MSG_DONTWAIT`): the caller waits for the
//! socket to become readable its own way (a shard through glommio, loadgen
//! through poll) and falls back to single sends for what the socket's
//! buffer would not take. The syscalls come from nix (safe wrappers); what
//! is here is the fixed, allocation-free buffer layout around them.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};

/// Datagrams per call. 32 keeps a batch's replies (and the latency the
/// first request of a batch waits for the last) small: a full batch of
/// PAP logins is about 0.13 ms of work (4 µs each).
pub const BATCH: usize = 32;
/// The largest RADIUS packet (RFC 2865 §3), and so every buffer's size.
pub const DATAGRAM: usize = crate::proto::MAX_PACKET_LEN;

fn sockaddr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// What a failed call means to a loop that retries it: nothing waiting
/// (or a signal) is not an error.
fn would_block(e: Errno) -> bool {
    matches!(e, Errno::EAGAIN | Errno::EINTR)
}

/// Up to [`BATCH`] received datagrams with their sources.
pub struct RecvBatch {
    bufs: Box<[[u8; DATAGRAM]; BATCH]>,
    headers: MultiHeaders<SockaddrStorage>,
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
    truncated: [bool; BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        RecvBatch {
            bufs: Box::new([[0; DATAGRAM]; BATCH]),
            headers: MultiHeaders::preallocate(BATCH, None),
            lens: [0; BATCH],
            from: [None; BATCH],
            truncated: [false; BATCH],
            count: 0,
        }
    }

    /// Takes what is waiting on `fd`, up to [`BATCH`] datagrams, without
    /// blocking: Ok(0) when nothing is.
    ///
    /// nix leaves each header's address length as the kernel last wrote
    /// it rather than resetting it per call; that is enough because one
    /// socket only ever reports addresses of its own family (an IPv6
    /// socket's IPv4 peers come as v4-mapped IPv6), whose length does not
    /// change. The round trip tests cover both families.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.count = 0;
        let mut bufs = self.bufs.iter_mut();
        let slices: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                bufs.next().expect("one buffer per slot").as_mut_slice(),
            )]
        });
        let received = match recvmmsg(
            fd.as_raw_fd(),
            &mut self.headers,
            slices.iter(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(r) => r,
            Err(e) if would_block(e) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        for (i, msg) in received.enumerate() {
            self.lens[i] = msg.bytes;
            self.from[i] = msg.address.as_ref().and_then(sockaddr);
            self.truncated[i] = msg.flags.contains(MsgFlags::MSG_TRUNC);
            self.count = i + 1;
        }
        Ok(self.count)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Datagram `i` of the last receive and its source. None when the
    /// kernel gave no address we know (not IPv4 or IPv6), or when the
    /// datagram was longer than any RADIUS packet may be (cut to
    /// [`DATAGRAM`] bytes, which would be parsed as something it is not).
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.count || self.truncated[i] {
            return None;
        }
        Some((&self.bufs[i][..self.lens[i]], self.from[i]?))
    }
}

/// Up to [`BATCH`] datagrams to send, written in place.
pub struct SendBatch {
    bufs: Box<[[u8; DATAGRAM]; BATCH]>,
    headers: MultiHeaders<SockaddrStorage>,
    lens: [usize; BATCH],
    to: [Option<SockaddrStorage>; BATCH],
    count: usize,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl SendBatch {
    pub fn new() -> Self {
        SendBatch {
            bufs: Box::new([[0; DATAGRAM]; BATCH]),
            headers: MultiHeaders::preallocate(BATCH, None),
            lens: [0; BATCH],
            to: [None; BATCH],
            count: 0,
        }
    }

    /// The buffer the next datagram is written into; None when the batch
    /// is full (send it first).
    pub fn next_buf(&mut self) -> Option<&mut crate::proto::PacketBuf> {
        self.bufs.get_mut(self.count)
    }

    /// Queues the first `len` bytes of [`SendBatch::next_buf`] for `to`.
    pub fn push(&mut self, len: usize, to: SocketAddr) {
        assert!(self.count < BATCH && len <= DATAGRAM, "push after next_buf");
        self.lens[self.count] = len;
        self.to[self.count] = Some(SockaddrStorage::from(to));
        self.count += 1;
    }

    /// Copies `datagram` in and queues it; false when the batch is full.
    pub fn push_copy(&mut self, datagram: &[u8], to: SocketAddr) -> bool {
        let Some(buf) = self.next_buf() else {
            return false;
        };
        let len = datagram.len().min(DATAGRAM);
        buf[..len].copy_from_slice(&datagram[..len]);
        self.push(len, to);
        true
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count == BATCH
    }

    /// Sends what is queued without blocking, as far as the socket takes
    /// it: [`SendBatch::send_from`] 0.
    pub fn send(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.send_from(fd, 0)
    }

    /// Sends datagrams `from..` without blocking, as far as the socket
    /// takes them. Ok(n): the first n of them went out (0: the socket's
    /// buffer is full). Err: the first of them failed (sendmmsg(2) reports
    /// a later failure as a short count). Nothing is cleared: the caller
    /// goes on from `from + n`, sending datagram `from + n` alone with
    /// [`SendBatch::get`] if it must, and ends with [`SendBatch::clear`].
    pub fn send_from(&mut self, fd: BorrowedFd<'_>, from: usize) -> io::Result<usize> {
        if from >= self.count {
            return Ok(0);
        }
        let mut bufs = self.bufs.iter();
        let lens = self.lens;
        let slices: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
            let buf = bufs.next().expect("one buffer per slot");
            [IoSlice::new(&buf[..lens[i]])]
        });
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        let sent = match sendmmsg(
            fd.as_raw_fd(),
            &mut self.headers,
            slices[from..self.count].iter(),
            &self.to[from..self.count],
            no_cmsgs,
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(r) => r.count(),
            Err(e) if would_block(e) => 0,
            Err(e) => return Err(e.into()),
        };
        Ok(sent)
    }

    /// Queued datagram `i` and its destination.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.count {
            return None;
        }
        let to = self.to[i].as_ref().and_then(sockaddr)?;
        Some((&self.bufs[i][..self.lens[i]], to))
    }

    pub fn clear(&mut self) {
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::Duration;

    #[test]
    fn a_batch_goes_out_in_one_call_and_comes_back_in_one_call() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut rx = RecvBatch::new();
        assert_eq!(rx.recv(server.as_fd()).unwrap(), 0, "nothing waits yet");
        for i in 0..40u8 {
            client
                .send_to(&[i; 20], server.local_addr().unwrap())
                .unwrap();
        }
        // Loopback delivers synchronously: all 40 wait now.
        assert_eq!(rx.recv(server.as_fd()).unwrap(), BATCH);
        let mut tx = SendBatch::new();
        for i in 0..rx.len() {
            let (datagram, from) = rx.get(i).unwrap();
            assert_eq!(from, client.local_addr().unwrap());
            assert_eq!(datagram, &[i as u8; 20][..]);
            let buf = tx.next_buf().unwrap();
            buf[..2].copy_from_slice(&[0xee, datagram[0]]);
            tx.push(2, from);
        }
        assert!(tx.is_full() && tx.next_buf().is_none());
        assert_eq!(tx.send(server.as_fd()).unwrap(), BATCH);
        tx.clear();
        for i in 0..BATCH {
            let mut buf = [0u8; 16];
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[0xee, i as u8]);
        }
        assert_eq!(rx.recv(server.as_fd()).unwrap(), 40 - BATCH);
        assert_eq!(rx.get(0).unwrap().0, &[BATCH as u8; 20][..]);
        assert!(rx.get(40 - BATCH).is_none(), "past the end");
    }

    #[test]
    fn an_oversized_datagram_is_not_handed_out_cut() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        client.send_to(&[1u8; DATAGRAM + 1], to).unwrap();
        client.send_to(&[2u8; 30], to).unwrap();
        let mut rx = RecvBatch::new();
        assert_eq!(rx.recv(server.as_fd()).unwrap(), 2);
        assert!(rx.get(0).is_none());
        assert_eq!(rx.get(1).unwrap().0, &[2u8; 30][..]);
    }

    #[test]
    fn ipv6_sources_and_destinations_round_trip() {
        let Ok(server) = UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 loopback on this machine
        };
        let client = UdpSocket::bind("[::1]:0").unwrap();
        client.send_to(b"v6", server.local_addr().unwrap()).unwrap();
        let mut rx = RecvBatch::new();
        assert_eq!(rx.recv(server.as_fd()).unwrap(), 1);
        let (datagram, from) = rx.get(0).unwrap();
        assert_eq!((datagram, from), (&b"v6"[..], client.local_addr().unwrap()));
        let mut tx = SendBatch::new();
        assert!(tx.push_copy(b"back", from));
        assert_eq!(tx.send(server.as_fd()).unwrap(), 1);
        let mut buf = [0u8; 8];
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"back");
    }

    #[test]
    fn a_failed_datagram_is_reported_and_the_rest_can_go_on_after_it() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let to = client.local_addr().unwrap();
        let mut tx = SendBatch::new();
        assert!(tx.push_copy(b"one", to));
        // Port 0 is no destination: sendto(2) refuses it (EINVAL).
        assert!(tx.push_copy(b"bad", "127.0.0.1:0".parse().unwrap()));
        assert!(tx.push_copy(b"three", to));
        assert_eq!(tx.send_from(server.as_fd(), 0).unwrap(), 1, "short count");
        assert!(tx.send_from(server.as_fd(), 1).is_err());
        assert_eq!(tx.get(1).unwrap().0, b"bad");
        assert_eq!(tx.send_from(server.as_fd(), 2).unwrap(), 1);
        assert_eq!(tx.send_from(server.as_fd(), 3).unwrap(), 0, "nothing left");
        let mut buf = [0u8; 8];
        for want in [&b"one"[..], b"three"] {
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
        }
    }

    #[test]
    fn a_dual_stack_socket_sees_ipv4_peers_as_mapped_and_answers_them() {
        let Ok(server) = UdpSocket::bind("[::]:0") else {
            return; // no IPv6 on this machine
        };
        let port = server.local_addr().unwrap().port();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        if client.send_to(b"v4", ("127.0.0.1", port)).is_err() {
            return; // IPV6_V6ONLY set system-wide
        }
        let mut rx = RecvBatch::new();
        // Twice, so the second call runs with the address length the
        // first one left in the headers.
        for round in 0..2 {
            if round == 1 {
                client.send_to(b"v4", ("127.0.0.1", port)).unwrap();
            }
            assert_eq!(rx.recv(server.as_fd()).unwrap(), 1);
            let (datagram, from) = rx.get(0).unwrap();
            assert_eq!(datagram, b"v4");
            let SocketAddr::V6(mapped) = from else {
                panic!("{from}");
            };
            assert_eq!(mapped.ip().to_ipv4_mapped(), Some([127, 0, 0, 1].into()));
            assert_eq!(mapped.port(), client.local_addr().unwrap().port());
            let mut tx = SendBatch::new();
            assert!(tx.push_copy(b"back", from));
            assert_eq!(tx.send(server.as_fd()).unwrap(), 1);
            let mut buf = [0u8; 8];
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"back");
        }
    }
}
