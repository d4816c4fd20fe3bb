//! A borrowed, allocation-free view of a received RADIUS packet.
//!
//! [`Packet::parse`] checks every length once (RFC 2865 §3 and §5), so the
//! accessors and iterators afterwards cannot run out of bounds and need no
//! error paths of their own.

use std::net::Ipv4Addr;

use super::code::Code;
use super::dict::attr;
use super::error::ParseError;

/// Code (1) + Identifier (1) + Length (2) + Authenticator (16).
pub const HEADER_LEN: usize = 20;
/// RFC 2865 §3: the maximum packet length.
pub const MAX_PACKET_LEN: usize = 4096;
/// The largest value one attribute can carry (255 - type - length).
pub const MAX_ATTR_VALUE_LEN: usize = 253;

/// A validated RADIUS packet borrowed from a receive buffer.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// Exactly `Length` bytes; datagram bytes past it are padding and are
    /// ignored (RFC 2865 §3).
    bytes: &'a [u8],
    /// Offset of the Message-Authenticator's 16-byte value, if present.
    message_authenticator: Option<usize>,
}

impl<'a> Packet<'a> {
    /// Validates `datagram` as a RADIUS packet. Never panics, whatever the bytes.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, ParseError> {
        if datagram.len() < HEADER_LEN {
            return Err(ParseError::TooShort);
        }
        let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
        if !(HEADER_LEN..=MAX_PACKET_LEN).contains(&length) {
            return Err(ParseError::BadLength);
        }
        if length > datagram.len() {
            return Err(ParseError::Truncated);
        }
        let bytes = &datagram[..length];

        let mut message_authenticator = None;
        let mut pos = HEADER_LEN;
        while pos < length {
            if length - pos < 2 {
                return Err(ParseError::AttributeTooShort);
            }
            let attr_len = usize::from(bytes[pos + 1]);
            if attr_len < 2 {
                return Err(ParseError::AttributeTooShort);
            }
            if attr_len > length - pos {
                return Err(ParseError::AttributeOverrun);
            }
            if bytes[pos] == attr::MESSAGE_AUTHENTICATOR {
                if attr_len != 18 {
                    return Err(ParseError::BadMessageAuthenticator);
                }
                if message_authenticator.is_some() {
                    return Err(ParseError::DuplicateMessageAuthenticator);
                }
                message_authenticator = Some(pos + 2);
            }
            pos += attr_len;
        }
        Ok(Packet {
            bytes,
            message_authenticator,
        })
    }

    pub fn code(&self) -> Code {
        Code(self.bytes[0])
    }

    pub fn identifier(&self) -> u8 {
        self.bytes[1]
    }

    /// The 16-byte Authenticator field.
    pub fn authenticator(&self) -> &'a [u8; 16] {
        self.bytes[4..HEADER_LEN]
            .try_into()
            .expect("parse() guarantees the 20-byte header")
    }

    /// The packet's bytes, exactly `Length` long.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// All attributes in wire order, duplicates included.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            rest: &self.bytes[HEADER_LEN..],
        }
    }

    /// The value of the first attribute of type `ty`.
    pub fn attr(&self, ty: u8) -> Option<&'a [u8]> {
        self.attributes().find(|a| a.ty == ty).map(|a| a.value)
    }

    /// Where the value of the first attribute of type `ty` is in the
    /// packet's bytes: for a caller that keeps the datagram but not the
    /// parsed packet (the shard's logging).
    pub fn attr_range(&self, ty: u8) -> Option<std::ops::Range<usize>> {
        let mut at = HEADER_LEN;
        for a in self.attributes() {
            if a.ty == ty {
                return Some(at + 2..at + 2 + a.value.len());
            }
            at += 2 + a.value.len();
        }
        None
    }

    /// The first attribute of type `ty` as a 32-bit integer (RFC 2865 §5 "integer").
    pub fn attr_u32(&self, ty: u8) -> Option<u32> {
        self.attr(ty).and_then(value_u32)
    }

    /// The first attribute of type `ty` as an IPv4 address.
    pub fn attr_ipv4(&self, ty: u8) -> Option<Ipv4Addr> {
        self.attr(ty).and_then(value_u32).map(Ipv4Addr::from)
    }

    /// The value of the first vendor sub-attribute `vendor`/`vendor_type`.
    pub fn vendor_attr(&self, vendor: u32, vendor_type: u8) -> Option<&'a [u8]> {
        self.attributes()
            .filter_map(|a| a.vendor_specific())
            .filter(|vsa| vsa.vendor_id == vendor)
            .flat_map(|vsa| vsa.attributes())
            .find(|sub| sub.ty == vendor_type)
            .map(|sub| sub.value)
    }

    /// Offset of the Message-Authenticator value within [`Self::as_bytes`].
    pub fn message_authenticator_offset(&self) -> Option<usize> {
        self.message_authenticator
    }

    /// The Message-Authenticator value, if the packet carries one.
    pub fn message_authenticator(&self) -> Option<&'a [u8; 16]> {
        self.message_authenticator.map(|off| {
            self.bytes[off..off + 16]
                .try_into()
                .expect("parse() checked the attribute is 18 bytes")
        })
    }

    /// Whether the Message-Authenticator is the first attribute, as BlastRADIUS
    /// mitigations (draft-ietf-radext-deprecating-radius) recommend.
    pub fn message_authenticator_is_first(&self) -> bool {
        self.message_authenticator == Some(HEADER_LEN + 2)
    }
}

/// A 4-byte big-endian integer value, or `None` if the length is wrong.
pub fn value_u32(value: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(value).ok().map(u32::from_be_bytes)
}

/// One attribute: its type and its value (without the 2-byte header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attribute<'a> {
    pub ty: u8,
    pub value: &'a [u8],
}

impl<'a> Attribute<'a> {
    /// The Vendor-Specific view of this attribute (RFC 2865 §5.26), if it is
    /// one with at least a Vendor-Id.
    pub fn vendor_specific(&self) -> Option<VendorSpecific<'a>> {
        if self.ty != attr::VENDOR_SPECIFIC || self.value.len() < 4 {
            return None;
        }
        let (id, data) = self.value.split_at(4);
        Some(VendorSpecific {
            vendor_id: u32::from_be_bytes(id.try_into().expect("split_at(4)")),
            data,
        })
    }
}

/// Iterator over the attributes of a [`Packet`].
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Attribute<'a>;

    fn next(&mut self) -> Option<Attribute<'a>> {
        let (attribute, rest) = split_tlv(self.rest)?;
        self.rest = rest;
        Some(attribute)
    }
}

/// A Vendor-Specific attribute: Vendor-Id and the vendor's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VendorSpecific<'a> {
    pub vendor_id: u32,
    pub data: &'a [u8],
}

impl<'a> VendorSpecific<'a> {
    /// Sub-attributes in the RFC 2865 §5.26 suggested format (1-byte type,
    /// 1-byte length). Iteration stops at the first malformed sub-attribute:
    /// the VSA is then opaque, which is how vendors with other layouts survive.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes { rest: self.data }
    }
}

/// Splits one type-length-value off the front of `bytes`; `None` when empty
/// or malformed.
fn split_tlv(bytes: &[u8]) -> Option<(Attribute<'_>, &[u8])> {
    let (&ty, after_ty) = bytes.split_first()?;
    let len = usize::from(*after_ty.first()?);
    if len < 2 || len > bytes.len() {
        return None;
    }
    Some((
        Attribute {
            ty,
            value: &bytes[2..len],
        },
        &bytes[len..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(code: u8, len: u16) -> Vec<u8> {
        let mut p = vec![code, 7];
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[0xAA; 16]);
        p
    }

    #[test]
    fn a_bare_header_is_a_packet_without_attributes() {
        let p = header(1, 20);
        let packet = Packet::parse(&p).unwrap();
        assert_eq!(packet.code(), Code::ACCESS_REQUEST);
        assert_eq!(packet.identifier(), 7);
        assert_eq!(packet.attributes().count(), 0);
    }

    #[test]
    fn lengths_outside_the_rfc_range_are_rejected() {
        assert_eq!(Packet::parse(&[1; 19]).unwrap_err(), ParseError::TooShort);
        assert_eq!(
            Packet::parse(&header(1, 19)).unwrap_err(),
            ParseError::BadLength
        );
        let mut big = header(1, 4097);
        big.resize(5000, 0);
        assert_eq!(Packet::parse(&big).unwrap_err(), ParseError::BadLength);
        assert_eq!(
            Packet::parse(&header(1, 21)).unwrap_err(),
            ParseError::Truncated
        );
    }

    #[test]
    fn bytes_past_the_length_field_are_padding() {
        let mut p = header(1, 20);
        p.extend_from_slice(&[0xFF; 9]);
        let packet = Packet::parse(&p).unwrap();
        assert_eq!(packet.as_bytes().len(), 20);
    }

    #[test]
    fn malformed_attributes_are_rejected() {
        let mut p = header(1, 22);
        p.extend_from_slice(&[1, 1]);
        assert_eq!(
            Packet::parse(&p).unwrap_err(),
            ParseError::AttributeTooShort
        );
        let mut p = header(1, 23);
        p.extend_from_slice(&[1, 2, 9]);
        assert_eq!(
            Packet::parse(&p).unwrap_err(),
            ParseError::AttributeTooShort
        );
        let mut p = header(1, 24);
        p.extend_from_slice(&[1, 5, 9, 9]);
        assert_eq!(Packet::parse(&p).unwrap_err(), ParseError::AttributeOverrun);
    }

    #[test]
    fn a_second_message_authenticator_is_rejected() {
        let mut p = header(1, 56);
        for _ in 0..2 {
            p.extend_from_slice(&[80, 18]);
            p.extend_from_slice(&[0; 16]);
        }
        assert_eq!(
            Packet::parse(&p).unwrap_err(),
            ParseError::DuplicateMessageAuthenticator
        );
    }

    #[test]
    fn vendor_sub_attributes_are_found_by_vendor_and_type() {
        let mut p = header(1, 20);
        // Vendor-Specific: MikroTik (14988), Rate-Limit (8) = "1k/2k".
        p.extend_from_slice(&[26, 13, 0, 0, 0x3A, 0x8C, 8, 7]);
        p.extend_from_slice(b"1k/2k");
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        let packet = Packet::parse(&p).unwrap();
        assert_eq!(packet.vendor_attr(14988, 8), Some(&b"1k/2k"[..]));
        assert_eq!(packet.vendor_attr(311, 8), None);
    }

    #[test]
    fn a_malformed_vendor_payload_is_opaque_not_an_error() {
        let mut p = header(1, 20);
        p.extend_from_slice(&[26, 9, 0, 0, 0x3A, 0x8C, 8, 0, 1]);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        let packet = Packet::parse(&p).unwrap();
        assert_eq!(packet.vendor_attr(14988, 8), None);
        assert_eq!(packet.attributes().count(), 1);
    }
}
