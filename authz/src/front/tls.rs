//! TLS of the gateway-facing listener: our certificate, TLS 1.3 (1.2 by configuration), ALPN
//! for HTTP/2 and HTTP/1.1, and client certificates required and checked against the gateway
//! CA and its CRLs during the handshake, so a revoked or foreign gateway never gets a request in.

use std::sync::Arc;

use mps_pki::{Role, TrustStore};
use rustls::ServerConfig;

use crate::config::{ServerConfig as ListenerConfig, TlsVersion};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// Client CA or CRL files.
    #[error("client trust (server.client_ca / server.client_crls): {0}")]
    ClientTrust(String),
    /// Our certificate or key.
    #[error("server certificate or key (server.certificate / server.private_key): {0}")]
    Identity(String),
}

/// The trust store for client (gateway) certificates, from `server.client_ca` and
/// `server.client_crls`.
pub fn client_trust(listener: &ListenerConfig) -> Result<TrustStore, TlsSetupError> {
    let anchors: Vec<&std::path::Path> = listener.client_ca.iter().map(|p| p.as_path()).collect();
    let crls: Vec<&std::path::Path> = listener.client_crls.iter().map(|p| p.as_path()).collect();
    TrustStore::from_pem_files(&anchors, &crls).map_err(|e| TlsSetupError::ClientTrust(e.to_string()))
}

/// Builds the rustls configuration, client certificates checked against `trust`.
pub fn server_config(listener: &ListenerConfig, trust: &TrustStore) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let verifier = mps_pki::tls::client_cert_verifier(trust, Role::GatewayClient)
        .map_err(|e| TlsSetupError::ClientTrust(e.to_string()))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match listener.tls_min_version {
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let chain =
        mps_pki::pem::load_certificates(&listener.certificate).map_err(|e| TlsSetupError::Identity(e.to_string()))?;
    let key =
        mps_pki::pem::load_private_key(&listener.private_key).map_err(|e| TlsSetupError::Identity(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(mps_pki::tls::crypto_provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsSetupError::Identity(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsSetupError::Identity(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
