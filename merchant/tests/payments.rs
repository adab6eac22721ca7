//! End-to-end payments through the merchant server: a SIM's packet posted to `/v1/payments`,
//! checked against the shop's order, signed, submitted over mTLS to a real issuer (SoftHSM,
//! SQLite ledger), its signed answer verified and recorded, the SIM's answer handed back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{Behaviour, PASSWORD, Scheme, Shop};
use mps_merchant::orders::{BankOutcome, OrderBook, OrderStatus, Submission};
use mps_pki::Role;
use mps_protocol::OrderNo;

#[tokio::test(flavor = "multi_thread")]
async fn an_open_order_is_paid_by_a_sim_packet() {
    let scheme = Scheme::start().await;
    let (account, mut sim) = scheme.payer("4000120000001234", "8949012345678901234").await;
    let dir = tempfile::tempdir().unwrap();
    let shop = Shop::start(&scheme.config(dir.path(), &scheme.bank.url)).await;

    let created = shop.create_order("ORD-0000001", 1250).await;
    assert_eq!(created.status, 201, "{:?}", created.json);
    assert_eq!(created.json["status"], "open");

    let packet = sim.pay(&account, "ORD-0000001", 1250, PASSWORD);
    let reply = shop.pay(&packet).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.json["response_code"], "00");
    assert_eq!(reply.json["status"], "paid");
    let outcome = reply.open_on(&mut sim);
    assert!(outcome.approved(), "the SIM opens an approval");

    let order = shop.order("ORD-0000001").await;
    assert_eq!(order.json["status"], "paid");
    let auth_code = order.json["auth_code"].as_str().unwrap();
    assert_eq!(auth_code.len(), 6);
    assert_eq!(auth_code, outcome.answer.auth_code.as_str());
    assert_eq!(order.json["txn_id"].as_str().unwrap(), outcome.answer.txn_id.to_hex());

    // The bank's signature, as recorded, verifies over the recorded body.
    let body = order.json["bank_answer"].as_str().unwrap();
    let jws = order.json["bank_signature"].as_str().unwrap();
    let identity = mps_pki::jws::verify_detached(
        jws,
        body.as_bytes(),
        &scheme.bank.pki.trust_store(),
        Role::BankSigning,
        rustls_pki_types::UnixTime::now(),
    )
    .unwrap();
    assert_eq!(identity.bank_iin.unwrap().as_str(), mps_tests::IIN);
    assert_eq!(scheme.bank.available(&account).await, 100_000 - 1250);

    // The day's export lists it; another day does not.
    let today = order.json["paid_day"].as_str().unwrap().to_owned();
    let export = shop.export(&format!("?day={today}")).await;
    assert_eq!(export.json["orders"].as_array().unwrap().len(), 1);
    assert_eq!(export.json["totals"]["978"], 1250);
    assert_eq!(shop.export("?day=2001-01-01").await.json["orders"].as_array().unwrap().len(), 0);
    assert_eq!(shop.export("?day=yesterday").await.status, 400);

    // The SIM's lost answer: the identical packet gets the stored answer, nothing is sent again.
    let attempts = shop.bank_attempts();
    let again = shop.pay(&packet).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json["payer_answer"], reply.json["payer_answer"]);
    assert_eq!(shop.bank_attempts(), attempts);

    let metrics = shop.metrics().await;
    assert!(metrics.contains("mps_merchant_payments_total{outcome=\"approved\"} 1"), "{metrics}");
    shop.server.shutdown().await;
    scheme.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn packets_that_do_not_fit_the_order_never_reach_the_bank() {
    let scheme = Scheme::start().await;
    let (account, mut sim) = scheme.payer("4000120000001234", "8949012345678901234").await;
    let dir = tempfile::tempdir().unwrap();
    let shop = Shop::start(&scheme.config(dir.path(), &scheme.bank.url)).await;
    assert_eq!(shop.create_order("ORD-1", 1250).await.status, 201);
    assert_eq!(shop.create_order("ORD-1", 1250).await.status, 409, "an order number is used once");

    // Another amount than the order's.
    let packet = sim.pay(&account, "ORD-1", 999, PASSWORD);
    let reply = shop.pay(&packet).await;
    assert_eq!(reply.status, 422, "{:?}", reply.json);
    assert!(reply.json["detail"].as_str().unwrap().contains("amount"));

    // The same packet edited to name an order the shop does not have, or another merchant.
    let mut unknown_order = packet.clone();
    unknown_order[35] = b'X';
    assert_eq!(shop.pay(&unknown_order).await.status, 404);
    let mut other_merchant = packet.clone();
    other_merchant[20] = b'X';
    let reply = shop.pay(&other_merchant).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json["title"], "Wrong merchant");

    // Not a packet at all.
    assert_eq!(shop.pay(&packet[..100]).await.status, 400);
    let url = format!("http://{}/v1/payments", shop.server.phone_address);
    let garbage = shop.http.post(url).body("{\"payer_packet\": 7}").send().await.unwrap();
    assert_eq!(garbage.status().as_u16(), 400);
    assert_eq!(garbage.headers()["content-type"], "application/problem+json");

    assert_eq!(shop.bank_attempts(), 0, "nothing was sent to the bank");
    assert_eq!(shop.order("ORD-1").await.json["status"], "open");
    shop.server.shutdown().await;
    scheme.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_packet_for_a_paid_order_is_declined_94_by_its_issuer_and_the_sim_moves_on() {
    let scheme = Scheme::start().await;
    let (account, mut sim) = scheme.payer("4000120000001234", "8949012345678901234").await;
    let (account_2, mut sim_2) = scheme.payer("4000120000005678", "8949012345678901235").await;
    let dir = tempfile::tempdir().unwrap();
    let shop = Shop::start(&scheme.config(dir.path(), &scheme.bank.url)).await;
    shop.create_order("ORD-2", 500).await;

    let first = shop.pay(&sim.pay(&account, "ORD-2", 500, PASSWORD)).await;
    assert_eq!(first.json["response_code"], "00");
    first.open_on(&mut sim);

    // Another payer of the same issuer: the packet goes to the bank, which declines it (94) and
    // seals an answer for the SIM; nothing moves, and the order stays paid by the first packet.
    let attempts = shop.bank_attempts();
    let duplicate = sim_2.pay(&account_2, "ORD-2", 500, PASSWORD);
    let second = shop.pay(&duplicate).await;
    assert_eq!((second.status, &second.json["response_code"]), (200, &serde_json::json!("94")), "{:?}", second.json);
    assert_eq!(second.json["status"], "paid");
    assert!(second.json["auth_code"].is_null(), "{:?}", second.json);
    assert_ne!(second.json["txn_id"], first.json["txn_id"], "the decline's own transaction");
    assert_eq!(shop.bank_attempts(), attempts + 1);
    let outcome = second.open_on(&mut sim_2);
    assert_eq!(outcome.answer.response_code, mps_protocol::ResponseCode::Duplicate);
    assert_eq!(scheme.bank.available(&account_2).await, 100_000);
    let order = shop.order("ORD-2").await.json;
    assert_eq!((&order["status"], &order["txn_id"]), (&first.json["status"], &first.json["txn_id"]));
    // The identical packet again (the phone lost the reply): the bank's stored decline.
    let again = shop.pay(&duplicate).await;
    assert_eq!((again.status, &again.json["payer_answer"]), (200, &second.json["payer_answer"]));

    // The SIM's keys moved on: its next payment is approved.
    shop.create_order("ORD-3", 200).await;
    let next = shop.pay(&sim_2.pay(&account_2, "ORD-3", 200, PASSWORD)).await;
    assert_eq!(next.json["response_code"], "00", "{:?}", next.json);
    next.open_on(&mut sim_2);

    // A packet of another issuer: a reversal is queued, then the packet goes to its issuer (which
    // this bank is not: it refuses the request undecided), so the reversal is dropped unsent.
    let mut foreign = mps_protocol::wire::PayerPacket::decode(&sim_2.pay(&account_2, "ORD-2", 500, PASSWORD)).unwrap();
    foreign.fields.iin = mps_protocol::Iin::new("510050").unwrap();
    let attempts = shop.bank_attempts();
    let refused = shop.pay(&foreign.encode()).await;
    assert_eq!(
        (refused.status, &refused.json["title"]),
        (409, &serde_json::json!("Already paid")),
        "{:?}",
        refused.json
    );
    assert!(refused.json["detail"].as_str().unwrap().contains("refused with HTTP 400"), "{:?}", refused.json);
    assert_eq!(shop.bank_attempts(), attempts + 1);
    assert_eq!(shop.server.payments.book.pending_reversal_count().unwrap(), 0, "nothing to undo");
    assert_eq!(shop.order("ORD-2").await.json["txn_id"], first.json["txn_id"]);
    assert!(shop.metrics().await.contains("mps_merchant_payments_total{outcome=\"declined\"} 2"));
    shop.server.shutdown().await;
    scheme.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_packet_of_another_issuer_for_a_paid_order_is_approved_there_and_reversed_at_once() {
    let scheme = Scheme::start().await;
    let (account, mut sim) = scheme.payer("4000120000001234", "8949012345678901234").await;
    let dir = tempfile::tempdir().unwrap();
    let shop = Shop::start(&scheme.config(dir.path(), &scheme.bank.url)).await;
    shop.create_order("ORD-9", 500).await;
    // ORD-9 was paid at another issuer, as the order book records such a payment.
    let order_no = OrderNo::new("ORD-9").unwrap();
    let book = &shop.server.payments.book;
    let elsewhere = Submission {
        order_no,
        amount: mps_protocol::Amount::from_minor(500),
        currency: mps_protocol::Currency::EUR,
        issuer_iin: mps_protocol::Iin::new("510050").unwrap(),
        packet: vec![7; 113],
        body: b"{}".to_vec(),
        signature: "s".to_owned(),
    };
    book.begin_payment(&elsewhere).unwrap();
    let paid = BankOutcome {
        response_code: "00".to_owned(),
        auth_code: Some("ELSE01".to_owned()),
        txn_id: "ab".repeat(16),
        body: b"{}".to_vec(),
        signature: "s".to_owned(),
        payer_answer: Some(vec![0; 79]),
    };
    book.record_answer(&order_no, &paid).unwrap();

    // This bank knows nothing of that payment and approves the packet; the SIM reads the
    // approval and is told it was reversed, and the reversal goes at once: the money is back.
    let packet = sim.pay(&account, "ORD-9", 500, PASSWORD);
    let reply = shop.pay(&packet).await;
    assert_eq!((reply.status, &reply.json["response_code"]), (200, &serde_json::json!("00")), "{:?}", reply.json);
    assert_eq!(reply.json["status"], "reversed");
    assert_ne!(reply.json["txn_id"], "ab".repeat(16));
    assert!(reply.open_on(&mut sim).approved());
    let back = common::eventually(Duration::from_secs(20), || async {
        scheme.bank.available(&account).await == 100_000 && book.pending_reversal_count().unwrap() == 0
    })
    .await;
    assert!(back, "the approval of the second packet was not reversed");
    let metrics = shop.metrics().await;
    assert!(metrics.contains("mps_merchant_payments_total{outcome=\"approved_reversed\"} 1"), "{metrics}");
    assert!(metrics.contains("mps_merchant_reversals_total{result=\"00\"} 1"), "{metrics}");
    let order = shop.order("ORD-9").await.json;
    assert_eq!((&order["status"], &order["txn_id"]), (&serde_json::json!("paid"), &serde_json::json!("ab".repeat(16))));

    // The identical packet again (the phone lost the reply): the bank's stored approval, told
    // as reversed again; its second reversal finds nothing left to undo (25).
    let again = shop.pay(&packet).await;
    assert_eq!((again.status, &again.json["payer_answer"]), (200, &reply.json["payer_answer"]), "{:?}", again.json);
    assert_eq!(again.json["status"], "reversed");
    let settled = common::eventually(Duration::from_secs(20), || async {
        book.pending_reversal_count().unwrap() == 0
            && shop.metrics().await.contains("mps_merchant_reversals_total{result=\"25\"} 1")
    })
    .await;
    assert!(settled, "{}", shop.metrics().await);
    assert_eq!(scheme.bank.available(&account).await, 100_000);

    // The SIM's keys moved on: its next payment is approved and kept.
    shop.create_order("ORD-10", 300).await;
    let next = shop.pay(&sim.pay(&account, "ORD-10", 300, PASSWORD)).await;
    assert_eq!((next.json["response_code"].as_str(), next.json["status"].as_str()), (Some("00"), Some("paid")));
    assert_eq!(scheme.bank.available(&account).await, 99_700);
    scheme.bank.ledger.audit().await.unwrap();
    shop.server.shutdown().await;
    scheme.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_recorded_as_declined_and_the_order_can_be_paid_again() {
    let scheme = Scheme::start().await;
    let (account, mut sim) = scheme.payer("4000120000001234", "8949012345678901234").await;
    let dir = tempfile::tempdir().unwrap();
    let shop = Shop::start(&scheme.config(dir.path(), &scheme.bank.url)).await;
    shop.create_order("ORD-3", 700).await;

    let reply = shop.pay(&sim.pay(&account, "ORD-3", 700, "wrong-pw")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.json["response_code"], "55");
    assert_eq!(reply.json["status"], "declined");
    let outcome = reply.open_on(&mut sim);
    assert!(!outcome.approved());
    let order = shop.order("ORD-3").await;
    assert_eq!(order.json["status"], "declined");
    assert_eq!(order.json["response_code"], "55");
    assert!(order.json["auth_code"].is_null());

    let reply = shop.pay(&sim.pay(&account, "ORD-3", 700, PASSWORD)).await;
    assert_eq!(reply.json["response_code"], "00");
    assert_eq!(shop.order("ORD-3").await.json["status"], "paid");
    shop.server.shutdown().await;
    scheme.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_altered_bank_answer_leaves_the_order_unpaid() {
    let scheme = Scheme::start().await;
    let (account, mut sim) = scheme.payer("4000120000001234", "8949012345678901234").await;
    let gateway = common::fake_gateway(&scheme, Behaviour::Alter).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = scheme.config(dir.path(), &gateway);
    config.reversals.interval_ms = 60_000;
    config.reversals.backoff_max_ms = 60_000;
    let shop = Shop::start(&config).await;
    shop.create_order("ORD-4", 1250).await;

    let reply = shop.pay(&sim.pay(&account, "ORD-4", 1250, PASSWORD)).await;
    assert_eq!(reply.status, 502, "{:?}", reply.json);
    assert_eq!(reply.json["title"], "Bank answer not verified");
    assert!(reply.json["payer_answer"].is_null());

    let order = shop.order("ORD-4").await;
    assert_eq!(order.json["status"], "unknown");
    assert!(order.json["auth_code"].is_null());
    let reason = order.json["reason"].as_str().unwrap();
    assert!(reason.contains("signature"), "{reason}");
    assert_eq!(shop.export("").await.json["orders"].as_array().unwrap().len(), 0, "not in the export");
    let pending = shop.server.payments.book.pending_reversals(10).unwrap();
    assert_eq!(pending.len(), 1, "a reversal is queued for an answer the merchant cannot trust");
    assert_eq!(scheme.bank.available(&account).await, 100_000 - 1250, "the issuer did book the approval");
    shop.server.shutdown().await;

    // After a restart the stored reversal goes out (the "gateway" forwards reversals as they
    // are): the issuer reverses its approval and the order is reversed, payable again.
    let shop = Shop::start(&config).await;
    let reversed = common::eventually(Duration::from_secs(20), || async {
        shop.order("ORD-4").await.json["status"] == "reversed"
    })
    .await;
    assert!(reversed, "{:?}", shop.order("ORD-4").await.json);
    assert_eq!(scheme.bank.available(&account).await, 100_000);
    assert!(shop.metrics().await.contains("mps_merchant_reversals_total{result=\"00\"} 1"));
    shop.server.shutdown().await;
    scheme.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_gateway_leads_to_a_pending_reversal_that_survives_a_restart() {
    let scheme = Scheme::start().await;
    let (account, mut sim) = scheme.payer("4000120000001234", "8949012345678901234").await;
    let gateway = common::silent_gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = scheme.config(dir.path(), &gateway);
    config.gateway.attempt_timeout_ms = 300;
    config.gateway.attempts_max = 3;
    config.gateway.deadline_ms = 5_000;
    config.reversals.interval_ms = 60_000;
    config.reversals.backoff_max_ms = 60_000;
    let shop = Shop::start(&config).await;
    shop.create_order("ORD-5", 1250).await;

    let reply = shop.pay(&sim.pay(&account, "ORD-5", 1250, PASSWORD)).await;
    assert_eq!(reply.status, 504, "{:?}", reply.json);
    assert_eq!(reply.json["response_code"], "91");
    assert_eq!(shop.bank_attempts(), 3, "the identical request was tried attempts_max times");
    let order = shop.order("ORD-5").await;
    assert_eq!(order.json["status"], "reversal_pending");
    let metrics = shop.metrics().await;
    assert!(metrics.contains("mps_merchant_bank_retries_total{kind=\"authorization\"} 2"), "{metrics}");
    assert!(metrics.contains("mps_merchant_payments_total{outcome=\"timeout\"} 1"), "{metrics}");
    shop.server.shutdown().await;

    let book = OrderBook::open(&config.orders.path, Duration::from_secs(1)).unwrap();
    let order = book.get(&OrderNo::new("ORD-5").unwrap()).unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::ReversalPending);
    let pending = book.pending_reversals(10).unwrap();
    assert_eq!(pending.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&pending[0].body).unwrap();
    assert_eq!(body["order_no"], "ORD-5");
    assert_eq!(body["issuer_iin"], mps_tests::IIN);
    assert_eq!(body["reason"], "timeout");
    assert!(body["txn_id"].is_null());

    // A second packet for the order waits for the reversal.
    let shop = Shop::start(&config).await;
    let (account_2, mut sim_2) = scheme.payer("4000120000005678", "8949012345678901235").await;
    let reply = shop.pay(&sim_2.pay(&account_2, "ORD-5", 1250, PASSWORD)).await;
    assert_eq!(reply.status, 409);
    assert_eq!(reply.json["title"], "Order busy");
    shop.server.shutdown().await;
    scheme.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_approval_is_reversed_and_an_unseen_payment_has_nothing_to_reverse() {
    let scheme = Scheme::start().await;
    let (account, mut sim) = scheme.payer("4000120000001234", "8949012345678901234").await;
    let (account_2, mut sim_2) = scheme.payer("4000120000005678", "8949012345678901235").await;

    // The issuer approves, but its answer comes after the merchant gave up: reversed (00).
    let late = common::fake_gateway(&scheme, Behaviour::Delay(Duration::from_millis(1_500))).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = scheme.config(dir.path(), &late);
    config.gateway.attempt_timeout_ms = 500;
    config.gateway.attempts_max = 1;
    let shop = Shop::start(&config).await;
    shop.create_order("ORD-6", 1250).await;
    let packet = sim.pay(&account, "ORD-6", 1250, PASSWORD);
    let reply = shop.pay(&packet).await;
    assert_eq!(reply.status, 504);
    let reversed = common::eventually(Duration::from_secs(20), || async {
        shop.order("ORD-6").await.json["status"] == "reversed"
    })
    .await;
    assert!(reversed, "{:?}", shop.order("ORD-6").await.json);
    assert!(shop.order("ORD-6").await.json["reason"].as_str().unwrap().contains("00"));
    assert_eq!(scheme.bank.available(&account).await, 100_000, "the approval was reversed");
    assert_eq!(shop.order("ORD-6").await.json["reversal_code"], "00");
    shop.server.shutdown().await;
    // The SIM resends its packet (it never got an answer). The same order book, now behind a
    // bank that answers: the identical request goes out again, the issuer answers it with its
    // stored answer, the SIM reads it and its keys move on; the order stays reversed and the
    // money where it is.
    let shop = Shop::start(&scheme.config(dir.path(), &scheme.bank.url)).await;
    let again = shop.pay(&packet).await;
    assert_eq!(again.status, 200, "{:?}", again.json);
    assert_eq!(again.json["status"], "reversed");
    again.open_on(&mut sim);
    assert_eq!(shop.order("ORD-6").await.json["status"], "reversed");
    assert_eq!(scheme.bank.available(&account).await, 100_000, "a resend pays nothing again");
    shop.create_order("ORD-8", 200).await;
    let next = shop.pay(&sim.pay(&account, "ORD-8", 200, PASSWORD)).await;
    assert_eq!(next.json["response_code"], "00", "the SIM's keys moved on: {:?}", next.json);
    shop.server.shutdown().await;

    // The request never reaches the issuer: nothing to reverse (25); the order may be paid again.
    let hang = common::fake_gateway(&scheme, Behaviour::Hang).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = scheme.config(dir.path(), &hang);
    config.gateway.attempt_timeout_ms = 300;
    config.gateway.attempts_max = 1;
    let shop = Shop::start(&config).await;
    shop.create_order("ORD-7", 300).await;
    assert_eq!(shop.pay(&sim_2.pay(&account_2, "ORD-7", 300, PASSWORD)).await.status, 504);
    let settled = common::eventually(Duration::from_secs(20), || async {
        shop.order("ORD-7").await.json["status"] == "reversed"
    })
    .await;
    assert!(settled, "{:?}", shop.order("ORD-7").await.json);
    assert!(shop.order("ORD-7").await.json["reason"].as_str().unwrap().contains("25"));
    assert_eq!(shop.server.payments.book.pending_reversal_count().unwrap(), 0);
    shop.server.shutdown().await;
    scheme.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_packets_at_once_for_one_order_pay_it_once() {
    let scheme = Scheme::start().await;
    let (account, mut sim) = scheme.payer("4000120000001234", "8949012345678901234").await;
    let (account_2, mut sim_2) = scheme.payer("4000120000005678", "8949012345678901235").await;
    let dir = tempfile::tempdir().unwrap();
    let shop = Shop::start(&scheme.config(dir.path(), &scheme.bank.url)).await;
    shop.create_order("ORD-8", 400).await;

    let first = sim.pay(&account, "ORD-8", 400, PASSWORD);
    let second = sim_2.pay(&account_2, "ORD-8", 400, PASSWORD);
    let (a, b) = tokio::join!(shop.pay(&first), shop.pay(&second));
    // One pays; the other finds the order in flight (409, nothing sent), or, if it came after the
    // first was recorded, paid: then the bank declines it (94).
    let mut outcomes =
        [a, b].map(|reply| (reply.status, reply.json["response_code"].as_str().unwrap_or("-").to_owned()));
    outcomes.sort_unstable();
    let approved = (200, "00".to_owned());
    assert!(
        outcomes == [approved.clone(), (200, "94".to_owned())] || outcomes == [approved, (409, "-".to_owned())],
        "{outcomes:?}"
    );
    let debited = 200_000 - scheme.bank.available(&account).await - scheme.bank.available(&account_2).await;
    assert_eq!(debited, 400, "exactly one payer paid");
    let sent = if outcomes[1].0 == 409 { 1 } else { 2 };
    assert_eq!(shop.bank_attempts(), sent, "an order in flight sends nothing more");
    shop.server.shutdown().await;
    scheme.finish().await;
}
