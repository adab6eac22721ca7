//! The ledger's PostgreSQL schema: the same migrations as `schema.rs` (same versions, names,
//! tables, columns, CHECKs, unique keys and indexes) in PostgreSQL's DDL, applied under an
//! advisory lock so that authz instances starting together against one database do not race.
//!
//! Types map exactly (`sql.rs`): INTEGER is BIGINT, TEXT is TEXT, BLOB is BYTEA. SQLite's
//! `INTEGER PRIMARY KEY` row ids are identity columns (`GENERATED ALWAYS`: an id written by hand
//! would leave the sequence behind, so it is refused outright). Where SQLite rebuilds
//! `journal_entries` to widen a CHECK (migrations 4 and 5), PostgreSQL alters the named
//! constraint. `schema_migrations` carries a table comment that marks the schema as an MPS
//! ledger, as SQLite's `application_id` marks the file; a schema with other tables and no
//! marked bookkeeping table is refused, and so is one from a newer build.

use super::error::{LedgerError, MigrationError};
use super::postgres::{Isolation, PgConnection, PgTransaction};
use super::schema::{Migration, check_applied};
use super::sql::{Sql, args};

/// Key of the advisory lock every migration transaction takes first ("MPSL", as SQLite's
/// `application_id`): instances migrating at once take turns, and each re-reads what the one
/// before it applied.
const ADVISORY_LOCK_KEY: i64 = 0x4D50_534C;

/// The comment on `schema_migrations` that marks a schema as an MPS ledger.
const MARKER: &str = "MPSL: MPS ledger schema migrations";

/// Every migration of this build, in order: the PostgreSQL twins of `schema::MIGRATIONS`, same
/// versions and names (a test keeps them in step). Append only: never edit one that has shipped.
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

const BOOKKEEPING: &str = r#"
CREATE TABLE schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
);
COMMENT ON TABLE schema_migrations IS 'MPSL: MPS ledger schema migrations';
"#;

const MIGRATION_1: &str = r#"
CREATE TABLE accounts (
    account TEXT PRIMARY KEY NOT NULL CHECK (length(account) BETWEEN 12 AND 19),
    holder_name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('debit', 'credit')),
    currency BIGINT NOT NULL CHECK (currency BETWEEN 1 AND 999),
    credit_limit BIGINT NOT NULL CHECK (credit_limit >= 0),
    balance BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    password_verification_value BYTEA NOT NULL CHECK (length(password_verification_value) = 32),
    password_failures BIGINT NOT NULL DEFAULT 0 CHECK (password_failures >= 0),
    password_locked BIGINT NOT NULL DEFAULT 0 CHECK (password_locked IN (0, 1)),
    per_txn_limit BIGINT NOT NULL CHECK (per_txn_limit >= 0),
    daily_limit BIGINT NOT NULL CHECK (daily_limit >= 0),
    created_at TEXT NOT NULL,
    CHECK (kind = 'credit' OR credit_limit = 0),
    CHECK (kind = 'credit' OR balance >= 0),
    CHECK (kind = 'debit' OR balance >= -credit_limit)
);

CREATE TABLE internal_accounts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('funding', 'settlement_payable')),
    acquirer_iin TEXT NOT NULL,
    currency BIGINT NOT NULL CHECK (currency BETWEEN 1 AND 999),
    balance BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    UNIQUE (kind, acquirer_iin, currency),
    CHECK ((kind = 'funding') = (acquirer_iin = ''))
);

CREATE TABLE sims (
    sim_id TEXT PRIMARY KEY NOT NULL CHECK (length(sim_id) BETWEEN 19 AND 20),
    iin TEXT NOT NULL CHECK (length(iin) = 6),
    status TEXT NOT NULL CHECK (status IN ('active', 'blocked')),
    counter BIGINT NOT NULL CHECK (counter >= 0),
    wrapped_chain_key BYTEA NOT NULL CHECK (length(wrapped_chain_key) = 40),
    next_rsn BYTEA NOT NULL CHECK (length(next_rsn) = 8),
    created_at TEXT NOT NULL
);

CREATE TABLE sim_accounts (
    sim_id TEXT NOT NULL REFERENCES sims (sim_id),
    account TEXT NOT NULL REFERENCES accounts (account),
    PRIMARY KEY (sim_id, account)
);

CREATE INDEX sim_accounts_by_account ON sim_accounts (account);

-- account is the number from the decrypted secret: on a 57 decline it may be unknown to the
-- bank, so it carries no foreign key.
CREATE TABLE transactions (
    txn_id BYTEA PRIMARY KEY NOT NULL CHECK (length(txn_id) = 16),
    sim_id TEXT NOT NULL REFERENCES sims (sim_id),
    counter BIGINT NOT NULL CHECK (counter >= 1),
    account TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    order_no TEXT NOT NULL,
    acquirer_iin TEXT NOT NULL CHECK (length(acquirer_iin) = 6),
    merchant_account TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount >= 0),
    currency BIGINT NOT NULL CHECK (currency BETWEEN 1 AND 999),
    response_code TEXT NOT NULL CHECK (length(response_code) = 2),
    auth_code TEXT CHECK (auth_code IS NULL OR length(auth_code) = 6),
    business_day TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (sim_id, counter),
    CHECK ((response_code = '00') = (auth_code IS NOT NULL))
);

-- DESIGN.md section 7 step 11: one approval per merchant order.
CREATE UNIQUE INDEX transactions_approved_order ON transactions (merchant_id, order_no)
    WHERE response_code = '00';
CREATE INDEX transactions_by_account_day ON transactions (account, business_day);

-- The constraints that migrations 4 and 5 widen are named, so that they can be dropped.
CREATE TABLE journal_entries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL CONSTRAINT journal_entries_kind_check CHECK (kind IN ('opening', 'authorization')),
    txn_id BYTEA CONSTRAINT journal_entries_txn_id_key UNIQUE REFERENCES transactions (txn_id),
    created_at TEXT NOT NULL,
    CONSTRAINT journal_entries_txn_check CHECK ((kind = 'authorization') = (txn_id IS NOT NULL))
);

-- Exactly one of account (a customer account) and internal_account_id is set.
CREATE TABLE postings (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_id BIGINT NOT NULL REFERENCES journal_entries (id),
    account TEXT REFERENCES accounts (account),
    internal_account_id BIGINT REFERENCES internal_accounts (id),
    amount BIGINT NOT NULL CHECK (amount <> 0),
    currency BIGINT NOT NULL CHECK (currency BETWEEN 1 AND 999),
    CHECK ((account IS NULL) <> (internal_account_id IS NULL))
);

CREATE INDEX postings_by_entry ON postings (entry_id);
CREATE INDEX postings_by_account ON postings (account, id) WHERE account IS NOT NULL;
CREATE INDEX postings_by_internal_account ON postings (internal_account_id)
    WHERE internal_account_id IS NOT NULL;

CREATE TABLE sim_answers (
    sim_id TEXT PRIMARY KEY NOT NULL REFERENCES sims (sim_id),
    counter BIGINT NOT NULL CHECK (counter >= 1),
    txn_id BYTEA NOT NULL REFERENCES transactions (txn_id),
    packet BYTEA NOT NULL CHECK (length(packet) = 113),
    response_body BYTEA NOT NULL,
    response_signature TEXT NOT NULL
);
"#;

const MIGRATION_2: &str = r#"
CREATE TABLE health_checks (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    checked_at TEXT NOT NULL
);

-- The clearing export reads one business day's approvals.
CREATE INDEX transactions_approved_by_day ON transactions (business_day) WHERE response_code = '00';
"#;

const MIGRATION_3: &str = r#"
ALTER TABLE sims ADD COLUMN kek_version BIGINT NOT NULL DEFAULT 1 CHECK (kek_version BETWEEN 1 AND 999);
CREATE INDEX sims_by_kek_version ON sims (kek_version);
"#;

/// Reversals; `journal_entries` gains the kind `reversal` and its unique key becomes
/// (txn_id, kind), as in SQLite's rebuild of the table.
const MIGRATION_4: &str = r#"
CREATE TABLE reversals (
    reversal_id BYTEA PRIMARY KEY NOT NULL CHECK (length(reversal_id) = 16),
    request_digest BYTEA NOT NULL UNIQUE CHECK (length(request_digest) = 32),
    merchant_id TEXT NOT NULL,
    order_no TEXT NOT NULL,
    original_txn_id BYTEA REFERENCES transactions (txn_id),
    response_code TEXT NOT NULL CHECK (response_code IN ('00', '12', '25')),
    amount BIGINT NOT NULL CHECK (amount >= 0),
    currency BIGINT NOT NULL CHECK (currency BETWEEN 1 AND 999),
    reason TEXT NOT NULL CHECK (reason IN ('timeout', 'cancelled')),
    business_day TEXT NOT NULL,
    created_at TEXT NOT NULL,
    response_body BYTEA NOT NULL,
    response_signature TEXT NOT NULL,
    CHECK (response_code <> '00' OR original_txn_id IS NOT NULL)
);

-- An approval is undone at most once.
CREATE UNIQUE INDEX reversals_once ON reversals (original_txn_id)
    WHERE response_code = '00';

ALTER TABLE transactions ADD COLUMN reversal_id BYTEA REFERENCES reversals (reversal_id);

-- A reversed approval frees its order number for a new payment.
DROP INDEX transactions_approved_order;
CREATE UNIQUE INDEX transactions_approved_order ON transactions (merchant_id, order_no)
    WHERE response_code = '00' AND reversal_id IS NULL;

ALTER TABLE journal_entries
    DROP CONSTRAINT journal_entries_kind_check,
    DROP CONSTRAINT journal_entries_txn_check,
    DROP CONSTRAINT journal_entries_txn_id_key,
    ADD CONSTRAINT journal_entries_kind_check CHECK (kind IN ('opening', 'authorization', 'reversal')),
    ADD CONSTRAINT journal_entries_txn_check CHECK ((kind = 'opening') = (txn_id IS NULL)),
    ADD CONSTRAINT journal_entries_txn_id_kind_key UNIQUE (txn_id, kind);
"#;

/// Clearing files and settlements; `journal_entries` gains the kind `settlement`, which names
/// no transaction.
const MIGRATION_5: &str = r#"
CREATE TABLE clearing_files (
    business_day TEXT PRIMARY KEY NOT NULL CHECK (length(business_day) = 10),
    sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
    bytes BYTEA NOT NULL,
    jws TEXT NOT NULL,
    exported_at TEXT NOT NULL
);

CREATE TABLE settlements (
    positions_sha256 TEXT PRIMARY KEY NOT NULL CHECK (length(positions_sha256) = 64),
    booked_at TEXT NOT NULL
);

-- The clearing export reads one business day's reversals.
CREATE INDEX reversals_approved_by_day ON reversals (business_day) WHERE response_code = '00';

ALTER TABLE journal_entries
    DROP CONSTRAINT journal_entries_kind_check,
    DROP CONSTRAINT journal_entries_txn_check,
    ADD CONSTRAINT journal_entries_kind_check
        CHECK (kind IN ('opening', 'authorization', 'reversal', 'settlement')),
    ADD CONSTRAINT journal_entries_txn_check CHECK ((kind IN ('opening', 'settlement')) = (txn_id IS NULL));
"#;

/// A day's approved total of an account is read from this index alone.
const MIGRATION_6: &str = r#"
CREATE INDEX transactions_approved_by_account_day ON transactions (account, business_day, amount)
    WHERE response_code = '00' AND reversal_id IS NULL;
DROP INDEX transactions_by_account_day;
"#;

/// Internal accounts keep no running balance: their postings are the books.
const MIGRATION_7: &str = r#"
ALTER TABLE internal_accounts DROP COLUMN balance;
"#;

/// Each account's running total of its standing approvals of one business day, backfilled from
/// its latest day with a standing approval (see `schema.rs`).
const MIGRATION_8: &str = r#"
ALTER TABLE accounts
    ADD COLUMN approved_day TEXT CHECK (approved_day IS NULL OR length(approved_day) = 10),
    ADD COLUMN approved_today BIGINT NOT NULL DEFAULT 0 CHECK (approved_today >= 0);
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

/// The schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the database to this build's schema (see [`migrate_to`]).
pub(crate) fn migrate(conn: &mut PgConnection) -> Result<(), LedgerError> {
    migrate_to(conn, latest_version())
}

/// Applies the migrations up to `target`, each in its own transaction together with its row in
/// `schema_migrations`, every transaction under the advisory lock. Refuses a database written
/// by a newer build, one whose applied migrations are not this build's, and a schema that holds
/// other tables but is not a ledger.
pub(crate) fn migrate_to(conn: &mut PgConnection, target: i64) -> Result<(), LedgerError> {
    // One migration per round, plus the round that finds nothing left to do.
    for _ in 0..=MIGRATIONS.len() {
        let tx = conn.begin(Isolation::ReadCommitted)?;
        // Returns void, so `execute` (no row is converted).
        tx.execute("SELECT pg_advisory_xact_lock(?1)", args![ADVISORY_LOCK_KEY])?;
        let found = checked_version(&tx)?;
        let Some(next) = MIGRATIONS.iter().find(|m| m.version > found && m.version <= target) else {
            return tx.commit();
        };
        tx.batch_execute(next.sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            args![next.version, next.name, &super::rows::now_text()?],
        )?;
        tx.commit()?;
        tracing::info!(version = next.version, name = next.name, "ledger schema migrated (PostgreSQL)");
    }
    Err(LedgerError::Invariant("the PostgreSQL migrations did not finish in one round per migration"))
}

/// The highest applied version, after checking that every applied migration is this build's;
/// creates the bookkeeping table in an empty schema.
fn checked_version(tx: &PgTransaction<'_>) -> Result<i64, LedgerError> {
    check_applied(&applied_migrations(tx)?, MIGRATIONS)
}

/// The applied migrations in version order. An empty schema gets the marked bookkeeping table;
/// a schema with tables but no marked `schema_migrations` is not a ledger.
fn applied_migrations(tx: &PgTransaction<'_>) -> Result<Vec<(i64, String)>, LedgerError> {
    let marker = tx.query_opt(
        "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relname = 'schema_migrations' AND c.relkind = 'r'",
        args![],
    )?;
    match marker {
        Some(row) => {
            if row.get::<Option<String>>(0, "schema_migrations.comment")?.as_deref() != Some(MARKER) {
                return Err(LedgerError::Migration(MigrationError::ForeignDatabase));
            }
        }
        None => {
            let tables = tx
                .query_one(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
                    args![],
                    "information_schema.tables",
                )?
                .get::<i64>(0, "information_schema.tables")?;
            if tables > 0 {
                return Err(LedgerError::Migration(MigrationError::ForeignDatabase));
            }
            tx.batch_execute(BOOKKEEPING)?;
        }
    }
    let rows = tx.query("SELECT version, name FROM schema_migrations ORDER BY version", args![])?;
    rows.iter()
        .map(|row| Ok((row.get(0, "schema_migrations.version")?, row.get(1, "schema_migrations.name")?)))
        .collect()
}

/// The highest applied version.
pub(crate) fn current_version(conn: &PgConnection) -> Result<i64, LedgerError> {
    conn.query_one(
        "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM schema_migrations",
        args![],
        "schema_migrations",
    )?
    .get(0, "schema_migrations.version")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ledger::postgres::Role;
    use crate::ledger::postgres_testing::PgCluster;
    use crate::ledger::schema;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
    }

    fn connect(config: &tokio_postgres::Config, runtime: &tokio::runtime::Runtime) -> PgConnection {
        PgConnection::connect(config, runtime.handle().clone(), Role::Writer, TIMEOUT).unwrap()
    }

    fn strings(conn: &PgConnection, sql: &str) -> Vec<Vec<String>> {
        conn.query(sql, args![])
            .unwrap()
            .iter()
            .map(|row| {
                (0..)
                    .map_while(|i| row.get::<Option<String>>(i, "column").ok())
                    .map(Option::unwrap_or_default)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_postgres_migrations_are_the_sqlite_migrations() {
        let sqlite: Vec<(i64, &str)> = schema::MIGRATIONS.iter().map(|m| (m.version, m.name)).collect();
        let postgres: Vec<(i64, &str)> = MIGRATIONS.iter().map(|m| (m.version, m.name)).collect();
        assert_eq!(postgres, sqlite);
        assert_eq!(latest_version(), schema::latest_version());
    }

    /// Both schemas after every migration: the same tables, the same columns in the same order
    /// with the same types and nullability, the same named indexes.
    #[test]
    fn both_schemas_have_the_same_tables_columns_and_indexes() {
        let mut sqlite = rusqlite::Connection::open_in_memory().unwrap();
        schema::migrate(&mut sqlite).unwrap();
        let mut statement = sqlite
            .prepare(
                "SELECT m.name, p.name, p.type, p.\"notnull\" OR (p.pk > 0 AND p.type = 'INTEGER')
                 FROM sqlite_master m JOIN pragma_table_info(m.name) p
                 WHERE m.type = 'table' ORDER BY m.name, p.cid",
            )
            .unwrap();
        let sqlite_columns: Vec<Vec<String>> = statement
            .query_map([], |row| {
                let ty: String = row.get(2)?;
                let postgres_type = match ty.as_str() {
                    "INTEGER" => "bigint",
                    "TEXT" => "text",
                    "BLOB" => "bytea",
                    other => panic!("a SQLite column of type {other}"),
                };
                Ok(vec![row.get(0)?, row.get(1)?, postgres_type.to_owned(), row.get::<_, bool>(3)?.to_string()])
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let sqlite_indexes: Vec<String> = sqlite
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();

        let cluster = PgCluster::start().unwrap();
        let runtime = runtime();
        let mut conn = connect(&cluster.config(), &runtime);
        migrate(&mut conn).unwrap();
        let postgres_columns: Vec<Vec<String>> = strings(
            &conn,
            "SELECT table_name::text, column_name::text, data_type::text,
                    CASE WHEN is_nullable = 'NO' THEN 'true' ELSE 'false' END
             FROM information_schema.columns WHERE table_schema = current_schema()
             ORDER BY table_name, ordinal_position",
        );
        // Indexes written as CREATE INDEX; those behind a PRIMARY KEY or UNIQUE constraint are
        // SQLite's autoindexes, left out on both sides.
        let postgres_indexes: Vec<String> = strings(
            &conn,
            "SELECT i.indexname::text FROM pg_indexes i
             WHERE i.schemaname = current_schema()
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
             ORDER BY i.indexname",
        )
        .into_iter()
        .flatten()
        .collect();
        assert_eq!(postgres_columns, sqlite_columns);
        assert_eq!(postgres_indexes, sqlite_indexes);
        assert!(postgres_indexes.contains(&"transactions_approved_order".to_owned()));
    }

    #[test]
    fn migrations_are_idempotent_and_a_newer_or_foreign_schema_is_refused() {
        let cluster = PgCluster::start().unwrap();
        let runtime = runtime();
        let mut conn = connect(&cluster.config(), &runtime);
        migrate_to(&mut conn, 1).unwrap();
        assert_eq!(current_version(&conn).unwrap(), 1);
        migrate(&mut conn).unwrap();
        assert_eq!(current_version(&conn).unwrap(), latest_version());
        migrate(&mut conn).unwrap();
        let rows = conn.query_one("SELECT count(*) FROM schema_migrations", args![], "count").unwrap();
        assert_eq!(rows.get::<i64>(0, "count").unwrap(), latest_version());

        // The schema works as the ledger uses it: identities, widened CHECKs, partial indexes.
        conn.execute("INSERT INTO journal_entries (kind, created_at) VALUES ('settlement', 'now')", args![]).unwrap();
        let id = conn
            .query_one(
                "INSERT INTO journal_entries (kind, created_at) VALUES ('opening', 'now') RETURNING id",
                args![],
                "id",
            )
            .unwrap();
        assert_eq!(id.get::<i64>(0, "id").unwrap(), 2);
        let by_hand =
            conn.execute("INSERT INTO journal_entries (id, kind, created_at) VALUES (9, 'opening', 'now')", args![]);
        assert!(by_hand.is_err(), "an id written by hand is refused");
        let unbalanced =
            conn.execute("INSERT INTO journal_entries (kind, created_at) VALUES ('authorization', 'now')", args![]);
        assert!(matches!(unbalanced, Err(LedgerError::Invariant(_))), "{unbalanced:?}");

        conn.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', '2099-01-01T00:00:00Z')", args![])
            .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(matches!(err, LedgerError::Migration(MigrationError::NewerSchema { found: 999, .. })), "{err:?}");
        assert_eq!(current_version(&conn).unwrap(), 999, "refused untouched");
        conn.execute("DELETE FROM schema_migrations WHERE version = 999", args![]).unwrap();
        conn.execute("UPDATE schema_migrations SET name = 'something else' WHERE version = 1", args![]).unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(matches!(err, LedgerError::Migration(MigrationError::Mismatch { version: 1 })), "{err:?}");
        assert!(conn.is_reusable(), "a refusal rolls its transaction back");

        // Another application's database, with or without its own schema_migrations.
        let foreign = cluster.create_database("photos").unwrap();
        let mut other = connect(&foreign, &runtime);
        other.batch_execute("CREATE TABLE photos (id BIGINT PRIMARY KEY)").unwrap();
        let err = migrate(&mut other).unwrap_err();
        assert!(matches!(err, LedgerError::Migration(MigrationError::ForeignDatabase)), "{err:?}");
        other.batch_execute("DROP TABLE photos; CREATE TABLE schema_migrations (version TEXT)").unwrap();
        let err = migrate(&mut other).unwrap_err();
        assert!(matches!(err, LedgerError::Migration(MigrationError::ForeignDatabase)), "{err:?}");
    }

    /// Migration 8 on a ledger made at version 7, as in SQLite (`schema::tests`).
    #[test]
    fn the_running_daily_totals_are_backfilled_from_the_approvals() {
        let cluster = PgCluster::start().unwrap();
        let runtime = runtime();
        let mut conn = connect(&cluster.config(), &runtime);
        migrate_to(&mut conn, 7).unwrap();
        crate::ledger::testing::fill_version_7(&conn);
        migrate(&mut conn).unwrap();
        assert_eq!(current_version(&conn).unwrap(), 8);
        crate::ledger::testing::check_version_7_backfill(&conn);
    }

    #[test]
    fn instances_migrating_at_once_both_succeed() {
        let cluster = PgCluster::start().unwrap();
        let runtime = runtime();
        let config = cluster.config();
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|scope| {
            let instances: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let mut conn = connect(&config, &runtime);
                        start.wait();
                        migrate(&mut conn)
                    })
                })
                .collect();
            for instance in instances {
                instance.join().unwrap().unwrap();
            }
        });
        let conn = connect(&config, &runtime);
        assert_eq!(current_version(&conn).unwrap(), latest_version());
        let rows = conn.query_one("SELECT count(*) FROM schema_migrations", args![], "count").unwrap();
        assert_eq!(rows.get::<i64>(0, "count").unwrap(), latest_version());
    }
}
