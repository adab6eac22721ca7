//! 200 concurrent payments from 200 SIMs against one account with funds for exactly 50 of
//! them: exactly 50 approve, the balance never goes below zero, and every currency's postings
//! sum to zero.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use mps_tests::{AccountSpec, Bank};

const SIMS: usize = 200;
const FUNDED: i64 = 50;
const AMOUNT: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_sims_fifty_funded_payments() {
    let bank = Bank::start().await;
    let mut spec = AccountSpec::debit("4000120000000100", "8642", FUNDED as u64 * AMOUNT);
    spec.daily_limit = 10_000_000;
    let account = bank.create_account(&spec).await;
    let mut packets = Vec::with_capacity(SIMS);
    for index in 0..SIMS {
        let mut sim = bank.new_sim(&format!("89490123{index:011}"), &[&account]).await;
        let order = format!("C-{index:04}");
        packets.push((sim.pay(&account, &order, AMOUNT, "8642"), order));
    }

    let bank_ref = Arc::new(bank);
    let tasks: Vec<_> = packets
        .into_iter()
        .map(|(packet, order)| {
            let bank = Arc::clone(&bank_ref);
            tokio::spawn(async move { bank.authorize(&packet, &order, AMOUNT).await })
        })
        .collect();
    let mut approved = 0;
    let mut insufficient = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.json);
        match answer.code() {
            "00" => approved += 1,
            "51" => insufficient += 1,
            other => panic!("unexpected code {other}"),
        }
    }
    assert_eq!(approved, FUNDED);
    assert_eq!(insufficient, SIMS as i64 - FUNDED);
    let mut bank = Arc::try_unwrap(bank_ref).ok().expect("all tasks done");
    assert_eq!(bank.available(&account).await, 0, "exactly the funds of 50 payments were spent");
    let sums = bank.ledger.postings_sum_by_currency().await.unwrap();
    assert!(!sums.is_empty());
    assert!(sums.iter().all(|(_, sum)| *sum == 0), "postings per currency sum to zero: {sums:?}");
    // The audit fails if any entry is unbalanced or any balance differs from its postings.
    let audit = bank.ledger.audit().await.unwrap();
    assert!(audit.postings >= 2 * FUNDED as u64, "{audit:?}");
    bank.shutdown().await;
}
