//! Step 12 of the decision: available funds (debit: balance; credit: limit minus outstanding)
//! cover the amount (51).

use mps_protocol::{Amount, ResponseCode};

use crate::ledger::AccountRecord;

/// Step 12.
pub fn check(account: &AccountRecord, amount: Amount) -> Result<(), ResponseCode> {
    if account.available_amount() >= amount { Ok(()) } else { Err(ResponseCode::InsufficientFunds) }
}
