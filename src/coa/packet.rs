//! CoA-Request and Disconnect-Request (RFC 5176) as bytes: building a
//! request for one session and checking the NAS's answer. Pure functions:
//! no sockets, no clock (the Event-Timestamp is passed in).

use std::net::Ipv4Addr;

use crate::proto::authenticator::verify_response;
use crate::proto::dict::{attr, error_cause, mikrotik, vendor};
use crate::proto::{Code, EncodeError, Packet, PacketBuf, PacketWriter, Secret};

/// The session to act on, identified exactly as the NAS reported it in
/// accounting: User-Name and Acct-Session-Id byte for byte (MikroTik's hex
/// ids such as `81a00003` break when re-cased).
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub user_name: &'a [u8],
    pub acct_session_id: &'a [u8],
    /// NAS-IP-Address, for a NAS that checks it is the addressee.
    pub nas_ip: Option<Ipv4Addr>,
    /// Framed-IP-Address, a second session key some NASes use.
    pub framed_ip: Option<Ipv4Addr>,
}

/// What to do with the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Disconnect-Request: end the session.
    Disconnect,
    /// CoA-Request with a new Mikrotik-Rate-Limit (`rx/tx` from the
    /// router's view: the subscriber's upload/download).
    RateLimit(String),
    /// CoA-Request with a new Filter-Id (generic NAS).
    FilterId(String),
    /// CoA-Request with another vendor's speed attributes (vendor,
    /// attribute, value; vendor 0 for a standard one).
    Attributes(Vec<(u32, u8, Vec<u8>)>),
}

impl Action {
    pub fn code(&self) -> Code {
        match self {
            Action::Disconnect => Code::DISCONNECT_REQUEST,
            Action::RateLimit(_) | Action::FilterId(_) | Action::Attributes(_) => Code::COA_REQUEST,
        }
    }
}

/// Builds a signed request: Message-Authenticator first (BlastRADIUS),
/// the session identification, Event-Timestamp (RFC 5176 §3.4, replay
/// protection) and the change. Request Authenticator per RFC 5176 §2.3.
pub fn build_request<'b>(
    buf: &'b mut PacketBuf,
    identifier: u8,
    secret: &Secret,
    target: &Target<'_>,
    action: &Action,
    event_timestamp: u32,
) -> Result<&'b [u8], EncodeError> {
    let mut w = PacketWriter::new(buf, action.code(), identifier, &[0; 16]);
    w.message_authenticator()?;
    w.attr(attr::USER_NAME, target.user_name)?;
    w.attr(attr::ACCT_SESSION_ID, target.acct_session_id)?;
    if let Some(ip) = target.nas_ip {
        w.attr_ipv4(attr::NAS_IP_ADDRESS, ip)?;
    }
    if let Some(ip) = target.framed_ip {
        w.attr_ipv4(attr::FRAMED_IP_ADDRESS, ip)?;
    }
    w.attr_u32(attr::EVENT_TIMESTAMP, event_timestamp)?;
    match action {
        Action::Disconnect => {}
        Action::RateLimit(rate) => {
            w.vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT, rate.as_bytes())?
        }
        Action::FilterId(filter) => w.attr(attr::FILTER_ID, filter.as_bytes())?,
        Action::Attributes(attrs) => {
            for (v, ty, value) in attrs {
                if *v == 0 {
                    w.attr(*ty, value)?;
                } else {
                    w.vendor_attr(*v, *ty, value)?;
                }
            }
        }
    }
    Ok(w.finish_request(secret))
}

/// The NAS's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Ack,
    Nak { error_cause: Option<u32> },
}

impl Answer {
    /// `ACK`, `NAK Session-Context-Not-Found (503)`, `NAK` (no cause).
    pub fn describe(&self) -> String {
        match self {
            Answer::Ack => "ACK".into(),
            Answer::Nak {
                error_cause: Some(c),
            } => format!("NAK {} ({c})", error_cause::name(*c)),
            Answer::Nak { error_cause: None } => "NAK".into(),
        }
    }
}

/// Why an answer was not accepted as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("malformed answer")]
    Malformed,
    #[error("answer to another request (identifier)")]
    WrongIdentifier,
    /// Response Authenticator or Message-Authenticator does not verify:
    /// the NAS has another secret.
    #[error("answer does not verify with the NAS secret (wrong secret?)")]
    BadAuthenticator,
    #[error("unexpected answer code {0:?}")]
    UnexpectedCode(Code),
}

/// Checks `reply` against `request` (the bytes we sent).
pub fn check_answer(reply: &[u8], request: &[u8], secret: &Secret) -> Result<Answer, AnswerError> {
    let sent = Packet::parse(request).map_err(|_| AnswerError::Malformed)?;
    let packet = Packet::parse(reply).map_err(|_| AnswerError::Malformed)?;
    if packet.identifier() != sent.identifier() {
        return Err(AnswerError::WrongIdentifier);
    }
    let (ack, nak) = match sent.code() {
        Code::DISCONNECT_REQUEST => (Code::DISCONNECT_ACK, Code::DISCONNECT_NAK),
        _ => (Code::COA_ACK, Code::COA_NAK),
    };
    if packet.code() != ack && packet.code() != nak {
        return Err(AnswerError::UnexpectedCode(packet.code()));
    }
    if !verify_response(&packet, sent.authenticator(), secret) {
        return Err(AnswerError::BadAuthenticator);
    }
    Ok(if packet.code() == ack {
        Answer::Ack
    } else {
        Answer::Nak {
            error_cause: packet.attr_u32(attr::ERROR_CAUSE),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::authenticator::{check_message_authenticator, verify_request_authenticator};
    use crate::proto::{MessageAuthenticatorCheck, MAX_PACKET_LEN};

    fn target() -> Target<'static> {
        Target {
            user_name: b"alice",
            acct_session_id: b"81a00003",
            nas_ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
            framed_ip: Some(Ipv4Addr::new(100, 64, 0, 9)),
        }
    }

    #[test]
    fn a_coa_request_is_signed_and_carries_the_session_and_the_new_rate() {
        let secret = Secret::new(b"s3cr3t");
        let mut buf = [0u8; MAX_PACKET_LEN];
        let bytes = build_request(
            &mut buf,
            9,
            &secret,
            &target(),
            &Action::RateLimit("2M/10M".into()),
            1_700_000_000,
        )
        .unwrap()
        .to_vec();
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!(p.code(), Code::COA_REQUEST);
        assert!(p.message_authenticator_is_first());
        assert!(verify_request_authenticator(&p, &secret));
        assert_eq!(
            check_message_authenticator(&p, &secret, None),
            MessageAuthenticatorCheck::Valid
        );
        assert!(!verify_request_authenticator(&p, &Secret::new(b"other")));
        assert_eq!(p.attr(attr::USER_NAME), Some(&b"alice"[..]));
        assert_eq!(p.attr(attr::ACCT_SESSION_ID), Some(&b"81a00003"[..]));
        assert_eq!(
            p.attr_ipv4(attr::NAS_IP_ADDRESS),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(
            p.attr_ipv4(attr::FRAMED_IP_ADDRESS),
            Some(Ipv4Addr::new(100, 64, 0, 9))
        );
        assert_eq!(p.attr_u32(attr::EVENT_TIMESTAMP), Some(1_700_000_000));
        assert_eq!(
            p.vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT),
            Some(&b"2M/10M"[..])
        );
    }

    #[test]
    fn a_disconnect_request_has_no_change_and_a_generic_coa_a_filter_id() {
        let secret = Secret::new(b"s3cr3t");
        let mut buf = [0u8; MAX_PACKET_LEN];
        let bytes = build_request(&mut buf, 1, &secret, &target(), &Action::Disconnect, 0).unwrap();
        let p = Packet::parse(bytes).unwrap();
        assert_eq!(p.code(), Code::DISCONNECT_REQUEST);
        assert_eq!(p.vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT), None);
        assert_eq!(p.attr(attr::FILTER_ID), None);
        let mut buf = [0u8; MAX_PACKET_LEN];
        let bytes = build_request(
            &mut buf,
            1,
            &secret,
            &target(),
            &Action::FilterId("fup-1".into()),
            0,
        )
        .unwrap();
        let p = Packet::parse(bytes).unwrap();
        assert_eq!(p.code(), Code::COA_REQUEST);
        assert_eq!(p.attr(attr::FILTER_ID), Some(&b"fup-1"[..]));
    }

    fn answer(request: &[u8], code: Code, cause: Option<u32>, secret: &Secret) -> Vec<u8> {
        let sent = Packet::parse(request).unwrap();
        let mut buf = [0u8; MAX_PACKET_LEN];
        let mut w = PacketWriter::new(&mut buf, code, sent.identifier(), &[0; 16]);
        w.message_authenticator().unwrap();
        if let Some(c) = cause {
            w.attr_u32(attr::ERROR_CAUSE, c).unwrap();
        }
        w.finish_response(sent.authenticator(), secret).to_vec()
    }

    #[test]
    fn answers_are_checked_and_naks_decoded() {
        let secret = Secret::new(b"s3cr3t");
        let mut buf = [0u8; MAX_PACKET_LEN];
        let request = build_request(&mut buf, 5, &secret, &target(), &Action::Disconnect, 0)
            .unwrap()
            .to_vec();
        let ack = answer(&request, Code::DISCONNECT_ACK, None, &secret);
        assert_eq!(check_answer(&ack, &request, &secret), Ok(Answer::Ack));
        let nak = answer(&request, Code::DISCONNECT_NAK, Some(503), &secret);
        let got = check_answer(&nak, &request, &secret).unwrap();
        assert_eq!(
            got,
            Answer::Nak {
                error_cause: Some(503)
            }
        );
        assert_eq!(got.describe(), "NAK Session-Context-Not-Found (503)");
        // Signed with another secret: detected.
        let forged = answer(&request, Code::DISCONNECT_ACK, None, &Secret::new(b"x"));
        assert_eq!(
            check_answer(&forged, &request, &secret),
            Err(AnswerError::BadAuthenticator)
        );
        // A CoA answer to a Disconnect-Request is not an answer.
        let wrong = answer(&request, Code::COA_ACK, None, &secret);
        assert_eq!(
            check_answer(&wrong, &request, &secret),
            Err(AnswerError::UnexpectedCode(Code::COA_ACK))
        );
        assert_eq!(
            check_answer(&ack[..10], &request, &secret),
            Err(AnswerError::Malformed)
        );
    }
}
