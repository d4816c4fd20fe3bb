//! CHAP (RFC 1994 §4.1, carried as RFC 2865 §5.3 CHAP-Password).

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// CHAP-Password: 1-byte CHAP Ident, then the 16-byte response.
pub const CHAP_PASSWORD_LEN: usize = 17;

/// The CHAP response MD5(Ident | password | challenge).
pub fn response(ident: u8, password: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update([ident]);
    md5.update(password);
    md5.update(challenge);
    md5.finalize().into()
}

/// Whether a CHAP-Password value answers `challenge` with `password`. The
/// challenge is the CHAP-Challenge attribute when present, otherwise the
/// Request Authenticator (RFC 2865 §2.2).
pub fn verify(chap_password: &[u8], challenge: &[u8], password: &[u8]) -> bool {
    let Some((&ident, given)) = chap_password.split_first() else {
        return false;
    };
    if chap_password.len() != CHAP_PASSWORD_LEN {
        return false;
    }
    response(ident, password, challenge).ct_eq(given).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_to_the_challenge_verifies() {
        let challenge = [0x11u8; 16];
        let mut value = vec![5u8];
        value.extend_from_slice(&response(5, b"s3cret", &challenge));
        assert!(verify(&value, &challenge, b"s3cret"));
        assert!(!verify(&value, &challenge, b"s3creT"));
        assert!(!verify(&value, &[0x12u8; 16], b"s3cret"));
        assert!(!verify(&value[..16], &challenge, b"s3cret"));
        assert!(!verify(&[], &challenge, b"s3cret"));
    }
}
