//! The operator's console on the admin listener, in headless Chromium against a real server
//! (SoftHSM token, TLS, SQLite): the page loads and refreshes without a console message, and
//! the figures it shows are those of /metrics at the same moment; its recent decisions are
//! bounded and show accounts masked; every console route is read-only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use mps_tests::browser;
use mps_tests::{AccountSpec, Bank};

const ACCOUNT: &str = "4000120000000900";
const MASKED: &str = "400012******0900";

/// The sum of the samples of `/metrics` text whose name and labels start with `selector`
/// (`name{labels` or `name`), as the console prints counts.
fn figure(metrics: &str, selector: &str) -> String {
    let mut sum = 0.0;
    let mut found = false;
    for line in metrics.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let name_matches = series == selector || series.starts_with(&format!("{selector}{{"));
        let labels_match = selector.contains('{') && series.starts_with(selector);
        if name_matches || labels_match {
            sum += value.parse::<f64>().unwrap();
            found = true;
        }
    }
    assert!(found, "/metrics has no {selector}:\n{metrics}");
    format!("{sum}")
}

async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_what_metrics_says_without_console_errors() {
    let mut bank = Bank::start().await;
    let account = bank.create_account(&AccountSpec::debit(ACCOUNT, "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000900", &[&account]).await;
    for (order, password, code) in [("C-1", "2468", "00"), ("C-2", "2468", "00"), ("C-3", "0000", "55")] {
        let answer = bank.authorize(&sim.pay(&account, order, 150, password), order, 150).await;
        assert_eq!(answer.code(), code);
        sim.read_answer(&answer);
    }
    let malformed = bank.post(&bank.gateway(), b"{}".to_vec(), Some("x")).await.unwrap();
    assert_eq!(malformed.status, 400);

    let metrics_url = format!("{}/metrics", bank.admin_url);
    let before = get_text(&metrics_url).await;
    // 7 s of virtual time: the first refresh and at least two more, 2 s apart.
    let page = browser::load(&format!("{}/console", bank.admin_url), Duration::from_secs(7)).await;
    let after = get_text(&metrics_url).await;

    assert!(page.console.is_empty(), "the console page wrote to the browser's console:\n{}", page.console.join("\n"));
    assert_eq!(page.body_attribute("data-state").as_deref(), Some("ok"), "the page did not refresh:\n{}", page.dom);
    let refreshes: u32 = page.body_attribute("data-refreshes").unwrap().parse().unwrap();
    assert!(refreshes >= 2, "the page refreshed {refreshes} times in 7 s, not every 2 s");
    assert_eq!(page.text_of("problem").as_deref(), Some(""));

    for (id, selector) in [
        ("approvals-total", "mps_authz_responses_total{code=\"00\""),
        ("code-00", "mps_authz_responses_total{code=\"00\""),
        ("code-55", "mps_authz_responses_total{code=\"55\""),
        ("code-30", "mps_authz_responses_total{code=\"30\""),
        ("requests-total", "mps_authz_http_responses_total"),
        ("status-200", "mps_authz_http_responses_total{status=\"200\""),
        ("status-400", "mps_authz_http_responses_total{status=\"400\""),
        ("latency-count", "mps_authz_request_duration_seconds_count"),
        ("in-flight", "mps_authz_in_flight"),
        ("hsm-pool-size", "mps_authz_hsm_pool_size"),
        ("hsm-0-operations", "mps_authz_hsm_member_operations_total{hsm=\"0\""),
        ("ledger-batches", "mps_authz_ledger_commit_batch_commands_count"),
        ("ledger-commands", "mps_authz_ledger_commit_batch_commands_sum"),
        ("crl-reloads", "mps_authz_crl_reloads_total"),
    ] {
        // Nothing moved these while the page was open: what it showed is /metrics of that moment.
        let now = figure(&after, selector);
        assert_eq!(figure(&before, selector), now, "{selector} moved while the page was open");
        let shown = page.text_of(id).unwrap_or_else(|| panic!("the page has no #{id}:\n{}", page.dom));
        assert_eq!(shown, now, "#{id} disagrees with /metrics {selector}");
    }
    assert_eq!(figure(&after, "mps_authz_responses_total{code=\"00\""), "2");
    assert_eq!(figure(&after, "mps_authz_hsm_pool_ready"), "1");
    assert_eq!(page.text_of("hsm-pool-ready").as_deref(), Some("ready"));
    assert_eq!(page.text_of("hsm-0-state").as_deref(), Some("up"));
    assert!(page.text_of("latency-p99").unwrap().ends_with(" ms"), "p99 is not shown in ms");
    assert!(page.text_of("crl-time-left").unwrap().contains(" h "), "the CRL's time left is not shown");

    // The most recent decisions: the account masked, never in full.
    assert!(page.dom.contains(MASKED), "the recent decisions do not show the masked account:\n{}", page.dom);
    assert!(!page.dom.contains(ACCOUNT), "the page shows a full account number");
    bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_decisions_are_bounded_masked_and_read_only() {
    let mut bank = Bank::builder().with_config(|config| config.admin.recent_decisions_max = 3).start().await;
    let account = bank.create_account(&AccountSpec::debit(ACCOUNT, "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000901", &[&account]).await;
    for _ in 0..4 {
        let malformed = bank.post(&bank.gateway(), b"{}".to_vec(), Some("x")).await.unwrap();
        assert_eq!(malformed.status, 400);
    }
    let packet = sim.pay(&account, "R-1", 1250, "2468");
    assert_eq!(bank.authorize(&packet, "R-1", 1250).await.code(), "00");

    let url = format!("{}/console/decisions", bank.admin_url);
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let text = response.text().await.unwrap();
    assert!(!text.contains(ACCOUNT), "a full account number reached the recent decisions: {text}");
    let decisions: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(decisions.len(), 3, "admin.recent_decisions_max = 3 does not bound the list: {text}");
    let newest = &decisions[0];
    assert_eq!(newest["response_code"], "00");
    assert_eq!(newest["account"], MASKED);
    assert_eq!(newest["amount"], "12.50 EUR");
    assert_eq!(newest["merchant_id"], mps_tests::MERCHANT_ID);
    assert_eq!(newest["sim_id"], "8949012300000000901");
    assert_eq!(newest["operation"], "authorization");
    assert!(newest["latency_ms"].as_f64().unwrap() > 0.0);
    let mut keys: Vec<&String> = newest.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["account", "amount", "at", "latency_ms", "merchant_id", "operation", "response_code", "sim_id", "status"],
        "a decision summary carries only these fields (no packet, password, key or signature)"
    );
    assert_eq!((decisions[1]["status"].as_u64(), decisions[1]["response_code"].as_str()), (Some(400), Some("30")));

    let page = reqwest::get(format!("{}/console", bank.admin_url)).await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.contains("script-src 'self'") && policy.contains("connect-src 'self'"), "{policy}");
    assert!(page.text().await.unwrap().contains("/console/console.js"));

    // Read-only: anything but GET (and HEAD) is 405, on the console and beside it.
    let client = reqwest::Client::new();
    for path in ["/console", "/console/decisions", "/console/console.js", "/metrics"] {
        for method in [reqwest::Method::POST, reqwest::Method::PUT, reqwest::Method::DELETE, reqwest::Method::PATCH] {
            let response = client.request(method.clone(), format!("{}{path}", bank.admin_url)).send().await.unwrap();
            assert_eq!(response.status(), 405, "{method} {path}");
        }
    }
    bank.shutdown().await;
}
