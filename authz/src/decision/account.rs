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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::testing::account_record;

    #[test]
    fn only_a_bound_open_account_in_the_payment_currency_passes() {
        let open = account_record(1_000);
        assert_eq!(check(true, Some(&open), Currency::EUR), Ok(()));
        assert_eq!(check(false, Some(&open), Currency::EUR), Err(ResponseCode::NotPermitted), "not bound to the SIM");
        assert_eq!(check(true, None, Currency::EUR), Err(ResponseCode::NotPermitted), "no such account");
        let closed = AccountRecord { status: AccountStatus::Closed, ..open.clone() };
        assert_eq!(check(true, Some(&closed), Currency::EUR), Err(ResponseCode::Restricted));
        assert_eq!(check(true, Some(&open), Currency::USD), Err(ResponseCode::NotPermitted), "another currency");
    }
}
