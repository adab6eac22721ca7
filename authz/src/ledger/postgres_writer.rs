//! PostgreSQL's group commit and read pool: the backend of a ledger shared by several
//! authorization servers.
//!
//! Each instance has its own writer thread and its own writer connection. A group runs in one
//! REPEATABLE READ transaction, each command in its own savepoint, exactly as on SQLite; what
//! differs is that another instance may book the same SIM or account at the same moment. Every
//! booking writes the rows its decision rests on (the SIM's counter, the account's balance and
//! password tries, the original of a reversal), so of two transactions that decided on the
//! same row, the second to write it fails (SQLSTATE 40001, or 40P01 for a deadlock) and is
//! rolled back whole; so is one refused by a unique key that the other stored after its
//! snapshot. [`write_transaction`] then runs the whole group again from its BEGIN, at most
//! `WRITE_ATTEMPTS_MAX` times, on a fresh snapshot. A command's own refusal (a conflict, a
//! missing account) rolls back to its savepoint and stays that command's answer; a lost race
//! is never a command's answer: it is retried, or, when retries run out, every command of the
//! group fails as unavailable (503), and nothing of it was stored. No command is answered
//! before COMMIT.
//!
//! One rule is not about rows a booking writes: nothing is booked into a business day whose
//! clearing file is stored (`clearing::check_day_open`). A booking reads `clearing_files`,
//! the file's export writes it, and neither writes what the other read; so a group that books
//! holds `clearing_files` in SHARE mode and one that stores a file holds it in EXCLUSIVE mode,
//! both taken before the group's snapshot ([`cutoff_lock`]). A booking that began before the
//! file was stored commits before it; one that begins after sees the file and is refused.
//! (SERIALIZABLE would keep these rules too, but it tracks reads by index page and fails
//! bookings that touched neighbouring keys: 3 to 5 % of requests at two instances under load,
//! docs/PERFORMANCE.md.)
//!
//! The PostgreSQL client is async; the ledger's reads and commands are blocking code on the
//! writer thread and on tokio's blocking threads. The connections live on a small runtime of
//! the ledger's own ([`PgRuntime`]), so that they make progress whatever runtime (or none) the
//! caller runs on, and the blocking calls wait on it.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use super::config::LedgerConfig;
use super::error::{LedgerError, Unavailable};
use super::postgres::{Attempt, Isolation, PgConnection, Role, Savepoint, must_retry, write_transaction};
use super::postgres_pool::{PgPool, PoolOptions};
use super::schema_postgres;
use super::sql::Sql;
use super::writer::{Command, GroupOutcome, GroupStore, apply};

/// Where a PostgreSQL ledger is and how long one call to it may take.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// How to reach the database (its password, if any, is redacted from Debug output).
    pub connect: tokio_postgres::Config,
    /// How long one call (connect, statement, COMMIT) may take before the connection is given
    /// up and the request fails as unavailable.
    pub call_timeout: Duration,
}

/// The savepoint of the command running in a group.
const COMMAND: Savepoint = Savepoint("ledger_command");

/// The runtime the ledger's PostgreSQL connections run on: one worker thread, shut down in the
/// background when the last part of the ledger that uses it is dropped (a runtime may not be
/// dropped inside another one's async context otherwise).
pub(crate) struct PgRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl PgRuntime {
    fn start() -> Result<Arc<Self>, LedgerError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ledger-postgres")
            .enable_all()
            .build()
            .map_err(|error| LedgerError::Unavailable(Unavailable::Spawn(error)))?;
        Ok(Arc::new(Self { runtime: Some(runtime) }))
    }

    fn handle(&self) -> Result<Handle, LedgerError> {
        self.runtime
            .as_ref()
            .map(|runtime| runtime.handle().clone())
            .ok_or(LedgerError::Unavailable(Unavailable::WriterStopped))
    }
}

impl Drop for PgRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The read side of a PostgreSQL ledger: a pool of read-only connections, and the runtime they
/// run on.
pub(crate) struct PgReaders {
    pool: Arc<PgPool>,
    _runtime: Arc<PgRuntime>,
}

impl PgReaders {
    /// Runs `read` on a pooled connection; each statement sees the latest commit.
    pub(crate) async fn read<T, F>(&self, read: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Sql) -> Result<T, LedgerError> + Send + 'static,
    {
        self.pool.read(read).await
    }

    /// Runs `read` in one REPEATABLE READ transaction: all of its statements see one snapshot.
    pub(crate) async fn snapshot<T, F>(&self, read: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Sql) -> Result<T, LedgerError> + Send + 'static,
    {
        self.pool
            .run(move |conn| {
                let tx = conn.begin(Isolation::RepeatableRead)?;
                let value = read(&tx)?;
                tx.commit()?;
                Ok(value)
            })
            .await
    }

    /// The schema version, read through the pool (the readiness check).
    pub(crate) async fn schema_version(&self) -> Result<i64, LedgerError> {
        self.pool.run(|conn| schema_postgres::current_version(conn)).await
    }
}

/// The writer's side: one read-write connection, made again when it broke.
pub(crate) struct PgGroups {
    connect: tokio_postgres::Config,
    call_timeout: Duration,
    handle: Handle,
    conn: Option<PgConnection>,
    _runtime: Arc<PgRuntime>,
}

impl PgGroups {
    /// The writer connection, connected again if the last one broke (the server restarted, a
    /// call timed out). Fails as unavailable while the server cannot be reached.
    fn connection(&mut self) -> Result<&mut PgConnection, LedgerError> {
        if self.conn.as_ref().is_some_and(|conn| !conn.is_reusable()) {
            tracing::warn!("the ledger's PostgreSQL writer connection broke; connecting again");
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn =
                Some(PgConnection::connect(&self.connect, self.handle.clone(), Role::Writer, self.call_timeout)?);
        }
        self.conn.as_mut().ok_or(LedgerError::Unavailable(Unavailable::WriterStopped))
    }
}

impl GroupStore for PgGroups {
    fn execute(&mut self, commands: &[Command], stored_answer_bytes_max: usize) -> GroupOutcome {
        let lock = cutoff_lock(commands);
        let group = self.connection().and_then(|conn| {
            write_transaction(conn, lock, |tx, attempt| run_group(tx, attempt, commands, stored_answer_bytes_max))
        });
        match group {
            Ok((results, attempts)) => {
                if attempts > 1 {
                    tracing::debug!(attempts, commands = commands.len(), "a group commit lost a race and ran again");
                }
                GroupOutcome { results, committed: true, attempts }
            }
            Err(error) => {
                // Nothing of the group was stored: the server rolled it back (a lost race after
                // the last attempt, a broken connection, a failed savepoint or COMMIT).
                tracing::error!(%error, commands = commands.len(), "a ledger group commit failed: none of it was stored");
                let results = (0..commands.len()).map(|_| Err(LedgerError::Unavailable(Unavailable::GroupAborted)));
                let attempts = if must_retry(&error) { super::postgres::WRITE_ATTEMPTS_MAX } else { 1 };
                GroupOutcome { results: results.collect(), committed: false, attempts }
            }
        }
    }
}

/// The lock on `clearing_files` a group takes before its snapshot (see the module's text):
/// EXCLUSIVE when it stores a clearing file, SHARE when it books into a business day, none
/// otherwise. SHARE does not conflict with SHARE: bookings of several instances run at once.
fn cutoff_lock(commands: &[Command]) -> Option<&'static str> {
    if commands.iter().any(|command| matches!(command, Command::StoreClearingFile(_))) {
        Some("LOCK TABLE clearing_files IN EXCLUSIVE MODE")
    } else if commands.iter().any(|command| matches!(command, Command::CommitSession(_) | Command::CommitReversal(_))) {
        Some("LOCK TABLE clearing_files IN SHARE MODE")
    } else {
        None
    }
}

/// One attempt at a group: every command in its own savepoint. The outer error fails the
/// attempt (and, if it is a lost race, makes [`write_transaction`] run the group again); an
/// inner error is one command's refusal, rolled back alone.
fn run_group(
    tx: &super::postgres::PgTransaction<'_>,
    attempt: Attempt,
    commands: &[Command],
    stored_answer_bytes_max: usize,
) -> Result<Vec<Result<(), LedgerError>>, LedgerError> {
    let mut results = Vec::with_capacity(commands.len());
    for command in commands {
        tx.savepoint(COMMAND)?;
        match apply(tx, command, stored_answer_bytes_max) {
            Ok(()) => {
                tx.release(COMMAND)?;
                results.push(Ok(()));
            }
            // A lost race: no command of this attempt may stand, the next one decides afresh.
            Err(error) if attempt.ends_on(&error) => return Err(error),
            Err(error) => {
                tx.rollback_to(COMMAND)?;
                tx.release(COMMAND)?;
                results.push(Err(error));
            }
        }
    }
    Ok(results)
}

/// Connects the writer, migrates the schema and opens the read pool. Blocking; it runs the
/// connecting on a thread of its own, so that it may be called from an async worker too (a
/// blocking call into a runtime is refused there).
pub(crate) fn open(store: &PostgresStore, config: &LedgerConfig) -> Result<(PgGroups, PgReaders), LedgerError> {
    let runtime = PgRuntime::start()?;
    let handle = runtime.handle()?;
    let opened = std::thread::scope(|scope| {
        let connecting = std::thread::Builder::new()
            .name("ledger-postgres-open".to_owned())
            .spawn_scoped(scope, || open_connections(store, config, &handle))
            .map_err(|error| LedgerError::Unavailable(Unavailable::Spawn(error)))?;
        connecting.join().map_err(|_| LedgerError::Unavailable(Unavailable::ReadTask))?
    })?;
    let (conn, pool) = opened;
    let groups = PgGroups {
        connect: store.connect.clone(),
        call_timeout: store.call_timeout,
        handle,
        conn: Some(conn),
        _runtime: Arc::clone(&runtime),
    };
    Ok((groups, PgReaders { pool, _runtime: runtime }))
}

fn open_connections(
    store: &PostgresStore,
    config: &LedgerConfig,
    handle: &Handle,
) -> Result<(PgConnection, Arc<PgPool>), LedgerError> {
    let mut conn = PgConnection::connect(&store.connect, handle.clone(), Role::Writer, store.call_timeout)?;
    schema_postgres::migrate(&mut conn)?;
    let options = PoolOptions {
        size: config.read_connections,
        role: Role::Reader,
        wait_timeout: config.read_timeout(),
        call_timeout: store.call_timeout,
    };
    let pool = PgPool::open_postgres(store.connect.clone(), handle.clone(), options)?;
    Ok((conn, pool))
}

#[cfg(test)]
mod tests {
    use mps_protocol::{Currency, OrderNo};

    use crate::ledger::testing::{
        Backend, DAY, TestStore, account, approval, changed, debit, register, sim_id, txn_id,
    };
    use crate::ledger::{Conflict, Ledger, LedgerConfig, LedgerError, StoredClearingFile};

    /// How one commit through one of two instances ended.
    #[derive(Debug, Default)]
    struct Tally {
        approved: usize,
        refused: usize,
        unavailable: usize,
    }

    /// Two instances on one database, as two authorization servers behind a gateway: funds for
    /// fifty payments, two hundred SIMs paying at once, half through each instance. Neither
    /// instance's in-memory lock sees the other's payments; the database alone keeps the
    /// balance.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_instances_approve_exactly_the_funds_of_one_account() {
        const SIMS: u64 = 200;
        let store = TestStore::new(Backend::Postgres);
        let first = store.open(LedgerConfig::default());
        let second = store.open(LedgerConfig::default());
        first.create_account(debit(1, 50 * 100)).await.unwrap();
        for n in 1..=SIMS {
            register(&first, n, &[1]).await;
        }
        let tasks: Vec<_> = (1..=SIMS)
            .map(|n| {
                let ledger = if n % 2 == 0 { first.clone() } else { second.clone() };
                tokio::spawn(async move { (n, ledger.commit_session(approval(n, 1, 1, 100)).await) })
            })
            .collect();
        let mut tally = Tally::default();
        let mut approved = Vec::new();
        for task in tasks {
            let (n, result) = task.await.unwrap();
            match result {
                Ok(()) => {
                    tally.approved += 1;
                    approved.push(n);
                }
                Err(LedgerError::Conflict(Conflict::InsufficientFunds)) => tally.refused += 1,
                Err(error) if error.is_unavailable() => tally.unavailable += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        let retries = first.stats().group_retries + second.stats().group_retries;
        println!("{tally:?}, groups run again: {retries}");
        assert!(tally.approved <= 50, "{tally:?}");
        assert!(
            tally.approved == 50 || tally.unavailable > 0,
            "funds were left while payments were refused: {tally:?}"
        );
        let record = second.account(&account(1)).await.unwrap().unwrap();
        assert_eq!(record.balance, 5_000 - 100 * tally.approved as i64);
        // Every approval answered is booked, and nothing else is.
        let booked: Vec<_> = first.approved_transactions(DAY).await.unwrap();
        assert_eq!(booked.len(), tally.approved);
        for n in approved {
            assert!(booked.iter().any(|t| t.transaction.txn_id == txn_id(n, 1)), "approval of SIM {n} not booked");
        }
        assert_eq!(first.postings_sum_by_currency().await.unwrap(), vec![(Currency::EUR, 0)]);
        first.audit().await.unwrap();
    }

    /// One SIM's session n sent to both instances at once (a retransmission that the gateway
    /// sent to the second instance as well): exactly one books it, the other finds the counter
    /// moved; the SIM advances once per booked session.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_session_through_two_instances_is_booked_once() {
        const ROUNDS: u64 = 30;
        let store = TestStore::new(Backend::Postgres);
        let first = store.open(LedgerConfig::default());
        let second = store.open(LedgerConfig::default());
        first.create_account(debit(1, 1_000_000)).await.unwrap();
        register(&first, 1, &[1]).await;
        let mut booked = 0u64;
        for _ in 0..ROUNDS {
            let counter = booked + 1;
            let via_first = approval(1, counter, 1, 10);
            let via_second = changed(approval(1, counter, 1, 10), |t| {
                t.txn_id = txn_id(2, counter);
                t.order_no = OrderNo::new(&format!("B1-{counter}")).unwrap();
            });
            let (a, b) = tokio::join!(first.commit_session(via_first), second.commit_session(via_second));
            let stale = |r: &Result<(), LedgerError>| {
                matches!(r, Err(LedgerError::Conflict(Conflict::StaleCounter)))
                    || r.as_ref().is_err_and(|e| e.is_unavailable())
            };
            match (&a, &b) {
                (Ok(()), Ok(())) => panic!("session {counter} was booked by both instances"),
                (Ok(()), other) | (other, Ok(())) => {
                    assert!(stale(other), "session {counter}: {other:?}");
                    booked += 1;
                }
                (a, b) => assert!(stale(a) && stale(b), "session {counter}: {a:?} {b:?}"),
            }
            let sim = first.sim(&crate::ledger::testing::sim_id(1)).await.unwrap().unwrap();
            assert_eq!(sim.counter.value(), booked);
        }
        assert!(booked > 0, "no session was booked at all");
        let transactions = first.approved_transactions(DAY).await.unwrap();
        assert_eq!(transactions.len() as u64, booked);
        for counter in 1..=booked {
            let rows = transactions.iter().filter(|t| t.transaction.counter.value() == counter).count();
            assert_eq!(rows, 1, "session {counter}");
        }
        let balance = second.account(&account(1)).await.unwrap().unwrap().balance;
        assert_eq!(balance, 1_000_000 - 10 * booked as i64);
        first.audit().await.unwrap();
    }

    /// A plain connection to the test store's database, beside the ledgers: it holds locks the
    /// way another instance's transaction in flight would, and watches who waits for them.
    async fn raw_connection(store: &TestStore) -> tokio_postgres::Client {
        let crate::ledger::Store::Postgres(postgres) = store.store() else { unreachable!("a PostgreSQL store") };
        let (client, connection) = postgres.connect.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    /// Waits (at most ten seconds) until `count_sql` counts one waiting lock or more; false if
    /// `done` finished first or time ran out.
    async fn someone_waits<T>(
        observer: &tokio_postgres::Client,
        count_sql: &str,
        done: &tokio::task::JoinHandle<T>,
    ) -> bool {
        for _ in 0..1_000 {
            if done.is_finished() {
                return false;
            }
            let waiting: i64 = observer.query_one(count_sql, &[]).await.unwrap().get(0);
            if waiting > 0 {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    /// A booking of a day in flight on one instance while another stores that day's clearing
    /// file: the file waits for the booking, so nothing is booked into the day after its file
    /// is stored. (Without the lock on `clearing_files`, the booking's snapshot, taken before
    /// the file was stored, would let it commit into the cleared day.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_clearing_file_waits_for_a_booking_of_its_day_in_flight() {
        let store = TestStore::new(Backend::Postgres);
        let first = store.open(LedgerConfig::default());
        let second = store.open(LedgerConfig::default());
        first.create_account(debit(1, 1_000)).await.unwrap();
        register(&first, 1, &[1]).await;
        let mut holder = raw_connection(&store).await;
        let observer = raw_connection(&store).await;

        // Holding the SIM's row stalls the booking at its last write, its snapshot taken.
        let held = holder.transaction().await.unwrap();
        held.execute("SELECT 1 FROM sims WHERE sim_id = $1 FOR UPDATE", &[&sim_id(1).as_str()]).await.unwrap();
        let booking = tokio::spawn({
            let first = first.clone();
            async move { first.commit_session(approval(1, 1, 1, 10)).await }
        });
        let any_wait = "SELECT count(*) FROM pg_locks WHERE NOT granted";
        assert!(someone_waits(&observer, any_wait, &booking).await, "the booking did not stall on the held row");

        let file = StoredClearingFile {
            business_day: DAY,
            sha256: "0".repeat(64),
            bytes: b"{}".to_vec(),
            jws: "header..signature".to_owned(),
        };
        let storing = tokio::spawn({
            let second = second.clone();
            async move { second.store_clearing_file(file).await }
        });
        let file_waits = "SELECT count(*) FROM pg_locks WHERE relation = 'clearing_files'::regclass AND NOT granted";
        assert!(
            someone_waits(&observer, file_waits, &storing).await,
            "the clearing file was stored while a booking of its day was in flight: {:?}",
            storing.is_finished()
        );
        held.rollback().await.unwrap();
        booking.await.unwrap().unwrap();
        storing.await.unwrap().unwrap();

        assert_eq!(first.approved_transactions(DAY).await.unwrap().len(), 1, "booked before the file");
        let late = second.commit_session(approval(1, 2, 1, 10)).await.unwrap_err();
        assert!(matches!(late, LedgerError::Conflict(Conflict::DayCleared(_))), "{late:?}");
    }

    /// One account number opened through an instance while another instance's transaction
    /// stores it: the first's check ran on a snapshot without it and its INSERT is refused by
    /// the key; run again, it answers "already exists", never an invariant error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_key_stored_by_another_instance_meanwhile_is_already_there() {
        let store = TestStore::new(Backend::Postgres);
        let first = store.open(LedgerConfig::default());
        let mut holder = raw_connection(&store).await;
        let observer = raw_connection(&store).await;
        let held = holder.transaction().await.unwrap();
        held.execute(
            "INSERT INTO accounts (account, holder_name, kind, currency, credit_limit, balance, status,
                 password_verification_value, per_txn_limit, daily_limit, created_at)
             VALUES ($1, 'Other Instance', 'debit', 978, 0, 0, 'open', $2, 100, 100, '2025-03-07T00:00:00Z')",
            &[&account(2).expose(), &vec![0u8; 32]],
        )
        .await
        .unwrap();
        let opening = tokio::spawn({
            let first = first.clone();
            async move { first.create_account(debit(2, 0)).await }
        });
        let any_wait = "SELECT count(*) FROM pg_locks WHERE NOT granted";
        assert!(someone_waits(&observer, any_wait, &opening).await, "the opening did not wait for the other key");
        held.commit().await.unwrap();
        let refused = opening.await.unwrap().unwrap_err();
        assert!(matches!(refused, LedgerError::AlreadyExists("account")), "{refused:?}");
        assert!(first.stats().group_retries >= 1, "the group ran again on a fresh snapshot");
    }

    /// A ledger on a server that cannot be reached fails to open, as unavailable.
    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_at_open() {
        let store = TestStore::new(Backend::Postgres);
        let mut unreachable = match store.store() {
            crate::ledger::Store::Postgres(postgres) => *postgres,
            crate::ledger::Store::Sqlite(_) => unreachable!(),
        };
        unreachable.connect.port(1);
        unreachable.call_timeout = std::time::Duration::from_secs(2);
        let error =
            Ledger::open_store(&crate::ledger::Store::Postgres(Box::new(unreachable)), LedgerConfig::default(), None)
                .unwrap_err();
        assert!(error.is_unavailable(), "{error:?}");
    }
}
