//! Keys that never leave the HSM, as the PKI uses them: the bank's `mps-sign` (certificate
//! request, JWS) and CA keys kept in a token. Signing goes through `mps-hsm` (`CKM_ECDSA` over a
//! host SHA-256); rcgen receives DER signatures, JWS raw r || s.

use std::path::Path;

use mps_hsm::{Hsm, HsmConfig};

use crate::signer::{ES256_SIGNATURE_LEN, Es256Signer, P256_POINT_LEN, SignerError, signature_raw_to_der};

const HSM_CONFIG_BYTES_MAX: u64 = 64 * 1024;

/// An HSM configuration or connection that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmKeyError {
    /// The configuration file could not be read.
    #[error("cannot read HSM config {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("HSM config {path} is invalid")]
    Config {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: mps_hsm::ConfigError,
    },
    /// The HSM could not be reached, the PIN was refused or a key is missing.
    #[error("cannot use the HSM (check the token label, the PIN variable and that the key labelled {label:?} exists)")]
    Connect {
        /// Label of the signing key asked for.
        label: String,
        /// The cause.
        #[source]
        source: mps_hsm::HsmError,
    },
}

/// Reads an `mps-hsm` TOML configuration and applies the `MPS_HSM__*` overrides (the same
/// ones `mps-hsm` reads, for example `MPS_HSM__TOKEN_LABEL`). When `signing_label` is given it
/// replaces `keys.signing`, even one from `MPS_HSM__KEYS__SIGNING`, so the pool signs with that
/// key (for example a CA key) instead of `mps-sign`.
pub fn load_hsm_config(path: &Path, signing_label: Option<&str>) -> Result<HsmConfig, HsmKeyError> {
    use std::io::Read;
    let io_error = |source| HsmKeyError::Io { path: path.display().to_string(), source };
    let config_error = |source| HsmKeyError::Config { path: path.display().to_string(), source };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let mut text = String::new();
    file.take(HSM_CONFIG_BYTES_MAX).read_to_string(&mut text).map_err(io_error)?;
    let mut config = HsmConfig::from_toml_and_env(&text).map_err(config_error)?;
    if let Some(label) = signing_label {
        config.keys.signing = label.to_owned();
        config.validate().map_err(config_error)?;
    }
    Ok(config)
}

/// The HSM's signing key (`keys.signing` of its configuration) as an ES256 signer and as an
/// rcgen signing key. Its methods block: call them off the async runtime's worker threads.
#[derive(Debug, Clone)]
pub struct HsmSigner {
    hsm: Hsm,
    public_key: [u8; P256_POINT_LEN],
}

impl HsmSigner {
    /// Wraps a connected pool; the public key is the one read at connection time.
    pub fn new(hsm: Hsm) -> Self {
        let public_key = hsm.signing_public_key();
        Self { hsm, public_key }
    }

    /// Connects (blocking) with `config` and wraps the pool.
    pub fn connect_blocking(config: HsmConfig) -> Result<Self, HsmKeyError> {
        let label = config.keys.signing.clone();
        Hsm::connect_blocking(config).map(Self::new).map_err(|source| HsmKeyError::Connect { label, source })
    }

    /// The public key as an uncompressed SEC1 point.
    pub fn public_key_sec1(&self) -> [u8; P256_POINT_LEN] {
        self.public_key
    }

    /// The pool.
    pub fn hsm(&self) -> &Hsm {
        &self.hsm
    }
}

impl Es256Signer for HsmSigner {
    fn sign_es256(&self, msg: &[u8]) -> Result<[u8; ES256_SIGNATURE_LEN], SignerError> {
        self.hsm.blocking_sign_es256(msg).map_err(SignerError::Hsm)
    }
}

/// `mps-sign` of a connected pool as an ES256 signer. Blocks the calling thread: from async
/// code prefer [`crate::jws::DetachedSigning`] with `Hsm::sign_es256(..).await`.
impl Es256Signer for Hsm {
    fn sign_es256(&self, msg: &[u8]) -> Result<[u8; ES256_SIGNATURE_LEN], SignerError> {
        self.blocking_sign_es256(msg).map_err(SignerError::Hsm)
    }
}

impl rcgen::PublicKeyData for HsmSigner {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for HsmSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let raw = self.hsm.blocking_sign_es256(msg).map_err(|error| {
            tracing::warn!(%error, "HSM signature for a certificate or CRL failed");
            rcgen::Error::RemoteKeyError
        })?;
        signature_raw_to_der(&raw).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// A PKCS#10 request for `signer`'s key, signed by that key (proof of possession): the key
/// itself never leaves wherever the signer keeps it. Subject `O=<organization>, CN=<name>`.
pub fn certificate_request_pem(
    signer: &dyn rcgen::SigningKey,
    organization: &str,
    common_name: &str,
) -> Result<String, rcgen::Error> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, organization);
    params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    params.serialize_request(&signer)?.pem()
}
