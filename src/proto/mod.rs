//! The RADIUS wire format, without IO: parse a datagram into a borrowed
//! [`Packet`], build replies and requests with a [`PacketWriter`] into a
//! caller-owned buffer, and compute or check every authenticator.

pub mod authenticator;
mod code;
pub mod dict;
pub mod dictionary;
mod error;
mod packet;
pub mod password;
mod secret;
mod writer;

pub use authenticator::MessageAuthenticatorCheck;
pub use code::{AuthenticatorKind, Code};
pub use error::{EncodeError, ParseError};
pub use packet::{
    value_u32, Attribute, Attributes, Packet, VendorSpecific, HEADER_LEN, MAX_ATTR_VALUE_LEN,
    MAX_PACKET_LEN,
};
pub use secret::Secret;
pub use writer::{PacketBuf, PacketWriter};
