//! Why a datagram was not a RADIUS packet we will act on. These are silent
//! discards on the wire (RFC 2865 §3): the server counts them by
//! [`ParseError::metric_label`] and sends nothing back.

use std::fmt;

/// A datagram that is not a well-formed RADIUS packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// Fewer than the 20 header bytes.
    TooShort,
    /// The Length field is outside 20..=4096.
    BadLength,
    /// The Length field claims more bytes than the datagram holds.
    Truncated,
    /// An attribute with a length below 2, or a lone type byte at the end.
    AttributeTooShort,
    /// An attribute running past the packet's Length.
    AttributeOverrun,
    /// A Message-Authenticator whose length is not 18 (RFC 3579 §3.2).
    BadMessageAuthenticator,
    /// More than one Message-Authenticator (RFC 3579 §3.2 allows one).
    DuplicateMessageAuthenticator,
}

impl ParseError {
    /// A short, stable label for `shardius_dropped_packets_total{reason=...}`.
    pub fn metric_label(self) -> &'static str {
        match self {
            ParseError::TooShort => "too_short",
            ParseError::BadLength => "bad_length",
            ParseError::Truncated => "truncated",
            ParseError::AttributeTooShort => "attribute_too_short",
            ParseError::AttributeOverrun => "attribute_overrun",
            ParseError::BadMessageAuthenticator => "message_authenticator_length",
            ParseError::DuplicateMessageAuthenticator => "duplicate_message_authenticator",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::TooShort => "datagram shorter than the 20-byte RADIUS header",
            ParseError::BadLength => "length field outside 20..=4096",
            ParseError::Truncated => "length field larger than the datagram",
            ParseError::AttributeTooShort => "attribute length below 2",
            ParseError::AttributeOverrun => "attribute runs past the packet length",
            ParseError::BadMessageAuthenticator => "Message-Authenticator is not 16 bytes",
            ParseError::DuplicateMessageAuthenticator => "more than one Message-Authenticator",
        })
    }
}

impl std::error::Error for ParseError {}

/// A packet that does not fit while being built. Only reachable with
/// oversized inputs (e.g. a radreply value longer than 253 bytes); the
/// caller reports it and sends nothing rather than a truncated packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The attribute value is longer than one attribute can carry.
    ValueTooLong,
    /// The packet would exceed 4096 bytes or the caller's buffer.
    PacketTooLong,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::ValueTooLong => "attribute value longer than 253 bytes",
            EncodeError::PacketTooLong => "packet longer than 4096 bytes or the buffer",
        })
    }
}

impl std::error::Error for EncodeError {}
