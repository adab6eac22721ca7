//! Step 8 of the decision: the account named inside the packet is bound to this SIM (57), open
//! (62), and in the payment's currency (57).

use mps_protocol::{Account, Currency, ResponseCode};

use crate::ledger::{AccountRecord, AccountStatus, SimRecord};

/// Step 8.
pub fn check(
    sim: &SimRecord,
    account_number: &Account,
    account: Option<&AccountRecord>,
    currency: Currency,
) -> Result<(), ResponseCode> {
    if !sim.accounts.iter().any(|bound| bound == account_number) {
        return Err(ResponseCode::NotPermitted);
    }
    let account = account.ok_or(ResponseCode::NotPermitted)?;
    if account.status != AccountStatus::Open {
        return Err(ResponseCode::Restricted);
    }
    if account.currency != currency {
        return Err(ResponseCode::NotPermitted);
    }
    Ok(())
}
