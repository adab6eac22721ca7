//! docs/openapi/authz.json describes what the authorization server really does: requests and
//! answers of a real run (approval, decline, retransmission, refusals, reversals) are checked
//! against it, and a body the document does not allow is caught.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use mps_tests::openapi::Spec;
use mps_tests::{AccountSpec, Bank};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_exchanges_match_the_openapi_document() {
    let spec = Spec::load("authz.json");
    let mut bank = Bank::start().await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000700", "8642", 1_000)).await;
    let mut sim = bank.new_sim("8949012800000000001", &[&account]).await;
    let gateway = bank.gateway();

    let packet = sim.pay(&account, "O-1", 100, "8642");
    let (body, jws) = bank.merchant.request(&packet, "O-1", 100, 978);
    let approved = bank.post(&gateway, body.clone(), Some(&jws)).await.unwrap();
    assert_eq!(approved.code(), "00");
    spec.check_post("/v1/authorizations", Some(&body), &approved);
    let retransmitted = bank.post(&gateway, body.clone(), Some(&jws)).await.unwrap();
    spec.check_post("/v1/authorizations", Some(&body), &retransmitted);
    sim.read_answer(&approved);

    let packet = sim.pay(&account, "O-2", 100, "0000");
    let (body, jws) = bank.merchant.request(&packet, "O-2", 100, 978);
    let declined = bank.post(&gateway, body.clone(), Some(&jws)).await.unwrap();
    assert_eq!(declined.code(), "55");
    spec.check_post("/v1/authorizations", Some(&body), &declined);
    sim.read_answer(&declined);

    let unsigned = bank.post(&gateway, body.clone(), None).await.unwrap();
    assert_eq!(unsigned.status, 401);
    spec.check_post("/v1/authorizations", None, &unsigned);
    let malformed = bank.post(&gateway, b"{\"not\":\"a request\"}".to_vec(), Some(&jws)).await.unwrap();
    assert_eq!(malformed.status, 400);
    spec.check_post("/v1/authorizations", None, &malformed);

    let txn_id = approved.json["txn_id"].as_str().unwrap().to_owned();
    let (body, jws) = bank.merchant.reversal("O-1", 100, Some(&txn_id), "2026-11-30T10:00:00Z");
    let reversed = bank.post_to(&gateway, "/v1/reversals", body.clone(), Some(&jws)).await.unwrap();
    assert_eq!(reversed.code(), "00");
    spec.check_post("/v1/reversals", Some(&body), &reversed);
    let (body, jws) = bank.merchant.reversal("O-9", 100, None, "2026-11-30T10:00:00Z");
    let nothing = bank.post_to(&gateway, "/v1/reversals", body.clone(), Some(&jws)).await.unwrap();
    assert_eq!(nothing.code(), "25");
    spec.check_post("/v1/reversals", Some(&body), &nothing);
    bank.shutdown().await;
}

#[test]
fn the_document_catches_what_it_does_not_allow() {
    let spec = Spec::load("authz.json");
    let schema = serde_json::json!({ "$ref": "#/components/schemas/AuthorizationAnswer" });
    let good = serde_json::json!({
        "response_code": "00", "auth_code": "A1B2C3", "txn_id": "00112233445566778899aabbccddeeff",
        "merchant_id": "SHOP", "order_no": "O-1", "amount": 100, "currency": 978,
        "issuer_time": "2026-11-30T10:00:00Z", "payer_answer": null
    });
    assert!(spec.errors(&schema, &good).is_empty());
    let mut extra = good.clone();
    extra["balance"] = serde_json::json!(5);
    assert!(!spec.errors(&schema, &extra).is_empty(), "an undocumented field");
    let mut float = good.clone();
    float["amount"] = serde_json::json!(1.5);
    assert!(!spec.errors(&schema, &float).is_empty(), "money is never a float");
    let mut missing = good;
    missing.as_object_mut().unwrap().remove("txn_id");
    assert!(!spec.errors(&schema, &missing).is_empty(), "a required field");
}
