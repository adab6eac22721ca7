//! The CA's record on disk, `ca.json`: where each CA key lives, each CA's CRL number and
//! revocations, and the issuance log (bounded by [`ISSUED_MAX`]). Read whole on open, replaced
//! atomically on every change.

use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::crl::RevocationReason;
use super::{CaError, CaLevel, files};
use crate::role::Role;

/// The CA state file in the CA directory.
pub const STATE_FILE: &str = "ca.json";
/// Most certificates the issuance log keeps (bounds the state file).
pub const ISSUED_MAX: usize = 100_000;
const STATE_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;
const STATE_VERSION: u32 = 1;

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

/// What the state file records for one CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CaRecord {
    pub(super) key: KeyLocation,
    pub(super) crl_number: u64,
    pub(super) revoked: Vec<RevokedRecord>,
}

/// The whole state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CaState {
    version: u32,
    root: CaRecord,
    intermediate: CaRecord,
    pub(super) issued: Vec<IssuedRecord>,
}

impl CaState {
    /// The state of a new CA: no CRL yet, nothing revoked, the intermediate CA certificate as the
    /// first entry of the issuance log.
    pub(super) fn new(root_key: KeyLocation, intermediate_key: KeyLocation, intermediate: IssuedRecord) -> Self {
        Self {
            version: STATE_VERSION,
            root: CaRecord { key: root_key, crl_number: 0, revoked: Vec::new() },
            intermediate: CaRecord { key: intermediate_key, crl_number: 0, revoked: Vec::new() },
            issued: vec![intermediate],
        }
    }

    /// Reads `ca.json` of the CA directory `dir`.
    pub(super) fn load(dir: &Path) -> Result<Self, CaError> {
        let path = dir.join(STATE_FILE);
        if !path.exists() {
            return Err(CaError::NotInitialized { dir: dir.display().to_string() });
        }
        let bytes = files::read_file(&path, STATE_FILE_BYTES_MAX)?;
        serde_json::from_slice(&bytes).map_err(|source| CaError::State { path: path.display().to_string(), source })
    }

    /// Replaces `ca.json` of the CA directory `dir`.
    pub(super) fn save(&self, dir: &Path) -> Result<(), CaError> {
        let path = dir.join(STATE_FILE);
        let json = serde_json::to_vec_pretty(self)
            .map_err(|source| CaError::State { path: path.display().to_string(), source })?;
        files::replace_file(&path, &json)
    }

    pub(super) fn record(&self, level: CaLevel) -> &CaRecord {
        match level {
            CaLevel::Root => &self.root,
            CaLevel::Intermediate => &self.intermediate,
        }
    }

    pub(super) fn record_mut(&mut self, level: CaLevel) -> &mut CaRecord {
        match level {
            CaLevel::Root => &mut self.root,
            CaLevel::Intermediate => &mut self.intermediate,
        }
    }
}
