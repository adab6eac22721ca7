//! ES256 signers: the trait every signing key of the system implements (software key for merchants
//! and tests, the HSM key `mps-sign` for the bank), and the adapter that lets rcgen sign with one.

use std::path::Path;
use std::sync::Mutex;

use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey as P256SigningKey, VerifyingKey};
use p256::pkcs8::DecodePrivateKey;
use zeroize::Zeroizing;

/// Length of a raw ES256 signature: r || s, 32 bytes each (RFC 7518 section 3.4).
pub const ES256_SIGNATURE_LEN: usize = 64;
/// Length of an uncompressed SEC1 P-256 public point.
pub const P256_POINT_LEN: usize = 65;
/// Largest private key file we read.
const KEY_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Why a signature could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// The private key file could not be read.
    #[error("cannot read private key file {path}")]
    KeyFile {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The key is not a PKCS#8 PEM P-256 private key (the key itself is never shown).
    #[error("private key is not a PKCS#8 PEM P-256 key")]
    KeyFormat,
    /// The signing operation failed.
    #[error("signing failed")]
    Signing,
    /// The HSM refused or failed the signature (or is unavailable: callers fail closed).
    #[error("HSM signing failed")]
    Hsm(#[source] mps_hsm::HsmError),
    /// A signature is not a valid ECDSA P-256 signature (r or s out of range, bad DER).
    #[error("malformed ECDSA P-256 signature")]
    BadSignature,
}

/// Something that makes ES256 signatures: ECDSA P-256 over SHA-256(msg), raw r || s.
pub trait Es256Signer {
    /// Signs `msg` (the signer hashes it with SHA-256).
    fn sign_es256(&self, msg: &[u8]) -> Result<[u8; ES256_SIGNATURE_LEN], SignerError>;
}

/// A software P-256 key loaded from a PKCS#8 PEM file: merchants, tests, file-held CA keys.
pub struct SoftwareSigner {
    key: P256SigningKey,
}

impl std::fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SoftwareSigner")
    }
}

impl SoftwareSigner {
    /// Parses a PKCS#8 PEM P-256 private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SignerError> {
        let key = P256SigningKey::from_pkcs8_pem(pem).map_err(|_| SignerError::KeyFormat)?;
        Ok(Self { key })
    }

    /// Reads and parses a PKCS#8 PEM P-256 private key file.
    pub fn from_pkcs8_pem_file(path: &Path) -> Result<Self, SignerError> {
        let pem = read_key_file(path)?;
        Self::from_pkcs8_pem(&pem)
    }

    /// The public key as an uncompressed SEC1 point (65 bytes).
    pub fn public_key_sec1(&self) -> [u8; P256_POINT_LEN] {
        sec1_uncompressed(self.key.verifying_key())
    }
}

impl Es256Signer for SoftwareSigner {
    fn sign_es256(&self, msg: &[u8]) -> Result<[u8; ES256_SIGNATURE_LEN], SignerError> {
        let signature: Signature = self.key.try_sign(msg).map_err(|_| SignerError::Signing)?;
        let mut out = [0u8; ES256_SIGNATURE_LEN];
        out.copy_from_slice(&signature.to_bytes());
        Ok(out)
    }
}

fn sec1_uncompressed(key: &VerifyingKey) -> [u8; P256_POINT_LEN] {
    let point = key.to_encoded_point(false);
    let mut out = [0u8; P256_POINT_LEN];
    // An uncompressed P-256 point is always 65 bytes.
    out.copy_from_slice(point.as_bytes());
    out
}

/// Reads a private key file into memory that is zeroized on drop.
pub(crate) fn read_key_file(path: &Path) -> Result<Zeroizing<String>, SignerError> {
    use std::io::Read;
    let key_file_error = |source| SignerError::KeyFile { path: path.display().to_string(), source };
    let file = std::fs::File::open(path).map_err(key_file_error)?;
    let mut text = Zeroizing::new(String::new());
    file.take(KEY_FILE_BYTES_MAX).read_to_string(&mut text).map_err(key_file_error)?;
    Ok(text)
}

/// Converts a raw r || s signature to ASN.1 DER (`ECDSA-Sig-Value`), as X.509 and OpenSSL want.
pub fn signature_raw_to_der(raw: &[u8; ES256_SIGNATURE_LEN]) -> Result<Vec<u8>, SignerError> {
    let signature = Signature::from_slice(raw).map_err(|_| SignerError::BadSignature)?;
    Ok(signature.to_der().as_bytes().to_vec())
}

/// Converts an ASN.1 DER ECDSA P-256 signature to raw r || s.
pub fn signature_der_to_raw(der: &[u8]) -> Result<[u8; ES256_SIGNATURE_LEN], SignerError> {
    let signature = Signature::from_der(der).map_err(|_| SignerError::BadSignature)?;
    let mut out = [0u8; ES256_SIGNATURE_LEN];
    out.copy_from_slice(&signature.to_bytes());
    Ok(out)
}

/// Lets rcgen sign certificates, CRLs and CSRs with any [`Es256Signer`] whose public key is known:
/// the private key stays wherever the signer keeps it (for `mps-sign`: inside the HSM).
pub struct RemoteEs256Key<'a> {
    signer: &'a dyn Es256Signer,
    public_key: [u8; P256_POINT_LEN],
    last_error: Mutex<Option<SignerError>>,
}

impl<'a> RemoteEs256Key<'a> {
    /// Wraps `signer`, whose public key is the uncompressed SEC1 point `public_key`.
    pub fn new(signer: &'a dyn Es256Signer, public_key: [u8; P256_POINT_LEN]) -> Self {
        Self { signer, public_key, last_error: Mutex::new(None) }
    }

    /// The error behind the last `rcgen::Error::RemoteKeyError`, if any (rcgen drops causes).
    pub fn take_error(&self) -> Option<SignerError> {
        self.last_error.lock().ok().and_then(|mut slot| slot.take())
    }
}

impl rcgen::PublicKeyData for RemoteEs256Key<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for RemoteEs256Key<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let result = self.signer.sign_es256(msg).and_then(|raw| signature_raw_to_der(&raw));
        result.map_err(|error| {
            if let Ok(mut slot) = self.last_error.lock() {
                *slot = Some(error);
            }
            rcgen::Error::RemoteKeyError
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier as _;
    use p256::pkcs8::{EncodePrivateKey, LineEnding};

    fn fresh_pem() -> Zeroizing<String> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Zeroizing::new(key.serialize_pem())
    }

    #[test]
    fn software_signer_signs_verifiable_es256() {
        let signer = SoftwareSigner::from_pkcs8_pem(&fresh_pem()).unwrap();
        let signature = signer.sign_es256(b"hello").unwrap();
        let verifying = VerifyingKey::from_sec1_bytes(&signer.public_key_sec1()).unwrap();
        let parsed = Signature::from_slice(&signature).unwrap();
        verifying.verify(b"hello", &parsed).unwrap();
        assert!(verifying.verify(b"hellO", &parsed).is_err());
        assert_eq!(format!("{signer:?}"), "SoftwareSigner");
    }

    #[test]
    fn der_and_raw_signatures_convert_both_ways() {
        let key = P256SigningKey::from_pkcs8_pem(&fresh_pem()).unwrap();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let signer = SoftwareSigner::from_pkcs8_pem(&pem).unwrap();
        let raw = signer.sign_es256(b"x").unwrap();
        let der = signature_raw_to_der(&raw).unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(signature_der_to_raw(&der).unwrap(), raw);
        assert!(signature_raw_to_der(&[0u8; 64]).is_err());
        assert!(signature_der_to_raw(&[0x30, 0x00]).is_err());
    }

    #[test]
    fn garbage_keys_are_refused_without_echoing_them() {
        let error = SoftwareSigner::from_pkcs8_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .unwrap_err();
        assert_eq!(error.to_string(), "private key is not a PKCS#8 PEM P-256 key");
    }
}
