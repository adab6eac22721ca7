//! Step 1 of a run: payers registered through the bank's own registration path
//! (`mps_authz::registration`, the code behind `authz account create` and `authz sim register`),
//! each an account with funds and limits for the run and a SIM bound to it, personalised in
//! memory with the sim library from the registration's record and the vendor's transport key.

use std::path::Path;

use mps_authz::ledger::{AccountKind, Ledger, NewAccount};
use mps_authz::registration::{self, RegistrationError};
use mps_hsm::Hsm;
use mps_protocol::keys::AesKey;
use mps_protocol::perso::PersoRecord;
use mps_protocol::{Account, Amount, Currency, Iin, MerchantId, Password, PasswordVerificationValue, Secret, SimId};
use mps_sim::{MerchantEntry, Profile};
use tokio::task::JoinSet;

use crate::drive::exchange::{InDoubt, LastExchange};

/// At most this many payers per run: the account number has six digits for the index.
pub const PAYERS_MAX: usize = 1_000_000;
/// At most this many registrations at once (each holds an HSM session for a moment).
pub const CONCURRENCY_MAX: usize = 1024;

/// Why provisioning stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// Too many payers or a zero count.
    #[error("payers must be 1 to {PAYERS_MAX} and concurrency 1 to {CONCURRENCY_MAX}: lower --payers")]
    Bounds,
    /// The bank refused a registration (HSM or ledger).
    #[error("registering payer {index} failed: {source} (is the bank's HSM reachable and the ledger writable?)")]
    Registration {
        /// The payer's index in this run.
        index: usize,
        /// The cause.
        source: RegistrationError,
    },
    /// A generated identifier did not parse (a bug: the formats are fixed here).
    #[error("generated identifier refused: {0}")]
    Identifier(#[from] mps_protocol::IdError),
    /// The sim library refused the bank's record or the transport key.
    #[error(
        "personalising SIM {sim_id} failed: {source} (is the transport key file the vendor's key that the bank imported?)"
    )]
    Personalise {
        /// The SIM.
        sim_id: String,
        /// The cause.
        source: mps_sim::SimError,
    },
    /// The transport key file is missing or not 64 hex digits.
    #[error(
        "transport key file {path}: {message} (give the SIM vendor's key, 64 hex digits, with --transport-key-file)"
    )]
    TransportKey {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A registration task panicked or was cancelled.
    #[error("a registration task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The bank's parts, opened as authz opens them.
#[derive(Clone)]
pub struct Bank {
    /// The bank's HSM.
    pub hsm: Hsm,
    /// The bank's ledger.
    pub ledger: Ledger,
    /// The bank's IIN.
    pub iin: Iin,
    /// Label of the SIM vendor's transport key in the HSM.
    pub transport_key_label: String,
    /// The bank's signing certificate (PEM), delivered in each personalisation record.
    pub bank_certificate_pem: String,
}

/// What each payer gets.
#[derive(Clone)]
pub struct PayerPlan {
    /// How many payers.
    pub count: usize,
    /// Registrations at once.
    pub concurrency: usize,
    /// Every payer's payment password.
    pub password: Password,
    /// The accounts' currency.
    pub currency: Currency,
    /// Opening balance.
    pub balance: Amount,
    /// Per-payment limit.
    pub per_txn_limit: Amount,
    /// Daily limit.
    pub daily_limit: Amount,
    /// The merchant the SIMs will pay.
    pub merchant_id: MerchantId,
    /// Seven digits that make this run's SIM ids and accounts unique (below 10^7).
    pub run_tag: u32,
}

/// One payer: the bank's account and the SIM that pays from it, owned by one task at a time.
pub struct Payer {
    /// The SIM.
    pub sim_id: SimId,
    /// The account the SIM pays from.
    pub account: Account,
    /// The issuer.
    pub iin: Iin,
    /// The SIM's state (key set, counter, pending payment).
    pub profile: Profile,
    /// The last request answered, for retransmissions.
    pub(crate) last: Option<LastExchange>,
    /// A request sent whose answer never came: sent again, byte for byte, next time.
    pub(crate) in_doubt: Option<InDoubt>,
    /// The last answer was 55: the next payment uses the right password, so the account never
    /// reaches the lock (75).
    pub(crate) needs_right_password: bool,
}

impl Payer {
    /// The SIM's session counter: the last completed session.
    pub fn counter(&self) -> u64 {
        self.profile.key_set(self.iin).map_or(0, |set| set.counter().value())
    }
}

/// A random run tag below 10^7.
pub fn random_run_tag() -> u32 {
    rand::random::<u32>() % 10_000_000
}

/// Reads the SIM vendor's transport key: 64 hex digits.
pub fn read_transport_key(path: &Path) -> Result<AesKey, ProvisionError> {
    let fail = |message: String| ProvisionError::TransportKey { path: path.display().to_string(), message };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let bytes = hex::decode(text.trim()).map_err(|_| fail("not hex".to_owned()))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| fail("not 32 bytes".to_owned()))?;
    Ok(AesKey::from_bytes(bytes))
}

/// Registers `plan.count` payers, `plan.concurrency` at a time; `on_progress(done, total)`
/// after each.
pub async fn provision(
    bank: &Bank,
    plan: &PayerPlan,
    transport_key: &AesKey,
    mut on_progress: impl FnMut(usize, usize),
) -> Result<Vec<Payer>, ProvisionError> {
    if plan.count == 0 || plan.count > PAYERS_MAX || plan.concurrency == 0 || plan.concurrency > CONCURRENCY_MAX {
        return Err(ProvisionError::Bounds);
    }
    let mut tasks = JoinSet::new();
    let mut payers = Vec::with_capacity(plan.count);
    let mut next = 0;
    while next < plan.count || !tasks.is_empty() {
        while next < plan.count && tasks.len() < plan.concurrency {
            let (bank, plan, index) = (bank.clone(), plan.clone(), next);
            tasks.spawn(async move { register_one(&bank, &plan, index).await });
            next += 1;
        }
        if let Some(joined) = tasks.join_next().await {
            let (account, sim_id, record) = joined??;
            payers.push(personalise(bank.iin, account, sim_id, &record, transport_key, plan.merchant_id)?);
            on_progress(payers.len(), plan.count);
        }
    }
    Ok(payers)
}

async fn register_one(
    bank: &Bank,
    plan: &PayerPlan,
    index: usize,
) -> Result<(Account, SimId, PersoRecord), ProvisionError> {
    let account = Account::new(&format!("{}{:07}{index:06}", bank.iin.as_str(), plan.run_tag))?;
    let sim_id = SimId::new(&format!("8949{:07}{index:08}", plan.run_tag))?;
    let new = NewAccount {
        account: account.clone(),
        holder_name: Secret::new(format!("Load Test {index}")),
        kind: AccountKind::Debit,
        currency: plan.currency,
        opening_balance: plan.balance,
        credit_limit: Amount::from_minor(0),
        per_txn_limit: plan.per_txn_limit,
        daily_limit: plan.daily_limit,
        password_verification_value: PasswordVerificationValue::new([0; 32]),
    };
    let failed = |source| ProvisionError::Registration { index, source };
    registration::create_account(&bank.hsm, &bank.ledger, new, &plan.password).await.map_err(failed)?;
    let record = registration::register_sim(
        &bank.hsm,
        &bank.ledger,
        bank.iin,
        &sim_id,
        std::slice::from_ref(&account),
        &bank.transport_key_label,
        &bank.bank_certificate_pem,
    )
    .await
    .map_err(failed)?;
    Ok((account, sim_id, record))
}

/// The SIM vendor's step: the record into a fresh profile, with the account and the merchant.
fn personalise(
    iin: Iin,
    account: Account,
    sim_id: SimId,
    record: &PersoRecord,
    transport_key: &AesKey,
    merchant_id: MerchantId,
) -> Result<Payer, ProvisionError> {
    let failed = |source| ProvisionError::Personalise { sim_id: sim_id.to_string(), source };
    let mut profile = Profile::new();
    profile.personalise(record, transport_key, false).map_err(failed)?;
    profile.add_account(account.clone(), iin, None).map_err(failed)?;
    let merchant = MerchantEntry::new(merchant_id, None, None).map_err(failed)?;
    profile.add_merchant(merchant).map_err(failed)?;
    Ok(Payer { sim_id, account, iin, profile, last: None, in_doubt: None, needs_right_password: false })
}
