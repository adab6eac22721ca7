//! The ledger's reads: SIM and account state for the decision, daily totals, duplicate orders,
//! statements and the audit of the double-entry invariants. Each runs on a read connection in
//! one snapshot and parses every row; invariants are checked after the read.

use mps_protocol::{Account, Amount, Currency, MerchantId, OrderNo, SimId, TxnId};
use rusqlite::{Connection, OptionalExtension, params};
use time::Date;

use super::error::LedgerError;
use super::model::{
    AccountRecord, InternalAccount, InternalBalance, SimRecord, StatementLine, StoredAnswer, TransactionRecord,
};
use super::rows::{
    ACCOUNT_COLUMNS, RawAccount, RawStatementLine, RawStoredAnswer, RawTransaction, TRANSACTION_COLUMNS, day_text,
    parse_account, parse_chain_key, parse_counter, parse_currency, parse_iin, parse_rsn, parse_sim_id,
    parse_sim_status, parse_time,
};

/// A SIM with its bound accounts and last stored answer, from one snapshot.
pub(crate) fn sim(conn: &mut Connection, sim_id: &SimId) -> Result<Option<SimRecord>, LedgerError> {
    let tx = conn.transaction()?;
    let row = tx
        .prepare_cached(
            "SELECT sim_id, iin, status, counter, wrapped_chain_key, next_rsn, created_at, kek_version \
             FROM sims WHERE sim_id = ?1",
        )?
        .query_row([sim_id.as_str()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, Vec<u8>>(4)?,
                row.get::<_, Vec<u8>>(5)?,
                row.get::<_, String>(6)?,
                row.get::<_, i64>(7)?,
            ))
        })
        .optional()?;
    let Some((id, iin, status, counter, key, rsn, created_at, kek_version)) = row else {
        return Ok(None);
    };
    let accounts = bound_accounts(&tx, sim_id)?;
    let last_answer = last_answer(&tx, sim_id)?;
    tx.finish()?;
    let record = SimRecord {
        sim_id: parse_sim_id("sims.sim_id", &id)?,
        iin: parse_iin("sims.iin", &iin)?,
        status: parse_sim_status(&status)?,
        counter: parse_counter("sims.counter", counter)?,
        wrapped_chain_key: parse_chain_key("sims.wrapped_chain_key", &key, kek_version)?,
        next_rsn: parse_rsn("sims.next_rsn", &rsn)?,
        accounts,
        last_answer,
        created_at: parse_time("sims.created_at", &created_at)?,
    };
    check_sim(&record)?;
    Ok(Some(record))
}

/// After a read: the stored answer is the answer of the SIM's last session, and a SIM that
/// has had sessions has an answer.
fn check_sim(record: &SimRecord) -> Result<(), LedgerError> {
    let answer_counter = record.last_answer.as_ref().map_or(0, |s| s.counter.value());
    if answer_counter != record.counter.value() {
        return Err(LedgerError::Corrupt("sim_answers.counter"));
    }
    Ok(())
}

fn bound_accounts(conn: &Connection, sim_id: &SimId) -> Result<Vec<Account>, LedgerError> {
    let mut stmt = conn.prepare_cached("SELECT account FROM sim_accounts WHERE sim_id = ?1 ORDER BY account")?;
    let texts = stmt.query_map([sim_id.as_str()], |row| row.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
    texts.iter().map(|t| parse_account("sim_accounts.account", t)).collect()
}

fn last_answer(conn: &Connection, sim_id: &SimId) -> Result<Option<StoredAnswer>, LedgerError> {
    let raw = conn
        .prepare_cached(
            "SELECT a.counter, a.txn_id, t.response_code, a.packet, a.response_body, a.response_signature
             FROM sim_answers a JOIN transactions t ON t.txn_id = a.txn_id WHERE a.sim_id = ?1",
        )?
        .query_row([sim_id.as_str()], |row| {
            Ok(RawStoredAnswer {
                counter: row.get(0)?,
                txn_id: row.get(1)?,
                response_code: row.get(2)?,
                packet: row.get(3)?,
                response_body: row.get(4)?,
                response_signature: row.get(5)?,
            })
        })
        .optional()?;
    raw.map(RawStoredAnswer::parse).transpose()
}

/// An account with its available funds.
pub(crate) fn account(conn: &Connection, account: &Account) -> Result<Option<AccountRecord>, LedgerError> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE account = ?1");
    let raw = conn.prepare_cached(&sql)?.query_row([account.expose()], RawAccount::from_row).optional()?;
    raw.map(RawAccount::parse).transpose()
}

/// The approvals of account ?1 on business day ?2 that stand, summed from the index of
/// migration 6 alone (`schema::tests::the_daily_total_is_summed_from_its_index_alone`).
pub(crate) const DAILY_APPROVED_TOTAL: &str = "SELECT COALESCE(SUM(amount), 0) FROM transactions
     WHERE account = ?1 AND business_day = ?2 AND response_code = '00' AND reversal_id IS NULL";

/// The sum of the account's approved amounts on one business day.
pub(crate) fn daily_approved_total(conn: &Connection, account: &Account, day: Date) -> Result<Amount, LedgerError> {
    let total: i64 = conn
        .prepare_cached(DAILY_APPROVED_TOTAL)?
        .query_row(params![account.expose(), day_text(day)?], |row| row.get(0))?;
    u64::try_from(total).map(Amount::from_minor).map_err(|_| LedgerError::Corrupt("transactions.amount"))
}

/// Whether this merchant order has an approval.
pub(crate) fn order_authorized(
    conn: &Connection,
    merchant_id: &MerchantId,
    order_no: &OrderNo,
) -> Result<bool, LedgerError> {
    let found: Option<i64> = conn
        .prepare_cached(
            "SELECT 1 FROM transactions
             WHERE merchant_id = ?1 AND order_no = ?2 AND response_code = '00' AND reversal_id IS NULL",
        )?
        .query_row(params![merchant_id.as_str(), order_no.as_str()], |row| row.get(0))
        .optional()?;
    Ok(found.is_some())
}

/// The approval of this merchant order that is not reversed, if any.
pub(crate) fn active_approval(
    conn: &Connection,
    merchant_id: &MerchantId,
    order_no: &OrderNo,
) -> Result<Option<TransactionRecord>, LedgerError> {
    let sql = format!(
        "SELECT {TRANSACTION_COLUMNS} FROM transactions
         WHERE merchant_id = ?1 AND order_no = ?2 AND response_code = '00' AND reversal_id IS NULL"
    );
    let raw = conn
        .prepare_cached(&sql)?
        .query_row(params![merchant_id.as_str(), order_no.as_str()], RawTransaction::from_row)
        .optional()?;
    raw.map(RawTransaction::parse).transpose()
}

/// One transaction.
pub(crate) fn transaction(conn: &Connection, txn_id: &TxnId) -> Result<Option<TransactionRecord>, LedgerError> {
    let sql = format!("SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE txn_id = ?1");
    let raw = conn.prepare_cached(&sql)?.query_row([&txn_id.0[..]], RawTransaction::from_row).optional()?;
    raw.map(RawTransaction::parse).transpose()
}

/// Every approval of one business day, oldest first (the clearing export's input).
pub(crate) fn approved_transactions(conn: &Connection, day: Date) -> Result<Vec<TransactionRecord>, LedgerError> {
    let sql = format!(
        "SELECT {TRANSACTION_COLUMNS} FROM transactions
         WHERE business_day = ?1 AND response_code = '00' ORDER BY created_at, txn_id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let raws = stmt.query_map([day_text(day)?], RawTransaction::from_row)?.collect::<Result<Vec<_>, _>>()?;
    raws.into_iter().map(RawTransaction::parse).collect()
}

/// The account's latest `limit` postings, newest first, each with the balance after it. The
/// running balance must end at the stored balance.
pub(crate) fn statement(
    conn: &mut Connection,
    account: &Account,
    limit: usize,
) -> Result<Vec<StatementLine>, LedgerError> {
    let tx = conn.transaction()?;
    let Some(record) = self::account(&tx, account)? else {
        return Err(LedgerError::NotFound("account"));
    };
    let limit = i64::try_from(limit).map_err(|_| LedgerError::InvalidInput("statement limit"))?;
    let mut stmt = tx.prepare_cached(
        "SELECT entry_id, kind, created_at, amount, currency, balance_after, txn_id, merchant_id, order_no, auth_code
         FROM (
             SELECT p.id AS posting_id, p.entry_id, e.kind, e.created_at, p.amount, p.currency,
                    SUM(p.amount) OVER (ORDER BY p.id ROWS UNBOUNDED PRECEDING) AS balance_after,
                    e.txn_id, t.merchant_id, t.order_no, t.auth_code
             FROM postings p
             JOIN journal_entries e ON e.id = p.entry_id
             LEFT JOIN transactions t ON t.txn_id = e.txn_id
             WHERE p.account = ?1
         )
         ORDER BY posting_id DESC LIMIT ?2",
    )?;
    let raws = stmt
        .query_map(params![account.expose(), limit], |row| {
            Ok(RawStatementLine {
                entry_id: row.get(0)?,
                kind: row.get(1)?,
                created_at: row.get(2)?,
                amount: row.get(3)?,
                currency: row.get(4)?,
                balance_after: row.get(5)?,
                txn_id: row.get(6)?,
                merchant_id: row.get(7)?,
                order_no: row.get(8)?,
                auth_code: row.get(9)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    drop(stmt);
    tx.finish()?;
    let lines = raws.into_iter().map(RawStatementLine::parse).collect::<Result<Vec<_>, _>>()?;
    let latest = lines.first().map_or(0, |line| line.balance_after);
    if latest != record.balance {
        return Err(LedgerError::Corrupt("accounts.balance differs from its postings"));
    }
    Ok(lines)
}

/// The bank's internal accounts and their balances.
pub(crate) fn internal_balances(conn: &Connection) -> Result<Vec<InternalBalance>, LedgerError> {
    let mut stmt =
        conn.prepare_cached("SELECT kind, acquirer_iin, currency, balance FROM internal_accounts ORDER BY id")?;
    let raws = stmt
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?, row.get::<_, i64>(3)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    raws.into_iter()
        .map(|(kind, iin, currency, balance)| {
            let account = match kind.as_str() {
                "funding" => InternalAccount::Funding,
                "settlement_payable" => InternalAccount::SettlementPayable {
                    acquirer_iin: parse_iin("internal_accounts.acquirer_iin", &iin)?,
                },
                _ => return Err(LedgerError::Corrupt("internal_accounts.kind")),
            };
            Ok(InternalBalance { account, currency: parse_currency("internal_accounts.currency", currency)?, balance })
        })
        .collect()
}

/// The sum of all postings per currency. Double entry makes every sum zero.
pub(crate) fn postings_sum_by_currency(conn: &Connection) -> Result<Vec<(Currency, i128)>, LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT currency, SUM(CASE WHEN amount > 0 THEN amount ELSE 0 END), SUM(CASE WHEN amount < 0 THEN amount ELSE 0 END)
         FROM postings GROUP BY currency ORDER BY currency",
    )?;
    let raws = stmt
        .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    raws.into_iter()
        .map(|(currency, credits, debits)| {
            Ok((parse_currency("postings.currency", currency)?, i128::from(credits) + i128::from(debits)))
        })
        .collect()
}

/// What [`super::Ledger::audit`] counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditReport {
    /// Journal entries checked.
    pub entries: u64,
    /// Postings checked.
    pub postings: u64,
    /// Customer and internal accounts whose balance was compared with their postings.
    pub accounts: u64,
}

/// Checks the whole ledger in one snapshot: every entry sums to zero per currency, every
/// posting is in its account's currency, every balance equals the sum of its postings.
pub(crate) fn audit(conn: &mut Connection) -> Result<AuditReport, LedgerError> {
    let tx = conn.transaction()?;
    let unbalanced: i64 = tx.query_row(
        "SELECT count(*) FROM (SELECT entry_id FROM postings GROUP BY entry_id, currency HAVING SUM(amount) <> 0)",
        [],
        |row| row.get(0),
    )?;
    if unbalanced != 0 {
        return Err(LedgerError::Corrupt("a journal entry does not sum to zero"));
    }
    let foreign_currency: i64 = tx.query_row(
        "SELECT count(*) FROM postings p
         LEFT JOIN accounts a ON a.account = p.account
         LEFT JOIN internal_accounts i ON i.id = p.internal_account_id
         WHERE p.currency <> COALESCE(a.currency, i.currency)",
        [],
        |row| row.get(0),
    )?;
    if foreign_currency != 0 {
        return Err(LedgerError::Corrupt("a posting is not in its account's currency"));
    }
    let customer_mismatch: i64 = tx.query_row(
        "SELECT count(*) FROM accounts a
         WHERE a.balance <> (SELECT COALESCE(SUM(p.amount), 0) FROM postings p WHERE p.account = a.account)",
        [],
        |row| row.get(0),
    )?;
    let internal_mismatch: i64 = tx.query_row(
        "SELECT count(*) FROM internal_accounts i
         WHERE i.balance <> (SELECT COALESCE(SUM(p.amount), 0) FROM postings p WHERE p.internal_account_id = i.id)",
        [],
        |row| row.get(0),
    )?;
    if customer_mismatch != 0 || internal_mismatch != 0 {
        return Err(LedgerError::Corrupt("an account balance differs from its postings"));
    }
    let counts = |sql: &str| -> Result<u64, LedgerError> {
        let n: i64 = tx.query_row(sql, [], |row| row.get(0))?;
        u64::try_from(n).map_err(|_| LedgerError::Corrupt("count"))
    };
    let report = AuditReport {
        entries: counts("SELECT count(*) FROM journal_entries")?,
        postings: counts("SELECT count(*) FROM postings")?,
        accounts: counts("SELECT (SELECT count(*) FROM accounts) + (SELECT count(*) FROM internal_accounts)")?,
    };
    tx.finish()?;
    Ok(report)
}
