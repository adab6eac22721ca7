//! An issuer on two HSMs (SoftHSM loaded twice, from two copies of its file, on one token):
//! authorizations are spread over both and counted per HSM on /metrics; when one HSM fails
//! the server stays ready and keeps approving on the other, answers at worst 503 for the
//! call that found it gone, and takes it back once it is reconnected.
//! Alone in its binary: it finalises a module copy under the pool.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use mps_hsm::testing::{TestToken, finalize_module_behind_the_pool};
use mps_tests::{AccountSpec, Bank};

async fn metrics(bank: &Bank) -> String {
    reqwest::get(format!("{}/metrics", bank.admin_url)).await.unwrap().text().await.unwrap()
}

/// The value of the sample that starts with `name`.
fn sample(text: &str, name: &str) -> f64 {
    let line = text.lines().find(|line| line.starts_with(name)).unwrap_or_else(|| panic!("no {name}:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hsms_share_the_work_and_one_can_fail() {
    let pool = TestToken::shared().unwrap().pool_config(2).unwrap();
    let failing = pool.members()[1].clone();
    let mut bank = Bank::builder()
        .with_pool(move |c| {
            c.additional = pool.additional;
            c.reconnect_backoff_min_ms = 300;
            c.reconnect_backoff_max_ms = 300;
            c.kek_refresh_ms = 600_000;
        })
        .start()
        .await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000400", "2468", 1_000_000)).await;
    let mut sim = bank.new_sim("8949012300000000400", &[&account]).await;
    for order in 0..10 {
        let order = format!("P-{order}");
        let answer = bank.authorize(&sim.pay(&account, &order, 100, "2468"), &order, 100).await;
        assert_eq!(answer.code(), "00");
        sim.read_answer(&answer);
    }
    let text = metrics(&bank).await;
    assert_eq!(sample(&text, "mps_authz_hsm_member_up{hsm=\"0\"}"), 1.0);
    assert_eq!(sample(&text, "mps_authz_hsm_member_up{hsm=\"1\"}"), 1.0);
    assert!(sample(&text, "mps_authz_hsm_member_operations_total{hsm=\"0\"}") > 0.0, "{text}");
    assert!(sample(&text, "mps_authz_hsm_member_operations_total{hsm=\"1\"}") > 0.0, "{text}");
    assert!(!text.contains("hsm=\"2\""), "{text}");

    // HSM 1 fails (between requests, so no call is inside it).
    finalize_module_behind_the_pool(&failing).unwrap();
    let mut unavailable = 0;
    for order in 10..30 {
        let order = format!("P-{order}");
        let packet = sim.pay(&account, &order, 100, "2468");
        let mut answer = bank.authorize(&packet, &order, 100).await;
        if answer.status == 503 {
            // The call that found HSM 1 gone; the same packet is approved on HSM 0.
            unavailable += 1;
            assert_eq!(answer.json["response_code"], "91");
            answer = bank.authorize(&packet, &order, 100).await;
        }
        assert_eq!(answer.code(), "00", "{:?}", answer.json);
        sim.read_answer(&answer);
        let ready = reqwest::get(format!("{}/readyz", bank.admin_url)).await.unwrap();
        assert_eq!(ready.status(), 200, "one HSM up is ready");
    }
    assert!(unavailable <= 1, "{unavailable} answers 503");
    assert_eq!(bank.available(&account).await, 1_000_000 - 30 * 100);

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics(&bank).await;
        if sample(&text, "mps_authz_hsm_member_up{hsm=\"1\"}") == 1.0 {
            assert!(sample(&text, "mps_authz_hsm_member_reconnects_total{hsm=\"1\"}") >= 1.0, "{text}");
            assert_eq!(sample(&text, "mps_authz_hsm_member_errors_total{hsm=\"0\"}"), 0.0, "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "HSM 1 did not come back:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bank.shutdown().await;
}
