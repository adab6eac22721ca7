//! The ledger's reads: SIM and account state for the decision, daily totals, duplicate orders,
//! statements and the audit of the double-entry invariants. Each parses every row it reads and
//! checks invariants after the read; a read of several statements (a SIM, a statement, the
//! audit) is run by its caller in one snapshot. The writer's commands reuse some of them.

use mps_protocol::{Account, Amount, Currency, MerchantId, OrderNo, SimId, TxnId};
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
use super::sql::{Sql, args};

/// A SIM with its bound accounts and last stored answer. Its three reads must see one
/// snapshot: the caller runs it in a read transaction.
pub(crate) fn sim(conn: &dyn Sql, sim_id: &SimId) -> Result<Option<SimRecord>, LedgerError> {
    let Some(row) = conn.query_opt(
        "SELECT sim_id, iin, status, counter, wrapped_chain_key, next_rsn, created_at, kek_version \
         FROM sims WHERE sim_id = ?1",
        args![sim_id.as_str()],
    )?
    else {
        return Ok(None);
    };
    let accounts = bound_accounts(conn, sim_id)?;
    let last_answer = last_answer(conn, sim_id)?;
    let key: Vec<u8> = row.get(4, "sims.wrapped_chain_key")?;
    let rsn: Vec<u8> = row.get(5, "sims.next_rsn")?;
    let record = SimRecord {
        sim_id: parse_sim_id("sims.sim_id", &row.get::<String>(0, "sims.sim_id")?)?,
        iin: parse_iin("sims.iin", &row.get::<String>(1, "sims.iin")?)?,
        status: parse_sim_status(&row.get::<String>(2, "sims.status")?)?,
        counter: parse_counter("sims.counter", row.get(3, "sims.counter")?)?,
        wrapped_chain_key: parse_chain_key("sims.wrapped_chain_key", &key, row.get(7, "sims.kek_version")?)?,
        next_rsn: parse_rsn("sims.next_rsn", &rsn)?,
        accounts,
        last_answer,
        created_at: parse_time("sims.created_at", &row.get::<String>(6, "sims.created_at")?)?,
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

fn bound_accounts(conn: &dyn Sql, sim_id: &SimId) -> Result<Vec<Account>, LedgerError> {
    let rows =
        conn.query("SELECT account FROM sim_accounts WHERE sim_id = ?1 ORDER BY account", args![sim_id.as_str()])?;
    rows.iter()
        .map(|row| parse_account("sim_accounts.account", &row.get::<String>(0, "sim_accounts.account")?))
        .collect()
}

fn last_answer(conn: &dyn Sql, sim_id: &SimId) -> Result<Option<StoredAnswer>, LedgerError> {
    let row = conn.query_opt(
        "SELECT a.counter, a.txn_id, t.response_code, a.packet, a.response_body, a.response_signature
         FROM sim_answers a JOIN transactions t ON t.txn_id = a.txn_id WHERE a.sim_id = ?1",
        args![sim_id.as_str()],
    )?;
    row.map(|row| RawStoredAnswer::from_row(&row)?.parse()).transpose()
}

/// An account with its available funds.
pub(crate) fn account(conn: &dyn Sql, account: &Account) -> Result<Option<AccountRecord>, LedgerError> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE account = ?1");
    let row = conn.query_opt(&sql, args![account.expose()])?;
    row.map(|row| RawAccount::from_row(&row)?.parse()).transpose()
}

/// The approvals of account ?1 on business day ?2 that stand, summed from the index of
/// migration 6 alone (`schema::tests::the_daily_total_is_summed_from_its_index_alone`).
pub(crate) const DAILY_APPROVED_TOTAL: &str = "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM transactions
     WHERE account = ?1 AND business_day = ?2 AND response_code = '00' AND reversal_id IS NULL";

/// The sum of the account's approved amounts on one business day.
pub(crate) fn daily_approved_total(conn: &dyn Sql, account: &Account, day: Date) -> Result<Amount, LedgerError> {
    let total: i64 = conn
        .query_one(DAILY_APPROVED_TOTAL, args![account.expose(), &day_text(day)?], "transactions.amount")?
        .get(0, "transactions.amount")?;
    u64::try_from(total).map(Amount::from_minor).map_err(|_| LedgerError::Corrupt("transactions.amount"))
}

/// The account's standing approvals of `day`: from its running total (`record`, read from the
/// same connection) when that answers for `day`, else summed by [`daily_approved_total`]. One
/// row instead of a sum whose cost grows with the day's approvals.
pub(crate) fn approved_on(conn: &dyn Sql, record: &AccountRecord, day: Date) -> Result<Amount, LedgerError> {
    match record.approved_on(day) {
        Some(total) => Ok(total),
        None => daily_approved_total(conn, &record.account, day),
    }
}

/// The sum of the account's approved amounts on one business day, from its running total when
/// that answers for the day (see [`approved_on`]); the same answer as [`daily_approved_total`].
pub(crate) fn approved_total(conn: &dyn Sql, account: &Account, day: Date) -> Result<Amount, LedgerError> {
    match self::account(conn, account)? {
        Some(record) => approved_on(conn, &record, day),
        // Approvals need an account: an unknown one has none, but the sum says so itself.
        None => daily_approved_total(conn, account, day),
    }
}

/// Whether this merchant order has an approval.
pub(crate) fn order_authorized(
    conn: &dyn Sql,
    merchant_id: &MerchantId,
    order_no: &OrderNo,
) -> Result<bool, LedgerError> {
    let found = conn.query_opt(
        "SELECT 1 FROM transactions
         WHERE merchant_id = ?1 AND order_no = ?2 AND response_code = '00' AND reversal_id IS NULL",
        args![merchant_id.as_str(), order_no.as_str()],
    )?;
    Ok(found.is_some())
}

/// The approval of this merchant order that is not reversed, if any.
pub(crate) fn active_approval(
    conn: &dyn Sql,
    merchant_id: &MerchantId,
    order_no: &OrderNo,
) -> Result<Option<TransactionRecord>, LedgerError> {
    let sql = format!(
        "SELECT {TRANSACTION_COLUMNS} FROM transactions
         WHERE merchant_id = ?1 AND order_no = ?2 AND response_code = '00' AND reversal_id IS NULL"
    );
    let row = conn.query_opt(&sql, args![merchant_id.as_str(), order_no.as_str()])?;
    row.map(|row| RawTransaction::from_row(&row)?.parse()).transpose()
}

/// One transaction.
pub(crate) fn transaction(conn: &dyn Sql, txn_id: &TxnId) -> Result<Option<TransactionRecord>, LedgerError> {
    let sql = format!("SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE txn_id = ?1");
    let row = conn.query_opt(&sql, args![&txn_id.0])?;
    row.map(|row| RawTransaction::from_row(&row)?.parse()).transpose()
}

/// Every approval of one business day, oldest first (the clearing export's input).
pub(crate) fn approved_transactions(conn: &dyn Sql, day: Date) -> Result<Vec<TransactionRecord>, LedgerError> {
    let sql = format!(
        "SELECT {TRANSACTION_COLUMNS} FROM transactions
         WHERE business_day = ?1 AND response_code = '00' ORDER BY created_at, txn_id"
    );
    let rows = conn.query(&sql, args![&day_text(day)?])?;
    rows.iter().map(|row| RawTransaction::from_row(row)?.parse()).collect()
}

/// The account's latest `limit` postings, newest first, each with the balance after it. The
/// running balance must end at the stored balance, so the account and its postings must be
/// read in one snapshot: the caller runs this in a read transaction.
pub(crate) fn statement(conn: &dyn Sql, account: &Account, limit: usize) -> Result<Vec<StatementLine>, LedgerError> {
    let Some(record) = self::account(conn, account)? else {
        return Err(LedgerError::NotFound("account"));
    };
    let limit = i64::try_from(limit).map_err(|_| LedgerError::InvalidInput("statement limit"))?;
    // The running sum is cast back to an integer: PostgreSQL's SUM of a BIGINT is NUMERIC.
    let rows = conn.query(
        "SELECT entry_id, kind, created_at, amount, currency, balance_after, txn_id, merchant_id, order_no, auth_code
         FROM (
             SELECT p.id AS posting_id, p.entry_id, e.kind, e.created_at, p.amount, p.currency,
                    CAST(SUM(p.amount) OVER (ORDER BY p.id ROWS UNBOUNDED PRECEDING) AS BIGINT) AS balance_after,
                    e.txn_id, t.merchant_id, t.order_no, t.auth_code
             FROM postings p
             JOIN journal_entries e ON e.id = p.entry_id
             LEFT JOIN transactions t ON t.txn_id = e.txn_id
             WHERE p.account = ?1
         ) AS lines
         ORDER BY posting_id DESC LIMIT ?2",
        args![account.expose(), limit],
    )?;
    let lines = rows.iter().map(|row| RawStatementLine::from_row(row)?.parse()).collect::<Result<Vec<_>, _>>()?;
    let latest = lines.first().map_or(0, |line| line.balance_after);
    if latest != record.balance {
        return Err(LedgerError::Corrupt("accounts.balance differs from its postings"));
    }
    Ok(lines)
}

/// The bank's internal accounts and their balances, summed from their postings (they keep no
/// running balance, migration 7): one pass over the internal postings, for operators and
/// settlement, never on a payment's path.
pub(crate) fn internal_balances(conn: &dyn Sql) -> Result<Vec<InternalBalance>, LedgerError> {
    let rows = conn.query(
        "SELECT i.kind, i.acquirer_iin, i.currency,
                CAST(COALESCE((SELECT SUM(p.amount) FROM postings p WHERE p.internal_account_id = i.id), 0) AS BIGINT)
         FROM internal_accounts i ORDER BY i.id",
        args![],
    )?;
    rows.iter()
        .map(|row| {
            let account = match row.get::<String>(0, "internal_accounts.kind")?.as_str() {
                "funding" => InternalAccount::Funding,
                "settlement_payable" => InternalAccount::SettlementPayable {
                    acquirer_iin: parse_iin(
                        "internal_accounts.acquirer_iin",
                        &row.get::<String>(1, "internal_accounts.acquirer_iin")?,
                    )?,
                },
                _ => return Err(LedgerError::Corrupt("internal_accounts.kind")),
            };
            let currency = parse_currency("internal_accounts.currency", row.get(2, "internal_accounts.currency")?)?;
            Ok(InternalBalance { account, currency, balance: row.get(3, "postings.amount")? })
        })
        .collect()
}

/// The sum of all postings per currency. Double entry makes every sum zero.
pub(crate) fn postings_sum_by_currency(conn: &dyn Sql) -> Result<Vec<(Currency, i128)>, LedgerError> {
    let rows = conn.query(
        "SELECT currency, CAST(SUM(CASE WHEN amount > 0 THEN amount ELSE 0 END) AS BIGINT),
             CAST(SUM(CASE WHEN amount < 0 THEN amount ELSE 0 END) AS BIGINT)
         FROM postings GROUP BY currency ORDER BY currency",
        args![],
    )?;
    rows.iter()
        .map(|row| {
            let currency = parse_currency("postings.currency", row.get(0, "postings.currency")?)?;
            let credits: i64 = row.get(1, "postings.amount")?;
            let debits: i64 = row.get(2, "postings.amount")?;
            Ok((currency, i128::from(credits) + i128::from(debits)))
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

/// Checks the whole ledger: every entry sums to zero per currency, every posting is in its
/// account's currency, every balance equals the sum of its postings, every running daily total
/// equals the sum of its day's standing approvals. Its reads must see one snapshot: the caller
/// runs it in a read transaction.
pub(crate) fn audit(conn: &dyn Sql) -> Result<AuditReport, LedgerError> {
    let unbalanced = count(
        conn,
        "SELECT count(*) FROM (
             SELECT entry_id FROM postings GROUP BY entry_id, currency HAVING SUM(amount) <> 0
         ) AS unbalanced",
    )?;
    if unbalanced != 0 {
        return Err(LedgerError::Corrupt("a journal entry does not sum to zero"));
    }
    let foreign_currency = count(
        conn,
        "SELECT count(*) FROM postings p
         LEFT JOIN accounts a ON a.account = p.account
         LEFT JOIN internal_accounts i ON i.id = p.internal_account_id
         WHERE p.currency <> COALESCE(a.currency, i.currency)",
    )?;
    if foreign_currency != 0 {
        return Err(LedgerError::Corrupt("a posting is not in its account's currency"));
    }
    let customer_mismatch = count(
        conn,
        "SELECT count(*) FROM accounts a
         WHERE a.balance <> (SELECT COALESCE(SUM(p.amount), 0) FROM postings p WHERE p.account = a.account)",
    )?;
    if customer_mismatch != 0 {
        return Err(LedgerError::Corrupt("an account balance differs from its postings"));
    }
    if count(conn, DAILY_TOTAL_MISMATCHES)? != 0 {
        return Err(LedgerError::Corrupt("an account's running daily total differs from its approvals"));
    }
    Ok(AuditReport {
        entries: count(conn, "SELECT count(*) FROM journal_entries")?,
        postings: count(conn, "SELECT count(*) FROM postings")?,
        accounts: count(conn, "SELECT (SELECT count(*) FROM accounts) + (SELECT count(*) FROM internal_accounts)")?,
    })
}

/// Accounts whose running daily total (migration 8) is not the definition's: its total differs
/// from the sum of the standing approvals of its day (no day: the total must be zero), or a
/// standing approval lies on a later day than its day (reads of that day would answer zero).
const DAILY_TOTAL_MISMATCHES: &str = "SELECT count(*) FROM accounts a
     WHERE a.approved_today <> (
         SELECT CAST(COALESCE(SUM(t.amount), 0) AS BIGINT) FROM transactions t
         WHERE t.account = a.account AND t.business_day = a.approved_day
           AND t.response_code = '00' AND t.reversal_id IS NULL)
        OR EXISTS (
         SELECT 1 FROM transactions t
         WHERE t.account = a.account AND t.response_code = '00' AND t.reversal_id IS NULL
           AND (a.approved_day IS NULL OR t.business_day > a.approved_day))";

/// The one number a `SELECT count(*) ...` returns.
fn count(conn: &dyn Sql, sql: &str) -> Result<u64, LedgerError> {
    let n: i64 = conn.query_one(sql, args![], "count")?.get(0, "count")?;
    u64::try_from(n).map_err(|_| LedgerError::Corrupt("count"))
}
