//! SQLite runs the ledger's SQL: [`Sql`] for a rusqlite [`Connection`], and so for its
//! transactions and savepoints, which deref to it. Statements are prepared once per connection
//! (`prepare_cached`), parameters are bound from [`Arg`] without a copy, and every column is
//! read into an owned [`Value`]; an error is sorted by [`super::error::storage`].

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql, params_from_iter};

use super::error::LedgerError;
use super::sql::{Arg, Dialect, Row, Sql, Value};

impl ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let value = match *self {
            Arg::Null => ValueRef::Null,
            Arg::Int(value) => ValueRef::Integer(value),
            Arg::Text(value) => ValueRef::Text(value.as_bytes()),
            Arg::Bytes(value) => ValueRef::Blob(value),
        };
        Ok(ToSqlOutput::Borrowed(value))
    }
}

impl Sql for Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, LedgerError> {
        rows(self, sql, args, usize::MAX)
    }

    fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, LedgerError> {
        let changed = self.prepare_cached(sql)?.execute(params_from_iter(args))?;
        // A usize is at most 64 bits on every target SQLite runs on.
        Ok(changed as u64)
    }

    /// Steps the statement once, as `query_row` did: a lookup by a unique key stops at its row.
    fn query_opt(&self, sql: &str, args: &[Arg<'_>]) -> Result<Option<Row>, LedgerError> {
        Ok(rows(self, sql, args, 1)?.pop())
    }
}

/// Runs `sql` and reads at most `rows_max` of its rows.
fn rows(conn: &Connection, sql: &str, args: &[Arg<'_>], rows_max: usize) -> Result<Vec<Row>, LedgerError> {
    let mut statement = conn.prepare_cached(sql)?;
    let columns = statement.column_count();
    let mut rows = statement.query(params_from_iter(args))?;
    let mut out = Vec::new();
    while out.len() < rows_max {
        let Some(row) = rows.next()? else { break };
        let values = (0..columns).map(|index| value(row.get_ref(index)?)).collect::<Result<Vec<_>, _>>()?;
        out.push(Row::new(values));
    }
    Ok(out)
}

/// One column as an owned value. The ledger stores no real numbers and only UTF-8 text, so
/// either is damage (STRICT tables refuse both on write).
fn value(column: ValueRef<'_>) -> Result<Value, LedgerError> {
    match column {
        ValueRef::Null => Ok(Value::Null),
        ValueRef::Integer(value) => Ok(Value::Int(value)),
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map(|text| Value::Text(text.to_owned()))
            .map_err(|_| LedgerError::Corrupt("a stored text is not UTF-8")),
        ValueRef::Blob(bytes) => Ok(Value::Bytes(bytes.to_vec())),
        ValueRef::Real(_) => Err(LedgerError::Corrupt("a stored value is a real number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::sql::args;

    /// An in-memory database with one table of each column type.
    fn memory() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, s TEXT, b BLOB) STRICT").unwrap();
        conn
    }

    #[test]
    fn arguments_bind_and_columns_read_back_as_values() {
        let conn = memory();
        let sql: &dyn Sql = &conn;
        assert_eq!(sql.dialect(), Dialect::Sqlite);
        let none: Option<&str> = None;
        let inserted = sql.execute("INSERT INTO t (i, s, b) VALUES (?1, ?2, ?3)", args![-7i64, "é", &[0u8, 255]]);
        assert_eq!(inserted.unwrap(), 1);
        // A parameter used twice is bound once.
        assert_eq!(sql.execute("INSERT INTO t (i, s) VALUES (?1 * ?1, ?2)", args![Some(3i64), none]).unwrap(), 1);
        let rows = sql.query("SELECT i, s, b FROM t ORDER BY id", args![]).unwrap();
        assert_eq!(
            rows,
            vec![
                Row::new(vec![Value::Int(-7), Value::Text("é".into()), Value::Bytes(vec![0, 255])]),
                Row::new(vec![Value::Int(9), Value::Null, Value::Null]),
            ]
        );
    }

    #[test]
    fn returning_gives_the_new_id_and_query_opt_stops_at_the_first_row() {
        let conn = memory();
        let sql: &dyn Sql = &conn;
        let row = sql.query_one("INSERT INTO t (i) VALUES (?1) RETURNING id", args![5i64], "t.id").unwrap();
        assert_eq!(row.get::<i64>(0, "t.id").unwrap(), 1);
        sql.execute("INSERT INTO t (i) VALUES (6)", args![]).unwrap();
        let first = sql.query_opt("SELECT i FROM t ORDER BY id", args![]).unwrap().unwrap();
        assert_eq!(first.get::<i64>(0, "t.i").unwrap(), 5);
        assert_eq!(sql.query_opt("SELECT i FROM t WHERE id = 99", args![]).unwrap(), None);
        let total = sql.query_one("SELECT CAST(COALESCE(SUM(i), 0) AS BIGINT) FROM t", args![], "sum").unwrap();
        assert_eq!(total.get::<i64>(0, "sum").unwrap(), 11);
    }

    #[test]
    fn reals_and_broken_text_are_corruption_and_sql_errors_are_sorted() {
        let conn = memory();
        let sql: &dyn Sql = &conn;
        let real = sql.query("SELECT 1.5", args![]).unwrap_err();
        assert!(matches!(real, LedgerError::Corrupt(_)), "{real:?}");
        let broken = sql.query("SELECT CAST(x'ff' AS TEXT)", args![]).unwrap_err();
        assert!(matches!(broken, LedgerError::Corrupt(_)), "{broken:?}");
        sql.execute("INSERT INTO t (id) VALUES (1)", args![]).unwrap();
        let twice = sql.execute("INSERT INTO t (id) VALUES (1)", args![]).unwrap_err();
        assert!(matches!(twice, LedgerError::Invariant(_)), "{twice:?}");
        let missing = sql.query("SELECT nope FROM t", args![]).unwrap_err();
        assert!(missing.is_unavailable(), "{missing:?}");
    }
}
