//! Fail closed: with the HSM gone (its token directory taken away and the module finalised
//! under the pool), authorizations answer 503 and /readyz says not ready; nothing is approved
//! and no money moves. When the token comes back the server recovers without a restart.
//! Alone in its binary: it finalises the process's PKCS#11 module.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use mps_hsm::testing::{TestToken, finalize_module_behind_the_pool};
use mps_tests::{AccountSpec, Bank};

async fn ready(bank: &Bank) -> (u16, String) {
    let response = reqwest::get(format!("{}/readyz", bank.admin_url)).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hsm_outage_answers_503_and_approves_nothing() {
    let mut bank = Bank::start().await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000200", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000200", &[&account]).await;
    assert_eq!(ready(&bank).await.0, 200);
    let packet = sim.pay(&account, "H-1", 1_000, "2468");
    let answer = bank.authorize(&packet, "H-1", 1_000).await;
    assert_eq!(answer.code(), "00");
    sim.read_answer(&answer);

    let token = TestToken::shared().unwrap();
    let tokens = token.dir.join("tokens");
    let away = token.dir.join("tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    finalize_module_behind_the_pool(&bank.config.hsm).unwrap();

    let packet = sim.pay(&account, "H-2", 1_000, "2468");
    for _ in 0..3 {
        let answer = bank.authorize(&packet, "H-2", 1_000).await;
        assert_eq!(answer.status, 503, "{:?}", answer.json);
        assert_eq!(answer.content_type.as_deref(), Some("application/problem+json"));
        assert_eq!(answer.json["response_code"], "91");
        assert!(answer.jws.is_none());
        let (status, text) = ready(&bank).await;
        assert_eq!(status, 503);
        assert!(text.contains("hsm: not ready"), "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(bank.available(&account).await, 9_000, "nothing moved during the outage");

    std::fs::rename(&away, &tokens).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready(&bank).await.0 != 200 {
        assert!(Instant::now() < deadline, "the server did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = bank.authorize(&packet, "H-2", 1_000).await;
    assert_eq!(answer.code(), "00", "the same packet is approved once the HSM is back");
    sim.read_answer(&answer);
    assert_eq!(bank.available(&account).await, 8_000);
    bank.shutdown().await;
}
