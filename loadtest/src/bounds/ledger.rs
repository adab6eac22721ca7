//! The raw ledger bound: `mps_authz::ledger::Ledger` on a temporary SQLite file, with the
//! bank's ledger settings (group commit batch size, queue, timeouts; WAL with
//! `synchronous=FULL` as always), committing approved sessions of an authorization's shape
//! (transaction row, postings, SIM ratchet state, the stored answer and its signature) from as
//! many callers as the run had connections, each its own SIM and account, as authz's
//! in-flight authorizations do. The file is in the system's temp dir, which may sit on another
//! disk than the bank's ledger: the report says where.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mps_authz::ledger::{AccountKind, Ledger, LedgerConfig, NewAccount, SessionCommit, SessionOutcome, Transaction};
use mps_hsm::WrappedChainKey;
use mps_protocol::wire::PACKET_LEN;
use mps_protocol::{
    Account, Amount, AuthCode, Counter, Currency, Iin, MerchantId, OrderNo, PasswordVerificationValue, Rsn, Secret,
    SimId, TxnId,
};

use super::{Bound, BoundError};

/// The stored answer body: the size of an approval's JSON.
const ANSWER_BODY_BYTES: usize = 420;
/// The stored answer's signature: the size of the bank's detached JWS with its chain.
const ANSWER_SIGNATURE_BYTES: usize = 1_500;
/// Each caller's account is funded for this many payments of the run's amount.
const PAYMENTS_PER_CALLER_MAX: u64 = 10_000_000;

/// Commits sessions for `time` from `callers` tasks on a fresh ledger in a temp dir.
pub async fn measure(
    config: &LedgerConfig,
    callers: usize,
    amount: Amount,
    currency: Currency,
    time: Duration,
) -> Result<Bound, BoundError> {
    let fail = |what: String| BoundError::Ledger(what);
    let dir = tempfile::tempdir().map_err(|e| fail(format!("temp dir: {e}")))?;
    let path = dir.path().join("bound-ledger.db");
    let open_path = path.clone();
    let config = config.clone();
    let ledger = tokio::task::spawn_blocking(move || Ledger::open(&open_path, config))
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(format!("opening {}: {e}", path.display())))?;
    let callers = callers.max(1);
    for caller in 0..callers {
        set_up_caller(&ledger, caller, amount, currency).await?;
    }
    let counters: Arc<Vec<AtomicU64>> = Arc::new((0..callers).map(|_| AtomicU64::new(0)).collect());
    let shared = (ledger.clone(), amount, currency, time::OffsetDateTime::now_utc());
    // Caller i pays with SIM i alone, so its sessions are consecutive, as a SIM's are.
    let measured = mps_hsm::bench::measure(callers, time, move |caller| {
        let (ledger, amount, currency, now) = shared.clone();
        let counters = Arc::clone(&counters);
        async move {
            let counter = counters.get(caller).ok_or(())?.fetch_add(1, Ordering::Relaxed) + 1;
            let commit = session(caller, counter, amount, currency, now).ok_or(())?;
            ledger.commit_session(commit).await.map_err(drop)
        }
    })
    .await;
    ledger.close().await;
    let what = format!("session commits on a temporary SQLite file in {}", std::env::temp_dir().display());
    Ok(Bound::new(&what, callers, measured))
}

fn account(caller: usize) -> Option<Account> {
    Account::new(&format!("4999{caller:012}")).ok()
}

fn sim_id(caller: usize) -> Option<SimId> {
    SimId::new(&format!("8949{caller:015}")).ok()
}

/// An account funded for the bound and a SIM at counter 0 bound to it.
async fn set_up_caller(ledger: &Ledger, caller: usize, amount: Amount, currency: Currency) -> Result<(), BoundError> {
    let fail = |what: String| BoundError::Ledger(format!("setting up caller {caller}: {what}"));
    let account = account(caller).ok_or_else(|| fail("account number".to_owned()))?;
    let sim_id = sim_id(caller).ok_or_else(|| fail("SIM id".to_owned()))?;
    let funds = Amount::from_minor(amount.minor().saturating_mul(PAYMENTS_PER_CALLER_MAX));
    let new = NewAccount {
        account: account.clone(),
        holder_name: Secret::new(format!("Bound {caller}")),
        kind: AccountKind::Debit,
        currency,
        opening_balance: funds,
        credit_limit: Amount::from_minor(0),
        per_txn_limit: amount,
        daily_limit: funds,
        password_verification_value: PasswordVerificationValue::new([0; 32]),
    };
    ledger.create_account(new).await.map_err(|e| fail(e.to_string()))?;
    let iin = Iin::new("499999").map_err(|e| fail(e.to_string()))?;
    let wrapped = WrappedChainKey { kek_version: 1, bytes: [0x10; 40] };
    ledger.register_sim(&sim_id, iin, &[account], wrapped, Rsn([1; 8])).await.map_err(|e| fail(e.to_string()))
}

/// Caller `caller`'s approved session `counter`, shaped as authz commits one.
fn session(
    caller: usize,
    counter: u64,
    amount: Amount,
    currency: Currency,
    now: time::OffsetDateTime,
) -> Option<SessionCommit> {
    let counter_value = Counter::new(counter).ok()?;
    let mut txn_id = [0u8; 16];
    txn_id[..8].copy_from_slice(&(caller as u64).to_be_bytes());
    txn_id[8..].copy_from_slice(&counter.to_be_bytes());
    let mut packet = vec![0u8; PACKET_LEN];
    packet[0] = 0x01;
    packet[14..20].copy_from_slice(&counter_value.to_wire());
    Some(SessionCommit {
        transaction: Transaction {
            txn_id: TxnId(txn_id),
            sim_id: sim_id(caller)?,
            counter: counter_value,
            account: account(caller)?,
            merchant_id: MerchantId::new("BOUND-SHOP").ok()?,
            order_no: OrderNo::new(&format!("B{caller}-{counter}")).ok()?,
            acquirer_iin: Iin::new("500001").ok()?,
            merchant_account: "DE89370400440532013000".to_owned(),
            amount,
            currency,
            business_day: now.date(),
            created_at: now,
        },
        outcome: SessionOutcome::Approved { auth_code: AuthCode(*b"B0UND1") },
        wrapped_next_chain_key: WrappedChainKey { kek_version: 1, bytes: [(counter % 251) as u8; 40] },
        next_rsn: Rsn(counter.to_be_bytes()),
        packet,
        response_body: vec![b'x'; ANSWER_BODY_BYTES],
        response_signature: "s".repeat(ANSWER_SIGNATURE_BYTES),
    })
}
