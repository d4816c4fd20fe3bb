//! RADIUS packet codes (RFC 2865 §4, RFC 2866 §4, RFC 5176 §2, RFC 5997 §2).

use std::fmt;

/// A packet code. Open: unknown codes parse and print as numbers, so the
/// server can count and drop them instead of failing to decode.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u8);

impl Code {
    pub const ACCESS_REQUEST: Code = Code(1);
    pub const ACCESS_ACCEPT: Code = Code(2);
    pub const ACCESS_REJECT: Code = Code(3);
    pub const ACCOUNTING_REQUEST: Code = Code(4);
    pub const ACCOUNTING_RESPONSE: Code = Code(5);
    pub const ACCESS_CHALLENGE: Code = Code(11);
    pub const STATUS_SERVER: Code = Code(12);
    pub const STATUS_CLIENT: Code = Code(13);
    pub const DISCONNECT_REQUEST: Code = Code(40);
    pub const DISCONNECT_ACK: Code = Code(41);
    pub const DISCONNECT_NAK: Code = Code(42);
    pub const COA_REQUEST: Code = Code(43);
    pub const COA_ACK: Code = Code(44);
    pub const COA_NAK: Code = Code(45);

    /// The registered name, or `None` for a code this build does not know.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Code::ACCESS_REQUEST => "Access-Request",
            Code::ACCESS_ACCEPT => "Access-Accept",
            Code::ACCESS_REJECT => "Access-Reject",
            Code::ACCOUNTING_REQUEST => "Accounting-Request",
            Code::ACCOUNTING_RESPONSE => "Accounting-Response",
            Code::ACCESS_CHALLENGE => "Access-Challenge",
            Code::STATUS_SERVER => "Status-Server",
            Code::STATUS_CLIENT => "Status-Client",
            Code::DISCONNECT_REQUEST => "Disconnect-Request",
            Code::DISCONNECT_ACK => "Disconnect-ACK",
            Code::DISCONNECT_NAK => "Disconnect-NAK",
            Code::COA_REQUEST => "CoA-Request",
            Code::COA_ACK => "CoA-ACK",
            Code::COA_NAK => "CoA-NAK",
            _ => return None,
        })
    }

    /// How the Authenticator field of a packet with this code is formed,
    /// which also decides what the Message-Authenticator HMAC covers.
    pub fn authenticator_kind(self) -> AuthenticatorKind {
        match self {
            Code::ACCESS_REQUEST | Code::STATUS_SERVER | Code::STATUS_CLIENT => {
                AuthenticatorKind::Random
            }
            // RFC 2866 §3, RFC 5176 §3.
            Code::ACCOUNTING_REQUEST | Code::DISCONNECT_REQUEST | Code::COA_REQUEST => {
                AuthenticatorKind::RequestDigest
            }
            _ => AuthenticatorKind::Response,
        }
    }
}

/// The three ways RADIUS fills the 16-byte Authenticator field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthenticatorKind {
    /// Access-Request and Status-Server: 16 unpredictable bytes chosen by the client.
    Random,
    /// Accounting-, CoA- and Disconnect-Request: MD5 over the packet with a
    /// zero authenticator, then the secret (RFC 2866 §3).
    RequestDigest,
    /// Every reply: MD5 over the reply with the request's authenticator, then
    /// the secret (RFC 2865 §3).
    Response,
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}({})", self.0),
            None => write!(f, "Code({})", self.0),
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "code {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_survive_and_print_as_numbers() {
        assert_eq!(Code(99).name(), None);
        assert_eq!(format!("{}", Code(99)), "code 99");
        assert_eq!(format!("{:?}", Code::COA_NAK), "CoA-NAK(45)");
    }

    #[test]
    fn requests_that_digest_their_authenticator_are_the_rfc_2866_and_5176_ones() {
        for code in [
            Code::ACCOUNTING_REQUEST,
            Code::COA_REQUEST,
            Code::DISCONNECT_REQUEST,
        ] {
            assert_eq!(code.authenticator_kind(), AuthenticatorKind::RequestDigest);
        }
        assert_eq!(
            Code::STATUS_SERVER.authenticator_kind(),
            AuthenticatorKind::Random
        );
        assert_eq!(
            Code::COA_ACK.authenticator_kind(),
            AuthenticatorKind::Response
        );
    }
}
