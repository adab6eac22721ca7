//! The order book: every order the shop opened and what became of it, durable in SQLite. The
//! POS routes create and read orders; the payment flow moves an order from open to submitted
//! before the request leaves, and records the bank's verified answer before the phone hears
//! of it; the reversal task reads and settles the pending reversals.
//!
//! Every status change is one conditional UPDATE (the status it leaves is in its WHERE), so two
//! packets for one order cannot both be submitted; each write re-reads what it wrote.

mod schema;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mps_protocol::{Amount, Currency, Iin, OrderNo};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

/// Why the order book refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BookError {
    /// SQLite failed (disk, lock timeout, corruption).
    #[error("order book database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database would not switch to WAL.
    #[error("order book: journal mode {0:?} instead of WAL (is the file on a network share?)")]
    NoWal(String),
    /// The file was written by a newer build.
    #[error("order book schema version {found} is newer than this build's {known}; run the newer merchant")]
    NewerSchema {
        /// Version in the file.
        found: i64,
        /// Latest version this build knows.
        known: i64,
    },
    /// The file is not a merchant order book.
    #[error("the file is not a merchant order book (orders.path names another SQLite database)")]
    ForeignSchema,
    /// An order with this number exists already.
    #[error("order {0} exists already")]
    Exists(OrderNo),
    /// No order with this number.
    #[error("no order {0}")]
    NotFound(OrderNo),
    /// The order is not in a status that allows the change.
    #[error("order {order_no} is {status}")]
    Conflict {
        /// The order.
        order_no: OrderNo,
        /// Its status now.
        status: OrderStatus,
    },
    /// A stored value does not read back as what was written: the database was damaged or edited.
    #[error("order book row is damaged: {0}")]
    Damaged(&'static str),
    /// A thread panicked while holding the connection.
    #[error("order book connection poisoned; restart the merchant")]
    Poisoned,
    /// The blocking task running the query was cancelled.
    #[error("order book task failed")]
    Task,
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// Created by the shop, waiting for a packet.
    Open,
    /// A packet's request is on its way to the bank.
    Submitted,
    /// The bank approved (verified signature): final.
    Paid,
    /// The bank declined, or refused the request; may be paid again by a new packet.
    Declined,
    /// The bank's answer could not be verified; a reversal is queued.
    Unknown,
    /// No answer in time; a reversal is queued.
    ReversalPending,
    /// The issuer confirmed there is no payment (reversed, or nothing to reverse); may be paid again.
    Reversed,
}

impl OrderStatus {
    const ALL: [OrderStatus; 7] =
        [Self::Open, Self::Submitted, Self::Paid, Self::Declined, Self::Unknown, Self::ReversalPending, Self::Reversed];

    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Submitted => "submitted",
            Self::Paid => "paid",
            Self::Declined => "declined",
            Self::Unknown => "unknown",
            Self::ReversalPending => "reversal_pending",
            Self::Reversed => "reversed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// Whether a new packet may pay an order in this status.
    pub fn is_payable(self) -> bool {
        matches!(self, Self::Open | Self::Declined | Self::Reversed)
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One order as stored.
#[derive(Debug, Clone)]
pub struct Order {
    /// The shop's order number.
    pub order_no: OrderNo,
    /// Amount in minor units.
    pub amount: Amount,
    /// Currency.
    pub currency: Currency,
    /// Where it stands.
    pub status: OrderStatus,
    /// IIN of the last packet's issuer.
    pub issuer_iin: Option<Iin>,
    /// The last packet (113 bytes).
    pub payer_packet: Option<Vec<u8>>,
    /// The signed request that carried it, byte for byte, and its JWS: a resend of that packet
    /// goes to the bank as exactly this request again.
    pub request: Option<(Vec<u8>, String)>,
    /// ISO 8583 code of the last answer or refusal.
    pub response_code: Option<String>,
    /// Auth code of an approval.
    pub auth_code: Option<String>,
    /// The issuer's transaction id, 32 hex digits.
    pub txn_id: Option<String>,
    /// The bank's answer body, byte for byte.
    pub bank_answer: Option<Vec<u8>>,
    /// The bank's detached JWS over it.
    pub bank_signature: Option<String>,
    /// The answer for the SIM (79 bytes).
    pub payer_answer: Option<Vec<u8>>,
    /// Why the order is where it is (declines, refusals, unverified answers, timeouts).
    pub reason: Option<String>,
    /// The issuer's answer to the last reversal of this order (00, 25 or 12).
    pub reversal_code: Option<String>,
    /// Day of the approval (UTC, YYYY-MM-DD).
    pub paid_day: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last change, RFC 3339.
    pub updated_at: String,
}

/// A request about to leave for the bank.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The order.
    pub order_no: OrderNo,
    /// Its amount and currency, as checked against the packet.
    pub amount: Amount,
    /// Currency.
    pub currency: Currency,
    /// The packet's issuer.
    pub issuer_iin: Iin,
    /// The packet.
    pub packet: Vec<u8>,
    /// The signed request body.
    pub body: Vec<u8>,
    /// Its detached JWS.
    pub signature: String,
}

/// The bank's verified answer.
#[derive(Debug, Clone)]
pub struct BankOutcome {
    /// ISO 8583 code.
    pub response_code: String,
    /// Auth code (approvals).
    pub auth_code: Option<String>,
    /// Transaction id, hex.
    pub txn_id: String,
    /// Answer body.
    pub body: Vec<u8>,
    /// Its JWS.
    pub signature: String,
    /// Answer for the SIM.
    pub payer_answer: Option<Vec<u8>>,
}

/// A reversal to queue: its signed body, kept so that every retry is identical.
#[derive(Debug, Clone)]
pub struct NewReversal {
    /// The issuer it is routed to.
    pub issuer_iin: Iin,
    /// Signed body.
    pub body: Vec<u8>,
    /// Its JWS.
    pub signature: String,
}

/// A reversal waiting for a verified answer.
#[derive(Debug, Clone)]
pub struct PendingReversal {
    /// Row id.
    pub id: i64,
    /// The order.
    pub order_no: OrderNo,
    /// The issuer.
    pub issuer_iin: Iin,
    /// Signed body.
    pub body: Vec<u8>,
    /// Its JWS.
    pub signature: String,
    /// Attempts so far.
    pub attempts: u32,
}

/// The issuer's verified answer to a reversal.
#[derive(Debug, Clone)]
pub struct ReversalOutcome {
    /// 00, 25 or 12.
    pub response_code: String,
    /// The issuer's reversal id.
    pub reversal_id: Option<String>,
    /// Answer body.
    pub body: Vec<u8>,
    /// Its JWS.
    pub signature: String,
}

/// The order book. Cheap to clone; one connection behind a mutex (writes are fsynced one by one,
/// which a shop's rate of orders never notices). Call from a blocking task.
#[derive(Clone)]
pub struct OrderBook {
    connection: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for OrderBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderBook")
    }
}

const ORDER_COLUMNS: &str = "order_no, amount, currency, status, issuer_iin, payer_packet, response_code, auth_code, \
    txn_id, bank_answer, bank_signature, payer_answer, reason, paid_day, created_at, updated_at, reversal_code, \
    request_body, request_signature";

/// The current time, RFC 3339 UTC.
pub(crate) fn now_text() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Today, UTC, YYYY-MM-DD.
fn today() -> String {
    let date = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl OrderBook {
    /// Opens (creating if needed) the order book at `path` and brings its schema up to date.
    pub fn open(path: &Path, busy_timeout: Duration) -> Result<Self, BookError> {
        let mut connection = Connection::open(path)?;
        schema::configure(&connection, busy_timeout)?;
        schema::migrate(&mut connection)?;
        Ok(Self { connection: Arc::new(Mutex::new(connection)) })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, BookError> {
        self.connection.lock().map_err(|_| BookError::Poisoned)
    }

    /// Runs `work` on a blocking thread: the async face of every method.
    pub async fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&OrderBook) -> Result<T, BookError> + Send + 'static,
    ) -> Result<T, BookError> {
        let book = self.clone();
        tokio::task::spawn_blocking(move || work(&book)).await.map_err(|_| BookError::Task)?
    }

    /// Creates an open order.
    pub fn create(&self, order_no: OrderNo, amount: Amount, currency: Currency) -> Result<Order, BookError> {
        let amount_sql = i64::try_from(amount.minor()).map_err(|_| BookError::Damaged("amount over 2^63"))?;
        {
            let connection = self.lock()?;
            let now = now_text();
            let inserted = connection.execute(
                "INSERT INTO orders (order_no, amount, currency, status, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'open', ?4, ?4) ON CONFLICT (order_no) DO NOTHING",
                params![order_no.as_str(), amount_sql, currency.code(), now],
            )?;
            if inserted == 0 {
                return Err(BookError::Exists(order_no));
            }
        }
        let order = self.get(&order_no)?.ok_or(BookError::Damaged("created order not found"))?;
        if order.status != OrderStatus::Open || order.amount != amount || order.currency != currency {
            return Err(BookError::Damaged("created order reads back differently"));
        }
        Ok(order)
    }

    /// One order.
    pub fn get(&self, order_no: &OrderNo) -> Result<Option<Order>, BookError> {
        let connection = self.lock()?;
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE order_no = ?1");
        let row = connection.query_row(&sql, [order_no.as_str()], read_raw_order).optional()?;
        row.map(RawOrder::into_order).transpose()
    }

    /// The approved orders of `day` (YYYY-MM-DD, UTC), or of every day, oldest first, at most `limit`.
    pub fn paid(&self, day: Option<&str>, limit: usize) -> Result<Vec<Order>, BookError> {
        let connection = self.lock()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE status = 'paid' AND (?1 IS NULL OR paid_day = ?1)
             ORDER BY paid_day, updated_at, order_no LIMIT ?2"
        );
        let mut statement = connection.prepare(&sql)?;
        let rows = statement.query_map(params![day, limit], read_raw_order)?;
        rows.map(|row| row.map_err(BookError::from).and_then(RawOrder::into_order)).collect()
    }

    /// Moves a payable order to submitted with the request about to leave. Refuses (with the
    /// status it found) an order that is paid, in flight or awaiting a reversal.
    pub fn begin_payment(&self, submission: &Submission) -> Result<(), BookError> {
        let amount_sql = i64::try_from(submission.amount.minor()).map_err(|_| BookError::Damaged("amount"))?;
        let changed = self.lock()?.execute(
            "UPDATE orders SET status = 'submitted', issuer_iin = ?1, payer_packet = ?2, request_body = ?3,
                 request_signature = ?4, response_code = NULL, auth_code = NULL, txn_id = NULL, bank_answer = NULL,
                 bank_signature = NULL, payer_answer = NULL, reason = NULL, paid_day = NULL, reversal_code = NULL,
                 updated_at = ?5
             WHERE order_no = ?6 AND amount = ?7 AND currency = ?8 AND status IN ('open', 'declined', 'reversed')",
            params![
                submission.issuer_iin.as_str(),
                submission.packet,
                submission.body,
                submission.signature,
                now_text(),
                submission.order_no.as_str(),
                amount_sql,
                submission.currency.code(),
            ],
        )?;
        if changed == 1 {
            return self.expect_status(&submission.order_no, OrderStatus::Submitted).map(drop);
        }
        match self.get(&submission.order_no)? {
            None => Err(BookError::NotFound(submission.order_no)),
            Some(order) => Err(BookError::Conflict { order_no: order.order_no, status: order.status }),
        }
    }

    /// Records the bank's verified answer: paid (00) or declined.
    pub fn record_answer(&self, order_no: &OrderNo, outcome: &BankOutcome) -> Result<Order, BookError> {
        let approved = outcome.response_code == "00";
        let status = if approved { OrderStatus::Paid } else { OrderStatus::Declined };
        let reason = if approved { None } else { Some(format!("declined by the issuer ({})", outcome.response_code)) };
        let changed = self.lock()?.execute(
            "UPDATE orders SET status = ?1, response_code = ?2, auth_code = ?3, txn_id = ?4, bank_answer = ?5,
                 bank_signature = ?6, payer_answer = ?7, reason = ?8, paid_day = ?9, updated_at = ?10
             WHERE order_no = ?11 AND status = 'submitted'",
            params![
                status.as_str(),
                outcome.response_code,
                outcome.auth_code,
                outcome.txn_id,
                outcome.body,
                outcome.signature,
                outcome.payer_answer,
                reason,
                approved.then(today),
                now_text(),
                order_no.as_str(),
            ],
        )?;
        self.after_transition(order_no, changed, status)
    }

    /// Records a request the bank refused without deciding it (a problem answer, nothing booked).
    pub fn record_refused(
        &self,
        order_no: &OrderNo,
        response_code: Option<&str>,
        reason: &str,
    ) -> Result<Order, BookError> {
        let changed = self.lock()?.execute(
            "UPDATE orders SET status = 'declined', response_code = ?1, reason = ?2, updated_at = ?3
             WHERE order_no = ?4 AND status = 'submitted'",
            params![response_code, reason, now_text(), order_no.as_str()],
        )?;
        self.after_transition(order_no, changed, OrderStatus::Declined)
    }

    /// Records a payment whose outcome the merchant could not establish (no answer in time:
    /// `ReversalPending`; an answer that does not verify: `Unknown`) and queues its reversal,
    /// in one transaction.
    pub fn record_unresolved(
        &self,
        order_no: &OrderNo,
        status: OrderStatus,
        reason: &str,
        reversal: &NewReversal,
    ) -> Result<Order, BookError> {
        if !matches!(status, OrderStatus::Unknown | OrderStatus::ReversalPending) {
            return Err(BookError::Damaged("an unresolved order is unknown or reversal_pending"));
        }
        let changed = {
            let mut connection = self.lock()?;
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now_text();
            let changed = tx.execute(
                "UPDATE orders SET status = ?1, reason = ?2, updated_at = ?3 WHERE order_no = ?4 AND status = 'submitted'",
                params![status.as_str(), reason, now, order_no.as_str()],
            )?;
            if changed == 1 {
                tx.execute(
                    "INSERT INTO reversals (order_no, issuer_iin, body, signature, status, next_attempt_ms, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?6)",
                    params![order_no.as_str(), reversal.issuer_iin.as_str(), reversal.body, reversal.signature, now_ms(), now],
                )?;
            }
            tx.commit()?;
            changed
        };
        self.after_transition(order_no, changed, status)
    }

    /// Queues the reversal of a packet of another issuer sent for an order already paid (the
    /// payment flow's "void"), due at `due_ms`, by when the packet's delivery has ended whatever
    /// becomes of this process. The order itself is not touched. Refused, with the order's
    /// status, unless the order is paid and has no reversal pending: a second such packet waits
    /// until the first one's reversal is answered. Returns the reversal's id.
    pub fn queue_void(&self, order_no: &OrderNo, reversal: &NewReversal, due_ms: i64) -> Result<i64, BookError> {
        let mut connection = self.lock()?;
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let status: Option<String> = tx
            .query_row("SELECT status FROM orders WHERE order_no = ?1", [order_no.as_str()], |row| row.get(0))
            .optional()?;
        let status = status.ok_or(BookError::NotFound(*order_no))?;
        let status = OrderStatus::parse(&status).ok_or(BookError::Damaged("order status"))?;
        let pending: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM reversals WHERE order_no = ?1 AND status = 'pending')",
            [order_no.as_str()],
            |row| row.get(0),
        )?;
        if status != OrderStatus::Paid || pending {
            let status = if pending { OrderStatus::ReversalPending } else { status };
            return Err(BookError::Conflict { order_no: *order_no, status });
        }
        let now = now_text();
        tx.execute(
            "INSERT INTO reversals (order_no, issuer_iin, body, signature, status, next_attempt_ms, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?6)",
            params![order_no.as_str(), reversal.issuer_iin.as_str(), reversal.body, reversal.signature, due_ms, now],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// Makes a pending reversal due now.
    pub fn reversal_due_now(&self, id: i64) -> Result<(), BookError> {
        self.lock()?.execute(
            "UPDATE reversals SET next_attempt_ms = ?1, updated_at = ?2 WHERE id = ?3 AND status = 'pending'",
            params![now_ms(), now_text(), id],
        )?;
        Ok(())
    }

    /// Drops a queued reversal that was never sent, once the verified answer to its packet
    /// showed nothing to undo (declined) or the bank refused the packet undecided. Returns
    /// whether it was dropped; one already sent stays, and its answer is recorded as usual.
    pub fn drop_unsent_reversal(&self, id: i64) -> Result<bool, BookError> {
        let dropped = self
            .lock()?
            .execute("DELETE FROM reversals WHERE id = ?1 AND status = 'pending' AND attempts = 0", [id])?;
        Ok(dropped == 1)
    }

    /// Orders left submitted (a crash while a request was out): the caller queues their reversals.
    pub fn submitted(&self) -> Result<Vec<Order>, BookError> {
        let connection = self.lock()?;
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE status = 'submitted' ORDER BY updated_at");
        let mut statement = connection.prepare(&sql)?;
        let rows = statement.query_map([], read_raw_order)?;
        rows.map(|row| row.map_err(BookError::from).and_then(RawOrder::into_order)).collect()
    }

    /// Reversals due at `now_ms`, oldest first, at most `limit`.
    pub fn due_reversals(&self, now_ms: i64, limit: usize) -> Result<Vec<PendingReversal>, BookError> {
        self.pending_reversals_where("next_attempt_ms <= ?1", now_ms, limit)
    }

    /// Every pending reversal, whenever due.
    pub fn pending_reversals(&self, limit: usize) -> Result<Vec<PendingReversal>, BookError> {
        self.pending_reversals_where("?1 = ?1", 0, limit)
    }

    fn pending_reversals_where(
        &self,
        filter: &str,
        value: i64,
        limit: usize,
    ) -> Result<Vec<PendingReversal>, BookError> {
        let connection = self.lock()?;
        let sql = format!(
            "SELECT id, order_no, issuer_iin, body, signature, attempts FROM reversals
             WHERE status = 'pending' AND {filter} ORDER BY next_attempt_ms, id LIMIT ?2"
        );
        let mut statement = connection.prepare(&sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement.query_map(params![value, limit], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Vec<u8>>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, i64>(5)?,
            ))
        })?;
        rows.map(|row| {
            let (id, order_no, issuer_iin, body, signature, attempts) = row?;
            Ok(PendingReversal {
                id,
                order_no: OrderNo::new(&order_no).map_err(|_| BookError::Damaged("reversal order_no"))?,
                issuer_iin: Iin::new(&issuer_iin).map_err(|_| BookError::Damaged("reversal issuer_iin"))?,
                body,
                signature,
                attempts: u32::try_from(attempts).map_err(|_| BookError::Damaged("reversal attempts"))?,
            })
        })
        .collect()
    }

    /// How many reversals wait for an answer.
    pub fn pending_reversal_count(&self) -> Result<u64, BookError> {
        let count: i64 =
            self.lock()?.query_row("SELECT count(*) FROM reversals WHERE status = 'pending'", [], |row| row.get(0))?;
        u64::try_from(count).map_err(|_| BookError::Damaged("reversal count"))
    }

    /// A reversal attempt that got no verified answer: try again at `next_attempt_ms`.
    pub fn reversal_retry_later(&self, id: i64, next_attempt_ms: i64, error: &str) -> Result<(), BookError> {
        self.lock()?.execute(
            "UPDATE reversals SET attempts = attempts + 1, next_attempt_ms = ?1, last_error = ?2, updated_at = ?3
             WHERE id = ?4 AND status = 'pending'",
            params![next_attempt_ms, error, now_text(), id],
        )?;
        Ok(())
    }

    /// The issuer's verified answer to a reversal. With 00 (reversed) or 25 (nothing to
    /// reverse) the order is reversed and may be paid again; with 12 (amount or currency differ)
    /// it stays unknown for a person to look at.
    pub fn reversal_answered(&self, reversal: &PendingReversal, outcome: &ReversalOutcome) -> Result<Order, BookError> {
        let settled = matches!(outcome.response_code.as_str(), "00" | "25");
        let status = if settled { OrderStatus::Reversed } else { OrderStatus::Unknown };
        let reason = if settled {
            format!("reversal answered {} by the issuer", outcome.response_code)
        } else {
            format!("the issuer refused the reversal ({}); needs a person to reconcile", outcome.response_code)
        };
        {
            let mut connection = self.lock()?;
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now_text();
            let done = tx.execute(
                "UPDATE reversals SET status = 'done', attempts = attempts + 1, response_code = ?1, reversal_id = ?2,
                     answer = ?3, answer_signature = ?4, last_error = NULL, updated_at = ?5
                 WHERE id = ?6 AND status = 'pending'",
                params![outcome.response_code, outcome.reversal_id, outcome.body, outcome.signature, now, reversal.id],
            )?;
            if done != 1 {
                return Err(BookError::Damaged("answered reversal was not pending"));
            }
            tx.execute(
                "UPDATE orders SET status = ?1, reason = ?2, reversal_code = ?3, paid_day = NULL, updated_at = ?4
                 WHERE order_no = ?5 AND status IN ('unknown', 'reversal_pending')",
                params![status.as_str(), reason, outcome.response_code, now, reversal.order_no.as_str()],
            )?;
            tx.commit()?;
        }
        self.get(&reversal.order_no)?.ok_or(BookError::NotFound(reversal.order_no))
    }

    /// Whether the database takes a durable write now (for `/readyz`).
    pub fn health_check(&self) -> Result<(), BookError> {
        self.lock()?.execute_batch("BEGIN IMMEDIATE; COMMIT;")?;
        Ok(())
    }

    fn after_transition(&self, order_no: &OrderNo, changed: usize, status: OrderStatus) -> Result<Order, BookError> {
        if changed == 1 {
            return self.expect_status(order_no, status);
        }
        match self.get(order_no)? {
            None => Err(BookError::NotFound(*order_no)),
            Some(order) => Err(BookError::Conflict { order_no: order.order_no, status: order.status }),
        }
    }

    /// Re-reads an order after a write and checks the status it was given.
    fn expect_status(&self, order_no: &OrderNo, status: OrderStatus) -> Result<Order, BookError> {
        let order = self.get(order_no)?.ok_or(BookError::Damaged("written order not found"))?;
        if order.status != status {
            return Err(BookError::Damaged("written order reads back with another status"));
        }
        Ok(order)
    }
}

struct RawOrder {
    order_no: String,
    amount: i64,
    currency: i64,
    status: String,
    issuer_iin: Option<String>,
    payer_packet: Option<Vec<u8>>,
    response_code: Option<String>,
    auth_code: Option<String>,
    txn_id: Option<String>,
    bank_answer: Option<Vec<u8>>,
    bank_signature: Option<String>,
    payer_answer: Option<Vec<u8>>,
    reason: Option<String>,
    paid_day: Option<String>,
    created_at: String,
    updated_at: String,
    reversal_code: Option<String>,
    request_body: Option<Vec<u8>>,
    request_signature: Option<String>,
}

fn read_raw_order(row: &Row<'_>) -> rusqlite::Result<RawOrder> {
    Ok(RawOrder {
        order_no: row.get(0)?,
        amount: row.get(1)?,
        currency: row.get(2)?,
        status: row.get(3)?,
        issuer_iin: row.get(4)?,
        payer_packet: row.get(5)?,
        response_code: row.get(6)?,
        auth_code: row.get(7)?,
        txn_id: row.get(8)?,
        bank_answer: row.get(9)?,
        bank_signature: row.get(10)?,
        payer_answer: row.get(11)?,
        reason: row.get(12)?,
        paid_day: row.get(13)?,
        created_at: row.get(14)?,
        updated_at: row.get(15)?,
        reversal_code: row.get(16)?,
        request_body: row.get(17)?,
        request_signature: row.get(18)?,
    })
}

impl RawOrder {
    /// Parses a row back into typed values: a value that does not parse means damage.
    fn into_order(self) -> Result<Order, BookError> {
        let status = OrderStatus::parse(&self.status).ok_or(BookError::Damaged("status"))?;
        let amount = u64::try_from(self.amount).map_err(|_| BookError::Damaged("amount"))?;
        let currency = u16::try_from(self.currency)
            .ok()
            .and_then(|code| Currency::from_code(code).ok())
            .ok_or(BookError::Damaged("currency"))?;
        let issuer_iin =
            self.issuer_iin.map(|iin| Iin::new(&iin)).transpose().map_err(|_| BookError::Damaged("issuer_iin"))?;
        if status == OrderStatus::Paid && (self.auth_code.is_none() || self.bank_signature.is_none()) {
            return Err(BookError::Damaged("a paid order without its auth code and bank signature"));
        }
        Ok(Order {
            order_no: OrderNo::new(&self.order_no).map_err(|_| BookError::Damaged("order_no"))?,
            amount: Amount::from_minor(amount),
            currency,
            status,
            issuer_iin,
            payer_packet: self.payer_packet,
            request: self.request_body.zip(self.request_signature),
            response_code: self.response_code,
            auth_code: self.auth_code,
            txn_id: self.txn_id,
            bank_answer: self.bank_answer,
            bank_signature: self.bank_signature,
            payer_answer: self.payer_answer,
            reason: self.reason,
            reversal_code: self.reversal_code,
            paid_day: self.paid_day,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> (tempfile::TempDir, OrderBook) {
        let dir = tempfile::tempdir().unwrap();
        let book = OrderBook::open(&dir.path().join("orders.db"), Duration::from_secs(1)).unwrap();
        (dir, book)
    }

    fn submission(order_no: &str) -> Submission {
        Submission {
            order_no: OrderNo::new(order_no).unwrap(),
            amount: Amount::from_minor(1250),
            currency: Currency::EUR,
            issuer_iin: Iin::new("400012").unwrap(),
            packet: vec![1; 113],
            body: b"{}".to_vec(),
            signature: "sig".to_owned(),
        }
    }

    /// A verified approval as the payment flow records it.
    fn approval() -> BankOutcome {
        BankOutcome {
            response_code: "00".to_owned(),
            auth_code: Some("A1B2C3".to_owned()),
            txn_id: "00".repeat(16),
            body: b"{}".to_vec(),
            signature: "s".to_owned(),
            payer_answer: Some(vec![0; 79]),
        }
    }

    #[test]
    fn an_order_goes_open_submitted_paid_and_no_further() {
        let (_dir, book) = book();
        let order_no = OrderNo::new("ORD-1").unwrap();
        book.create(order_no, Amount::from_minor(1250), Currency::EUR).unwrap();
        assert!(matches!(book.create(order_no, Amount::from_minor(1), Currency::EUR), Err(BookError::Exists(_))));
        book.begin_payment(&submission("ORD-1")).unwrap();
        let again = book.begin_payment(&submission("ORD-1"));
        assert!(matches!(again, Err(BookError::Conflict { status: OrderStatus::Submitted, .. })), "{again:?}");
        let outcome = approval();
        let paid = book.record_answer(&order_no, &outcome).unwrap();
        assert_eq!(paid.status, OrderStatus::Paid);
        assert_eq!(book.paid(None, 10).unwrap().len(), 1);
        assert_eq!(book.paid(Some("1999-01-01"), 10).unwrap().len(), 0);
        assert!(matches!(book.begin_payment(&submission("ORD-1")), Err(BookError::Conflict { .. })));
    }

    #[test]
    fn a_mismatched_or_missing_order_is_not_submitted() {
        let (_dir, book) = book();
        assert!(matches!(book.begin_payment(&submission("NONE")), Err(BookError::NotFound(_))));
        book.create(OrderNo::new("ORD-2").unwrap(), Amount::from_minor(99), Currency::EUR).unwrap();
        assert!(matches!(book.begin_payment(&submission("ORD-2")), Err(BookError::Conflict { .. })));
    }

    #[test]
    fn an_unresolved_payment_queues_one_reversal_until_answered() {
        let (_dir, book) = book();
        let order_no = OrderNo::new("ORD-3").unwrap();
        book.create(order_no, Amount::from_minor(1250), Currency::EUR).unwrap();
        book.begin_payment(&submission("ORD-3")).unwrap();
        let reversal =
            NewReversal { issuer_iin: Iin::new("400012").unwrap(), body: b"{\"r\":1}".to_vec(), signature: "j".into() };
        let order = book.record_unresolved(&order_no, OrderStatus::ReversalPending, "timeout", &reversal).unwrap();
        assert_eq!(order.status, OrderStatus::ReversalPending);
        let due = book.due_reversals(now_ms() + 1, 10).unwrap();
        assert_eq!(due.len(), 1);
        book.reversal_retry_later(due[0].id, now_ms() + 60_000, "connection refused").unwrap();
        assert!(book.due_reversals(now_ms(), 10).unwrap().is_empty());
        assert_eq!(book.pending_reversal_count().unwrap(), 1);
        let outcome = ReversalOutcome {
            response_code: "25".into(),
            reversal_id: None,
            body: b"{}".to_vec(),
            signature: "s".into(),
        };
        let order = book.reversal_answered(&due[0], &outcome).unwrap();
        assert_eq!(order.status, OrderStatus::Reversed);
        assert_eq!(book.pending_reversal_count().unwrap(), 0);
        book.begin_payment(&submission("ORD-3")).unwrap();
    }

    #[test]
    fn a_void_of_a_paid_order_waits_its_time_one_at_a_time_and_leaves_the_order_paid() {
        let (_dir, book) = book();
        let order_no = OrderNo::new("ORD-4").unwrap();
        book.create(order_no, Amount::from_minor(1250), Currency::EUR).unwrap();
        let reversal =
            NewReversal { issuer_iin: Iin::new("510050").unwrap(), body: b"{\"r\":4}".to_vec(), signature: "j".into() };
        let refused = book.queue_void(&order_no, &reversal, now_ms());
        assert!(matches!(refused, Err(BookError::Conflict { status: OrderStatus::Open, .. })), "{refused:?}");
        book.begin_payment(&submission("ORD-4")).unwrap();
        let outcome = approval();
        book.record_answer(&order_no, &outcome).unwrap();

        // Queued for later: not due yet; a second one waits; dropped before any attempt.
        let id = book.queue_void(&order_no, &reversal, now_ms() + 60_000).unwrap();
        assert!(book.due_reversals(now_ms(), 10).unwrap().is_empty());
        let second = book.queue_void(&order_no, &reversal, now_ms());
        assert!(matches!(second, Err(BookError::Conflict { status: OrderStatus::ReversalPending, .. })), "{second:?}");
        assert!(book.drop_unsent_reversal(id).unwrap());
        assert_eq!(book.pending_reversal_count().unwrap(), 0);

        // Made due at once, sent, answered: dropping it is too late; the order stays paid.
        let id = book.queue_void(&order_no, &reversal, now_ms() + 60_000).unwrap();
        book.reversal_due_now(id).unwrap();
        let due = book.due_reversals(now_ms(), 10).unwrap();
        assert_eq!((due.len(), due[0].id, due[0].issuer_iin.as_str()), (1, id, "510050"));
        book.reversal_retry_later(id, now_ms(), "connection refused").unwrap();
        assert!(!book.drop_unsent_reversal(id).unwrap(), "an attempt was made");
        let answered = ReversalOutcome {
            response_code: "00".into(),
            reversal_id: Some("11".repeat(16)),
            body: b"{}".to_vec(),
            signature: "s".into(),
        };
        let order = book.reversal_answered(&due[0], &answered).unwrap();
        assert_eq!((order.status, order.reversal_code), (OrderStatus::Paid, None));
        assert_eq!(book.pending_reversal_count().unwrap(), 0);
    }
}
