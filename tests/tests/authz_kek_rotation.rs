//! KEK rotation without downtime, end to end: SIMs keep paying through the real server while
//! `rotate-kek` makes mps-kek-2 and `rewrap` moves the idle SIMs' chain keys; every payment is
//! approved, afterwards every record is under mps-kek-2, retiring mps-kek is refused before
//! and succeeds after, and every SIM can still pay.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mps_authz::ops::kek_rotation::{RewrapLimits, rewrap};
use mps_hsm::ceremony::{CeremonyError, retire_kek, rotate_kek};
use mps_hsm::testing::TestToken;
use mps_tests::{AccountSpec, Bank, TestSim};

const ACTIVE_SIMS: usize = 6;
const IDLE_SIMS: usize = 18;
const AMOUNT: u64 = 100;

async fn pay(bank: &Bank, sim: &mut TestSim, account: &mps_protocol::Account, order: &str) {
    let packet = sim.pay(account, order, AMOUNT, "8642");
    let answer = bank.authorize(&packet, order, AMOUNT).await;
    assert_eq!((answer.status, answer.code()), (200, "00"), "{order}: {:?}", answer.json);
    sim.read_answer(&answer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sims_keep_paying_while_the_kek_is_rotated_and_retired() {
    let token = TestToken::shared().unwrap();
    let pin = token.user_pin();
    let bank = Bank::start().await;
    let mut spec = AccountSpec::debit("4000120000000300", "8642", 10_000_000);
    spec.daily_limit = 100_000_000;
    let account = bank.create_account(&spec).await;
    let mut sims = Vec::new();
    for index in 0..ACTIVE_SIMS + IDLE_SIMS {
        let mut sim = bank.new_sim(&format!("89490124{index:011}"), &[&account]).await;
        pay(&bank, &mut sim, &account, &format!("K-{index:03}-0")).await;
        sims.push(sim);
    }
    assert_eq!(bank.ledger.kek_usage().await.unwrap(), [(1, (ACTIVE_SIMS + IDLE_SIMS) as u64)]);

    // Active SIMs pay in a loop for the whole rotation.
    let bank = Arc::new(bank);
    let stop = Arc::new(AtomicBool::new(false));
    let idle = sims.split_off(ACTIVE_SIMS);
    let loops: Vec<_> = sims
        .into_iter()
        .enumerate()
        .map(|(index, mut sim)| {
            let (bank, stop, account) = (Arc::clone(&bank), Arc::clone(&stop), account.clone());
            tokio::spawn(async move {
                let mut paid = 0;
                while !stop.load(Ordering::Acquire) {
                    paid += 1;
                    pay(&bank, &mut sim, &account, &format!("K-{index:03}-{paid}")).await;
                }
                (sim, paid)
            })
        })
        .collect();

    let config = token.config.clone();
    let (version, _) = tokio::task::spawn_blocking({
        let (config, pin) = (config.clone(), pin.clone());
        move || rotate_kek(&config, &pin)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(version, 2);
    let refused = retire_kek(&config, &pin, 1).unwrap_err();
    assert!(matches!(refused, CeremonyError::KekRefused { .. }), "{refused}");
    // The server's pool adopts mps-kek-2 by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    while bank.hsm.kek_version_newest() != 2 {
        assert!(Instant::now() < deadline, "the server did not adopt mps-kek-2");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let limits = RewrapLimits { batch_size: 4, concurrency: 2, ..RewrapLimits::default() };
    let report = rewrap(&bank.hsm, &bank.ledger, &config, &pin, limits, |_, _| {}).await.unwrap();
    assert_eq!(report.newest, 2);
    assert!(report.moved >= IDLE_SIMS as u64, "{report:?}");
    assert_eq!(report.usage, [(2, (ACTIVE_SIMS + IDLE_SIMS) as u64)], "{report:?}");
    assert_eq!(report.drained, ["mps-kek"]);

    stop.store(true, Ordering::Release);
    let mut sims = Vec::new();
    for handle in loops {
        let (sim, paid) = handle.await.unwrap();
        assert!(paid >= 2, "an active SIM paid {paid} times during the rotation");
        sims.push(sim);
    }
    sims.extend(idle);

    assert_eq!(retire_kek(&config, &pin, 1).unwrap(), "mps-kek");
    // Every SIM still pays: the active ones from chain keys the server wrote under
    // mps-kek-2, the idle ones from chain keys the rewrap moved there.
    for (index, sim) in sims.iter_mut().enumerate() {
        pay(&bank, sim, &account, &format!("K-{index:03}-after")).await;
    }
    // A fresh pool (as after a restart) has only mps-kek-2 and serves them all too.
    let fresh = token.hsm().await.unwrap();
    assert_eq!(fresh.kek_version_newest(), 2);
    let audit = bank.ledger.audit().await.unwrap();
    assert!(audit.postings > 0, "{audit:?}");
    drop(fresh);
    // Every pool closes its sessions before the process exits (SoftHSM's teardown races
    // threads still inside it).
    let mut bank = Arc::try_unwrap(bank).ok().expect("every payment task is done");
    bank.shutdown().await;
}

/// A ledger whose chain keys need a KEK the token does not have is refused at start, with the
/// count per version (a KEK retired before `rewrap` drained it, or the wrong token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_needing_a_missing_kek_is_refused_at_start() {
    let bank = Bank::start().await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000310", "8642", 1_000)).await;
    let parts = mps_authz::app::Parts {
        hsm: bank.hsm.clone(),
        ledger: bank.ledger.clone(),
        metrics: std::sync::Arc::clone(&bank.server.as_ref().unwrap().metrics),
        clock: mps_authz::decision::clock::Clock::system(),
    };
    mps_authz::app::check_kek_coverage(&parts, &bank.config.hsm.keys).await.unwrap();
    let orphan = mps_hsm::WrappedChainKey { kek_version: 7, bytes: [0x42; 40] };
    let sim_id = mps_protocol::SimId::new("8949012400000000999").unwrap();
    let iin = mps_protocol::Iin::new(mps_tests::IIN).unwrap();
    bank.ledger.register_sim(&sim_id, iin, &[account], orphan, mps_protocol::Rsn([1; 8])).await.unwrap();
    let err = mps_authz::app::check_kek_coverage(&parts, &bank.config.hsm.keys).await.unwrap_err();
    assert!(err.to_string().contains("1 under mps-kek-7"), "{err}");
    drop(parts);
    let mut bank = bank;
    bank.shutdown().await;
}
