//! Booking a reversal (DESIGN.md section 6.1): the answered reversal is kept whatever it said
//! (a repeated request, byte for byte the same, gets the same answer), and a reversal of an
//! approval books the approval's postings mirrored, marks the approval reversed (which takes it
//! out of the day's usage and frees its order number) — at most once, re-checked inside the
//! writer's savepoint.

use std::fmt;

use mps_protocol::{Amount, Currency, MerchantId, OrderNo, ResponseCode, TxnId};
use time::{Date, OffsetDateTime};

use super::error::{Conflict, LedgerError};
use super::journal::{self, Posting, PostingTarget};
use super::model::{EntryKind, InternalAccount, Transaction, signed};
use super::queries;
use super::rows::{day_text, time_text};
use super::sql::{Sql, args};

/// Why the merchant reverses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversalReason {
    /// No answer came in time.
    Timeout,
    /// The merchant cancelled the order.
    Cancelled,
}

impl ReversalReason {
    /// The text on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the wire text.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "timeout" => Some(Self::Timeout),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// What the issuer answered to a reversal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversalOutcome {
    /// 00: the approval `original` is undone.
    Reversed {
        /// The approval.
        original: TxnId,
    },
    /// 25: no approval of this merchant and order to undo.
    NothingToReverse,
    /// 12: the approval found differs in amount, currency or transaction id.
    Mismatch {
        /// The approval found.
        original: TxnId,
    },
}

impl ReversalOutcome {
    /// The ISO 8583 code of the answer.
    pub fn response_code(&self) -> ResponseCode {
        match self {
            Self::Reversed { .. } => ResponseCode::Approved,
            Self::NothingToReverse => ResponseCode::NoOriginal,
            Self::Mismatch { .. } => ResponseCode::InvalidTransaction,
        }
    }

    /// The approval the answer names, if any.
    pub fn original(&self) -> Option<TxnId> {
        match self {
            Self::Reversed { original } | Self::Mismatch { original } => Some(*original),
            Self::NothingToReverse => None,
        }
    }
}

/// One answered reversal, to store (and, for 00, to book).
#[derive(Clone)]
pub struct ReversalCommit {
    /// The issuer's id of this reversal.
    pub reversal_id: TxnId,
    /// SHA-256 of the exact request body: a repeat is the same bytes.
    pub request_digest: [u8; 32],
    /// The merchant (from the body, checked against its certificate).
    pub merchant_id: MerchantId,
    /// The order.
    pub order_no: OrderNo,
    /// The amount the merchant named.
    pub amount: Amount,
    /// The currency the merchant named.
    pub currency: Currency,
    /// Why.
    pub reason: ReversalReason,
    /// What the issuer answered.
    pub outcome: ReversalOutcome,
    /// The business day the reversal counts for.
    pub business_day: Date,
    /// When the issuer answered.
    pub created_at: OffsetDateTime,
    /// The answer body, byte for byte.
    pub response_body: Vec<u8>,
    /// The answer's `x-jws-signature`.
    pub response_signature: String,
}

impl fmt::Debug for ReversalCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReversalCommit")
            .field("reversal_id", &self.reversal_id)
            .field("merchant_id", &self.merchant_id)
            .field("order_no", &self.order_no)
            .field("amount", &self.amount)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

/// A reversal answered before, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReversal {
    /// The code it answered.
    pub response_code: ResponseCode,
    /// The answer body, byte for byte.
    pub response_body: Vec<u8>,
    /// The answer's `x-jws-signature`.
    pub response_signature: String,
}

/// The stored answer of the reversal whose request body had this digest.
pub(crate) fn stored(conn: &dyn Sql, digest: &[u8; 32]) -> Result<Option<StoredReversal>, LedgerError> {
    let row = conn.query_opt(
        "SELECT response_code, response_body, response_signature FROM reversals WHERE request_digest = ?1",
        args![digest],
    )?;
    row.map(|row| {
        let code: String = row.get(0, "reversals.response_code")?;
        Ok(StoredReversal {
            response_code: ResponseCode::parse(&code).ok_or(LedgerError::Corrupt("reversals.response_code"))?,
            response_body: row.get(1, "reversals.response_body")?,
            response_signature: row.get(2, "reversals.response_signature")?,
        })
    })
    .transpose()
}

/// Stores an answered reversal and, for 00, books it. Called by the writer in a savepoint.
pub(crate) fn commit(conn: &dyn Sql, commit: &ReversalCommit) -> Result<(), LedgerError> {
    super::clearing::check_day_open(conn, commit.business_day)?;
    let created_at = time_text(commit.created_at)?;
    let amount = signed(commit.amount, "amount")?;
    let original = commit.outcome.original();
    conn.execute(
        "INSERT INTO reversals (reversal_id, request_digest, merchant_id, order_no, original_txn_id, response_code,
             amount, currency, reason, business_day, created_at, response_body, response_signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        args![
            &commit.reversal_id.0,
            &commit.request_digest,
            commit.merchant_id.as_str(),
            commit.order_no.as_str(),
            original.as_ref().map(|t| &t.0),
            commit.outcome.response_code().as_str(),
            amount,
            i64::from(commit.currency.code()),
            commit.reason.as_str(),
            &day_text(commit.business_day)?,
            &created_at,
            &commit.response_body,
            commit.response_signature.as_str(),
        ],
    )?;
    if let ReversalOutcome::Reversed { original } = commit.outcome {
        undo_approval(conn, commit, &original, &created_at)?;
    }
    Ok(())
}

/// The approval is still approved and not reversed, and is the merchant's order with the
/// amount and currency named; then it is marked reversed and its postings are mirrored.
fn undo_approval(
    conn: &dyn Sql,
    commit: &ReversalCommit,
    original: &TxnId,
    created_at: &str,
) -> Result<(), LedgerError> {
    let approval = queries::transaction(conn, original)?.ok_or(LedgerError::NotFound("transaction"))?;
    let transaction = &approval.transaction;
    let same_order = transaction.merchant_id == commit.merchant_id && transaction.order_no == commit.order_no;
    let same_money = transaction.amount == commit.amount && transaction.currency == commit.currency;
    if approval.outcome.response_code() != ResponseCode::Approved || !same_order || !same_money {
        return Err(LedgerError::Invariant("a reversal must name its approval's merchant, order and amount"));
    }
    let changed = conn.execute(
        "UPDATE transactions SET reversal_id = ?1 WHERE txn_id = ?2 AND reversal_id IS NULL",
        args![&commit.reversal_id.0, &original.0],
    )?;
    if changed != 1 {
        return Err(LedgerError::Conflict(Conflict::AlreadyReversed));
    }
    let amount = signed(transaction.amount, "amount")?;
    let payable = InternalAccount::SettlementPayable { acquirer_iin: transaction.acquirer_iin };
    let payable_id = journal::internal_account_id(conn, payable, transaction.currency, created_at)?;
    let postings = [
        Posting { target: PostingTarget::Customer(&transaction.account), amount, currency: transaction.currency },
        Posting { target: PostingTarget::Internal(payable_id), amount: -amount, currency: transaction.currency },
    ];
    journal::post_entry(conn, EntryKind::Reversal, Some(original), created_at, &postings)?;
    subtract_from_daily_total(conn, transaction, amount)
}

/// The reversed approval no longer counts towards its day: taken off the account's running daily
/// total (migration 8) when that total is of the approval's day. One of an earlier day was
/// never in it (the total has moved on), so nothing changes; the CHECK `approved_today >= 0`
/// refuses a total that would go below zero.
fn subtract_from_daily_total(conn: &dyn Sql, approval: &Transaction, amount: i64) -> Result<(), LedgerError> {
    let changed = conn.execute(
        "UPDATE accounts SET approved_today = approved_today - ?3 WHERE account = ?1 AND approved_day = ?2",
        args![approval.account.expose(), &day_text(approval.business_day)?, amount],
    )?;
    if changed > 1 {
        return Err(LedgerError::Invariant("a reversal changed more than one account's daily total"));
    }
    Ok(())
}
