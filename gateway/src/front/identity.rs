//! Who is calling: the merchant id of the client certificate the TLS handshake verified
//! (role merchant, SAN URI `urn:mps:merchant:<id>`), read once per connection and handed to
//! every request on it.

use mps_protocol::MerchantId;
use rustls_pki_types::CertificateDer;

/// The merchant of a connection.
#[derive(Debug, Clone)]
pub struct MerchantIdentity {
    /// The merchant id of the certificate.
    pub merchant_id: MerchantId,
    /// The certificate's serial, lowercase hex (for logs).
    pub serial_hex: String,
}

/// Why a verified chain names no merchant.
#[derive(Debug, thiserror::Error)]
#[error("the client certificate names no merchant: {0}")]
pub struct IdentityError(String);

impl MerchantIdentity {
    /// Reads the merchant of a chain the handshake verified.
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Result<Self, IdentityError> {
        let identity =
            mps_pki::tls::peer_identity(chain, mps_pki::Role::Merchant).map_err(|e| IdentityError(e.to_string()))?;
        let merchant_id = identity.merchant_id.ok_or_else(|| IdentityError("no merchant SAN URI".to_owned()))?;
        Ok(Self { merchant_id, serial_hex: identity.serial_hex })
    }
}
