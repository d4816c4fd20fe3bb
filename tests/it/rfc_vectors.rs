//! Byte-exact vectors from the RFCs and from FreeRADIUS's radclient
//! (provenance in tests/vectors/README.md).

use std::net::Ipv4Addr;

use crate::common::{hex, hex16, vector};
use shardius::auth::{mppe, mschapv2, pap};
use shardius::proto::authenticator::{check_message_authenticator, verify_response};
use shardius::proto::dict::attr;
use shardius::proto::password::{hide_user_password, unhide_user_password};
use shardius::proto::{Code, MessageAuthenticatorCheck, Packet, PacketWriter, Secret};

// RFC 2759 §9.2 "Hash Example" (also the inputs of RFC 3079 §3.5.3).
const USER: &[u8] = b"User";
const PASSWORD: &[u8] = b"clientPass";
const AUTH_CHALLENGE: &str = "5B 5D 7C 7D 7B 3F 2F 3E 3C 2C 60 21 32 26 26 28";
const PEER_CHALLENGE: &str = "21 40 23 24 25 5E 26 2A 28 29 5F 2B 3A 33 7C 7E";
const CHALLENGE: &str = "D0 2E 43 86 BC E9 12 26";
const PASSWORD_HASH: &str = "44 EB BA 8D 53 12 B8 D6 11 47 44 11 F5 69 89 AE";
const NT_RESPONSE: &str = "82 30 9E CD 8D 70 8B 5E A0 8F AA 39 81 CD 83 54 42 33 11 4A 3D 85 D6 DF";
const PASSWORD_HASH_HASH: &str = "41 C0 0C 58 4B D2 D9 1C 40 17 A2 A1 2F A5 9F 3F";
const AUTHENTICATOR_RESPONSE: &[u8] = b"S=407A5589115FD0D6209F510FE9C04566932CDA56";
// RFC 3079 §3.5.3 "Sample Key Derivations for 128-bit Session Keys".
const MASTER_KEY: &str = "FD EC E3 71 7A 8C 83 8C B3 88 E5 27 AE 3C DD 31";
const SEND_START_KEY_128: &str = "8B 7C DC 14 9B 99 3A 1B A1 18 CB 15 3F 56 DC CB";

#[test]
fn rfc2759_nt_password_hash() {
    assert_eq!(
        mschapv2::nt_password_hash(PASSWORD).to_vec(),
        hex(PASSWORD_HASH)
    );
}

#[test]
fn rfc2759_challenge_hash() {
    let c = mschapv2::challenge_hash(&hex16(PEER_CHALLENGE), &hex16(AUTH_CHALLENGE), USER);
    assert_eq!(c.to_vec(), hex(CHALLENGE));
}

#[test]
fn rfc2759_nt_response() {
    let nt = mschapv2::generate_nt_response(
        &hex16(AUTH_CHALLENGE),
        &hex16(PEER_CHALLENGE),
        USER,
        PASSWORD,
    );
    assert_eq!(nt.to_vec(), hex(NT_RESPONSE));
}

#[test]
fn rfc2759_authenticator_response() {
    let nt: [u8; 24] = hex(NT_RESPONSE).try_into().unwrap();
    let s = mschapv2::authenticator_response(
        &hex16(PASSWORD_HASH),
        &nt,
        &hex16(PEER_CHALLENGE),
        &hex16(AUTH_CHALLENGE),
        USER,
    );
    assert_eq!(&s[..], AUTHENTICATOR_RESPONSE);
}

#[test]
fn rfc2759_server_verifies_the_example_response_and_answers_the_example_success() {
    let nt: [u8; 24] = hex(NT_RESPONSE).try_into().unwrap();
    let value = mschapv2::Response::encode(9, &hex16(PEER_CHALLENGE), &nt);
    let response = mschapv2::Response::parse(&value).unwrap();
    let ok = mschapv2::verify(&hex(AUTH_CHALLENGE), &response, USER, PASSWORD).unwrap();
    assert_eq!(ok.success[0], 9);
    assert_eq!(&ok.success[1..], AUTHENTICATOR_RESPONSE);
    assert_eq!(ok.keys.send.to_vec(), hex(SEND_START_KEY_128));
}

#[test]
fn rfc3079_master_key_and_send_start_key() {
    let nt: [u8; 24] = hex(NT_RESPONSE).try_into().unwrap();
    let master = mppe::master_key(&hex16(PASSWORD_HASH_HASH), &nt);
    assert_eq!(master.to_vec(), hex(MASTER_KEY));
    // §3.5.3 derives SendStartKey128 from the server's side (IsSend, IsServer).
    let send = mppe::asymmetric_start_key(&master, true, true);
    assert_eq!(send.to_vec(), hex(SEND_START_KEY_128));
    let keys = mppe::server_keys(&hex16(PASSWORD_HASH), &nt);
    assert_eq!(keys.send.to_vec(), hex(SEND_START_KEY_128));
    assert_eq!(keys.recv, mppe::asymmetric_start_key(&master, false, true));
}

#[test]
fn rfc2865_7_1_access_request_decodes_to_the_documented_values() {
    let bytes = vector("rfc2865_7_1_access_request.hex");
    let p = Packet::parse(&bytes).unwrap();
    assert_eq!(p.code(), Code::ACCESS_REQUEST);
    assert_eq!(p.identifier(), 0);
    assert_eq!(p.attr(attr::USER_NAME), Some(&b"nemo"[..]));
    assert_eq!(
        p.attr_ipv4(attr::NAS_IP_ADDRESS),
        Some(Ipv4Addr::new(192, 168, 1, 16))
    );
    assert_eq!(p.attr_u32(attr::NAS_PORT), Some(3));

    let secret = Secret::new(b"xyzzy5461");
    let hidden = p.attr(attr::USER_PASSWORD).unwrap();
    let mut out = [0u8; 128];
    let password = unhide_user_password(hidden, &secret, p.authenticator(), &mut out).unwrap();
    assert_eq!(password, b"arctangent");
    assert!(pap::verify(
        hidden,
        &secret,
        p.authenticator(),
        b"arctangent"
    ));

    // And hiding it again gives the RFC's bytes.
    let mut again = [0u8; 128];
    let n = hide_user_password(b"arctangent", &secret, p.authenticator(), &mut again).unwrap();
    assert_eq!(&again[..n], hidden);
}

#[test]
fn rfc2865_7_1_access_accept_is_rebuilt_byte_for_byte() {
    let request = vector("rfc2865_7_1_access_request.hex");
    let expected = vector("rfc2865_7_1_access_accept.hex");
    let request = Packet::parse(&request).unwrap();
    let secret = Secret::new(b"xyzzy5461");

    let reply = Packet::parse(&expected).unwrap();
    assert!(verify_response(&reply, request.authenticator(), &secret));

    let mut buf = [0u8; 4096];
    let mut w = PacketWriter::new(&mut buf, Code::ACCESS_ACCEPT, 0, request.authenticator());
    w.attr_u32(attr::SERVICE_TYPE, 1).unwrap();
    w.attr_u32(attr::LOGIN_SERVICE, 0).unwrap();
    w.attr_ipv4(attr::LOGIN_IP_HOST, Ipv4Addr::new(192, 168, 1, 3))
        .unwrap();
    assert_eq!(
        w.finish_response(request.authenticator(), &secret),
        &expected[..]
    );
}

#[test]
fn radclient_message_authenticators_verify_and_a_flipped_byte_fails() {
    let secret = Secret::new(b"testing123");
    for name in [
        "radclient_status_server.hex",
        "radclient_access_request_ma.hex",
    ] {
        let mut bytes = vector(name);
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!(
            check_message_authenticator(&p, &secret, None),
            MessageAuthenticatorCheck::Valid,
            "{name}"
        );
        assert_eq!(
            check_message_authenticator(&p, &Secret::new(b"testing124"), None),
            MessageAuthenticatorCheck::Invalid,
            "{name} with a wrong secret"
        );
        for i in [1, 4, 19, bytes.len() - 1] {
            bytes[i] ^= 0x01;
            let p = Packet::parse(&bytes).unwrap();
            assert_eq!(
                check_message_authenticator(&p, &secret, None),
                MessageAuthenticatorCheck::Invalid,
                "{name} byte {i} flipped"
            );
            bytes[i] ^= 0x01;
        }
    }
}

#[test]
fn radclient_pap_password_unhides() {
    let bytes = vector("radclient_access_request_ma.hex");
    let p = Packet::parse(&bytes).unwrap();
    assert_eq!(p.attr(attr::USER_NAME), Some(&b"user1"[..]));
    let hidden = p.attr(attr::USER_PASSWORD).unwrap();
    assert!(pap::verify(
        hidden,
        &Secret::new(b"testing123"),
        p.authenticator(),
        b"pass1"
    ));
}
