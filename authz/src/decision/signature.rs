//! The bank's signature on every processed answer: a detached JWS (ES256) over the exact body
//! bytes, made by mps-sign inside the HSM, with the bank's certificate chain as x5c.

use mps_hsm::{Hsm, HsmError};
use mps_pki::jws::DetachedSigning;
use rustls_pki_types::CertificateDer;

/// Why an answer could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The HSM did not sign.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The JWS could not be assembled (a chain too long for the header bounds).
    #[error("JWS: {0}")]
    Jws(#[from] mps_pki::jws::JwsError),
}

/// Signs answer bodies with the HSM.
pub struct AnswerSigner {
    chain: Vec<CertificateDer<'static>>,
}

impl AnswerSigner {
    /// With the bank's chain (leaf first) as x5c.
    pub fn new(chain: &[CertificateDer<'_>]) -> Self {
        Self { chain: chain.iter().map(|c| c.clone().into_owned()).collect() }
    }

    /// The detached JWS of `body`.
    pub async fn sign(&self, hsm: &Hsm, body: &[u8]) -> Result<String, SignError> {
        let signing = DetachedSigning::new(body, &self.chain)?;
        let signature = hsm.sign_es256(signing.signing_input()).await?;
        Ok(signing.finish(&signature))
    }
}
