//! Property tests: no input panics the parser, and build → parse round-trips.

use proptest::prelude::*;
use shardius::proto::authenticator::{
    check_message_authenticator, verify_request_authenticator, verify_response,
};
use shardius::proto::password::{hide_user_password, unhide_user_password};
use shardius::proto::{Code, MessageAuthenticatorCheck, Packet, PacketWriter, Secret};

/// Parses, walks and round-trips; panics only if a property is broken.
fn exercise(bytes: &[u8]) {
    shardius::fuzzing::parse_walk_round_trip(bytes);
}

/// Attributes as (type, value); type 80 (Message-Authenticator) is left to
/// the writer, which reserves it itself.
fn attributes() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    prop::collection::vec(
        (
            any::<u8>().prop_filter("not MA", |t| *t != 80),
            prop::collection::vec(any::<u8>(), 0..=253),
        ),
        0..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&bytes);
    }

    #[test]
    fn random_attribute_sections_behind_a_valid_header_never_panic(
        code in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..600), slack in 0usize..4,
    ) {
        let len = (20 + body.len() + slack).min(4096) as u16;
        let mut bytes = vec![code, 1];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&[7; 16]);
        bytes.extend_from_slice(&body);
        exercise(&bytes);
    }

    #[test]
    fn build_then_parse_round_trips(
        code in prop::sample::select(vec![Code::ACCESS_ACCEPT, Code::ACCESS_REJECT, Code::ACCOUNTING_RESPONSE, Code::COA_ACK]),
        id in any::<u8>(), request_auth in any::<[u8; 16]>(), with_ma in any::<bool>(), attrs in attributes(),
    ) {
        let secret = Secret::new(b"round-trip");
        let mut buf = [0u8; 4096];
        let mut w = PacketWriter::new(&mut buf, code, id, &request_auth);
        if with_ma { w.message_authenticator().unwrap(); }
        let mut written = Vec::new();
        for (ty, value) in &attrs {
            if w.attr(*ty, value).is_ok() { written.push((*ty, value.clone())); }
        }
        let bytes = w.finish_response(&request_auth, &secret).to_vec();
        let p = Packet::parse(&bytes).unwrap();
        prop_assert_eq!(p.code(), code);
        prop_assert_eq!(p.identifier(), id);
        let parsed: Vec<(u8, Vec<u8>)> = p.attributes().filter(|a| a.ty != 80).map(|a| (a.ty, a.value.to_vec())).collect();
        prop_assert_eq!(parsed, written);
        prop_assert!(verify_response(&p, &request_auth, &secret));
        let expect = if with_ma { MessageAuthenticatorCheck::Valid } else { MessageAuthenticatorCheck::Absent };
        prop_assert_eq!(check_message_authenticator(&p, &secret, Some(&request_auth)), expect);
    }

    #[test]
    fn signed_requests_verify_and_any_flipped_byte_is_caught(
        attrs in attributes(), flip in any::<prop::sample::Index>(),
    ) {
        let secret = Secret::new(b"flip");
        let mut buf = [0u8; 4096];
        let mut w = PacketWriter::new(&mut buf, Code::ACCOUNTING_REQUEST, 1, &[0; 16]);
        w.message_authenticator().unwrap();
        for (ty, value) in &attrs { let _ = w.attr(*ty, value); }
        let mut bytes = w.finish_request(&secret).to_vec();
        prop_assert!(verify_request_authenticator(&Packet::parse(&bytes).unwrap(), &secret));
        let i = flip.index(bytes.len());
        // Length bytes change the framing; flip elsewhere.
        prop_assume!(i != 2 && i != 3);
        bytes[i] ^= 0x80;
        if let Ok(p) = Packet::parse(&bytes) {
            prop_assert!(!verify_request_authenticator(&p, &secret)
                || check_message_authenticator(&p, &secret, None) == MessageAuthenticatorCheck::Invalid);
        }
    }

    #[test]
    fn user_passwords_round_trip(password in prop::collection::vec(1u8..=255, 1..=128), auth in any::<[u8; 16]>()) {
        let secret = Secret::new(b"pw");
        let mut hidden = [0u8; 128];
        let n = hide_user_password(&password, &secret, &auth, &mut hidden).unwrap();
        let mut out = [0u8; 128];
        prop_assert_eq!(unhide_user_password(&hidden[..n], &secret, &auth, &mut out).unwrap(), &password[..]);
    }
}

#[test]
fn every_seed_packet_in_the_vectors_round_trips() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "hex") {
            let text: String = std::fs::read_to_string(&path)
                .unwrap()
                .split_whitespace()
                .collect();
            let bytes = hex::decode(text).unwrap();
            assert!(Packet::parse(&bytes).is_ok(), "{}", path.display());
            exercise(&bytes);
            seen += 1;
        }
    }
    assert!(seen >= 4);
}
