//! The SQL the ledger speaks, written once for both backends (SQLite and PostgreSQL).
//!
//! Statements are written with numbered parameters (`?1`, `?2`, ...) and bound from [`Arg`]s;
//! rows come back as owned [`Value`]s, read with [`Row::get`]. SQLite runs a statement as
//! written; the PostgreSQL adapter numbers the parameters `$1`, `$2`, ... The ledger's columns
//! are of three types only, so the mapping is exact both ways:
//!
//! | ledger | SQLite (STRICT) | PostgreSQL |
//! |---|---|---|
//! | integer | INTEGER | BIGINT |
//! | text | TEXT | TEXT |
//! | bytes | BLOB | BYTEA |
//!
//! Portable SQL only: `CAST(SUM(x) AS BIGINT)` (PostgreSQL's SUM of a BIGINT is NUMERIC),
//! `INSERT ... RETURNING id` instead of `last_insert_rowid()`, `ON CONFLICT ... DO NOTHING`
//! instead of `INSERT OR IGNORE`, `COALESCE`, no `strftime`, no two-argument `max()`. Where the
//! two must differ (transaction control, schema), the backend says so through [`Dialect`].

use super::error::LedgerError;

/// Which database runs the statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// SQLite through rusqlite.
    Sqlite,
    /// PostgreSQL (or a database that speaks its protocol) through tokio-postgres.
    Postgres,
}

/// A value bound to a statement parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arg<'a> {
    /// SQL NULL.
    Null,
    /// An integer column.
    Int(i64),
    /// A text column.
    Text(&'a str),
    /// A bytes column.
    Bytes(&'a [u8]),
}

impl From<i64> for Arg<'_> {
    fn from(value: i64) -> Self {
        Arg::Int(value)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(value: &'a str) -> Self {
        Arg::Text(value)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(value: &'a String) -> Self {
        Arg::Text(value)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(value: &'a [u8]) -> Self {
        Arg::Bytes(value)
    }
}

impl<'a> From<&'a Vec<u8>> for Arg<'a> {
    fn from(value: &'a Vec<u8>) -> Self {
        Arg::Bytes(value)
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Arg<'a> {
    fn from(value: &'a [u8; N]) -> Self {
        Arg::Bytes(value)
    }
}

impl<'a, T: Into<Arg<'a>>> From<Option<T>> for Arg<'a> {
    fn from(value: Option<T>) -> Self {
        value.map_or(Arg::Null, Into::into)
    }
}

/// Binds a list of parameters: `args![a, b, c]` is `&[Arg::from(a), Arg::from(b), ...]`.
macro_rules! args {
    () => { &[] as &[$crate::ledger::sql::Arg<'_>] };
    ($($arg:expr),+ $(,)?) => { &[$($crate::ledger::sql::Arg::from($arg)),+] as &[$crate::ledger::sql::Arg<'_>] };
}
pub(crate) use args;

/// A value read from a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// SQL NULL.
    Null,
    /// An integer column.
    Int(i64),
    /// A text column.
    Text(String),
    /// A bytes column.
    Bytes(Vec<u8>),
}

/// A Rust type a [`Value`] converts to; a value of another type is corruption (the schema
/// fixes every column's type).
pub(crate) trait FromValue: Sized {
    /// The value as `Self`, or None when it is of another type.
    fn from_value(value: Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Int(v) => Some(v),
            _ => None,
        }
    }
}

impl FromValue for String {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Text(v) => Some(v),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Bytes(v) => Some(v),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// One row of a result, its columns in the statement's order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Row {
    values: Vec<Value>,
}

impl Row {
    /// A row of these values.
    pub(crate) fn new(values: Vec<Value>) -> Self {
        Self { values }
    }

    /// Column `index` as `T`. A missing column or a value of another type is
    /// [`LedgerError::Corrupt`] naming `what` (table.column), never the value.
    pub(crate) fn get<T: FromValue>(&self, index: usize, what: &'static str) -> Result<T, LedgerError> {
        let value = self.values.get(index).cloned().ok_or(LedgerError::Corrupt(what))?;
        T::from_value(value).ok_or(LedgerError::Corrupt(what))
    }
}

/// A connection (or a transaction on one) that runs the ledger's SQL. Implemented for SQLite
/// (`sqlite.rs`) and PostgreSQL (`postgres.rs`); the ledger's reads and commands are written
/// against this trait only.
pub(crate) trait Sql {
    /// Which database this is.
    #[allow(dead_code, reason = "read where the two backends' SQL must differ; none does on the SQLite side yet")]
    fn dialect(&self) -> Dialect;

    /// Runs a statement and returns every row.
    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, LedgerError>;

    /// Runs a statement that returns no rows; the number of rows it changed.
    fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, LedgerError>;

    /// The first row, if any.
    fn query_opt(&self, sql: &str, args: &[Arg<'_>]) -> Result<Option<Row>, LedgerError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// The first row of a statement that always returns one (an aggregate); none is
    /// corruption of `what`.
    fn query_one(&self, sql: &str, args: &[Arg<'_>], what: &'static str) -> Result<Row, LedgerError> {
        self.query_opt(sql, args)?.ok_or(LedgerError::Corrupt(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_convert_only_to_their_own_type() {
        let row = Row::new(vec![Value::Int(7), Value::Text("a".into()), Value::Bytes(vec![1]), Value::Null]);
        assert_eq!(row.get::<i64>(0, "t.i").unwrap(), 7);
        assert_eq!(row.get::<String>(1, "t.s").unwrap(), "a");
        assert_eq!(row.get::<Vec<u8>>(2, "t.b").unwrap(), vec![1]);
        assert_eq!(row.get::<Option<i64>>(3, "t.n").unwrap(), None);
        assert_eq!(row.get::<Option<i64>>(0, "t.i").unwrap(), Some(7));
        assert!(matches!(row.get::<String>(0, "t.i"), Err(LedgerError::Corrupt("t.i"))));
        assert!(matches!(row.get::<i64>(3, "t.n"), Err(LedgerError::Corrupt("t.n"))));
        assert!(matches!(row.get::<i64>(4, "t.x"), Err(LedgerError::Corrupt("t.x"))));
    }

    #[test]
    fn arguments_bind_from_the_ledger_types() {
        let text = String::from("x");
        let bytes = vec![1u8, 2];
        let none: Option<i64> = None;
        let bound = args![5i64, "s", &text, &bytes, &bytes[..1], &[9u8; 2], none, Some(3i64)];
        assert_eq!(
            bound,
            &[
                Arg::Int(5),
                Arg::Text("s"),
                Arg::Text("x"),
                Arg::Bytes(&[1, 2]),
                Arg::Bytes(&[1]),
                Arg::Bytes(&[9, 9]),
                Arg::Null,
                Arg::Int(3)
            ]
        );
    }
}
