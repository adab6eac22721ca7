//! Ledger limits: queue, batch, read pool, timeouts and sizes, each with a safe default.
//!
//! Part of the `[ledger]` table of the authz TOML config; every bound of the ledger lives here so
//! that nothing in it grows without a limit.

use std::time::Duration;

use serde::Deserialize;

use super::error::LedgerError;

/// Bounds and timeouts of the ledger. Every field has a default; unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// Commands waiting for the writer thread at most (the bounded channel's capacity).
    pub queue_capacity: usize,
    /// Commands committed together in one SQLite transaction (one fsync) at most.
    pub batch_max: usize,
    /// Read-only connections in the read pool.
    pub read_connections: usize,
    /// How long SQLite waits for a lock held by another connection or process.
    pub busy_timeout_ms: u64,
    /// How long a caller waits for room in a full writer queue before giving up (Unavailable).
    pub enqueue_timeout_ms: u64,
    /// How long a caller of an administrative write (account, SIM status, rewrap) waits for
    /// it to be committed before giving up (Unavailable; it may still commit). Bookings of
    /// authorizations and reversals are waited for to completion instead.
    pub write_timeout_ms: u64,
    /// How long a reader waits for a free read connection.
    pub read_timeout_ms: u64,
    /// How long the readiness check may take.
    pub health_timeout_ms: u64,
    /// Most lines one statement query may return.
    pub statement_lines_max: usize,
    /// Most bytes of a stored answer (HTTP body plus signature header) kept for retransmission.
    pub stored_answer_bytes_max: usize,
    /// SQLite: how often the checkpoint thread copies the WAL into the database file, off the
    /// commit path (`checkpoint.rs`); 0 leaves checkpoints to SQLite, inside a COMMIT.
    pub checkpoint_interval_ms: u64,
    /// SQLite: the WAL size at which the checkpoint thread starts it over (RESTART). Each
    /// restart stops the writer for a few milliseconds, longer as the database grows
    /// (`ledger_checkpoint_restart_seconds_total`; docs/LEDGER.md, "Checkpoints").
    pub wal_restart_bytes: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            batch_max: 64,
            read_connections: 4,
            busy_timeout_ms: 5_000,
            enqueue_timeout_ms: 1_000,
            write_timeout_ms: 10_000,
            read_timeout_ms: 2_000,
            health_timeout_ms: 2_000,
            statement_lines_max: 1_000,
            stored_answer_bytes_max: 64 * 1024,
            checkpoint_interval_ms: 100,
            wal_restart_bytes: 64 * 1024 * 1024,
        }
    }
}

impl LedgerConfig {
    /// Largest accepted `batch_max`: a batch holds the write lock for all its commands.
    pub const BATCH_MAX_LIMIT: usize = 4096;
    /// Largest accepted read pool.
    pub const READ_CONNECTIONS_LIMIT: usize = 64;

    /// Refuses zero sizes, zero timeouts and absurd batch or pool sizes.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let checks: [(bool, &'static str); 12] = [
            (self.queue_capacity >= 1, "ledger.queue_capacity must be at least 1"),
            ((1..=Self::BATCH_MAX_LIMIT).contains(&self.batch_max), "ledger.batch_max must be 1 to 4096"),
            (
                (1..=Self::READ_CONNECTIONS_LIMIT).contains(&self.read_connections),
                "ledger.read_connections must be 1 to 64",
            ),
            (self.busy_timeout_ms >= 1, "ledger.busy_timeout_ms must be at least 1"),
            (self.enqueue_timeout_ms >= 1, "ledger.enqueue_timeout_ms must be at least 1"),
            (self.write_timeout_ms >= 1, "ledger.write_timeout_ms must be at least 1"),
            (self.read_timeout_ms >= 1, "ledger.read_timeout_ms must be at least 1"),
            (self.health_timeout_ms >= 1, "ledger.health_timeout_ms must be at least 1"),
            (self.statement_lines_max >= 1, "ledger.statement_lines_max must be at least 1"),
            (self.stored_answer_bytes_max >= 1024, "ledger.stored_answer_bytes_max must be at least 1024"),
            (self.checkpoint_interval_ms <= 60_000, "ledger.checkpoint_interval_ms must be 0 to 60000"),
            (
                (1024 * 1024..=1024 * 1024 * 1024).contains(&self.wal_restart_bytes),
                "ledger.wal_restart_bytes must be 1 MiB to 1 GiB",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, what)) => Err(LedgerError::InvalidInput(what)),
            None => Ok(()),
        }
    }

    pub(crate) fn busy_timeout(&self) -> Duration {
        Duration::from_millis(self.busy_timeout_ms)
    }

    pub(crate) fn enqueue_timeout(&self) -> Duration {
        Duration::from_millis(self.enqueue_timeout_ms)
    }

    pub(crate) fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    pub(crate) fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }

    pub(crate) fn health_timeout(&self) -> Duration {
        Duration::from_millis(self.health_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_unknown_keys_refused() {
        LedgerConfig::default().validate().unwrap();
        let parsed: LedgerConfig = toml::from_str("batch_max = 8").unwrap();
        assert_eq!(parsed.batch_max, 8);
        assert_eq!(parsed.read_connections, LedgerConfig::default().read_connections);
        assert!(toml::from_str::<LedgerConfig>("batch_size = 8").is_err());
    }

    #[test]
    fn zero_and_absurd_bounds_are_refused() {
        let zero_batch = LedgerConfig { batch_max: 0, ..LedgerConfig::default() };
        assert!(matches!(zero_batch.validate(), Err(LedgerError::InvalidInput(_))));
        let huge_pool = LedgerConfig { read_connections: 1000, ..LedgerConfig::default() };
        assert!(matches!(huge_pool.validate(), Err(LedgerError::InvalidInput(_))));
        let no_queue = LedgerConfig { queue_capacity: 0, ..LedgerConfig::default() };
        assert!(matches!(no_queue.validate(), Err(LedgerError::InvalidInput(_))));
    }
}
