//! MPPE key derivation from MS-CHAPv2 (RFC 3079 §3.3–3.4): the start keys
//! an Access-Accept hands to the NAS in MS-MPPE-Send-Key / MS-MPPE-Recv-Key.

use md4::Md4;
use sha1::{Digest, Sha1};
use zeroize::Zeroize;

const MASTER_MAGIC: &[u8; 27] = b"This is the MPPE Master Key";
/// Client send key / server receive key.
const MAGIC2: &[u8; 84] =
    b"On the client side, this is the send key; on the server side, it is the receive key.";
/// Client receive key / server send key.
const MAGIC3: &[u8; 84] =
    b"On the client side, this is the receive key; on the server side, it is the send key.";
const SHS_PAD1: [u8; 40] = [0x00; 40];
const SHS_PAD2: [u8; 40] = [0xF2; 40];

/// 128-bit MPPE start keys from the authenticator's side. Send-Key
/// encrypts server-to-peer traffic, Recv-Key peer-to-server.
#[derive(Clone, PartialEq, Eq)]
pub struct MppeKeys {
    pub send: [u8; 16],
    pub recv: [u8; 16],
}

impl Drop for MppeKeys {
    fn drop(&mut self) {
        self.send.zeroize();
        self.recv.zeroize();
    }
}

impl std::fmt::Debug for MppeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MppeKeys(<redacted>)")
    }
}

/// GetMasterKey (RFC 3079 §3.4).
pub fn master_key(password_hash_hash: &[u8; 16], nt_response: &[u8; 24]) -> [u8; 16] {
    let digest = Sha1::new()
        .chain_update(password_hash_hash)
        .chain_update(nt_response)
        .chain_update(MASTER_MAGIC)
        .finalize();
    digest[..16].try_into().expect("SHA-1 is 20 bytes")
}

/// GetAsymmetricStartKey (RFC 3079 §3.4) for 128-bit keys.
pub fn asymmetric_start_key(master_key: &[u8; 16], is_send: bool, is_server: bool) -> [u8; 16] {
    let magic = if is_send == is_server { MAGIC3 } else { MAGIC2 };
    let digest = Sha1::new()
        .chain_update(master_key)
        .chain_update(SHS_PAD1)
        .chain_update(magic)
        .chain_update(SHS_PAD2)
        .finalize();
    digest[..16].try_into().expect("SHA-1 is 20 bytes")
}

/// The server's send and receive start keys for one MS-CHAPv2 exchange.
pub fn server_keys(password_hash: &[u8; 16], nt_response: &[u8; 24]) -> MppeKeys {
    let mut hash_hash: [u8; 16] = Md4::digest(password_hash).into();
    let keys = keys_from_hash_hash(&hash_hash, nt_response);
    hash_hash.zeroize();
    keys
}

/// [`server_keys`] from the PasswordHashHash (MD4 of the NT hash).
pub fn keys_from_hash_hash(password_hash_hash: &[u8; 16], nt_response: &[u8; 24]) -> MppeKeys {
    let mut master = master_key(password_hash_hash, nt_response);
    let keys = MppeKeys {
        send: asymmetric_start_key(&master, true, true),
        recv: asymmetric_start_key(&master, false, true),
    };
    master.zeroize();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_send_key_is_the_client_receive_key() {
        let master = [7u8; 16];
        assert_eq!(
            asymmetric_start_key(&master, true, true),
            asymmetric_start_key(&master, false, false)
        );
        assert_eq!(
            asymmetric_start_key(&master, false, true),
            asymmetric_start_key(&master, true, false)
        );
        assert_ne!(
            asymmetric_start_key(&master, true, true),
            asymmetric_start_key(&master, false, true)
        );
    }
}
