//! Cross-checks our codec against the independent `radius` crate: packets
//! built by one are parsed and verified by the other, for every attribute
//! type shardius reads or writes (string, octets, integer, IPv4, hidden
//! User-Password, Vendor-Specific for MikroTik and Microsoft).

use std::net::Ipv4Addr;

use radius::core::avp::AVP;
use radius::core::code::Code as RCode;
use radius::core::packet::Packet as RPacket;
use radius::core::vsa::StringVSA;
use radius::core::{rfc2865, rfc2866, rfc2869};
use shardius::auth::pap;
use shardius::proto::authenticator::verify_request_authenticator;
use shardius::proto::dict::{attr, mikrotik, ms, vendor};
use shardius::proto::{Code, Packet, PacketWriter, Secret};

const SECRET: &[u8] = b"testing123";

fn vsa_bytes(vendor_id: u32, vendor_type: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vendor_id.to_be_bytes().to_vec();
    v.push(vendor_type);
    v.push(2 + value.len() as u8);
    v.extend_from_slice(value);
    v
}

#[test]
fn an_access_request_built_by_the_radius_crate_parses_with_every_attribute_type() {
    let mut req = RPacket::new_with_identifier(RCode::AccessRequest, SECRET, 77);
    rfc2865::add_user_name(&mut req, "user1");
    let hidden = AVP::from_user_password(
        attr::USER_PASSWORD,
        b"pass1",
        SECRET,
        req.get_authenticator(),
    )
    .unwrap();
    req.add(hidden);
    rfc2865::add_nas_ip_address(&mut req, &Ipv4Addr::new(10, 0, 0, 1));
    rfc2865::add_nas_port(&mut req, 15728641);
    rfc2865::add_calling_station_id(&mut req, "AA:BB:CC:DD:EE:FF");
    rfc2865::add_framed_ip_address(&mut req, &Ipv4Addr::new(100, 64, 0, 9));
    rfc2865::add_vsa_attribute(
        &mut req,
        &StringVSA::new(vendor::MIKROTIK as i32, mikrotik::RATE_LIMIT, "2M/10M"),
    );
    req.add(AVP::from_bytes(
        attr::VENDOR_SPECIFIC,
        &vsa_bytes(vendor::MICROSOFT, ms::CHAP_CHALLENGE, &[0x5a; 16]),
    ));
    rfc2869::add_nas_port_id(&mut req, "ether1");
    let bytes = req.encode().unwrap();

    let p = Packet::parse(&bytes).unwrap();
    assert_eq!(p.code(), Code::ACCESS_REQUEST);
    assert_eq!(p.identifier(), 77);
    assert_eq!(p.attr(attr::USER_NAME), Some(&b"user1"[..]));
    assert_eq!(
        p.attr_ipv4(attr::NAS_IP_ADDRESS),
        Some(Ipv4Addr::new(10, 0, 0, 1))
    );
    assert_eq!(p.attr_u32(attr::NAS_PORT), Some(15728641));
    assert_eq!(
        p.attr(attr::CALLING_STATION_ID),
        Some(&b"AA:BB:CC:DD:EE:FF"[..])
    );
    assert_eq!(
        p.attr_ipv4(attr::FRAMED_IP_ADDRESS),
        Some(Ipv4Addr::new(100, 64, 0, 9))
    );
    assert_eq!(
        p.vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT),
        Some(&b"2M/10M"[..])
    );
    assert_eq!(
        p.vendor_attr(vendor::MICROSOFT, ms::CHAP_CHALLENGE),
        Some(&[0x5a; 16][..])
    );
    assert_eq!(p.attr(attr::NAS_PORT_ID), Some(&b"ether1"[..]));
    let secret = Secret::new(SECRET);
    assert!(pap::verify(
        p.attr(attr::USER_PASSWORD).unwrap(),
        &secret,
        p.authenticator(),
        b"pass1"
    ));
}

#[test]
fn an_accounting_request_signed_by_the_radius_crate_verifies_with_ours() {
    let mut req = RPacket::new_with_identifier(RCode::AccountingRequest, SECRET, 3);
    rfc2865::add_user_name(&mut req, "user1");
    rfc2866::add_acct_status_type(&mut req, rfc2866::ACCT_STATUS_TYPE_INTERIM_UPDATE);
    rfc2866::add_acct_session_id(&mut req, "81a00003");
    rfc2866::add_acct_input_octets(&mut req, 123456789);
    rfc2869::add_acct_input_gigawords(&mut req, 2);
    let bytes = req.encode().unwrap();
    let p = Packet::parse(&bytes).unwrap();
    assert!(verify_request_authenticator(&p, &Secret::new(SECRET)));
    assert!(!verify_request_authenticator(&p, &Secret::new(b"wrong")));
    assert_eq!(p.attr_u32(attr::ACCT_STATUS_TYPE), Some(3));
    assert_eq!(p.attr(attr::ACCT_SESSION_ID), Some(&b"81a00003"[..]));
    assert_eq!(p.attr_u32(attr::ACCT_INPUT_OCTETS), Some(123456789));
    assert_eq!(p.attr_u32(attr::ACCT_INPUT_GIGAWORDS), Some(2));
}

#[test]
fn our_access_accept_is_authentic_for_the_radius_crate_with_every_attribute_type() {
    let req = RPacket::new_with_identifier(RCode::AccessRequest, SECRET, 9);
    let req_bytes = req.encode().unwrap();
    let req_auth: [u8; 16] = req.get_authenticator().as_slice().try_into().unwrap();
    let secret = Secret::new(SECRET);

    let mut buf = [0u8; 4096];
    let mut w = PacketWriter::new(&mut buf, Code::ACCESS_ACCEPT, 9, &req_auth);
    w.message_authenticator().unwrap();
    w.vendor_attr(vendor::MIKROTIK, mikrotik::RATE_LIMIT, b"2000k/10000k")
        .unwrap();
    w.attr_ipv4(attr::FRAMED_IP_ADDRESS, Ipv4Addr::new(100, 64, 1, 2))
        .unwrap();
    w.attr(attr::FRAMED_POOL, b"pppoe-pool").unwrap();
    w.attr_u32(attr::ACCT_INTERIM_INTERVAL, 30).unwrap();
    w.attr_u32(attr::SESSION_TIMEOUT, 86400).unwrap();
    w.attr(attr::CLASS, &[1, 2, 3, 4]).unwrap();
    let bytes = w.finish_response(&req_auth, &secret).to_vec();

    assert!(RPacket::is_authentic_response(&bytes, &req_bytes, SECRET));
    assert!(!RPacket::is_authentic_response(
        &bytes, &req_bytes, b"wrong"
    ));
    let r = RPacket::decode(&bytes, SECRET).unwrap();
    assert_eq!(r.get_code(), RCode::AccessAccept);
    assert_eq!(r.get_identifier(), 9);
    assert_eq!(
        rfc2865::lookup_framed_ip_address(&r).unwrap().unwrap(),
        Ipv4Addr::new(100, 64, 1, 2)
    );
    assert_eq!(
        rfc2869::lookup_framed_pool(&r).unwrap().unwrap(),
        "pppoe-pool"
    );
    assert_eq!(
        rfc2869::lookup_acct_interim_interval(&r).unwrap().unwrap(),
        30
    );
    assert_eq!(rfc2865::lookup_session_timeout(&r).unwrap().unwrap(), 86400);
    assert_eq!(rfc2865::lookup_class(&r).unwrap(), vec![1, 2, 3, 4]);
    assert_eq!(rfc2869::lookup_message_authenticator(&r).unwrap().len(), 16);
    let vsa = r.lookup(attr::VENDOR_SPECIFIC).unwrap().encode_bytes();
    assert_eq!(
        vsa,
        vsa_bytes(vendor::MIKROTIK, mikrotik::RATE_LIMIT, b"2000k/10000k")
    );
}

#[test]
fn our_hidden_user_password_is_recovered_by_the_radius_crate() {
    let secret = Secret::new(SECRET);
    let auth = [0x33u8; 16];
    let mut hidden = [0u8; 128];
    let n = shardius::proto::password::hide_user_password(
        b"a much longer password, over 16",
        &secret,
        &auth,
        &mut hidden,
    )
    .unwrap();
    let avp = AVP::from_bytes(attr::USER_PASSWORD, &hidden[..n]);
    assert_eq!(
        avp.encode_user_password(SECRET, &auth).unwrap(),
        b"a much longer password, over 16"
    );
}

#[test]
fn our_accounting_coa_and_disconnect_requests_are_authentic_for_the_radius_crate() {
    let secret = Secret::new(SECRET);
    for code in [
        Code::ACCOUNTING_REQUEST,
        Code::COA_REQUEST,
        Code::DISCONNECT_REQUEST,
    ] {
        let mut buf = [0u8; 4096];
        let mut w = PacketWriter::new(&mut buf, code, 1, &[0; 16]);
        w.message_authenticator().unwrap();
        w.attr(attr::USER_NAME, b"user1").unwrap();
        w.attr(attr::ACCT_SESSION_ID, b"81a00003").unwrap();
        let bytes = w.finish_request(&secret).to_vec();
        assert!(RPacket::is_authentic_request(&bytes, SECRET), "{code}");
        let r = RPacket::decode(&bytes, SECRET).unwrap();
        assert_eq!(
            rfc2866::lookup_acct_session_id(&r).unwrap().unwrap(),
            "81a00003"
        );
    }
}
