//! What an answered request was about, in the form fit for a screen: the merchant, the amount,
//! the SIM and the account masked (first 6, last 4). The decision fills it in as it learns
//! each; `front/` records it with the answer's code and latency for the operator's console
//! (`ops::recent`). The full account number never enters it.

use mps_protocol::{Account, Amount, Currency, MerchantId, SimId};

/// What one answer was about; a field stays empty when the decision ended before it knew it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct About {
    /// The merchant that sent the request.
    pub merchant_id: Option<MerchantId>,
    /// The amount and its currency.
    pub amount: Option<(Amount, Currency)>,
    /// The SIM whose packet it was (ICCIDs are in the logs too; they are not secret).
    pub sim_id: Option<SimId>,
    /// The account, masked once here: first 6 and last 4 digits.
    pub account_masked: Option<String>,
}

impl About {
    /// A merchant's request for `amount` in `currency`.
    pub fn order(merchant_id: MerchantId, amount: Amount, currency: Currency) -> Self {
        Self { merchant_id: Some(merchant_id), amount: Some((amount, currency)), ..Self::default() }
    }

    /// The same, with the SIM whose packet it carried.
    pub fn with_sim(mut self, sim_id: &SimId) -> Self {
        self.sim_id = Some(sim_id.clone());
        self
    }

    /// The same, with the account the packet named, masked.
    pub fn with_account(mut self, account: &Account) -> Self {
        self.account_masked = Some(account.masked());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_is_kept_masked_only() {
        let account = Account::new("4000123456789010").unwrap();
        let about = About::order(MerchantId::new("SHOP-1").unwrap(), Amount::from_minor(1250), Currency::EUR)
            .with_sim(&SimId::new("8949012300000000301").unwrap())
            .with_account(&account);
        assert_eq!(about.account_masked.as_deref(), Some("400012******9010"));
        assert!(!format!("{about:?}").contains("4000123456789010"));
    }
}
