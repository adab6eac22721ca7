//! Registration (DESIGN.md section 9): accounts with their payment password turned into a
//! verification value inside the HSM, and SIMs whose first chain key is derived in the HSM,
//! stored wrapped under mps-kek, and exported wrapped under the SIM vendor's transport key in
//! the personalisation record.

use mps_hsm::Hsm;
use mps_protocol::perso::PersoRecord;
use mps_protocol::{Account, Iin, Password, SimId};

use crate::ledger::{Ledger, NewAccount};

/// Why a registration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// The HSM refused or is unavailable.
    #[error("HSM: {0}")]
    Hsm(#[from] mps_hsm::HsmError),
    /// The ledger refused (already registered, unknown account, ...) or is unavailable.
    #[error("ledger: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    /// A SIM must be bound to at least one account.
    #[error("a SIM must be bound to at least one account: give --account")]
    NoAccounts,
    /// An account to bind does not exist.
    #[error("account {0} is not registered: create it first with `authz account create`")]
    UnknownAccount(String),
}

/// Creates an account; the password becomes its verification value in the HSM.
pub async fn create_account(
    hsm: &Hsm,
    ledger: &Ledger,
    mut account: NewAccount,
    password: &Password,
) -> Result<(), RegistrationError> {
    account.password_verification_value = hsm.password_verification_value(&account.account, password).await?;
    ledger.create_account(account).await?;
    Ok(())
}

/// Registers a SIM bound to `accounts`: derives CK_0 in the HSM, draws RSN_1, stores CK_0
/// wrapped under mps-kek, and returns the personalisation record for the SIM vendor.
pub async fn register_sim(
    hsm: &Hsm,
    ledger: &Ledger,
    iin: Iin,
    sim_id: &SimId,
    accounts: &[Account],
    transport_key: &str,
    bank_certificate_pem: &str,
) -> Result<PersoRecord, RegistrationError> {
    if accounts.is_empty() {
        return Err(RegistrationError::NoAccounts);
    }
    for account in accounts {
        if ledger.account(account).await?.is_none() {
            return Err(RegistrationError::UnknownAccount(account.masked()));
        }
    }
    let registration = hsm.register_sim(sim_id, transport_key).await?;
    ledger.register_sim(sim_id, iin, accounts, registration.wrapped_chain_key_for_ledger, registration.rsn).await?;
    Ok(PersoRecord::new(
        iin,
        sim_id,
        transport_key,
        &registration.wrapped_chain_key_for_transport,
        registration.rsn,
        bank_certificate_pem,
    ))
}
