//! The ledger's SQLite schema as ordered migrations, and the connection settings every
//! connection gets (WAL, `synchronous=FULL`, foreign keys, busy timeout).
//!
//! Opening a database applies the migrations it lacks, each in its own transaction together
//! with its row in `schema_migrations`. A database from a newer build is refused, never
//! touched. Tables are STRICT, so a value of the wrong type can only come from damage.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::error::{LedgerError, MigrationError};

/// `PRAGMA application_id` of an MPS ledger ("MPSL").
const APPLICATION_ID: i64 = 0x4D50_534C;

/// One schema step.
pub(crate) struct Migration {
    /// Its version, 1, 2, ... in order.
    pub version: i64,
    /// A stable name, checked on open.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// Every migration of this build, in order. Append only: never edit one that has shipped.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "core ledger", sql: MIGRATION_1 },
    Migration { version: 2, name: "health checks and clearing index", sql: MIGRATION_2 },
    Migration { version: 3, name: "KEK version of each chain key", sql: MIGRATION_3 },
    Migration { version: 4, name: "reversals", sql: MIGRATION_4 },
    Migration { version: 5, name: "clearing files and settlements", sql: MIGRATION_5 },
    Migration { version: 6, name: "daily totals from an index", sql: MIGRATION_6 },
    Migration { version: 7, name: "internal balances from their postings", sql: MIGRATION_7 },
    Migration { version: 8, name: "running daily approved total", sql: MIGRATION_8 },
];

/// Each account keeps the total of its standing approvals (approved, not reversed) of one
/// business day, `approved_day`, kept by every booking that changes it: the daily limit reads one
/// row instead of summing the day's approvals, a sum whose cost grew with every approval of the
/// day (p99 +48 % over the 30-minute soak of 2026-12-01, at 1,240 approvals per account). The
/// backfill takes each account's latest day with a standing approval; an account without one
/// keeps no day and a total of zero. `queries::DAILY_APPROVED_TOTAL` stays the definition, and
/// the audit checks the running totals against it.
const MIGRATION_8: &str = r#"
ALTER TABLE accounts ADD COLUMN approved_day TEXT CHECK (approved_day IS NULL OR length(approved_day) = 10);
ALTER TABLE accounts ADD COLUMN approved_today INTEGER NOT NULL DEFAULT 0 CHECK (approved_today >= 0);
UPDATE accounts SET approved_day = (
    SELECT MAX(t.business_day) FROM transactions t
    WHERE t.account = accounts.account AND t.response_code = '00' AND t.reversal_id IS NULL
);
UPDATE accounts SET approved_today = (
    SELECT CAST(COALESCE(SUM(t.amount), 0) AS BIGINT) FROM transactions t
    WHERE t.account = accounts.account AND t.business_day = accounts.approved_day
      AND t.response_code = '00' AND t.reversal_id IS NULL
) WHERE approved_day IS NOT NULL;
"#;

/// The daily limit (DESIGN.md section 7 step 10) sums an account's approvals of the business
/// day twice per payment, in the decision and again in the write. Summed from this index alone
/// (the approvals that stand, with their amounts, next to each other), it costs a few pages
/// instead of one row lookup per approval of the day: the soak of 2026-12-01 saw that cost grow
/// with the day's approvals until the writer fell behind at 435 payments a second. The index it
/// replaces served nothing else.
const MIGRATION_6: &str = r#"
CREATE INDEX transactions_approved_by_account_day ON transactions (account, business_day, amount)
    WHERE response_code = '00' AND reversal_id IS NULL;
DROP INDEX transactions_by_account_day;
"#;

/// The bank's internal accounts (funding, each acquirer's settlement payable) no longer keep a
/// running balance: every approval credited the same payable row, so two instances sharing a
/// PostgreSQL ledger lost a serialization race on it whenever their groups overlapped (1,136
/// groups run again of 2,297 in a load test, and 503s when eight attempts did not suffice). Their
/// postings are the books; `internal_balances` sums them.
const MIGRATION_7: &str = r#"
ALTER TABLE internal_accounts DROP COLUMN balance;
"#;

/// Clearing and settlement (docs/CLEARING.md): each exported day's clearing file, byte for
/// byte with its JWS (a second export writes the same bytes; the next day's file hashes them);
/// each booked settlement, by the SHA-256 of its positions file (booked once); and a fourth
/// kind of journal entry, a settlement, which names no transaction. `journal_entries` is
/// rebuilt to widen its CHECKs, as in migration 4.
const MIGRATION_5: &str = r#"
PRAGMA defer_foreign_keys = ON;

CREATE TABLE clearing_files (
    business_day TEXT PRIMARY KEY NOT NULL CHECK (length(business_day) = 10),
    sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
    bytes BLOB NOT NULL,
    jws TEXT NOT NULL,
    exported_at TEXT NOT NULL
) STRICT;

CREATE TABLE settlements (
    positions_sha256 TEXT PRIMARY KEY NOT NULL CHECK (length(positions_sha256) = 64),
    booked_at TEXT NOT NULL
) STRICT;

-- The clearing export reads one business day's reversals.
CREATE INDEX reversals_approved_by_day ON reversals (business_day) WHERE response_code = '00';

CREATE TABLE journal_entries_v5 (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('opening', 'authorization', 'reversal', 'settlement')),
    txn_id BLOB REFERENCES transactions (txn_id),
    created_at TEXT NOT NULL,
    UNIQUE (txn_id, kind),
    CHECK ((kind IN ('opening', 'settlement')) = (txn_id IS NULL))
) STRICT;
INSERT INTO journal_entries_v5 (id, kind, txn_id, created_at)
    SELECT id, kind, txn_id, created_at FROM journal_entries;
DROP TABLE journal_entries;
ALTER TABLE journal_entries_v5 RENAME TO journal_entries;
"#;

/// Reversals (DESIGN.md section 6.1): every answered reversal is kept (a repeat, the same
/// request bytes, gets the same answer); an approval it undid names it; the journal gains a
/// third kind of entry, the original postings mirrored. `journal_entries` is rebuilt to widen
/// its CHECK (SQLite cannot alter one): postings keep pointing at the same entry ids, and the
/// foreign keys are checked at COMMIT (`defer_foreign_keys`).
const MIGRATION_4: &str = r#"
PRAGMA defer_foreign_keys = ON;

CREATE TABLE reversals (
    reversal_id BLOB PRIMARY KEY NOT NULL CHECK (length(reversal_id) = 16),
    request_digest BLOB NOT NULL UNIQUE CHECK (length(request_digest) = 32),
    merchant_id TEXT NOT NULL,
    order_no TEXT NOT NULL,
    original_txn_id BLOB REFERENCES transactions (txn_id),
    response_code TEXT NOT NULL CHECK (response_code IN ('00', '12', '25')),
    amount INTEGER NOT NULL CHECK (amount >= 0),
    currency INTEGER NOT NULL CHECK (currency BETWEEN 1 AND 999),
    reason TEXT NOT NULL CHECK (reason IN ('timeout', 'cancelled')),
    business_day TEXT NOT NULL,
    created_at TEXT NOT NULL,
    response_body BLOB NOT NULL,
    response_signature TEXT NOT NULL,
    CHECK (response_code <> '00' OR original_txn_id IS NOT NULL)
) STRICT;

-- An approval is undone at most once.
CREATE UNIQUE INDEX reversals_once ON reversals (original_txn_id)
    WHERE response_code = '00';

ALTER TABLE transactions ADD COLUMN reversal_id BLOB REFERENCES reversals (reversal_id);

-- A reversed approval frees its order number for a new payment.
DROP INDEX transactions_approved_order;
CREATE UNIQUE INDEX transactions_approved_order ON transactions (merchant_id, order_no)
    WHERE response_code = '00' AND reversal_id IS NULL;

CREATE TABLE journal_entries_v4 (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('opening', 'authorization', 'reversal')),
    txn_id BLOB REFERENCES transactions (txn_id),
    created_at TEXT NOT NULL,
    UNIQUE (txn_id, kind),
    CHECK ((kind = 'opening') = (txn_id IS NULL))
) STRICT;
INSERT INTO journal_entries_v4 (id, kind, txn_id, created_at)
    SELECT id, kind, txn_id, created_at FROM journal_entries;
DROP TABLE journal_entries;
ALTER TABLE journal_entries_v4 RENAME TO journal_entries;
"#;

/// KEK rotation (docs/HSM.md): every stored chain key names the KEK version it is wrapped
/// under. Chain keys stored before this migration are under version 1 (`mps-kek`).
const MIGRATION_3: &str = r#"
ALTER TABLE sims ADD COLUMN kek_version INTEGER NOT NULL DEFAULT 1 CHECK (kek_version BETWEEN 1 AND 999);
CREATE INDEX sims_by_kek_version ON sims (kek_version);
"#;

/// The schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Checks what a database has applied (`applied`, in version order) against this build's
/// `migrations`, and returns the highest applied version. A newer version is
/// [`MigrationError::NewerSchema`], an applied migration whose name is not this build's
/// [`MigrationError::Mismatch`]. Both backends' migrations go through it.
pub(crate) fn check_applied(applied: &[(i64, String)], migrations: &[Migration]) -> Result<i64, LedgerError> {
    let found = applied.last().map_or(0, |(version, _)| *version);
    let supported = migrations.last().map_or(0, |m| m.version);
    if found > supported {
        return Err(LedgerError::Migration(MigrationError::NewerSchema { found, supported }));
    }
    for (version, name) in applied {
        let known = migrations.iter().find(|m| m.version == *version);
        if known.is_none_or(|m| m.name != name) {
            return Err(LedgerError::Migration(MigrationError::Mismatch { version: *version }));
        }
    }
    Ok(found)
}

const MIGRATION_1: &str = r#"
CREATE TABLE accounts (
    account TEXT PRIMARY KEY NOT NULL CHECK (length(account) BETWEEN 12 AND 19),
    holder_name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('debit', 'credit')),
    currency INTEGER NOT NULL CHECK (currency BETWEEN 1 AND 999),
    credit_limit INTEGER NOT NULL CHECK (credit_limit >= 0),
    balance INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    password_verification_value BLOB NOT NULL CHECK (length(password_verification_value) = 32),
    password_failures INTEGER NOT NULL DEFAULT 0 CHECK (password_failures >= 0),
    password_locked INTEGER NOT NULL DEFAULT 0 CHECK (password_locked IN (0, 1)),
    per_txn_limit INTEGER NOT NULL CHECK (per_txn_limit >= 0),
    daily_limit INTEGER NOT NULL CHECK (daily_limit >= 0),
    created_at TEXT NOT NULL,
    CHECK (kind = 'credit' OR credit_limit = 0),
    CHECK (kind = 'credit' OR balance >= 0),
    CHECK (kind = 'debit' OR balance >= -credit_limit)
) STRICT;

CREATE TABLE internal_accounts (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('funding', 'settlement_payable')),
    acquirer_iin TEXT NOT NULL,
    currency INTEGER NOT NULL CHECK (currency BETWEEN 1 AND 999),
    balance INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    UNIQUE (kind, acquirer_iin, currency),
    CHECK ((kind = 'funding') = (acquirer_iin = ''))
) STRICT;

CREATE TABLE sims (
    sim_id TEXT PRIMARY KEY NOT NULL CHECK (length(sim_id) BETWEEN 19 AND 20),
    iin TEXT NOT NULL CHECK (length(iin) = 6),
    status TEXT NOT NULL CHECK (status IN ('active', 'blocked')),
    counter INTEGER NOT NULL CHECK (counter >= 0),
    wrapped_chain_key BLOB NOT NULL CHECK (length(wrapped_chain_key) = 40),
    next_rsn BLOB NOT NULL CHECK (length(next_rsn) = 8),
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE sim_accounts (
    sim_id TEXT NOT NULL REFERENCES sims (sim_id),
    account TEXT NOT NULL REFERENCES accounts (account),
    PRIMARY KEY (sim_id, account)
) STRICT, WITHOUT ROWID;

CREATE INDEX sim_accounts_by_account ON sim_accounts (account);

-- account is the number from the decrypted secret: on a 57 decline it may be unknown to the
-- bank, so it carries no foreign key.
CREATE TABLE transactions (
    txn_id BLOB PRIMARY KEY NOT NULL CHECK (length(txn_id) = 16),
    sim_id TEXT NOT NULL REFERENCES sims (sim_id),
    counter INTEGER NOT NULL CHECK (counter >= 1),
    account TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    order_no TEXT NOT NULL,
    acquirer_iin TEXT NOT NULL CHECK (length(acquirer_iin) = 6),
    merchant_account TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount >= 0),
    currency INTEGER NOT NULL CHECK (currency BETWEEN 1 AND 999),
    response_code TEXT NOT NULL CHECK (length(response_code) = 2),
    auth_code TEXT CHECK (auth_code IS NULL OR length(auth_code) = 6),
    business_day TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (sim_id, counter),
    CHECK ((response_code = '00') = (auth_code IS NOT NULL))
) STRICT;

-- DESIGN.md section 7 step 11: one approval per merchant order.
CREATE UNIQUE INDEX transactions_approved_order ON transactions (merchant_id, order_no)
    WHERE response_code = '00';
CREATE INDEX transactions_by_account_day ON transactions (account, business_day);

CREATE TABLE journal_entries (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('opening', 'authorization')),
    txn_id BLOB UNIQUE REFERENCES transactions (txn_id),
    created_at TEXT NOT NULL,
    CHECK ((kind = 'authorization') = (txn_id IS NOT NULL))
) STRICT;

-- Exactly one of account (a customer account) and internal_account_id is set.
CREATE TABLE postings (
    id INTEGER PRIMARY KEY,
    entry_id INTEGER NOT NULL REFERENCES journal_entries (id),
    account TEXT REFERENCES accounts (account),
    internal_account_id INTEGER REFERENCES internal_accounts (id),
    amount INTEGER NOT NULL CHECK (amount <> 0),
    currency INTEGER NOT NULL CHECK (currency BETWEEN 1 AND 999),
    CHECK ((account IS NULL) <> (internal_account_id IS NULL))
) STRICT;

CREATE INDEX postings_by_entry ON postings (entry_id);
CREATE INDEX postings_by_account ON postings (account, id) WHERE account IS NOT NULL;
CREATE INDEX postings_by_internal_account ON postings (internal_account_id)
    WHERE internal_account_id IS NOT NULL;

CREATE TABLE sim_answers (
    sim_id TEXT PRIMARY KEY NOT NULL REFERENCES sims (sim_id),
    counter INTEGER NOT NULL CHECK (counter >= 1),
    txn_id BLOB NOT NULL REFERENCES transactions (txn_id),
    packet BLOB NOT NULL CHECK (length(packet) = 113),
    response_body BLOB NOT NULL,
    response_signature TEXT NOT NULL
) STRICT;
"#;

const MIGRATION_2: &str = r#"
CREATE TABLE health_checks (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at TEXT NOT NULL
) STRICT;

-- The clearing export reads one business day's approvals.
CREATE INDEX transactions_approved_by_day ON transactions (business_day) WHERE response_code = '00';
"#;

/// Prepared statements each connection keeps (`prepare_cached`). rusqlite keeps 16 unless told:
/// fewer than the distinct statements of one booking, so that, used in a round, each evicted
/// the next and every statement was compiled again at every booking.
const STATEMENTS_CACHED: usize = 128;

/// Settings of the writer connection: WAL, full fsync on commit, foreign keys, busy timeout.
pub(crate) fn configure_writer(conn: &Connection, busy_timeout: std::time::Duration) -> Result<(), LedgerError> {
    conn.busy_timeout(busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LedgerError::Migration(MigrationError::NotWal));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "trusted_schema", "OFF")?;
    // A group runs each command under a savepoint, so that a failed one is undone alone; the
    // savepoint keeps the original of every page its command changes. SQLite keeps that
    // journal in memory up to 64 KiB and then spills it into a temporary file, and one booking
    // changes more than fifteen pages: every group created, wrote (two calls per page) and
    // deleted a file. In memory, the journal is a copy. Its size is bounded by the group's.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    check_durable(conn)
}

/// Reads back what an answer's durability rests on: WAL journal and a full fsync at every
/// commit. A writer connection without them must not serve: an approval could be answered
/// and then lost in a power cut.
pub(crate) fn check_durable(conn: &Connection) -> Result<(), LedgerError> {
    let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LedgerError::Migration(MigrationError::NotDurable {
            setting: format!("journal_mode={mode}"),
            required: "journal_mode=wal",
        }));
    }
    // 2 is FULL (3 is EXTRA, stronger still).
    let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |row| row.get(0))?;
    if synchronous < 2 {
        return Err(LedgerError::Migration(MigrationError::NotDurable {
            setting: format!("synchronous={synchronous}"),
            required: "synchronous=FULL (2)",
        }));
    }
    Ok(())
}

/// Settings of a read connection: read only, foreign keys (for consistency of plans), busy
/// timeout.
pub(crate) fn configure_reader(conn: &Connection, busy_timeout: std::time::Duration) -> Result<(), LedgerError> {
    conn.busy_timeout(busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
    conn.pragma_update(None, "query_only", "ON")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "trusted_schema", "OFF")?;
    Ok(())
}

/// Brings the database to this build's schema (see [`migrate_to`]).
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), LedgerError> {
    migrate_to(conn, latest_version())
}

/// Applies the migrations up to `target`. Refuses a database written by a newer build, one
/// whose applied migrations are not this build's, and a foreign SQLite database.
pub(crate) fn migrate_to(conn: &mut Connection, target: i64) -> Result<(), LedgerError> {
    let applied = applied_migrations(conn)?;
    let found = check_applied(&applied, MIGRATIONS)?;
    for migration in MIGRATIONS.iter().filter(|m| m.version > found && m.version <= target) {
        apply(conn, migration)?;
        tracing::info!(version = migration.version, name = migration.name, "ledger schema migrated");
    }
    Ok(())
}

fn apply(conn: &mut Connection, migration: &Migration) -> Result<(), LedgerError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(migration.sql)?;
    tx.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
        params![migration.version, migration.name, super::rows::now_text()?],
    )?;
    tx.commit()?;
    Ok(())
}

/// The applied migrations in version order; creates the bookkeeping table in an empty
/// database and refuses a database that has tables but is not a ledger.
fn applied_migrations(conn: &mut Connection) -> Result<Vec<(i64, String)>, LedgerError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_table: Option<i64> = tx
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'", [], |row| {
            row.get(0)
        })
        .optional()?;
    let application_id: i64 = tx.pragma_query_value(None, "application_id", |row| row.get(0))?;
    if has_table.is_none() {
        let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))?;
        if tables > 0 || application_id != 0 {
            return Err(LedgerError::Migration(MigrationError::ForeignDatabase));
        }
        tx.execute_batch(
            "CREATE TABLE schema_migrations (
                version INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at TEXT NOT NULL
            ) STRICT;",
        )?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    } else if application_id != APPLICATION_ID {
        return Err(LedgerError::Migration(MigrationError::ForeignDatabase));
    }
    let applied = {
        let mut stmt = tx.prepare("SELECT version, name FROM schema_migrations ORDER BY version")?;
        let rows = stmt.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    tx.commit()?;
    Ok(applied)
}

/// The highest applied version.
pub(crate) fn current_version(conn: &Connection) -> Result<i64, LedgerError> {
    Ok(conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |row| row.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Ledger, LedgerConfig};

    fn open_raw(path: &std::path::Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        configure_writer(&conn, std::time::Duration::from_secs(1)).unwrap();
        conn
    }

    #[test]
    fn the_writer_connection_is_durable_and_a_weaker_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_raw(&dir.path().join("ledger.db"));
        let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |row| row.get(0)).unwrap();
        assert_eq!(synchronous, 2, "FULL");
        let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let temp_store: i64 = conn.pragma_query_value(None, "temp_store", |row| row.get(0)).unwrap();
        assert_eq!(temp_store, 2, "savepoint journals in memory, not spilled to a file per group");
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        let error = check_durable(&conn).unwrap_err().to_string();
        assert!(error.contains("synchronous=1"), "{error}");
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn.pragma_update_and_check(None, "journal_mode", "delete", |row| row.get::<_, String>(0)).unwrap();
        let error = check_durable(&conn).unwrap_err().to_string();
        assert!(error.contains("journal_mode=delete"), "{error}");
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "migration {} out of order", m.name);
        }
    }

    /// The daily limit's sum (`queries::daily_approved_total`) reads the index alone: a plan
    /// that looks up a row per approval of the day costs more with every payment of the day.
    #[test]
    fn the_daily_total_is_summed_from_its_index_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_raw(&dir.path().join("ledger.db"));
        migrate(&mut conn).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", super::super::queries::DAILY_APPROVED_TOTAL))
            .unwrap()
            .query_map(["4000120000000001", "2026-12-01"], |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(plan.len(), 1, "{plan:?}");
        assert!(plan[0].contains("transactions_approved_by_account_day"), "{plan:?}");
    }

    /// Migration 8 on a ledger made at version 7: every account's running daily total is its
    /// latest standing day's sum, and answers every day as the sum does.
    #[test]
    fn the_running_daily_totals_are_backfilled_from_the_approvals() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_raw(&dir.path().join("ledger.db"));
        migrate_to(&mut conn, 7).unwrap();
        crate::ledger::testing::fill_version_7(&conn);
        migrate(&mut conn).unwrap();
        assert_eq!(current_version(&conn).unwrap(), 8);
        crate::ledger::testing::check_version_7_backfill(&conn);
    }

    #[test]
    fn empty_database_migrates_to_latest_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let mut conn = open_raw(&path);
        migrate(&mut conn).unwrap();
        assert_eq!(current_version(&conn).unwrap(), latest_version());
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN
                 ('accounts', 'internal_accounts', 'sims', 'sim_accounts', 'transactions',
                  'journal_entries', 'postings', 'sim_answers', 'health_checks')",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 9);
        // A second run applies nothing and fails nothing.
        migrate(&mut conn).unwrap();
        let rows: i64 = conn.query_row("SELECT count(*) FROM schema_migrations", [], |row| row.get(0)).unwrap();
        assert_eq!(rows, latest_version());
        let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn an_older_database_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        {
            let mut conn = open_raw(&path);
            migrate_to(&mut conn, 1).unwrap();
            assert_eq!(current_version(&conn).unwrap(), 1);
        }
        let ledger = Ledger::open(&path, LedgerConfig::default()).unwrap();
        ledger.health_check().await.unwrap();
        ledger.close().await;
        let conn = open_raw(&path);
        assert_eq!(current_version(&conn).unwrap(), latest_version());
        let checks: i64 = conn.query_row("SELECT count(*) FROM health_checks", [], |row| row.get(0)).unwrap();
        assert_eq!(checks, 1);
    }

    #[test]
    fn a_newer_database_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        {
            let mut conn = open_raw(&path);
            migrate(&mut conn).unwrap();
            conn.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', '2099-01-01T00:00:00Z')", [])
                .unwrap();
        }
        let err = Ledger::open(&path, LedgerConfig::default()).unwrap_err();
        assert!(matches!(err, LedgerError::Migration(MigrationError::NewerSchema { found: 999, .. })), "got {err:?}");
        let conn = open_raw(&path);
        assert_eq!(current_version(&conn).unwrap(), 999);
    }

    #[test]
    fn an_edited_migration_and_a_foreign_database_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let edited = dir.path().join("edited.db");
        {
            let mut conn = open_raw(&edited);
            migrate(&mut conn).unwrap();
            conn.execute("UPDATE schema_migrations SET name = 'something else' WHERE version = 1", []).unwrap();
        }
        let err = Ledger::open(&edited, LedgerConfig::default()).unwrap_err();
        assert!(matches!(err, LedgerError::Migration(MigrationError::Mismatch { version: 1 })), "got {err:?}");

        let foreign = dir.path().join("foreign.db");
        {
            let conn = open_raw(&foreign);
            conn.execute_batch("CREATE TABLE photos (id INTEGER PRIMARY KEY)").unwrap();
        }
        let err = Ledger::open(&foreign, LedgerConfig::default()).unwrap_err();
        assert!(matches!(err, LedgerError::Migration(MigrationError::ForeignDatabase)), "got {err:?}");
    }
}
