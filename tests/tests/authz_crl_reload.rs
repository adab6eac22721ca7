//! CRLs reload without a restart: a gateway certificate revoked while authz runs is refused in
//! the next handshake, a revoked merchant's signature is refused at step 3, a CRL past its
//! nextUpdate (or within the margin) makes /readyz report not ready until fresh CRLs come, a
//! bad CRL file leaves the CRLs in force, and SIGHUP reloads at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use mps_pki::Role;
use mps_tests::{AccountSpec, Bank, Merchant, request};
use time::OffsetDateTime;

const CHECK_MS: u64 = 100;

async fn readyz(bank: &Bank) -> (u16, String) {
    let response = reqwest::get(format!("{}/readyz", bank.admin_url)).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The reload count once no reload has happened for three checks: a reload still running for
/// an earlier change must not pass for the reload of the next one (seen once in CI, on a busy
/// machine: the merchant's revocation seemed loaded and was not).
async fn settled_reloads(bank: &Bank) -> f64 {
    let mut last = bank.metric("mps_authz_crl_reloads_total").await;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(3 * CHECK_MS)).await;
        let now = bank.metric("mps_authz_crl_reloads_total").await;
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("CRL reloads did not settle");
}

/// Waits until `check` holds (the watcher checks every CHECK_MS).
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(CHECK_MS)).await;
    }
    panic!("{what} did not happen within {} ms", 100 * CHECK_MS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocations_and_fresh_crls_take_effect_while_serving() {
    let mut bank = Bank::builder().with_config(|c| c.revocation.check_interval_ms = CHECK_MS).start().await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000061", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000061", &[&account]).await;
    assert_eq!(readyz(&bank).await.0, 200);

    // A second gateway certificate works, then is revoked: its next connection is refused.
    let second = bank.pki.issue("gw-client-2", &request(Role::GatewayClient, "gateway-2"));
    let packet = sim.pay(&account, "C-1", 100, "2468");
    let (body, jws) = bank.merchant.request(&packet, "C-1", 100, 978);
    let answer = bank.post(&bank.client(Some(&second)), body.clone(), Some(&jws)).await.unwrap();
    assert_eq!(answer.code(), "00");
    sim.read_answer(&answer);
    let reloads_before = settled_reloads(&bank).await;
    bank.pki.revoke(&second);
    eventually("the reload after the revocation", || async {
        bank.metric("mps_authz_crl_reloads_total").await > reloads_before
    })
    .await;
    // The revocation rewrites more than one CRL file, and a check may fall between two of them:
    // its reload counts, and the next one (the stamps changed again) takes the revocation. So
    // the refusal is awaited too; a retry of the same body gets the stored answer, never a
    // second booking. Seen failing on a busy CI machine when only the first reload was awaited.
    eventually("the revoked gateway certificate refused in the handshake", || async {
        bank.post(&bank.client(Some(&second)), body.clone(), Some(&jws)).await.is_err()
    })
    .await;

    // A merchant revoked while authz runs: its signatures are refused (401, 63).
    let merchant_leaf = bank.pki.issue("shop-2", &request(Role::Merchant, "shop-2"));
    let merchant = Merchant::from_leaf(mps_tests::MERCHANT_ID, &merchant_leaf);
    let packet = sim.pay(&account, "C-2", 100, "2468");
    let (body, jws) = merchant.request(&packet, "C-2", 100, 978);
    let reloads = settled_reloads(&bank).await;
    bank.pki.revoke(&merchant_leaf);
    eventually("the reload after the merchant's revocation", || async {
        bank.metric("mps_authz_crl_reloads_total").await > reloads
    })
    .await;
    let answer = bank.post(&bank.gateway(), body, Some(&jws)).await.unwrap();
    assert_eq!(answer.status, 401, "{:?}", answer.json);
    assert_eq!(answer.code(), "63");

    // A bad CRL file: the reload fails and the CRLs in force stay; payments go on.
    let gateway = bank.gateway();
    let good = std::fs::read(bank.pki.crls_file()).unwrap();
    let failures = bank.metric("mps_authz_crl_reload_failures_total").await;
    std::fs::write(bank.pki.crls_file(), b"-----BEGIN X509 CRL-----\nnot a CRL\n-----END X509 CRL-----\n").unwrap();
    eventually("the failed reload", || async { bank.metric("mps_authz_crl_reload_failures_total").await > failures })
        .await;
    let (body, jws) = bank.merchant.request(&packet, "C-2", 100, 978);
    let answer = bank.post(&gateway, body, Some(&jws)).await.unwrap();
    assert_eq!(answer.code(), "00", "{:?}", answer.json);
    sim.read_answer(&answer);
    std::fs::write(bank.pki.crls_file(), good).unwrap();

    // CRLs whose nextUpdate has passed: not ready, and the metric shows it.
    let week_and_a_day_ago = OffsetDateTime::now_utc() - time::Duration::days(8);
    bank.pki.publish_crls(week_and_a_day_ago);
    eventually("not ready on expired CRLs", || async { readyz(&bank).await.0 == 503 }).await;
    let (_, text) = readyz(&bank).await;
    assert!(text.contains("crl: not ready: a CRL is past its nextUpdate"), "{text}");
    let now = OffsetDateTime::now_utc().unix_timestamp() as f64;
    assert!(bank.metric("mps_authz_crl_next_update_seconds").await < now);

    // Within the margin (an hour by default): still not ready.
    let almost_a_week_ago = OffsetDateTime::now_utc() - time::Duration::hours(168) + time::Duration::minutes(30);
    bank.pki.publish_crls(almost_a_week_ago);
    eventually("the near-expiry reload", || async { readyz(&bank).await.1.contains("within the margin") }).await;
    assert_eq!(readyz(&bank).await.0, 503);

    // Fresh CRLs: ready again, no restart.
    bank.pki.publish_crls(OffsetDateTime::now_utc());
    eventually("ready on fresh CRLs", || async { readyz(&bank).await.0 == 200 }).await;
    bank.shutdown().await;
}

/// SIGHUP reloads at once, without waiting for the next check (which is set to an hour here).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_the_crls() {
    let mut bank = Bank::builder().with_config(|c| c.revocation.check_interval_ms = 3_600_000).start().await;
    // The watcher's first tick (at start) has passed once the server answers.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = bank.metric("mps_authz_crl_reloads_total").await;
    bank.pki.publish_crls(OffsetDateTime::now_utc());
    // The signal goes to this test process, where the server's handler takes it.
    let status =
        std::process::Command::new("sh").args(["-c", &format!("kill -HUP {}", std::process::id())]).status().unwrap();
    assert!(status.success());
    eventually("the SIGHUP reload", || async { bank.metric("mps_authz_crl_reloads_total").await > before }).await;
    bank.shutdown().await;
}
