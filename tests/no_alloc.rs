//! The per-request path allocates nothing: parse and verify a MikroTik
//! MS-CHAPv2 Access-Request, check the credentials, build and sign the
//! Access-Accept with MPPE keys. Checked with a counting global allocator;
//! this file holds a single test so no other test thread allocates meanwhile.
// A global allocator is unsafe by nature; this one only counts.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use shardius::auth::mschapv2;
use shardius::nas_client::{self as nas, Credentials, Session};
use shardius::proto::authenticator::check_message_authenticator;
use shardius::proto::dict::{attr, mikrotik, ms, vendor};
use shardius::proto::{Code, MessageAuthenticatorCheck, Packet, PacketWriter, Secret};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator,
// which upholds GlobalAlloc's contract; the counter has no effect on it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn an_mschapv2_request_is_answered_without_a_heap_allocation() {
    let secret = Secret::new(b"testing123");
    let creds = Credentials::MsChapV2 {
        ident: 1,
        auth_challenge: [0x11; 16],
        peer_challenge: [0x22; 16],
        password: b"pass1",
    };
    let mut req_buf = [0u8; 4096];
    let request = nas::access_request(
        &mut req_buf,
        5,
        &[0x33; 16],
        &secret,
        b"user1",
        &creds,
        &Session::default(),
    )
    .unwrap()
    .to_vec();
    let mut reply_buf = Box::new([0u8; 4096]);

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let reply_len = {
        let p = Packet::parse(&request).unwrap();
        assert_eq!(
            check_message_authenticator(&p, &secret, None),
            MessageAuthenticatorCheck::Valid
        );
        let user = p.attr(attr::USER_NAME).unwrap();
        let challenge = p
            .vendor_attr(vendor::MICROSOFT, ms::CHAP_CHALLENGE)
            .unwrap();
        let response = mschapv2::Response::parse(
            p.vendor_attr(vendor::MICROSOFT, ms::CHAP2_RESPONSE)
                .unwrap(),
        )
        .unwrap();
        let ok = mschapv2::verify(challenge, &response, user, b"pass1").unwrap();

        let mut w = PacketWriter::new(
            &mut reply_buf,
            Code::ACCESS_ACCEPT,
            p.identifier(),
            p.authenticator(),
        );
        w.message_authenticator().unwrap();
        ok.write_accept_attributes(&mut w, &secret, p.authenticator(), [0x80, 0x10])
            .unwrap();
        w.vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT, b"2000k/10000k")
            .unwrap();
        w.attr(attr::FRAMED_POOL, b"pppoe-pool").unwrap();
        w.attr_u32(attr::ACCT_INTERIM_INTERVAL, 30).unwrap();
        w.finish_response(p.authenticator(), &secret).len()
    };
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "heap allocations on the request path");

    // And the reply is one a NAS accepts.
    let checked = nas::check_access_reply(
        &reply_buf[..reply_len],
        5,
        &[0x33; 16],
        &secret,
        b"user1",
        &creds,
    )
    .unwrap();
    assert_eq!(checked.code, Code::ACCESS_ACCEPT);
}
