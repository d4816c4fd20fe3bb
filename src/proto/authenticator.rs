//! Packet authenticators: the Request/Response Authenticator digests of
//! RFC 2865 §3 / RFC 2866 §3 / RFC 5176 §3 and the Message-Authenticator
//! HMAC of RFC 3579 §3.2 (RFC 2869 §5.14). All comparisons are constant-time.

use hmac::Mac;
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use super::code::AuthenticatorKind;
use super::packet::{Packet, HEADER_LEN};
use super::secret::Secret;

const ZERO_AUTHENTICATOR: [u8; 16] = [0; 16];

/// What checking a packet's Message-Authenticator found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageAuthenticatorCheck {
    Absent,
    Valid,
    Invalid,
}

/// MD5(Code | Identifier | Length | `authenticator` | Attributes | Secret):
/// the Response Authenticator when `authenticator` is the request's, the
/// Request Authenticator of accounting/CoA requests when it is all zeros.
pub fn packet_digest(bytes: &[u8], authenticator: &[u8; 16], secret: &Secret) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(&bytes[..4]);
    md5.update(authenticator);
    md5.update(&bytes[HEADER_LEN..]);
    md5.update(secret.as_bytes());
    md5.finalize().into()
}

/// HMAC-MD5 over the packet with the Message-Authenticator value taken as
/// zeros and the Authenticator field replaced by `authenticator` (RFC 3579
/// §3.2). `ma_offset` is where the 16-byte value starts in `bytes`.
pub fn message_authenticator(
    bytes: &[u8],
    ma_offset: usize,
    authenticator: &[u8; 16],
    secret: &Secret,
) -> [u8; 16] {
    hmac_over(bytes, ma_offset, authenticator, secret)
        .finalize()
        .into_bytes()
        .into()
}

fn hmac_over(
    bytes: &[u8],
    ma_offset: usize,
    authenticator: &[u8; 16],
    secret: &Secret,
) -> super::secret::HmacMd5 {
    let mut mac = secret.hmac();
    mac.update(&bytes[..4]);
    mac.update(authenticator);
    mac.update(&bytes[HEADER_LEN..ma_offset]);
    mac.update(&ZERO_AUTHENTICATOR);
    mac.update(&bytes[ma_offset + 16..]);
    mac
}

/// Checks the Message-Authenticator of `packet`, if it carries one.
///
/// `request_authenticator` is the authenticator of the request a reply
/// answers; it is needed (and only used) when `packet` is a reply.
/// Accounting, CoA and Disconnect requests are checked with a zero
/// Authenticator field, as they are signed before their Request
/// Authenticator is computed (RFC 5176 §3.1).
pub fn check_message_authenticator(
    packet: &Packet<'_>,
    secret: &Secret,
    request_authenticator: Option<&[u8; 16]>,
) -> MessageAuthenticatorCheck {
    let Some(offset) = packet.message_authenticator_offset() else {
        return MessageAuthenticatorCheck::Absent;
    };
    let authenticator = match packet.code().authenticator_kind() {
        AuthenticatorKind::Random => packet.authenticator(),
        AuthenticatorKind::RequestDigest => &ZERO_AUTHENTICATOR,
        AuthenticatorKind::Response => match request_authenticator {
            Some(a) => a,
            None => return MessageAuthenticatorCheck::Invalid,
        },
    };
    let bytes = packet.as_bytes();
    // verify_slice compares in constant time.
    match hmac_over(bytes, offset, authenticator, secret).verify_slice(&bytes[offset..offset + 16])
    {
        Ok(()) => MessageAuthenticatorCheck::Valid,
        Err(_) => MessageAuthenticatorCheck::Invalid,
    }
}

/// Checks the Request Authenticator of an Accounting-, CoA- or
/// Disconnect-Request (RFC 2866 §3, RFC 5176 §3). Access-Requests carry a
/// random authenticator and always pass.
pub fn verify_request_authenticator(packet: &Packet<'_>, secret: &Secret) -> bool {
    match packet.code().authenticator_kind() {
        AuthenticatorKind::RequestDigest => {
            let expected = packet_digest(packet.as_bytes(), &ZERO_AUTHENTICATOR, secret);
            expected.ct_eq(packet.authenticator()).into()
        }
        AuthenticatorKind::Random => true,
        AuthenticatorKind::Response => false,
    }
}

/// Checks a reply against the request it answers: its Response
/// Authenticator, and its Message-Authenticator when present.
pub fn verify_response(
    reply: &Packet<'_>,
    request_authenticator: &[u8; 16],
    secret: &Secret,
) -> bool {
    let expected = packet_digest(reply.as_bytes(), request_authenticator, secret);
    let digest_ok: bool = expected.ct_eq(reply.authenticator()).into();
    digest_ok
        && match check_message_authenticator(reply, secret, Some(request_authenticator)) {
            MessageAuthenticatorCheck::Invalid => freeradius_coa_answer(reply, secret),
            _ => true,
        }
}

/// FreeRADIUS 3.2 computes the Message-Authenticator of the CoA and
/// Disconnect answers it sends (its own, and those it proxies back from a
/// NAS) over a zeroed Authenticator field, not the request's as RFC 5176
/// §3.1 says. Its Response Authenticator is right, and the HMAC is still
/// keyed with the secret, so such an answer is taken: without this, no
/// CoA sent through a FreeRADIUS proxy would ever be acknowledged.
/// Checked against FreeRADIUS 3.2.1 by `tests/it/proxied.rs`.
fn freeradius_coa_answer(reply: &Packet<'_>, secret: &Secret) -> bool {
    use crate::proto::Code;
    matches!(
        reply.code(),
        Code::COA_ACK | Code::COA_NAK | Code::DISCONNECT_ACK | Code::DISCONNECT_NAK
    ) && check_message_authenticator(reply, secret, Some(&[0; 16]))
        == MessageAuthenticatorCheck::Valid
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Code, PacketWriter};

    #[test]
    fn an_accounting_request_signed_by_the_writer_verifies() {
        let secret = Secret::new(b"s3cr3t");
        let mut buf = [0u8; 4096];
        let mut w = PacketWriter::new(&mut buf, Code::ACCOUNTING_REQUEST, 9, &[0; 16]);
        w.attr(1, b"alice").unwrap();
        let bytes = w.finish_request(&secret).to_vec();
        let packet = Packet::parse(&bytes).unwrap();
        assert!(verify_request_authenticator(&packet, &secret));
        assert!(!verify_request_authenticator(
            &packet,
            &Secret::new(b"other")
        ));
    }

    #[test]
    fn a_coa_request_with_message_authenticator_verifies_both_ways() {
        let secret = Secret::new(b"s3cr3t");
        let mut buf = [0u8; 4096];
        let mut w = PacketWriter::new(&mut buf, Code::COA_REQUEST, 1, &[0; 16]);
        w.message_authenticator().unwrap();
        w.attr(1, b"alice").unwrap();
        let bytes = w.finish_request(&secret).to_vec();
        let packet = Packet::parse(&bytes).unwrap();
        assert!(verify_request_authenticator(&packet, &secret));
        assert_eq!(
            check_message_authenticator(&packet, &secret, None),
            MessageAuthenticatorCheck::Valid
        );
    }

    #[test]
    fn a_reply_is_checked_against_its_request_authenticator() {
        let secret = Secret::new(b"s3cr3t");
        let request_auth = [7u8; 16];
        let mut buf = [0u8; 4096];
        let mut w = PacketWriter::new(&mut buf, Code::ACCESS_ACCEPT, 1, &request_auth);
        w.message_authenticator().unwrap();
        let bytes = w.finish_response(&request_auth, &secret).to_vec();
        let reply = Packet::parse(&bytes).unwrap();
        assert!(verify_response(&reply, &request_auth, &secret));
        assert!(!verify_response(&reply, &[8u8; 16], &secret));
        assert_eq!(
            check_message_authenticator(&reply, &secret, None),
            MessageAuthenticatorCheck::Invalid
        );
    }

    /// A Disconnect-ACK (or `code`) with a Message-Authenticator computed
    /// over `ma_vector`, and a correct Response Authenticator.
    fn answer(code: u8, request_auth: &[u8; 16], ma_vector: &[u8; 16], secret: &Secret) -> Vec<u8> {
        let mut bytes = vec![code, 7, 0, 38];
        bytes.extend_from_slice(&[0; 16]);
        bytes.extend_from_slice(&[80, 18]);
        bytes.extend_from_slice(&[0; 16]);
        let ma = message_authenticator(&bytes, 22, ma_vector, secret);
        bytes[22..38].copy_from_slice(&ma);
        let digest = packet_digest(&bytes, request_auth, secret);
        bytes[4..20].copy_from_slice(&digest);
        bytes
    }

    #[test]
    fn coa_answers_signed_as_freeradius_signs_them_verify_and_nothing_else_does() {
        let secret = Secret::new(b"s3cr3t");
        let request_auth = [9u8; 16];
        for code in [41u8, 42, 44, 45] {
            // RFC 5176 §3.1, and FreeRADIUS 3.2's zeroed vector.
            for vector in [request_auth, [0; 16]] {
                let bytes = answer(code, &request_auth, &vector, &secret);
                let p = Packet::parse(&bytes).unwrap();
                assert!(verify_response(&p, &request_auth, &secret), "{code}");
            }
            // Any other vector, or another secret: refused.
            let bytes = answer(code, &request_auth, &[1; 16], &secret);
            assert!(!verify_response(
                &Packet::parse(&bytes).unwrap(),
                &request_auth,
                &secret
            ));
            let bytes = answer(code, &request_auth, &[0; 16], &Secret::new(b"other"));
            assert!(!verify_response(
                &Packet::parse(&bytes).unwrap(),
                &request_auth,
                &secret
            ));
        }
        // An Access-Accept signed over zeros is not taken (only CoA answers).
        let bytes = answer(2, &request_auth, &[0; 16], &secret);
        assert!(!verify_response(
            &Packet::parse(&bytes).unwrap(),
            &request_auth,
            &secret
        ));
    }
}
