//! PAP: the User-Password attribute (RFC 2865 §5.2).

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::proto::password::{unhide_user_password, MAX_PASSWORD_LEN};
use crate::proto::Secret;

/// Whether the hidden User-Password `hidden` is `password`. Compared in
/// constant time; the recovered plaintext is zeroised before returning.
pub fn verify(
    hidden: &[u8],
    secret: &Secret,
    request_authenticator: &[u8; 16],
    password: &[u8],
) -> bool {
    let mut plain = [0u8; MAX_PASSWORD_LEN];
    let ok = match unhide_user_password(hidden, secret, request_authenticator, &mut plain) {
        Ok(given) => given.ct_eq(password).into(),
        Err(_) => false,
    };
    plain.zeroize();
    ok
}

/// Whether the hidden User-Password is a password whose NT hash (MD4 of
/// its UTF-16LE form, RFC 2759 §8.3) is `hash`: a subscriber imported from
/// a FreeRADIUS NT-Password logs in by PAP as FreeRADIUS lets them.
pub fn verify_nt_hash(
    hidden: &[u8],
    secret: &Secret,
    request_authenticator: &[u8; 16],
    hash: &[u8; 16],
) -> bool {
    let mut plain = [0u8; MAX_PASSWORD_LEN];
    let ok = match unhide_user_password(hidden, secret, request_authenticator, &mut plain) {
        Ok(given) => {
            let mut given_hash = crate::auth::mschapv2::nt_password_hash(given);
            let ok = given_hash.ct_eq(hash).into();
            given_hash.zeroize();
            ok
        }
        Err(_) => false,
    };
    plain.zeroize();
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::password::hide_user_password;

    #[test]
    fn the_right_password_verifies_and_a_wrong_one_does_not() {
        let secret = Secret::new(b"testing123");
        let ra = [9u8; 16];
        let mut hidden = [0u8; MAX_PASSWORD_LEN];
        let n = hide_user_password(b"pass1", &secret, &ra, &mut hidden).unwrap();
        assert!(verify(&hidden[..n], &secret, &ra, b"pass1"));
        assert!(!verify(&hidden[..n], &secret, &ra, b"pass10"));
        assert!(!verify(&hidden[..n], &secret, &ra, b"pass"));
        assert!(!verify(&hidden[..n], &Secret::new(b"x"), &ra, b"pass1"));
        // By its NT hash (a FreeRADIUS NT-Password).
        let hash = crate::auth::mschapv2::nt_password_hash(b"pass1");
        assert!(verify_nt_hash(&hidden[..n], &secret, &ra, &hash));
        let other = crate::auth::mschapv2::nt_password_hash(b"pass10");
        assert!(!verify_nt_hash(&hidden[..n], &secret, &ra, &other));
        assert!(!verify_nt_hash(
            &hidden[..n],
            &Secret::new(b"x"),
            &ra,
            &hash
        ));
    }
}
