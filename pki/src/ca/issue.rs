//! Issuance policy and issuing: what each role's certificate contains (subject DN, SANs from the
//! [`Subject`], key usage and EKU from the role, validity, a fresh serial), the CA certificates'
//! own profile, and the intermediate CA signing an end-entity certificate for a key or a CSR.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CustomExtension, DistinguishedName, DnType,
    IsCa, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SigningKey,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use super::state::{ISSUED_MAX, IssuedRecord};
use super::{CaError, CaLevel, CertificateAuthority, RequestError, Subject, truncate};
use crate::config::{PkiConfig, VALIDITY_DAYS_MAX};
use crate::identity::{self, inspect};
use crate::pem;
use crate::role::{KeyUsageBit, Role, extended_key_usage_der};

/// Length of every serial number the CA draws, bytes.
pub const SERIAL_BYTES: usize = 16;
/// Longest common name (X.520 ub-common-name).
pub const COMMON_NAME_CHARS_MAX: usize = 64;

/// How long an end-entity certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// From now (minus the configured backdating) for the configured `leaf_validity_days`.
    Default,
    /// From now (minus the backdating) for this many days.
    Days(u32),
    /// Exactly this window (used for expired and not-yet-valid test certificates).
    Window {
        /// notBefore.
        not_before: OffsetDateTime,
        /// notAfter.
        not_after: OffsetDateTime,
    },
}

/// What to put into an end-entity certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueRequest {
    /// What the certificate names; decides the role, and with it key usage and EKU.
    pub subject: Subject,
    /// Subject common name.
    pub common_name: String,
    /// Validity.
    pub validity: Validity,
}

impl IssueRequest {
    /// A request for `subject` with the default validity.
    pub fn new(subject: Subject, common_name: &str) -> Self {
        Self { subject, common_name: common_name.to_owned(), validity: Validity::Default }
    }

    /// The role of the certificate, from the subject.
    pub fn role(&self) -> Role {
        self.subject.role()
    }

    fn check(&self) -> Result<(), RequestError> {
        check_common_name(&self.common_name)
    }
}

fn check_common_name(name: &str) -> Result<(), RequestError> {
    let chars = name.chars().count();
    if chars == 0 || chars > COMMON_NAME_CHARS_MAX || name.chars().any(char::is_control) || name.trim().is_empty() {
        return Err(RequestError::CommonName);
    }
    Ok(())
}

/// A freshly issued end-entity certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// Leaf first, then the intermediate CA certificate (what peers present).
    pub chain: Vec<CertificateDer<'static>>,
    /// Serial number, lowercase hex.
    pub serial_hex: String,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Issued {
    /// The chain as PEM (leaf first).
    pub fn chain_pem(&self) -> String {
        pem::encode_certificates(&self.chain)
    }
}

impl CertificateAuthority {
    /// Issues an end-entity certificate for `subject_key`, signed by the intermediate CA with
    /// `ca_key`, and records it in the issuance log.
    pub fn issue(
        &mut self,
        request: &IssueRequest,
        subject_key: &dyn PublicKeyData,
        ca_key: &dyn SigningKey,
        now: OffsetDateTime,
    ) -> Result<Issued, CaError> {
        request.check()?;
        if subject_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(RequestError::KeyAlgorithm.into());
        }
        if self.state.issued.len() >= ISSUED_MAX {
            return Err(CaError::LogFull);
        }
        let issuer = self.issuer(CaLevel::Intermediate, ca_key)?;
        let params = self.leaf_params(request, now)?;
        let certificate = params.signed_by(&subject_key, &issuer).map_err(CaError::Generate)?;
        let info = inspect(certificate.der()).map_err(|_| CaError::Invariant)?;
        let subject = &request.subject;
        if info.role != Some(subject.role())
            || info.merchant_id.as_ref() != subject.merchant_id()
            || info.bank_iin.as_ref() != subject.bank_iin()
        {
            return Err(CaError::Invariant);
        }
        self.state.issued.push(IssuedRecord {
            serial_hex: info.serial_hex.clone(),
            issuer: CaLevel::Intermediate,
            role: Some(request.role()),
            subject: info.subject,
            not_after: info.not_after,
        });
        self.save_state()?;
        tracing::info!(serial = %info.serial_hex, role = %request.role(), "certificate issued");
        Ok(Issued {
            chain: vec![certificate.der().clone(), self.intermediate_cert.clone()],
            serial_hex: info.serial_hex,
            not_after: info.not_after,
        })
    }

    /// Issues a certificate for the key of a PKCS#10 request (PEM) after checking the request's
    /// self-signature (proof that the requester holds the key). Names and usages come from
    /// `request`, not from the CSR.
    pub fn issue_from_csr(
        &mut self,
        request: &IssueRequest,
        csr_pem: &str,
        ca_key: &dyn SigningKey,
        now: OffsetDateTime,
    ) -> Result<Issued, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|_| CaError::Csr)?;
        if csr.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::Csr);
        }
        self.issue(request, &csr.public_key, ca_key, now)
    }

    fn leaf_params(&self, request: &IssueRequest, now: OffsetDateTime) -> Result<CertificateParams, CaError> {
        let now = truncate(now);
        let (not_before, not_after) = match request.validity {
            Validity::Default => self.window_from_now(now, self.config.leaf_validity_days),
            Validity::Days(days) => self.window_from_now(now, days),
            Validity::Window { not_before, not_after } => (truncate(not_before), truncate(not_after)),
        };
        if not_after <= not_before || not_after - not_before > Duration::days(i64::from(VALIDITY_DAYS_MAX)) {
            return Err(RequestError::Validity.into());
        }
        let ca_not_after = inspect(&self.intermediate_cert).map_err(|_| CaError::Invariant)?.not_after;
        if not_after > ca_not_after {
            return Err(RequestError::OutlivesCa { ca_not_after }.into());
        }

        let role = request.role();
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&self.config.organization, &request.common_name);
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(self.fresh_serial()?);
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = role
            .key_usages()
            .iter()
            .map(|bit| match bit {
                KeyUsageBit::DigitalSignature => KeyUsagePurpose::DigitalSignature,
                KeyUsageBit::NonRepudiation => KeyUsagePurpose::ContentCommitment,
            })
            .collect();
        params.custom_extensions.push(CustomExtension::from_oid_content(&[2, 5, 29, 37], extended_key_usage_der(role)));
        params.subject_alt_names = subject_alt_names(&request.subject)?;
        Ok(params)
    }

    fn window_from_now(&self, now: OffsetDateTime, days: u32) -> (OffsetDateTime, OffsetDateTime) {
        (now - Duration::seconds(i64::from(self.config.backdate_seconds)), now + Duration::days(i64::from(days)))
    }

    fn fresh_serial(&self) -> Result<SerialNumber, CaError> {
        loop {
            let serial = random_serial()?;
            let serial_hex = hex::encode(serial);
            if !self.state.issued.iter().any(|record| record.serial_hex == serial_hex) {
                return Ok(SerialNumber::from_slice(&serial));
            }
        }
    }
}

/// A fresh P-256 key pair (software).
pub fn generate_key() -> Result<KeyPair, CaError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)
}

/// The profile of a CA certificate: keyCertSign and cRLSign, a path length, a fresh serial.
pub(super) fn ca_params(config: &PkiConfig, common_name: &str, path_length: u8) -> Result<CertificateParams, CaError> {
    check_common_name(common_name)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&config.organization, common_name);
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_length));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

fn distinguished_name(organization: &str, common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, organization);
    name.push(DnType::CommonName, common_name);
    name
}

/// The SANs of a subject: DNS names, then IP addresses, then the MPS URI naming the merchant or
/// the bank.
fn subject_alt_names(subject: &Subject) -> Result<Vec<SanType>, CaError> {
    let mut names = Vec::new();
    if let Some(host_names) = subject.host_names() {
        for dns in host_names.dns_names() {
            // HostNames admits only valid DNS names, which are ASCII and so IA5.
            names.push(SanType::DnsName(dns.clone().try_into().map_err(|_| CaError::Invariant)?));
        }
        names.extend(host_names.ip_addresses().iter().copied().map(SanType::IpAddress));
    }
    let uri = match subject {
        Subject::Merchant { merchant_id } => Some(identity::merchant_uri(merchant_id)),
        Subject::BankSigning { iin } => Some(identity::bank_uri(iin)),
        Subject::AuthzServer { .. } | Subject::GatewayServer { .. } | Subject::GatewayClient { .. } => None,
    };
    if let Some(uri) = uri {
        names.push(SanType::URI(uri.try_into().map_err(|_| CaError::Invariant)?));
    }
    Ok(names)
}

/// 16 random bytes, most significant bit clear (positive) and the next one set (always 16 bytes).
fn random_serial() -> Result<[u8; SERIAL_BYTES], CaError> {
    let mut serial = [0u8; SERIAL_BYTES];
    rustls::crypto::aws_lc_rs::default_provider().secure_random.fill(&mut serial).map_err(|_| CaError::Random)?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use mps_protocol::{Iin, MerchantId};

    use super::*;
    use crate::ca::{HostNames, ServerNames};

    #[test]
    fn random_serials_are_positive_and_full_length() {
        for _ in 0..64 {
            let serial = random_serial().unwrap();
            assert_eq!(serial[0] & 0xc0, 0x40);
        }
        assert_ne!(random_serial().unwrap(), random_serial().unwrap());
    }

    #[test]
    fn requests_check_the_common_name() {
        let client = Subject::GatewayClient { names: HostNames::default() };
        assert_eq!(IssueRequest::new(client.clone(), "gateway").check(), Ok(()));
        for bad in ["", "   ", "bad\nname", &"x".repeat(COMMON_NAME_CHARS_MAX + 1)] {
            assert_eq!(IssueRequest::new(client.clone(), bad).check(), Err(RequestError::CommonName), "{bad:?}");
        }
        let merchant = IssueRequest::new(Subject::Merchant { merchant_id: MerchantId::new("SHOP").unwrap() }, "Shop");
        assert_eq!(merchant.role(), Role::Merchant);
    }

    #[test]
    fn each_role_names_what_its_subject_holds() {
        let names = HostNames::new(vec!["authz.bank.test".to_owned()], vec![IpAddr::from([127, 0, 0, 1])]).unwrap();
        let server = Subject::AuthzServer { names: ServerNames::new(names.clone()).unwrap() };
        let dns = SanType::DnsName("authz.bank.test".to_owned().try_into().unwrap());
        let ip = SanType::IpAddress(IpAddr::from([127, 0, 0, 1]));
        assert_eq!(subject_alt_names(&server).unwrap(), vec![dns.clone(), ip.clone()]);
        assert_eq!(subject_alt_names(&Subject::GatewayClient { names }).unwrap(), vec![dns, ip]);

        let merchant = Subject::Merchant { merchant_id: MerchantId::new("SHOP 7         ").unwrap() };
        let uri = SanType::URI("urn:mps:merchant:SHOP%207".to_owned().try_into().unwrap());
        assert_eq!(subject_alt_names(&merchant).unwrap(), vec![uri]);
        let bank = Subject::BankSigning { iin: Iin::new("123456").unwrap() };
        let uri = SanType::URI("urn:mps:bank:123456".to_owned().try_into().unwrap());
        assert_eq!(subject_alt_names(&bank).unwrap(), vec![uri]);
    }
}
