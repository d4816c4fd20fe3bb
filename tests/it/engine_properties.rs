//! Property tests of the whole request path, not only the parser: random
//! and mutated-valid datagrams (half of them re-signed with the NAS's
//! secret, as an attacker who knows it would send them) through
//! `Engine::handle` with a real snapshot, both ports, a registered and an
//! unknown source; random accounting packets as events; random CoA
//! answers; random spool files. The same entry points as the fuzz targets.

use proptest::prelude::*;
use shardius::fuzzing::{self, FUZZ_SECRET};
use shardius::nas_client::{self as nas, AcctRecord, Credentials, Session};
use shardius::proto::Secret;

/// A valid request of each kind the engine answers, signed for the fuzz NAS.
fn valid_requests() -> Vec<Vec<u8>> {
    let secret = Secret::new(FUZZ_SECRET);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let creds = [
        Credentials::Pap {
            password: b"s3cret",
        },
        Credentials::Chap {
            ident: 2,
            challenge: [5; 16],
            password: b"s3cret",
        },
        Credentials::MsChapV2 {
            ident: 1,
            auth_challenge: [3; 16],
            peer_challenge: [4; 16],
            password: b"s3cret",
        },
    ];
    for (i, c) in creds.iter().enumerate() {
        for user in [&b"alice"[..], b"bound", b"nobody"] {
            out.push(
                nas::access_request(
                    &mut buf,
                    i as u8,
                    &[i as u8; 16],
                    &secret,
                    user,
                    c,
                    &Session::default(),
                )
                .unwrap()
                .to_vec(),
            );
        }
    }
    for status in [1, 2, 3, 7, 8] {
        let record = AcctRecord {
            status,
            session_id: b"81a00003",
            user_name: b"alice",
            session_time: 60,
            input_octets: u64::MAX,
            output_octets: 5,
            framed_ip: Some("100.64.0.9".parse().unwrap()),
            terminate_cause: Some(1),
            class: Some(b"SHD1"),
        };
        out.push(
            nas::accounting_request(
                &mut buf,
                status as u8,
                &secret,
                &record,
                &Session::default(),
            )
            .unwrap()
            .to_vec(),
        );
    }
    out
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Overwrite(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..40))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, v)| Mutation::Overwrite(i, v)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = bytes.len().max(1);
        match m {
            Mutation::Flip(i, b) => {
                if let Some(x) = bytes.get_mut(i % n) {
                    *x ^= b | 1;
                }
            }
            Mutation::Truncate(i) => bytes.truncate(i % n),
            Mutation::Insert(i, v) => {
                let at = (i % n).min(bytes.len());
                bytes.splice(at..at, v.iter().copied());
            }
            Mutation::Overwrite(i, v) => {
                for (k, b) in v.iter().enumerate() {
                    if let Some(x) = bytes.get_mut((i + k) % n) {
                        *x = *b;
                    }
                }
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn random_datagrams_never_panic_the_request_path(control in any::<u8>(), bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        fuzzing::engine_handle(control, &bytes);
    }

    #[test]
    fn mutated_valid_requests_never_panic_the_request_path(
        control in any::<u8>(), which in any::<prop::sample::Index>(), mutations in prop::collection::vec(mutation(), 0..6),
    ) {
        let requests = valid_requests();
        let bytes = mutate(which.get(&requests).clone(), &mutations);
        fuzzing::engine_handle(control, &bytes);
        fuzzing::accounting_event(&bytes);
    }

    #[test]
    fn random_coa_answers_are_checked_without_panicking(resign in any::<bool>(), bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::coa_answer(resign, &bytes);
    }

    #[test]
    fn random_spool_files_are_read_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        fuzzing::spool_bytes(&bytes);
    }
}

#[test]
fn the_valid_requests_are_answered_so_the_mutations_start_from_real_paths() {
    use shardius::proto::Code;
    let requests = valid_requests();
    for r in &requests[..9] {
        for control in [0u8, 4] {
            let code = fuzzing::engine_handle(control, r);
            assert!(
                matches!(code, Some(Code::ACCESS_ACCEPT | Code::ACCESS_REJECT)),
                "{code:?}"
            );
        }
    }
    assert_eq!(
        fuzzing::engine_handle(0, &requests[0]),
        Some(Code::ACCESS_ACCEPT)
    );
    for r in &requests[9..] {
        for control in [1u8, 5] {
            assert_eq!(
                fuzzing::engine_handle(control, r),
                Some(Code::ACCOUNTING_RESPONSE)
            );
        }
        // From a stranger: dropped.
        assert_eq!(fuzzing::engine_handle(0b111, r), None);
    }
}
