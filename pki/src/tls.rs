//! rustls configuration for the scheme's mutual TLS links (merchant -> gateway -> authz): the
//! stock WebPKI verifiers with the scheme's CRLs, wrapped to demand the peer's [`Role`], and
//! ServerConfig/ClientConfig builders from PEM files. Always the aws-lc-rs provider, TLS 1.3.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::identity;
use crate::pem::{self, PemError};
use crate::role::Role;
use crate::verify::{self, TrustStore, VerifiedIdentity, VerifyError};

/// A TLS configuration that could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// A trust anchor was refused by rustls.
    #[error("trust anchor refused by rustls")]
    Anchor(#[source] rustls::Error),
    /// The verifier could not be built (for example a CRL does not parse).
    #[error("certificate verifier could not be built")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls refused the certificate chain, key or protocol settings.
    #[error("TLS configuration refused")]
    Config(#[from] rustls::Error),
}

/// The one crypto provider of the system: aws-lc-rs. Never rely on a process default.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn root_store(trust: &TrustStore) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for anchor in trust.anchor_certificates() {
        roots.add(anchor.clone()).map_err(TlsError::Anchor)?;
    }
    Ok(Arc::new(roots))
}

/// A client certificate verifier for servers: the chain must lead to the trust store's anchors,
/// no certificate in it may be on a CRL (unknown status and expired CRLs are refused), and the
/// leaf must be a certificate of `role` (for authz: [`Role::GatewayClient`]; for the gateway:
/// [`Role::Merchant`]). Clients without a certificate are refused.
pub fn client_cert_verifier(trust: &TrustStore, role: Role) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(root_store(trust)?, crypto_provider())
        .with_crls(trust.crls().iter().cloned())
        .enforce_revocation_expiration()
        .build()?;
    Ok(Arc::new(RoleClientVerifier { inner, role }))
}

/// A server certificate verifier for clients: as [`client_cert_verifier`], plus the server name
/// check, and the leaf must be a certificate of `role` ([`Role::AuthzServer`] or
/// [`Role::GatewayServer`]).
pub fn server_cert_verifier(trust: &TrustStore, role: Role) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(root_store(trust)?, crypto_provider())
        .with_crls(trust.crls().iter().cloned())
        .enforce_revocation_expiration()
        .build()?;
    Ok(Arc::new(RoleServerVerifier { inner, role }))
}

/// A server configuration from a chain PEM file (leaf first) and its private key PEM file
/// (PKCS#8, SEC1 or PKCS#1), requiring client certificates checked by `client_verifier`.
pub fn server_config(
    chain_file: &Path,
    key_file: &Path,
    client_verifier: Arc<dyn ClientCertVerifier>,
) -> Result<ServerConfig, TlsError> {
    let chain = pem::load_certificates(chain_file)?;
    let key = pem::load_private_key(key_file)?;
    Ok(ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, key)?)
}

/// A client configuration that checks the server with `server_verifier` and, if given,
/// authenticates with the chain and key PEM files `client_identity`.
pub fn client_config(
    server_verifier: Arc<dyn ServerCertVerifier>,
    client_identity: Option<(&Path, &Path)>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(server_verifier);
    Ok(match client_identity {
        Some((chain_file, key_file)) => {
            let chain = pem::load_certificates(chain_file)?;
            let key = pem::load_private_key(key_file)?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    })
}

/// The identity of a peer whose chain the handshake already verified (for example the merchant
/// id of a client of the gateway): reads the leaf, checks it fits `role`, verifies nothing else.
pub fn peer_identity(peer_chain: &[CertificateDer<'_>], role: Role) -> Result<VerifiedIdentity, VerifyError> {
    let leaf = peer_chain.first().ok_or(VerifyError::Malformed)?;
    verify::check_role(leaf, role)
}

fn require_role(end_entity: &CertificateDer<'_>, role: Role) -> Result<(), rustls::Error> {
    verify::check_role(end_entity, role).map(|_| ()).map_err(|error| {
        tracing::info!(%role, %error, "peer certificate refused for its role");
        rustls::Error::InvalidCertificate(CertificateError::InvalidPurpose)
    })
}

#[derive(Debug)]
struct RoleClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    role: Role,
}

impl ClientCertVerifier for RoleClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now).inspect_err(|error| {
            let serial = identity::inspect(end_entity).map(|info| info.serial_hex).unwrap_or_default();
            tracing::info!(%error, %serial, role = %self.role, "client certificate refused");
        })?;
        require_role(end_entity, self.role)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct RoleServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    role: Role,
}

impl ServerCertVerifier for RoleServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        require_role(end_entity, self.role)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
