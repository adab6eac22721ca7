//! The scheme CA on disk: root and intermediate certificates, their keys (PEM files or HSM
//! labels), the issuance log and revocation state (`ca.json`), certificate issuance per role and
//! CRL generation. Used by the `pki` command and by tests.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertificateSigningRequestParams,
    CustomExtension, DistinguishedName, DnType, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData,
    RevokedCertParams, SanType, SerialNumber, SigningKey,
};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::config::{PkiConfig, VALIDITY_DAYS_MAX};
use crate::identity::{self, IdentityError, inspect};
use crate::pem;
use crate::role::{KeyUsageBit, Role, extended_key_usage_der};

/// The CA state file in the CA directory.
pub const STATE_FILE: &str = "ca.json";
/// Root CA certificate (PEM). This is the trust anchor every verifier is configured with.
pub const ROOT_CERT_FILE: &str = "root.crt";
/// Root CA private key (PKCS#8 PEM, mode 0600), when the key is a file.
pub const ROOT_KEY_FILE: &str = "root.key";
/// CRL issued by the root (covers intermediates).
pub const ROOT_CRL_FILE: &str = "root.crl";
/// Intermediate CA certificate (PEM).
pub const INTERMEDIATE_CERT_FILE: &str = "intermediate.crt";
/// Intermediate CA private key (PKCS#8 PEM, mode 0600), when the key is a file.
pub const INTERMEDIATE_KEY_FILE: &str = "intermediate.key";
/// CRL issued by the intermediate (covers end entities).
pub const INTERMEDIATE_CRL_FILE: &str = "intermediate.crl";
/// Both CRLs in one PEM file, for verifiers.
pub const CRLS_FILE: &str = "crls.pem";
/// Length of every serial number the CA draws, bytes.
pub const SERIAL_BYTES: usize = 16;
/// Most certificates the issuance log keeps (bounds the state file).
pub const ISSUED_MAX: usize = 100_000;
/// Longest common name (X.520 ub-common-name).
pub const COMMON_NAME_CHARS_MAX: usize = 64;
/// Most DNS plus IP SANs in one certificate.
pub const SUBJECT_ALT_NAMES_MAX: usize = 32;
const STATE_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;
const STATE_VERSION: u32 = 1;

/// Which of the two CAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CaLevel {
    /// The scheme root CA (self-signed, issues the intermediate only).
    Root,
    /// The intermediate CA (issues every end-entity certificate).
    Intermediate,
}

impl CaLevel {
    fn cert_file(self) -> &'static str {
        match self {
            CaLevel::Root => ROOT_CERT_FILE,
            CaLevel::Intermediate => INTERMEDIATE_CERT_FILE,
        }
    }

    fn crl_file(self) -> &'static str {
        match self {
            CaLevel::Root => ROOT_CRL_FILE,
            CaLevel::Intermediate => INTERMEDIATE_CRL_FILE,
        }
    }
}

/// Where a CA private key lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum KeyLocation {
    /// A PKCS#8 PEM file, relative to the CA directory.
    File {
        /// File name inside the CA directory.
        path: String,
    },
    /// A P-256 key pair in the HSM, found by its label.
    Hsm {
        /// CKA_LABEL of the private and public key objects.
        label: String,
    },
}

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

/// One entry of a CA's revocation list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedRecord {
    /// Serial number, lowercase hex.
    pub serial_hex: String,
    /// When the CA recorded the revocation.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// Why.
    pub reason: RevocationReason,
}

/// One entry of the issuance log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuedRecord {
    /// Serial number, lowercase hex.
    pub serial_hex: String,
    /// The CA that signed it.
    pub issuer: CaLevel,
    /// The role (None for the intermediate CA certificate).
    pub role: Option<Role>,
    /// Subject DN.
    pub subject: String,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaRecord {
    key: KeyLocation,
    crl_number: u64,
    revoked: Vec<RevokedRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaState {
    version: u32,
    root: CaRecord,
    intermediate: CaRecord,
    issued: Vec<IssuedRecord>,
}

/// What went wrong with the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// `init` found an existing CA.
    #[error("{dir} already holds a CA ({STATE_FILE} or a CA file exists); use another --dir or remove it")]
    AlreadyInitialized {
        /// The CA directory.
        dir: String,
    },
    /// No CA in the directory.
    #[error("{dir} holds no CA ({STATE_FILE} missing); run `pki init --dir {dir}` first")]
    NotInitialized {
        /// The CA directory.
        dir: String,
    },
    /// A file could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An output file exists already.
    #[error("{path} exists already; remove it or choose another --out")]
    OutputExists {
        /// The file.
        path: String,
    },
    /// The state file is corrupt.
    #[error("CA state file {path} is corrupt")]
    State {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A PEM file of the CA could not be read.
    #[error(transparent)]
    Pem(#[from] pem::PemError),
    /// The CA key is held elsewhere than the caller assumed.
    #[error("the {level:?} CA key is {location}; {hint}")]
    KeyElsewhere {
        /// Which CA.
        level: CaLevel,
        /// Where the key is.
        location: String,
        /// What to do.
        hint: &'static str,
    },
    /// The CA key file does not parse or the key does not match the CA certificate.
    #[error("the {level:?} CA key does not match {file}")]
    KeyMismatch {
        /// Which CA.
        level: CaLevel,
        /// The certificate file.
        file: &'static str,
    },
    /// The CA key file is not a PKCS#8 PEM P-256 key.
    #[error("the {level:?} CA key file is not a PKCS#8 PEM P-256 key")]
    KeyFormat {
        /// Which CA.
        level: CaLevel,
    },
    /// The issuance request breaks a rule of the role's profile.
    #[error("invalid request: {0}")]
    Request(#[from] RequestError),
    /// A CSR does not parse, its self-signature is wrong, or its key is not P-256.
    #[error("the certificate signing request is invalid or not signed by a P-256 key")]
    Csr,
    /// No certificate with this serial was issued by this CA.
    #[error("no certificate with serial {serial_hex} in the issuance log; check `pki show <cert>` for the serial")]
    UnknownSerial {
        /// The serial asked for.
        serial_hex: String,
    },
    /// The certificate is revoked already.
    #[error("serial {serial_hex} is revoked already")]
    AlreadyRevoked {
        /// The serial.
        serial_hex: String,
    },
    /// The issuance log is full.
    #[error("the issuance log holds {ISSUED_MAX} certificates; start a new intermediate CA")]
    LogFull,
    /// The random generator failed.
    #[error("the random generator failed")]
    Random,
    /// rcgen refused to build or sign.
    #[error("certificate generation failed")]
    Generate(#[source] rcgen::Error),
    /// A freshly made certificate does not read back as intended (a bug; nothing was recorded).
    #[error("issued certificate does not match the request")]
    Invariant,
}

/// A request that breaks a rule of the role's profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Common name empty, too long or with control characters.
    #[error("--name must be 1 to 64 printable characters")]
    CommonName,
    /// A server certificate without DNS or IP names.
    #[error("a {0} certificate needs at least one --dns or --ip")]
    NeedsHostNames(Role),
    /// DNS or IP names on a role that has none.
    #[error("a {0} certificate takes no --dns or --ip")]
    NoHostNames(Role),
    /// Too many DNS plus IP names.
    #[error("at most {SUBJECT_ALT_NAMES_MAX} --dns and --ip in total")]
    TooManyNames,
    /// A DNS name that is not a valid DNS name.
    #[error("--dns {0:?} is not a valid DNS name")]
    DnsName(String),
    /// Merchant certificates need a merchant id; other roles take none.
    #[error("--merchant-id is required for merchant certificates and only for them")]
    MerchantId,
    /// Bank signing certificates need an IIN; other roles take none.
    #[error("--iin is required for bank-signing certificates and only for them")]
    Iin,
    /// A malformed identifier.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// notAfter not after notBefore, or beyond the limit.
    #[error("validity must end after it starts and last at most {VALIDITY_DAYS_MAX} days")]
    Validity,
    /// The certificate would outlive the CA certificate.
    #[error("the certificate would end after the intermediate CA certificate ({ca_not_after}); shorten it")]
    OutlivesCa {
        /// End of the CA's validity.
        ca_not_after: OffsetDateTime,
    },
    /// The subject key is not an ECDSA P-256 key.
    #[error("the subject key must be ECDSA P-256")]
    KeyAlgorithm,
    /// A serial number that is not hex.
    #[error("serial {0:?} is not hexadecimal")]
    Serial(String),
}

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
    /// The role; decides key usage, EKU and required names.
    pub role: Role,
    /// Subject common name.
    pub common_name: String,
    /// DNS SANs (TLS roles only).
    pub dns_names: Vec<String>,
    /// IP SANs (TLS roles only).
    pub ip_addresses: Vec<IpAddr>,
    /// Merchant id (merchant role only).
    pub merchant_id: Option<String>,
    /// IIN of the issuing bank (bank-signing role only).
    pub iin: Option<String>,
    /// Validity.
    pub validity: Validity,
}

impl IssueRequest {
    /// A request with only a role and a name; fill the rest in.
    pub fn new(role: Role, common_name: &str) -> Self {
        Self {
            role,
            common_name: common_name.to_owned(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            merchant_id: None,
            iin: None,
            validity: Validity::Default,
        }
    }

    fn check(&self) -> Result<(), RequestError> {
        check_common_name(&self.common_name)?;
        let host_names = self.dns_names.len() + self.ip_addresses.len();
        if host_names > SUBJECT_ALT_NAMES_MAX {
            return Err(RequestError::TooManyNames);
        }
        if self.role.is_tls_server() && host_names == 0 {
            return Err(RequestError::NeedsHostNames(self.role));
        }
        if host_names > 0 && (self.role.tls_purpose().is_none() || self.role == Role::Merchant) {
            return Err(RequestError::NoHostNames(self.role));
        }
        for dns in &self.dns_names {
            if rustls_pki_types::DnsName::try_from(dns.as_str()).is_err() || dns.is_empty() {
                return Err(RequestError::DnsName(dns.clone()));
            }
        }
        match (self.role, &self.merchant_id) {
            (Role::Merchant, Some(merchant_id)) => {
                identity::normalize_merchant_id(merchant_id)?;
            }
            (Role::Merchant, None) | (_, Some(_)) => return Err(RequestError::MerchantId),
            _ => {}
        }
        match (self.role, &self.iin) {
            (Role::BankSigning, Some(iin)) => identity::check_iin(iin)?,
            (Role::BankSigning, None) | (_, Some(_)) => return Err(RequestError::Iin),
            _ => {}
        }
        Ok(())
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

/// A scheme CA kept in a directory.
#[derive(Debug)]
pub struct CertificateAuthority {
    dir: PathBuf,
    config: PkiConfig,
    state: CaState,
    root_cert: CertificateDer<'static>,
    intermediate_cert: CertificateDer<'static>,
}

/// A CA key the caller provides for `init`, with where it lives.
pub struct NewCaKey<'a> {
    /// The signing key.
    pub key: &'a dyn SigningKey,
    /// Recorded in the state file so later commands find it.
    pub location: KeyLocation,
}

impl CertificateAuthority {
    /// Creates a root and an intermediate CA in `dir` with fresh P-256 keys kept in PEM files
    /// (mode 0600). Refuses to touch a directory that already holds a CA.
    pub fn init(dir: &Path, config: &PkiConfig, now: OffsetDateTime) -> Result<Self, CaError> {
        ensure_fresh_dir(dir)?;
        let root_key = generate_key()?;
        let intermediate_key = generate_key()?;
        create_dir(dir)?;
        write_new_file(&dir.join(ROOT_KEY_FILE), root_key.serialize_pem().as_bytes(), true)?;
        write_new_file(&dir.join(INTERMEDIATE_KEY_FILE), intermediate_key.serialize_pem().as_bytes(), true)?;
        Self::init_with_keys(
            dir,
            config,
            now,
            NewCaKey { key: &root_key, location: KeyLocation::File { path: ROOT_KEY_FILE.to_owned() } },
            NewCaKey { key: &intermediate_key, location: KeyLocation::File { path: INTERMEDIATE_KEY_FILE.to_owned() } },
        )
    }

    /// Creates the CA with keys the caller holds (for example in the HSM). Writes certificates,
    /// first CRLs and the state file; key files, if any, are the caller's business.
    pub fn init_with_keys(
        dir: &Path,
        config: &PkiConfig,
        now: OffsetDateTime,
        root_key: NewCaKey<'_>,
        intermediate_key: NewCaKey<'_>,
    ) -> Result<Self, CaError> {
        if dir.join(STATE_FILE).exists() || dir.join(ROOT_CERT_FILE).exists() {
            return Err(CaError::AlreadyInitialized { dir: dir.display().to_string() });
        }
        require_p256(root_key.key)?;
        require_p256(intermediate_key.key)?;
        create_dir(dir)?;
        let now = truncate(now);
        let not_before = now - Duration::seconds(i64::from(config.backdate_seconds));

        let mut root_params = ca_params(config, &config.root_common_name, 1)?;
        root_params.not_before = not_before;
        root_params.not_after = now + Duration::days(i64::from(config.root_validity_days));
        let root_cert = root_params.self_signed(&root_key.key).map_err(CaError::Generate)?;
        let root_issuer = Issuer::new(root_params.clone(), root_key.key);

        let mut intermediate_params = ca_params(config, &config.intermediate_common_name, 0)?;
        intermediate_params.not_before = not_before;
        intermediate_params.not_after =
            (now + Duration::days(i64::from(config.intermediate_validity_days))).min(root_params.not_after);
        intermediate_params.use_authority_key_identifier_extension = true;
        let intermediate_cert =
            intermediate_params.signed_by(&intermediate_key.key, &root_issuer).map_err(CaError::Generate)?;
        let intermediate_info = inspect(intermediate_cert.der()).map_err(|_| CaError::Invariant)?;

        write_new_file(&dir.join(ROOT_CERT_FILE), root_cert.pem().as_bytes(), false)?;
        write_new_file(&dir.join(INTERMEDIATE_CERT_FILE), intermediate_cert.pem().as_bytes(), false)?;
        let state = CaState {
            version: STATE_VERSION,
            root: CaRecord { key: root_key.location, crl_number: 0, revoked: Vec::new() },
            intermediate: CaRecord { key: intermediate_key.location, crl_number: 0, revoked: Vec::new() },
            issued: vec![IssuedRecord {
                serial_hex: intermediate_info.serial_hex,
                issuer: CaLevel::Root,
                role: None,
                subject: intermediate_info.subject,
                not_after: intermediate_info.not_after,
            }],
        };
        let mut ca = Self {
            dir: dir.to_path_buf(),
            config: config.clone(),
            state,
            root_cert: root_cert.der().clone(),
            intermediate_cert: intermediate_cert.der().clone(),
        };
        ca.write_crl(CaLevel::Root, root_key.key, now)?;
        ca.write_crl(CaLevel::Intermediate, intermediate_key.key, now)?;
        Ok(ca)
    }

    /// Opens the CA in `dir`.
    pub fn open(dir: &Path, config: &PkiConfig) -> Result<Self, CaError> {
        let state_path = dir.join(STATE_FILE);
        if !state_path.exists() {
            return Err(CaError::NotInitialized { dir: dir.display().to_string() });
        }
        let bytes = read_file(&state_path, STATE_FILE_BYTES_MAX)?;
        let state: CaState = serde_json::from_slice(&bytes)
            .map_err(|source| CaError::State { path: state_path.display().to_string(), source })?;
        let root_cert = first_certificate(&dir.join(ROOT_CERT_FILE))?;
        let intermediate_cert = first_certificate(&dir.join(INTERMEDIATE_CERT_FILE))?;
        Ok(Self { dir: dir.to_path_buf(), config: config.clone(), state, root_cert, intermediate_cert })
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root CA certificate (the trust anchor).
    pub fn root_certificate(&self) -> &CertificateDer<'static> {
        &self.root_cert
    }

    /// The intermediate CA certificate.
    pub fn intermediate_certificate(&self) -> &CertificateDer<'static> {
        &self.intermediate_cert
    }

    /// Path of a CA's certificate file.
    pub fn cert_path(&self, level: CaLevel) -> PathBuf {
        self.dir.join(level.cert_file())
    }

    /// Path of a CA's CRL file.
    pub fn crl_path(&self, level: CaLevel) -> PathBuf {
        self.dir.join(level.crl_file())
    }

    /// Path of the file holding both CRLs.
    pub fn crls_path(&self) -> PathBuf {
        self.dir.join(CRLS_FILE)
    }

    /// Where a CA's key lives.
    pub fn key_location(&self, level: CaLevel) -> &KeyLocation {
        &self.record(level).key
    }

    /// The issuance log.
    pub fn issued(&self) -> &[IssuedRecord] {
        &self.state.issued
    }

    /// A CA's revocation list.
    pub fn revoked(&self, level: CaLevel) -> &[RevokedRecord] {
        &self.record(level).revoked
    }

    /// Loads a CA key kept in a PEM file (refuses HSM-held keys, which the caller opens).
    pub fn load_file_key(&self, level: CaLevel) -> Result<KeyPair, CaError> {
        let path = match self.key_location(level) {
            KeyLocation::File { path } => self.dir.join(path),
            KeyLocation::Hsm { label } => {
                return Err(CaError::KeyElsewhere {
                    level,
                    location: format!("in the HSM under label {label:?}"),
                    hint: "pass --hsm-config",
                });
            }
        };
        let pem = crate::signer::read_key_file(&path).map_err(|error| match error {
            crate::signer::SignerError::KeyFile { path, source } => CaError::Io { path, source },
            _ => CaError::KeyFormat { level },
        })?;
        let key = KeyPair::from_pem(&pem).map_err(|_| CaError::KeyFormat { level })?;
        require_p256(&key)?;
        Ok(key)
    }

    fn record(&self, level: CaLevel) -> &CaRecord {
        match level {
            CaLevel::Root => &self.state.root,
            CaLevel::Intermediate => &self.state.intermediate,
        }
    }

    fn record_mut(&mut self, level: CaLevel) -> &mut CaRecord {
        match level {
            CaLevel::Root => &mut self.state.root,
            CaLevel::Intermediate => &mut self.state.intermediate,
        }
    }

    fn certificate(&self, level: CaLevel) -> &CertificateDer<'static> {
        match level {
            CaLevel::Root => &self.root_cert,
            CaLevel::Intermediate => &self.intermediate_cert,
        }
    }

    /// An rcgen issuer for `level`, after checking that `key` is that CA's key.
    fn issuer<'k>(
        &self,
        level: CaLevel,
        key: &'k dyn SigningKey,
    ) -> Result<Issuer<'static, &'k dyn SigningKey>, CaError> {
        let cert = identity::parse_certificate(self.certificate(level)).map_err(|_| CaError::Invariant)?;
        if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(CaError::KeyMismatch { level, file: level.cert_file() });
        }
        Issuer::from_ca_cert_der(self.certificate(level), key).map_err(CaError::Generate)
    }

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
        let expected_merchant = request
            .merchant_id
            .as_deref()
            .map(identity::normalize_merchant_id)
            .transpose()
            .map_err(RequestError::from)?;
        if info.role != Some(request.role) || info.merchant_id != expected_merchant || info.bank_iin != request.iin {
            return Err(CaError::Invariant);
        }
        self.state.issued.push(IssuedRecord {
            serial_hex: info.serial_hex.clone(),
            issuer: CaLevel::Intermediate,
            role: Some(request.role),
            subject: info.subject,
            not_after: info.not_after,
        });
        self.save_state()?;
        tracing::info!(serial = %info.serial_hex, role = %request.role, "certificate issued");
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

        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&self.config.organization, &request.common_name);
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(self.fresh_serial()?);
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = request
            .role
            .key_usages()
            .iter()
            .map(|bit| match bit {
                KeyUsageBit::DigitalSignature => KeyUsagePurpose::DigitalSignature,
                KeyUsageBit::NonRepudiation => KeyUsagePurpose::ContentCommitment,
            })
            .collect();
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(&[2, 5, 29, 37], extended_key_usage_der(request.role)));
        params.subject_alt_names = subject_alt_names(request)?;
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
        replace_file(&path, crl_pem.as_bytes())?;
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
                combined.extend(read_file(&path, pem::PEM_FILE_BYTES_MAX)?);
            }
        }
        replace_file(&self.crls_path(), &combined)
    }

    fn save_state(&self) -> Result<(), CaError> {
        let path = self.dir.join(STATE_FILE);
        let json = serde_json::to_vec_pretty(&self.state)
            .map_err(|source| CaError::State { path: path.display().to_string(), source })?;
        replace_file(&path, &json)
    }
}

/// Writes `<prefix>.crt` (chain PEM, leaf first) and, if given, `<prefix>.key` (mode 0600).
/// Refuses to overwrite either. Returns the paths written.
pub fn write_issued(prefix: &Path, issued: &Issued, key_pem: Option<&str>) -> Result<Vec<PathBuf>, CaError> {
    let cert_path = with_suffix(prefix, "crt");
    let key_path = with_suffix(prefix, "key");
    if cert_path.exists() {
        return Err(CaError::OutputExists { path: cert_path.display().to_string() });
    }
    let mut written = Vec::new();
    if let Some(key_pem) = key_pem {
        write_new_file(&key_path, key_pem.as_bytes(), true)?;
        written.push(key_path);
    }
    write_new_file(&cert_path, issued.chain_pem().as_bytes(), false)?;
    written.push(cert_path);
    Ok(written)
}

/// `<prefix>.<extension>`, keeping any dots already in the prefix's file name.
pub fn with_suffix(prefix: &Path, extension: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".");
    name.push(extension);
    PathBuf::from(name)
}

/// A fresh P-256 key pair (software).
pub fn generate_key() -> Result<KeyPair, CaError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)
}

fn require_p256(key: &dyn SigningKey) -> Result<(), CaError> {
    if key.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 { Ok(()) } else { Err(RequestError::KeyAlgorithm.into()) }
}

fn ca_params(config: &PkiConfig, common_name: &str, path_length: u8) -> Result<CertificateParams, CaError> {
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

fn subject_alt_names(request: &IssueRequest) -> Result<Vec<SanType>, CaError> {
    let mut names = Vec::new();
    for dns in &request.dns_names {
        let ia5 = dns.clone().try_into().map_err(|_| RequestError::DnsName(dns.clone()))?;
        names.push(SanType::DnsName(ia5));
    }
    names.extend(request.ip_addresses.iter().copied().map(SanType::IpAddress));
    let uri = match (&request.merchant_id, &request.iin) {
        (Some(merchant_id), _) => Some(identity::merchant_uri(merchant_id).map_err(RequestError::from)?),
        (None, Some(iin)) => Some(identity::bank_uri(iin).map_err(RequestError::from)?),
        (None, None) => None,
    };
    if let Some(uri) = uri {
        names.push(SanType::URI(uri.try_into().map_err(|_| CaError::Invariant)?));
    }
    Ok(names)
}

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

/// 16 random bytes, most significant bit clear (positive) and the next one set (always 16 bytes).
fn random_serial() -> Result<[u8; SERIAL_BYTES], CaError> {
    let mut serial = [0u8; SERIAL_BYTES];
    rustls::crypto::aws_lc_rs::default_provider().secure_random.fill(&mut serial).map_err(|_| CaError::Random)?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
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

fn truncate(time: OffsetDateTime) -> OffsetDateTime {
    time.replace_nanosecond(0).unwrap_or(time)
}

fn ensure_fresh_dir(dir: &Path) -> Result<(), CaError> {
    let taken = [STATE_FILE, ROOT_CERT_FILE, ROOT_KEY_FILE, INTERMEDIATE_CERT_FILE, INTERMEDIATE_KEY_FILE]
        .iter()
        .any(|file| dir.join(file).exists());
    if taken { Err(CaError::AlreadyInitialized { dir: dir.display().to_string() }) } else { Ok(()) }
}

fn create_dir(dir: &Path) -> Result<(), CaError> {
    std::fs::create_dir_all(dir).map_err(|source| CaError::Io { path: dir.display().to_string(), source })
}

fn read_file(path: &Path, bytes_max: u64) -> Result<Vec<u8>, CaError> {
    use std::io::Read;
    let io_error = |source| CaError::Io { path: path.display().to_string(), source };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let mut bytes = Vec::new();
    file.take(bytes_max).read_to_end(&mut bytes).map_err(io_error)?;
    Ok(bytes)
}

fn first_certificate(path: &Path) -> Result<CertificateDer<'static>, CaError> {
    let mut certificates = pem::load_certificates(path)?;
    if certificates.is_empty() {
        return Err(CaError::Invariant);
    }
    Ok(certificates.swap_remove(0))
}

/// Writes a new private key file (mode 0600); refuses to overwrite.
pub fn write_key_file(path: &Path, key_pem: &str) -> Result<(), CaError> {
    write_new_file(path, key_pem.as_bytes(), true)
}

/// Creates a file that must not exist yet; `secret` files get mode 0600.
fn write_new_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), CaError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let io_error = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            CaError::OutputExists { path: path.display().to_string() }
        } else {
            CaError::Io { path: path.display().to_string(), source }
        }
    };
    let mut file = options.open(path).map_err(io_error)?;
    file.write_all(contents).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

/// Replaces a file atomically (write a temporary file beside it, then rename).
fn replace_file(path: &Path, contents: &[u8]) -> Result<(), CaError> {
    let temporary = with_suffix(path, "tmp");
    let io_error = |source| CaError::Io { path: path.display().to_string(), source };
    {
        let mut file = std::fs::File::create(&temporary).map_err(io_error)?;
        file.write_all(contents).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
    }
    std::fs::rename(&temporary, path).map_err(io_error)
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

    #[test]
    fn random_serials_are_positive_and_full_length() {
        for _ in 0..64 {
            let serial = random_serial().unwrap();
            assert_eq!(serial[0] & 0xc0, 0x40);
        }
        assert_ne!(random_serial().unwrap(), random_serial().unwrap());
    }

    #[test]
    fn requests_follow_the_role_profiles() {
        let mut server = IssueRequest::new(Role::AuthzServer, "authz");
        assert_eq!(server.check(), Err(RequestError::NeedsHostNames(Role::AuthzServer)));
        server.dns_names.push("authz.bank.test".to_owned());
        assert_eq!(server.check(), Ok(()));
        server.dns_names.push("not a name".to_owned());
        assert_eq!(server.check(), Err(RequestError::DnsName("not a name".to_owned())));

        let mut merchant = IssueRequest::new(Role::Merchant, "Shop");
        assert_eq!(merchant.check(), Err(RequestError::MerchantId));
        merchant.merchant_id = Some("SHOP-001".to_owned());
        assert_eq!(merchant.check(), Ok(()));
        merchant.iin = Some("123456".to_owned());
        assert_eq!(merchant.check(), Err(RequestError::Iin));
        merchant.iin = None;
        merchant.ip_addresses.push(IpAddr::from([127, 0, 0, 1]));
        assert_eq!(merchant.check(), Err(RequestError::NoHostNames(Role::Merchant)));

        let mut bank = IssueRequest::new(Role::BankSigning, "Bank");
        assert_eq!(bank.check(), Err(RequestError::Iin));
        bank.iin = Some("12345".to_owned());
        assert!(matches!(bank.check(), Err(RequestError::Identity(IdentityError::Iin))));
        bank.iin = Some("123456".to_owned());
        assert_eq!(bank.check(), Ok(()));
        bank.merchant_id = Some("X".to_owned());
        assert_eq!(bank.check(), Err(RequestError::MerchantId));

        assert_eq!(IssueRequest::new(Role::GatewayClient, "").check(), Err(RequestError::CommonName));
    }
}
