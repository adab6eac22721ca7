//! The ledger's vocabulary: what goes in (new accounts, new SIMs, session commits) and what
//! comes out (account, SIM, transaction and statement records), all in protocol types.
//!
//! Sign convention (docs/LEDGER.md): every balance is the sum of its account's postings, seen
//! from the account holder. A customer balance is what the bank owes the holder: positive for a
//! debit account in funds, negative for a credit account with money owed. Every journal entry
//! sums to zero per currency.

use std::fmt;

use mps_protocol::ids::format_minor;
use mps_protocol::{
    Account, Amount, AuthCode, Counter, Currency, Iin, MerchantId, OrderNo, PasswordVerificationValue, ResponseCode,
    Rsn, Secret, SimId, TxnId,
};
use time::{Date, OffsetDateTime};

use super::error::LedgerError;

/// Length of a chain key wrapped under `mps-kek` (RFC 5649 of 32 bytes).
pub const WRAPPED_CHAIN_KEY_LEN: usize = mps_protocol::perso::WRAPPED_KEY_LEN;
pub use mps_protocol::secret::PASSWORD_VERIFICATION_VALUE_LEN;
/// Longest account holder name.
pub const HOLDER_NAME_CHARS_MAX: usize = 140;
/// Longest merchant account (at the acquirer; IBAN-like).
pub const MERCHANT_ACCOUNT_CHARS_MAX: usize = 34;

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The text stored in the database.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// Parses the stored text.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Debit (spends its balance) or credit (spends a credit line).
    AccountKind {
        /// A debit account: available = balance, never below zero.
        Debit => "debit",
        /// A credit account: available = limit + balance; balance below zero is money owed.
        Credit => "credit",
    }
);

text_enum!(
    /// Whether an account may pay.
    AccountStatus {
        /// May pay.
        Open => "open",
        /// Declines with 62.
        Closed => "closed",
    }
);

text_enum!(
    /// Whether a SIM may pay.
    SimStatus {
        /// May pay.
        Active => "active",
        /// Declines with 62; its state does not move.
        Blocked => "blocked",
    }
);

text_enum!(
    /// What a journal entry records.
    EntryKind {
        /// An account's opening balance, against the bank's funding account.
        Opening => "opening",
        /// An approved authorization, against the acquirer's settlement payable.
        Authorization => "authorization",
        /// A reversed authorization: its postings mirrored.
        Reversal => "reversal",
        /// A settlement paid to an acquirer: out of its settlement payable, against funding.
        Settlement => "settlement",
    }
);

/// An account to open. Debug shows no secret: the verification value and the holder's name
/// redact themselves, the account number is masked.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// The account number.
    pub account: Account,
    /// The holder's name, 1 to 140 printable characters (personal data: never printed).
    pub holder_name: Secret<String>,
    /// Debit or credit.
    pub kind: AccountKind,
    /// The account's only currency.
    pub currency: Currency,
    /// The credit line (credit accounts); must be zero for a debit account.
    pub credit_limit: Amount,
    /// Money on the account at opening, booked against the bank's funding account.
    pub opening_balance: Amount,
    /// HMAC-SHA256(mps-pvk, account || password), made in the HSM. Never the password.
    pub password_verification_value: PasswordVerificationValue,
    /// Largest single payment (code 13 above it).
    pub per_txn_limit: Amount,
    /// Most approved per business day (code 61 above it).
    pub daily_limit: Amount,
}

/// What every processed authorization records, approved or declined: the transaction row
/// without its outcome. [`SessionCommit`] writes it and [`TransactionRecord`] reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The issuer's transaction id (also in the answer).
    pub txn_id: TxnId,
    /// The paying SIM.
    pub sim_id: SimId,
    /// The session's counter n.
    pub counter: Counter,
    /// The account from the decrypted secret (may be unknown to the bank on a 57 decline).
    pub account: Account,
    /// The merchant.
    pub merchant_id: MerchantId,
    /// The merchant's order number.
    pub order_no: OrderNo,
    /// The acquirer whose settlement payable an approval credits.
    pub acquirer_iin: Iin,
    /// The merchant's account at the acquirer: 1 to 34 letters, digits, spaces or hyphens.
    pub merchant_account: String,
    /// The amount asked for.
    pub amount: Amount,
    /// The packet's currency.
    pub currency: Currency,
    /// The business day (from the configured UTC cut-off) the session counts for.
    pub business_day: Date,
    /// When the issuer decided (stored as RFC 3339 UTC).
    pub created_at: OffsetDateTime,
}

/// An ISO 8583 response code other than 00: the code of a decline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeclineCode(ResponseCode);

impl DeclineCode {
    /// `None` for 00, which is an approval, not a decline.
    pub fn new(code: ResponseCode) -> Option<Self> {
        (code != ResponseCode::Approved).then_some(Self(code))
    }

    /// The code.
    pub fn code(self) -> ResponseCode {
        self.0
    }
}

/// How a stored authorization ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 00, with its 6-character auth code.
    Approved {
        /// The auth code.
        auth_code: AuthCode,
    },
    /// Any other code; no auth code, no money moved.
    Declined {
        /// The code.
        code: DeclineCode,
    },
}

impl Outcome {
    /// The ISO 8583 code.
    pub fn response_code(&self) -> ResponseCode {
        match self {
            Self::Approved { .. } => ResponseCode::Approved,
            Self::Declined { code } => code.code(),
        }
    }

    /// The auth code of an approval.
    pub fn auth_code(&self) -> Option<AuthCode> {
        match self {
            Self::Approved { auth_code } => Some(*auth_code),
            Self::Declined { .. } => None,
        }
    }
}

/// How an authenticated session ended, with what it does to the account's wrong-password
/// count. An approval means the password was right, so its count goes back to zero; an
/// approval after a wrong password cannot be written down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    /// 00: the amount is booked and the wrong-password count is cleared.
    Approved {
        /// The 6-character auth code (uppercase letters and digits).
        auth_code: AuthCode,
    },
    /// Declined with `code`; nothing is booked.
    Declined {
        /// The code.
        code: DeclineCode,
        /// What happens to the wrong-password count.
        password_effect: PasswordEffect,
    },
}

impl SessionOutcome {
    /// The outcome as the transaction row stores it.
    pub fn stored(&self) -> Outcome {
        match *self {
            Self::Approved { auth_code } => Outcome::Approved { auth_code },
            Self::Declined { code, .. } => Outcome::Declined { code },
        }
    }
}

/// Everything one authenticated session stores, in one transaction (DESIGN.md section 7, from
/// step 8 on): the transaction row, the postings of an approval, the password count, the SIM's
/// next ratchet state and the exact answer for retransmission.
#[derive(Debug, Clone)]
pub struct SessionCommit {
    /// The transaction row; its counter is n, and the SIM's stored counter must be n - 1.
    pub transaction: Transaction,
    /// Approved or declined, and the password count's change.
    pub outcome: SessionOutcome,
    /// CK_n wrapped under the newest KEK: the SIM's next chain key.
    pub wrapped_next_chain_key: mps_hsm::WrappedChainKey,
    /// RSN_{n+1}, sent inside this session's answer.
    pub next_rsn: Rsn,
    /// The session's payer packet, all 113 bytes (a retransmission must match it exactly).
    pub packet: Vec<u8>,
    /// The HTTP response body, byte for byte.
    pub response_body: Vec<u8>,
    /// The value of the response's `x-jws-signature` header.
    pub response_signature: String,
}

/// What the session does to the account's wrong-password count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordEffect {
    /// The password was not checked, or was right with no wrong tries before: nothing changes.
    None,
    /// The password was right: the count of consecutive wrong tries goes back to zero. A lock
    /// is lifted only by an operator ([`super::Ledger::reset_password_tries`]).
    Reset,
    /// The password was wrong: the count goes up by one, and payments lock (code 75) when it
    /// reaches `tries_max`. The ledger decides the lock inside the write, on the count it
    /// increments, never from a count read before: two sessions on one account cannot both
    /// see the count below the limit and so win an extra guess.
    Failure {
        /// Consecutive wrong tries that lock payments (the bank's rule, at least 1).
        tries_max: u32,
    },
}

/// The exact answer of a SIM's last authenticated session, kept for retransmission: the same
/// packet again gets these bytes again, unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// The session's counter n.
    pub counter: Counter,
    /// The transaction it recorded.
    pub txn_id: TxnId,
    /// The session's response code.
    pub response_code: ResponseCode,
    /// The session's payer packet, all 113 bytes.
    pub packet: Vec<u8>,
    /// The HTTP response body, byte for byte.
    pub response_body: Vec<u8>,
    /// The value of the response's `x-jws-signature` header.
    pub response_signature: String,
}

/// A SIM as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRecord {
    /// The ICCID.
    pub sim_id: SimId,
    /// The issuer IIN.
    pub iin: Iin,
    /// Active or blocked.
    pub status: SimStatus,
    /// The last completed session n (0 after registration).
    pub counter: Counter,
    /// CK_n wrapped under `mps-kek`.
    pub wrapped_chain_key: mps_hsm::WrappedChainKey,
    /// RSN_{n+1}: the next session's random sequence number.
    pub next_rsn: Rsn,
    /// Accounts the SIM may pay from, in account-number order.
    pub accounts: Vec<Account>,
    /// The last authenticated session's answer (none before the first session).
    pub last_answer: Option<StoredAnswer>,
    /// When the SIM was registered.
    pub created_at: OffsetDateTime,
}

/// What the decision reads under its locks, from one snapshot ([`super::Ledger::decision_state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionState {
    /// The SIM, read again under its lock.
    pub sim: Option<SimRecord>,
    /// The account the packet names.
    pub account: Option<AccountRecord>,
    /// Whether the merchant order has an approval that stands (step 11).
    pub order_authorized: bool,
}

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// The account number.
    pub account: Account,
    /// The holder's name (personal data: never printed).
    pub holder_name: Secret<String>,
    /// Debit or credit.
    pub kind: AccountKind,
    /// The account's currency.
    pub currency: Currency,
    /// The credit line (zero for debit).
    pub credit_limit: Amount,
    /// Signed minor units: what the bank owes the holder (negative: owed to the bank).
    pub balance: i64,
    /// Open or closed.
    pub status: AccountStatus,
    /// The password verification value.
    pub password_verification_value: PasswordVerificationValue,
    /// Consecutive wrong passwords.
    pub password_failures: u32,
    /// Payments locked after wrong passwords (code 75).
    pub password_locked: bool,
    /// Largest single payment.
    pub per_txn_limit: Amount,
    /// Most approved per business day.
    pub daily_limit: Amount,
    /// The running total of the account's standing approvals of its latest business day with
    /// an approval (migration 8); none before its first approval. Read through
    /// [`AccountRecord::approved_on`].
    pub approved: Option<DailyApproved>,
    /// When the account was opened.
    pub created_at: OffsetDateTime,
}

/// An account's standing approvals (approved, not reversed) of one business day, summed as they
/// are booked: the daily limit reads this instead of summing the day's approvals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyApproved {
    /// The business day: the latest of the account's approvals so far.
    pub business_day: Date,
    /// Its standing approvals, summed.
    pub total: Amount,
}

impl AccountRecord {
    /// The account's standing approvals of `business_day` as the running total knows them:
    /// the total on its day, zero on a later day (nothing approved yet), and `None` on an
    /// earlier day, which the running total has moved past (a late approval from an instance
    /// whose clock is behind at midnight): the caller sums that day's approvals instead
    /// (`queries::daily_approved_total`, the definition).
    pub fn approved_on(&self, business_day: Date) -> Option<Amount> {
        match self.approved {
            None => Some(Amount::from_minor(0)),
            Some(approved) if business_day == approved.business_day => Some(approved.total),
            Some(approved) if business_day > approved.business_day => Some(Amount::from_minor(0)),
            Some(_) => None,
        }
    }

    /// Spendable now, as an amount (see [`AccountRecord::available`]).
    pub(crate) fn available_amount(&self) -> Amount {
        available_funds(self.kind, self.balance, self.credit_limit).unwrap_or(Amount::from_minor(0))
    }

    /// Spendable now, in minor units: the balance (debit) or the credit limit plus the balance
    /// (credit). Never negative: a record that would give a negative value does not parse.
    pub fn available(&self) -> i64 {
        available_funds(self.kind, self.balance, self.credit_limit).map_or(0, |a| a.minor().try_into().unwrap_or(0))
    }
}

/// A stored transaction (approved or declined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionRecord {
    /// The row.
    pub transaction: Transaction,
    /// How it ended.
    pub outcome: Outcome,
}

/// One line of an account statement: one posting, with the balance after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    /// The journal entry's number (increasing over time).
    pub entry_id: i64,
    /// Opening balance or authorization.
    pub kind: EntryKind,
    /// When it was booked.
    pub created_at: OffsetDateTime,
    /// Signed minor units: positive credits the holder, negative debits.
    pub amount: i64,
    /// The currency.
    pub currency: Currency,
    /// The account's balance after this line.
    pub balance_after: i64,
    /// The authorization's transaction id.
    pub txn_id: Option<TxnId>,
    /// The authorization's merchant.
    pub merchant_id: Option<MerchantId>,
    /// The authorization's order number.
    pub order_no: Option<OrderNo>,
    /// The authorization's auth code.
    pub auth_code: Option<AuthCode>,
}

impl fmt::Display for StatementLine {
    /// One line for a terminal: when, what, amount, balance after, and the payment's details.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let when = self.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        write!(
            f,
            "{when}  {:<13}  {:>16}  balance {:>16}",
            self.kind.as_str(),
            format_minor(i128::from(self.amount), self.currency),
            format_minor(i128::from(self.balance_after), self.currency),
        )?;
        if let (Some(merchant), Some(order)) = (&self.merchant_id, &self.order_no) {
            write!(f, "  {merchant} order {order}")?;
        }
        if let Some(code) = &self.auth_code {
            write!(f, " auth {}", code.as_str())?;
        }
        if let Some(txn_id) = &self.txn_id {
            write!(f, " txn {}", txn_id.to_hex())?;
        }
        Ok(())
    }
}

/// One of the bank's own ledger accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InternalAccount {
    /// The bank's side of opening balances (negative: money the bank received).
    Funding,
    /// What the bank owes an acquirer for approved payments, until settlement.
    SettlementPayable {
        /// The acquirer.
        acquirer_iin: Iin,
    },
}

/// An internal account's balance in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalBalance {
    /// Which account.
    pub account: InternalAccount,
    /// The currency.
    pub currency: Currency,
    /// Signed minor units, sum of its postings.
    pub balance: i64,
}

/// Available funds for a balance: the balance (debit) or limit + balance (credit). None when
/// the pair breaks the account invariants (negative debit, credit over its limit).
pub(crate) fn available_funds(kind: AccountKind, balance: i64, credit_limit: Amount) -> Option<Amount> {
    let limit = i64::try_from(credit_limit.minor()).ok()?;
    let available = match kind {
        AccountKind::Debit if limit != 0 => return None,
        AccountKind::Debit => balance,
        AccountKind::Credit => limit.checked_add(balance)?,
    };
    u64::try_from(available).ok().map(Amount::from_minor)
}

/// Whether a merchant account is 1 to 34 letters, digits, spaces or hyphens.
pub(crate) fn merchant_account_is_valid(text: &str) -> bool {
    (1..=MERCHANT_ACCOUNT_CHARS_MAX).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-')
}

/// An amount as signed minor units for SQLite; above i64::MAX is refused.
pub(crate) fn signed(amount: Amount, what: &'static str) -> Result<i64, LedgerError> {
    i64::try_from(amount.minor()).map_err(|_| LedgerError::InvalidInput(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_funds_follow_the_account_kind() {
        assert_eq!(available_funds(AccountKind::Debit, 500, Amount::from_minor(0)), Some(Amount::from_minor(500)));
        assert_eq!(available_funds(AccountKind::Debit, -1, Amount::from_minor(0)), None);
        assert_eq!(available_funds(AccountKind::Debit, 5, Amount::from_minor(10)), None);
        assert_eq!(available_funds(AccountKind::Credit, -300, Amount::from_minor(1000)), Some(Amount::from_minor(700)));
        assert_eq!(available_funds(AccountKind::Credit, -1001, Amount::from_minor(1000)), None);
        assert_eq!(available_funds(AccountKind::Credit, 50, Amount::from_minor(1000)), Some(Amount::from_minor(1050)));
    }

    #[test]
    fn records_do_not_print_keys_or_verification_values() {
        let account = AccountRecord {
            account: Account::new("4000123412341234").unwrap(),
            holder_name: Secret::new("Li Xi".to_owned()),
            kind: AccountKind::Debit,
            currency: Currency::EUR,
            credit_limit: Amount::from_minor(0),
            balance: 10,
            status: AccountStatus::Open,
            password_verification_value: PasswordVerificationValue::new([0xAB; 32]),
            password_failures: 0,
            password_locked: false,
            per_txn_limit: Amount::from_minor(5),
            daily_limit: Amount::from_minor(5),
            approved: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
        };
        let printed = format!("{account:?}");
        assert!(printed.contains("<redacted>"));
        assert!(!printed.contains("171"), "{printed}");
        assert!(!printed.contains("4000123412341234"), "{printed}");
        assert!(!printed.contains("Li Xi"), "the holder's name is personal data: {printed}");
        assert_eq!(account.available(), 10);
        let sim = SimRecord {
            sim_id: SimId::new("8949012345678901234").unwrap(),
            iin: Iin::new("400012").unwrap(),
            status: SimStatus::Active,
            counter: Counter::ZERO,
            wrapped_chain_key: mps_hsm::WrappedChainKey { kek_version: 1, bytes: [0xCD; 40] },
            next_rsn: Rsn([1; 8]),
            accounts: vec![account.account.clone()],
            last_answer: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
        };
        let printed = format!("{sim:?}");
        assert!(!printed.contains("205"), "{printed}");
        assert!(!printed.contains("4000123412341234"), "{printed}");
    }

    /// The running total answers for its day and the days after it; an earlier day it cannot
    /// know (it has moved on), so the caller sums that day.
    #[test]
    fn the_running_daily_total_answers_its_day_and_later_days_only() {
        let day = time::macros::date!(2025 - 03 - 07);
        let (before, after) = (day.previous_day().unwrap(), day.next_day().unwrap());
        let fresh = crate::ledger::testing::account_record(1_000);
        for asked in [before, day, after] {
            assert_eq!(fresh.approved_on(asked), Some(Amount::from_minor(0)), "nothing approved yet");
        }
        let spent = AccountRecord {
            approved: Some(DailyApproved { business_day: day, total: Amount::from_minor(70) }),
            ..fresh
        };
        assert_eq!(spent.approved_on(day), Some(Amount::from_minor(70)));
        assert_eq!(spent.approved_on(after), Some(Amount::from_minor(0)));
        assert_eq!(spent.approved_on(before), None);
    }

    #[test]
    fn merchant_accounts_are_checked() {
        assert!(merchant_account_is_valid("DE89 3704 0044 0532 0130 00"));
        assert!(!merchant_account_is_valid(""));
        assert!(!merchant_account_is_valid("x".repeat(35).as_str()));
        assert!(!merchant_account_is_valid("acct;drop"));
    }

    #[test]
    fn text_enums_round_trip() {
        for kind in [AccountKind::Debit, AccountKind::Credit] {
            assert_eq!(AccountKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(SimStatus::parse("blocked"), Some(SimStatus::Blocked));
        assert_eq!(SimStatus::parse("Blocked"), None);
    }
}
