//! Subscriber passwords at rest: AES-256-GCM under a key derived with
//! HKDF-SHA256 from a master key file (`shardius keygen`).
//!
//! A stored record is `version (1) | nonce (12) | ciphertext | tag (16)`,
//! with a fresh random 96-bit nonce per record. The plaintext exists only
//! in a caller buffer during one authentication and is zeroised after.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

const RECORD_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Longest password accepted for storage (the MS-CHAPv2 limit is 256
/// characters; PAP carries 128 bytes).
pub const MAX_STORED_PASSWORD: usize = 256;
const HKDF_SALT: &[u8] = b"shardius master key v1";
const HKDF_INFO: &[u8] = b"subscriber password AES-256-GCM";
const AAD: &[u8] = b"shardius-password-v1";

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {0} does not exist (create it with `shardius keygen --out {0}`)")]
    Missing(PathBuf),
    #[error("cannot read key file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {0} is readable by other users (mode {1:o}); run `chmod 600 {0}`")]
    WorldReadable(PathBuf, u32),
    #[error("key file {0} does not hold a 64-character hex key")]
    Malformed(PathBuf),
    #[error("key file {0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A record that does not decrypt: a wrong key or a damaged value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stored password does not decrypt with this key")]
pub struct DecryptError;

/// The derived AES-256-GCM key.
#[derive(Clone)]
pub struct PasswordKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for PasswordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordKey(<redacted>)")
    }
}

impl PasswordKey {
    /// Derives the key from 32 master-key bytes.
    pub fn from_master(master: &[u8; 32]) -> Self {
        let mut okm = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(HKDF_SALT), master)
            .expand(HKDF_INFO, okm.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 length");
        PasswordKey {
            cipher: Aes256Gcm::new(okm.as_ref().into()),
        }
    }

    /// Reads and checks a key file: it must exist, be readable, not be
    /// readable by "other", and hold 64 hex characters.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyFileError::Missing(path.to_owned()))
            }
            Err(source) => {
                return Err(KeyFileError::Unreadable {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o004 != 0 {
            return Err(KeyFileError::WorldReadable(path.to_owned(), mode));
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(|source| {
            KeyFileError::Unreadable {
                path: path.to_owned(),
                source,
            }
        })?);
        let mut master = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), master.as_mut())
            .map_err(|_| KeyFileError::Malformed(path.to_owned()))?;
        Ok(PasswordKey::from_master(&master))
    }

    /// Encrypts a password into a stored record.
    pub fn encrypt(&self, password: &[u8]) -> Vec<u8> {
        let mut record = Vec::with_capacity(1 + NONCE_LEN + password.len() + TAG_LEN);
        record.push(RECORD_VERSION);
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        record.extend_from_slice(&nonce);
        record.extend_from_slice(password);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), AAD, &mut record[1 + NONCE_LEN..])
            .expect("AES-GCM encrypts any length below 64 GiB");
        record.extend_from_slice(&tag);
        record
    }

    /// Decrypts a record into `out`, returning the password. The caller
    /// zeroises `out` when done.
    pub fn decrypt<'o>(
        &self,
        record: &[u8],
        out: &'o mut [u8; MAX_STORED_PASSWORD],
    ) -> Result<&'o [u8], DecryptError> {
        if record.len() < 1 + NONCE_LEN + TAG_LEN || record[0] != RECORD_VERSION {
            return Err(DecryptError);
        }
        let (nonce, rest) = record[1..].split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        if ciphertext.len() > MAX_STORED_PASSWORD {
            return Err(DecryptError);
        }
        let plain = &mut out[..ciphertext.len()];
        plain.copy_from_slice(ciphertext);
        match self.cipher.decrypt_in_place_detached(
            Nonce::from_slice(nonce),
            AAD,
            plain,
            tag.into(),
        ) {
            Ok(()) => Ok(&out[..ciphertext.len()]),
            Err(_) => {
                plain.zeroize();
                Err(DecryptError)
            }
        }
    }
}

/// Writes a new random master key to `path` with mode 0600; never
/// overwrites an existing file.
pub fn generate(path: &Path) -> Result<(), KeyFileError> {
    let mut master = Zeroizing::new([0u8; 32]);
    rand::thread_rng().fill_bytes(master.as_mut());
    let text = Zeroizing::new(format!("{}\n", hex::encode(master.as_ref())));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => KeyFileError::Exists(path.to_owned()),
            _ => KeyFileError::Write {
                path: path.to_owned(),
                source,
            },
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyFileError::Write {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_wrong_key_fails_cleanly() {
        let key = PasswordKey::from_master(&[7; 32]);
        let record = key.encrypt(b"s3cret");
        let mut out = [0u8; MAX_STORED_PASSWORD];
        assert_eq!(key.decrypt(&record, &mut out).unwrap(), b"s3cret");
        let other = PasswordKey::from_master(&[8; 32]);
        assert_eq!(other.decrypt(&record, &mut out), Err(DecryptError));
        assert_eq!(key.decrypt(&record[..10], &mut out), Err(DecryptError));
    }

    #[test]
    fn each_record_has_its_own_nonce() {
        let key = PasswordKey::from_master(&[7; 32]);
        assert_ne!(key.encrypt(b"same"), key.encrypt(b"same"));
    }

    #[test]
    fn key_files_are_created_private_and_checked_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        assert!(matches!(
            PasswordKey::load(&path),
            Err(KeyFileError::Missing(_))
        ));
        generate(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(generate(&path), Err(KeyFileError::Exists(_))));
        PasswordKey::load(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            PasswordKey::load(&path),
            Err(KeyFileError::WorldReadable(..))
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            PasswordKey::load(&path),
            Err(KeyFileError::Malformed(_))
        ));
    }
}
