//! Step 8 of the decision: the account named inside the packet is bound to this SIM (57), open
//! (62), and in the payment's currency (57).

use mps_protocol::{Currency, ResponseCode};

use crate::ledger::{AccountRecord, AccountStatus};

/// Step 8. `bound_to_sim`: the account number is among the SIM's bound accounts.
pub fn check(bound_to_sim: bool, account: Option<&AccountRecord>, currency: Currency) -> Result<(), ResponseCode> {
    if !bound_to_sim {
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
