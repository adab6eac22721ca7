//! Errors of the HSM layer and the one place that sorts PKCS#11 return values into "the HSM
//! is gone" (the pool goes down and re-initialises) and "this call failed".
//!
//! No error carries key material, a PIN, an account number or a password: only which C
//! function failed and its return value.

use std::path::PathBuf;

pub use cryptoki::context::Function as Pkcs11Function;
pub use cryptoki::error::RvError;

use crate::config::ConfigError;

/// Why an HSM operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// The HSM is not reachable right now (lost, re-initialising, or shut down). Callers fail
    /// closed: 503 or decline, never approve.
    #[error("HSM unavailable")]
    Unavailable,
    /// The operation did not finish within `op_timeout_ms`, queueing included.
    #[error("HSM operation timed out")]
    Timeout,
    /// The worker's queue is full: too many requests in flight.
    #[error("HSM queue full")]
    Busy,
    /// An opened session was discarded before it was sealed (its time-to-live passed, or its
    /// worker was at its bound of opened sessions).
    #[error("HSM session ticket expired")]
    TicketExpired,
    /// The configured token is not present.
    #[error("token {label:?} not found")]
    TokenNotFound {
        /// The token label.
        label: String,
    },
    /// A key the pool needs is not on the token.
    #[error("key {label:?} not found on the token")]
    KeyNotFound {
        /// The key label.
        label: String,
    },
    /// More than one object carries a label that must be unique.
    #[error("more than one key labelled {label:?} on the token")]
    DuplicateKey {
        /// The key label.
        label: String,
    },
    /// A wrapped chain key that does not unwrap under the key-encryption key (wrong length,
    /// damaged, or wrapped under another key).
    #[error("wrapped chain key is invalid")]
    WrappedKeyInvalid,
    /// The caller passed something the operation refuses.
    #[error("invalid input: {what}")]
    InvalidInput {
        /// What was wrong.
        what: &'static str,
    },
    /// A PKCS#11 call failed with a return value that does not mean "HSM lost".
    #[error("PKCS#11 {function} failed: {rv}")]
    Pkcs11 {
        /// The C function.
        function: Pkcs11Function,
        /// Its return value.
        rv: RvError,
    },
    /// The module answered with data of an unexpected size.
    #[error("PKCS#11 {function} returned {actual} bytes, expected {expected}")]
    UnexpectedLength {
        /// The C function.
        function: Pkcs11Function,
        /// Expected length.
        expected: usize,
        /// Actual length.
        actual: usize,
    },
    /// The PKCS#11 module cannot be loaded.
    #[error("cannot load PKCS#11 module {path}: {source}")]
    Load {
        /// Module path.
        path: PathBuf,
        /// Why.
        #[source]
        source: cryptoki::error::Error,
    },
    /// A cryptoki failure that is not a PKCS#11 return value (conversion, missing symbol).
    #[error("cryptoki: {0}")]
    Library(#[source] cryptoki::error::Error),
    /// The configuration or the PIN source is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A key on the token is weaker than the key policy (public, extractable, not sensitive,
    /// a use it does not need, no enforced unwrap template): the pool refuses to start.
    #[error(transparent)]
    KeyPolicy(#[from] crate::custody::PolicyViolation),
    /// A member of a multi-HSM pool could not be connected: the pool refuses to start.
    #[error("HSM {member} of the pool (token {token_label:?}): {source}")]
    Member {
        /// Its index: 0 is the HSM of the config's top-level keys, 1 is `additional[0]`.
        member: usize,
        /// Its token label.
        token_label: String,
        /// Why.
        #[source]
        source: Box<HsmError>,
    },
    /// A member of a multi-HSM pool does not hold the same keys as the first: the pool
    /// refuses to start (at connect), or keeps that member out (at a reconnect).
    #[error("HSM {member} of the pool (token {token_label:?}) holds other keys than HSM 0: {what}")]
    MemberKeysDiffer {
        /// Its index: 0 is the HSM of the config's top-level keys, 1 is `additional[0]`.
        member: usize,
        /// Its token label.
        token_label: String,
        /// Which key differs.
        what: &'static str,
    },
}

impl HsmError {
    /// Every value of [`HsmError::kind`], for metrics.
    pub const KINDS: [&'static str; 17] = [
        "unavailable",
        "timeout",
        "busy",
        "ticket_expired",
        "token_not_found",
        "key_not_found",
        "duplicate_key",
        "wrapped_key_invalid",
        "invalid_input",
        "pkcs11",
        "unexpected_length",
        "load",
        "library",
        "config",
        "key_policy",
        "member",
        "member_keys_differ",
    ];

    /// A short stable name of the variant, for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Busy => "busy",
            Self::TicketExpired => "ticket_expired",
            Self::TokenNotFound { .. } => "token_not_found",
            Self::KeyNotFound { .. } => "key_not_found",
            Self::DuplicateKey { .. } => "duplicate_key",
            Self::WrappedKeyInvalid => "wrapped_key_invalid",
            Self::InvalidInput { .. } => "invalid_input",
            Self::Pkcs11 { .. } => "pkcs11",
            Self::UnexpectedLength { .. } => "unexpected_length",
            Self::Load { .. } => "load",
            Self::Library(_) => "library",
            Self::Config(_) => "config",
            Self::KeyPolicy(_) => "key_policy",
            Self::Member { .. } => "member",
            Self::MemberKeysDiffer { .. } => "member_keys_differ",
        }
    }

    /// Whether a retry later may succeed (the HSM was lost, slow or busy).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable | Self::Timeout | Self::Busy)
    }

    pub(crate) fn kind_index(&self) -> usize {
        let kind = self.kind();
        Self::KINDS.iter().position(|k| *k == kind).unwrap_or(0)
    }
}

/// Why opening an authorization session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The packet's MAC does not verify under Ki_n: a changed byte, a wrong key or a replay
    /// with another RSN. The state must not move (DESIGN.md section 7 step 7, code 63).
    #[error("payer packet MAC does not verify")]
    BadMac,
    /// The MAC verified but the secret does not decrypt to a well-formed account and password.
    #[error("payer packet secret is malformed")]
    BadSecret,
    /// The HSM failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
}

/// Return values that mean the session, the login or the whole module is gone: the pool
/// goes down and re-initialises.
pub(crate) fn is_connection_lost(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized
            | RvError::DeviceError
            | RvError::GeneralError
    )
}

/// Return values that mean a cached object handle went stale.
pub(crate) fn is_stale_handle(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::ObjectHandleInvalid
            | RvError::KeyHandleInvalid
            | RvError::WrappingKeyHandleInvalid
            | RvError::UnwrappingKeyHandleInvalid
    )
}

/// Turns a cryptoki error into an [`HsmError`] without classifying "lost" (the worker does
/// that, since it must also take the pool down).
pub(crate) fn from_cryptoki(error: cryptoki::error::Error) -> HsmError {
    match error {
        cryptoki::error::Error::Pkcs11(rv, function) => HsmError::Pkcs11 { function, rv },
        other => HsmError::Library(other),
    }
}

/// The return value of a cryptoki error, if it is one.
pub(crate) fn rv_of(error: &cryptoki::error::Error) -> Option<RvError> {
    match error {
        cryptoki::error::Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_cover_every_variant_in_order() {
        let samples = [
            HsmError::Unavailable,
            HsmError::Timeout,
            HsmError::Busy,
            HsmError::TicketExpired,
            HsmError::TokenNotFound { label: "t".into() },
            HsmError::KeyNotFound { label: "k".into() },
            HsmError::DuplicateKey { label: "k".into() },
            HsmError::WrappedKeyInvalid,
            HsmError::InvalidInput { what: "x" },
            HsmError::Pkcs11 { function: Pkcs11Function::Sign, rv: RvError::KeyFunctionNotPermitted },
            HsmError::UnexpectedLength { function: Pkcs11Function::Sign, expected: 64, actual: 3 },
        ];
        for (i, e) in samples.iter().enumerate() {
            assert_eq!(e.kind(), HsmError::KINDS[i]);
            assert_eq!(e.kind_index(), i);
        }
        assert!(HsmError::Unavailable.is_transient());
        assert!(!HsmError::WrappedKeyInvalid.is_transient());
    }

    #[test]
    fn lost_and_stale_classes() {
        assert!(is_connection_lost(RvError::SessionHandleInvalid));
        assert!(is_connection_lost(RvError::UserNotLoggedIn));
        assert!(!is_connection_lost(RvError::KeyFunctionNotPermitted));
        assert!(is_stale_handle(RvError::ObjectHandleInvalid));
        assert!(!is_stale_handle(RvError::SessionHandleInvalid));
    }
}
