//! Step 3 of the decision: the merchant's detached JWS over the exact body bytes, its x5c chain
//! to the scheme CA (validity, usage, revocation, through `pki`), and the certificate's
//! merchant id equal to the body's. Any failure is 401 with code 63.

use std::sync::{Arc, PoisonError, RwLock};

use mps_pki::jws::{self, JwsError};
use mps_pki::{Role, TrustStore};
use mps_protocol::MerchantId;
use rustls_pki_types::UnixTime;

/// Why the merchant's signature was refused.
#[derive(Debug, thiserror::Error)]
pub enum MerchantRefusal {
    /// No `x-jws-signature` header.
    #[error("the x-jws-signature header is missing")]
    Missing,
    /// The JWS, its chain or its signature failed.
    #[error("merchant signature refused: {0}")]
    Jws(#[from] JwsError),
    /// The certificate names another merchant.
    #[error(
        "the signing certificate is for merchant {:?}, the body names {:?}",
        .certificate.as_ref().map_or("", MerchantId::as_str),
        .body.as_str()
    )]
    OtherMerchant {
        /// From the certificate (None if it names no merchant).
        certificate: Option<MerchantId>,
        /// From the body.
        body: MerchantId,
    },
}

/// Checks merchant signatures against the scheme's trust anchors and CRLs. Clones share one
/// trust store, which [`MerchantVerifier::replace`] swaps (new CRLs) for every clone at once.
#[derive(Clone)]
pub struct MerchantVerifier {
    trust: Arc<RwLock<Arc<TrustStore>>>,
}

impl MerchantVerifier {
    /// Over the given trust store.
    pub fn new(trust: TrustStore) -> Self {
        Self { trust: Arc::new(RwLock::new(Arc::new(trust))) }
    }

    /// Puts `trust` in force for the checks that start from now on.
    pub fn replace(&self, trust: TrustStore) {
        *self.trust.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(trust);
    }

    /// Step 3.
    pub fn check(&self, jws: Option<&str>, body: &[u8], merchant_id: &MerchantId) -> Result<(), MerchantRefusal> {
        let jws = jws.ok_or(MerchantRefusal::Missing)?;
        let trust = Arc::clone(&self.trust.read().unwrap_or_else(PoisonError::into_inner));
        let identity = jws::verify_detached(jws, body, &trust, Role::Merchant, UnixTime::now())?;
        match identity.merchant_id {
            Some(certified) if certified == *merchant_id => Ok(()),
            certificate => Err(MerchantRefusal::OtherMerchant { certificate, body: *merchant_id }),
        }
    }
}
