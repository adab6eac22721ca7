//! The merchant's side of the link to the bank (through the gateway): [`request`] builds and
//! signs the bodies, [`submit`] posts them over mutual TLS and retries the identical bytes,
//! [`answer`] verifies the bank's signed answers, [`reversals`] stores and forwards reversals.

pub mod answer;
pub mod request;
pub mod reversals;
pub mod submit;

use std::sync::Arc;
use std::time::Duration;

use mps_pki::{SoftwareSigner, TrustStore};
use rustls_pki_types::CertificateDer;

use crate::config::MerchantConfig;

/// Why the link to the bank could not be set up (at start-up).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The merchant certificate chain could not be read.
    #[error("merchant.certificate: {0}")]
    Certificate(#[source] mps_pki::pem::PemError),
    /// The merchant key could not be read (the key itself is never shown).
    #[error("merchant.private_key: {0}")]
    Key(#[source] mps_pki::SignerError),
    /// The merchant certificate is not a valid merchant certificate for our merchant id.
    #[error("merchant.certificate is not a valid merchant certificate for {merchant_id}: {reason}")]
    NotOurCertificate {
        /// Our configured id.
        merchant_id: String,
        /// Why.
        reason: String,
    },
    /// The scheme CA or CRLs could not be read.
    #[error("trust.scheme_ca / trust.crls: {0}")]
    Trust(#[source] mps_pki::TrustStoreError),
    /// The TLS client could not be built.
    #[error("gateway TLS client (gateway.client_certificate / client_key): {0}")]
    Tls(#[source] mps_pki::tls::TlsError),
    /// reqwest refused the client.
    #[error("gateway HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// Everything needed to talk to the bank: our signing key and chain, the trust store for its
/// answers, and one keep-alive HTTP/2 client over mutual TLS.
pub struct BankLink {
    pub(crate) http: reqwest::Client,
    pub(crate) base_url: String,
    pub(crate) signer: SoftwareSigner,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) trust: Arc<TrustStore>,
    pub(crate) limits: submit::RetryLimits,
    pub(crate) answer_bytes_max: usize,
}

impl std::fmt::Debug for BankLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankLink").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

impl BankLink {
    /// Reads the keys, chains and CRLs named by the configuration and builds the client. Checks
    /// that our certificate is a merchant certificate naming our merchant id, now.
    pub fn new(config: &MerchantConfig) -> Result<Self, SetupError> {
        let chain = mps_pki::pem::load_certificates(&config.merchant.certificate).map_err(SetupError::Certificate)?;
        let signer = SoftwareSigner::from_pkcs8_pem_file(&config.merchant.private_key).map_err(SetupError::Key)?;
        let anchors: Vec<&std::path::Path> = config.trust.scheme_ca.iter().map(|p| p.as_path()).collect();
        let crls: Vec<&std::path::Path> = config.trust.crls.iter().map(|p| p.as_path()).collect();
        let trust = Arc::new(TrustStore::from_pem_files(&anchors, &crls).map_err(SetupError::Trust)?);
        let not_ours = |reason: String| SetupError::NotOurCertificate {
            merchant_id: config.merchant.merchant_id.as_str().to_owned(),
            reason,
        };
        let identity = trust.verify_now(&chain, mps_pki::Role::Merchant).map_err(|e| not_ours(e.to_string()))?;
        if identity.merchant_id != Some(config.merchant.merchant_id) {
            return Err(not_ours("it names another merchant id".to_owned()));
        }
        let verifier =
            mps_pki::tls::server_cert_verifier(&trust, config.gateway.server_role).map_err(SetupError::Tls)?;
        let mut tls = mps_pki::tls::client_config(verifier, Some(config.gateway.client_identity(&config.merchant)))
            .map_err(SetupError::Tls)?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_millis(config.gateway.connect_timeout_ms))
            .pool_idle_timeout(Duration::from_millis(config.gateway.pool_idle_timeout_ms))
            .tcp_keepalive(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(SetupError::Http)?;
        Ok(Self {
            http,
            base_url: config.gateway.url.trim_end_matches('/').to_owned(),
            signer,
            chain,
            trust,
            limits: submit::RetryLimits::from_config(config),
            answer_bytes_max: config.gateway.answer_bytes_max,
        })
    }
}
