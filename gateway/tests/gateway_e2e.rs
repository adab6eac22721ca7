//! The gateway end to end, with real parts only: a SIM pays, the merchant signs and posts over
//! mTLS to the gateway, the gateway routes by the packet's IIN and forwards to the bank's
//! authorization server (SoftHSM, SQLite ledger) over mTLS, and the bank's signed answer comes
//! back byte for byte. Also: failover past dead instances, timeouts answered with 91 without
//! booking twice, the rate limit, the merchant check, TLS refusals, unknown issuers, reversals
//! and the admin listener.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{Harness, dead_port, instance, silent_listener};
use mps_protocol::Currency;
use mps_tests::AccountSpec;

const AUTHORIZATIONS: &str = "/v1/authorizations";
const REVERSALS: &str = "/v1/reversals";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_comes_back_byte_for_byte_and_a_retransmission_gets_the_same_bytes() {
    let mut harness = Harness::new().await;
    let bank = &harness.bank;
    let account = bank.create_account(&AccountSpec::debit("4000120000000101", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000101", &[&account]).await;
    let gateway = harness.start(&harness.config(vec![harness.bank_instance()], |_| {})).await;

    let packet = sim.pay(&account, "GW-1", 1_250, "2468");
    let (body, jws) = bank.merchant.request(&packet, "GW-1", 1_250, Currency::EUR.code());
    let answer = gateway.post(&harness.merchant(), AUTHORIZATIONS, &body, Some(&jws)).await;
    assert_eq!((answer.status, answer.code()), (200, "00"), "{:?}", answer.json);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    bank.verify_bank_signature(&answer);
    assert!(sim.read_answer(&answer).approved());

    // The identical request again (same bytes, same signature): the stored answer, unchanged,
    // through the gateway and straight from the bank alike; booked once.
    let again = gateway.post(&harness.merchant(), AUTHORIZATIONS, &body, Some(&jws)).await;
    assert_eq!((&again.body, &again.jws), (&answer.body, &answer.jws));
    let direct = bank.post(&bank.gateway(), body.clone(), Some(&jws)).await.unwrap();
    assert_eq!((&direct.body, &direct.jws), (&answer.body, &answer.jws), "what the bank sent is what came back");
    assert_eq!(bank.available(&account).await, 8_750);

    // HTTP/1.1 merchants are served too.
    let mut tls = mps_pki::tls::client_config(
        mps_pki::tls::server_cert_verifier(&bank.pki.trust_store(), mps_pki::Role::GatewayServer).unwrap(),
        Some((harness.merchant_leaf.chain_file.as_path(), harness.merchant_leaf.key_file.as_path())),
    )
    .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let http1 = reqwest::Client::builder().use_preconfigured_tls(tls).http1_only().no_proxy().build().unwrap();
    let over_http1 = gateway.post(&http1, AUTHORIZATIONS, &body, Some(&jws)).await;
    assert_eq!(over_http1.body, answer.body);

    let metrics = gateway.metrics().await;
    assert!(metrics.contains("mps_gateway_requests_total{route=\"authorizations\",status=\"200\"} 3"), "{metrics}");
    assert!(metrics.contains("mps_gateway_upstream_duration_seconds_count{issuer=\"400012\",outcome=\"answered\"} 3"));
    assert!(metrics.contains("mps_gateway_instance_healthy{instance=\"https://127.0.0.1:"), "{metrics}");
    assert_eq!(gateway.admin("/healthz").await.0, 200);
    assert_eq!(gateway.admin("/readyz").await.0, 200);
    gateway.shutdown().await;
    harness.bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_instances_are_skipped_and_marked_down() {
    let mut harness = Harness::new().await;
    let bank = &harness.bank;
    let account = bank.create_account(&AccountSpec::debit("4000120000000102", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000102", &[&account]).await;
    // First: down by its probe. Second: its probe says healthy (it reads the bank's), but its
    // port is dead, so the first attempt fails to connect and marks it down at once. Third: the bank.
    let probed_dead = format!("https://127.0.0.1:{}", dead_port().await);
    let probe_dead_health = format!("http://127.0.0.1:{}/readyz", dead_port().await);
    let connect_dead = format!("https://127.0.0.1:{}", dead_port().await);
    let instances = vec![
        instance(&probed_dead, &probe_dead_health),
        instance(&connect_dead, &harness.bank_health_url()),
        harness.bank_instance(),
    ];
    let gateway = harness.start(&harness.config(instances, |_| {})).await;
    let (status, text) = gateway.admin("/readyz").await;
    assert_eq!(status, 200, "the bank is healthy: {text}");
    assert!(text.contains(&format!("{probed_dead}/: down")), "{text}");

    let packet = sim.pay(&account, "GW-2", 500, "2468");
    let (body, jws) = bank.merchant.request(&packet, "GW-2", 500, Currency::EUR.code());
    let answer = gateway.post(&harness.merchant(), AUTHORIZATIONS, &body, Some(&jws)).await;
    assert_eq!((answer.status, answer.code()), (200, "00"), "{:?}", answer.json);
    bank.verify_bank_signature(&answer);
    assert_eq!(bank.available(&account).await, 9_500);

    let (_, text) = gateway.admin("/readyz").await;
    assert!(text.contains(&format!("{connect_dead}/: down")), "{text}");
    let metrics = gateway.metrics().await;
    assert!(metrics.contains("mps_gateway_upstream_retries_total{issuer=\"400012\"} 1"), "{metrics}");
    assert!(metrics.contains(&format!("instance_healthy{{instance=\"{connect_dead}/\",issuer=\"400012\"}} 0")));
    assert!(metrics.contains(&format!("instance_healthy{{instance=\"{probed_dead}/\",issuer=\"400012\"}} 0")));
    gateway.shutdown().await;
    harness.bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_instances_time_out_into_91_and_nothing_is_booked() {
    let mut harness = Harness::new().await;
    let bank = &harness.bank;
    let account = bank.create_account(&AccountSpec::debit("4000120000000103", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000103", &[&account]).await;
    let silent = [silent_listener().await, silent_listener().await];
    let instances = silent.iter().map(|address| instance(&format!("https://{address}"), &harness.bank_health_url()));
    let config = harness.config(instances.collect(), |config| {
        let issuer = config.issuers.get_mut(&common::iin()).unwrap();
        issuer.request_timeout_ms = 300;
        issuer.attempts_max = 3;
        issuer.deadline_ms = 2_000;
    });
    let gateway = harness.start(&config).await;

    let packet = sim.pay(&account, "GW-3", 700, "2468");
    let (body, jws) = bank.merchant.request(&packet, "GW-3", 700, Currency::EUR.code());
    let started = std::time::Instant::now();
    let answer = gateway.post(&harness.merchant(), AUTHORIZATIONS, &body, Some(&jws)).await;
    assert_eq!((answer.status, answer.code()), (504, "91"), "{:?}", answer.json);
    assert_eq!(answer.content_type.as_deref(), Some("application/problem+json"));
    assert!(answer.jws.is_none(), "the gateway never signs or makes up an answer");
    let detail = answer.json["detail"].as_str().unwrap();
    assert!(detail.contains("outcome is unknown") && detail.contains("reverse"), "{detail}");
    assert!(started.elapsed() < Duration::from_secs(2), "bounded by the deadline");
    let metrics = gateway.metrics().await;
    assert!(metrics.contains("mps_gateway_upstream_retries_total{issuer=\"400012\"} 1"), "{metrics}");
    assert!(metrics.contains("mps_gateway_upstream_gave_up_total{issuer=\"400012\",outcome=\"unknown\"} 1"));
    assert_eq!(gateway.admin("/readyz").await.0, 503, "both silent instances are down");

    // Both down now: nothing is sent, and the merchant is told so.
    let refused = gateway.post(&harness.merchant(), AUTHORIZATIONS, &body, Some(&jws)).await;
    assert_eq!((refused.status, refused.code()), (503, "91"), "{:?}", refused.json);
    assert!(refused.json["detail"].as_str().unwrap().contains("not forwarded"));
    assert_eq!(bank.available(&account).await, 10_000, "nothing was booked");
    gateway.shutdown().await;

    // The merchant retries the identical body through a gateway that reaches the bank: decided once.
    let gateway = harness.start(&harness.config(vec![harness.bank_instance()], |_| {})).await;
    let answer = gateway.post(&harness.merchant(), AUTHORIZATIONS, &body, Some(&jws)).await;
    assert_eq!((answer.status, answer.code()), (200, "00"), "{:?}", answer.json);
    assert_eq!(bank.available(&account).await, 9_300);
    gateway.shutdown().await;
    harness.bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_answer_is_91_and_the_retry_gets_the_stored_answer_booked_once() {
    let mut harness = Harness::new().await;
    let account = harness.bank.create_account(&AccountSpec::debit("4000120000000104", "2468", 10_000)).await;
    let mut sim = harness.bank.new_sim("8949012300000000104", &[&account]).await;
    let (keeper, mut kept) = common::answer_keeping_proxy(&mut harness).await;
    let instances = vec![instance(&format!("https://{keeper}"), &harness.bank_health_url()), harness.bank_instance()];
    let config = harness.config(instances, |config| {
        let issuer = config.issuers.get_mut(&common::iin()).unwrap();
        issuer.request_timeout_ms = 3_000;
        issuer.attempts_max = 1;
    });
    let gateway = harness.start(&config).await;
    let bank = &harness.bank;

    let packet = sim.pay(&account, "GW-4", 900, "2468");
    let (body, jws) = bank.merchant.request(&packet, "GW-4", 900, Currency::EUR.code());
    let lost = gateway.post(&harness.merchant(), AUTHORIZATIONS, &body, Some(&jws)).await;
    assert_eq!((lost.status, lost.code()), (504, "91"), "{:?}", lost.json);
    let decided = tokio::time::timeout(Duration::from_secs(30), kept.recv()).await.unwrap().unwrap();
    assert_eq!(decided.code(), "00", "the bank approved and booked; the answer was lost on the way back");
    assert_eq!(bank.available(&account).await, 9_100);

    // The merchant sends the identical body again: the keeper is down now, the bank answers
    // with its stored answer, and nothing is booked twice.
    let retried = gateway.post(&harness.merchant(), AUTHORIZATIONS, &body, Some(&jws)).await;
    assert_eq!((retried.status, retried.code()), (200, "00"), "{:?}", retried.json);
    assert_eq!((&retried.body, &retried.jws), (&decided.body, &decided.jws));
    bank.verify_bank_signature(&retried);
    assert_eq!(bank.available(&account).await, 9_100, "booked once");
    assert!(sim.read_answer(&retried).approved());
    gateway.shutdown().await;
    harness.bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_over_its_rate_gets_429_with_retry_after() {
    let mut harness = Harness::new().await;
    let config = harness.config(vec![harness.bank_instance()], |config| {
        config.rate_limit.rate_per_second = 1;
        config.rate_limit.burst = 2;
    });
    let gateway = harness.start(&config).await;
    let client = harness.merchant();
    for _ in 0..2 {
        let answer = gateway.post(&client, AUTHORIZATIONS, b"{}", None).await;
        assert_eq!((answer.status, answer.code()), (400, "30"), "{:?}", answer.json);
    }
    let response = client.post(format!("{}{AUTHORIZATIONS}", gateway.url)).body("{}").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    // Another merchant has its own bucket.
    let other = harness.merchant_certificate("OTHER-SHOP");
    let answer = gateway.post(&harness.merchant_client(Some(&other)), AUTHORIZATIONS, b"{}", None).await;
    assert_eq!(answer.status, 400);
    let metrics = gateway.metrics().await;
    assert!(metrics.contains("mps_gateway_rate_limited_total 1"), "{metrics}");
    assert!(metrics.contains("mps_gateway_requests_total{route=\"authorizations\",status=\"429\"} 1"));
    gateway.shutdown().await;
    harness.bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_for_another_merchant_than_the_certificate_is_forbidden() {
    let mut harness = Harness::new().await;
    let account = harness.bank.create_account(&AccountSpec::debit("4000120000000105", "2468", 10_000)).await;
    let mut sim = harness.bank.new_sim("8949012300000000105", &[&account]).await;
    let other = harness.merchant_certificate("OTHER-SHOP");
    let gateway = harness.start(&harness.config(vec![harness.bank_instance()], |_| {})).await;
    let packet = sim.pay(&account, "GW-5", 100, "2468");
    let (body, jws) = harness.bank.merchant.request(&packet, "GW-5", 100, Currency::EUR.code());
    let answer = gateway.post(&harness.merchant_client(Some(&other)), AUTHORIZATIONS, &body, Some(&jws)).await;
    assert_eq!((answer.status, answer.code()), (403, "63"), "{:?}", answer.json);
    assert_eq!(answer.content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(harness.bank.available(&account).await, 10_000);
    gateway.shutdown().await;
    harness.bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_merchant_certificate_are_refused_in_the_handshake() {
    let mut harness = Harness::new().await;
    let gateway = harness.start(&harness.config(vec![harness.bank_instance()], |_| {})).await;
    let without = gateway.try_post(&harness.merchant_client(None), AUTHORIZATIONS, b"{}", None).await;
    assert!(without.is_err(), "no client certificate: {without:?}");
    // A scheme certificate of another role (the gateway's own client certificate) is refused too.
    let wrong_role = harness.merchant_client(Some(&harness.client_leaf));
    let refused = gateway.try_post(&wrong_role, AUTHORIZATIONS, b"{}", None).await;
    assert!(refused.is_err(), "a gateway-client certificate is no merchant's: {refused:?}");
    let metrics = gateway.metrics().await;
    assert!(!metrics.contains("mps_gateway_requests_total{"), "no request got in: {metrics}");
    gateway.shutdown().await;
    harness.bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_issuer_is_404_with_15_and_a_body_without_a_packet_is_400_with_30() {
    let mut harness = Harness::new().await;
    let account = harness.bank.create_account(&AccountSpec::debit("4000120000000106", "2468", 10_000)).await;
    let mut sim = harness.bank.new_sim("8949012300000000106", &[&account]).await;
    // The routing table knows only another issuer.
    let config = harness.config(vec![harness.bank_instance()], |config| {
        let bank = config.issuers.remove(&common::iin()).unwrap();
        config.issuers.insert(mps_protocol::Iin::new("499999").unwrap(), bank);
    });
    let gateway = harness.start(&config).await;
    let packet = sim.pay(&account, "GW-6", 100, "2468");
    let (body, jws) = harness.bank.merchant.request(&packet, "GW-6", 100, Currency::EUR.code());
    let answer = gateway.post(&harness.merchant(), AUTHORIZATIONS, &body, Some(&jws)).await;
    assert_eq!((answer.status, answer.code()), (404, "15"), "{:?}", answer.json);

    let no_packet = serde_json::json!({"merchant_id": mps_tests::MERCHANT_ID, "payer_packet": "AAAA"}).to_string();
    let answer = gateway.post(&harness.merchant(), AUTHORIZATIONS, no_packet.as_bytes(), None).await;
    assert_eq!((answer.status, answer.code()), (400, "30"), "{:?}", answer.json);
    let too_large = vec![b' '; 9 * 1024];
    let answer = gateway.post(&harness.merchant(), AUTHORIZATIONS, &too_large, None).await;
    assert_eq!((answer.status, answer.code()), (413, "30"), "{:?}", answer.json);
    let answer = gateway.post(&harness.merchant(), "/v1/other", b"{}", None).await;
    assert_eq!(answer.status, 404);
    let metrics = gateway.metrics().await;
    assert!(metrics.contains("mps_gateway_requests_total{route=\"authorizations\",status=\"404\"} 1"), "{metrics}");
    assert!(metrics.contains("mps_gateway_requests_total{route=\"other\",status=\"404\"} 1"), "{metrics}");
    gateway.shutdown().await;
    harness.bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reversal_is_routed_by_its_issuer_iin_and_comes_back_signed() {
    let mut harness = Harness::new().await;
    let bank = &harness.bank;
    let account = bank.create_account(&AccountSpec::debit("4000120000000107", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000107", &[&account]).await;
    let gateway = harness.start(&harness.config(vec![harness.bank_instance()], |_| {})).await;
    let packet = sim.pay(&account, "GW-7", 400, "2468");
    let (body, jws) = bank.merchant.request(&packet, "GW-7", 400, Currency::EUR.code());
    let approved = gateway.post(&harness.merchant(), AUTHORIZATIONS, &body, Some(&jws)).await;
    assert_eq!(approved.code(), "00", "{:?}", approved.json);
    assert_eq!(bank.available(&account).await, 9_600);
    let txn_id = approved.json["txn_id"].as_str().unwrap().to_owned();

    let reversal = serde_json::json!({
        "merchant_id": mps_tests::MERCHANT_ID,
        "order_no": "GW-7",
        "amount": 400,
        "currency": Currency::EUR.code(),
        "acquirer_iin": mps_tests::ACQUIRER_IIN,
        "issuer_iin": mps_tests::IIN,
        "txn_id": txn_id,
        "reason": "timeout",
        "merchant_time": "2026-11-30T10:00:00Z",
    });
    let reversal = serde_json::to_vec(&reversal).unwrap();
    let reversal_jws = bank.merchant.sign(&reversal);
    let reversed = gateway.post(&harness.merchant(), REVERSALS, &reversal, Some(&reversal_jws)).await;
    assert_eq!((reversed.status, reversed.code()), (200, "00"), "{:?}", reversed.json);
    bank.verify_bank_signature(&reversed);
    assert_eq!(bank.available(&account).await, 10_000);
    let repeated = gateway.post(&harness.merchant(), REVERSALS, &reversal, Some(&reversal_jws)).await;
    assert_eq!((&repeated.body, &repeated.jws), (&reversed.body, &reversed.jws));
    assert_eq!(bank.available(&account).await, 10_000, "reversed once");

    let unknown = serde_json::json!({"merchant_id": mps_tests::MERCHANT_ID, "issuer_iin": "499999"}).to_string();
    let answer = gateway.post(&harness.merchant(), REVERSALS, unknown.as_bytes(), None).await;
    assert_eq!((answer.status, answer.code()), (404, "15"), "{:?}", answer.json);
    let metrics = gateway.metrics().await;
    assert!(metrics.contains("mps_gateway_requests_total{route=\"reversals\",status=\"200\"} 2"), "{metrics}");
    gateway.shutdown().await;
    harness.bank.shutdown().await;
}
