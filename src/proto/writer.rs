//! Building packets into a caller-owned buffer, then signing them.
//!
//! The writer never allocates: the shard loop owns one 4096-byte buffer per
//! socket and reuses it for every reply.

use std::net::Ipv4Addr;

use super::authenticator::{message_authenticator, packet_digest};
use super::code::{AuthenticatorKind, Code};
use super::dict::attr;
use super::error::EncodeError;
use super::packet::{Packet, HEADER_LEN, MAX_ATTR_VALUE_LEN, MAX_PACKET_LEN};
use super::secret::Secret;

/// A buffer that holds the largest RADIUS packet.
pub type PacketBuf = [u8; MAX_PACKET_LEN];

/// Vendor-Specific header: type, length, 4-byte Vendor-Id, vendor type, vendor length.
const VSA_OVERHEAD: usize = 8;

/// Appends attributes to a packet in a [`PacketBuf`].
#[derive(Debug)]
pub struct PacketWriter<'b> {
    buf: &'b mut PacketBuf,
    len: usize,
    /// Offset of the Message-Authenticator value, once reserved.
    message_authenticator: Option<usize>,
}

impl<'b> PacketWriter<'b> {
    /// Starts a packet. `authenticator` is the random Request Authenticator
    /// for Access-Request and Status-Server; for replies pass the request's
    /// authenticator (it is replaced when signing); for accounting, CoA and
    /// Disconnect requests its value does not matter.
    pub fn new(
        buf: &'b mut PacketBuf,
        code: Code,
        identifier: u8,
        authenticator: &[u8; 16],
    ) -> Self {
        buf[0] = code.0;
        buf[1] = identifier;
        buf[4..HEADER_LEN].copy_from_slice(authenticator);
        PacketWriter {
            buf,
            len: HEADER_LEN,
            message_authenticator: None,
        }
    }

    pub fn code(&self) -> Code {
        Code(self.buf[0])
    }

    /// Bytes written so far, header included.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// Appends an attribute with `value` (at most 253 bytes).
    pub fn attr(&mut self, ty: u8, value: &[u8]) -> Result<(), EncodeError> {
        self.attr_with(ty, value.len(), |out| out.copy_from_slice(value))
    }

    /// Appends an attribute of `value_len` bytes that `fill` writes in place.
    pub fn attr_with(
        &mut self,
        ty: u8,
        value_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), EncodeError> {
        if value_len > MAX_ATTR_VALUE_LEN {
            return Err(EncodeError::ValueTooLong);
        }
        let end = self.len + 2 + value_len;
        if end > MAX_PACKET_LEN {
            return Err(EncodeError::PacketTooLong);
        }
        self.buf[self.len] = ty;
        self.buf[self.len + 1] = (2 + value_len) as u8;
        fill(&mut self.buf[self.len + 2..end]);
        self.len = end;
        Ok(())
    }

    /// Appends a 32-bit integer attribute (RFC 2865 §5 "integer", "time").
    pub fn attr_u32(&mut self, ty: u8, value: u32) -> Result<(), EncodeError> {
        self.attr(ty, &value.to_be_bytes())
    }

    /// Appends an IPv4 address attribute.
    pub fn attr_ipv4(&mut self, ty: u8, addr: Ipv4Addr) -> Result<(), EncodeError> {
        self.attr(ty, &addr.octets())
    }

    /// Appends a Vendor-Specific attribute holding one sub-attribute.
    pub fn vendor_attr(
        &mut self,
        vendor: u32,
        vendor_type: u8,
        value: &[u8],
    ) -> Result<(), EncodeError> {
        self.vendor_attr_with(vendor, vendor_type, value.len(), |out| {
            out.copy_from_slice(value)
        })
    }

    /// Appends a Vendor-Specific 32-bit integer sub-attribute.
    pub fn vendor_attr_u32(
        &mut self,
        vendor: u32,
        vendor_type: u8,
        value: u32,
    ) -> Result<(), EncodeError> {
        self.vendor_attr(vendor, vendor_type, &value.to_be_bytes())
    }

    /// Appends a Vendor-Specific sub-attribute of `value_len` bytes written
    /// in place by `fill` (used for MPPE keys, encrypted straight into the packet).
    pub fn vendor_attr_with(
        &mut self,
        vendor: u32,
        vendor_type: u8,
        value_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), EncodeError> {
        if value_len + VSA_OVERHEAD - 2 > MAX_ATTR_VALUE_LEN {
            return Err(EncodeError::ValueTooLong);
        }
        self.attr_with(attr::VENDOR_SPECIFIC, value_len + VSA_OVERHEAD - 2, |out| {
            out[..4].copy_from_slice(&vendor.to_be_bytes());
            out[4] = vendor_type;
            out[5] = (value_len + 2) as u8;
            fill(&mut out[6..]);
        })
    }

    /// Appends every Proxy-State of `request`, unmodified and in order
    /// (RFC 2865 §5.33, RFC 2866 §4.1): a proxy in front of us matches our
    /// reply to its own request by them.
    pub fn proxy_states(&mut self, request: &Packet<'_>) -> Result<(), EncodeError> {
        for a in request.attributes().filter(|a| a.ty == attr::PROXY_STATE) {
            self.attr(attr::PROXY_STATE, a.value)?;
        }
        Ok(())
    }

    /// Reserves a Message-Authenticator, filled in when the packet is signed.
    /// Call it first so the attribute leads the packet (BlastRADIUS).
    pub fn message_authenticator(&mut self) -> Result<(), EncodeError> {
        if self.message_authenticator.is_some() {
            return Ok(());
        }
        self.attr(attr::MESSAGE_AUTHENTICATOR, &[0; 16])?;
        self.message_authenticator = Some(self.len - 16);
        Ok(())
    }

    /// Signs and returns a request. Access-Request and Status-Server keep
    /// their random authenticator; Accounting-, CoA- and Disconnect-Requests
    /// get the RFC 2866 §3 Request Authenticator, computed after the
    /// Message-Authenticator (RFC 5176 §3.1).
    pub fn finish_request(self, secret: &Secret) -> &'b [u8] {
        let kind = self.code().authenticator_kind();
        debug_assert_ne!(
            kind,
            AuthenticatorKind::Response,
            "use finish_response for replies"
        );
        let (buf, len, ma) = self.into_parts();
        if kind == AuthenticatorKind::RequestDigest {
            buf[4..HEADER_LEN].fill(0);
        }
        let authenticator: [u8; 16] = buf[4..HEADER_LEN].try_into().expect("16-byte header field");
        if let Some(off) = ma {
            let mac = message_authenticator(&buf[..len], off, &authenticator, secret);
            buf[off..off + 16].copy_from_slice(&mac);
        }
        if kind == AuthenticatorKind::RequestDigest {
            let digest = packet_digest(&buf[..len], &authenticator, secret);
            buf[4..HEADER_LEN].copy_from_slice(&digest);
        }
        &buf[..len]
    }

    /// Signs and returns a reply to the request whose authenticator is
    /// `request_authenticator` (RFC 2865 §3, RFC 3579 §3.2).
    pub fn finish_response(self, request_authenticator: &[u8; 16], secret: &Secret) -> &'b [u8] {
        let (buf, len, ma) = self.into_parts();
        if let Some(off) = ma {
            let mac = message_authenticator(&buf[..len], off, request_authenticator, secret);
            buf[off..off + 16].copy_from_slice(&mac);
        }
        let digest = packet_digest(&buf[..len], request_authenticator, secret);
        buf[4..HEADER_LEN].copy_from_slice(&digest);
        &buf[..len]
    }

    /// The packet with its Length set but its authenticators left as they
    /// are: for round-trip checks, never for the wire.
    pub fn finish_unsigned(self) -> &'b [u8] {
        let (buf, len, _) = self.into_parts();
        &buf[..len]
    }

    fn into_parts(self) -> (&'b mut PacketBuf, usize, Option<usize>) {
        let len = self.len;
        self.buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (self.buf, len, self.message_authenticator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Packet;

    #[test]
    fn a_written_packet_parses_back_with_the_same_attributes() {
        let mut buf = [0u8; MAX_PACKET_LEN];
        let mut w = PacketWriter::new(&mut buf, Code::ACCESS_ACCEPT, 42, &[1; 16]);
        w.message_authenticator().unwrap();
        w.attr_u32(attr::ACCT_INTERIM_INTERVAL, 30).unwrap();
        w.vendor_attr(14988, 8, b"2000k/10000k").unwrap();
        let bytes = w.finish_response(&[1; 16], &Secret::new(b"x")).to_vec();
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!(p.identifier(), 42);
        assert!(p.message_authenticator_is_first());
        assert_eq!(p.attr_u32(attr::ACCT_INTERIM_INTERVAL), Some(30));
        assert_eq!(p.vendor_attr(14988, 8), Some(&b"2000k/10000k"[..]));
    }

    #[test]
    fn oversized_values_and_packets_are_refused() {
        let mut buf = [0u8; MAX_PACKET_LEN];
        let mut w = PacketWriter::new(&mut buf, Code::ACCESS_ACCEPT, 1, &[0; 16]);
        assert_eq!(w.attr(1, &[0; 254]), Err(EncodeError::ValueTooLong));
        assert_eq!(
            w.vendor_attr(1, 1, &[0; 248]),
            Err(EncodeError::ValueTooLong)
        );
        w.vendor_attr(1, 1, &[0; 247]).unwrap();
        while w.attr(18, &[b'x'; 253]).is_ok() {}
        assert!(w.len() <= MAX_PACKET_LEN);
        assert_eq!(w.attr(18, &[b'x'; 253]), Err(EncodeError::PacketTooLong));
    }
}
