//! docs/openapi/merchant.json describes what the merchant server really answers: the phone's
//! payment (approved, declined, resent, refused) and the POS order book (open, show, export,
//! refusals), each exchange checked against the document.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{PASSWORD, Reply, Scheme, Shop};
use mps_tests::openapi::{Exchange, Spec};

fn check(spec: &Spec, path: &str, method: &str, request: Option<&[u8]>, reply: &Reply) {
    spec.check(&Exchange {
        path,
        method,
        request,
        status: reply.status,
        content_type: reply.content_type.as_deref(),
        body: &reply.body,
        headers: Vec::new(),
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn the_merchants_answers_match_the_openapi_document() {
    let spec = Spec::load("merchant.json");
    let scheme = Scheme::start().await;
    let (account, mut sim) = scheme.payer("4000120000009001", "8949012345678909001").await;
    let dir = tempfile::tempdir().unwrap();
    let shop = Shop::start(&scheme.config(dir.path(), &scheme.bank.url)).await;

    let order = serde_json::json!({"order_no": "API-1", "amount": 700, "currency": "EUR"}).to_string();
    let created = shop.create_order("API-1", 700).await;
    check(&spec, "/v1/orders", "post", Some(order.as_bytes()), &created);
    let exists = shop.create_order("API-1", 700).await;
    assert_eq!(exists.status, 409);
    check(&spec, "/v1/orders", "post", Some(order.as_bytes()), &exists);

    let packet = sim.pay(&account, "API-1", 700, PASSWORD);
    let paid = shop.pay(&packet).await;
    assert_eq!(paid.json["response_code"], "00");
    check(&spec, "/v1/payments", "post", None, &paid);
    paid.open_on(&mut sim);
    check(&spec, "/v1/payments", "post", None, &shop.pay(&packet).await);

    shop.create_order("API-2", 900).await;
    let packet = sim.pay(&account, "API-2", 900, "wrong-1");
    let declined = shop.pay(&packet).await;
    assert_eq!(declined.json["response_code"], "55");
    check(&spec, "/v1/payments", "post", None, &declined);
    declined.open_on(&mut sim);

    let packet = sim.pay(&account, "API-9", 900, PASSWORD);
    let unknown = shop.pay(&packet).await;
    assert_eq!(unknown.status, 404);
    check(&spec, "/v1/payments", "post", None, &unknown);

    let shown = shop.order("API-1").await;
    assert_eq!(shown.json["status"], "paid");
    check(&spec, "/v1/orders/{order_no}", "get", None, &shown);
    check(&spec, "/v1/orders/{order_no}", "get", None, &shop.order("NO-SUCH").await);
    let day = shown.json["paid_day"].as_str().unwrap().to_owned();
    let export = shop.export(&format!("?day={day}")).await;
    check(&spec, "/v1/orders", "get", None, &export);
    check(&spec, "/v1/orders", "get", None, &shop.export("?day=yesterday").await);
    shop.server.shutdown().await;
    scheme.finish().await;
}
