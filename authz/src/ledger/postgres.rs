//! The ledger's SQL on PostgreSQL: the blocking [`Sql`] front over tokio-postgres that lets
//! several authz instances share one ledger (docs/LEDGER.md, "PostgreSQL").
//!
//! The ledger runs SQL on its writer thread and on blocking read threads, never inside an async
//! task, so a [`PgConnection`] holds a runtime [`Handle`] and runs each call with
//! `Handle::block_on`; the connection's socket is driven by a task spawned on that runtime at
//! connect time. Statements are written once with `?N` parameters (`sql.rs`): the first use on a
//! connection rewrites them to `$N`, prepares them and keeps the prepared statement (at most
//! [`STATEMENTS_MAX`] per connection; the ledger's SQL is a fixed set). Arguments are checked
//! against the parameter types the server inferred before anything is sent; result columns are
//! converted by their type. Errors are sorted like SQLite's (`error.rs`), and the server's message
//! text is never kept, since it may quote a value (an account number in a unique violation).
//! A serialization failure or a deadlock is [`PostgresError::MustRetry`]: the server rolled the
//! whole transaction back, and [`write_transaction`] runs it again, a bounded number of times.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use rand::Rng;
use tokio::runtime::Handle;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Column, NoTls, Statement};

use super::error::{LedgerError, MigrationError, Unavailable};
use super::sql::{Arg, Dialect, Row, Sql, Value};

/// Prepared statements kept per connection. The ledger's SQL is a fixed set of about a hundred
/// statements; the bound stops a bug that builds SQL text per call from growing the memory of
/// the connection and of its server backend without end.
pub(crate) const STATEMENTS_MAX: usize = 512;

/// Attempts of one write transaction (the first run included) before its lost race goes to
/// the caller, who answers 503 and approves nothing.
pub(crate) const WRITE_ATTEMPTS_MAX: u32 = 8;

/// What a unique violation (SQLSTATE 23505) becomes: an invariant the code should have checked
/// first, unless a concurrent transaction stored the key after this one's snapshot was taken,
/// which a REPEATABLE READ transaction cannot tell from the error ([`write_transaction`] runs
/// it again on a fresh snapshot to find out).
pub(crate) const UNIQUE_REFUSED: &str = "a unique key of the database refused the write";

/// The longest pause between two attempts of a write transaction; the pause is drawn at
/// random below a bound that doubles per attempt, so that two instances that collided once do
/// not collide again in lock step.
const RETRY_PAUSE_MS_MAX: u64 = 64;

/// Why PostgreSQL could not run a statement. Never holds the server's message text or detail:
/// they may quote a stored value, such as an account number in a unique violation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The transaction lost a race with a concurrent one (SQLSTATE 40001 serialization failure
    /// or 40P01 deadlock). The server rolled it back whole: nothing of it was stored, and it may
    /// be run again from its BEGIN ([`write_transaction`] does, a bounded number of times).
    #[error("the transaction must be run again ({0})")]
    MustRetry(ServerError),
    /// The server refused the statement for another reason (syntax, a missing table, resources,
    /// shutdown, ...).
    #[error("the server refused the statement ({0})")]
    Refused(ServerError),
    /// Connecting failed, or the socket or the protocol did, or the connection is closed.
    #[error("connection: {0}")]
    Connection(#[source] tokio_postgres::Error),
    /// A call on this connection timed out or lost the connection earlier, so the state of its
    /// transaction is unknown; the connection takes no more calls and its pool drops it.
    #[error("the connection was abandoned after a call timed out or failed")]
    Abandoned,
    /// A statement of this transaction failed and it was not rolled back to a savepoint: the
    /// server rolled the whole transaction back at COMMIT.
    #[error("a statement of the transaction failed: the transaction was rolled back")]
    TransactionFailed,
}

/// What the server said about a refused statement, minus its message: the SQLSTATE and the
/// schema objects it names (names, never values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    code: String,
    table: Option<String>,
    constraint: Option<String>,
}

impl ServerError {
    fn of(error: &tokio_postgres::error::DbError) -> Self {
        Self {
            code: error.code().code().to_owned(),
            table: error.table().map(str::to_owned),
            constraint: error.constraint().map(str::to_owned),
        }
    }

    /// The five-character SQLSTATE.
    pub fn code(&self) -> &str {
        &self.code
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SQLSTATE {}", self.code)?;
        if let Some(table) = &self.table {
            write!(f, ", table {table}")?;
        }
        if let Some(constraint) = &self.constraint {
            write!(f, ", constraint {constraint}")?;
        }
        Ok(())
    }
}

/// Sorts a tokio-postgres error the way `error::storage` sorts SQLite's: a constraint that
/// fired is an invariant the code should have checked first, a refused value is invalid input,
/// damage reported by the server is corruption, a lost race is [`PostgresError::MustRetry`],
/// everything else makes the ledger unavailable.
pub(crate) fn postgres_error(error: tokio_postgres::Error) -> LedgerError {
    let Some(db) = error.as_db_error() else {
        return unavailable(PostgresError::Connection(error));
    };
    let server = ServerError::of(db);
    tracing::debug!(error = %server, "PostgreSQL refused a statement");
    match server.code.as_str() {
        "40001" | "40P01" => unavailable(PostgresError::MustRetry(server)),
        "23505" => LedgerError::Invariant(UNIQUE_REFUSED),
        code if code.starts_with("23") => LedgerError::Invariant("a database constraint refused the write"),
        code if code.starts_with("22") => LedgerError::InvalidInput("the database refused a value (data exception)"),
        "XX001" | "XX002" => LedgerError::Corrupt("the database reports damaged data or a damaged index"),
        _ => unavailable(PostgresError::Refused(server)),
    }
}

/// Whether the connection is gone or going after `error`: no answer from the server (socket,
/// protocol, closed), a FATAL error, or one of the classes 08 (connection exception) and 57
/// (operator intervention: shutdown, terminated backend, cancelled statement). Such a
/// connection takes no more calls, even before its socket is seen closed.
fn ends_connection(error: &tokio_postgres::Error) -> bool {
    let Some(db) = error.as_db_error() else {
        return true;
    };
    let code = db.code().code();
    matches!(db.severity(), "FATAL" | "PANIC") || code.starts_with("08") || code.starts_with("57")
}

fn unavailable(error: PostgresError) -> LedgerError {
    LedgerError::Unavailable(Unavailable::Postgres(error))
}

/// Whether `error` is a lost race that the server rolled back whole, so that running the
/// transaction again is safe.
pub(crate) fn must_retry(error: &LedgerError) -> bool {
    matches!(error, LedgerError::Unavailable(Unavailable::Postgres(PostgresError::MustRetry(_))))
}

/// Whether `error` is a unique violation: a key stored by a concurrent transaction, or a bug.
pub(crate) fn is_unique_refusal(error: &LedgerError) -> bool {
    matches!(error, LedgerError::Invariant(message) if *message == UNIQUE_REFUSED)
}

/// One run of a [`write_transaction`]'s body, the first being number 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempt(u32);

impl Attempt {
    /// Whether no attempt follows this one.
    pub(crate) fn is_last(self) -> bool {
        self.0 >= WRITE_ATTEMPTS_MAX
    }

    /// Whether `error` ends this attempt and calls for another: a lost race, always; a unique
    /// violation, unless this is the last attempt. A REPEATABLE READ transaction does not see
    /// a key that another transaction committed after its snapshot was taken, so its own check
    /// (`SELECT` before `INSERT`) passes and the `INSERT` is refused: a lost race that the
    /// server reports as a violation. The next attempt's snapshot shows the key, and the check
    /// refuses properly (`AlreadyExists`, a conflict). A violation on every attempt is a key
    /// the code failed to check: the last attempt reports it as the invariant it is.
    pub(crate) fn ends_on(self, error: &LedgerError) -> bool {
        must_retry(error) || (is_unique_refusal(error) && !self.is_last())
    }
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Writes: `synchronous_commit=on` is set and checked, like SQLite's `synchronous=FULL`.
    Writer,
    /// Reads only: every transaction is READ ONLY, so a bug cannot write through a reader.
    Reader,
}

/// Isolation of a transaction begun with [`PgConnection::begin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// PostgreSQL's default; for migrations, which serialize on an advisory lock instead.
    ReadCommitted,
    /// One snapshot for every statement of a read, and the writer's: a write to a row that
    /// another transaction changed after the snapshot was taken fails as a lost race
    /// ([`PostgresError::MustRetry`]), so two instances that book the same SIM or account at
    /// once never both stand (docs/LEDGER.md, "Several instances on PostgreSQL").
    RepeatableRead,
}

impl Isolation {
    fn begin(self) -> &'static str {
        match self {
            Self::ReadCommitted => "BEGIN ISOLATION LEVEL READ COMMITTED",
            Self::RepeatableRead => "BEGIN ISOLATION LEVEL REPEATABLE READ",
        }
    }
}

/// Where the connection is between BEGIN and COMMIT; PostgreSQL refuses every statement of a
/// transaction after one failed, and turns its COMMIT into a ROLLBACK without an error, so the
/// connection remembers a failure itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransactionState {
    Idle,
    Open,
    Failed,
}

/// One PostgreSQL connection, used from one non-async thread at a time.
pub(crate) struct PgConnection {
    handle: Handle,
    client: Client,
    statements: RefCell<HashMap<String, Statement>>,
    call_timeout: Duration,
    abandoned: Cell<bool>,
    transaction: Cell<TransactionState>,
}

impl fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConnection")
            .field("statements", &self.statements.borrow().len())
            .field("transaction", &self.transaction.get())
            .finish_non_exhaustive()
    }
}

impl PgConnection {
    /// Connects (without TLS: the server is on a Unix socket or loopback) and spawns the
    /// connection's task on `handle`'s runtime. Must not be called on an async worker thread:
    /// it blocks until the connection is up or `call_timeout` has passed.
    pub(crate) fn connect(
        config: &tokio_postgres::Config,
        handle: Handle,
        role: Role,
        call_timeout: Duration,
    ) -> Result<Self, LedgerError> {
        // The timer is made inside the runtime (in the async block): made on this thread
        // outside it, it would find no timer driver.
        let connecting = handle.block_on(async { tokio::time::timeout(call_timeout, config.connect(NoTls)).await });
        let (client, connection) = match connecting {
            Ok(Ok(pair)) => pair,
            Ok(Err(error)) => return Err(postgres_error(error)),
            Err(_elapsed) => return Err(LedgerError::Unavailable(Unavailable::Timeout)),
        };
        handle.spawn(async move {
            if let Err(error) = connection.await {
                // The client sees a closed connection at its next call; this says why.
                tracing::warn!(error = %postgres_error(error), "a ledger PostgreSQL connection ended");
            }
        });
        let conn = Self {
            handle,
            client,
            statements: RefCell::new(HashMap::new()),
            call_timeout,
            abandoned: Cell::new(false),
            transaction: Cell::new(TransactionState::Idle),
        };
        match role {
            Role::Writer => {
                conn.batch_execute("SET synchronous_commit = on")?;
                check_durable(&conn)?;
            }
            Role::Reader => conn.batch_execute("SET default_transaction_read_only = on")?,
        }
        Ok(conn)
    }

    /// Runs SQL without parameters through the simple query protocol: several statements at
    /// once (a migration), transaction control.
    pub(crate) fn batch_execute(&self, sql: &str) -> Result<(), LedgerError> {
        self.call(self.client.batch_execute(sql))
    }

    /// Begins a transaction; it is rolled back unless committed.
    pub(crate) fn begin(&mut self, isolation: Isolation) -> Result<PgTransaction<'_>, LedgerError> {
        if self.transaction.get() != TransactionState::Idle {
            return Err(LedgerError::Invariant("a transaction was begun inside another"));
        }
        self.batch_execute(isolation.begin())?;
        self.transaction.set(TransactionState::Open);
        Ok(PgTransaction { conn: self, finished: false })
    }

    /// Whether a pool may hand this connection out again: open, no call abandoned, no
    /// transaction left open.
    pub(crate) fn is_reusable(&self) -> bool {
        !self.abandoned.get() && !self.client.is_closed() && self.transaction.get() == TransactionState::Idle
    }

    #[cfg(test)]
    /// Prepared statements kept now.
    pub(crate) fn statements_cached(&self) -> usize {
        self.statements.borrow().len()
    }

    /// Runs one call of the client on the runtime, within the call timeout. A timed-out call
    /// abandons the connection: its transaction's state is unknown from then on.
    fn call<T>(&self, future: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, LedgerError> {
        if self.abandoned.get() {
            return Err(unavailable(PostgresError::Abandoned));
        }
        let timed = async { tokio::time::timeout(self.call_timeout, future).await };
        let result = match self.handle.block_on(timed) {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => {
                if ends_connection(&error) {
                    self.abandoned.set(true);
                }
                postgres_error(error)
            }
            Err(_elapsed) => {
                self.abandoned.set(true);
                LedgerError::Unavailable(Unavailable::Timeout)
            }
        };
        if self.transaction.get() == TransactionState::Open {
            self.transaction.set(TransactionState::Failed);
        }
        Err(result)
    }

    /// The prepared statement for `sql`, prepared on first use.
    fn statement(&self, sql: &str) -> Result<Statement, LedgerError> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let numbered = numbered_parameters(sql)?;
        let statement = self.call(self.client.prepare(&numbered))?;
        let mut statements = self.statements.borrow_mut();
        if statements.len() >= STATEMENTS_MAX {
            // Dropping a Statement closes it on the server. Reached only if SQL text is built
            // per call, which the ledger does not do: say so rather than grow.
            tracing::warn!(kept = statements.len(), "the PostgreSQL statement cache is full; emptied");
            statements.clear();
        }
        statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    fn run_query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, LedgerError> {
        let statement = self.statement(sql)?;
        let bound = bind(args, statement.params())?;
        let params: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
        let rows = self.call(self.client.query(&statement, &params))?;
        rows.iter().map(convert_row).collect()
    }

    fn run_execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, LedgerError> {
        let statement = self.statement(sql)?;
        let bound = bind(args, statement.params())?;
        let params: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
        self.call(self.client.execute(&statement, &params))
    }

    fn finish(&self, sql: &str) -> Result<(), LedgerError> {
        let result = self.batch_execute(sql);
        self.transaction.set(TransactionState::Idle);
        result
    }
}

impl Sql for PgConnection {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, LedgerError> {
        self.run_query(sql, args)
    }

    fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, LedgerError> {
        self.run_execute(sql, args)
    }
}

/// A transaction on a [`PgConnection`]: committed by [`PgTransaction::commit`], rolled back
/// otherwise (on drop too).
pub(crate) struct PgTransaction<'c> {
    conn: &'c mut PgConnection,
    finished: bool,
}

impl fmt::Debug for PgTransaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTransaction").field("state", &self.conn.transaction.get()).finish_non_exhaustive()
    }
}

impl PgTransaction<'_> {
    /// Commits. A transaction in which a statement failed (and was not rolled back to a
    /// savepoint) is rolled back instead and reported as [`PostgresError::TransactionFailed`]:
    /// PostgreSQL would turn the COMMIT into a ROLLBACK without an error.
    pub(crate) fn commit(mut self) -> Result<(), LedgerError> {
        self.finished = true;
        if self.conn.transaction.get() == TransactionState::Failed {
            self.conn.finish("ROLLBACK")?;
            return Err(unavailable(PostgresError::TransactionFailed));
        }
        self.conn.finish("COMMIT")
    }

    /// Rolls back.
    pub(crate) fn rollback(mut self) -> Result<(), LedgerError> {
        self.finished = true;
        self.conn.finish("ROLLBACK")
    }

    /// Runs SQL without parameters (DDL, savepoints, locks) inside the transaction.
    pub(crate) fn batch_execute(&self, sql: &str) -> Result<(), LedgerError> {
        self.conn.batch_execute(sql)
    }

    /// `SAVEPOINT name`: one command of a group commit, undone alone if it fails.
    pub(crate) fn savepoint(&self, name: Savepoint) -> Result<(), LedgerError> {
        self.conn.batch_execute(&format!("SAVEPOINT {}", name.0))
    }

    /// `RELEASE SAVEPOINT name`: the command's writes stay in the transaction.
    pub(crate) fn release(&self, name: Savepoint) -> Result<(), LedgerError> {
        self.conn.batch_execute(&format!("RELEASE SAVEPOINT {}", name.0))
    }

    /// `ROLLBACK TO SAVEPOINT name`: the command's writes are undone and the transaction can
    /// go on even after a failed statement.
    pub(crate) fn rollback_to(&self, name: Savepoint) -> Result<(), LedgerError> {
        // Allowed in a failed transaction, and it makes the transaction usable again; if it
        // fails itself, `call` marks the transaction failed once more.
        self.conn.transaction.set(TransactionState::Open);
        self.conn.batch_execute(&format!("ROLLBACK TO SAVEPOINT {}", name.0))
    }
}

/// A savepoint's name: an identifier written in the code, never built from input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Savepoint(pub &'static str);

impl Drop for PgTransaction<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if self.conn.finish("ROLLBACK").is_err() {
            // The transaction's state on the server is unknown: never hand it out again.
            self.conn.abandoned.set(true);
        }
    }
}

impl Sql for PgTransaction<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, LedgerError> {
        self.conn.run_query(sql, args)
    }

    fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, LedgerError> {
        self.conn.run_execute(sql, args)
    }
}

/// Runs `body` in a REPEATABLE READ transaction and commits it. `lock`, when given, is a
/// `LOCK TABLE` statement run first, before anything takes the transaction's snapshot, so that
/// the snapshot sees everything committed by the transactions the lock waited for. When an
/// attempt ends on a lost race ([`Attempt::ends_on`]) at any statement or at COMMIT, the whole
/// transaction is rolled back and runs again, at most [`WRITE_ATTEMPTS_MAX`] times in all,
/// after a short random pause. Returns the value and the attempts it took. `body` must derive
/// everything from what it reads in the transaction: a rolled-back attempt leaves nothing
/// behind but what `body` kept outside it. After the last attempt the error goes to the
/// caller: a lost race is [`LedgerError::Unavailable`], so an authorization is answered 503,
/// never approved.
pub(crate) fn write_transaction<T>(
    conn: &mut PgConnection,
    lock: Option<&str>,
    mut body: impl FnMut(&PgTransaction<'_>, Attempt) -> Result<T, LedgerError>,
) -> Result<(T, u32), LedgerError> {
    let mut attempt = Attempt(1);
    loop {
        let error = match attempt_once(conn, lock, attempt, &mut body) {
            Ok(value) => return Ok((value, attempt.0)),
            Err(error) => error,
        };
        if attempt.is_last() || !attempt.ends_on(&error) {
            return Err(error);
        }
        let bound_ms = (1u64 << attempt.0.min(6)).min(RETRY_PAUSE_MS_MAX);
        std::thread::sleep(Duration::from_millis(rand::thread_rng().gen_range(0..=bound_ms)));
        attempt = Attempt(attempt.0 + 1);
    }
}

fn attempt_once<T>(
    conn: &mut PgConnection,
    lock: Option<&str>,
    attempt: Attempt,
    body: &mut impl FnMut(&PgTransaction<'_>, Attempt) -> Result<T, LedgerError>,
) -> Result<T, LedgerError> {
    let tx = conn.begin(Isolation::RepeatableRead)?;
    let locked = lock.map_or(Ok(()), |lock| tx.batch_execute(lock));
    match locked.and_then(|()| body(&tx, attempt)) {
        Ok(value) => {
            tx.commit()?;
            Ok(value)
        }
        Err(error) => {
            // A failed rollback abandons the connection (Drop); the lock's or body's error is
            // the news.
            let _ = tx.rollback();
            Err(error)
        }
    }
}

/// Reads back what an answer's durability rests on: a fsync at every commit (`fsync=on`) and a
/// COMMIT that returns only once its WAL is flushed (`synchronous_commit` not `off`). A writer
/// without them must not serve: an approval could be answered and then lost in a power cut.
pub(crate) fn check_durable(conn: &PgConnection) -> Result<(), LedgerError> {
    let fsync = setting(conn, "fsync")?;
    if fsync != "on" {
        return Err(LedgerError::Migration(MigrationError::NotDurable {
            setting: format!("fsync={fsync}"),
            required: "fsync=on",
        }));
    }
    let synchronous_commit = setting(conn, "synchronous_commit")?;
    if !matches!(synchronous_commit.as_str(), "on" | "local" | "remote_write" | "remote_apply") {
        return Err(LedgerError::Migration(MigrationError::NotDurable {
            setting: format!("synchronous_commit={synchronous_commit}"),
            required: "synchronous_commit=on",
        }));
    }
    Ok(())
}

fn setting(conn: &PgConnection, name: &str) -> Result<String, LedgerError> {
    conn.query_one("SELECT current_setting(?1)", super::sql::args![name], "pg_settings.setting")?
        .get(0, "pg_settings.setting")
}

/// Rewrites the ledger's `?N` parameters to PostgreSQL's `$N`, leaving quoted strings, quoted
/// identifiers and comments as they are. A `?` without a number is refused: the ledger numbers
/// every parameter, and a bare one would mean another thing in each dialect. Runs once per
/// statement and connection (the statement cache keeps the result).
pub(crate) fn numbered_parameters(sql: &str) -> Result<String, LedgerError> {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        match c {
            // A doubled quote inside a string closes and reopens it, which copies it exactly.
            '\'' | '"' => {
                for inner in chars.by_ref() {
                    out.push(inner);
                    if inner == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for inner in chars.by_ref() {
                    out.push(inner);
                    if inner == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                // The opening "/*" is not its own end: "/*/" does not close.
                if let Some(star) = chars.next() {
                    out.push(star);
                }
                let mut previous = '\0';
                for inner in chars.by_ref() {
                    out.push(inner);
                    if previous == '*' && inner == '/' {
                        break;
                    }
                    previous = inner;
                }
            }
            '?' => {
                out.pop();
                out.push('$');
                let mut digits = 0;
                while let Some(digit) = chars.next_if(char::is_ascii_digit) {
                    out.push(digit);
                    digits += 1;
                }
                if digits == 0 {
                    return Err(LedgerError::InvalidInput("a statement parameter is not numbered (?N)"));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// An argument checked against its parameter's type, ready to be sent.
#[derive(Debug)]
enum Bound<'a> {
    Int8(i64),
    Int4(i32),
    Int2(i16),
    Text(&'a str),
    Bytes(&'a [u8]),
    Null,
}

impl ToSql for Bound<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Bound::Int8(value) => value.to_sql(ty, out),
            Bound::Int4(value) => value.to_sql(ty, out),
            Bound::Int2(value) => value.to_sql(ty, out),
            Bound::Text(value) => value.to_sql(ty, out),
            Bound::Bytes(value) => value.to_sql(ty, out),
            // A NULL has no bytes: it takes the parameter's type, whatever that is.
            Bound::Null => Ok(IsNull::Yes),
        }
    }

    /// Every type: [`bind`] matched each argument to its parameter's type already.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Matches the arguments to the parameter types the server inferred when it prepared the
/// statement. A mismatch is a programming error, caught before anything is sent (so it
/// leaves a transaction usable).
fn bind<'a>(args: &[Arg<'a>], types: &[Type]) -> Result<Vec<Bound<'a>>, LedgerError> {
    if args.len() != types.len() {
        return Err(LedgerError::InvalidInput("a statement got another number of arguments than it has parameters"));
    }
    args.iter().zip(types).map(|(arg, ty)| bind_one(*arg, ty)).collect()
}

fn bind_one<'a>(arg: Arg<'a>, ty: &Type) -> Result<Bound<'a>, LedgerError> {
    let out_of_range = || LedgerError::InvalidInput("an integer argument does not fit its parameter");
    Ok(match arg {
        Arg::Null => Bound::Null,
        Arg::Int(value) if *ty == Type::INT8 => Bound::Int8(value),
        Arg::Int(value) if *ty == Type::INT4 => Bound::Int4(i32::try_from(value).map_err(|_| out_of_range())?),
        Arg::Int(value) if *ty == Type::INT2 => Bound::Int2(i16::try_from(value).map_err(|_| out_of_range())?),
        Arg::Text(value) if is_text(ty) || *ty == Type::UNKNOWN => Bound::Text(value),
        Arg::Bytes(value) if *ty == Type::BYTEA => Bound::Bytes(value),
        _ => return Err(LedgerError::InvalidInput("a statement argument is of another type than its parameter")),
    })
}

fn is_text(ty: &Type) -> bool {
    *ty == Type::TEXT || *ty == Type::VARCHAR || *ty == Type::BPCHAR || *ty == Type::NAME
}

fn convert_row(row: &tokio_postgres::Row) -> Result<Row, LedgerError> {
    let values: Result<Vec<Value>, LedgerError> =
        row.columns().iter().enumerate().map(|(index, column)| convert_value(row, index, column)).collect();
    values.map(Row::new)
}

/// One column as a [`Value`], by the column's type. Integers of every width are `Int`; a
/// boolean is `Int` 0 or 1, as SQLite gives a comparison. Any other type (NUMERIC: a SUM not
/// cast to BIGINT) is corruption: the ledger's columns are integer, text and bytes only.
fn convert_value(row: &tokio_postgres::Row, index: usize, column: &Column) -> Result<Value, LedgerError> {
    let ty = column.type_();
    let value = if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(index).map(|v| v.map(Value::Int))
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(index).map(|v| v.map(|v| Value::Int(i64::from(v))))
    } else if *ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(index).map(|v| v.map(|v| Value::Int(i64::from(v))))
    } else if *ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(index).map(|v| v.map(|v| Value::Int(i64::from(v))))
    } else if is_text(ty) {
        row.try_get::<_, Option<String>>(index).map(|v| v.map(Value::Text))
    } else if *ty == Type::BYTEA {
        row.try_get::<_, Option<Vec<u8>>>(index).map(|v| v.map(Value::Bytes))
    } else {
        // The column's name and type are schema, not data: fine to log.
        tracing::error!(column = column.name(), column_type = %ty, "a ledger query returned a column of a type the ledger does not use");
        return Err(LedgerError::Corrupt("a result column is of a type the ledger does not use (the log names it)"));
    };
    value
        .map(|v| v.unwrap_or(Value::Null))
        .map_err(|_| LedgerError::Corrupt("a result value does not decode as its column's type"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::postgres_testing::PgCluster;
    use crate::ledger::sql::args;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
    }

    fn connect(cluster: &PgCluster, runtime: &tokio::runtime::Runtime) -> PgConnection {
        PgConnection::connect(&cluster.config(), runtime.handle().clone(), Role::Writer, TIMEOUT).unwrap()
    }

    #[test]
    fn parameters_are_numbered_for_postgres_outside_strings_identifiers_and_comments() {
        let cases = [
            ("SELECT ?1, ?2", "SELECT $1, $2"),
            ("SELECT ?10 + ?1", "SELECT $10 + $1"),
            ("SELECT '?1', ?1", "SELECT '?1', $1"),
            ("SELECT 'it''s ?1', ?2", "SELECT 'it''s ?1', $2"),
            ("SELECT \"odd?1\" FROM t WHERE a = ?3", "SELECT \"odd?1\" FROM t WHERE a = $3"),
            ("SELECT ?1 -- not ?2\n, ?2", "SELECT $1 -- not ?2\n, $2"),
            ("SELECT /* ?1 */ ?2 /*/ ?3 */", "SELECT /* ?1 */ $2 /*/ ?3 */"),
            ("SELECT a - ?1", "SELECT a - $1"),
            ("SELECT a / ?1", "SELECT a / $1"),
            ("SELECT 'unterminated ?1", "SELECT 'unterminated ?1"),
            ("SELECT 'ü', ?1", "SELECT 'ü', $1"),
        ];
        for (ledger, postgres) in cases {
            assert_eq!(numbered_parameters(ledger).unwrap(), postgres, "{ledger}");
        }
        for bare in ["SELECT ?", "SELECT ?, ?1", "SELECT ?a"] {
            assert!(matches!(numbered_parameters(bare), Err(LedgerError::InvalidInput(_))), "{bare}");
        }
    }

    #[test]
    fn arguments_are_matched_to_parameter_types_before_sending() {
        assert!(matches!(bind_one(Arg::Int(7), &Type::INT8), Ok(Bound::Int8(7))));
        assert!(matches!(bind_one(Arg::Int(7), &Type::INT4), Ok(Bound::Int4(7))));
        assert!(matches!(bind_one(Arg::Int(i64::MAX), &Type::INT4), Err(LedgerError::InvalidInput(_))));
        assert!(matches!(bind_one(Arg::Text("x"), &Type::INT8), Err(LedgerError::InvalidInput(_))));
        assert!(matches!(bind_one(Arg::Bytes(&[1]), &Type::TEXT), Err(LedgerError::InvalidInput(_))));
        assert!(matches!(bind_one(Arg::Null, &Type::BYTEA), Ok(Bound::Null)));
        assert!(matches!(bind(&[Arg::Int(1)], &[]), Err(LedgerError::InvalidInput(_))));
    }

    #[test]
    fn every_value_type_and_null_round_trips_through_a_real_table() {
        let cluster = PgCluster::start().unwrap();
        let runtime = runtime();
        let conn = connect(&cluster, &runtime);
        assert_eq!(conn.dialect(), Dialect::Postgres);
        conn.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, i BIGINT, s TEXT, b BYTEA)").unwrap();
        let bytes = vec![0u8, 1, 0xff, b'?'];
        let inserted = conn
            .execute("INSERT INTO t (id, i, s, b) VALUES (?1, ?2, ?3, ?4)", args![1i64, i64::MIN, "ü '?1'", &bytes])
            .unwrap();
        assert_eq!(inserted, 1);
        let none_i: Option<i64> = None;
        let none_s: Option<&str> = None;
        let none_b: Option<&[u8]> = None;
        conn.execute("INSERT INTO t (id, i, s, b) VALUES (?1, ?2, ?3, ?4)", args![2i64, none_i, none_s, none_b])
            .unwrap();
        let rows = conn.query("SELECT i, s, b FROM t WHERE id = ?1", args![1i64]).unwrap();
        assert_eq!(rows, vec![Row::new(vec![Value::Int(i64::MIN), Value::Text("ü '?1'".into()), Value::Bytes(bytes)])]);
        let row = conn.query_one("SELECT i, s, b FROM t WHERE id = ?1", args![2i64], "t").unwrap();
        assert_eq!(row, Row::new(vec![Value::Null, Value::Null, Value::Null]));
        assert_eq!(row.get::<Option<String>>(1, "t.s").unwrap(), None);
        // A parameter used twice is bound once.
        let count = conn.query_one("SELECT count(*) FROM t WHERE id = ?1 OR id + 1 = ?1", args![2i64], "t").unwrap();
        assert_eq!(count.get::<i64>(0, "count").unwrap(), 2);
        assert!(conn.query_opt("SELECT i FROM t WHERE id = ?1", args![99i64]).unwrap().is_none());
        assert_eq!(conn.execute("UPDATE t SET i = i WHERE id >= ?1", args![0i64]).unwrap(), 2);

        // Narrower integers and booleans read as Int; NUMERIC and other types are corruption.
        let row = conn.query_one("SELECT 7::int4, 8::int2, true, NULL::int4, 'v'::varchar", args![], "x").unwrap();
        assert_eq!(
            row,
            Row::new(vec![Value::Int(7), Value::Int(8), Value::Int(1), Value::Null, Value::Text("v".into())])
        );
        let sum = conn.query("SELECT SUM(i) FROM t", args![]);
        assert!(matches!(sum, Err(LedgerError::Corrupt(_))), "{sum:?}");
        let cast = conn.query_one("SELECT CAST(SUM(id) AS BIGINT) FROM t", args![], "sum").unwrap();
        assert_eq!(cast.get::<i64>(0, "sum").unwrap(), 3);
        assert!(matches!(conn.query("SELECT now()", args![]), Err(LedgerError::Corrupt(_))));
        // A wrong argument type is refused before sending; the statements stay cached.
        assert!(matches!(
            conn.execute("UPDATE t SET i = ?1 WHERE id = 1", args!["x"]),
            Err(LedgerError::InvalidInput(_))
        ));
        assert!(conn.statements_cached() >= 5);
        assert!(conn.is_reusable());
    }

    #[test]
    fn errors_are_sorted_by_cause() {
        let cluster = PgCluster::start().unwrap();
        let runtime = runtime();
        let conn = connect(&cluster, &runtime);
        conn.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL CHECK (v >= 0))").unwrap();
        conn.execute("INSERT INTO t VALUES (?1, ?2)", args![1i64, 0i64]).unwrap();
        let duplicate = conn.execute("INSERT INTO t VALUES (?1, ?2)", args![1i64, 0i64]).unwrap_err();
        assert!(matches!(duplicate, LedgerError::Invariant(_)), "{duplicate:?}");
        let check = conn.execute("INSERT INTO t VALUES (?1, ?2)", args![2i64, -1i64]).unwrap_err();
        assert!(matches!(check, LedgerError::Invariant(_)), "{check:?}");
        let data = conn.query("SELECT ?1 / 0", args![1i64]).unwrap_err();
        assert!(matches!(data, LedgerError::InvalidInput(_)), "{data:?}");
        let syntax = conn.query("SELEC 1", args![]).unwrap_err();
        assert!(
            matches!(&syntax, LedgerError::Unavailable(Unavailable::Postgres(PostgresError::Refused(e))) if e.code() == "42601"),
            "{syntax:?}"
        );
        // The message names codes and schema objects, never a value.
        let secret = "4000123412341234";
        conn.batch_execute("CREATE TABLE a (account TEXT PRIMARY KEY)").unwrap();
        conn.execute("INSERT INTO a VALUES (?1)", args![secret]).unwrap();
        let raw = runtime.block_on(conn.client.execute("INSERT INTO a VALUES ($1)", &[&secret])).unwrap_err();
        assert!(raw.as_db_error().unwrap().detail().unwrap().contains(secret), "the server's detail quotes the value");
        let sorted = postgres_error(raw);
        assert!(matches!(sorted, LedgerError::Invariant(_)), "{sorted:?}");
        assert!(!format!("{sorted} {sorted:?}").contains(secret), "{sorted:?}");
        let raw = runtime.block_on(conn.client.query("SELECT ($1::text || 'x')::bigint", &[&secret])).unwrap_err();
        assert!(raw.as_db_error().unwrap().message().contains(secret), "the server's message quotes the value");
        let sorted = postgres_error(raw);
        assert!(matches!(sorted, LedgerError::InvalidInput(_)), "{sorted:?}");
        assert!(!format!("{sorted} {sorted:?}").contains(secret), "{sorted:?}");

        // A connection the server ended is unavailable, not retryable, and not pooled again.
        let other = connect(&cluster, &runtime);
        let terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE pid <> pg_backend_pid() AND datname = current_database()";
        other.execute(terminate, args![]).unwrap();
        let mut closed = None;
        for _ in 0..200 {
            if let Err(error) = conn.query("SELECT 1", args![]) {
                closed = Some(error);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let closed = closed.expect("the terminated connection kept answering");
        assert!(closed.is_unavailable() && !must_retry(&closed), "{closed:?}");
        assert!(!conn.is_reusable());
        let after = conn.query("SELECT 1", args![]).unwrap_err();
        assert!(after.is_unavailable(), "{after:?}");
    }

    #[test]
    fn a_lost_race_is_retryable_and_retried() {
        let cluster = PgCluster::start().unwrap();
        let runtime = runtime();
        let mut first = connect(&cluster, &runtime);
        let second = connect(&cluster, &runtime);
        first.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)").unwrap();
        first.execute("INSERT INTO t VALUES (1, 0), (2, 0)", args![]).unwrap();

        // A lost update: both read the row, the other writes it and commits first.
        let tx = first.begin(Isolation::RepeatableRead).unwrap();
        tx.query("SELECT v FROM t WHERE id = 1", args![]).unwrap();
        {
            let mut second = second;
            let other = second.begin(Isolation::RepeatableRead).unwrap();
            other.query("SELECT v FROM t WHERE id = 1", args![]).unwrap();
            other.execute("UPDATE t SET v = 1 WHERE id = 1", args![]).unwrap();
            other.commit().unwrap();
        }
        let error = tx.execute("UPDATE t SET v = 1 WHERE id = 1", args![]).unwrap_err();
        drop(tx);
        assert!(must_retry(&error), "{error:?}");
        assert!(error.is_unavailable(), "an exhausted retry fails closed: {error:?}");
        assert!(first.is_reusable());

        // The same race inside `write_transaction`: the first attempt loses, the second commits.
        let racer = connect(&cluster, &runtime);
        let mut attempts_seen = 0;
        let (balance, attempts) = write_transaction(&mut first, None, |tx, _| {
            attempts_seen += 1;
            let read = tx.query_one("SELECT v FROM t WHERE id = 1", args![], "t.v")?.get::<i64>(0, "t.v")?;
            if attempts_seen == 1 {
                racer.execute("UPDATE t SET v = v + 10 WHERE id = 1", args![])?;
            }
            tx.execute("UPDATE t SET v = ?1 WHERE id = 1", args![read + 1])?;
            Ok(read + 1)
        })
        .unwrap();
        assert_eq!((attempts, attempts_seen), (2, 2));
        assert_eq!(balance, 12, "the retry read the racer's write: no update was lost");
        let stored = first.query_one("SELECT v FROM t WHERE id = 1", args![], "t.v").unwrap();
        assert_eq!(stored.get::<i64>(0, "t.v").unwrap(), 12);

        // A race lost on every attempt ends as the retryable error, after the bound.
        let mut attempts_seen = 0;
        let error = write_transaction(&mut first, None, |tx, _| {
            attempts_seen += 1;
            tx.query("SELECT v FROM t WHERE id = 2", args![])?;
            racer.execute("UPDATE t SET v = v + 1 WHERE id = 2", args![])?;
            tx.execute("UPDATE t SET v = 0 WHERE id = 2", args![])?;
            Ok(())
        })
        .unwrap_err();
        assert!(must_retry(&error), "{error:?}");
        assert_eq!(attempts_seen, WRITE_ATTEMPTS_MAX);
        assert!(first.is_reusable());
    }

    /// A key another transaction stored after this one's snapshot: the check before the INSERT
    /// passes, the INSERT is refused, and the next attempt's check sees the key. A key refused
    /// on every attempt is reported, on the last, as the invariant error it is.
    #[test]
    fn a_unique_violation_is_run_again_and_reported_only_when_it_persists() {
        let cluster = PgCluster::start().unwrap();
        let runtime = runtime();
        let mut first = connect(&cluster, &runtime);
        let racer = connect(&cluster, &runtime);
        first.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY)").unwrap();

        let mut seen = Vec::new();
        let (inserted, attempts) = write_transaction(&mut first, None, |tx, attempt| {
            let exists = tx.query_opt("SELECT 1 FROM t WHERE id = 1", args![])?.is_some();
            seen.push((attempt, exists));
            if exists {
                return Ok(false);
            }
            if !attempt.is_last() && seen.len() == 1 {
                racer.execute("INSERT INTO t VALUES (1)", args![])?;
            }
            tx.execute("INSERT INTO t VALUES (1)", args![])?;
            Ok(true)
        })
        .unwrap();
        assert_eq!((inserted, attempts), (false, 2), "the second attempt saw the racer's key: {seen:?}");

        let mut attempts_seen = 0;
        let error = write_transaction(&mut first, None, |tx, _| {
            attempts_seen += 1;
            tx.execute("INSERT INTO t VALUES (1)", args![])?;
            Ok(())
        })
        .unwrap_err();
        assert!(is_unique_refusal(&error) && !error.is_unavailable(), "{error:?}");
        assert_eq!(attempts_seen, WRITE_ATTEMPTS_MAX);
        // Other constraints are the code's own business: never run again.
        first.batch_execute("CREATE TABLE c (v BIGINT CHECK (v >= 0))").unwrap();
        let mut attempts_seen = 0;
        let error = write_transaction(&mut first, None, |tx, _| {
            attempts_seen += 1;
            tx.execute("INSERT INTO c VALUES (-1)", args![])?;
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(error, LedgerError::Invariant(_)) && !is_unique_refusal(&error), "{error:?}");
        assert_eq!(attempts_seen, 1);
    }

    /// The lock is taken before the snapshot: a transaction that waited for it sees what the
    /// holder committed. (Taken after a first read, the snapshot would predate the holder's
    /// commit and the write below would build on a value no longer there.)
    #[test]
    fn a_write_transaction_takes_its_lock_before_its_snapshot() {
        let cluster = PgCluster::start().unwrap();
        let runtime = runtime();
        let mut first = connect(&cluster, &runtime);
        let mut holder = connect(&cluster, &runtime);
        first
            .batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL); CREATE TABLE u (v BIGINT)")
            .unwrap();
        first.execute("INSERT INTO t VALUES (1, 0)", args![]).unwrap();
        let observer = connect(&cluster, &runtime);

        let held = holder.begin(Isolation::ReadCommitted).unwrap();
        held.batch_execute("LOCK TABLE t IN EXCLUSIVE MODE").unwrap();
        let copied = std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                write_transaction(&mut first, Some("LOCK TABLE t IN SHARE MODE"), |tx, _| {
                    let v = tx.query_one("SELECT v FROM t WHERE id = 1", args![], "t.v")?.get::<i64>(0, "t.v")?;
                    tx.execute("INSERT INTO u VALUES (?1)", args![v])?;
                    Ok(v)
                })
            });
            let waiting = "SELECT count(*) FROM pg_locks WHERE relation = 't'::regclass AND NOT granted";
            let mut blocked = false;
            for _ in 0..1_000 {
                let row = observer.query_one(waiting, args![], "count").unwrap();
                if row.get::<i64>(0, "count").unwrap() == 1 {
                    blocked = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(blocked, "the write transaction did not wait for the lock");
            held.execute("UPDATE t SET v = 7 WHERE id = 1", args![]).unwrap();
            held.commit().unwrap();
            waiter.join().unwrap()
        });
        assert_eq!(copied.unwrap(), (7, 1), "the snapshot was taken after the lock was granted");
    }

    #[test]
    fn a_deadlock_is_retryable_and_the_other_transaction_commits() {
        let cluster = PgCluster::start().unwrap();
        let runtime = runtime();
        let mut first = connect(&cluster, &runtime);
        let mut second = connect(&cluster, &runtime);
        first.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)").unwrap();
        first.execute("INSERT INTO t VALUES (1, 0), (2, 0)", args![]).unwrap();
        for conn in [&first, &second] {
            conn.batch_execute("SET deadlock_timeout = '50ms'").unwrap();
        }
        // Each locks one row, then asks for the other's.
        let both_locked = std::sync::Barrier::new(2);
        let lock_in_order = |conn: &mut PgConnection, one: i64, other: i64| -> Result<(), LedgerError> {
            let tx = conn.begin(Isolation::ReadCommitted)?;
            let locked = tx.execute("UPDATE t SET v = v + 1 WHERE id = ?1", args![one]);
            both_locked.wait();
            locked?;
            tx.execute("UPDATE t SET v = v + 1 WHERE id = ?1", args![other])?;
            tx.commit()
        };
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| lock_in_order(&mut first, 1, 2));
            let b = scope.spawn(|| lock_in_order(&mut second, 2, 1));
            (a.join().unwrap(), b.join().unwrap())
        });
        let lost = match (a, b) {
            (Ok(()), Err(lost)) | (Err(lost), Ok(())) => lost,
            other => panic!("exactly one of the two must lose: {other:?}"),
        };
        assert!(must_retry(&lost), "{lost:?}");
        let sum = first.query_one("SELECT CAST(SUM(v) AS BIGINT) FROM t", args![], "sum").unwrap();
        assert_eq!(sum.get::<i64>(0, "sum").unwrap(), 2, "only the winner's two updates are stored");
    }

    #[test]
    fn a_failed_statement_fails_the_commit_unless_rolled_back_to_a_savepoint() {
        let cluster = PgCluster::start().unwrap();
        let runtime = runtime();
        let mut conn = connect(&cluster, &runtime);
        conn.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY)").unwrap();

        let tx = conn.begin(Isolation::RepeatableRead).unwrap();
        tx.execute("INSERT INTO t VALUES (1)", args![]).unwrap();
        tx.savepoint(Savepoint("command")).unwrap();
        assert!(tx.execute("INSERT INTO t VALUES (1)", args![]).is_err());
        tx.rollback_to(Savepoint("command")).unwrap();
        tx.release(Savepoint("command")).unwrap();
        tx.execute("INSERT INTO t VALUES (2)", args![]).unwrap();
        tx.commit().unwrap();

        let tx = conn.begin(Isolation::RepeatableRead).unwrap();
        tx.execute("INSERT INTO t VALUES (3)", args![]).unwrap();
        assert!(tx.execute("INSERT INTO t VALUES (1)", args![]).is_err());
        let error = tx.commit().unwrap_err();
        assert!(
            matches!(error, LedgerError::Unavailable(Unavailable::Postgres(PostgresError::TransactionFailed))),
            "{error:?}"
        );

        {
            let tx = conn.begin(Isolation::ReadCommitted).unwrap();
            tx.execute("INSERT INTO t VALUES (4)", args![]).unwrap();
            // Dropped without commit: rolled back.
        }
        assert!(conn.is_reusable());
        let ids = conn.query("SELECT id FROM t ORDER BY id", args![]).unwrap();
        let ids: Vec<i64> = ids.iter().map(|r| r.get(0, "t.id").unwrap()).collect();
        assert_eq!(ids, vec![1, 2]);
    }

    #[test]
    fn a_reader_cannot_write_and_a_writer_refuses_asynchronous_commit() {
        let cluster = PgCluster::start().unwrap();
        let runtime = runtime();
        let writer = connect(&cluster, &runtime);
        writer.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY)").unwrap();
        let reader = PgConnection::connect(&cluster.config(), runtime.handle().clone(), Role::Reader, TIMEOUT).unwrap();
        assert!(reader.query("SELECT id FROM t", args![]).unwrap().is_empty());
        let refused = reader.execute("INSERT INTO t VALUES (1)", args![]).unwrap_err();
        assert!(refused.is_unavailable(), "{refused:?}");

        check_durable(&writer).unwrap();
        writer.batch_execute("SET synchronous_commit = off").unwrap();
        let error = check_durable(&writer).unwrap_err().to_string();
        assert!(error.contains("synchronous_commit=off"), "{error}");
    }
}
