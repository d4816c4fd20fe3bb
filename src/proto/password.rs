//! Attribute-value hiding with the shared secret: User-Password (RFC 2865
//! §5.2) and the salted MS-MPPE-Send/Recv-Key encryption (RFC 2548 §2.4.2).
//! Both are the same MD5 stream construction; neither allocates.

use md5::{Digest, Md5};
use zeroize::Zeroize;

use super::secret::Secret;

/// RFC 2865 §5.2: User-Password is at most 128 bytes.
pub const MAX_PASSWORD_LEN: usize = 128;
/// The longest MPPE key that fits one vendor attribute (253 - 6 VSA - 2 salt
/// = 245, rounded down to 16-byte blocks, minus the length byte).
pub const MAX_MPPE_KEY_LEN: usize = 239;
/// Salt (2) + one length byte and a 16-byte key padded to 32.
pub const MPPE_KEY_ATTR_LEN_16: usize = 34;

/// A hidden value that cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HiddenValueError {
    /// Not a positive multiple of 16 bytes, or longer than allowed.
    BadLength,
    /// The decrypted MPPE key length byte exceeds the data.
    BadKeyLength,
}

/// b(i) = MD5(S + c(i-1)), c(0) = `seed`; XORs the stream into `data` in
/// place. `encrypt` chooses whether the chain runs on output or input blocks.
fn md5_stream(data: &mut [u8], secret: &Secret, first: Md5, encrypt: bool) {
    let mut hasher = first;
    for block in data.chunks_mut(16) {
        let b = std::mem::replace(&mut hasher, secret.md5_prefixed()).finalize();
        if encrypt {
            block.iter_mut().zip(b.iter()).for_each(|(p, k)| *p ^= k);
            hasher.update(&*block);
        } else {
            hasher.update(&*block);
            block.iter_mut().zip(b.iter()).for_each(|(c, k)| *c ^= k);
        }
    }
}

/// Hides `password` into `out`, returning the hidden length (a multiple of
/// 16, at least 16). `None` if the password is longer than 128 bytes.
pub fn hide_user_password(
    password: &[u8],
    secret: &Secret,
    request_authenticator: &[u8; 16],
    out: &mut [u8; MAX_PASSWORD_LEN],
) -> Option<usize> {
    if password.len() > MAX_PASSWORD_LEN {
        return None;
    }
    let len = password.len().div_ceil(16).max(1) * 16;
    out[..password.len()].copy_from_slice(password);
    out[password.len()..len].fill(0);
    let mut first = secret.md5_prefixed();
    first.update(request_authenticator);
    md5_stream(&mut out[..len], secret, first, true);
    Some(len)
}

/// Recovers the password hidden in a User-Password value, without its NUL
/// padding. The caller should zeroise `out` once done with it.
pub fn unhide_user_password<'o>(
    hidden: &[u8],
    secret: &Secret,
    request_authenticator: &[u8; 16],
    out: &'o mut [u8; MAX_PASSWORD_LEN],
) -> Result<&'o [u8], HiddenValueError> {
    if hidden.is_empty() || hidden.len() % 16 != 0 || hidden.len() > MAX_PASSWORD_LEN {
        return Err(HiddenValueError::BadLength);
    }
    let data = &mut out[..hidden.len()];
    data.copy_from_slice(hidden);
    let mut first = secret.md5_prefixed();
    first.update(request_authenticator);
    md5_stream(data, secret, first, false);
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    Ok(&out[..end])
}

/// The attribute length [`encrypt_mppe_key`] writes for a key of `key_len` bytes.
pub fn mppe_key_attr_len(key_len: usize) -> usize {
    2 + (1 + key_len).div_ceil(16) * 16
}

/// Encrypts an MPPE key into `out` (RFC 2548 §2.4.2): 2-byte salt (high bit
/// set, unique per attribute in a packet), then the length-prefixed,
/// zero-padded key XORed with MD5(S + R + A), MD5(S + c(1)), ...
/// `out` must be [`mppe_key_attr_len`] bytes long.
pub fn encrypt_mppe_key(
    key: &[u8],
    salt: [u8; 2],
    secret: &Secret,
    request_authenticator: &[u8; 16],
    out: &mut [u8],
) {
    assert!(
        key.len() <= MAX_MPPE_KEY_LEN,
        "MPPE key longer than one attribute"
    );
    assert_eq!(
        out.len(),
        mppe_key_attr_len(key.len()),
        "MPPE output length"
    );
    let salt = [salt[0] | 0x80, salt[1]];
    out[..2].copy_from_slice(&salt);
    let body = &mut out[2..];
    body[0] = key.len() as u8;
    body[1..=key.len()].copy_from_slice(key);
    body[1 + key.len()..].fill(0);
    let mut first = secret.md5_prefixed();
    first.update(request_authenticator);
    first.update(salt);
    md5_stream(body, secret, first, true);
}

/// Decrypts an MS-MPPE-Send/Recv-Key value (the NAS side of
/// [`encrypt_mppe_key`]; used by loadgen and the tests).
pub fn decrypt_mppe_key<'o>(
    value: &[u8],
    secret: &Secret,
    request_authenticator: &[u8; 16],
    out: &'o mut [u8; 256],
) -> Result<&'o [u8], HiddenValueError> {
    let Some((salt, body)) = value.split_first_chunk::<2>() else {
        return Err(HiddenValueError::BadLength);
    };
    if body.is_empty() || body.len() % 16 != 0 || body.len() > 240 {
        return Err(HiddenValueError::BadLength);
    }
    let data = &mut out[..body.len()];
    data.copy_from_slice(body);
    let mut first = secret.md5_prefixed();
    first.update(request_authenticator);
    first.update(salt);
    md5_stream(data, secret, first, false);
    let key_len = usize::from(data[0]);
    if key_len + 1 > data.len() {
        data.zeroize();
        return Err(HiddenValueError::BadKeyLength);
    }
    Ok(&out[1..=key_len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_of_every_length_round_trip() {
        let secret = Secret::new(b"testing123");
        let ra = [0x5a; 16];
        for len in 1..=MAX_PASSWORD_LEN {
            let password: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut hidden = [0u8; MAX_PASSWORD_LEN];
            let n = hide_user_password(&password, &secret, &ra, &mut hidden).unwrap();
            assert_eq!(n % 16, 0);
            let mut plain = [0u8; MAX_PASSWORD_LEN];
            let got = unhide_user_password(&hidden[..n], &secret, &ra, &mut plain).unwrap();
            assert_eq!(got, &password[..]);
        }
    }

    #[test]
    fn hidden_values_of_bad_length_are_errors() {
        let secret = Secret::new(b"s");
        let mut out = [0u8; MAX_PASSWORD_LEN];
        for len in [0, 15, 17, 144] {
            assert_eq!(
                unhide_user_password(&vec![1; len], &secret, &[0; 16], &mut out),
                Err(HiddenValueError::BadLength)
            );
        }
        assert_eq!(
            hide_user_password(&[b'x'; 129], &secret, &[0; 16], &mut out),
            None
        );
    }

    #[test]
    fn mppe_keys_round_trip_and_the_salt_high_bit_is_set() {
        let secret = Secret::new(b"testing123");
        let ra = [3u8; 16];
        let key = [0xAB; 16];
        let mut attr = [0u8; MPPE_KEY_ATTR_LEN_16];
        encrypt_mppe_key(&key, [0x01, 0x02], &secret, &ra, &mut attr);
        assert_eq!(attr[0], 0x81);
        let mut out = [0u8; 256];
        assert_eq!(
            decrypt_mppe_key(&attr, &secret, &ra, &mut out).unwrap(),
            &key[..]
        );
        let mut other = [0u8; 256];
        assert!(
            decrypt_mppe_key(&attr, &Secret::new(b"wrong"), &ra, &mut other)
                .map_or(true, |k| k != key)
        );
    }
}
