//! Builders for the ledger's unit tests: accounts, SIMs and session commits with plausible
//! values, and a way to hold the database's write lock so that commands pile up into one group.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mps_protocol::wire::PACKET_LEN;
use mps_protocol::{
    Account, Amount, AuthCode, Counter, Currency, Iin, MerchantId, OrderNo, ResponseCode, Rsn, SimId, TxnId,
};
use rusqlite::Connection;
use time::macros::{date, datetime};

use super::sql::{Sql, args};
use super::{
    AccountKind, AccountRecord, AccountStatus, DailyApproved, DeclineCode, Ledger, LedgerConfig, NewAccount,
    PasswordEffect, ReversalCommit, ReversalOutcome, ReversalReason, SessionCommit, SessionOutcome, Transaction,
};

/// The business day of every test commit.
pub(crate) const DAY: time::Date = date!(2025 - 03 - 07);
/// The business day after [`DAY`].
pub(crate) const NEXT_DAY: time::Date = date!(2025 - 03 - 08);

/// The two backends, for tests that run on both (see [`on_both_backends`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// What a test ledger lives in; dropped after the ledger (declare it first).
pub(crate) enum TestStore {
    Sqlite(tempfile::TempDir),
    Postgres(super::postgres_testing::PgCluster),
}

impl TestStore {
    /// A fresh, empty store of `backend`: a temp dir, or a throwaway PostgreSQL cluster.
    pub(crate) fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::Sqlite(tempfile::tempdir().unwrap()),
            Backend::Postgres => Self::Postgres(super::postgres_testing::PgCluster::start().unwrap()),
        }
    }

    /// Where the ledger's books are.
    pub(crate) fn store(&self) -> super::Store {
        match self {
            Self::Sqlite(dir) => super::Store::Sqlite(dir.path().join("ledger.db")),
            Self::Postgres(cluster) => super::Store::Postgres(Box::new(super::PostgresStore {
                connect: cluster.config(),
                call_timeout: Duration::from_secs(30),
            })),
        }
    }

    /// Opens a ledger on this store (another one on the same store is a second instance).
    pub(crate) fn open(&self, config: LedgerConfig) -> Ledger {
        Ledger::open_store(&self.store(), config, None).unwrap()
    }

    /// Runs `sql` on the books behind the ledger's back, as damage or an operator's hand would.
    pub(crate) async fn execute_behind_the_ledger(&self, sql: &str) {
        match self {
            Self::Sqlite(dir) => {
                let conn = Connection::open(dir.path().join("ledger.db")).unwrap();
                conn.busy_timeout(Duration::from_secs(5)).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            Self::Postgres(cluster) => {
                let (client, connection) = cluster.config().connect(tokio_postgres::NoTls).await.unwrap();
                let connection = tokio::spawn(connection);
                client.batch_execute(sql).await.unwrap();
                drop(client);
                connection.await.unwrap().unwrap();
            }
        }
    }
}

impl Backend {
    /// A fresh store of this backend and a ledger on it.
    pub(crate) fn open(self, config: LedgerConfig) -> (TestStore, Ledger) {
        let store = TestStore::new(self);
        let ledger = store.open(config);
        (store, ledger)
    }
}

/// Ledger tests written once and run on both backends: each `async fn name(backend) { .. }`
/// becomes a module `name` with the tests `sqlite` and `postgres`, in which `backend` is that
/// [`Backend`]. This is the conformance suite of the two backends.
macro_rules! on_both_backends {
    ($($(#[$meta:meta])* async fn $name:ident($backend:ident) $body:block)*) => {
        $(
            $(#[$meta])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let $backend = $crate::ledger::testing::Backend::Sqlite;
                    $body
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let $backend = $crate::ledger::testing::Backend::Postgres;
                    $body
                }
            }
        )*
    };
}
pub(crate) use on_both_backends;

/// A ledger in a fresh temp dir (kept alive by the returned guard).
pub(crate) fn open_ledger(config: LedgerConfig) -> (tempfile::TempDir, PathBuf, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(&path, config).unwrap();
    (dir, path, ledger)
}

/// An account number built from a small number: "4000" followed by 12 digits.
pub(crate) fn account(n: u64) -> Account {
    Account::new(&format!("4000{n:012}")).unwrap()
}

/// A SIM id built from a small number: "8949" followed by 15 digits.
pub(crate) fn sim_id(n: u64) -> SimId {
    SimId::new(&format!("8949{n:015}")).unwrap()
}

/// A debit account in EUR with `balance` minor units and generous limits.
pub(crate) fn debit(n: u64, balance: u64) -> NewAccount {
    NewAccount {
        account: account(n),
        holder_name: mps_protocol::Secret::new(format!("Holder {n}")),
        kind: AccountKind::Debit,
        currency: Currency::EUR,
        credit_limit: Amount::from_minor(0),
        opening_balance: Amount::from_minor(balance),
        password_verification_value: mps_protocol::PasswordVerificationValue::new([n as u8; 32]),
        per_txn_limit: Amount::from_minor(1_000_000),
        daily_limit: Amount::from_minor(5_000_000),
    }
}

/// An open EUR debit account as the decision steps read it: `balance` minor units, a
/// per-payment limit of 500 and a daily limit of 1,000, no wrong passwords, the password
/// verification value `[0; 32]`.
pub(crate) fn account_record(balance: i64) -> AccountRecord {
    AccountRecord {
        account: account(1),
        holder_name: mps_protocol::Secret::new("Li Xi".to_owned()),
        kind: AccountKind::Debit,
        currency: Currency::EUR,
        credit_limit: Amount::from_minor(0),
        balance,
        status: AccountStatus::Open,
        password_verification_value: mps_protocol::PasswordVerificationValue::new([0; 32]),
        password_failures: 0,
        password_locked: false,
        per_txn_limit: Amount::from_minor(500),
        daily_limit: Amount::from_minor(1_000),
        approved: None,
        created_at: time::OffsetDateTime::UNIX_EPOCH,
    }
}

/// A credit account in EUR with a credit line of `limit`.
pub(crate) fn credit(n: u64, limit: u64) -> NewAccount {
    NewAccount { kind: AccountKind::Credit, credit_limit: Amount::from_minor(limit), ..debit(n, 0) }
}

/// Registers SIM `n` bound to the given accounts, at counter 0.
pub(crate) async fn register(ledger: &Ledger, n: u64, accounts: &[u64]) {
    let accounts: Vec<Account> = accounts.iter().map(|a| account(*a)).collect();
    ledger
        .register_sim(
            &sim_id(n),
            Iin::new("400012").unwrap(),
            &accounts,
            mps_hsm::WrappedChainKey { kek_version: 1, bytes: [0x10; 40] },
            Rsn([1; 8]),
        )
        .await
        .unwrap();
}

/// A distinct transaction id per (sim, counter).
pub(crate) fn txn_id(sim: u64, counter: u64) -> TxnId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&sim.to_be_bytes());
    id[8..].copy_from_slice(&counter.to_be_bytes());
    TxnId(id)
}

/// An approval of `amount` from account `acct` by SIM `sim` in session `counter`, order
/// "O<sim>-<counter>".
pub(crate) fn approval(sim: u64, counter: u64, acct: u64, amount: u64) -> SessionCommit {
    let mut packet = vec![0u8; PACKET_LEN];
    packet[0] = 0x01;
    packet[14..20].copy_from_slice(&Counter::new(counter).unwrap().to_wire());
    packet[100] = sim as u8;
    SessionCommit {
        transaction: Transaction {
            txn_id: txn_id(sim, counter),
            sim_id: sim_id(sim),
            counter: Counter::new(counter).unwrap(),
            account: account(acct),
            merchant_id: MerchantId::new("SHOP-001").unwrap(),
            order_no: OrderNo::new(&format!("O{sim}-{counter}")).unwrap(),
            acquirer_iin: Iin::new("500001").unwrap(),
            merchant_account: "DE89 3704 0044 0532 0130 00".to_owned(),
            amount: Amount::from_minor(amount),
            currency: Currency::EUR,
            business_day: DAY,
            created_at: datetime!(2025-03-07 10:00 UTC),
        },
        outcome: SessionOutcome::Approved { auth_code: AuthCode(*b"A1B2C3") },
        wrapped_next_chain_key: mps_hsm::WrappedChainKey { kek_version: 1, bytes: [counter as u8; 40] },
        next_rsn: Rsn([(counter as u8).wrapping_add(1); 8]),
        packet,
        response_body: format!("{{\"response_code\":\"00\",\"counter\":{counter}}}").into_bytes(),
        response_signature: format!("eyJhbGciOiJFUzI1NiJ9..sig{counter}"),
    }
}

/// A running daily total of `total` on `business_day`.
pub(crate) fn approved_total(business_day: time::Date, total: u64) -> Option<DailyApproved> {
    Some(DailyApproved { business_day, total: Amount::from_minor(total) })
}

/// The merchant's reversal (number `n`, on `business_day`) of the approval `commit` booked.
pub(crate) fn reversal_of(commit: &SessionCommit, n: u8, business_day: time::Date) -> ReversalCommit {
    ReversalCommit {
        reversal_id: TxnId([0xEE, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        request_digest: [n; 32],
        merchant_id: commit.transaction.merchant_id,
        order_no: commit.transaction.order_no,
        amount: commit.transaction.amount,
        currency: commit.transaction.currency,
        reason: ReversalReason::Cancelled,
        outcome: ReversalOutcome::Reversed { original: commit.transaction.txn_id },
        business_day,
        created_at: datetime!(2025-03-07 11:00 UTC),
        response_body: format!("{{\"response_code\":\"00\",\"reversal\":{n}}}").into_bytes(),
        response_signature: format!("eyJhbGciOiJFUzI1NiJ9..rev{n}"),
    }
}

/// `commit` with its transaction row changed by `change`.
pub(crate) fn changed(mut commit: SessionCommit, change: impl FnOnce(&mut Transaction)) -> SessionCommit {
    change(&mut commit.transaction);
    commit
}

/// The same session declined with `code`.
pub(crate) fn decline(sim: u64, counter: u64, acct: u64, amount: u64, code: ResponseCode) -> SessionCommit {
    declined_with(sim, counter, acct, amount, code, PasswordEffect::None)
}

/// The same session declined with `code`, and `effect` on the wrong-password count.
pub(crate) fn declined_with(
    sim: u64,
    counter: u64,
    acct: u64,
    amount: u64,
    code: ResponseCode,
    effect: PasswordEffect,
) -> SessionCommit {
    let code = DeclineCode::new(code).expect("a decline code, not 00");
    SessionCommit {
        outcome: SessionOutcome::Declined { code, password_effect: effect },
        ..approval(sim, counter, acct, amount)
    }
}

/// Holds the database's write lock from another connection, so the writer waits in BEGIN
/// IMMEDIATE while commands queue up behind it. Released on drop.
pub(crate) struct WriteLock {
    conn: Connection,
}

impl WriteLock {
    pub(crate) fn take(path: &Path) -> Self {
        let conn = Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        Self { conn }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }
}

/// Waits until the writer has received `received` commands in all and `queued` more are
/// waiting: then the next group will hold exactly those `queued` commands (up to batch_max).
pub(crate) async fn wait_for_queue(ledger: &Ledger, received: u64, queued: usize) {
    for _ in 0..2_000 {
        if ledger.stats().commands_received == received && ledger.queue_len() == queued {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "queue never reached {received} received + {queued} queued (now {} + {})",
        ledger.stats().commands_received,
        ledger.queue_len()
    );
}

/// The accounts of [`fill_version_7`]: (number, running daily total migration 8 must give it).
pub(crate) const VERSION_7_ACCOUNTS: [(u64, Option<(time::Date, u64)>); 4] = [
    // Approvals on three days, the latest day's partly reversed and with a decline.
    (1, Some((NEXT_DAY, 5))),
    // Its latest day's only approval is reversed: the day before is its latest standing one.
    (2, Some((DAY, 50))),
    // A decline only, and nothing at all.
    (3, None),
    (4, None),
];

/// Fills a ledger at schema version 7 by hand (that version's columns only): the accounts of
/// [`VERSION_7_ACCOUNTS`], a SIM, and approvals, declines and reversals over three days.
pub(crate) fn fill_version_7(conn: &dyn Sql) {
    let text = |day: time::Date| super::rows::day_text(day).unwrap();
    let (day_before, day, next_day) = (text(DAY.previous_day().unwrap()), text(DAY), text(NEXT_DAY));
    for (n, _) in VERSION_7_ACCOUNTS {
        conn.execute(
            "INSERT INTO accounts (account, holder_name, kind, currency, credit_limit, balance, status,
                 password_verification_value, password_failures, password_locked, per_txn_limit, daily_limit,
                 created_at)
             VALUES (?1, 'Holder', 'debit', 978, 0, 0, 'open', ?2, 0, 0, 1000000, 5000000, '2025-03-01T00:00:00Z')",
            args![account(n).expose(), &[0u8; 32]],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO sims (sim_id, iin, status, counter, wrapped_chain_key, next_rsn, created_at)
         VALUES (?1, '400012', 'active', 0, ?2, ?3, '2025-03-01T00:00:00Z')",
        args![sim_id(1).as_str(), &[0x10u8; 40], &[1u8; 8]],
    )
    .unwrap();
    // (account, business day, amount, approved, reversed)
    let rows: [(u64, &str, i64, bool, bool); 10] = [
        (1, &day_before, 3, true, false),
        (1, &day, 10, true, false),
        (1, &day, 20, true, false),
        (1, &next_day, 5, true, false),
        (1, &next_day, 7, true, true),
        (1, &next_day, 100, false, false),
        (2, &day, 50, true, false),
        (2, &next_day, 30, true, true),
        (3, &next_day, 40, false, false),
        (2, &day_before, 9, true, false),
    ];
    for (counter, (acct, business_day, amount, approved, reversed)) in (1..).zip(rows) {
        let txn = txn_id(1, counter);
        let (code, auth_code) = if approved { ("00", Some("A1B2C3")) } else { ("51", None) };
        conn.execute(
            "INSERT INTO transactions (txn_id, sim_id, counter, account, merchant_id, order_no, acquirer_iin,
                 merchant_account, amount, currency, response_code, auth_code, business_day, created_at)
             VALUES (?1, ?2, ?3, ?4, 'SHOP-001', ?5, '500001', 'DE89 3704', ?6, 978, ?7, ?8, ?9, ?10)",
            args![
                &txn.0,
                sim_id(1).as_str(),
                counter as i64,
                account(acct).expose(),
                &format!("O-{counter}"),
                amount,
                code,
                auth_code,
                business_day,
                &format!("{business_day}T10:00:00Z"),
            ],
        )
        .unwrap();
        if reversed {
            let reversal = [0xEE, counter as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            conn.execute(
                "INSERT INTO reversals (reversal_id, request_digest, merchant_id, order_no, original_txn_id,
                     response_code, amount, currency, reason, business_day, created_at, response_body,
                     response_signature)
                 VALUES (?1, ?2, 'SHOP-001', ?3, ?4, '00', ?5, 978, 'cancelled', ?6, ?7, ?8, 'sig')",
                args![
                    &reversal,
                    &[counter as u8; 32],
                    &format!("O-{counter}"),
                    &txn.0,
                    amount,
                    business_day,
                    &format!("{business_day}T11:00:00Z"),
                    &b"{}".to_vec(),
                ],
            )
            .unwrap();
            conn.execute("UPDATE transactions SET reversal_id = ?1 WHERE txn_id = ?2", args![&reversal, &txn.0])
                .unwrap();
        }
    }
}

/// After migration 8 on [`fill_version_7`]'s ledger: every account's running total is the one
/// [`VERSION_7_ACCOUNTS`] names, answers every day as the sum does, and passes the audit.
pub(crate) fn check_version_7_backfill(conn: &dyn Sql) {
    use super::queries;
    for (n, expected) in VERSION_7_ACCOUNTS {
        let record = queries::account(conn, &account(n)).unwrap().unwrap();
        assert_eq!(record.approved, expected.and_then(|(day, total)| approved_total(day, total)), "account {n}");
        let mut day = DAY.previous_day().unwrap().previous_day().unwrap();
        while day <= NEXT_DAY.next_day().unwrap() {
            let summed = queries::daily_approved_total(conn, &account(n), day).unwrap();
            assert_eq!(queries::approved_total(conn, &account(n), day).unwrap(), summed, "account {n} on {day}");
            if record.approved.is_none_or(|approved| day >= approved.business_day) {
                assert_eq!(record.approved_on(day), Some(summed), "account {n} on {day}: from the row");
            }
            day = day.next_day().unwrap();
        }
    }
    queries::audit(conn).unwrap();
}
