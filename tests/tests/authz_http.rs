//! HTTP behaviour of the gateway-facing listener and the admin listener: HTTP/2 and HTTP/1.1,
//! the body limit, unknown routes, /metrics with per-stage histograms and counters by code,
//! /healthz, and graceful shutdown that lets in-flight authorizations finish.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use mps_tests::{AccountSpec, Bank};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_http1_body_limit_and_unknown_routes() {
    let mut bank = Bank::start().await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000300", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000300", &[&account]).await;

    // HTTP/2 by ALPN.
    let packet = sim.pay(&account, "H2-1", 100, "2468");
    let (body, jws) = bank.merchant.request(&packet, "H2-1", 100, 978);
    let response = bank
        .gateway()
        .post(format!("{}/v1/authorizations", bank.url))
        .header("content-type", "application/json")
        .header("x-jws-signature", jws)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));

    // HTTP/1.1 when the client only offers it; two requests on one keep-alive connection.
    let http1 = bank.client_http1(Some(&bank.gateway_leaf));
    for _ in 0..2 {
        let response = http1.post(format!("{}/v1/authorizations", bank.url)).body("{}").send().await.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_11);
        assert_eq!(response.status(), 400);
    }

    // A body over 8 KiB is refused with a problem, before any work.
    let big = vec![b' '; 9 * 1024];
    let answer = bank.post(&bank.gateway(), big, Some("x")).await.unwrap();
    assert_eq!(answer.status, 413);
    assert_eq!(answer.content_type.as_deref(), Some("application/problem+json"));

    // Another content type.
    let response = bank
        .gateway()
        .post(format!("{}/v1/authorizations", bank.url))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    // An unknown route.
    let response = bank.gateway().get(format!("{}/v1/other", bank.url)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_and_health() {
    let mut bank = Bank::start().await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000301", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000301", &[&account]).await;
    let packet = sim.pay(&account, "M-1", 100, "2468");
    assert_eq!(bank.authorize(&packet, "M-1", 100).await.code(), "00");
    sim.read_answer(&bank.authorize(&packet, "M-1", 100).await);
    let packet = sim.pay(&account, "M-2", 100, "0000");
    assert_eq!(bank.authorize(&packet, "M-2", 100).await.code(), "55");

    let text = reqwest::get(format!("{}/metrics", bank.admin_url)).await.unwrap().text().await.unwrap();
    for needle in [
        "mps_authz_request_duration_seconds_bucket",
        "mps_authz_stage_duration_seconds_bucket{stage=\"jws\"",
        "mps_authz_stage_duration_seconds_bucket{stage=\"hsm\"",
        "mps_authz_stage_duration_seconds_bucket{stage=\"ledger\"",
        "mps_authz_responses_total{code=\"00\"} 2",
        "mps_authz_responses_total{code=\"55\"} 1",
        "mps_authz_http_responses_total{status=\"200\"} 3",
        "mps_authz_hsm_pool_ready 1",
        "mps_authz_ledger_commit_batch_commands_bucket",
        "mps_authz_in_flight 0",
    ] {
        assert!(text.lines().any(|line| line.starts_with(needle)), "/metrics lacks {needle}:\n{text}");
    }
    let health = reqwest::get(format!("{}/healthz", bank.admin_url)).await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("{}/readyz", bank.admin_url)).await.unwrap();
    assert_eq!(ready.status(), 200);
    bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_lets_in_flight_authorizations_finish() {
    let bank = Bank::start().await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000302", "2468", 1_000_000)).await;
    let mut packets = Vec::new();
    for index in 0..20 {
        let mut sim = bank.new_sim(&format!("89490123000000004{index:02}"), &[&account]).await;
        let order = format!("S-{index}");
        packets.push((sim.pay(&account, &order, 100, "2468"), order));
    }
    // Hold SQLite's write lock from another connection: every authorization then waits at its
    // durable commit, inside the server, until the lock is released.
    let blocker = rusqlite::Connection::open(&bank.config.ledger.path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let bank = Arc::new(bank);
    let tasks: Vec<_> = packets
        .into_iter()
        .map(|(packet, order)| {
            let bank = Arc::clone(&bank);
            tokio::spawn(async move { bank.authorize(&packet, &order, 100).await })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while bank.metrics().in_flight.get() < 20 {
        assert!(std::time::Instant::now() < deadline, "the 20 authorizations did not all reach the server");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Shutdown is asked while all 20 are in flight; then the ledger is let go. Every one
    // completes with its answer.
    let stopper = bank.server.as_ref().unwrap().stopper();
    let _ = stopper.send(true);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    blocker.execute_batch("ROLLBACK").unwrap();
    let mut approved = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.code(), "00");
        approved += 1;
    }
    assert_eq!(approved, 20);
    let mut bank = Arc::try_unwrap(bank).ok().unwrap();
    bank.shutdown().await;
    let reopened = mps_authz::ledger::Ledger::open(&bank.config.ledger.path, Default::default()).unwrap();
    assert_eq!(reopened.account(&account).await.unwrap().unwrap().available(), 1_000_000 - 20 * 100);
}

/// Authorizations in flight are bounded by `server.in_flight_max`: with the ledger held, the
/// first ones wait inside the server and every one past the bound is refused at once with 503
/// and Retry-After, before any work; the waiting ones complete once the ledger is let go, and
/// the refused ones booked nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn authorizations_past_in_flight_max_are_refused_at_once() {
    const IN_FLIGHT_MAX: usize = 4;
    let bank = Bank::builder().with_config(|c| c.server.in_flight_max = IN_FLIGHT_MAX).start().await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000310", "2468", 1_000_000)).await;
    let mut payments = Vec::new();
    for index in 0..12 {
        let mut sim = bank.new_sim(&format!("89490123000000005{index:02}"), &[&account]).await;
        let order = format!("F-{index}");
        payments.push((sim.pay(&account, &order, 100, "2468"), order));
    }
    let blocker = mps_tests::WriteLock::take(&bank.config.ledger.path);
    let bank = Arc::new(bank);
    let mut payments = payments.into_iter();
    let mut waiting = Vec::new();
    for (packet, order) in payments.by_ref().take(IN_FLIGHT_MAX) {
        let bank = Arc::clone(&bank);
        waiting.push(tokio::spawn(async move { bank.authorize(&packet, &order, 100).await }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while bank.metrics().in_flight.get() < IN_FLIGHT_MAX as i64 {
        assert!(std::time::Instant::now() < deadline, "the first authorizations did not reach the ledger");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The bound is reached: each further one is refused at once, however many come.
    for (packet, order) in payments {
        let refused = bank.authorize(&packet, &order, 100).await;
        assert_eq!(refused.status, 503, "{}", String::from_utf8_lossy(&refused.body));
        assert!(refused.header_names.iter().any(|name| name == "retry-after"));
    }
    assert_eq!(bank.metrics().overload.get(), 8);
    assert_eq!(bank.metrics().in_flight.get(), IN_FLIGHT_MAX as i64);
    blocker.release();
    for task in waiting {
        assert_eq!(task.await.unwrap().code(), "00");
    }
    assert_eq!(bank.metrics().in_flight.get(), 0);
    assert_eq!(bank.available(&account).await, 1_000_000 - IN_FLIGHT_MAX as i64 * 100);
    let mut bank = Arc::try_unwrap(bank).ok().unwrap();
    bank.shutdown().await;
}

/// A client that sends half a request and stalls is cut off after the header read timeout,
/// so slow clients cannot hold connections open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_is_cut_off_after_the_header_read_timeout() {
    let mut bank = Bank::builder().with_config(|c| c.server.header_read_timeout_ms = 300).start().await;
    let mut stream = bank.tls_connect(Some(b"http/1.1")).await.unwrap();
    stream.write_all(b"POST /v1/authorizations HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    stream.flush().await.unwrap();
    let mut buffer = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(3), stream.read_to_end(&mut buffer)).await;
    assert!(closed.is_ok(), "the server kept a stalled connection open past its header read timeout");
    bank.shutdown().await;
}
