//! The `loadtest` binary against two authz instances on one ledger, as an operator runs it
//! with `--url` given twice: two real authz servers in-process (`mps_tests::Bank` and a second
//! server over the bank's own HSM pool and ledger, each with its own listener, admin port and
//! metrics). Each server's own count of HTTP 200 answers must equal what the harness says it
//! sent there, so a spread that silently sent everything to one URL fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use mps_authz::app::{self, Parts, RunningServer};
use mps_authz::ops::metrics::Metrics;
use mps_hsm::testing::TestToken;
use mps_tests::Bank;

mod common;

/// A second authz server beside `bank`'s, on the same HSM pool and the same ledger: another
/// instance of the same bank, as a second process on a shared database would be.
async fn second_instance(bank: &Bank) -> RunningServer {
    let metrics = Arc::new(Metrics::new().unwrap());
    metrics.register_hsm(bank.hsm.clone()).unwrap();
    let parts = Parts {
        hsm: bank.hsm.clone(),
        ledger: bank.ledger.clone(),
        metrics,
        clock: mps_authz::decision::clock::Clock::system(),
    };
    // The test configuration listens on port 0: this server gets ports of its own.
    app::start(&bank.config, parts).await.unwrap()
}

/// `mps_authz_http_responses_total{status="200"}` from an admin listener's /metrics.
async fn answers_200(admin_url: &str) -> u64 {
    let text = reqwest::get(format!("{admin_url}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("mps_authz_http_responses_total{status=\"200\"} "))
        .map_or(0, |value| value.trim().parse::<f64>().unwrap() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_urls_share_the_connections_and_each_server_answers_its_share() {
    let token = TestToken::shared().unwrap();
    let files = Bank::builder().files().await;
    let dir = files.dir.path().to_owned();
    let (authz_config, transport_key_file) =
        common::write_harness_files(&dir, "authz.toml", &files.config_text, &token.transport_key_label);
    let mut bank = Bank::start_from(files).await;
    let second = second_instance(&bank).await;
    let second_url = format!("https://127.0.0.1:{}", second.address.port());
    let second_admin_url = format!("http://{}", second.admin_address);
    let json = dir.join("report.json");

    let mut args =
        common::bank_args(&authz_config, &transport_key_file, 8, &bank.url, &bank.pki, &bank.gateway_leaf, &dir);
    args.extend::<[String; _]>([
        "--url".into(),
        second_url.clone(),
        "--connections".into(),
        "4".into(),
        "--count".into(),
        "80".into(),
        "--duration".into(),
        "60".into(),
        // No warm-up: every request the servers answered is one of the report's.
        "--warmup".into(),
        "0".into(),
        "--mix".into(),
        "retransmit=10,bad-mac=10".into(),
        "--json".into(),
        json.display().to_string(),
        "--quiet".into(),
    ]);
    let stdout = common::run_loadtest(args).await;

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["completed"], 80);
    assert_eq!(report["errors_total"], 0, "{report:#}");
    let endpoints = report["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2, "one count per URL, in the order given: {report:#}");
    assert_eq!(endpoints[0]["url"], format!("{}/v1/authorizations", bank.url));
    assert_eq!(endpoints[1]["url"], format!("{second_url}/v1/authorizations"));
    let completed: Vec<u64> = endpoints.iter().map(|e| e["completed"].as_u64().unwrap()).collect();
    assert_eq!(completed.iter().sum::<u64>(), 80);
    assert!(completed.iter().all(|&n| n > 0), "both URLs got requests: {completed:?}");
    for (index, url) in [&bank.url, &second_url].into_iter().enumerate() {
        assert!(stdout.contains(&format!("target {}", index + 1)) && stdout.contains(url.as_str()), "{stdout}");
    }
    // Each server counted exactly the answers the harness says came from it.
    assert_eq!(answers_200(&bank.admin_url).await, completed[0], "the first server's own count");
    assert_eq!(answers_200(&second_admin_url).await, completed[1], "the second server's own count");

    second.shutdown().await;
    bank.shutdown().await;
}
