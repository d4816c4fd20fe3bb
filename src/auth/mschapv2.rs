//! MS-CHAPv2 (RFC 2759) as a RADIUS server sees it: MS-CHAP-Challenge and
//! MS-CHAP2-Response in, MS-CHAP2-Success or MS-CHAP-Error out (RFC 2548).
//!
//! Written out here rather than taken from a crate: no maintained Rust crate
//! implements the RFC 2759 authenticator side on the RustCrypto primitives
//! (md4, sha1, des) without allocating per call.

use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockEncrypt, KeyInit};
use des::Des;
use md4::Md4;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::mppe::{self, MppeKeys};
use crate::proto::dict::{ms, vendor};
use crate::proto::password::{encrypt_mppe_key, MPPE_KEY_ATTR_LEN_16};
use crate::proto::{EncodeError, PacketWriter, Secret};

/// MS-CHAP2-Response value: Ident, Flags, Peer-Challenge (16), Reserved (8), Response (24).
pub const RESPONSE_LEN: usize = 50;
/// MS-CHAP2-Success value: Ident, then "S=" and 40 upper-case hex digits.
pub const SUCCESS_LEN: usize = 43;
/// RFC 2759 §4: passwords are at most 256 Unicode characters.
const MAX_PASSWORD_CHARS: usize = 256;

/// RFC 2759 §8.7 magic constants.
const AUTH_MAGIC1: &[u8; 39] = b"Magic server to client signing constant";
const AUTH_MAGIC2: &[u8; 41] = b"Pad to make it do more than one iteration";

/// A parsed MS-CHAP2-Response attribute (RFC 2548 §2.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response<'a> {
    pub ident: u8,
    pub flags: u8,
    pub peer_challenge: &'a [u8; 16],
    pub nt_response: &'a [u8; 24],
}

impl<'a> Response<'a> {
    /// `None` unless the value is exactly 50 bytes.
    pub fn parse(value: &'a [u8]) -> Option<Self> {
        let value: &[u8; RESPONSE_LEN] = value.try_into().ok()?;
        Some(Response {
            ident: value[0],
            flags: value[1],
            peer_challenge: value[2..18].try_into().ok()?,
            nt_response: value[26..50].try_into().ok()?,
        })
    }

    /// Encodes a response (the NAS side; used by loadgen and the tests).
    pub fn encode(
        ident: u8,
        peer_challenge: &[u8; 16],
        nt_response: &[u8; 24],
    ) -> [u8; RESPONSE_LEN] {
        let mut out = [0u8; RESPONSE_LEN];
        out[0] = ident;
        out[2..18].copy_from_slice(peer_challenge);
        out[26..50].copy_from_slice(nt_response);
        out
    }
}

/// What a successful MS-CHAPv2 check gives the Access-Accept.
pub struct Success {
    /// The MS-CHAP2-Success attribute value.
    pub success: [u8; SUCCESS_LEN],
    /// MS-MPPE-Send-Key / Recv-Key from the server's side (RFC 3079).
    pub keys: MppeKeys,
}

impl Success {
    /// Writes what an MS-CHAPv2 Access-Accept carries (RFC 2548): the
    /// MS-CHAP2-Success value, MS-MPPE-Send-Key and MS-MPPE-Recv-Key
    /// encrypted under the secret and `request_authenticator`, and the MPPE
    /// policy (allowed) and types (40- and 128-bit). `salt` should differ
    /// from packet to packet; the two keys get distinct salts from it.
    pub fn write_accept_attributes(
        &self,
        w: &mut PacketWriter<'_>,
        secret: &Secret,
        request_authenticator: &[u8; 16],
        salt: [u8; 2],
    ) -> Result<(), EncodeError> {
        w.vendor_attr(vendor::MICROSOFT, ms::CHAP2_SUCCESS, &self.success)?;
        let keys = [
            (
                ms::MPPE_SEND_KEY,
                &self.keys.send,
                [salt[0], salt[1] & 0xFE],
            ),
            (
                ms::MPPE_RECV_KEY,
                &self.keys.recv,
                [salt[0], salt[1] | 0x01],
            ),
        ];
        for (vendor_type, key, salt) in keys {
            w.vendor_attr_with(
                vendor::MICROSOFT,
                vendor_type,
                MPPE_KEY_ATTR_LEN_16,
                |out| encrypt_mppe_key(key, salt, secret, request_authenticator, out),
            )?;
        }
        w.vendor_attr_u32(
            vendor::MICROSOFT,
            ms::MPPE_ENCRYPTION_POLICY,
            ms::POLICY_ALLOWED,
        )?;
        w.vendor_attr_u32(
            vendor::MICROSOFT,
            ms::MPPE_ENCRYPTION_TYPES,
            ms::TYPES_RC4_40_128,
        )
    }
}

/// The user name that goes into the challenge hash: RFC 2759 §4 hashes the
/// name without any "DOMAIN\" prefix a Windows client may send.
pub fn username_for_hash(user_name: &[u8]) -> &[u8] {
    match user_name.iter().rposition(|&b| b == b'\\') {
        Some(i) => &user_name[i + 1..],
        None => user_name,
    }
}

/// NtPasswordHash (RFC 2759 §8.3): MD4 of the password in UTF-16LE. The
/// stored password is UTF-8; bytes that are not valid UTF-8 are taken as
/// Latin-1 so that every stored password has a hash.
pub fn nt_password_hash(password: &[u8]) -> [u8; 16] {
    let mut unicode = [0u8; 2 * MAX_PASSWORD_CHARS];
    let mut len = 0;
    let mut push = |unit: u16| {
        if len + 2 <= unicode.len() {
            unicode[len..len + 2].copy_from_slice(&unit.to_le_bytes());
            len += 2;
        }
    };
    match std::str::from_utf8(password) {
        Ok(s) => s.encode_utf16().for_each(&mut push),
        Err(_) => password.iter().for_each(|&b| push(u16::from(b))),
    }
    let hash = Md4::digest(&unicode[..len]).into();
    unicode.zeroize();
    hash
}

/// ChallengeHash (RFC 2759 §8.2).
pub fn challenge_hash(
    peer_challenge: &[u8; 16],
    auth_challenge: &[u8; 16],
    user_name: &[u8],
) -> [u8; 8] {
    let digest = Sha1::new()
        .chain_update(peer_challenge)
        .chain_update(auth_challenge)
        .chain_update(username_for_hash(user_name))
        .finalize();
    digest[..8].try_into().expect("SHA-1 is 20 bytes")
}

/// ChallengeResponse (RFC 2759 §8.5): the challenge DES-encrypted under
/// the three 7-byte thirds of the zero-padded password hash.
pub fn challenge_response(challenge: &[u8; 8], password_hash: &[u8; 16]) -> [u8; 24] {
    let mut z = [0u8; 21];
    z[..16].copy_from_slice(password_hash);
    let mut out = [0u8; 24];
    for (key7, block) in z.chunks_exact(7).zip(out.chunks_exact_mut(8)) {
        let cipher = Des::new(GenericArray::from_slice(&des_key(key7)));
        block.copy_from_slice(challenge);
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
    z.zeroize();
    out
}

/// Spreads 56 key bits over 8 bytes, leaving DES's parity bits clear
/// (RFC 2759 §8.6 DesEncrypt; DES ignores parity).
fn des_key(k: &[u8]) -> [u8; 8] {
    [
        k[0],
        (k[0] << 7) | (k[1] >> 1),
        (k[1] << 6) | (k[2] >> 2),
        (k[2] << 5) | (k[3] >> 3),
        (k[3] << 4) | (k[4] >> 4),
        (k[4] << 3) | (k[5] >> 5),
        (k[5] << 2) | (k[6] >> 6),
        k[6] << 1,
    ]
    .map(|b| b & 0xFE)
}

/// GenerateNTResponse (RFC 2759 §8.1): what the peer computes.
pub fn generate_nt_response(
    auth_challenge: &[u8; 16],
    peer_challenge: &[u8; 16],
    user_name: &[u8],
    password: &[u8],
) -> [u8; 24] {
    let challenge = challenge_hash(peer_challenge, auth_challenge, user_name);
    let mut hash = nt_password_hash(password);
    let response = challenge_response(&challenge, &hash);
    hash.zeroize();
    response
}

/// GenerateAuthenticatorResponse (RFC 2759 §8.7): "S=" and 40 hex digits.
pub fn authenticator_response(
    password_hash: &[u8; 16],
    nt_response: &[u8; 24],
    peer_challenge: &[u8; 16],
    auth_challenge: &[u8; 16],
    user_name: &[u8],
) -> [u8; 42] {
    let hash_hash: [u8; 16] = Md4::digest(password_hash).into();
    let challenge = challenge_hash(peer_challenge, auth_challenge, user_name);
    authenticator_response_from(&hash_hash, nt_response, &challenge)
}

/// §8.7 from its intermediate values, so [`verify`] computes each once.
fn authenticator_response_from(
    hash_hash: &[u8; 16],
    nt_response: &[u8; 24],
    challenge: &[u8; 8],
) -> [u8; 42] {
    let digest = Sha1::new()
        .chain_update(hash_hash)
        .chain_update(nt_response)
        .chain_update(AUTH_MAGIC1)
        .finalize();
    let digest = Sha1::new()
        .chain_update(digest)
        .chain_update(challenge)
        .chain_update(AUTH_MAGIC2)
        .finalize();
    let mut out = [0u8; 42];
    out[..2].copy_from_slice(b"S=");
    hex_upper(&digest, &mut out[2..]);
    out
}

/// Checks an MS-CHAP2-Response against the subscriber's password; on
/// success returns the MS-CHAP2-Success value and the MPPE keys.
/// `auth_challenge` is the MS-CHAP-Challenge value; anything but 16 bytes fails.
pub fn verify(
    auth_challenge: &[u8],
    response: &Response<'_>,
    user_name: &[u8],
    password: &[u8],
) -> Option<Success> {
    let mut hash = nt_password_hash(password);
    let result = verify_hash(auth_challenge, response, user_name, &hash);
    hash.zeroize();
    result
}

/// [`verify`] against the NT hash of the password (a FreeRADIUS
/// NT-Password): MS-CHAPv2 needs nothing more.
pub fn verify_hash(
    auth_challenge: &[u8],
    response: &Response<'_>,
    user_name: &[u8],
    hash: &[u8; 16],
) -> Option<Success> {
    let auth_challenge: &[u8; 16] = auth_challenge.try_into().ok()?;
    let challenge = challenge_hash(response.peer_challenge, auth_challenge, user_name);
    let expected = challenge_response(&challenge, hash);
    let matches = bool::from(expected.ct_eq(response.nt_response));
    let mut hash_hash: [u8; 16] = Md4::digest(hash).into();
    let result = matches.then(|| {
        let mut success = [0u8; SUCCESS_LEN];
        success[0] = response.ident;
        success[1..].copy_from_slice(&authenticator_response_from(
            &hash_hash,
            response.nt_response,
            &challenge,
        ));
        Success {
            success,
            keys: mppe::keys_from_hash_hash(&hash_hash, response.nt_response),
        }
    });
    hash_hash.zeroize();
    result
}

/// MS-CHAP-Error codes (RFC 2759 §6) the server reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 647 ERROR_ACCT_DISABLED.
    AccountDisabled,
    /// 648 ERROR_PASSWD_EXPIRED: also used for an expired subscription.
    PasswordExpired,
    /// 649 ERROR_NO_DIALIN_PERMISSION: e.g. a MAC binding mismatch.
    NoDialinPermission,
    /// 691 ERROR_AUTHENTICATION_FAILURE.
    AuthenticationFailure,
}

impl ErrorCode {
    fn number_and_message(self) -> (&'static [u8], &'static [u8]) {
        match self {
            ErrorCode::AccountDisabled => (b"647", b"Account disabled"),
            ErrorCode::PasswordExpired => (b"648", b"Account expired"),
            ErrorCode::NoDialinPermission => (b"649", b"No dial-in permission"),
            ErrorCode::AuthenticationFailure => (b"691", b"Authentication failed"),
        }
    }
}

/// An MS-CHAP-Error value: Ident, then `E=691 R=0 C=<challenge> V=3 M=<text>`.
/// R=0 tells the peer not to retry within this PPP session.
pub struct ErrorValue {
    buf: [u8; 80],
    len: usize,
}

impl ErrorValue {
    pub fn new(ident: u8, code: ErrorCode, auth_challenge: &[u8; 16]) -> Self {
        let (number, message) = code.number_and_message();
        let mut buf = [0u8; 80];
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            buf[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        put(&[ident]);
        put(b"E=");
        put(number);
        put(b" R=0 C=");
        let mut hex = [0u8; 32];
        hex_upper(auth_challenge, &mut hex);
        put(&hex);
        put(b" V=3 M=");
        put(message);
        ErrorValue { buf, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Upper-case hex into a slice of exactly twice the input's length. (The
/// hex crate's upper-case encoder allocates a String.)
fn hex_upper(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xF)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_response_verifies_and_a_wrong_password_does_not() {
        let auth = [0x42; 16];
        let peer = [0x24; 16];
        let nt = generate_nt_response(&auth, &peer, b"alice", b"s3cret");
        let value = Response::encode(7, &peer, &nt);
        let response = Response::parse(&value).unwrap();
        let ok = verify(&auth, &response, b"alice", b"s3cret").unwrap();
        assert_eq!(ok.success[0], 7);
        assert_eq!(&ok.success[1..3], b"S=");
        assert!(verify(&auth, &response, b"alice", b"s3creT").is_none());
        assert!(verify(&auth, &response, b"bob", b"s3cret").is_none());
        assert!(verify(&auth[..15], &response, b"alice", b"s3cret").is_none());
    }

    #[test]
    fn a_windows_domain_prefix_is_not_hashed() {
        assert_eq!(username_for_hash(b"CORP\\alice"), b"alice");
        assert_eq!(
            challenge_hash(&[1; 16], &[2; 16], b"CORP\\alice"),
            challenge_hash(&[1; 16], &[2; 16], b"alice")
        );
    }

    #[test]
    fn responses_of_the_wrong_length_do_not_parse() {
        assert!(Response::parse(&[0; 49]).is_none());
        assert!(Response::parse(&[0; 51]).is_none());
    }

    #[test]
    fn the_error_value_names_the_code_and_forbids_retry() {
        let v = ErrorValue::new(3, ErrorCode::AuthenticationFailure, &[0xAB; 16]);
        let text = std::str::from_utf8(&v.as_bytes()[1..]).unwrap();
        assert_eq!(v.as_bytes()[0], 3);
        assert_eq!(
            text,
            "E=691 R=0 C=ABABABABABABABABABABABABABABABAB V=3 M=Authentication failed"
        );
    }

    #[test]
    fn non_utf8_passwords_still_hash() {
        assert_ne!(nt_password_hash(&[0xff, 0xfe]), nt_password_hash(b""));
    }
}
