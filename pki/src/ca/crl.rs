//! Revocation: recording a revoked serial with the CA that issued it, and signing each CA's CRL
//! (next CRL number, nextUpdate from the configured lifetime) plus `crls.pem`, the file every
//! verifier loads.

use std::path::PathBuf;

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber, SigningKey};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::state::RevokedRecord;
use super::{CaError, CaLevel, CertificateAuthority, RequestError, files, truncate};
use crate::{identity, pem};

/// RFC 5280 revocation reasons the CA records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationReason {
    /// No reason given (no reasonCode entry is written).
    Unspecified,
    /// The private key is known or suspected to be compromised.
    KeyCompromise,
    /// The CA key is compromised.
    CaCompromise,
    /// The subject's name or other information changed.
    AffiliationChanged,
    /// Replaced by a new certificate.
    Superseded,
    /// No longer needed.
    CessationOfOperation,
    /// The subject lost the privilege (e.g. a merchant was offboarded).
    PrivilegeWithdrawn,
}

impl RevocationReason {
    fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::CaCompromise => rcgen::RevocationReason::CaCompromise,
            RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            RevocationReason::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
        }
    }
}

impl CertificateAuthority {
    /// Records the revocation of `serial` (hex, colons allowed) with the CA that issued it and
    /// returns that CA; regenerate its CRL with [`CertificateAuthority::write_crl`] afterwards.
    pub fn revoke(&mut self, serial: &str, reason: RevocationReason, now: OffsetDateTime) -> Result<CaLevel, CaError> {
        let serial_hex = normalize_serial(serial)?;
        let level = self
            .state
            .issued
            .iter()
            .find(|record| record.serial_hex == serial_hex)
            .map(|record| record.issuer)
            .ok_or_else(|| CaError::UnknownSerial { serial_hex: serial_hex.clone() })?;
        let record = self.record_mut(level);
        if record.revoked.iter().any(|revoked| revoked.serial_hex == serial_hex) {
            return Err(CaError::AlreadyRevoked { serial_hex });
        }
        record.revoked.push(RevokedRecord { serial_hex: serial_hex.clone(), revoked_at: truncate(now), reason });
        self.save_state()?;
        tracing::info!(serial = %serial_hex, ?reason, ?level, "certificate revoked");
        Ok(level)
    }

    /// Signs a new CRL for `level` (next CRL number, thisUpdate = now, nextUpdate = now + the
    /// configured lifetime) and writes it, and the combined CRL file.
    pub fn write_crl(
        &mut self,
        level: CaLevel,
        ca_key: &dyn SigningKey,
        now: OffsetDateTime,
    ) -> Result<PathBuf, CaError> {
        let issuer = self.issuer(level, ca_key)?;
        let now = truncate(now);
        let ski = subject_key_identifier(self.certificate(level))?;
        let record = self.record(level);
        let crl_number = record.crl_number + 1;
        let revoked_certs = record
            .revoked
            .iter()
            .map(|revoked| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(
                        &hex::decode(&revoked.serial_hex).map_err(|_| CaError::Invariant)?,
                    ),
                    revocation_time: revoked.revoked_at,
                    reason_code: Some(revoked.reason.to_rcgen()),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, CaError>>()?;
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::hours(i64::from(self.config.crl_lifetime_hours)),
            crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::PreSpecified(ski),
        };
        let crl = params.signed_by(&issuer).map_err(CaError::Generate)?;
        let crl_pem = crl.pem().map_err(CaError::Generate)?;
        let path = self.crl_path(level);
        files::replace_file(&path, crl_pem.as_bytes())?;
        self.record_mut(level).crl_number = crl_number;
        self.save_state()?;
        self.write_combined_crls()?;
        Ok(path)
    }

    fn write_combined_crls(&self) -> Result<(), CaError> {
        let mut combined = Vec::new();
        for level in [CaLevel::Root, CaLevel::Intermediate] {
            let path = self.crl_path(level);
            if path.exists() {
                combined.extend(files::read_file(&path, pem::PEM_FILE_BYTES_MAX)?);
            }
        }
        files::replace_file(&self.crls_path(), &combined)
    }
}

/// Lowercase hex without colons or leading zero bytes.
pub fn normalize_serial(serial: &str) -> Result<String, RequestError> {
    let digits: String = serial.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(RequestError::Serial(serial.to_owned()));
    }
    let padded = if digits.len() % 2 == 1 { format!("0{digits}") } else { digits };
    let bytes = hex::decode(&padded).map_err(|_| RequestError::Serial(serial.to_owned()))?;
    Ok(identity::serial_hex(&bytes))
}

/// The CA certificate's subject key identifier, which its CRLs name as their authority key.
fn subject_key_identifier(der: &CertificateDer<'_>) -> Result<Vec<u8>, CaError> {
    use x509_parser::extensions::ParsedExtension;
    let cert = identity::parse_certificate(der).map_err(|_| CaError::Invariant)?;
    cert.extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(key_id) => Some(key_id.0.to_vec()),
            _ => None,
        })
        .ok_or(CaError::Invariant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_normalize_from_openssl_style() {
        assert_eq!(normalize_serial("4A:0b:00").unwrap(), "4a0b00");
        assert_eq!(normalize_serial("00ff").unwrap(), "ff");
        assert_eq!(normalize_serial("abc").unwrap(), "0abc");
        assert!(normalize_serial("xyz").is_err());
        assert!(normalize_serial("").is_err());
    }
}
