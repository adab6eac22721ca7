//! Step 12 of the decision: available funds (debit: balance; credit: limit minus outstanding)
//! cover the amount (51).

use mps_protocol::{Amount, ResponseCode};

use crate::ledger::AccountRecord;

/// Step 12.
pub fn check(account: &AccountRecord, amount: Amount) -> Result<(), ResponseCode> {
    if account.available_amount() >= amount { Ok(()) } else { Err(ResponseCode::InsufficientFunds) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::AccountKind;
    use crate::ledger::testing::account_record;

    #[test]
    fn funds_cover_the_amount_to_the_last_minor_unit() {
        let debit = account_record(300);
        assert_eq!(check(&debit, Amount::from_minor(300)), Ok(()), "the whole balance");
        assert_eq!(check(&debit, Amount::from_minor(301)), Err(ResponseCode::InsufficientFunds));
        let credit = AccountRecord {
            kind: AccountKind::Credit,
            credit_limit: Amount::from_minor(1_000),
            ..account_record(-900)
        };
        assert_eq!(check(&credit, Amount::from_minor(100)), Ok(()), "what is left of the line");
        assert_eq!(check(&credit, Amount::from_minor(101)), Err(ResponseCode::InsufficientFunds));
    }
}
