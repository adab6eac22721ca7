//! An authorization's outcome is never misreported. The decision runs in a task of its own:
//! when the request deadline fires after the booking was queued, the booking still completes,
//! the SIM's lock is held until it has, and the caller is told "outcome unknown: send the same
//! packet again", never "nothing was approved". The retransmission then gets the booking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use mps_tests::{AccountSpec, Bank, WriteLock};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadline_after_the_booking_was_queued_says_outcome_unknown_and_the_booking_stands() {
    let mut bank = Bank::builder()
        .with_config(|c| {
            c.server.request_timeout_ms = 1_500;
            c.ledger.tuning.busy_timeout_ms = 60_000;
        })
        .start()
        .await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000031", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000031", &[&account]).await;
    let packet = sim.pay(&account, "OU-1", 700, "2468");

    let lock = WriteLock::take(&bank.config.ledger.path);
    let first = bank.authorize(&packet, "OU-1", 700).await;
    assert_eq!(first.status, 503, "{:?}", first.json);
    assert_eq!(first.json["title"], "Outcome unknown", "{:?}", first.json);
    assert_eq!(first.code(), "91");
    assert_eq!(bank.metrics().outcome_unknown.get(), 1);

    // The SIM sends the same packet again while the booking is still waiting for the disk: it
    // waits behind the booking's SIM lock instead of reading the state from before it.
    let retransmission = {
        let (gateway, url, request) =
            (bank.gateway(), bank.url.clone(), bank.merchant.request(&packet, "OU-1", 700, 978));
        tokio::spawn(async move {
            gateway
                .post(format!("{url}/v1/authorizations"))
                .header("content-type", "application/json")
                .header("x-jws-signature", request.1)
                .body(request.0)
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!retransmission.is_finished(), "the retransmission must wait for the queued booking");
    lock.release();

    let answer = retransmission.await.unwrap();
    assert_eq!(answer.status(), 200);
    let json: serde_json::Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(json["response_code"], "00", "{json:?}");
    assert_eq!(bank.available(&account).await, 9_300, "booked exactly once");
    bank.ledger.audit().await.unwrap();
    bank.shutdown().await;
}
