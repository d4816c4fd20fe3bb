//! Entry points shared by the fuzz targets (`fuzz/`) and the property
//! tests, so both check the same properties.

use crate::proto::authenticator::{
    check_message_authenticator, verify_request_authenticator, verify_response,
};
use crate::proto::dict::attr;
use crate::proto::password::{unhide_user_password, MAX_PASSWORD_LEN};
use crate::proto::{Packet, PacketWriter, Secret};

/// Parses `data` and walks everything the server would look at; when it
/// parses, re-encodes its attributes and checks decode → encode → decode
/// gives the same packet. Panics only if a property is broken.
pub fn parse_walk_round_trip(data: &[u8]) {
    let Ok(packet) = Packet::parse(data) else {
        return;
    };
    let secret = Secret::new(b"fuzz");
    for a in packet.attributes() {
        if let Some(vsa) = a.vendor_specific() {
            vsa.attributes().for_each(drop);
        }
    }
    let _ = crate::auth::Method::of(&packet);
    let _ = check_message_authenticator(&packet, &secret, Some(&[0; 16]));
    let _ = verify_request_authenticator(&packet, &secret);
    let _ = verify_response(&packet, &[0; 16], &secret);
    if let Some(hidden) = packet.attr(attr::USER_PASSWORD) {
        let mut out = [0u8; MAX_PASSWORD_LEN];
        let _ = unhide_user_password(hidden, &secret, packet.authenticator(), &mut out);
    }

    let mut buf = [0u8; crate::proto::MAX_PACKET_LEN];
    let mut w = PacketWriter::new(
        &mut buf,
        packet.code(),
        packet.identifier(),
        packet.authenticator(),
    );
    for a in packet.attributes() {
        w.attr(a.ty, a.value)
            .expect("a parsed attribute re-encodes");
    }
    let encoded = w.finish_unsigned();
    assert_eq!(
        encoded,
        packet.as_bytes(),
        "decode -> encode is the identity"
    );
    let again = Packet::parse(encoded).expect("re-encoded packet parses");
    assert!(again.attributes().eq(packet.attributes()));
}
