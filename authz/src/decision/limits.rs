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
