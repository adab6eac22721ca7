//! TLS of the merchant-facing listener: our gateway-server certificate, TLS 1.3, ALPN h2 and
//! http/1.1, and merchant client certificates required and checked against the scheme CA and
//! its CRLs during the handshake, so a revoked or foreign merchant never gets a request in.

use std::sync::Arc;

use mps_pki::{Role, TrustStore};
use rustls::ServerConfig;

use crate::config::ServerConfig as ListenerConfig;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// Client CA or CRL files.
    #[error("merchant trust (server.client_ca / server.client_crls): {0}")]
    ClientTrust(String),
    /// Our certificate or key.
    #[error("server certificate or key (server.certificate / server.private_key): {0}")]
    Identity(String),
}

/// Builds the rustls configuration.
pub fn server_config(listener: &ListenerConfig) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let anchors: Vec<&std::path::Path> = listener.client_ca.iter().map(|p| p.as_path()).collect();
    let crls: Vec<&std::path::Path> = listener.client_crls.iter().map(|p| p.as_path()).collect();
    let trust = TrustStore::from_pem_files(&anchors, &crls).map_err(|e| TlsSetupError::ClientTrust(e.to_string()))?;
    let verifier = mps_pki::tls::client_cert_verifier(&trust, Role::Merchant)
        .map_err(|e| TlsSetupError::ClientTrust(e.to_string()))?;
    let mut config = mps_pki::tls::server_config(&listener.certificate, &listener.private_key, verifier)
        .map_err(|e| TlsSetupError::Identity(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
