//! The bank's signature on every processed answer: a detached JWS (ES256) over the exact body
//! bytes, made by mps-sign inside the HSM, with the bank's certificate chain as x5c.
//!
//! During a signing-key renewal the signer holds the next key's chain too and switches to it at
//! the configured time; answers signed before keep their signature and the certificate that
//! verifies it (a retransmission gets the stored answer, signature included).

use std::sync::atomic::{AtomicBool, Ordering};

use mps_hsm::{Hsm, HsmError, SigningKey};
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

/// The next signing key of a renewal: from when, and its chain.
struct NextKey {
    from: time::OffsetDateTime,
    chain: Vec<CertificateDer<'static>>,
}

/// Signs answer bodies with the HSM.
pub struct AnswerSigner {
    chain: Vec<CertificateDer<'static>>,
    next: Option<NextKey>,
    switched: AtomicBool,
}

fn owned(chain: &[CertificateDer<'_>]) -> Vec<CertificateDer<'static>> {
    chain.iter().map(|c| c.clone().into_owned()).collect()
}

impl AnswerSigner {
    /// With the bank's chain (leaf first) as x5c.
    pub fn new(chain: &[CertificateDer<'_>]) -> Self {
        Self { chain: owned(chain), next: None, switched: AtomicBool::new(false) }
    }

    /// A signing-key renewal: from `from` on, answers are signed with the HSM's next signing
    /// key (`keys.signing_next`) and carry `chain` as x5c.
    pub fn with_next(mut self, from: time::OffsetDateTime, chain: &[CertificateDer<'_>]) -> Self {
        self.next = Some(NextKey { from, chain: owned(chain) });
        self
    }

    /// The key and chain that sign at `now`.
    fn choose(&self, now: time::OffsetDateTime) -> (SigningKey, &[CertificateDer<'static>]) {
        match &self.next {
            Some(next) if now >= next.from => {
                if !self.switched.swap(true, Ordering::Relaxed) {
                    tracing::info!(from = %next.from, "answers are now signed with the next signing key");
                }
                (SigningKey::Next, &next.chain)
            }
            _ => (SigningKey::Current, &self.chain),
        }
    }

    /// The detached JWS of `body`.
    pub async fn sign(&self, hsm: &Hsm, body: &[u8]) -> Result<String, SignError> {
        let (key, chain) = self.choose(time::OffsetDateTime::now_utc());
        let signing = DetachedSigning::new(body, chain)?;
        let signature = hsm.sign_es256_with(key, signing.signing_input()).await?;
        Ok(signing.finish(&signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_key_signs_from_its_time_on() {
        let current = [CertificateDer::from(vec![1u8])];
        let next = [CertificateDer::from(vec![2u8])];
        let from = time::macros::datetime!(2026-12-01 00:00 UTC);
        let signer = AnswerSigner::new(&current).with_next(from, &next);
        let before = signer.choose(from - time::Duration::SECOND);
        assert_eq!((before.0, before.1[0].as_ref()), (SigningKey::Current, &[1u8][..]));
        let at = signer.choose(from);
        assert_eq!((at.0, at.1[0].as_ref()), (SigningKey::Next, &[2u8][..]));
        let alone = AnswerSigner::new(&current);
        assert_eq!(alone.choose(from + time::Duration::DAY).0, SigningKey::Current);
    }
}
