//! Reversals through the real server (DESIGN.md section 6.1): an approval is undone exactly
//! once (balance, day's usage and order number restored, postings mirrored), a repeated
//! reversal gets the stored answer byte for byte, a reversal with nothing to reverse is a
//! signed 25, one whose amount differs a signed 12, another merchant's transaction is refused,
//! and the reversed session's packet still gets its stored answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use mps_pki::{IssueRequest, Subject};
use mps_tests::{AccountSpec, Bank, Merchant};

const TIME_1: &str = "2026-11-30T10:00:00Z";
const TIME_2: &str = "2026-11-30T10:05:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_is_reversed_exactly_once() {
    let mut bank = Bank::start().await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000600", "8642", 1_000)).await;
    let mut sim = bank.new_sim("8949012700000000001", &[&account]).await;
    let packet = sim.pay(&account, "R-1", 100, "8642");
    let approved = bank.authorize(&packet, "R-1", 100).await;
    assert_eq!(approved.code(), "00");
    sim.read_answer(&approved);
    let txn_id = approved.json["txn_id"].as_str().unwrap().to_owned();
    assert_eq!(bank.available(&account).await, 900);
    let day = mps_authz::decision::business_day::Cutoff::parse("00:00")
        .unwrap()
        .business_day(time::OffsetDateTime::now_utc());

    // Undone: signed 00 naming the approval; money, day's usage and order back.
    let reversed = bank.reverse("R-1", 100, Some(&txn_id), TIME_1).await;
    assert_eq!((reversed.status, reversed.code()), (200, "00"), "{:?}", reversed.json);
    assert_eq!(reversed.json["txn_id"].as_str(), Some(txn_id.as_str()));
    bank.verify_bank_signature(&reversed);
    assert_eq!(bank.available(&account).await, 1_000);
    assert_eq!(bank.ledger.daily_approved_total(&account, day).await.unwrap().minor(), 0);
    let merchant_id = mps_protocol::MerchantId::new(mps_tests::MERCHANT_ID).unwrap();
    let order = mps_protocol::OrderNo::new("R-1").unwrap();
    assert!(!bank.ledger.order_authorized(&merchant_id, &order).await.unwrap());

    // The same request again: the stored answer, byte for byte, and nothing booked twice.
    let repeated = bank.reverse("R-1", 100, Some(&txn_id), TIME_1).await;
    assert_eq!((&repeated.body, &repeated.jws), (&reversed.body, &reversed.jws));
    assert_eq!(bank.available(&account).await, 1_000);
    // A new request for the same order: nothing left to reverse.
    let again = bank.reverse("R-1", 100, Some(&txn_id), TIME_2).await;
    assert_eq!(again.code(), "25");
    bank.verify_bank_signature(&again);
    assert_eq!(bank.available(&account).await, 1_000);

    // The reversed session's packet still gets its stored answer (the SIM's keys moved on).
    let retransmitted = bank.authorize(&packet, "R-1", 100).await;
    assert_eq!((&retransmitted.body, &retransmitted.jws), (&approved.body, &approved.jws));
    assert_eq!(bank.available(&account).await, 1_000);

    // The order number is free again: a new payment for it is approved.
    let packet = sim.pay(&account, "R-1", 100, "8642");
    let paid_again = bank.authorize(&packet, "R-1", 100).await;
    assert_eq!(paid_again.code(), "00");
    sim.read_answer(&paid_again);
    assert_eq!(bank.available(&account).await, 900);

    // An amount that differs from the approval: a signed 12, nothing moves.
    let mismatch = bank.reverse("R-1", 99, None, TIME_1).await;
    assert_eq!(mismatch.code(), "12");
    bank.verify_bank_signature(&mismatch);
    assert_eq!(bank.available(&account).await, 900);

    // A declined authorization has nothing to reverse.
    let packet = sim.pay(&account, "R-2", 50, "1111");
    let declined = bank.authorize(&packet, "R-2", 50).await;
    assert_eq!(declined.code(), "55");
    sim.read_answer(&declined);
    assert_eq!(bank.reverse("R-2", 50, None, TIME_1).await.code(), "25");

    // Another merchant cannot reverse this merchant's transaction.
    let other_subject = Subject::Merchant { merchant_id: mps_protocol::MerchantId::new("OTHER-SHOP").unwrap() };
    let other_leaf = bank.pki.issue("other-merchant", &IssueRequest::new(other_subject, "other shop"));
    let other = Merchant::from_leaf("OTHER-SHOP", &other_leaf);
    let new_txn = paid_again.json["txn_id"].as_str().unwrap();
    let (body, jws) = other.reversal("R-1", 100, Some(new_txn), TIME_1);
    let refused = bank.post_to(&bank.gateway(), "/v1/reversals", body, Some(&jws)).await.unwrap();
    assert_eq!((refused.status, refused.json["response_code"].as_str()), (403, Some("63")), "{:?}", refused.json);
    assert_eq!(bank.available(&account).await, 900);

    // A reversal without a valid merchant signature is refused and changes nothing.
    let (body, _) = bank.merchant.reversal("R-1", 100, None, TIME_2);
    let unsigned = bank.post_to(&bank.gateway(), "/v1/reversals", body, None).await.unwrap();
    assert_eq!(unsigned.status, 401);
    assert_eq!(bank.available(&account).await, 900);

    // Every entry balances and every balance is the sum of its postings.
    let sums = bank.ledger.postings_sum_by_currency().await.unwrap();
    assert!(sums.iter().all(|(_, sum)| *sum == 0), "{sums:?}");
    bank.ledger.audit().await.unwrap();
    bank.shutdown().await;
}
