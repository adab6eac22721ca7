//! Why a SIM operation was refused: one typed error per way it can fail, each worded so the
//! payer knows what went wrong. None of them carries a key, a password or a full account number.

use std::path::PathBuf;

use mps_protocol::perso::PersoError;
use mps_protocol::{IdError, Iin, WireError};

/// Why the profile file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// No profile file at this path yet.
    #[error("no SIM profile at {path}")]
    NotFound {
        /// The path looked at.
        path: PathBuf,
    },
    /// The operating system refused a read, write, fsync or rename.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("read", "write", "rename to", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another `sim` process is working on this profile.
    #[error("another sim process is using the profile {path}")]
    Busy {
        /// The profile.
        path: PathBuf,
    },
    /// Larger than any profile this application writes.
    #[error("{path} is {actual} bytes, more than the {max} bytes a profile may have")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        actual: u64,
        /// The limit.
        max: u64,
    },
    /// Not JSON of the profile's shape.
    #[error("{path} is not a SIM profile: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's complaint (it never quotes key material: keys are parsed by a visitor
        /// that reports only "invalid key").
        #[source]
        source: serde_json::Error,
    },
    /// JSON of the right shape whose contents contradict each other.
    #[error("{path} is damaged: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Which invariant failed.
        reason: String,
    },
}

/// Why a SIM operation was refused. The profile is unchanged whenever one of these is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// Reading or writing the profile failed.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The personalisation record is malformed, or the transport key does not unwrap it.
    #[error(transparent)]
    Perso(#[from] PersoError),
    /// A key set for this issuer exists already.
    #[error("this SIM already holds a key set for issuer {iin}")]
    KeySetExists {
        /// The issuer.
        iin: Iin,
    },
    /// No key set for this issuer.
    #[error("this SIM holds no key set for issuer {iin}")]
    UnknownIssuer {
        /// The issuer.
        iin: Iin,
    },
    /// The account is registered already.
    #[error("account {account} is already registered")]
    AccountExists {
        /// The masked account number.
        account: String,
    },
    /// Another account already has this nickname.
    #[error("another account is already called {nickname:?}")]
    NicknameTaken {
        /// The nickname.
        nickname: String,
    },
    /// A nickname that is empty, too long, all digits or not printable.
    #[error("nickname must be 1 to {max} printable characters and not all digits", max = crate::accounts::NICKNAME_CHARS_MAX)]
    BadNickname,
    /// No account matches the selector.
    #[error("no account matches {selector:?}")]
    UnknownAccount {
        /// What the payer typed (a nickname or the last 4 digits; a full number is not echoed).
        selector: String,
    },
    /// Several accounts match the selector.
    #[error("{selector:?} matches several accounts: {candidates}")]
    AmbiguousAccount {
        /// What the payer typed.
        selector: String,
        /// The masked numbers that match.
        candidates: String,
    },
    /// The merchant is registered already.
    #[error("merchant {merchant_id} is already registered")]
    MerchantExists {
        /// The merchant id.
        merchant_id: String,
    },
    /// No registered merchant has this id.
    #[error("no merchant {merchant_id:?} is registered")]
    UnknownMerchant {
        /// The merchant id as given.
        merchant_id: String,
    },
    /// A merchant name or URL that does not fit.
    #[error("merchant {field} is invalid: {reason}")]
    BadMerchantField {
        /// "name" or "url".
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The profile already holds as many entries of this kind as it may.
    #[error("the profile already holds {max} {what}, the most it may")]
    ListFull {
        /// "accounts", "merchants" or "key sets".
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// An identifier, amount or password that does not parse.
    #[error(transparent)]
    Id(#[from] IdError),
    /// A payment of nothing.
    #[error("the amount must be greater than zero")]
    ZeroAmount,
    /// A payment for this issuer is waiting for its answer.
    #[error("payment {counter} for issuer {iin} is still waiting for its answer")]
    PaymentPending {
        /// The issuer.
        iin: Iin,
        /// The pending session number.
        counter: u64,
    },
    /// The key set has used every counter value (2^48 sessions).
    #[error("the key set for issuer {iin} has used every session counter")]
    CounterExhausted {
        /// The issuer.
        iin: Iin,
    },
    /// No payment is waiting for an answer (for this issuer, when one was named).
    #[error("no payment is waiting for an answer{}", issuer.map(|i| format!(" for issuer {i}")).unwrap_or_default())]
    NoPendingPayment {
        /// The issuer asked about, if any.
        issuer: Option<Iin>,
    },
    /// Several issuers have a payment pending and none was named.
    #[error("payments are pending for several issuers: {iins}")]
    SeveralPending {
        /// The issuers, comma separated.
        iins: String,
    },
    /// The bytes are not an answer of section 5.
    #[error("this is not an issuer answer: {0}")]
    AnswerFormat(#[source] WireError),
    /// The answer's counter was completed earlier: it has been read already.
    #[error("the answer is for payment {answer}, which was completed earlier")]
    AnswerAlreadyRead {
        /// The answer's counter.
        answer: u64,
    },
    /// The answer's counter is not the pending payment's.
    #[error("the answer is for payment {answer}, but the pending payment is {pending}")]
    AnswerCounterMismatch {
        /// The answer's counter.
        answer: u64,
        /// The pending counters, comma separated.
        pending: String,
    },
    /// The answer does not verify under the pending session's keys (changed bytes, or an answer
    /// for another SIM).
    #[error("the answer does not verify: {0}")]
    AnswerRejected(#[source] WireError),
}
