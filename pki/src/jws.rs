//! Detached JWS (RFC 7515 appendix F) with ES256 and an `x5c` chain in the protected header: the
//! merchant signs its request body, authz signs its answer with `mps-sign` in the HSM, authz
//! signs clearing files; the receivers verify with [`verify_detached`] against a [`TrustStore`].
//!
//! Form: `BASE64URL(header) + ".." + BASE64URL(signature)`, header
//! `{"alg":"ES256","x5c":[<standard base64 DER>, ...]}`, signature = raw r || s (64 bytes) over
//! `BASE64URL(header) + "." + BASE64URL(payload)` (the payload is base64url-encoded for signing;
//! the unencoded-payload option of RFC 7797 is not used).

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::{Deserialize, Serialize};

use crate::identity;
use crate::role::Role;
use crate::signer::{ES256_SIGNATURE_LEN, Es256Signer, SignerError};
use crate::verify::{CHAIN_CERTS_MAX, TrustStore, VerifiedIdentity, VerifyError};

/// The only algorithm accepted.
pub const ALGORITHM: &str = "ES256";
/// Largest encoded protected header (bytes of its base64url form).
pub const HEADER_B64_BYTES_MAX: usize = 16 * 1024;
/// Most certificates in `x5c`.
pub const X5C_CERTS_MAX: usize = CHAIN_CERTS_MAX;
/// Length of the encoded signature: 64 bytes in base64url without padding.
const SIGNATURE_B64_LEN: usize = 86;
/// Largest whole JWS string accepted.
pub const JWS_BYTES_MAX: usize = HEADER_B64_BYTES_MAX + 2 + SIGNATURE_B64_LEN;

/// Why a JWS could not be made or was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwsError {
    /// Not `header..signature`, bad base64url or bad JSON.
    #[error("malformed detached JWS")]
    Malformed,
    /// The header (or the whole JWS) is larger than the limit.
    #[error("JWS header larger than {HEADER_B64_BYTES_MAX} bytes")]
    HeaderTooLarge,
    /// `alg` is not ES256.
    #[error("JWS algorithm not accepted; only ES256")]
    UnsupportedAlgorithm,
    /// The header asks for something not supported (`crit`, `b64: false`).
    #[error("JWS header uses an unsupported parameter (crit or b64)")]
    UnsupportedHeader,
    /// `x5c` missing, empty, too long or not base64 DER.
    #[error("JWS x5c must hold 1 to {X5C_CERTS_MAX} base64 DER certificates")]
    BadX5c,
    /// The certificate chain is not accepted for the role.
    #[error("JWS certificate refused")]
    Certificate(#[from] VerifyError),
    /// The leaf key is not a P-256 key.
    #[error("JWS certificate key is not ECDSA P-256")]
    UnsupportedKey,
    /// The signature does not verify over the payload.
    #[error("JWS signature does not verify")]
    BadSignature,
    /// Signing failed.
    #[error("JWS signing failed")]
    Signer(#[from] SignerError),
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    alg: &'static str,
    x5c: &'a [String],
}

#[derive(Deserialize)]
struct HeaderIn {
    alg: String,
    #[serde(default)]
    x5c: Option<Vec<String>>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
    #[serde(default)]
    b64: Option<serde_json::Value>,
}

/// Signs `payload` detached with `signer`; `x5c` is the signer's chain, leaf first.
pub fn sign_detached(payload: &[u8], x5c: &[CertificateDer<'_>], signer: &dyn Es256Signer) -> Result<String, JwsError> {
    let signing = DetachedSigning::new(payload, x5c)?;
    let signature = signer.sign_es256(signing.signing_input())?;
    Ok(signing.finish(&signature))
}

/// A detached JWS in two steps, for signers that are async (`Hsm::sign_es256(..).await`):
/// `new`, sign [`DetachedSigning::signing_input`], then [`DetachedSigning::finish`].
#[derive(Debug, Clone)]
pub struct DetachedSigning {
    header_b64: String,
    signing_input: String,
}

impl DetachedSigning {
    /// Builds the protected header with `x5c` (leaf first) and the signing input over `payload`.
    pub fn new(payload: &[u8], x5c: &[CertificateDer<'_>]) -> Result<Self, JwsError> {
        if x5c.is_empty() || x5c.len() > X5C_CERTS_MAX {
            return Err(JwsError::BadX5c);
        }
        let certificates: Vec<String> = x5c.iter().map(|der| STANDARD.encode(der.as_ref())).collect();
        let header =
            serde_json::to_vec(&HeaderOut { alg: ALGORITHM, x5c: &certificates }).map_err(|_| JwsError::Malformed)?;
        let header_b64 = URL_SAFE_NO_PAD.encode(header);
        if header_b64.len() > HEADER_B64_BYTES_MAX {
            return Err(JwsError::HeaderTooLarge);
        }
        let signing_input = signing_input(&header_b64, payload);
        Ok(Self { header_b64, signing_input })
    }

    /// The bytes to sign with ES256: `BASE64URL(header) + "." + BASE64URL(payload)`.
    pub fn signing_input(&self) -> &[u8] {
        self.signing_input.as_bytes()
    }

    /// The JWS `header..signature` for the raw r || s signature of the signing input.
    pub fn finish(&self, signature: &[u8; ES256_SIGNATURE_LEN]) -> String {
        format!("{}..{}", self.header_b64, URL_SAFE_NO_PAD.encode(signature))
    }
}

/// Verifies a detached JWS over `payload`: header bounds and `alg`, the `x5c` chain for `role`
/// at `now` (see [`TrustStore::verify`]), then the signature with the leaf's key. Returns who
/// signed.
pub fn verify_detached(
    jws: &str,
    payload: &[u8],
    trust: &TrustStore,
    role: Role,
    now: UnixTime,
) -> Result<VerifiedIdentity, JwsError> {
    if jws.len() > JWS_BYTES_MAX {
        return Err(JwsError::HeaderTooLarge);
    }
    let mut parts = jws.split('.');
    let (Some(header_b64), Some(""), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed);
    };
    if header_b64.len() > HEADER_B64_BYTES_MAX {
        return Err(JwsError::HeaderTooLarge);
    }
    let chain = parse_header(header_b64)?;
    let signer = trust.verify(&chain, role, now)?;
    let key = leaf_key(&chain[0])?;
    let signature = decode_signature(signature_b64)?;
    // aws-lc-rs (the tree's one crypto provider), not RustCrypto's pure-Rust P-256: the
    // merchant's signature is verified on every authorization.
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key[..])
        .verify(signing_input(header_b64, payload).as_bytes(), &signature)
        .map_err(|_| JwsError::BadSignature)?;
    Ok(signer)
}

fn signing_input(header_b64: &str, payload: &[u8]) -> String {
    format!("{header_b64}.{}", URL_SAFE_NO_PAD.encode(payload))
}

fn parse_header(header_b64: &str) -> Result<Vec<CertificateDer<'static>>, JwsError> {
    let header_json = URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| JwsError::Malformed)?;
    let header: HeaderIn = serde_json::from_slice(&header_json).map_err(|_| JwsError::Malformed)?;
    if header.alg != ALGORITHM {
        return Err(JwsError::UnsupportedAlgorithm);
    }
    let b64_false = matches!(header.b64, Some(ref value) if value != &serde_json::Value::Bool(true));
    if header.crit.is_some() || b64_false {
        return Err(JwsError::UnsupportedHeader);
    }
    let x5c = header.x5c.ok_or(JwsError::BadX5c)?;
    if x5c.is_empty() || x5c.len() > X5C_CERTS_MAX {
        return Err(JwsError::BadX5c);
    }
    x5c.iter().map(|text| STANDARD.decode(text).map(CertificateDer::from).map_err(|_| JwsError::BadX5c)).collect()
}

/// `id-ecPublicKey` (1.2.840.10045.2.1) and `prime256v1` (1.2.840.10045.3.1.7), DER contents.
const OID_EC_PUBLIC_KEY: [u8; 7] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: [u8; 8] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The leaf's P-256 public key as an uncompressed SEC1 point (65 bytes); any other key type or
/// curve is `UnsupportedKey`.
fn leaf_key(leaf: &CertificateDer<'_>) -> Result<[u8; 65], JwsError> {
    let cert = identity::parse_certificate(leaf).map_err(|_| JwsError::UnsupportedKey)?;
    let spki = cert.public_key();
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm.as_bytes() != OID_EC_PUBLIC_KEY || curve.is_none_or(|c| c.as_bytes() != OID_P256) {
        return Err(JwsError::UnsupportedKey);
    }
    let point: [u8; 65] = spki.subject_public_key.data.as_ref().try_into().map_err(|_| JwsError::UnsupportedKey)?;
    if point[0] != 0x04 {
        return Err(JwsError::UnsupportedKey);
    }
    Ok(point)
}

fn decode_signature(signature_b64: &str) -> Result<Vec<u8>, JwsError> {
    if signature_b64.len() != SIGNATURE_B64_LEN {
        return Err(JwsError::BadSignature);
    }
    let raw = URL_SAFE_NO_PAD.decode(signature_b64).map_err(|_| JwsError::BadSignature)?;
    if raw.len() != ES256_SIGNATURE_LEN {
        return Err(JwsError::BadSignature);
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn header_rules_are_enforced_before_any_certificate_work() {
        assert!(matches!(
            parse_header(&header(r#"{"alg":"HS256","x5c":["AA=="]}"#)),
            Err(JwsError::UnsupportedAlgorithm)
        ));
        assert!(matches!(parse_header(&header(r#"{"alg":"none"}"#)), Err(JwsError::UnsupportedAlgorithm)));
        assert!(matches!(parse_header(&header(r#"{"alg":"ES256"}"#)), Err(JwsError::BadX5c)));
        assert!(matches!(parse_header(&header(r#"{"alg":"ES256","x5c":[]}"#)), Err(JwsError::BadX5c)));
        assert!(matches!(parse_header(&header(r#"{"alg":"ES256","x5c":["!!"]}"#)), Err(JwsError::BadX5c)));
        assert!(matches!(
            parse_header(&header(r#"{"alg":"ES256","x5c":["AA=="],"crit":["b64"],"b64":false}"#)),
            Err(JwsError::UnsupportedHeader)
        ));
        assert!(matches!(
            parse_header(&header(r#"{"alg":"ES256","alg":"ES256","x5c":["AA=="]}"#)),
            Err(JwsError::Malformed)
        ));
        let five = r#"{"alg":"ES256","x5c":["AA==","AA==","AA==","AA==","AA=="]}"#;
        assert!(matches!(parse_header(&header(five)), Err(JwsError::BadX5c)));
        assert_eq!(parse_header(&header(r#"{"alg":"ES256","x5c":["AAE="],"kid":"k"}"#)).unwrap().len(), 1);
    }

    #[test]
    fn signatures_must_be_64_bytes() {
        assert!(matches!(decode_signature("AAAA"), Err(JwsError::BadSignature)));
        // 64 bytes decode; whether they verify is the key's business (an all-zero r || s never
        // does: tests/jws.rs).
        assert_eq!(decode_signature(&"A".repeat(86)).unwrap().len(), 64);
        assert!(matches!(decode_signature(&"A".repeat(85)), Err(JwsError::BadSignature)));
    }
}
