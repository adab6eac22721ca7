//! Clearing and settlement in the ledger (docs/CLEARING.md): what a day's clearing file holds,
//! the exported files kept byte for byte, the rule that a cleared day takes no more bookings,
//! and the booking of a settlement.

use mps_protocol::{Currency, Iin};
use mps_settlement::clearing::{Entry, EntryKind as ClearingKind};
use rusqlite::{Connection, OptionalExtension, params};
use time::Date;

use super::error::{Conflict, LedgerError};
use super::journal::{self, Posting, PostingTarget};
use super::model::{EntryKind, InternalAccount};
use super::rows::{day_text, now_text, parse_day};

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
pub(crate) fn check_day_open(conn: &Connection, day: Date) -> Result<(), LedgerError> {
    if let Some(cleared) = latest_day(conn)?
        && day <= cleared
    {
        return Err(LedgerError::Conflict(Conflict::DayCleared(day)));
    }
    Ok(())
}

/// The latest business day whose file was exported.
pub(crate) fn latest_day(conn: &Connection) -> Result<Option<Date>, LedgerError> {
    let text: Option<String> =
        conn.prepare_cached("SELECT max(business_day) FROM clearing_files")?.query_row([], |row| row.get(0))?;
    text.map(|text| parse_day("clearing_files.business_day", &text)).transpose()
}

/// The exported file of `day`, if any.
pub(crate) fn stored_file(conn: &Connection, day: Date) -> Result<Option<StoredClearingFile>, LedgerError> {
    let row: Option<(String, Vec<u8>, String)> = conn
        .prepare_cached("SELECT sha256, bytes, jws FROM clearing_files WHERE business_day = ?1")?
        .query_row([day_text(day)?], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    Ok(row.map(|(sha256, bytes, jws)| StoredClearingFile { business_day: day, sha256, bytes, jws }))
}

/// The entries of `day`'s file: its approvals not reversed on the same day, and its
/// reversals of earlier days' approvals as negative entries.
pub(crate) fn entries(conn: &Connection, day: Date) -> Result<Vec<Entry>, LedgerError> {
    let day = day_text(day)?;
    let mut out = Vec::new();
    let mut approvals = conn.prepare_cached(
        "SELECT t.txn_id, t.auth_code, t.merchant_id, t.order_no, t.acquirer_iin, t.amount, t.currency, t.created_at
         FROM transactions t LEFT JOIN reversals r ON r.reversal_id = t.reversal_id
         WHERE t.business_day = ?1 AND t.response_code = '00' AND (r.reversal_id IS NULL OR r.business_day <> ?1)",
    )?;
    let rows = approvals.query_map([&day], |row| {
        Ok(Raw {
            txn_id: row.get(0)?,
            original: None,
            auth_code: row.get(1)?,
            merchant_id: row.get(2)?,
            order_no: row.get(3)?,
            acquirer_iin: row.get(4)?,
            amount: row.get(5)?,
            currency: row.get(6)?,
            time: row.get(7)?,
        })
    })?;
    for raw in rows {
        out.push(raw?.entry()?);
    }
    let mut reversals = conn.prepare_cached(
        "SELECT r.reversal_id, t.txn_id, t.auth_code, t.merchant_id, t.order_no, t.acquirer_iin, t.amount, t.currency,
                r.created_at
         FROM reversals r JOIN transactions t ON t.txn_id = r.original_txn_id
         WHERE r.business_day = ?1 AND r.response_code = '00' AND t.business_day < ?1",
    )?;
    let rows = reversals.query_map([&day], |row| {
        Ok(Raw {
            txn_id: row.get(0)?,
            original: Some(row.get(1)?),
            auth_code: row.get(2)?,
            merchant_id: row.get(3)?,
            order_no: row.get(4)?,
            acquirer_iin: row.get(5)?,
            amount: row.get(6)?,
            currency: row.get(7)?,
            time: row.get(8)?,
        })
    })?;
    for raw in rows {
        out.push(raw?.entry()?);
    }
    Ok(out)
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
pub(crate) fn store_file(conn: &Connection, file: &StoredClearingFile) -> Result<(), LedgerError> {
    conn.prepare_cached(
        "INSERT INTO clearing_files (business_day, sha256, bytes, jws, exported_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (business_day) DO NOTHING",
    )?
    .execute(params![day_text(file.business_day)?, file.sha256, file.bytes, file.jws, now_text()?])?;
    Ok(())
}

/// Books a settlement: per row, the amount out of the acquirer's settlement payable into the
/// bank's funding account, in one journal entry per row; the positions file once.
pub(crate) fn book_settlement(conn: &Connection, booking: &SettlementBooking) -> Result<(), LedgerError> {
    let now = now_text()?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO settlements (positions_sha256, booked_at) VALUES (?1, ?2)
             ON CONFLICT (positions_sha256) DO NOTHING",
        )?
        .execute(params![booking.positions_sha256, now])?;
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
