//! Stored rows into protocol types and back: every value read is parsed, and one that does not
//! parse is corruption ([`LedgerError::Corrupt`], naming the column, never the value).

use mps_hsm::WrappedChainKey;
use mps_protocol::wire::PACKET_LEN;
use mps_protocol::{
    Account, Amount, AuthCode, Counter, Currency, Iin, MerchantId, OrderNo, ResponseCode, Rsn, SimId, TxnId,
};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};

use super::error::LedgerError;
use super::model::{
    AccountKind, AccountRecord, AccountStatus, DailyApproved, DeclineCode, EntryKind, Outcome, SimStatus,
    StatementLine, StoredAnswer, Transaction, TransactionRecord, WRAPPED_CHAIN_KEY_LEN, available_funds,
    merchant_account_is_valid,
};
use super::sql::Row;

const DAY_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]");

/// A business day as stored: `YYYY-MM-DD`.
pub(crate) fn day_text(day: Date) -> Result<String, LedgerError> {
    day.format(DAY_FORMAT).map_err(|_| LedgerError::InvalidInput("business day"))
}

/// A time as stored: RFC 3339 in UTC.
pub(crate) fn time_text(at: OffsetDateTime) -> Result<String, LedgerError> {
    at.to_offset(UtcOffset::UTC).format(&Rfc3339).map_err(|_| LedgerError::InvalidInput("timestamp"))
}

/// Now, as stored.
pub(crate) fn now_text() -> Result<String, LedgerError> {
    time_text(OffsetDateTime::now_utc())
}

fn corrupt<T, E>(what: &'static str) -> impl FnOnce(E) -> Result<T, LedgerError> {
    move |_| Err(LedgerError::Corrupt(what))
}

pub(crate) fn parse_time(what: &'static str, s: &str) -> Result<OffsetDateTime, LedgerError> {
    OffsetDateTime::parse(s, &Rfc3339).or_else(corrupt(what))
}

pub(crate) fn parse_day(what: &'static str, s: &str) -> Result<Date, LedgerError> {
    Date::parse(s, DAY_FORMAT).or_else(corrupt(what))
}

pub(crate) fn parse_account(what: &'static str, s: &str) -> Result<Account, LedgerError> {
    Account::new(s).or_else(corrupt(what))
}

pub(crate) fn parse_sim_id(what: &'static str, s: &str) -> Result<SimId, LedgerError> {
    SimId::new(s).or_else(corrupt(what))
}

pub(crate) fn parse_iin(what: &'static str, s: &str) -> Result<Iin, LedgerError> {
    Iin::new(s).or_else(corrupt(what))
}

pub(crate) fn parse_currency(what: &'static str, code: i64) -> Result<Currency, LedgerError> {
    let code = u16::try_from(code).or_else(corrupt(what))?;
    Currency::from_code(code).or_else(corrupt(what))
}

pub(crate) fn parse_amount(what: &'static str, minor: i64) -> Result<Amount, LedgerError> {
    u64::try_from(minor).map(Amount::from_minor).or_else(corrupt(what))
}

pub(crate) fn parse_counter(what: &'static str, n: i64) -> Result<Counter, LedgerError> {
    let n = u64::try_from(n).or_else(corrupt(what))?;
    Counter::new(n).or_else(corrupt(what))
}

/// A counter as stored (it has at most 48 bits, so it always fits).
pub(crate) fn counter_value(counter: Counter) -> Result<i64, LedgerError> {
    i64::try_from(counter.value()).map_err(|_| LedgerError::InvalidInput("counter"))
}

pub(crate) fn parse_txn_id(what: &'static str, bytes: &[u8]) -> Result<TxnId, LedgerError> {
    <[u8; 16]>::try_from(bytes).map(TxnId).or_else(corrupt(what))
}

pub(crate) fn parse_response_code(what: &'static str, s: &str) -> Result<ResponseCode, LedgerError> {
    ResponseCode::parse(s).ok_or(LedgerError::Corrupt(what))
}

/// An auth code: 6 uppercase letters or digits.
pub(crate) fn parse_auth_code(what: &'static str, s: &str) -> Result<AuthCode, LedgerError> {
    let bytes = <[u8; 6]>::try_from(s.as_bytes()).or_else(corrupt(what))?;
    if auth_code_is_valid(&AuthCode(bytes)) { Ok(AuthCode(bytes)) } else { Err(LedgerError::Corrupt(what)) }
}

/// The shape of an approval's auth code (DESIGN.md section 7 step 13).
pub(crate) fn auth_code_is_valid(code: &AuthCode) -> bool {
    code.0.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

pub(crate) fn parse_merchant_id(what: &'static str, s: &str) -> Result<MerchantId, LedgerError> {
    MerchantId::new(s).or_else(corrupt(what))
}

pub(crate) fn parse_order_no(what: &'static str, s: &str) -> Result<OrderNo, LedgerError> {
    OrderNo::new(s).or_else(corrupt(what))
}

pub(crate) fn parse_wrapped_key(what: &'static str, bytes: &[u8]) -> Result<[u8; WRAPPED_CHAIN_KEY_LEN], LedgerError> {
    bytes.try_into().or_else(corrupt(what))
}

/// A stored chain key: the wrapped bytes and the KEK version they are under.
pub(crate) fn parse_chain_key(
    what: &'static str,
    bytes: &[u8],
    kek_version: i64,
) -> Result<WrappedChainKey, LedgerError> {
    let kek_version = u32::try_from(kek_version).ok().filter(|v| *v >= 1).ok_or(LedgerError::Corrupt(what))?;
    Ok(WrappedChainKey { kek_version, bytes: parse_wrapped_key(what, bytes)? })
}

pub(crate) fn parse_rsn(what: &'static str, bytes: &[u8]) -> Result<Rsn, LedgerError> {
    bytes.try_into().map(Rsn).or_else(corrupt(what))
}

pub(crate) fn parse_packet(what: &'static str, bytes: Vec<u8>) -> Result<Vec<u8>, LedgerError> {
    if bytes.len() == PACKET_LEN { Ok(bytes) } else { Err(LedgerError::Corrupt(what)) }
}

pub(crate) fn parse_merchant_account(what: &'static str, text: String) -> Result<String, LedgerError> {
    if merchant_account_is_valid(&text) { Ok(text) } else { Err(LedgerError::Corrupt(what)) }
}

/// The columns of `accounts`, in [`RawAccount::from_row`]'s order.
pub(crate) const ACCOUNT_COLUMNS: &str = "account, holder_name, kind, currency, credit_limit, balance, status, \
     password_verification_value, password_failures, password_locked, per_txn_limit, daily_limit, created_at, \
     approved_day, approved_today";

/// An `accounts` row before parsing.
pub(crate) struct RawAccount {
    account: String,
    holder_name: String,
    kind: String,
    currency: i64,
    credit_limit: i64,
    balance: i64,
    status: String,
    password_verification_value: Vec<u8>,
    password_failures: i64,
    password_locked: i64,
    per_txn_limit: i64,
    daily_limit: i64,
    created_at: String,
    approved_day: Option<String>,
    approved_today: i64,
}

impl RawAccount {
    /// Reads the columns of [`ACCOUNT_COLUMNS`].
    pub(crate) fn from_row(row: &Row) -> Result<Self, LedgerError> {
        Ok(Self {
            account: row.get(0, "accounts.account")?,
            holder_name: row.get(1, "accounts.holder_name")?,
            kind: row.get(2, "accounts.kind")?,
            currency: row.get(3, "accounts.currency")?,
            credit_limit: row.get(4, "accounts.credit_limit")?,
            balance: row.get(5, "accounts.balance")?,
            status: row.get(6, "accounts.status")?,
            password_verification_value: row.get(7, "accounts.password_verification_value")?,
            password_failures: row.get(8, "accounts.password_failures")?,
            password_locked: row.get(9, "accounts.password_locked")?,
            per_txn_limit: row.get(10, "accounts.per_txn_limit")?,
            daily_limit: row.get(11, "accounts.daily_limit")?,
            created_at: row.get(12, "accounts.created_at")?,
            approved_day: row.get(13, "accounts.approved_day")?,
            approved_today: row.get(14, "accounts.approved_today")?,
        })
    }

    /// Parses every field and checks the balance invariants after the read.
    pub(crate) fn parse(self) -> Result<AccountRecord, LedgerError> {
        let kind = AccountKind::parse(&self.kind).ok_or(LedgerError::Corrupt("accounts.kind"))?;
        let credit_limit = parse_amount("accounts.credit_limit", self.credit_limit)?;
        // After the read: a debit balance is never negative, a credit line never overdrawn.
        if available_funds(kind, self.balance, credit_limit).is_none() {
            return Err(LedgerError::Corrupt("accounts.balance"));
        }
        let pvv = <[u8; 32]>::try_from(self.password_verification_value.as_slice())
            .or_else(corrupt("accounts.password_verification_value"))?;
        Ok(AccountRecord {
            account: parse_account("accounts.account", &self.account)?,
            holder_name: mps_protocol::Secret::new(self.holder_name),
            kind,
            currency: parse_currency("accounts.currency", self.currency)?,
            credit_limit,
            balance: self.balance,
            status: AccountStatus::parse(&self.status).ok_or(LedgerError::Corrupt("accounts.status"))?,
            password_verification_value: mps_protocol::PasswordVerificationValue::new(pvv),
            password_failures: u32::try_from(self.password_failures).or_else(corrupt("accounts.password_failures"))?,
            password_locked: match self.password_locked {
                0 => false,
                1 => true,
                _ => return Err(LedgerError::Corrupt("accounts.password_locked")),
            },
            per_txn_limit: parse_amount("accounts.per_txn_limit", self.per_txn_limit)?,
            daily_limit: parse_amount("accounts.daily_limit", self.daily_limit)?,
            approved: parse_daily_approved(self.approved_day.as_deref(), self.approved_today)?,
            created_at: parse_time("accounts.created_at", &self.created_at)?,
        })
    }
}

/// An account's running daily total: a day and its total, or no day and a total of zero (an
/// account that has approved nothing since migration 8's backfill).
fn parse_daily_approved(day: Option<&str>, total: i64) -> Result<Option<DailyApproved>, LedgerError> {
    let total = parse_amount("accounts.approved_today", total)?;
    match day {
        Some(day) => Ok(Some(DailyApproved { business_day: parse_day("accounts.approved_day", day)?, total })),
        None if total.minor() == 0 => Ok(None),
        None => Err(LedgerError::Corrupt("accounts.approved_today")),
    }
}

/// The columns of `transactions`, in [`RawTransaction::from_row`]'s order.
pub(crate) const TRANSACTION_COLUMNS: &str = "txn_id, sim_id, counter, account, merchant_id, order_no, acquirer_iin, \
     merchant_account, amount, currency, response_code, auth_code, business_day, created_at";

/// A `transactions` row before parsing.
pub(crate) struct RawTransaction {
    txn_id: Vec<u8>,
    sim_id: String,
    counter: i64,
    account: String,
    merchant_id: String,
    order_no: String,
    acquirer_iin: String,
    merchant_account: String,
    amount: i64,
    currency: i64,
    response_code: String,
    auth_code: Option<String>,
    business_day: String,
    created_at: String,
}

impl RawTransaction {
    /// Reads the columns of [`TRANSACTION_COLUMNS`].
    pub(crate) fn from_row(row: &Row) -> Result<Self, LedgerError> {
        Ok(Self {
            txn_id: row.get(0, "transactions.txn_id")?,
            sim_id: row.get(1, "transactions.sim_id")?,
            counter: row.get(2, "transactions.counter")?,
            account: row.get(3, "transactions.account")?,
            merchant_id: row.get(4, "transactions.merchant_id")?,
            order_no: row.get(5, "transactions.order_no")?,
            acquirer_iin: row.get(6, "transactions.acquirer_iin")?,
            merchant_account: row.get(7, "transactions.merchant_account")?,
            amount: row.get(8, "transactions.amount")?,
            currency: row.get(9, "transactions.currency")?,
            response_code: row.get(10, "transactions.response_code")?,
            auth_code: row.get(11, "transactions.auth_code")?,
            business_day: row.get(12, "transactions.business_day")?,
            created_at: row.get(13, "transactions.created_at")?,
        })
    }

    /// Parses every field; an approval must carry an auth code and a decline none.
    pub(crate) fn parse(self) -> Result<TransactionRecord, LedgerError> {
        let response_code = parse_response_code("transactions.response_code", &self.response_code)?;
        let auth_code = self.auth_code.as_deref().map(|s| parse_auth_code("transactions.auth_code", s)).transpose()?;
        let outcome = match (DeclineCode::new(response_code), auth_code) {
            (None, Some(auth_code)) => Outcome::Approved { auth_code },
            (Some(code), None) => Outcome::Declined { code },
            // An approval must carry an auth code and a decline none.
            _ => return Err(LedgerError::Corrupt("transactions.auth_code")),
        };
        let transaction = Transaction {
            txn_id: parse_txn_id("transactions.txn_id", &self.txn_id)?,
            sim_id: parse_sim_id("transactions.sim_id", &self.sim_id)?,
            counter: parse_counter("transactions.counter", self.counter)?,
            account: parse_account("transactions.account", &self.account)?,
            merchant_id: parse_merchant_id("transactions.merchant_id", &self.merchant_id)?,
            order_no: parse_order_no("transactions.order_no", &self.order_no)?,
            acquirer_iin: parse_iin("transactions.acquirer_iin", &self.acquirer_iin)?,
            merchant_account: parse_merchant_account("transactions.merchant_account", self.merchant_account)?,
            amount: parse_amount("transactions.amount", self.amount)?,
            currency: parse_currency("transactions.currency", self.currency)?,
            business_day: parse_day("transactions.business_day", &self.business_day)?,
            created_at: parse_time("transactions.created_at", &self.created_at)?,
        };
        Ok(TransactionRecord { transaction, outcome })
    }
}

/// The columns of a statement line, in [`RawStatementLine::from_row`]'s order (the query is
/// `queries::statement`).
pub(crate) struct RawStatementLine {
    entry_id: i64,
    kind: String,
    created_at: String,
    amount: i64,
    currency: i64,
    balance_after: i64,
    txn_id: Option<Vec<u8>>,
    merchant_id: Option<String>,
    order_no: Option<String>,
    auth_code: Option<String>,
}

impl RawStatementLine {
    /// Reads entry_id, kind, created_at, amount, currency, balance_after, txn_id,
    /// merchant_id, order_no, auth_code.
    pub(crate) fn from_row(row: &Row) -> Result<Self, LedgerError> {
        Ok(Self {
            entry_id: row.get(0, "postings.entry_id")?,
            kind: row.get(1, "journal_entries.kind")?,
            created_at: row.get(2, "journal_entries.created_at")?,
            amount: row.get(3, "postings.amount")?,
            currency: row.get(4, "postings.currency")?,
            balance_after: row.get(5, "postings.amount (running sum)")?,
            txn_id: row.get(6, "journal_entries.txn_id")?,
            merchant_id: row.get(7, "transactions.merchant_id")?,
            order_no: row.get(8, "transactions.order_no")?,
            auth_code: row.get(9, "transactions.auth_code")?,
        })
    }

    /// Parses every field.
    pub(crate) fn parse(self) -> Result<StatementLine, LedgerError> {
        Ok(StatementLine {
            entry_id: self.entry_id,
            kind: EntryKind::parse(&self.kind).ok_or(LedgerError::Corrupt("journal_entries.kind"))?,
            created_at: parse_time("journal_entries.created_at", &self.created_at)?,
            amount: self.amount,
            currency: parse_currency("postings.currency", self.currency)?,
            balance_after: self.balance_after,
            txn_id: self.txn_id.as_deref().map(|b| parse_txn_id("journal_entries.txn_id", b)).transpose()?,
            merchant_id: self
                .merchant_id
                .as_deref()
                .map(|s| parse_merchant_id("transactions.merchant_id", s))
                .transpose()?,
            order_no: self.order_no.as_deref().map(|s| parse_order_no("transactions.order_no", s)).transpose()?,
            auth_code: self.auth_code.as_deref().map(|s| parse_auth_code("transactions.auth_code", s)).transpose()?,
        })
    }
}

/// A `sim_answers` row joined with its transaction's response code, before parsing.
pub(crate) struct RawStoredAnswer {
    counter: i64,
    txn_id: Vec<u8>,
    response_code: String,
    packet: Vec<u8>,
    response_body: Vec<u8>,
    response_signature: String,
}

impl RawStoredAnswer {
    /// Reads counter, txn_id, response_code, packet, response_body, response_signature.
    pub(crate) fn from_row(row: &Row) -> Result<Self, LedgerError> {
        Ok(Self {
            counter: row.get(0, "sim_answers.counter")?,
            txn_id: row.get(1, "sim_answers.txn_id")?,
            response_code: row.get(2, "transactions.response_code")?,
            packet: row.get(3, "sim_answers.packet")?,
            response_body: row.get(4, "sim_answers.response_body")?,
            response_signature: row.get(5, "sim_answers.response_signature")?,
        })
    }

    /// Parses every field.
    pub(crate) fn parse(self) -> Result<StoredAnswer, LedgerError> {
        Ok(StoredAnswer {
            counter: parse_counter("sim_answers.counter", self.counter)?,
            txn_id: parse_txn_id("sim_answers.txn_id", &self.txn_id)?,
            response_code: parse_response_code("transactions.response_code", &self.response_code)?,
            packet: parse_packet("sim_answers.packet", self.packet)?,
            response_body: self.response_body,
            response_signature: self.response_signature,
        })
    }
}

/// A SIM status from its column.
pub(crate) fn parse_sim_status(s: &str) -> Result<SimStatus, LedgerError> {
    SimStatus::parse(s).ok_or(LedgerError::Corrupt("sims.status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_times_round_trip_in_utc() {
        let day = time::macros::date!(2025 - 03 - 07);
        assert_eq!(day_text(day).unwrap(), "2025-03-07");
        assert_eq!(parse_day("d", "2025-03-07").unwrap(), day);
        let at = time::macros::datetime!(2025-03-07 23:30 -02:00);
        assert_eq!(time_text(at).unwrap(), "2025-03-08T01:30:00Z");
        assert_eq!(parse_time("t", "2025-03-08T01:30:00Z").unwrap(), at);
    }

    #[test]
    fn bad_stored_values_are_corruption_not_panics() {
        assert!(matches!(parse_account("accounts.account", "12ab"), Err(LedgerError::Corrupt("accounts.account"))));
        assert!(matches!(parse_currency("c", 70_000), Err(LedgerError::Corrupt("c"))));
        assert!(matches!(parse_currency("c", 999), Err(LedgerError::Corrupt("c"))));
        assert!(matches!(parse_amount("a", -1), Err(LedgerError::Corrupt("a"))));
        assert!(matches!(parse_counter("n", 1 << 50), Err(LedgerError::Corrupt("n"))));
        assert!(matches!(parse_txn_id("t", &[0; 15]), Err(LedgerError::Corrupt("t"))));
        assert!(matches!(parse_auth_code("x", "ab12cd"), Err(LedgerError::Corrupt("x"))));
        assert!(matches!(parse_day("d", "2025-02-30"), Err(LedgerError::Corrupt("d"))));
        assert!(matches!(parse_time("t", "yesterday"), Err(LedgerError::Corrupt("t"))));
        assert!(matches!(parse_wrapped_key("k", &[0; 39]), Err(LedgerError::Corrupt("k"))));
    }
}
