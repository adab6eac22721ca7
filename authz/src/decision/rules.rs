//! Steps 8 to 12 as both the decision and the ledger's re-check inside the booking
//! transaction run them: the same step functions (`account`, `password`, `limits`,
//! `duplicate`, `funds`), in the same order. A rule is written once, in its step's file; this
//! file strings steps 10 to 12 together for both callers, and names the conflict a refusal
//! becomes when the ledger finds it only at booking time.

use mps_protocol::{Amount, Currency, ResponseCode};

use super::{account, duplicate, funds, limits, password};
use crate::ledger::{AccountRecord, Conflict, LedgerError};

/// Whether the premises of an approval still hold in the write transaction. The queries run
/// only when the steps before them passed, as in the decision.
pub fn recheck_approval(
    bound_to_sim: bool,
    account: &AccountRecord,
    currency: Currency,
    amount: Amount,
    approved_today: impl FnOnce() -> Result<Amount, LedgerError>,
    order_authorized: impl FnOnce() -> Result<bool, LedgerError>,
) -> Result<(), LedgerError> {
    let conflict = |code| LedgerError::Conflict(conflict_of(code));
    account::check(bound_to_sim, Some(account), currency).map_err(conflict)?;
    password::unlocked(account).map_err(conflict)?;
    after_password(account, amount, approved_today()?, order_authorized()?).map_err(conflict)
}

/// Steps 10 to 12, which follow a verified password: limits (13, 61), duplicate order (94),
/// funds (51), first refusal wins. The decision calls this after step 9, the ledger's re-check
/// after [`password::unlocked`].
pub fn after_password(
    account: &AccountRecord,
    amount: Amount,
    approved_today: Amount,
    order_authorized: bool,
) -> Result<(), ResponseCode> {
    limits::check(account, amount, approved_today)?;
    duplicate::check(order_authorized)?;
    funds::check(account, amount)
}

/// The ledger conflict a step's refusal becomes when it shows up only at booking time (a
/// premise moved between the decision and the commit).
pub fn conflict_of(code: ResponseCode) -> Conflict {
    match code {
        ResponseCode::PasswordTriesExceeded | ResponseCode::IncorrectPassword => Conflict::PasswordLocked,
        ResponseCode::InvalidAmount | ResponseCode::ExceedsDailyLimit => Conflict::LimitExceeded,
        ResponseCode::Duplicate => Conflict::DuplicateOrder,
        ResponseCode::InsufficientFunds => Conflict::InsufficientFunds,
        _ => Conflict::AccountNotPermitted,
    }
}

#[cfg(test)]
mod tests {
    use mps_protocol::{Amount, Currency, ResponseCode};

    use super::*;
    use crate::ledger::testing::account_record;
    use crate::ledger::{AccountKind, AccountStatus};

    fn account(kind: AccountKind, balance: i64, credit_limit: u64) -> AccountRecord {
        AccountRecord { kind, credit_limit: Amount::from_minor(credit_limit), ..account_record(balance) }
    }

    /// The decision's steps for an account whose password verified: 8, then 10 to 12.
    fn decision(bound: bool, record: &AccountRecord, amount: u64, today: u64, seen: bool) -> Result<(), ResponseCode> {
        account::check(bound, Some(record), Currency::EUR)?;
        password::unlocked(record)?;
        after_password(record, Amount::from_minor(amount), Amount::from_minor(today), seen)
    }

    #[test]
    fn the_ledger_refuses_exactly_what_the_decision_refuses() {
        let debit = account(AccountKind::Debit, 300, 0);
        let credit = account(AccountKind::Credit, -900, 1_000);
        let closed = AccountRecord { status: AccountStatus::Closed, ..debit.clone() };
        let locked = AccountRecord { password_locked: true, ..debit.clone() };
        let dollars = AccountRecord { currency: Currency::USD, ..debit.clone() };
        let mut checked = 0;
        for record in [&debit, &credit, &closed, &locked, &dollars] {
            for bound in [true, false] {
                for amount in [0, 1, 100, 101, 300, 301, 500, 501] {
                    for today in [0, 600, 1_000] {
                        for seen in [false, true] {
                            let decided = decision(bound, record, amount, today, seen);
                            let rechecked = recheck_approval(
                                bound,
                                record,
                                Currency::EUR,
                                Amount::from_minor(amount),
                                || Ok(Amount::from_minor(today)),
                                || Ok(seen),
                            );
                            match (decided, rechecked) {
                                (Ok(()), Ok(())) => {}
                                (Err(code), Err(LedgerError::Conflict(conflict))) => {
                                    assert_eq!(conflict_of(code), conflict, "{record:?} {amount} {today} {seen}")
                                }
                                (decided, rechecked) => panic!("{decided:?} but {rechecked:?}"),
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 5 * 2 * 8 * 3 * 2);
        // A credit account spends its line and no further, in both.
        assert_eq!(decision(true, &credit, 100, 0, false), Ok(()));
        assert_eq!(decision(true, &credit, 101, 0, false), Err(ResponseCode::InsufficientFunds));
    }
}
