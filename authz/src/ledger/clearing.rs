//! Clearing and settlement in the ledger (docs/CLEARING.md): what a day's clearing file holds,
//! the exported files kept byte for byte, the rule that a cleared day takes no more bookings,
//! and the booking of a settlement.

use mps_protocol::{Currency, Iin};
use mps_settlement::clearing::{Entry, EntryKind as ClearingKind};
use time::Date;

use super::error::{Conflict, LedgerError};
use super::journal::{self, Posting, PostingTarget};
use super::model::{EntryKind, InternalAccount};
use super::rows::{day_text, now_text, parse_day};
use super::sql::{Row, Sql, args};

/// An exported clearing file as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredClearingFile {
    /// Its business day.
    pub business_day: Date,
    /// SHA-256 of `bytes`, lowercase hex.
    pub sha256: String,
    /// The file, byte for byte.
    pub bytes: Vec<u8>,
    /// Its detached JWS.
    pub jws: String,
}

/// One settlement to book: for each acquirer and currency, what the bank pays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementBooking {
    /// SHA-256 of the positions file (booked once).
    pub positions_sha256: String,
    /// (acquirer, currency, amount in minor units) rows; a negative amount is received.
    pub payments: Vec<(Iin, Currency, i64)>,
}

/// Refuses a booking into `day` when that day or a later one was cleared: its file is
/// exported and signed, and a booking it does not hold would never be settled.
pub(crate) fn check_day_open(conn: &dyn Sql, day: Date) -> Result<(), LedgerError> {
    if let Some(cleared) = latest_day(conn)?
        && day <= cleared
    {
        return Err(LedgerError::Conflict(Conflict::DayCleared(day)));
    }
    Ok(())
}

/// The latest business day whose file was exported.
pub(crate) fn latest_day(conn: &dyn Sql) -> Result<Option<Date>, LedgerError> {
    let text: Option<String> = conn
        .query_one("SELECT max(business_day) FROM clearing_files", args![], "clearing_files.business_day")?
        .get(0, "clearing_files.business_day")?;
    text.map(|text| parse_day("clearing_files.business_day", &text)).transpose()
}

/// The exported file of `day`, if any.
pub(crate) fn stored_file(conn: &dyn Sql, day: Date) -> Result<Option<StoredClearingFile>, LedgerError> {
    let row = conn
        .query_opt("SELECT sha256, bytes, jws FROM clearing_files WHERE business_day = ?1", args![&day_text(day)?])?;
    row.map(|row| {
        Ok(StoredClearingFile {
            business_day: day,
            sha256: row.get(0, "clearing_files.sha256")?,
            bytes: row.get(1, "clearing_files.bytes")?,
            jws: row.get(2, "clearing_files.jws")?,
        })
    })
    .transpose()
}

/// The entries of `day`'s file: its approvals not reversed on the same day, and its
/// reversals of earlier days' approvals as negative entries. Its two reads must see one
/// snapshot: the caller runs it in a read transaction.
pub(crate) fn entries(conn: &dyn Sql, day: Date) -> Result<Vec<Entry>, LedgerError> {
    let day = day_text(day)?;
    let approvals = conn.query(
        "SELECT t.txn_id, t.auth_code, t.merchant_id, t.order_no, t.acquirer_iin, t.amount, t.currency, t.created_at
         FROM transactions t LEFT JOIN reversals r ON r.reversal_id = t.reversal_id
         WHERE t.business_day = ?1 AND t.response_code = '00' AND (r.reversal_id IS NULL OR r.business_day <> ?1)",
        args![&day],
    )?;
    let reversals = conn.query(
        "SELECT r.reversal_id, t.auth_code, t.merchant_id, t.order_no, t.acquirer_iin, t.amount, t.currency,
                r.created_at, t.txn_id
         FROM reversals r JOIN transactions t ON t.txn_id = r.original_txn_id
         WHERE r.business_day = ?1 AND r.response_code = '00' AND t.business_day < ?1",
        args![&day],
    )?;
    let approvals = approvals.iter().map(|row| Raw::from_row(row, ClearingKind::Approval)?.entry());
    let reversals = reversals.iter().map(|row| Raw::from_row(row, ClearingKind::Reversal)?.entry());
    approvals.chain(reversals).collect()
}

/// A row of either query, as stored.
struct Raw {
    txn_id: Vec<u8>,
    original: Option<Vec<u8>>,
    auth_code: Option<String>,
    merchant_id: String,
    order_no: String,
    acquirer_iin: String,
    amount: i64,
    currency: i64,
    time: String,
}

impl Raw {
    /// Reads a row of either query: the same eight columns, and a reversal's original
    /// approval ninth.
    fn from_row(row: &Row, kind: ClearingKind) -> Result<Self, LedgerError> {
        let (txn_id, original, time) = match kind {
            ClearingKind::Approval => {
                (row.get(0, "transactions.txn_id")?, None, row.get(7, "transactions.created_at")?)
            }
            ClearingKind::Reversal => (
                row.get(0, "reversals.reversal_id")?,
                Some(row.get(8, "transactions.txn_id")?),
                row.get(7, "reversals.created_at")?,
            ),
        };
        Ok(Self {
            txn_id,
            original,
            time,
            auth_code: row.get(1, "transactions.auth_code")?,
            merchant_id: row.get(2, "transactions.merchant_id")?,
            order_no: row.get(3, "transactions.order_no")?,
            acquirer_iin: row.get(4, "transactions.acquirer_iin")?,
            amount: row.get(5, "transactions.amount")?,
            currency: row.get(6, "transactions.currency")?,
        })
    }

    fn entry(self) -> Result<Entry, LedgerError> {
        let corrupt = |what| LedgerError::Corrupt(what);
        if self.txn_id.len() != 16 || self.original.as_ref().is_some_and(|o| o.len() != 16) {
            return Err(corrupt("transactions.txn_id"));
        }
        let (kind, amount) = match self.original {
            None => (ClearingKind::Approval, self.amount),
            Some(_) => (ClearingKind::Reversal, self.amount.checked_neg().ok_or(corrupt("transactions.amount"))?),
        };
        Ok(Entry {
            txn_id: hex::encode(&self.txn_id),
            kind,
            original_txn_id: self.original.map(hex::encode),
            auth_code: self.auth_code.ok_or(corrupt("transactions.auth_code"))?,
            merchant_id: self.merchant_id,
            order_no: self.order_no,
            acquirer_iin: self.acquirer_iin,
            amount,
            currency: u16::try_from(self.currency).map_err(|_| corrupt("transactions.currency"))?,
            time: self.time,
        })
    }
}

/// Keeps an exported file; a file of that day kept before wins (the caller reads it back).
pub(crate) fn store_file(conn: &dyn Sql, file: &StoredClearingFile) -> Result<(), LedgerError> {
    conn.execute(
        "INSERT INTO clearing_files (business_day, sha256, bytes, jws, exported_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (business_day) DO NOTHING",
        args![&day_text(file.business_day)?, &file.sha256, &file.bytes, &file.jws, &now_text()?],
    )?;
    Ok(())
}

/// Books a settlement: per row, the amount out of the acquirer's settlement payable into the
/// bank's funding account, in one journal entry per row; the positions file once.
pub(crate) fn book_settlement(conn: &dyn Sql, booking: &SettlementBooking) -> Result<(), LedgerError> {
    let now = now_text()?;
    let inserted = conn.execute(
        "INSERT INTO settlements (positions_sha256, booked_at) VALUES (?1, ?2)
         ON CONFLICT (positions_sha256) DO NOTHING",
        args![&booking.positions_sha256, &now],
    )?;
    if inserted != 1 {
        return Err(LedgerError::Conflict(Conflict::AlreadySettled));
    }
    for (acquirer_iin, currency, amount) in &booking.payments {
        if *amount == 0 {
            continue;
        }
        let payable = InternalAccount::SettlementPayable { acquirer_iin: *acquirer_iin };
        let payable_id = journal::internal_account_id(conn, payable, *currency, &now)?;
        let funding_id = journal::internal_account_id(conn, InternalAccount::Funding, *currency, &now)?;
        let postings = [
            Posting { target: PostingTarget::Internal(payable_id), amount: -amount, currency: *currency },
            Posting { target: PostingTarget::Internal(funding_id), amount: *amount, currency: *currency },
        ];
        journal::post_entry(conn, EntryKind::Settlement, None, &now, &postings)?;
    }
    Ok(())
}
