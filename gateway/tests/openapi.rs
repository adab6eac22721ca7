//! docs/openapi/gateway.json describes what the gateway really answers: an approval and a
//! reversal forwarded from the bank, and the gateway's own refusals (another merchant, unknown
//! issuer, rate limit, a silent issuer), each checked against the document.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{Harness, instance, silent_listener};
use mps_protocol::Currency;
use mps_tests::AccountSpec;
use mps_tests::openapi::Spec;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateways_answers_match_the_openapi_document() {
    let spec = Spec::load("gateway.json");
    let mut harness = Harness::new().await;
    let other_leaf = harness.merchant_certificate("OTHER-SHOP");
    let bank = &harness.bank;
    let account = bank.create_account(&AccountSpec::debit("4000120000000801", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000801", &[&account]).await;
    let gateway = harness
        .start(&harness.config(vec![harness.bank_instance()], |c| {
            c.rate_limit.rate_per_second = 1;
            c.rate_limit.burst = 3;
        }))
        .await;
    let merchant = harness.merchant();

    let packet = sim.pay(&account, "OA-1", 1_250, "2468");
    let (body, jws) = bank.merchant.request(&packet, "OA-1", 1_250, Currency::EUR.code());
    let approved = gateway.post(&merchant, "/v1/authorizations", &body, Some(&jws)).await;
    assert_eq!(approved.code(), "00");
    spec.check_post("/v1/authorizations", Some(&body), &approved);
    sim.read_answer(&approved);

    let txn_id = approved.json["txn_id"].as_str().unwrap().to_owned();
    let (reversal, jws) = bank.merchant.reversal("OA-1", 1_250, Some(&txn_id), "2026-11-30T10:00:00Z");
    let reversed = gateway.post(&merchant, "/v1/reversals", &reversal, Some(&jws)).await;
    assert_eq!(reversed.code(), "00");
    spec.check_post("/v1/reversals", Some(&reversal), &reversed);

    // A body for our merchant sent with another merchant's certificate: 403.
    let other = harness.merchant_client(Some(&other_leaf));
    let forbidden = gateway.post(&other, "/v1/authorizations", &body, Some(&jws)).await;
    assert_eq!(forbidden.status, 403);
    spec.check_post("/v1/authorizations", None, &forbidden);

    // An issuer nobody routes to: 404 with code 15.
    let unknown = String::from_utf8(reversal.clone()).unwrap().replace("\"400012\"", "\"499999\"");
    let unknown = gateway.post(&merchant, "/v1/reversals", unknown.as_bytes(), Some(&jws)).await;
    assert_eq!(unknown.status, 404);
    spec.check_post("/v1/reversals", None, &unknown);

    // Over the merchant's rate: 429 with Retry-After.
    let mut limited = None;
    for _ in 0..10 {
        let answer = gateway.post(&merchant, "/v1/authorizations", &body, Some(&jws)).await;
        if answer.status == 429 {
            limited = Some(answer);
            break;
        }
    }
    spec.check_post("/v1/authorizations", None, &limited.expect("the rate limit answered 429"));
    gateway.shutdown().await;

    // An issuer that never answers: 504 with code 91, the outcome unknown.
    let silent = silent_listener().await;
    let config = harness.config(vec![instance(&format!("https://{silent}"), &harness.bank_health_url())], |c| {
        for issuer in c.issuers.values_mut() {
            issuer.request_timeout_ms = 300;
            issuer.deadline_ms = 700;
        }
    });
    let gateway = harness.start(&config).await;
    let timed_out = gateway.post(&harness.merchant(), "/v1/authorizations", &body, Some(&jws)).await;
    assert!(matches!(timed_out.status, 503 | 504), "{timed_out:?}");
    assert_eq!(timed_out.json["response_code"].as_str(), Some("91"));
    spec.check_post("/v1/authorizations", None, &timed_out);
    gateway.shutdown().await;
    // The bank's pool closes its sessions before the process exits (SoftHSM's teardown races
    // threads still inside it).
    harness.bank.shutdown().await;
}
