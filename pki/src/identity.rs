//! Who a certificate names: merchant ids and bank IINs in SAN URIs, and the read-only inspection of
//! a certificate (subject, serial, validity, role from the EKU) used by `pki show` and the verifier.

use std::net::IpAddr;

use mps_protocol::{Iin, MerchantId};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::role::Role;

/// Prefix of the SAN URI naming a merchant: `urn:mps:merchant:<merchant_id>`.
pub const MERCHANT_URI_PREFIX: &str = "urn:mps:merchant:";
/// Prefix of the SAN URI naming an issuing bank: `urn:mps:bank:<iin>`.
pub const BANK_URI_PREFIX: &str = "urn:mps:bank:";

/// A certificate's MPS identity that does not read as one merchant id or one IIN. The rules for
/// the identifiers themselves are those of [`MerchantId`] and [`Iin`] (mps-protocol).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A SAN URI with an MPS prefix whose value does not parse.
    #[error("certificate SAN URI with an MPS prefix does not carry a valid identifier")]
    BadUri,
    /// Two SAN URIs name a merchant, or two name a bank.
    #[error("certificate names more than one merchant or more than one bank")]
    Ambiguous,
}

/// The SAN URI naming a merchant, from the id without its padding. Characters outside RFC 3986
/// "unreserved" (for example inner spaces) are percent-encoded, so every merchant id has exactly
/// one URI.
pub fn merchant_uri(merchant_id: &MerchantId) -> String {
    format!("{MERCHANT_URI_PREFIX}{}", percent_encode(merchant_id.as_str()))
}

/// The SAN URI naming an issuing bank.
pub fn bank_uri(iin: &Iin) -> String {
    format!("{BANK_URI_PREFIX}{}", iin.as_str())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes the percent-encoded merchant id of a URI; only the canonical encoding of an id without
/// padding is accepted, so one merchant has one URI.
fn merchant_id_from_uri_value(value: &str) -> Result<MerchantId, IdentityError> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes.get(index + 1..index + 3).ok_or(IdentityError::BadUri)?;
            let text = std::str::from_utf8(hex).map_err(|_| IdentityError::BadUri)?;
            decoded.push(u8::from_str_radix(text, 16).map_err(|_| IdentityError::BadUri)?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    let text = String::from_utf8(decoded).map_err(|_| IdentityError::BadUri)?;
    let merchant_id = MerchantId::new(&text).map_err(|_| IdentityError::BadUri)?;
    if merchant_id.as_str() != text || percent_encode(merchant_id.as_str()) != value {
        return Err(IdentityError::BadUri);
    }
    Ok(merchant_id)
}

/// Reads the IIN of a bank URI.
fn iin_from_uri_value(value: &str) -> Result<Iin, IdentityError> {
    Iin::new(value).map_err(|_| IdentityError::BadUri)
}

/// What `inspect` reads from a certificate, without judging whether it is trustworthy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificateInfo {
    /// Subject distinguished name (RFC 4514 string).
    pub subject: String,
    /// Issuer distinguished name (RFC 4514 string).
    pub issuer: String,
    /// Serial number, lowercase hex without leading zero bytes.
    pub serial_hex: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The role named by an MPS key-purpose OID in the EKU (None for CAs and foreign certificates).
    pub role: Option<Role>,
    /// Merchant id from a `urn:mps:merchant:` SAN URI.
    pub merchant_id: Option<MerchantId>,
    /// IIN from a `urn:mps:bank:` SAN URI.
    pub bank_iin: Option<Iin>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP address SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// Basic constraints say CA.
    pub is_ca: bool,
    /// SHA-256 of the DER certificate, lowercase hex.
    pub fingerprint_sha256: String,
}

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// Not a DER X.509 certificate, or trailing bytes after it.
    #[error("not a well-formed X.509 certificate")]
    Malformed,
    /// A malformed extension (EKU, SAN, key usage, basic constraints).
    #[error("certificate has a malformed or duplicated extension")]
    BadExtension,
    /// The certificate's MPS identity is malformed or ambiguous.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// Parses a DER certificate, refusing trailing bytes.
pub(crate) fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, InspectError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(InspectError::Malformed),
    }
}

/// The certificate's subject public key bits (for a P-256 key: the 65-byte SEC1 point), to
/// check that a certificate belongs to a key held elsewhere (an HSM). Does not verify anything.
pub fn subject_public_key(der: &CertificateDer<'_>) -> Result<Vec<u8>, InspectError> {
    Ok(parse_certificate(der)?.public_key().subject_public_key.data.to_vec())
}

/// Reads a certificate's names, validity, role and identity. Does not verify anything.
pub fn inspect(der: &CertificateDer<'_>) -> Result<CertificateInfo, InspectError> {
    let cert = parse_certificate(der)?;
    let mut info = CertificateInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial_hex: serial_hex(cert.raw_serial()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        role: role_from_eku(&cert)?,
        merchant_id: None,
        bank_iin: None,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        is_ca: cert.is_ca(),
        fingerprint_sha256: hex::encode(Sha256::digest(der.as_ref())),
    };
    read_subject_alt_names(&cert, &mut info)?;
    Ok(info)
}

/// Lowercase hex of a DER INTEGER's content without leading zero bytes.
pub(crate) fn serial_hex(raw: &[u8]) -> String {
    let skip = raw.iter().take_while(|b| **b == 0).count().min(raw.len().saturating_sub(1));
    hex::encode(&raw[skip..])
}

/// The role named by the certificate's EKU: exactly one MPS key-purpose OID, else None.
pub(crate) fn role_from_eku(cert: &X509Certificate<'_>) -> Result<Option<Role>, InspectError> {
    let eku = cert.extended_key_usage().map_err(|_| InspectError::BadExtension)?;
    let Some(eku) = eku else { return Ok(None) };
    let mut roles = eku.value.other.iter().filter_map(|oid| Role::from_purpose_oid_der(oid.as_bytes()));
    match (roles.next(), roles.next()) {
        (Some(role), None) => Ok(Some(role)),
        _ => Ok(None),
    }
}

fn read_subject_alt_names(cert: &X509Certificate<'_>, info: &mut CertificateInfo) -> Result<(), InspectError> {
    let san = cert.subject_alternative_name().map_err(|_| InspectError::BadExtension)?;
    let Some(san) = san else { return Ok(()) };
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(dns) => info.dns_names.push((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => {
                if let Some(ip) = ip_from_bytes(bytes) {
                    info.ip_addresses.push(ip);
                }
            }
            GeneralName::URI(uri) => read_mps_uri(uri, info)?,
            _ => {}
        }
    }
    Ok(())
}

fn read_mps_uri(uri: &str, info: &mut CertificateInfo) -> Result<(), IdentityError> {
    if let Some(value) = uri.strip_prefix(MERCHANT_URI_PREFIX) {
        let merchant_id = merchant_id_from_uri_value(value)?;
        if info.merchant_id.replace(merchant_id).is_some() {
            return Err(IdentityError::Ambiguous);
        }
    } else if let Some(value) = uri.strip_prefix(BANK_URI_PREFIX) {
        let iin = iin_from_uri_value(value)?;
        if info.bank_iin.replace(iin).is_some() {
            return Err(IdentityError::Ambiguous);
        }
    }
    Ok(())
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merchant(text: &str) -> MerchantId {
        MerchantId::new(text).unwrap()
    }

    #[test]
    fn merchant_uris_name_the_id_without_padding() {
        assert_eq!(merchant_uri(&merchant("SHOP-001       ")), "urn:mps:merchant:SHOP-001");
        assert_eq!(merchant_uri(&merchant("123456789012345")), "urn:mps:merchant:123456789012345");
        assert_eq!(merchant_uri(&merchant(" LEAD")), "urn:mps:merchant:%20LEAD");
    }

    #[test]
    fn merchant_uri_round_trips_with_percent_encoding() {
        assert_eq!(merchant_uri(&merchant("SHOP-001   ")), "urn:mps:merchant:SHOP-001");
        let uri = merchant_uri(&merchant("A B%C/"));
        assert_eq!(uri, "urn:mps:merchant:A%20B%25C%2F");
        let value = uri.strip_prefix(MERCHANT_URI_PREFIX).unwrap();
        assert_eq!(merchant_id_from_uri_value(value).unwrap(), merchant("A B%C/"));
        assert_eq!(merchant_id_from_uri_value(value).unwrap().as_str(), "A B%C/");
    }

    #[test]
    fn non_canonical_merchant_uris_are_refused() {
        assert_eq!(merchant_id_from_uri_value("SHOP%2D1"), Err(IdentityError::BadUri));
        assert_eq!(merchant_id_from_uri_value("A%2f"), Err(IdentityError::BadUri));
        assert_eq!(merchant_id_from_uri_value("A B"), Err(IdentityError::BadUri));
        assert_eq!(merchant_id_from_uri_value("A%2"), Err(IdentityError::BadUri));
        assert_eq!(merchant_id_from_uri_value("A%20"), Err(IdentityError::BadUri));
        assert_eq!(merchant_id_from_uri_value(""), Err(IdentityError::BadUri));
        assert_eq!(merchant_id_from_uri_value("%20%20"), Err(IdentityError::BadUri));
        assert_eq!(merchant_id_from_uri_value("1234567890123456"), Err(IdentityError::BadUri));
        assert_eq!(merchant_id_from_uri_value("caf%C3%A9"), Err(IdentityError::BadUri));
    }

    #[test]
    fn bank_uris_carry_six_digits() {
        assert_eq!(bank_uri(&Iin::new("123456").unwrap()), "urn:mps:bank:123456");
        assert_eq!(iin_from_uri_value("123456"), Ok(Iin::new("123456").unwrap()));
        assert_eq!(iin_from_uri_value("12345"), Err(IdentityError::BadUri));
        assert_eq!(iin_from_uri_value("12345a"), Err(IdentityError::BadUri));
        assert_eq!(iin_from_uri_value("1234567"), Err(IdentityError::BadUri));
    }

    #[test]
    fn serial_hex_drops_the_sign_byte() {
        assert_eq!(serial_hex(&[0x00, 0x81, 0x02]), "8102");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[0x40, 0x00]), "4000");
    }
}
