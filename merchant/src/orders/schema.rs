//! The order book's SQLite schema as ordered migrations, and the settings of its connection
//! (WAL, `synchronous=FULL`, foreign keys). Tables are STRICT; a newer database is refused.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::BookError;

/// `PRAGMA application_id` of a merchant order book ("MPSM").
const APPLICATION_ID: i64 = 0x4D50_534D;

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

/// Every migration of this build, in order. Append only.
const MIGRATIONS: &[Migration] = &[Migration { version: 1, name: "orders and reversals", sql: MIGRATION_1 }];

const MIGRATION_1: &str = r#"
CREATE TABLE orders (
    order_no TEXT PRIMARY KEY NOT NULL CHECK (length(order_no) BETWEEN 1 AND 12),
    amount INTEGER NOT NULL CHECK (amount > 0),
    currency INTEGER NOT NULL CHECK (currency BETWEEN 1 AND 999),
    status TEXT NOT NULL CHECK (status IN
        ('open', 'submitted', 'paid', 'declined', 'unknown', 'reversal_pending', 'reversed')),
    issuer_iin TEXT CHECK (issuer_iin IS NULL OR length(issuer_iin) = 6),
    payer_packet BLOB CHECK (payer_packet IS NULL OR length(payer_packet) = 113),
    request_body BLOB,
    request_signature TEXT,
    response_code TEXT CHECK (response_code IS NULL OR length(response_code) = 2),
    auth_code TEXT CHECK (auth_code IS NULL OR length(auth_code) = 6),
    txn_id TEXT CHECK (txn_id IS NULL OR length(txn_id) = 32),
    bank_answer BLOB,
    bank_signature TEXT,
    payer_answer BLOB CHECK (payer_answer IS NULL OR length(payer_answer) = 79),
    reason TEXT,
    reversal_code TEXT CHECK (reversal_code IS NULL OR reversal_code IN ('00', '25', '12')),
    paid_day TEXT CHECK (paid_day IS NULL OR length(paid_day) = 10),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CHECK (status <> 'paid' OR (auth_code IS NOT NULL AND paid_day IS NOT NULL AND bank_signature IS NOT NULL)),
    CHECK (status = 'open' OR payer_packet IS NOT NULL)
) STRICT;

-- The day's export (reconciliation) reads the approved orders of one day.
CREATE INDEX orders_paid_by_day ON orders (paid_day) WHERE status = 'paid';

CREATE TABLE reversals (
    id INTEGER PRIMARY KEY,
    order_no TEXT NOT NULL REFERENCES orders (order_no),
    issuer_iin TEXT NOT NULL CHECK (length(issuer_iin) = 6),
    body BLOB NOT NULL,
    signature TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'done')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    response_code TEXT CHECK (response_code IS NULL OR length(response_code) = 2),
    reversal_id TEXT,
    answer BLOB,
    answer_signature TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CHECK ((status = 'done') = (answer_signature IS NOT NULL))
) STRICT;

-- At most one reversal in flight per order.
CREATE UNIQUE INDEX reversals_one_pending ON reversals (order_no) WHERE status = 'pending';
CREATE INDEX reversals_due ON reversals (next_attempt_ms) WHERE status = 'pending';
"#;

/// Settings of the connection: WAL, full fsync on commit, foreign keys, busy timeout.
pub(super) fn configure(conn: &Connection, busy_timeout: std::time::Duration) -> Result<(), BookError> {
    conn.busy_timeout(busy_timeout)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(BookError::NoWal(mode));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "trusted_schema", "OFF")?;
    Ok(())
}

/// Applies the migrations the database lacks, each in its own transaction with its row in
/// `schema_migrations`. Refuses a database of a newer build, one whose applied migrations differ
/// from this build's, and a SQLite file that is not an order book.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), BookError> {
    let applied = applied_migrations(conn)?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    let found = applied.last().map_or(0, |(version, _)| *version);
    if found > latest {
        return Err(BookError::NewerSchema { found, known: latest });
    }
    for (version, name) in &applied {
        let ours = MIGRATIONS.iter().find(|m| m.version == *version);
        if ours.map(|m| m.name) != Some(name.as_str()) {
            return Err(BookError::ForeignSchema);
        }
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(migration.sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![migration.version, migration.name, super::now_text()],
        )?;
        tx.commit()?;
    }
    Ok(())
}

fn applied_migrations(conn: &mut Connection) -> Result<Vec<(i64, String)>, BookError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_table: Option<i64> = tx
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'", [], |row| {
            row.get(0)
        })
        .optional()?;
    let application_id: i64 = tx.pragma_query_value(None, "application_id", |row| row.get(0))?;
    if has_table.is_none() {
        let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0))?;
        if tables > 0 || application_id != 0 {
            return Err(BookError::ForeignSchema);
        }
        tx.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT;",
        )?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    } else if application_id != APPLICATION_ID {
        return Err(BookError::ForeignSchema);
    }
    let applied = {
        let mut statement = tx.prepare("SELECT version, name FROM schema_migrations ORDER BY version")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect::<Result<Vec<(i64, String)>, _>>()?
    };
    tx.commit()?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, index as i64 + 1);
        }
    }

    #[test]
    fn a_foreign_database_and_a_newer_one_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER);").unwrap();
        assert!(matches!(migrate(&mut conn), Err(BookError::ForeignSchema)));

        let mut conn = Connection::open(dir.path().join("book.db")).unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 'now')", []).unwrap();
        assert!(matches!(migrate(&mut conn), Err(BookError::NewerSchema { found: 99, .. })));
    }
}
