//! The scheme CA, front of issuance: the [`CertificateAuthority`] kept in a directory, its root and
//! intermediate certificates and where their keys live (PEM files or HSM labels). The rest is one
//! concern per file: `subject` (what a certificate names, per role), `issue` (what each role's
//! certificate contains, and issuing it), `crl` (revocation and CRLs), `state` (`ca.json`: key
//! locations, revocations, the issuance log), `files` (the directory's layout and safe writes) and
//! `error`. Used by the `pki` command and by tests.

mod crl;
mod error;
mod files;
mod issue;
mod state;
mod subject;

use std::path::{Path, PathBuf};

use rcgen::{Issuer, KeyPair, SigningKey};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

pub use crl::{RevocationReason, normalize_serial};
pub use error::{CaError, RequestError};
pub use files::{
    CRLS_FILE, INTERMEDIATE_CERT_FILE, INTERMEDIATE_CRL_FILE, INTERMEDIATE_KEY_FILE, ROOT_CERT_FILE, ROOT_CRL_FILE,
    ROOT_KEY_FILE, with_suffix, write_issued, write_key_file,
};
pub use issue::{COMMON_NAME_CHARS_MAX, IssueRequest, Issued, SERIAL_BYTES, Validity, generate_key};
pub use state::{ISSUED_MAX, IssuedRecord, KeyLocation, RevokedRecord, STATE_FILE};
pub use subject::{HostNames, SUBJECT_ALT_NAMES_MAX, ServerNames, Subject, SubjectError, SubjectFlag, SubjectFlags};

use crate::config::PkiConfig;
use crate::identity::{self, inspect};
use state::{CaRecord, CaState};

/// Which of the two CAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CaLevel {
    /// The scheme root CA (self-signed, issues the intermediate only).
    Root,
    /// The intermediate CA (issues every end-entity certificate).
    Intermediate,
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
        files::ensure_fresh_dir(dir)?;
        let root_key = generate_key()?;
        let intermediate_key = generate_key()?;
        files::create_dir(dir)?;
        files::write_new_file(&dir.join(ROOT_KEY_FILE), root_key.serialize_pem().as_bytes(), true)?;
        files::write_new_file(&dir.join(INTERMEDIATE_KEY_FILE), intermediate_key.serialize_pem().as_bytes(), true)?;
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
        files::create_dir(dir)?;
        let now = truncate(now);
        let not_before = now - Duration::seconds(i64::from(config.backdate_seconds));

        let mut root_params = issue::ca_params(config, &config.root_common_name, 1)?;
        root_params.not_before = not_before;
        root_params.not_after = now + Duration::days(i64::from(config.root_validity_days));
        let root_cert = root_params.self_signed(&root_key.key).map_err(CaError::Generate)?;
        let root_issuer = Issuer::new(root_params.clone(), root_key.key);

        let mut intermediate_params = issue::ca_params(config, &config.intermediate_common_name, 0)?;
        intermediate_params.not_before = not_before;
        intermediate_params.not_after =
            (now + Duration::days(i64::from(config.intermediate_validity_days))).min(root_params.not_after);
        intermediate_params.use_authority_key_identifier_extension = true;
        let intermediate_cert =
            intermediate_params.signed_by(&intermediate_key.key, &root_issuer).map_err(CaError::Generate)?;
        let intermediate_info = inspect(intermediate_cert.der()).map_err(|_| CaError::Invariant)?;

        files::write_new_file(&dir.join(ROOT_CERT_FILE), root_cert.pem().as_bytes(), false)?;
        files::write_new_file(&dir.join(INTERMEDIATE_CERT_FILE), intermediate_cert.pem().as_bytes(), false)?;
        let state = CaState::new(
            root_key.location,
            intermediate_key.location,
            IssuedRecord {
                serial_hex: intermediate_info.serial_hex,
                issuer: CaLevel::Root,
                role: None,
                subject: intermediate_info.subject,
                not_after: intermediate_info.not_after,
            },
        );
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
        let state = CaState::load(dir)?;
        let root_cert = files::first_certificate(&dir.join(ROOT_CERT_FILE))?;
        let intermediate_cert = files::first_certificate(&dir.join(INTERMEDIATE_CERT_FILE))?;
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
        &self.state.record(level).key
    }

    /// The issuance log.
    pub fn issued(&self) -> &[IssuedRecord] {
        &self.state.issued
    }

    /// A CA's revocation list.
    pub fn revoked(&self, level: CaLevel) -> &[RevokedRecord] {
        &self.state.record(level).revoked
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
        self.state.record(level)
    }

    fn record_mut(&mut self, level: CaLevel) -> &mut CaRecord {
        self.state.record_mut(level)
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

    fn save_state(&self) -> Result<(), CaError> {
        self.state.save(&self.dir)
    }
}

fn require_p256(key: &dyn SigningKey) -> Result<(), CaError> {
    if key.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 { Ok(()) } else { Err(RequestError::KeyAlgorithm.into()) }
}

/// Whole seconds: certificates, CRLs and the state file carry no fractions.
fn truncate(time: OffsetDateTime) -> OffsetDateTime {
    time.replace_nanosecond(0).unwrap_or(time)
}
