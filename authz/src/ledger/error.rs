//! Ledger errors: what went wrong, typed, without secrets.
//!
//! The caller maps them once: [`LedgerError::Unavailable`] becomes 503 (fail closed), a
//! [`LedgerError::Conflict`] means the decision's premises changed under it, the rest are
//! operator or programming errors. Messages never contain an account number (only the masked
//! form would be allowed, and none is needed), a key or a password verification value.

use rusqlite::ErrorCode;

/// Everything the ledger can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The database cannot be read or written right now (I/O error, disk full, locked too long,
    /// writer stopped, queue full, timeout). The caller answers 503 and approves nothing.
    #[error("ledger unavailable: {0}")]
    Unavailable(#[source] Unavailable),
    /// A premise of the decision no longer holds inside the write transaction; this command was
    /// rolled back and nothing of it was stored.
    #[error("ledger conflict: {0}")]
    Conflict(Conflict),
    /// The named thing ("account", "sim", ...) does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The named thing ("account", "sim", "transaction") exists already.
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// A stored value does not parse or breaks an invariant: the database is damaged. Names
    /// the table and column, never the value.
    #[error("ledger data corrupt: {0}")]
    Corrupt(&'static str),
    /// A write would break a ledger invariant (unbalanced entry, negative debit balance, credit
    /// over its limit). The command was rolled back. This is a bug, never a client's doing.
    #[error("ledger invariant violated: {0}")]
    Invariant(&'static str),
    /// The schema cannot be brought to this build's version.
    #[error("ledger schema: {0}")]
    Migration(#[source] MigrationError),
    /// The command itself is malformed (names what).
    #[error("invalid ledger input: {0}")]
    InvalidInput(&'static str),
}

/// Why the ledger is unavailable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Unavailable {
    /// SQLite failed (I/O error, disk full, read-only file, busy beyond the timeout, ...).
    #[error("storage: {0}")]
    Storage(#[source] rusqlite::Error),
    /// The writer thread has stopped (shut down or died): nothing more can be written.
    #[error("the writer has stopped")]
    WriterStopped,
    /// The writer queue stayed full for the whole enqueue timeout.
    #[error("the writer queue is full")]
    QueueFull,
    /// The write or read did not finish within its timeout. For a write the outcome is unknown.
    #[error("timed out")]
    Timeout,
    /// The writer thread could not be started.
    #[error("could not start the writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// BEGIN or COMMIT of a group commit failed: no command of the group was stored.
    #[error("group commit failed: {0}")]
    GroupCommit(#[source] std::sync::Arc<rusqlite::Error>),
    /// Another command of the same group commit hit a storage error and the database rolled
    /// the whole group back: this command was not stored.
    #[error("group commit aborted by a storage error")]
    GroupAborted,
    /// A blocking read task was cancelled or panicked.
    #[error("read task failed")]
    ReadTask,
    /// PostgreSQL failed: the connection, a refusal by the server, or a lost serialization race.
    #[error("postgres: {0}")]
    Postgres(#[source] super::postgres::PostgresError),
}

/// Which premise of a session commit no longer held inside the write transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Conflict {
    /// The SIM's stored counter is not n - 1 any more.
    #[error("the SIM counter moved")]
    StaleCounter,
    /// The SIM is no longer active.
    #[error("the SIM is not active")]
    SimNotActive,
    /// The account is not open, not bound to the SIM, or of another currency.
    #[error("the account no longer permits this payment")]
    AccountNotPermitted,
    /// Payments from the account are locked after wrong passwords.
    #[error("the account's payment password is locked")]
    PasswordLocked,
    /// Available funds are below the amount.
    #[error("insufficient funds")]
    InsufficientFunds,
    /// The amount is over the per-transaction or the daily limit.
    #[error("over the account's limit")]
    LimitExceeded,
    /// The same merchant id and order number has been approved already.
    #[error("duplicate order")]
    DuplicateOrder,
    /// The approval was reversed already.
    #[error("the approval was reversed already")]
    AlreadyReversed,
    /// The business day was cleared (its clearing file exported): nothing more is booked
    /// into it or an earlier day.
    #[error("business day {0} is cleared: nothing more is booked into it")]
    DayCleared(time::Date),
    /// This positions file was booked already.
    #[error("this settlement was booked already")]
    AlreadySettled,
}

/// Why the schema could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    /// The database was written by a newer build; this build refuses to touch it.
    #[error("database schema version {found} is newer than this build's {supported}: upgrade authz")]
    NewerSchema {
        /// The highest version recorded in the database.
        found: i64,
        /// The highest version this build knows.
        supported: i64,
    },
    /// An applied migration's name differs from this build's migration of the same version.
    #[error("schema migration {version} in the database is not this build's migration")]
    Mismatch {
        /// The version whose name differs.
        version: i64,
    },
    /// The file is an SQLite database of something else.
    #[error("the database is not an MPS ledger")]
    ForeignDatabase,
    /// The database refused WAL mode.
    #[error("the database did not switch to WAL journal mode")]
    NotWal,
    /// A setting the ledger's durability rests on did not take on the writer connection.
    #[error("the ledger's writer connection has {setting}; it must be {required}: refusing to serve")]
    NotDurable {
        /// The setting as read back.
        setting: String,
        /// What it must be.
        required: &'static str,
    },
}

impl From<rusqlite::Error> for LedgerError {
    fn from(error: rusqlite::Error) -> Self {
        storage(error)
    }
}

/// Sorts a SQLite error: damage to the file is [`LedgerError::Corrupt`], a value of the wrong
/// type is corruption too (tables are STRICT, so only damage can produce one), a constraint
/// that fired is an invariant the code should have checked first, everything else is an
/// operating error that makes the ledger unavailable.
pub(crate) fn storage(error: rusqlite::Error) -> LedgerError {
    match &error {
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => LedgerError::Corrupt("a stored value has the wrong type"),
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DatabaseCorrupt => LedgerError::Corrupt("the database file is damaged"),
            ErrorCode::NotADatabase => LedgerError::Corrupt("the file is not an SQLite database"),
            ErrorCode::ConstraintViolation => LedgerError::Invariant("a database constraint refused the write"),
            _ => LedgerError::Unavailable(Unavailable::Storage(error)),
        },
        _ => LedgerError::Unavailable(Unavailable::Storage(error)),
    }
}

impl LedgerError {
    /// Whether the caller should answer 503 (the ledger could not be used at all).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_errors_are_sorted_by_cause() {
        let full = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
        assert!(storage(full).is_unavailable());
        let corrupt = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT), None);
        assert!(matches!(storage(corrupt), LedgerError::Corrupt(_)));
        let constraint =
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_CHECK), None);
        assert!(matches!(storage(constraint), LedgerError::Invariant(_)));
    }
}
