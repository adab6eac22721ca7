//! What can go wrong with the CA: [`CaError`] for the directory, its keys and signing, and
//! [`RequestError`] for an issuance request that breaks a rule of its profile. Requests whose
//! subject does not fit the role cannot be built at all (see `subject`).

use time::OffsetDateTime;

use super::CaLevel;
use super::issue::COMMON_NAME_CHARS_MAX;
use super::state::{ISSUED_MAX, STATE_FILE};
use crate::config::VALIDITY_DAYS_MAX;
use crate::pem;

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
    #[error("--name must be 1 to {COMMON_NAME_CHARS_MAX} printable characters")]
    CommonName,
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
