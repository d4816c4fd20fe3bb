//! The NAS side of the protocol, without IO: build Access-Requests the way a
//! MikroTik BNG does for a PPPoE subscriber, and check the replies. Used by
//! loadgen, the integration tests and the benchmarks, so that all three
//! speak exactly what the server is tested against.

use std::net::Ipv4Addr;

use crate::auth::{chap, mschapv2};
use crate::proto::authenticator::verify_response;
use crate::proto::dict::{attr, ms, vendor};
use crate::proto::password::{decrypt_mppe_key, hide_user_password, MAX_PASSWORD_LEN};
use crate::proto::{Code, EncodeError, Packet, PacketBuf, PacketWriter, Secret};

/// How the subscriber proves who they are.
#[derive(Clone, Copy, Debug)]
pub enum Credentials<'a> {
    Pap {
        password: &'a [u8],
    },
    /// CHAP with a 16-byte CHAP-Challenge attribute (as RouterOS sends).
    Chap {
        ident: u8,
        challenge: [u8; 16],
        password: &'a [u8],
    },
    MsChapV2 {
        ident: u8,
        auth_challenge: [u8; 16],
        peer_challenge: [u8; 16],
        password: &'a [u8],
    },
}

/// The PPPoE session details a BNG puts in every request.
#[derive(Clone, Copy, Debug)]
pub struct Session<'a> {
    pub nas_ip: Ipv4Addr,
    pub nas_identifier: &'a [u8],
    pub nas_port: u32,
    pub nas_port_id: &'a [u8],
    /// The subscriber's MAC, as RouterOS formats it ("AA:BB:CC:DD:EE:FF").
    pub calling_station_id: &'a [u8],
    /// The PPPoE service name.
    pub called_station_id: &'a [u8],
}

impl Default for Session<'_> {
    fn default() -> Self {
        Session {
            nas_ip: Ipv4Addr::LOCALHOST,
            nas_identifier: b"MikroTik",
            nas_port: 15728641,
            nas_port_id: b"ether1",
            calling_station_id: b"AA:BB:CC:DD:EE:FF",
            called_station_id: b"pppoe-service",
        }
    }
}

/// Service-Type Framed-User, Framed-Protocol PPP, NAS-Port-Type Ethernet.
const SERVICE_TYPE_FRAMED: u32 = 2;
const FRAMED_PROTOCOL_PPP: u32 = 1;
const NAS_PORT_TYPE_ETHERNET: u32 = 15;

/// Builds an Access-Request with a leading Message-Authenticator, in the
/// attribute order RouterOS uses for PPPoE.
pub fn access_request<'b>(
    buf: &'b mut PacketBuf,
    identifier: u8,
    authenticator: &[u8; 16],
    secret: &Secret,
    user_name: &[u8],
    credentials: &Credentials<'_>,
    session: &Session<'_>,
) -> Result<&'b [u8], EncodeError> {
    let mut w = PacketWriter::new(buf, Code::ACCESS_REQUEST, identifier, authenticator);
    w.message_authenticator()?;
    w.attr_u32(attr::SERVICE_TYPE, SERVICE_TYPE_FRAMED)?;
    w.attr_u32(attr::FRAMED_PROTOCOL, FRAMED_PROTOCOL_PPP)?;
    w.attr_u32(attr::NAS_PORT, session.nas_port)?;
    w.attr_u32(attr::NAS_PORT_TYPE, NAS_PORT_TYPE_ETHERNET)?;
    w.attr(attr::USER_NAME, user_name)?;
    w.attr(attr::CALLING_STATION_ID, session.calling_station_id)?;
    w.attr(attr::CALLED_STATION_ID, session.called_station_id)?;
    w.attr(attr::NAS_PORT_ID, session.nas_port_id)?;
    match *credentials {
        Credentials::Pap { password } => {
            let mut hidden = [0u8; MAX_PASSWORD_LEN];
            let len = hide_user_password(password, secret, authenticator, &mut hidden)
                .ok_or(EncodeError::ValueTooLong)?;
            w.attr(attr::USER_PASSWORD, &hidden[..len])?;
        }
        Credentials::Chap {
            ident,
            challenge,
            password,
        } => {
            let response = chap::response(ident, password, &challenge);
            w.attr_with(attr::CHAP_PASSWORD, chap::CHAP_PASSWORD_LEN, |out| {
                out[0] = ident;
                out[1..].copy_from_slice(&response);
            })?;
            w.attr(attr::CHAP_CHALLENGE, &challenge)?;
        }
        Credentials::MsChapV2 {
            ident,
            auth_challenge,
            peer_challenge,
            password,
        } => {
            let nt = mschapv2::generate_nt_response(
                &auth_challenge,
                &peer_challenge,
                user_name,
                password,
            );
            w.vendor_attr(vendor::MICROSOFT, ms::CHAP_CHALLENGE, &auth_challenge)?;
            w.vendor_attr(
                vendor::MICROSOFT,
                ms::CHAP2_RESPONSE,
                &mschapv2::Response::encode(ident, &peer_challenge, &nt),
            )?;
        }
    }
    w.attr(attr::NAS_IDENTIFIER, session.nas_identifier)?;
    w.attr_ipv4(attr::NAS_IP_ADDRESS, session.nas_ip)?;
    Ok(w.finish_request(secret))
}

/// Why a reply was not what a correct server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    Malformed,
    /// Identifier differs from the request's.
    WrongIdentifier,
    /// Response Authenticator or Message-Authenticator does not verify.
    BadAuthenticator,
    /// An Access-Accept/Reject without the Message-Authenticator we require.
    MissingMessageAuthenticator,
    /// MS-CHAP2-Success missing or not the authenticator response we expect.
    BadMsChap2Success,
    /// MS-MPPE keys missing or not the ones RFC 3079 derives.
    BadMppeKeys,
}

/// A reply that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedReply {
    pub code: Code,
}

/// Checks a reply to an Access-Request built by [`access_request`]:
/// identifier, Response Authenticator, Message-Authenticator (required on
/// Access-Accept/Reject), and for an MS-CHAPv2 accept the MS-CHAP2-Success
/// value and both MPPE keys.
pub fn check_access_reply(
    reply: &[u8],
    identifier: u8,
    request_authenticator: &[u8; 16],
    secret: &Secret,
    user_name: &[u8],
    credentials: &Credentials<'_>,
) -> Result<CheckedReply, ReplyError> {
    check_access_reply_with(
        reply,
        identifier,
        request_authenticator,
        secret,
        user_name,
        credentials,
        true,
    )
}

/// [`check_access_reply`], with the Message-Authenticator required or not
/// (servers from before the BlastRADIUS fixes, such as FreeRADIUS 3.2.1,
/// send none; when present it is always verified).
pub fn check_access_reply_with(
    reply: &[u8],
    identifier: u8,
    request_authenticator: &[u8; 16],
    secret: &Secret,
    user_name: &[u8],
    credentials: &Credentials<'_>,
    require_message_authenticator: bool,
) -> Result<CheckedReply, ReplyError> {
    let packet = Packet::parse(reply).map_err(|_| ReplyError::Malformed)?;
    if packet.identifier() != identifier {
        return Err(ReplyError::WrongIdentifier);
    }
    if !verify_response(&packet, request_authenticator, secret) {
        return Err(ReplyError::BadAuthenticator);
    }
    if require_message_authenticator && packet.message_authenticator().is_none() {
        return Err(ReplyError::MissingMessageAuthenticator);
    }
    if let (
        Code::ACCESS_ACCEPT,
        Credentials::MsChapV2 {
            ident,
            auth_challenge,
            peer_challenge,
            password,
        },
    ) = (packet.code(), credentials)
    {
        let nt =
            mschapv2::generate_nt_response(auth_challenge, peer_challenge, user_name, password);
        let hash = mschapv2::nt_password_hash(password);
        let expected =
            mschapv2::authenticator_response(&hash, &nt, peer_challenge, auth_challenge, user_name);
        let success = packet
            .vendor_attr(vendor::MICROSOFT, ms::CHAP2_SUCCESS)
            .ok_or(ReplyError::BadMsChap2Success)?;
        if success.len() != mschapv2::SUCCESS_LEN
            || success[0] != *ident
            || success[1..] != expected
        {
            return Err(ReplyError::BadMsChap2Success);
        }
        let keys = crate::auth::mppe::server_keys(&hash, &nt);
        for (vendor_type, expected) in [
            (ms::MPPE_SEND_KEY, &keys.send),
            (ms::MPPE_RECV_KEY, &keys.recv),
        ] {
            let value = packet
                .vendor_attr(vendor::MICROSOFT, vendor_type)
                .ok_or(ReplyError::BadMppeKeys)?;
            let mut out = [0u8; 256];
            let key = decrypt_mppe_key(value, secret, request_authenticator, &mut out)
                .map_err(|_| ReplyError::BadMppeKeys)?;
            if key != expected {
                return Err(ReplyError::BadMppeKeys);
            }
        }
    }
    Ok(CheckedReply {
        code: packet.code(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::MessageAuthenticatorCheck;

    #[test]
    fn requests_carry_a_valid_leading_message_authenticator() {
        let secret = Secret::new(b"testing123");
        let mut buf = [0u8; 4096];
        let creds = Credentials::Pap { password: b"pass1" };
        let bytes = access_request(
            &mut buf,
            1,
            &[5; 16],
            &secret,
            b"user1",
            &creds,
            &Session::default(),
        )
        .unwrap()
        .to_vec();
        let p = Packet::parse(&bytes).unwrap();
        assert!(p.message_authenticator_is_first());
        assert_eq!(
            crate::proto::authenticator::check_message_authenticator(&p, &secret, None),
            MessageAuthenticatorCheck::Valid
        );
        assert_eq!(p.attr(attr::USER_NAME), Some(&b"user1"[..]));
        assert_eq!(crate::auth::Method::of(&p), crate::auth::Method::Pap);
    }
}

/// One Accounting-Request as a BNG sends it for a PPPoE session.
#[derive(Clone, Copy, Debug)]
pub struct AcctRecord<'a> {
    /// Acct-Status-Type (see `proto::dict::acct_status`).
    pub status: u32,
    pub session_id: &'a [u8],
    pub user_name: &'a [u8],
    pub session_time: u32,
    /// 64-bit counters: sent as Octets plus Gigawords.
    pub input_octets: u64,
    pub output_octets: u64,
    pub framed_ip: Option<Ipv4Addr>,
    pub terminate_cause: Option<u32>,
    pub class: Option<&'a [u8]>,
}

/// Builds a signed Accounting-Request (RFC 2866 §3 Request Authenticator).
pub fn accounting_request<'b>(
    buf: &'b mut PacketBuf,
    identifier: u8,
    secret: &Secret,
    record: &AcctRecord<'_>,
    session: &Session<'_>,
) -> Result<&'b [u8], EncodeError> {
    let mut w = PacketWriter::new(buf, Code::ACCOUNTING_REQUEST, identifier, &[0; 16]);
    w.attr_u32(attr::ACCT_STATUS_TYPE, record.status)?;
    w.attr(attr::USER_NAME, record.user_name)?;
    w.attr(attr::ACCT_SESSION_ID, record.session_id)?;
    w.attr_u32(attr::ACCT_SESSION_TIME, record.session_time)?;
    w.attr_u32(attr::ACCT_INPUT_OCTETS, record.input_octets as u32)?;
    w.attr_u32(
        attr::ACCT_INPUT_GIGAWORDS,
        (record.input_octets >> 32) as u32,
    )?;
    w.attr_u32(attr::ACCT_OUTPUT_OCTETS, record.output_octets as u32)?;
    w.attr_u32(
        attr::ACCT_OUTPUT_GIGAWORDS,
        (record.output_octets >> 32) as u32,
    )?;
    if let Some(ip) = record.framed_ip {
        w.attr_ipv4(attr::FRAMED_IP_ADDRESS, ip)?;
    }
    if let Some(cause) = record.terminate_cause {
        w.attr_u32(attr::ACCT_TERMINATE_CAUSE, cause)?;
    }
    if let Some(class) = record.class {
        w.attr(attr::CLASS, class)?;
    }
    w.attr_u32(attr::NAS_PORT, session.nas_port)?;
    w.attr_u32(attr::NAS_PORT_TYPE, NAS_PORT_TYPE_ETHERNET)?;
    w.attr(attr::NAS_PORT_ID, session.nas_port_id)?;
    w.attr(attr::CALLING_STATION_ID, session.calling_station_id)?;
    w.attr(attr::CALLED_STATION_ID, session.called_station_id)?;
    w.attr(attr::NAS_IDENTIFIER, session.nas_identifier)?;
    w.attr_ipv4(attr::NAS_IP_ADDRESS, session.nas_ip)?;
    Ok(w.finish_request(secret))
}

/// Checks an Accounting-Response to a request with `identifier` and
/// Request Authenticator `request_authenticator`.
pub fn check_accounting_reply(
    reply: &[u8],
    identifier: u8,
    request_authenticator: &[u8; 16],
    secret: &Secret,
) -> Result<(), ReplyError> {
    let packet = Packet::parse(reply).map_err(|_| ReplyError::Malformed)?;
    if packet.identifier() != identifier {
        return Err(ReplyError::WrongIdentifier);
    }
    if packet.code() != Code::ACCOUNTING_RESPONSE
        || !verify_response(&packet, request_authenticator, secret)
    {
        return Err(ReplyError::BadAuthenticator);
    }
    Ok(())
}
