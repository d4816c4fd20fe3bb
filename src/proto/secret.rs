//! The shared secret of one RADIUS client, with its hash states precomputed.
//!
//! Every packet needs the secret two ways: as an HMAC-MD5 key
//! (Message-Authenticator) and as the prefix of MD5 (User-Password, MPPE
//! keys). Both are absorbed once here, when the NAS registry is loaded, so a
//! request costs a state clone instead of re-hashing the key.

use std::fmt;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use zeroize::Zeroizing;

pub(crate) type HmacMd5 = Hmac<Md5>;

/// A RADIUS shared secret. Redacted in `Debug`, zeroised on drop.
#[derive(Clone)]
pub struct Secret {
    bytes: Zeroizing<Vec<u8>>,
    hmac: HmacMd5,
    md5_prefix: Md5,
}

impl Secret {
    pub fn new(secret: &[u8]) -> Self {
        Secret {
            bytes: Zeroizing::new(secret.to_vec()),
            hmac: HmacMd5::new_from_slice(secret).expect("HMAC accepts keys of any length"),
            md5_prefix: Md5::new_with_prefix(secret),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A fresh HMAC-MD5 keyed with the secret.
    pub(crate) fn hmac(&self) -> HmacMd5 {
        self.hmac.clone()
    }

    /// An MD5 that has already absorbed the secret.
    pub(crate) fn md5_prefixed(&self) -> Md5 {
        self.md5_prefix.clone()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.bytes.ct_eq(&other.bytes).into()
    }
}

impl Eq for Secret {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_secret() {
        let s = Secret::new(b"testing123");
        assert!(!format!("{s:?}").contains("testing123"));
    }
}
