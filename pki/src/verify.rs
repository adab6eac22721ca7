//! Certificate chain verification for the rest of the system: a [`TrustStore`] of trust anchors and
//! CRLs checks a presented chain for a [`Role`] (path to an anchor, validity, key usage, EKU,
//! revocation) and returns the [`VerifiedIdentity`]; good results are cached by chain digest.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use moka::sync::Cache;
use mps_protocol::{Iin, MerchantId};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, KeyPurposeId, KeyPurposeIdIter, OwnedCertRevocationList,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::certificate::X509Certificate;

use crate::identity::{self, InspectError};
use crate::pem;
use crate::role::{KeyUsageBit, Role};

/// Most certificates in a presented chain (leaf plus intermediates).
pub const CHAIN_CERTS_MAX: usize = 4;
/// Largest DER certificate accepted.
pub const CERT_BYTES_MAX: usize = 8 * 1024;
/// Most cached verification results.
pub const CACHE_ENTRIES_MAX: u64 = 10_000;
/// Longest time a result stays cached, whatever the CRLs say.
pub const CACHE_TTL_MAX: StdDuration = StdDuration::from_secs(3600);

/// Signature algorithms accepted in chains (aws-lc-rs): ECDSA only, as the scheme uses P-256.
static SIGNATURE_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P256_SHA384,
    webpki::aws_lc_rs::ECDSA_P384_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
];

/// Why a chain is not accepted for a role. Each failure a caller may want to tell apart has its
/// own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A certificate of the chain is past its notAfter.
    #[error("certificate expired")]
    Expired,
    /// A certificate of the chain is before its notBefore.
    #[error("certificate not yet valid")]
    NotYetValid,
    /// The leaf's key usage or extended key usage does not fit the role (or the leaf is a CA).
    #[error("certificate is not for role {0}")]
    WrongUsage(Role),
    /// A certificate of the chain is on its issuer's CRL.
    #[error("certificate revoked")]
    Revoked,
    /// The chain does not lead to a configured trust anchor (unknown or wrong CA, or a CA
    /// signature that does not verify).
    #[error("certificate not issued by a trusted CA")]
    UnknownIssuer,
    /// The leaf is self-signed (issuer = subject and it verifies under its own key).
    #[error("certificate is self-signed")]
    SelfSigned,
    /// No CRL from the issuer of a certificate in the chain: its status is unknown (fail closed).
    #[error("revocation status unknown (no CRL from the issuer)")]
    RevocationUnknown,
    /// A CRL is past its nextUpdate: run `pki crl` and reload the trust store.
    #[error("CRL expired; a fresh CRL is needed")]
    CrlExpired,
    /// Not DER, empty chain, too many or too large certificates, bad extensions.
    #[error("malformed certificate chain")]
    Malformed,
    /// The role's identity (merchant id or bank IIN SAN URI) is missing or malformed.
    #[error("certificate lacks the identity its role needs")]
    MissingIdentity,
    /// Any other path-building failure (name constraints, path length, budget).
    #[error("certificate chain invalid")]
    InvalidChain,
}

/// Who a verified certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedIdentity {
    /// The role the chain was verified for.
    pub role: Role,
    /// Merchant id (merchant role).
    pub merchant_id: Option<MerchantId>,
    /// IIN of the bank (bank-signing role).
    pub bank_iin: Option<Iin>,
    /// Subject DN of the leaf.
    pub subject: String,
    /// Serial of the leaf, lowercase hex.
    pub serial_hex: String,
    /// SHA-256 of the leaf DER, lowercase hex.
    pub fingerprint_sha256: String,
    /// End of the leaf's validity.
    pub not_after: OffsetDateTime,
}

/// A trust store that could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustStoreError {
    /// A PEM file could not be read.
    #[error(transparent)]
    Pem(#[from] pem::PemError),
    /// No trust anchor given.
    #[error("no trust anchor certificate given")]
    NoAnchor,
    /// No CRL given: revocation could not be checked, so the store refuses to exist.
    #[error("no CRL given; pass the CRLs of the root and the intermediate CA (run `pki crl`)")]
    NoCrl,
    /// A trust anchor does not parse.
    #[error("trust anchor certificate {index} is malformed")]
    BadAnchor {
        /// Position in the given list.
        index: usize,
    },
    /// A CRL does not parse.
    #[error("CRL {index} is malformed")]
    BadCrl {
        /// Position in the given list.
        index: usize,
    },
}

#[derive(Clone)]
struct CachedResult {
    identity: VerifiedIdentity,
    valid_from: UnixTime,
    valid_until: UnixTime,
    ttl: StdDuration,
}

struct CacheExpiry;

impl moka::Expiry<[u8; 32], CachedResult> for CacheExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &CachedResult,
        _created_at: std::time::Instant,
    ) -> Option<StdDuration> {
        Some(value.ttl)
    }
}

/// Trust anchors (the scheme root) and the CRLs of every CA below them. Cheap to share behind an
/// `Arc`; build a new one to take new CRLs (the cache goes with the old one).
pub struct TrustStore {
    anchor_ders: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
    crl_ders: Vec<CertificateRevocationListDer<'static>>,
    crls: Vec<CertRevocationList<'static>>,
    crl_next_update_earliest: UnixTime,
    cache: Cache<[u8; 32], CachedResult>,
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustStore")
            .field("anchors", &self.anchors.len())
            .field("crls", &self.crls.len())
            .field("crl_next_update_earliest", &self.crl_next_update_earliest.as_secs())
            .finish()
    }
}

impl TrustStore {
    /// Builds a store from DER anchors and CRLs. At least one of each is required: without a CRL
    /// revocation cannot be checked, and the store fails closed.
    pub fn new(
        anchors: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<Self, TrustStoreError> {
        if anchors.is_empty() {
            return Err(TrustStoreError::NoAnchor);
        }
        if crls.is_empty() {
            return Err(TrustStoreError::NoCrl);
        }
        let parsed_anchors = anchors
            .iter()
            .enumerate()
            .map(|(index, der)| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|anchor| anchor.to_owned())
                    .map_err(|_| TrustStoreError::BadAnchor { index })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut parsed_crls = Vec::with_capacity(crls.len());
        let mut next_update_earliest = u64::MAX;
        for (index, der) in crls.iter().enumerate() {
            let owned = OwnedCertRevocationList::from_der(der).map_err(|_| TrustStoreError::BadCrl { index })?;
            next_update_earliest = next_update_earliest.min(crl_next_update(der, index)?);
            parsed_crls.push(CertRevocationList::Owned(owned));
        }
        Ok(Self {
            anchor_ders: anchors,
            anchors: parsed_anchors,
            crl_ders: crls,
            crls: parsed_crls,
            crl_next_update_earliest: UnixTime::since_unix_epoch(StdDuration::from_secs(next_update_earliest)),
            cache: Cache::builder().max_capacity(CACHE_ENTRIES_MAX).expire_after(CacheExpiry).build(),
        })
    }

    /// The same store with room for at most `entries` cached results (the default is
    /// [`CACHE_ENTRIES_MAX`]); the cache starts empty.
    pub fn with_cache_entries_max(mut self, entries: u64) -> Self {
        self.cache = Cache::builder().max_capacity(entries).expire_after(CacheExpiry).build();
        self
    }

    /// Verification results cached now (after the cache's pending evictions).
    pub fn cached_results(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Builds a store from PEM files: anchor certificates (the scheme root) and CRL files (for
    /// example `crls.pem` of the CA directory, which holds both CRLs).
    pub fn from_pem_files(anchor_files: &[&Path], crl_files: &[&Path]) -> Result<Self, TrustStoreError> {
        let mut anchors = Vec::new();
        for path in anchor_files {
            anchors.extend(pem::load_certificates(path)?);
        }
        let mut crls = Vec::new();
        for path in crl_files {
            crls.extend(pem::load_crls(path)?);
        }
        Self::new(anchors, crls)
    }

    /// The trust anchors, DER.
    pub fn anchor_certificates(&self) -> &[CertificateDer<'static>] {
        &self.anchor_ders
    }

    /// The CRLs, DER.
    pub fn crls(&self) -> &[CertificateRevocationListDer<'static>] {
        &self.crl_ders
    }

    /// The earliest nextUpdate of the CRLs: after it every verification fails with
    /// [`VerifyError::CrlExpired`] until a store with fresh CRLs replaces this one.
    pub fn crl_next_update(&self) -> UnixTime {
        self.crl_next_update_earliest
    }

    /// Verifies `chain` (leaf first, then intermediates) for `role` at time `now`.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        role: Role,
        now: UnixTime,
    ) -> Result<VerifiedIdentity, VerifyError> {
        let leaf_der = check_chain_shape(chain)?;
        let key = cache_key(chain, role);
        if let Some(hit) = self.cache.get(&key)
            && hit.valid_from.as_secs() <= now.as_secs()
            && now.as_secs() < hit.valid_until.as_secs()
        {
            return Ok(hit.identity);
        }

        let leaf = identity::parse_certificate(leaf_der).map_err(|_| VerifyError::Malformed)?;
        if is_self_signed(&leaf) {
            return Err(VerifyError::SelfSigned);
        }
        self.verify_path(leaf_der, &chain[1..], role, now)?;
        let identity = check_role(leaf_der, role)?;

        let (valid_from, valid_until) = self.validity_window(chain)?;
        let ttl = ttl_until(valid_until);
        if !ttl.is_zero() {
            self.cache.insert(key, CachedResult { identity: identity.clone(), valid_from, valid_until, ttl });
        }
        Ok(identity)
    }

    /// [`TrustStore::verify`] at the current time.
    pub fn verify_now(&self, chain: &[CertificateDer<'_>], role: Role) -> Result<VerifiedIdentity, VerifyError> {
        self.verify(chain, role, UnixTime::now())
    }

    fn verify_path(
        &self,
        leaf_der: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        role: Role,
        now: UnixTime,
    ) -> Result<(), VerifyError> {
        let end_entity = EndEntityCert::try_from(leaf_der).map_err(|_| VerifyError::Malformed)?;
        let crl_refs: Vec<&CertRevocationList<'static>> = self.crls.iter().collect();
        let revocation = RevocationOptionsBuilder::new(&crl_refs)
            .map_err(|_| VerifyError::RevocationUnknown)?
            .with_depth(RevocationCheckDepth::Chain)
            .with_status_policy(UnknownStatusPolicy::Deny)
            .with_expiration_policy(ExpirationPolicy::Enforce)
            .build();
        end_entity
            .verify_for_usage(
                SIGNATURE_ALGORITHMS,
                &self.anchors,
                intermediates,
                now,
                RolePurposes { role },
                Some(revocation),
                None,
            )
            .map(|_| ())
            .map_err(|error| map_webpki_error(error, role))
    }

    /// The span in which the cached result stays right: every certificate of the chain valid,
    /// and no CRL past its nextUpdate.
    fn validity_window(&self, chain: &[CertificateDer<'_>]) -> Result<(UnixTime, UnixTime), VerifyError> {
        let mut valid_from = 0i64;
        let mut valid_until = i64::try_from(self.crl_next_update_earliest.as_secs()).unwrap_or(i64::MAX);
        for der in chain {
            let cert = identity::parse_certificate(der).map_err(|_| VerifyError::Malformed)?;
            valid_from = valid_from.max(cert.validity().not_before.timestamp());
            valid_until = valid_until.min(cert.validity().not_after.timestamp());
        }
        let to_unix = |seconds: i64| UnixTime::since_unix_epoch(StdDuration::from_secs(seconds.max(0).unsigned_abs()));
        Ok((to_unix(valid_from), to_unix(valid_until)))
    }
}

fn check_chain_shape<'a>(chain: &'a [CertificateDer<'a>]) -> Result<&'a CertificateDer<'a>, VerifyError> {
    if chain.len() > CHAIN_CERTS_MAX || chain.iter().any(|der| der.len() > CERT_BYTES_MAX) {
        return Err(VerifyError::Malformed);
    }
    chain.first().ok_or(VerifyError::Malformed)
}

/// SHA-256 over the role and the length-prefixed DER of each certificate.
fn cache_key(chain: &[CertificateDer<'_>], role: Role) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(role.name().as_bytes());
    for der in chain {
        hasher.update((der.len() as u64).to_be_bytes());
        hasher.update(der.as_ref());
    }
    hasher.finalize().into()
}

fn ttl_until(valid_until: UnixTime) -> StdDuration {
    let now = UnixTime::now().as_secs();
    StdDuration::from_secs(valid_until.as_secs().saturating_sub(now)).min(CACHE_TTL_MAX)
}

fn crl_next_update(der: &[u8], index: usize) -> Result<u64, TrustStoreError> {
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der)
        .map_err(|_| TrustStoreError::BadCrl { index })?;
    // RFC 5280 requires nextUpdate; a CRL without one cannot bound the cache, so refuse it.
    let next_update = crl.next_update().ok_or(TrustStoreError::BadCrl { index })?;
    u64::try_from(next_update.timestamp()).map_err(|_| TrustStoreError::BadCrl { index })
}

/// Issuer = subject and the signature verifies under the certificate's own key.
pub(crate) fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw() && cert.verify_signature(None).is_ok()
}

/// EKU policy for webpki, applied to every certificate of the path: where a certificate lists
/// extended key usages, it must list every purpose of the role. The leaf must also have the
/// extension at all, which [`check_leaf_usage`] checks.
struct RolePurposes {
    role: Role,
}

impl webpki::ExtendedKeyUsageValidator for RolePurposes {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let mut present: Vec<KeyPurposeId<'_>> = Vec::new();
        for id in iter {
            present.push(id?);
        }
        if present.is_empty() {
            return Ok(());
        }
        for required in self.role.required_purposes() {
            let required = KeyPurposeId::new(required);
            if !present.contains(&required) {
                return Err(webpki::Error::RequiredEkuNotFoundContext(webpki::RequiredEkuNotFoundContext {
                    required: webpki::KeyUsage::required_if_present(self.role.purpose_oid_der()),
                    present: present.iter().map(KeyPurposeId::to_decoded_oid).collect(),
                }));
            }
        }
        Ok(())
    }
}

fn map_webpki_error(error: webpki::Error, role: Role) -> VerifyError {
    use webpki::Error as E;
    #[allow(deprecated)]
    match error {
        E::CertExpired { .. } => VerifyError::Expired,
        E::CertNotValidYet { .. } => VerifyError::NotYetValid,
        E::CertRevoked => VerifyError::Revoked,
        E::UnknownRevocationStatus => VerifyError::RevocationUnknown,
        E::CrlExpired { .. } => VerifyError::CrlExpired,
        E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) | E::EmptyEkuExtension | E::CaUsedAsEndEntity => {
            VerifyError::WrongUsage(role)
        }
        E::UnknownIssuer
        | E::InvalidSignatureForPublicKey
        | E::UnsupportedSignatureAlgorithm
        | E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | E::SignatureAlgorithmMismatch
        | E::CertDistrusted => VerifyError::UnknownIssuer,
        E::BadDer
        | E::BadDerTime
        | E::TrailingData(_)
        | E::MalformedExtensions
        | E::ExtensionValueInvalid
        | E::InvalidSerialNumber
        | E::InvalidCertValidity
        | E::UnsupportedCriticalExtension => VerifyError::Malformed,
        _ => VerifyError::InvalidChain,
    }
}

/// Checks that a leaf (whose chain is verified elsewhere) fits `role` and reads its identity.
pub(crate) fn check_role(leaf_der: &CertificateDer<'_>, role: Role) -> Result<VerifiedIdentity, VerifyError> {
    let leaf = identity::parse_certificate(leaf_der).map_err(|_| VerifyError::Malformed)?;
    check_leaf_usage(&leaf, role)?;
    extract_identity(leaf_der, role)
}

/// The leaf must carry the role's key usage bits and an EKU listing the role's purposes.
fn check_leaf_usage(leaf: &X509Certificate<'_>, role: Role) -> Result<(), VerifyError> {
    let wrong = VerifyError::WrongUsage(role);
    let key_usage = leaf.key_usage().map_err(|_| VerifyError::Malformed)?.ok_or(wrong.clone())?;
    for bit in role.key_usages() {
        let present = match bit {
            KeyUsageBit::DigitalSignature => key_usage.value.digital_signature(),
            KeyUsageBit::NonRepudiation => key_usage.value.non_repudiation(),
        };
        if !present {
            return Err(wrong);
        }
    }
    if key_usage.value.key_cert_sign() || key_usage.value.crl_sign() {
        return Err(wrong);
    }
    let eku = leaf.extended_key_usage().map_err(|_| VerifyError::Malformed)?.ok_or(wrong.clone())?;
    let listed_role = identity::role_from_eku(leaf).map_err(|_| VerifyError::Malformed)?;
    let tls_ok = match role.tls_purpose() {
        Some(crate::role::TlsPurpose::ServerAuth) => eku.value.server_auth,
        Some(crate::role::TlsPurpose::ClientAuth) => eku.value.client_auth,
        None => true,
    };
    if listed_role != Some(role) || !tls_ok || eku.value.any {
        return Err(wrong);
    }
    Ok(())
}

fn extract_identity(leaf_der: &CertificateDer<'_>, role: Role) -> Result<VerifiedIdentity, VerifyError> {
    let info = identity::inspect(leaf_der).map_err(|error| match error {
        InspectError::Identity(_) => VerifyError::MissingIdentity,
        _ => VerifyError::Malformed,
    })?;
    let complete = match role {
        Role::Merchant => info.merchant_id.is_some() && info.bank_iin.is_none(),
        Role::BankSigning => info.bank_iin.is_some() && info.merchant_id.is_none(),
        _ => info.merchant_id.is_none() && info.bank_iin.is_none(),
    };
    if !complete {
        return Err(VerifyError::MissingIdentity);
    }
    Ok(VerifiedIdentity {
        role,
        merchant_id: info.merchant_id,
        bank_iin: info.bank_iin,
        subject: info.subject,
        serial_hex: info.serial_hex,
        fingerprint_sha256: info.fingerprint_sha256,
        not_after: info.not_after,
    })
}

/// A shared trust store, as servers hold it.
pub type SharedTrustStore = Arc<TrustStore>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_differ_by_role_and_chain() {
        let a = CertificateDer::from(vec![1u8, 2, 3]);
        let b = CertificateDer::from(vec![1u8, 2]);
        let c = CertificateDer::from(vec![3u8]);
        assert_ne!(
            cache_key(std::slice::from_ref(&a), Role::Merchant),
            cache_key(std::slice::from_ref(&a), Role::BankSigning)
        );
        assert_ne!(cache_key(std::slice::from_ref(&a), Role::Merchant), cache_key(&[b, c], Role::Merchant));
    }

    #[test]
    fn chain_shape_is_bounded() {
        assert_eq!(check_chain_shape(&[]).unwrap_err(), VerifyError::Malformed);
        let cert = CertificateDer::from(vec![0u8; 10]);
        let five = vec![cert.clone(); CHAIN_CERTS_MAX + 1];
        assert_eq!(check_chain_shape(&five).unwrap_err(), VerifyError::Malformed);
        let big = CertificateDer::from(vec![0u8; CERT_BYTES_MAX + 1]);
        assert_eq!(check_chain_shape(&[big]).unwrap_err(), VerifyError::Malformed);
    }

    #[test]
    fn an_empty_store_is_refused() {
        assert!(matches!(TrustStore::new(Vec::new(), Vec::new()), Err(TrustStoreError::NoAnchor)));
        let anchor = CertificateDer::from(vec![0u8; 4]);
        assert!(matches!(TrustStore::new(vec![anchor], Vec::new()), Err(TrustStoreError::NoCrl)));
    }
}
