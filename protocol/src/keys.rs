//! The key schedule of DESIGN.md section 3 and the packet crypto, in software, for the SIM side
//! and for tests. The issuer runs the same schedule inside the HSM (`hsm/`); both are checked
//! against `protocol/tests/vectors.json`.

use std::fmt;

use aes::Aes256;
use aes::cipher::{BlockDecryptMut, BlockEncrypt, BlockEncryptMut, KeyInit, KeyIvInit, generic_array::GenericArray};
use cmac::{Cmac, Mac};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::ids::{Counter, Rsn, SimId};

/// Label byte of the personalisation derivation (CK_0).
pub const LABEL_PERSONALISATION: u8 = b'P';
/// Label byte of the session encryption key Ks_n.
pub const LABEL_ENCRYPTION: u8 = b'E';
/// Label byte of the session integrity key Ki_n.
pub const LABEL_INTEGRITY: u8 = b'I';
/// Label byte of the next chain key CK_n.
pub const LABEL_CHAIN: u8 = b'C';

/// Length of the derivation context.
pub const CONTEXT_LEN: usize = 14;
/// Length of the truncated CMAC on the wire.
pub const MAC_LEN: usize = 8;

/// An AES-256 key in clear. Exists only on the SIM side and in tests; zeroized on drop and
/// never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AesKey([u8; 32]);

impl AesKey {
    /// Takes 32 bytes of key material.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key bytes, for the cipher and for wrapping.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(<redacted>)")
    }
}

/// The 32 bytes of derivation data for one KDF output:
/// `label || 0x01 || ctx || label || 0x02 || ctx`, which is exactly the data that
/// `CKM_AES_ECB_ENCRYPT_DATA` encrypts in the HSM.
pub fn kdf_data(label: u8, ctx: &[u8; CONTEXT_LEN]) -> [u8; 32] {
    let mut data = [0u8; 32];
    for (half, counter) in [(0usize, 1u8), (16, 2)] {
        data[half] = label;
        data[half + 1] = counter;
        data[half + 2..half + 16].copy_from_slice(ctx);
    }
    data
}

/// `KDF(K, label, ctx) = AES-256-ECB(K, label||01||ctx) || AES-256-ECB(K, label||02||ctx)`.
pub fn kdf(key: &AesKey, label: u8, ctx: &[u8; CONTEXT_LEN]) -> AesKey {
    let cipher = Aes256::new(GenericArray::from_slice(key.expose()));
    let mut data = Zeroizing::new(kdf_data(label, ctx));
    let (first, second) = data.split_at_mut(16);
    cipher.encrypt_block(GenericArray::from_mut_slice(first));
    cipher.encrypt_block(GenericArray::from_mut_slice(second));
    AesKey(*data)
}

/// Context of the personalisation derivation: `iccid_bcd(10) || 00 00 00 00`.
pub fn personalisation_context(sim_id: &SimId) -> [u8; CONTEXT_LEN] {
    let mut ctx = [0u8; CONTEXT_LEN];
    ctx[..10].copy_from_slice(&sim_id.to_bcd());
    ctx
}

/// Context of session n: `n as 6 bytes big-endian || RSN_n`.
pub fn session_context(counter: Counter, rsn: &Rsn) -> [u8; CONTEXT_LEN] {
    let mut ctx = [0u8; CONTEXT_LEN];
    ctx[..6].copy_from_slice(&counter.to_wire());
    ctx[6..].copy_from_slice(&rsn.0);
    ctx
}

/// `CK_0 = KDF(IMK, 'P', iccid_bcd || 00000000)`. In production this runs only in the HSM.
pub fn derive_chain_key_0(issuer_master_key: &AesKey, sim_id: &SimId) -> AesKey {
    kdf(issuer_master_key, LABEL_PERSONALISATION, &personalisation_context(sim_id))
}

/// The three keys of session n.
#[derive(Debug, Clone)]
pub struct SessionKeys {
    /// Ks_n: encrypts the session's data.
    pub encryption: AesKey,
    /// Ki_n: MACs the session's data.
    pub integrity: AesKey,
    /// CK_n: the chain key for session n + 1.
    pub next_chain: AesKey,
}

impl SessionKeys {
    /// Derives Ks_n, Ki_n and CK_n from CK_{n-1}, n and RSN_n.
    pub fn derive(previous_chain: &AesKey, counter: Counter, rsn: &Rsn) -> Self {
        let ctx = session_context(counter, rsn);
        Self {
            encryption: kdf(previous_chain, LABEL_ENCRYPTION, &ctx),
            integrity: kdf(previous_chain, LABEL_INTEGRITY, &ctx),
            next_chain: kdf(previous_chain, LABEL_CHAIN, &ctx),
        }
    }
}

/// Why a cryptographic check failed. Deliberately carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The MAC does not match: wrong key, or a changed byte.
    #[error("MAC verification failed")]
    BadMac,
    /// The ciphertext does not decrypt to well-padded data of the expected length.
    #[error("decryption failed")]
    BadCiphertext,
}

/// First 8 bytes of AES-CMAC(key, data).
pub fn cmac8(key: &AesKey, data: &[u8]) -> [u8; MAC_LEN] {
    // Cmac<Aes256>::new_from_slice only fails on a wrong key length; ours is 32 by type.
    let mut mac = <Cmac<Aes256> as KeyInit>::new(GenericArray::from_slice(key.expose()));
    mac.update(data);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
}

/// Compares two MACs in constant time.
pub fn mac_matches(expected: &[u8; MAC_LEN], received: &[u8; MAC_LEN]) -> bool {
    expected.ct_eq(received).into()
}

/// AES-256-CBC with PKCS#7 padding.
pub fn cbc_encrypt(key: &AesKey, iv: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
    cbc::Encryptor::<Aes256>::new(GenericArray::from_slice(key.expose()), GenericArray::from_slice(iv))
        .encrypt_padded_vec_mut::<aes::cipher::block_padding::Pkcs7>(plaintext)
}

/// AES-256-CBC decryption and PKCS#7 unpadding; the clear text is zeroized on drop.
pub fn cbc_decrypt(key: &AesKey, iv: &[u8; 16], ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    cbc::Decryptor::<Aes256>::new(GenericArray::from_slice(key.expose()), GenericArray::from_slice(iv))
        .decrypt_padded_vec_mut::<aes::cipher::block_padding::Pkcs7>(ciphertext)
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::BadCiphertext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_data_layout() {
        let ctx = [0xAB; CONTEXT_LEN];
        let data = kdf_data(b'E', &ctx);
        assert_eq!(data[0], b'E');
        assert_eq!(data[1], 1);
        assert_eq!(&data[2..16], &ctx);
        assert_eq!(data[16], b'E');
        assert_eq!(data[17], 2);
        assert_eq!(&data[18..], &ctx);
    }

    #[test]
    fn session_labels_give_distinct_keys() {
        let ck = AesKey::from_bytes([7; 32]);
        let keys = SessionKeys::derive(&ck, Counter::new(1).unwrap(), &Rsn([1; 8]));
        assert_ne!(keys.encryption.expose(), keys.integrity.expose());
        assert_ne!(keys.integrity.expose(), keys.next_chain.expose());
        assert_eq!(format!("{:?}", keys.encryption), "AesKey(<redacted>)");
    }

    #[test]
    fn cmac_matches_rfc4493_style_vector() {
        // NIST SP 800-38B, AES-256, example 2 (16-byte message).
        let key = AesKey::from_bytes(
            hex::decode("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
                .unwrap()
                .try_into()
                .unwrap(),
        );
        let msg = hex::decode("6bc1bee22e409f96e93d7e117393172a").unwrap();
        assert_eq!(hex::encode(cmac8(&key, &msg)), "28a7023f452e8f82");
    }

    #[test]
    fn cbc_round_trip_and_bad_padding() {
        let key = AesKey::from_bytes([3; 32]);
        let iv = [9; 16];
        let ct = cbc_encrypt(&key, &iv, &[1; 23]);
        assert_eq!(ct.len(), 32);
        assert_eq!(&cbc_decrypt(&key, &iv, &ct).unwrap()[..], &[1; 23]);
        assert_eq!(cbc_decrypt(&AesKey::from_bytes([4; 32]), &iv, &ct).err(), Some(CryptoError::BadCiphertext));
    }
}
