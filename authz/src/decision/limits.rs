//! Step 10 of the decision: the amount is above zero and within the account's per-transaction
//! limit (13), and with today's approved payments within its daily limit (61).

use mps_protocol::{Amount, ResponseCode};

use crate::ledger::AccountRecord;

/// Step 10. `approved_today` is the sum of this business day's approved amounts.
pub fn check(account: &AccountRecord, amount: Amount, approved_today: Amount) -> Result<(), ResponseCode> {
    if amount.minor() == 0 || amount > account.per_txn_limit {
        return Err(ResponseCode::InvalidAmount);
    }
    let total = approved_today.minor().checked_add(amount.minor()).ok_or(ResponseCode::ExceedsDailyLimit)?;
    if total > account.daily_limit.minor() {
        return Err(ResponseCode::ExceedsDailyLimit);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::testing::account_record;

    /// The account allows 500 per payment and 1,000 a day.
    fn check_amount(amount: u64, approved_today: u64) -> Result<(), ResponseCode> {
        check(&account_record(10_000), Amount::from_minor(amount), Amount::from_minor(approved_today))
    }

    #[test]
    fn an_amount_above_zero_and_up_to_the_per_payment_limit_passes() {
        assert_eq!(check_amount(0, 0), Err(ResponseCode::InvalidAmount), "nothing to pay");
        assert_eq!(check_amount(1, 0), Ok(()));
        assert_eq!(check_amount(500, 0), Ok(()), "the limit itself");
        assert_eq!(check_amount(501, 0), Err(ResponseCode::InvalidAmount));
    }

    #[test]
    fn the_day_total_may_reach_the_daily_limit_and_no_further() {
        assert_eq!(check_amount(500, 500), Ok(()), "the limit itself");
        assert_eq!(check_amount(400, 700), Err(ResponseCode::ExceedsDailyLimit));
        assert_eq!(check_amount(1, 1_000), Err(ResponseCode::ExceedsDailyLimit));
        assert_eq!(check_amount(1, u64::MAX), Err(ResponseCode::ExceedsDailyLimit), "a total past u64");
    }
}
