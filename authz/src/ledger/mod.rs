//! The durable double-entry ledger of the issuer (DESIGN.md sections 7, 9 and 10): the last
//! stop of an authorization, where its outcome becomes durable before the answer may leave.
//!
//! SQLite in WAL mode with `synchronous=FULL`. One writer thread owns the only read-write
//! connection and commits commands in groups (`writer`); reads use a small pool of read-only
//! connections on blocking threads (`read_pool`, `queries`). Schema and migrations are in
//! `schema`, postings in `journal`, session booking in `session`, registration in
//! `registration`. docs/LEDGER.md explains the schema, the sign conventions and why each
//! command gets its own savepoint.
//!
//! Every read and every command is written once, in portable SQL, against the `Sql` trait
//! (`sql`); `sqlite` implements it for rusqlite connections and `postgres` for PostgreSQL. Each
//! backend has its own schema file with the same migrations (`schema`, `schema_postgres`), its
//! own read pool and its own transaction around a group (`writer`'s `GroupStore`: BEGIN
//! IMMEDIATE on SQLite, REPEATABLE READ with retry on PostgreSQL, in `postgres_writer`). Which
//! backend a ledger uses is its [`Store`].

mod checkpoint;
mod clearing;
mod config;
mod custody;
mod error;
mod journal;
mod model;
mod pool;
mod postgres;
mod postgres_pool;
#[cfg(any(test, feature = "testing"))]
pub mod postgres_testing;
mod postgres_writer;
mod queries;
mod read_pool;
mod registration;
mod reversal;
mod rows;
mod schema;
mod schema_postgres;
mod session;
mod sql;
mod sqlite;
mod writer;

#[cfg(test)]
pub(crate) mod testing;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{SendTimeoutError, Sender, TrySendError};
use mps_protocol::{Account, Amount, Currency, Iin, MerchantId, OrderNo, Rsn, SimId, TxnId};
use rusqlite::{Connection, OpenFlags};
use time::Date;
use tokio::sync::oneshot;

pub use clearing::{SettlementBooking, StoredClearingFile};
pub use config::LedgerConfig;
pub use custody::StoredChainKey;
pub use error::{Conflict, LedgerError, MigrationError, Unavailable};
pub use model::{
    AccountKind, AccountRecord, AccountStatus, DailyApproved, DecisionState, DeclineCode, EntryKind,
    HOLDER_NAME_CHARS_MAX, InternalAccount, InternalBalance, MERCHANT_ACCOUNT_CHARS_MAX, NewAccount, Outcome,
    PASSWORD_VERIFICATION_VALUE_LEN, PasswordEffect, SessionCommit, SessionOutcome, SimRecord, SimStatus,
    StatementLine, StoredAnswer, Transaction, TransactionRecord, WRAPPED_CHAIN_KEY_LEN,
};
pub use postgres_writer::PostgresStore;
pub use queries::AuditReport;
pub use registration::SIM_ACCOUNTS_MAX;
pub use reversal::{ReversalCommit, ReversalOutcome, ReversalReason, StoredReversal};
pub use writer::{BatchObserver, BatchReport, LedgerStats};

use postgres_writer::PgReaders;
use read_pool::ReadPool;
use registration::NewSim;
use sql::Sql;
use writer::{Command, Counters, GroupStore, Job, SqliteGroups, Writer};

/// Where a ledger keeps its books.
#[derive(Debug, Clone)]
pub enum Store {
    /// An SQLite file, written by this process alone (the embedded default).
    Sqlite(PathBuf),
    /// A PostgreSQL database, which several authorization servers may share.
    Postgres(Box<PostgresStore>),
}

/// The read side of either backend.
enum Readers {
    Sqlite(Arc<ReadPool>),
    Postgres(PgReaders),
}

impl Readers {
    /// Runs `read` on a pooled connection; each of its statements sees the latest commit.
    async fn read<T, F>(&self, read: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Sql) -> Result<T, LedgerError> + Send + 'static,
    {
        match self {
            Self::Sqlite(pool) => pool.read(read).await,
            Self::Postgres(pool) => pool.read(read).await,
        }
    }

    /// Runs `read` in one read transaction: all of its statements see one snapshot.
    async fn snapshot<T, F>(&self, read: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Sql) -> Result<T, LedgerError> + Send + 'static,
    {
        match self {
            Self::Sqlite(pool) => pool.snapshot(read).await,
            Self::Postgres(pool) => pool.snapshot(read).await,
        }
    }

    /// The schema version, read through the pool (the readiness check's read).
    async fn schema_version(&self) -> Result<i64, LedgerError> {
        match self {
            Self::Sqlite(pool) => pool.run(|conn| schema::current_version(conn)).await,
            Self::Postgres(pool) => pool.schema_version().await,
        }
    }
}

/// A handle on the ledger; clones share one writer thread and one read pool.
///
/// Opening is blocking (it may migrate the schema): call it at start-up or inside
/// `spawn_blocking`. Every other method is async and never blocks the runtime. Writes return
/// only after their group's COMMIT is on disk.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    sender: Sender<Job>,
    readers: Readers,
    config: LedgerConfig,
    counters: Arc<Counters>,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Option<checkpoint::Checkpointer>,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger").field("queued", &self.inner.sender.len()).finish_non_exhaustive()
    }
}

/// Test-only knobs of [`Ledger::open_inner`].
#[derive(Default)]
pub(crate) struct OpenOptions {
    /// Called after every group commit.
    pub observer: Option<BatchObserver>,
    /// Caps the database size (`PRAGMA max_page_count`): a way to make SQLite report a full
    /// disk on purpose. SQLite only.
    pub max_page_count: Option<i64>,
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path`, migrates its schema and starts the
    /// writer thread.
    pub fn open(path: &Path, config: LedgerConfig) -> Result<Self, LedgerError> {
        Self::open_inner(path, config, OpenOptions::default())
    }

    /// Like [`Ledger::open`], with `observer` called after every group commit (for a batch
    /// size histogram).
    pub fn open_with_observer(path: &Path, config: LedgerConfig, observer: BatchObserver) -> Result<Self, LedgerError> {
        Self::open_inner(path, config, OpenOptions { observer: Some(observer), ..OpenOptions::default() })
    }

    /// Opens the ledger in `store` (creating and migrating its schema if needed) and starts the
    /// writer thread; `observer`, if any, is called after every group commit.
    pub fn open_store(
        store: &Store,
        config: LedgerConfig,
        observer: Option<BatchObserver>,
    ) -> Result<Self, LedgerError> {
        match store {
            Store::Sqlite(path) => Self::open_inner(path, config, OpenOptions { observer, ..OpenOptions::default() }),
            Store::Postgres(postgres) => {
                config.validate()?;
                let (groups, readers) = postgres_writer::open(postgres, &config)?;
                let counters = Arc::new(Counters::default());
                Self::start(Box::new(groups), Readers::Postgres(readers), config, observer, counters, None)
            }
        }
    }

    pub(crate) fn open_inner(path: &Path, config: LedgerConfig, options: OpenOptions) -> Result<Self, LedgerError> {
        config.validate()?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags)?;
        schema::configure_writer(&conn, config.busy_timeout())?;
        schema::migrate(&mut conn)?;
        checkpoint::configure_writer(&conn, &config)?;
        if let Some(pages) = options.max_page_count {
            conn.pragma_update(None, "max_page_count", pages)?;
        }
        let readers = Readers::Sqlite(ReadPool::open_sqlite(path, &config)?);
        let counters = Arc::new(Counters::default());
        let wal = Arc::new(checkpoint::WalState::default());
        let checkpointer = checkpoint::Checkpointer::start(path, &config, Arc::clone(&counters), Arc::clone(&wal))?;
        let groups = SqliteGroups { conn, wal, counters: Arc::clone(&counters), busy_timeout: config.busy_timeout() };
        Self::start(Box::new(groups), readers, config, options.observer, counters, checkpointer)
    }

    /// Starts the writer thread on `store`'s write connection.
    fn start(
        store: Box<dyn GroupStore>,
        readers: Readers,
        config: LedgerConfig,
        observer: Option<BatchObserver>,
        counters: Arc<Counters>,
        checkpointer: Option<checkpoint::Checkpointer>,
    ) -> Result<Self, LedgerError> {
        let (sender, receiver) = crossbeam_channel::bounded(config.queue_capacity);
        let writer = Writer {
            store,
            receiver,
            batch_max: config.batch_max,
            stored_answer_bytes_max: config.stored_answer_bytes_max,
            counters: Arc::clone(&counters),
            observer,
        };
        let handle = std::thread::Builder::new()
            .name("ledger-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(|e| LedgerError::Unavailable(Unavailable::Spawn(e)))?;
        let writer = Mutex::new(Some(handle));
        Ok(Self { inner: Arc::new(Inner { sender, readers, config, counters, writer, checkpointer }) })
    }

    // ---- reads (snapshots on the read pool) ----

    /// A SIM with its ratchet state, bound accounts and last stored answer.
    pub async fn sim(&self, sim_id: &SimId) -> Result<Option<SimRecord>, LedgerError> {
        let sim_id = sim_id.clone();
        self.inner.readers.snapshot(move |conn| queries::sim(conn, &sim_id)).await
    }

    /// KEK rotation: how many stored chain keys are under each KEK version, ascending.
    pub async fn kek_usage(&self) -> Result<Vec<(u32, u64)>, LedgerError> {
        self.inner.readers.read(custody::kek_usage).await
    }

    /// KEK rotation: up to `limit` stored chain keys under a KEK version below `newest`.
    pub async fn chain_keys_below(&self, newest: u32, limit: usize) -> Result<Vec<StoredChainKey>, LedgerError> {
        self.inner.readers.read(move |conn| custody::chain_keys_below(conn, newest, limit)).await
    }

    /// The stored answer of a reversal whose request body had SHA-256 `digest`.
    pub async fn stored_reversal(&self, digest: [u8; 32]) -> Result<Option<StoredReversal>, LedgerError> {
        self.inner.readers.read(move |conn| reversal::stored(conn, &digest)).await
    }

    /// The merchant order's approval that is not reversed, if any.
    pub async fn active_approval(
        &self,
        merchant_id: &MerchantId,
        order_no: &OrderNo,
    ) -> Result<Option<TransactionRecord>, LedgerError> {
        let (merchant_id, order_no) = (*merchant_id, *order_no);
        self.inner.readers.read(move |conn| queries::active_approval(conn, &merchant_id, &order_no)).await
    }

    /// An account with its available funds.
    pub async fn account(&self, account: &Account) -> Result<Option<AccountRecord>, LedgerError> {
        let account = account.clone();
        self.inner.readers.read(move |conn| queries::account(conn, &account)).await
    }

    /// The sum of the account's approvals on one business day that stand (not reversed): read
    /// from the account's running daily total when that is of this day or an earlier one,
    /// summed otherwise.
    pub async fn daily_approved_total(&self, account: &Account, business_day: Date) -> Result<Amount, LedgerError> {
        let account = account.clone();
        self.inner.readers.read(move |conn| queries::approved_total(conn, &account, business_day)).await
    }

    /// The account's approvals of `business_day` that stand, as the decision needs them for the
    /// daily limit: from `record` (an account row it read) without a read when its running
    /// total answers for the day, else [`Ledger::daily_approved_total`].
    pub async fn approved_on(&self, record: &AccountRecord, business_day: Date) -> Result<Amount, LedgerError> {
        match record.approved_on(business_day) {
            Some(total) => Ok(total),
            None => self.daily_approved_total(&record.account, business_day).await,
        }
    }

    /// Whether this merchant order has been approved already (DESIGN.md section 7 step 11).
    pub async fn order_authorized(&self, merchant_id: &MerchantId, order_no: &OrderNo) -> Result<bool, LedgerError> {
        let (merchant_id, order_no) = (*merchant_id, *order_no);
        self.inner.readers.read(move |conn| queries::order_authorized(conn, &merchant_id, &order_no)).await
    }

    /// What the decision reads under its locks, in one read transaction: the SIM again (has
    /// anything moved since the look before the lock?), the account, and whether the order is
    /// approved already. One snapshot instead of three reads: one hand-off to a blocking thread
    /// and one page-cache refill instead of three, and the three agree with each other.
    pub async fn decision_state(
        &self,
        sim_id: &SimId,
        account: &Account,
        merchant_id: &MerchantId,
        order_no: &OrderNo,
    ) -> Result<DecisionState, LedgerError> {
        let (sim_id, account, merchant_id, order_no) = (sim_id.clone(), account.clone(), *merchant_id, *order_no);
        self.inner
            .readers
            .snapshot(move |conn| {
                Ok(DecisionState {
                    sim: queries::sim(conn, &sim_id)?,
                    account: queries::account(conn, &account)?,
                    order_authorized: queries::order_authorized(conn, &merchant_id, &order_no)?,
                })
            })
            .await
    }

    /// The exported clearing file of a business day, byte for byte, if it was exported.
    pub async fn clearing_file(&self, business_day: Date) -> Result<Option<StoredClearingFile>, LedgerError> {
        self.inner.readers.read(move |conn| clearing::stored_file(conn, business_day)).await
    }

    /// The latest business day whose clearing file was exported.
    pub async fn latest_cleared_day(&self) -> Result<Option<Date>, LedgerError> {
        self.inner.readers.read(clearing::latest_day).await
    }

    /// What the clearing file of a business day holds (docs/CLEARING.md), read in one snapshot.
    pub async fn clearing_entries(
        &self,
        business_day: Date,
    ) -> Result<Vec<mps_settlement::clearing::Entry>, LedgerError> {
        self.inner.readers.snapshot(move |conn| clearing::entries(conn, business_day)).await
    }

    /// One transaction by id.
    pub async fn transaction(&self, txn_id: &TxnId) -> Result<Option<TransactionRecord>, LedgerError> {
        let txn_id = *txn_id;
        self.inner.readers.read(move |conn| queries::transaction(conn, &txn_id)).await
    }

    /// Every approval of one business day, oldest first (the clearing export's input).
    pub async fn approved_transactions(&self, business_day: Date) -> Result<Vec<TransactionRecord>, LedgerError> {
        self.inner.readers.read(move |conn| queries::approved_transactions(conn, business_day)).await
    }

    /// The account's latest `limit` postings, newest first, with the balance after each.
    /// `limit` is 1 to `statement_lines_max`.
    pub async fn statement(&self, account: &Account, limit: usize) -> Result<Vec<StatementLine>, LedgerError> {
        if limit == 0 || limit > self.inner.config.statement_lines_max {
            return Err(LedgerError::InvalidInput("statement limit"));
        }
        let account = account.clone();
        self.inner.readers.snapshot(move |conn| queries::statement(conn, &account, limit)).await
    }

    /// The bank's internal accounts (funding, settlement payables) and their balances.
    pub async fn internal_balances(&self) -> Result<Vec<InternalBalance>, LedgerError> {
        self.inner.readers.read(queries::internal_balances).await
    }

    /// The sum of all postings per currency: zero for every currency in a sound ledger.
    pub async fn postings_sum_by_currency(&self) -> Result<Vec<(Currency, i128)>, LedgerError> {
        self.inner.readers.read(queries::postings_sum_by_currency).await
    }

    /// Checks every double-entry invariant over the whole ledger (slow on a big ledger: for
    /// tests and operators). A broken one is [`LedgerError::Corrupt`].
    pub async fn audit(&self) -> Result<AuditReport, LedgerError> {
        self.inner.readers.snapshot(queries::audit).await
    }

    // ---- writes (group-committed by the writer thread) ----

    /// Books one authenticated session in one transaction: the transaction row, an approval's
    /// postings and balance, the password count, the SIM's counter n, CK_n and RSN_{n+1}, and
    /// the exact answer. A premise that moved is a [`LedgerError::Conflict`] and stores
    /// nothing. Once queued, it is waited for without a time limit (see
    /// [`Ledger::submit_to_completion`]): its caller learns the outcome and holds its locks
    /// until then.
    pub async fn commit_session(&self, commit: SessionCommit) -> Result<(), LedgerError> {
        self.submit_to_completion(Command::CommitSession(Box::new(commit))).await
    }

    /// Opens an account; its opening balance is a journal entry against the funding account.
    pub async fn create_account(&self, new: NewAccount) -> Result<(), LedgerError> {
        self.submit(Command::CreateAccount(Box::new(new))).await
    }

    /// Registers a SIM at counter 0, bound to existing `accounts` (1 to [`SIM_ACCOUNTS_MAX`]),
    /// with CK_0 wrapped under `mps-kek` and RSN_1.
    pub async fn register_sim(
        &self,
        sim_id: &SimId,
        iin: Iin,
        accounts: &[Account],
        wrapped_chain_key: mps_hsm::WrappedChainKey,
        first_rsn: Rsn,
    ) -> Result<(), LedgerError> {
        let new = NewSim { sim_id: sim_id.clone(), iin, accounts: accounts.to_vec(), wrapped_chain_key, first_rsn };
        self.submit(Command::RegisterSim(Box::new(new))).await
    }

    /// KEK rotation: replaces `stored` by the same chain key under a newer KEK, only if the
    /// SIM's row is unchanged since it was read; [`Conflict::StaleCounter`] when a payment
    /// booked meanwhile (its CK_n is already under the newest KEK).
    pub async fn rewrap_chain_key(
        &self,
        stored: StoredChainKey,
        new: mps_hsm::WrappedChainKey,
    ) -> Result<(), LedgerError> {
        self.submit(Command::RewrapChainKey(Box::new((stored, new)))).await
    }

    /// Stores an answered reversal and, when it undoes an approval, books the mirrored
    /// postings and frees the order: exactly once ([`Conflict::AlreadyReversed`] otherwise).
    pub async fn commit_reversal(&self, commit: ReversalCommit) -> Result<(), LedgerError> {
        self.submit_to_completion(Command::CommitReversal(Box::new(commit))).await
    }

    /// Keeps an exported clearing file. When a file of that day was kept before (another
    /// export raced this one), that one stays: read it back with [`Ledger::clearing_file`].
    /// From now on nothing is booked into that day or an earlier one.
    pub async fn store_clearing_file(&self, file: StoredClearingFile) -> Result<(), LedgerError> {
        self.submit(Command::StoreClearingFile(Box::new(file))).await
    }

    /// Books a settlement (docs/CLEARING.md): each amount out of the acquirer's settlement
    /// payable into funding; [`Conflict::AlreadySettled`] for a positions file booked before.
    pub async fn book_settlement(&self, booking: SettlementBooking) -> Result<(), LedgerError> {
        self.submit(Command::BookSettlement(Box::new(booking))).await
    }

    /// Blocks or unblocks a SIM.
    pub async fn set_sim_status(&self, sim_id: &SimId, status: SimStatus) -> Result<(), LedgerError> {
        self.submit(Command::SetSimStatus(sim_id.clone(), status)).await
    }

    /// Closes or reopens an account.
    pub async fn set_account_status(&self, account: &Account, status: AccountStatus) -> Result<(), LedgerError> {
        self.submit(Command::SetAccountStatus(account.clone(), status)).await
    }

    /// Clears the account's wrong-password count and lifts its lock.
    pub async fn reset_password_tries(&self, account: &Account) -> Result<(), LedgerError> {
        self.submit(Command::ResetPasswordTries(account.clone())).await
    }

    /// For /readyz: a real committed write and a read, within `health_timeout_ms`.
    pub async fn health_check(&self) -> Result<(), LedgerError> {
        let check = async {
            self.submit(Command::Heartbeat).await?;
            self.inner.readers.schema_version().await.map(|_| ())
        };
        tokio::time::timeout(self.inner.config.health_timeout(), check)
            .await
            .map_err(|_| LedgerError::Unavailable(Unavailable::Timeout))?
    }

    /// Commits everything queued, then stops the writer and waits for it. Later writes get
    /// [`Unavailable::WriterStopped`]; reads keep working. Idempotent.
    pub async fn close(&self) {
        match self.submit(Command::Shutdown).await {
            Ok(()) | Err(LedgerError::Unavailable(Unavailable::WriterStopped)) => {}
            Err(error) => tracing::warn!(%error, "ledger close"),
        }
        let handle = self.inner.writer.lock().ok().and_then(|mut slot| slot.take());
        if let Some(handle) = handle {
            match tokio::task::spawn_blocking(move || handle.join()).await {
                Ok(Ok(())) => {}
                _ => tracing::error!("the ledger writer thread ended abnormally"),
            }
        }
        if self.inner.checkpointer.is_some() {
            let inner = Arc::clone(&self.inner);
            let stopped = tokio::task::spawn_blocking(move || {
                if let Some(checkpointer) = &inner.checkpointer {
                    checkpointer.stop_and_join();
                }
            });
            if stopped.await.is_err() {
                tracing::error!("stopping the ledger checkpoint thread failed");
            }
        }
    }

    // ---- observation ----

    /// Writer counters since open.
    pub fn stats(&self) -> LedgerStats {
        self.inner.counters.snapshot()
    }

    /// Commands waiting for the writer now (a gauge).
    pub fn queue_len(&self) -> usize {
        self.inner.sender.len()
    }

    /// Sends a command to the writer and waits for its committed result.
    async fn submit(&self, command: Command) -> Result<(), LedgerError> {
        let (reply, result) = oneshot::channel();
        self.enqueue(Job { command, reply }).await?;
        match tokio::time::timeout(self.inner.config.write_timeout(), result).await {
            Ok(Ok(result)) => result,
            // The writer dropped the job: it stopped before running it.
            Ok(Err(_)) => Err(LedgerError::Unavailable(Unavailable::WriterStopped)),
            Err(_) => Err(LedgerError::Unavailable(Unavailable::Timeout)),
        }
    }

    /// Sends a booking to the writer and waits for its result however long it takes: a
    /// booking that was queued may commit at any moment, so a caller that stopped waiting
    /// could neither tell its client the outcome nor release the locks that keep the next
    /// request from reading the state before it. The writer answers every job it takes, or
    /// drops it when it stops ([`Unavailable::WriterStopped`]); only the enqueue is bounded.
    async fn submit_to_completion(&self, command: Command) -> Result<(), LedgerError> {
        let (reply, result) = oneshot::channel();
        self.enqueue(Job { command, reply }).await?;
        match result.await {
            Ok(result) => result,
            Err(_) => Err(LedgerError::Unavailable(Unavailable::WriterStopped)),
        }
    }

    /// Puts a job on the bounded queue; when it is full, waits on a blocking thread at most the
    /// enqueue timeout.
    async fn enqueue(&self, job: Job) -> Result<(), LedgerError> {
        let job = match self.inner.sender.try_send(job) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Disconnected(_)) => return Err(LedgerError::Unavailable(Unavailable::WriterStopped)),
            Err(TrySendError::Full(job)) => job,
        };
        let sender = self.inner.sender.clone();
        let timeout = self.inner.config.enqueue_timeout();
        let sent = tokio::task::spawn_blocking(move || sender.send_timeout(job, timeout))
            .await
            .map_err(|_| LedgerError::Unavailable(Unavailable::QueueFull))?;
        match sent {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) => Err(LedgerError::Unavailable(Unavailable::QueueFull)),
            Err(SendTimeoutError::Disconnected(_)) => Err(LedgerError::Unavailable(Unavailable::WriterStopped)),
        }
    }
}

#[cfg(test)]
mod tests {
    use mps_protocol::{Iin, ResponseCode};

    use super::testing::{
        self, DAY, account, approval, credit, debit, decline, on_both_backends, open_ledger, register, sim_id,
    };
    use super::*;

    /// The handle goes into axum state and spawned tasks: it and its futures must be Send.
    #[test]
    fn the_handle_and_its_futures_are_send_and_sync() {
        fn send_sync<T: Send + Sync + Clone + 'static>() {}
        fn send<T: Send>(_: &T) {}
        send_sync::<Ledger>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (_dir, _path, ledger) = runtime.block_on(async { open_ledger(LedgerConfig::default()) });
        send(&ledger.sim(&sim_id(1)));
        send(&ledger.account(&account(1)));
        send(&ledger.daily_approved_total(&account(1), DAY));
        send(&ledger.commit_session(approval(1, 1, 1, 1)));
        send(&ledger.health_check());
        send(&ledger.close());
    }

    on_both_backends! {
        async fn account_creation_posts_a_balanced_opening_entry(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            ledger.create_account(debit(1, 10_000)).await.unwrap();
            ledger.create_account(credit(2, 50_000)).await.unwrap();

            let debit_record = ledger.account(&account(1)).await.unwrap().unwrap();
            assert_eq!((debit_record.balance, debit_record.available()), (10_000, 10_000));
            assert_eq!(debit_record.kind, AccountKind::Debit);
            assert_eq!(debit_record.status, AccountStatus::Open);
            assert_eq!(debit_record.password_verification_value.expose(), &[1; 32]);
            let credit_record = ledger.account(&account(2)).await.unwrap().unwrap();
            assert_eq!((credit_record.balance, credit_record.available()), (0, 50_000));

            let lines = ledger.statement(&account(1), 10).await.unwrap();
            assert_eq!(lines.len(), 1);
            assert_eq!((lines[0].kind, lines[0].amount, lines[0].balance_after), (EntryKind::Opening, 10_000, 10_000));
            assert!(ledger.statement(&account(2), 10).await.unwrap().is_empty(), "a zero opening books nothing");
            let internal = ledger.internal_balances().await.unwrap();
            assert_eq!(
                internal,
                vec![InternalBalance { account: InternalAccount::Funding, currency: Currency::EUR, balance: -10_000 }]
            );
            assert_eq!(ledger.postings_sum_by_currency().await.unwrap(), vec![(Currency::EUR, 0)]);
            let audit = ledger.audit().await.unwrap();
            assert_eq!((audit.entries, audit.postings, audit.accounts), (1, 2, 3));
        }

        async fn bad_accounts_are_refused_and_store_nothing(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            ledger.create_account(debit(1, 100)).await.unwrap();
            let again = ledger.create_account(debit(1, 100)).await.unwrap_err();
            assert!(matches!(again, LedgerError::AlreadyExists("account")), "{again:?}");
            let debit_with_limit = NewAccount { credit_limit: Amount::from_minor(5), ..debit(2, 0) };
            assert!(matches!(ledger.create_account(debit_with_limit).await, Err(LedgerError::InvalidInput(_))));
            for name in ["", " padded", "tab\there", &"x".repeat(141)] {
                let bad_name = NewAccount { holder_name: mps_protocol::Secret::new(name.to_owned()), ..debit(3, 0) };
                assert!(matches!(ledger.create_account(bad_name).await, Err(LedgerError::InvalidInput(_))), "{name:?}");
            }
            let huge = NewAccount { opening_balance: Amount::from_minor(u64::MAX), ..debit(4, 0) };
            assert!(matches!(ledger.create_account(huge).await, Err(LedgerError::InvalidInput(_))));
            for n in 2..=4 {
                assert!(ledger.account(&account(n)).await.unwrap().is_none());
            }
            assert_eq!(ledger.audit().await.unwrap().entries, 1);
        }

        async fn an_approval_moves_the_balance_and_books_both_sides(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            ledger.create_account(debit(1, 10_000)).await.unwrap();
            register(&ledger, 7, &[1]).await;
            let commit = approval(7, 1, 1, 2_500);
            ledger.commit_session(commit.clone()).await.unwrap();

            let record = ledger.account(&account(1)).await.unwrap().unwrap();
            assert_eq!((record.balance, record.available()), (7_500, 7_500));
            let sim = ledger.sim(&sim_id(7)).await.unwrap().unwrap();
            assert_eq!(sim.counter.value(), 1);
            assert_eq!(sim.wrapped_chain_key, commit.wrapped_next_chain_key);
            assert_eq!(sim.next_rsn, commit.next_rsn);
            let stored = sim.last_answer.unwrap();
            assert_eq!(stored.counter.value(), 1);
            assert_eq!(stored.txn_id, commit.transaction.txn_id);
            assert_eq!(stored.response_code, ResponseCode::Approved);
            assert_eq!(stored.packet, commit.packet);
            assert_eq!(stored.response_body, commit.response_body);
            assert_eq!(stored.response_signature, commit.response_signature);

            let txn = ledger.transaction(&commit.transaction.txn_id).await.unwrap().unwrap();
            // What was written comes back, field for field.
            assert_eq!(txn.transaction, commit.transaction);
            assert_eq!(txn.outcome, commit.outcome.stored());
            assert_eq!(txn.outcome.response_code(), ResponseCode::Approved);
            assert_eq!(ledger.approved_transactions(DAY).await.unwrap(), vec![txn]);
            assert_eq!(ledger.daily_approved_total(&account(1), DAY).await.unwrap(), Amount::from_minor(2_500));
            let order = (&commit.transaction.merchant_id, &commit.transaction.order_no);
            assert!(ledger.order_authorized(order.0, order.1).await.unwrap());

            let payable = InternalAccount::SettlementPayable { acquirer_iin: Iin::new("500001").unwrap() };
            let internal = ledger.internal_balances().await.unwrap();
            assert!(internal.contains(&InternalBalance { account: payable, currency: Currency::EUR, balance: 2_500 }));
            assert_eq!(ledger.postings_sum_by_currency().await.unwrap(), vec![(Currency::EUR, 0)]);
            ledger.audit().await.unwrap();
        }

        async fn a_credit_account_spends_its_line_and_no_further(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            ledger.create_account(credit(2, 1_000)).await.unwrap();
            register(&ledger, 1, &[2]).await;
            ledger.commit_session(approval(1, 1, 2, 800)).await.unwrap();
            let record = ledger.account(&account(2)).await.unwrap().unwrap();
            assert_eq!((record.balance, record.available()), (-800, 200));
            let over = ledger.commit_session(approval(1, 2, 2, 201)).await.unwrap_err();
            assert!(matches!(over, LedgerError::Conflict(Conflict::InsufficientFunds)), "{over:?}");
            ledger.commit_session(approval(1, 2, 2, 200)).await.unwrap();
            let record = ledger.account(&account(2)).await.unwrap().unwrap();
            assert_eq!((record.balance, record.available()), (-1_000, 0));
            ledger.audit().await.unwrap();
        }

        async fn a_decline_moves_no_money_but_advances_the_sim(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            ledger.create_account(debit(1, 1_000)).await.unwrap();
            register(&ledger, 1, &[1]).await;
            let commit = decline(1, 1, 1, 5_000, ResponseCode::InsufficientFunds);
            ledger.commit_session(commit.clone()).await.unwrap();

            assert_eq!(ledger.account(&account(1)).await.unwrap().unwrap().balance, 1_000);
            let sim = ledger.sim(&sim_id(1)).await.unwrap().unwrap();
            assert_eq!(sim.counter.value(), 1);
            assert_eq!(sim.wrapped_chain_key, commit.wrapped_next_chain_key);
            assert_eq!(sim.last_answer.unwrap().response_code, ResponseCode::InsufficientFunds);
            let txn = ledger.transaction(&commit.transaction.txn_id).await.unwrap().unwrap();
            assert_eq!((txn.outcome.response_code(), txn.outcome.auth_code()), (ResponseCode::InsufficientFunds, None));
            assert_eq!(txn.transaction, commit.transaction);
            assert_eq!(ledger.daily_approved_total(&account(1), DAY).await.unwrap(), Amount::from_minor(0));
            let order = (&commit.transaction.merchant_id, &commit.transaction.order_no);
            assert!(!ledger.order_authorized(order.0, order.1).await.unwrap());
            assert!(ledger.approved_transactions(DAY).await.unwrap().is_empty());
            assert_eq!(ledger.audit().await.unwrap().postings, 2, "only the opening entry");
        }

        async fn a_decline_from_an_account_unknown_to_the_bank_is_stored(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            ledger.create_account(debit(1, 1_000)).await.unwrap();
            register(&ledger, 1, &[1]).await;
            // The decrypted secret named an account this bank does not hold: 57.
            let unknown = decline(1, 1, 99, 10, ResponseCode::NotPermitted);
            ledger.commit_session(unknown.clone()).await.unwrap();
            let stored = ledger.transaction(&unknown.transaction.txn_id).await.unwrap().unwrap();
            assert_eq!(stored.transaction.account, account(99));
            // A password effect needs an account to act on.
            let with_effect = testing::declined_with(1, 2, 99, 10, ResponseCode::NotPermitted, PasswordEffect::Reset);
            assert!(matches!(ledger.commit_session(with_effect).await, Err(LedgerError::NotFound("account"))));
            // The command failed after its transaction row was written: its savepoint took the row
            // back with everything else.
            assert!(ledger.transaction(&testing::txn_id(1, 2)).await.unwrap().is_none());
            assert_eq!(ledger.sim(&sim_id(1)).await.unwrap().unwrap().counter.value(), 1);
        }

        async fn statement_lists_newest_first_with_the_running_balance(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            ledger.create_account(debit(1, 10_000)).await.unwrap();
            register(&ledger, 1, &[1]).await;
            for (n, amount) in [(1, 1_000), (2, 2_000), (3, 3_000)] {
                ledger.commit_session(approval(1, n, 1, amount)).await.unwrap();
            }
            ledger.commit_session(decline(1, 4, 1, 50, ResponseCode::ExceedsDailyLimit)).await.unwrap();
            let lines = ledger.statement(&account(1), 10).await.unwrap();
            let summary: Vec<(i64, i64)> = lines.iter().map(|l| (l.amount, l.balance_after)).collect();
            assert_eq!(summary, vec![(-3_000, 4_000), (-2_000, 7_000), (-1_000, 9_000), (10_000, 10_000)]);
            assert_eq!(lines[0].txn_id, Some(testing::txn_id(1, 3)));
            assert_eq!(lines[0].order_no.map(|o| o.as_str().to_owned()), Some("O1-3".to_owned()));
            assert_eq!(lines[3].kind, EntryKind::Opening);
            let printed = lines[0].to_string();
            assert!(
                printed.contains("-30.00 EUR") && printed.contains("40.00 EUR") && printed.contains("A1B2C3"),
                "{printed}"
            );
            assert_eq!(ledger.statement(&account(1), 2).await.unwrap(), lines[..2].to_vec());
            assert!(matches!(ledger.statement(&account(1), 0).await, Err(LedgerError::InvalidInput(_))));
            assert!(matches!(ledger.statement(&account(1), 1_001).await, Err(LedgerError::InvalidInput(_))));
            assert!(matches!(ledger.statement(&account(2), 5).await, Err(LedgerError::NotFound("account"))));
        }

        async fn admin_commands_change_status_and_refuse_the_unknown(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            ledger.create_account(debit(1, 1_000)).await.unwrap();
            register(&ledger, 1, &[1]).await;
            ledger.set_sim_status(&sim_id(1), SimStatus::Blocked).await.unwrap();
            assert_eq!(ledger.sim(&sim_id(1)).await.unwrap().unwrap().status, SimStatus::Blocked);
            ledger.set_sim_status(&sim_id(1), SimStatus::Active).await.unwrap();
            ledger.set_account_status(&account(1), AccountStatus::Closed).await.unwrap();
            assert_eq!(ledger.account(&account(1)).await.unwrap().unwrap().status, AccountStatus::Closed);
            assert!(matches!(
                ledger.set_sim_status(&sim_id(2), SimStatus::Blocked).await,
                Err(LedgerError::NotFound("sim"))
            ));
            assert!(matches!(
                ledger.set_account_status(&account(2), AccountStatus::Closed).await,
                Err(LedgerError::NotFound("account"))
            ));
            assert!(matches!(ledger.reset_password_tries(&account(2)).await, Err(LedgerError::NotFound("account"))));
            assert!(ledger.sim(&sim_id(2)).await.unwrap().is_none());

            let iin = Iin::new("400012").unwrap();
            const KEY: mps_hsm::WrappedChainKey = mps_hsm::WrappedChainKey { kek_version: 1, bytes: [0; 40] };
            let again = ledger.register_sim(&sim_id(1), iin, &[account(1)], KEY, Rsn([0; 8])).await;
            assert!(matches!(again, Err(LedgerError::AlreadyExists("sim"))));
            let unknown = ledger.register_sim(&sim_id(2), iin, &[account(1), account(5)], KEY, Rsn([0; 8])).await;
            assert!(matches!(unknown, Err(LedgerError::NotFound("account"))));
            let twice = ledger.register_sim(&sim_id(2), iin, &[account(1), account(1)], KEY, Rsn([0; 8])).await;
            assert!(matches!(twice, Err(LedgerError::InvalidInput(_))));
            let none = ledger.register_sim(&sim_id(2), iin, &[], KEY, Rsn([0; 8])).await;
            assert!(matches!(none, Err(LedgerError::InvalidInput(_))));
            assert!(ledger.sim(&sim_id(2)).await.unwrap().is_none(), "a refused registration stores nothing");
        }

        async fn after_close_writes_are_unavailable_and_reads_still_work(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            ledger.create_account(debit(1, 1_000)).await.unwrap();
            ledger.health_check().await.unwrap();
            let other_handle = ledger.clone();
            ledger.close().await;
            let err = other_handle.create_account(debit(2, 1)).await.unwrap_err();
            assert!(matches!(err, LedgerError::Unavailable(Unavailable::WriterStopped)), "{err:?}");
            assert!(other_handle.health_check().await.is_err());
            assert_eq!(other_handle.account(&account(1)).await.unwrap().unwrap().balance, 1_000);
            other_handle.close().await;
        }
    }

    #[tokio::test]
    async fn reads_go_on_while_another_connection_holds_the_write_lock() {
        let (_dir, path, ledger) = open_ledger(LedgerConfig::default());
        ledger.create_account(debit(1, 1_000)).await.unwrap();
        let lock = testing::WriteLock::take(&path);
        let record = ledger.account(&account(1)).await.unwrap().unwrap();
        assert_eq!(record.balance, 1_000);
        drop(lock);
    }

    #[tokio::test]
    async fn open_failures_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing_dir = dir.path().join("no-such-dir").join("ledger.db");
        let err = Ledger::open(&missing_dir, LedgerConfig::default()).unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        let err = Ledger::open(dir.path(), LedgerConfig::default()).unwrap_err();
        assert!(err.is_unavailable(), "a directory: {err:?}");
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![0x5A; 8192]).unwrap();
        let err = Ledger::open(&garbage, LedgerConfig::default()).unwrap_err();
        assert!(matches!(err, LedgerError::Corrupt(_)), "{err:?}");
        let bad_config = LedgerConfig { batch_max: 0, ..LedgerConfig::default() };
        let err = Ledger::open(&dir.path().join("ok.db"), bad_config).unwrap_err();
        assert!(matches!(err, LedgerError::InvalidInput(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_full_disk_is_unavailable_and_leaves_the_ledger_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let pages: i64 = {
            let probe = Ledger::open(&path, LedgerConfig::default()).unwrap();
            probe.close().await;
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_query_value(None, "page_count", |row| row.get(0)).unwrap()
        };
        let options = OpenOptions { max_page_count: Some(pages + 3), ..OpenOptions::default() };
        let ledger = Ledger::open_inner(&path, LedgerConfig::default(), options).unwrap();
        let mut created = 0;
        let mut failure = None;
        for n in 1..=500 {
            match ledger
                .create_account(NewAccount { holder_name: mps_protocol::Secret::new("x".repeat(140)), ..debit(n, 100) })
                .await
            {
                Ok(()) => created += 1,
                Err(error) => {
                    failure = Some((n, error));
                    break;
                }
            }
        }
        let (failed_account, error) = failure.expect("the capped database never filled up");
        assert!(error.is_unavailable(), "{error:?}");
        assert!(ledger.account(&account(failed_account)).await.unwrap().is_none());
        assert!(ledger.account(&account(created)).await.unwrap().is_some());
        let audit = ledger.audit().await.unwrap();
        assert_eq!(audit.entries, created);
        let still_full = ledger
            .create_account(NewAccount { holder_name: mps_protocol::Secret::new("y".repeat(140)), ..debit(900, 100) })
            .await;
        assert!(still_full.unwrap_err().is_unavailable());
    }

    /// Where the crash child writes its ledger.
    const CRASH_DB_VAR: &str = "MPS_LEDGER_CRASH_TEST_DB";

    #[tokio::test]
    async fn a_commit_survives_the_process_dying_right_after_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "ledger::tests::crash_child_commits_then_aborts", "--ignored", "--nocapture"])
            .env(CRASH_DB_VAR, &path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("COMMITTED-THEN-ABORTING"), "child did not commit: {output:?}");
        assert!(!output.status.success(), "the child must die by abort, not exit");

        let ledger = Ledger::open(&path, LedgerConfig::default()).unwrap();
        let sim = ledger.sim(&sim_id(1)).await.unwrap().unwrap();
        assert_eq!(sim.counter.value(), 1);
        assert!(ledger.transaction(&testing::txn_id(1, 1)).await.unwrap().is_some());
        assert_eq!(ledger.account(&account(1)).await.unwrap().unwrap().balance, 700);
        ledger.audit().await.unwrap();
    }

    #[tokio::test]
    #[ignore = "a child process of a_commit_survives_the_process_dying_right_after_it_returns"]
    async fn crash_child_commits_then_aborts() {
        let path = std::env::var_os(CRASH_DB_VAR).expect("run only by the crash test, which sets the database path");
        let ledger = Ledger::open(std::path::Path::new(&path), LedgerConfig::default()).unwrap();
        ledger.create_account(debit(1, 1_000)).await.unwrap();
        register(&ledger, 1, &[1]).await;
        ledger.commit_session(approval(1, 1, 1, 300)).await.unwrap();
        println!("COMMITTED-THEN-ABORTING");
        std::process::abort();
    }
}
