//! Double entry: journal entries, their postings, and the balances they move. The only code
//! that changes a balance. Each entry is checked to sum to zero per currency before it is
//! written and again, from the stored postings, after.

use std::collections::BTreeMap;

use mps_protocol::{Account, Currency, TxnId};

use super::error::LedgerError;
use super::model::{EntryKind, InternalAccount};
use super::sql::{Sql, args};

/// Where a posting goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PostingTarget<'a> {
    /// A customer account (its currency must be the posting's).
    Customer(&'a Account),
    /// An internal account by id (see [`internal_account_id`]).
    Internal(i64),
}

/// One leg of a journal entry: signed minor units, positive raises the target's balance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Posting<'a> {
    pub target: PostingTarget<'a>,
    pub amount: i64,
    pub currency: Currency,
}

/// The id of an internal account, created on first use. Looked up first: the row never changes
/// once made, so the lookup of every approval takes no part in a race between instances; only
/// the first use inserts.
pub(crate) fn internal_account_id(
    conn: &dyn Sql,
    account: InternalAccount,
    currency: Currency,
    now: &str,
) -> Result<i64, LedgerError> {
    let (kind, acquirer_iin) = match account {
        InternalAccount::Funding => ("funding", ""),
        InternalAccount::SettlementPayable { ref acquirer_iin } => ("settlement_payable", acquirer_iin.as_str()),
    };
    let code = i64::from(currency.code());
    let lookup = "SELECT id FROM internal_accounts WHERE kind = ?1 AND acquirer_iin = ?2 AND currency = ?3";
    if let Some(row) = conn.query_opt(lookup, args![kind, acquirer_iin, code])? {
        return row.get(0, "internal_accounts.id");
    }
    conn.execute(
        "INSERT INTO internal_accounts (kind, acquirer_iin, currency, created_at)
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (kind, acquirer_iin, currency) DO NOTHING",
        args![kind, acquirer_iin, code, now],
    )?;
    conn.query_one(lookup, args![kind, acquirer_iin, code], "internal_accounts.id")?.get(0, "internal_accounts.id")
}

/// Writes one balanced journal entry and moves the balances of its customer accounts (internal
/// accounts keep none: their postings are their balance). Returns the entry's id.
pub(crate) fn post_entry(
    conn: &dyn Sql,
    kind: EntryKind,
    txn_id: Option<&TxnId>,
    created_at: &str,
    postings: &[Posting<'_>],
) -> Result<i64, LedgerError> {
    check_balanced(postings)?;
    let entry_id: i64 = conn
        .query_one(
            "INSERT INTO journal_entries (kind, txn_id, created_at) VALUES (?1, ?2, ?3) RETURNING id",
            args![kind.as_str(), txn_id.map(|t| &t.0), created_at],
            "journal_entries.id",
        )?
        .get(0, "journal_entries.id")?;
    for posting in postings {
        write_posting(conn, entry_id, posting)?;
    }
    check_stored_entry(conn, entry_id)?;
    Ok(entry_id)
}

/// Before the write: non-zero legs that sum to zero in each currency.
fn check_balanced(postings: &[Posting<'_>]) -> Result<(), LedgerError> {
    if postings.len() < 2 {
        return Err(LedgerError::Invariant("a journal entry needs at least two postings"));
    }
    let mut sums: BTreeMap<u16, i128> = BTreeMap::new();
    for posting in postings {
        if posting.amount == 0 {
            return Err(LedgerError::Invariant("a posting of zero"));
        }
        *sums.entry(posting.currency.code()).or_default() += i128::from(posting.amount);
    }
    if sums.values().any(|sum| *sum != 0) {
        return Err(LedgerError::Invariant("a journal entry does not sum to zero"));
    }
    Ok(())
}

fn write_posting(conn: &dyn Sql, entry_id: i64, posting: &Posting<'_>) -> Result<(), LedgerError> {
    let code = i64::from(posting.currency.code());
    let (account, internal_id) = match posting.target {
        PostingTarget::Customer(account) => (Some(account.expose()), None),
        PostingTarget::Internal(id) => (None, Some(id)),
    };
    conn.execute(
        "INSERT INTO postings (entry_id, account, internal_account_id, amount, currency) VALUES (?1, ?2, ?3, ?4, ?5)",
        args![entry_id, account, internal_id, posting.amount, code],
    )?;
    // The currency in the WHERE clause makes a posting to an account of another currency
    // change no row, which is refused below. The balance CHECK constraints of the schema refuse
    // a negative debit balance or a credit line overdrawn.
    let changed = match posting.target {
        PostingTarget::Customer(account) => conn.execute(
            "UPDATE accounts SET balance = balance + ?1 WHERE account = ?2 AND currency = ?3",
            args![posting.amount, account.expose(), code],
        )?,
        // The id was looked up by its currency in this transaction (`internal_account_id`), and
        // the foreign key refuses a missing one; the audit checks every posting's currency.
        PostingTarget::Internal(_) => 1,
    };
    if changed != 1 {
        return Err(LedgerError::Invariant("a posting to a missing account or one of another currency"));
    }
    Ok(())
}

/// After the write: the stored postings of the entry sum to zero per currency.
fn check_stored_entry(conn: &dyn Sql, entry_id: i64) -> Result<(), LedgerError> {
    let unbalanced: i64 = conn
        .query_one(
            "SELECT count(*) FROM (
                 SELECT currency FROM postings WHERE entry_id = ?1 GROUP BY currency HAVING SUM(amount) <> 0
             ) AS unbalanced",
            args![entry_id],
            "postings.amount",
        )?
        .get(0, "postings.amount")?;
    if unbalanced != 0 {
        return Err(LedgerError::Invariant("a stored journal entry does not sum to zero"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbalanced_entries_are_refused_before_the_write() {
        let account = Account::new("400012341234").unwrap();
        let one_leg = [Posting { target: PostingTarget::Customer(&account), amount: 5, currency: Currency::EUR }];
        assert!(matches!(check_balanced(&one_leg), Err(LedgerError::Invariant(_))));
        let unbalanced = [
            Posting { target: PostingTarget::Customer(&account), amount: 5, currency: Currency::EUR },
            Posting { target: PostingTarget::Internal(1), amount: -4, currency: Currency::EUR },
        ];
        assert!(matches!(check_balanced(&unbalanced), Err(LedgerError::Invariant(_))));
        let across_currencies = [
            Posting { target: PostingTarget::Customer(&account), amount: 5, currency: Currency::EUR },
            Posting { target: PostingTarget::Internal(1), amount: -5, currency: Currency::USD },
        ];
        assert!(matches!(check_balanced(&across_currencies), Err(LedgerError::Invariant(_))));
        let zero = [
            Posting { target: PostingTarget::Customer(&account), amount: 0, currency: Currency::EUR },
            Posting { target: PostingTarget::Internal(1), amount: 0, currency: Currency::EUR },
        ];
        assert!(matches!(check_balanced(&zero), Err(LedgerError::Invariant(_))));
        let balanced = [
            Posting { target: PostingTarget::Customer(&account), amount: 5, currency: Currency::EUR },
            Posting { target: PostingTarget::Internal(1), amount: -5, currency: Currency::EUR },
        ];
        check_balanced(&balanced).unwrap();
    }
}
