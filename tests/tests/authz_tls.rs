//! The gateway-facing listener's mutual TLS: a client without a certificate, with a revoked
//! certificate or with a certificate from another CA is refused in the handshake; the gateway's
//! certificate gets through, also from `curl`, and a malformed body gets a problem+json 400.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::Command;

use mps_tests::Bank;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_valid_gateway_certificate_gets_in() {
    let mut bank = Bank::start().await;
    let body = b"{}".to_vec();

    let answer = bank.post(&bank.gateway(), body.clone(), None).await.unwrap();
    assert_eq!(answer.status, 400, "the gateway gets through to the decision");

    for (name, client) in [
        ("no certificate", bank.client(None)),
        ("revoked certificate", bank.client(Some(&bank.revoked_gateway_leaf))),
        ("certificate of another CA", bank.client(Some(&bank.foreign_gateway_leaf))),
    ] {
        let result = bank.post(&client, body.clone(), None).await;
        assert!(result.is_err(), "a client with {name} must be refused in the handshake, got {result:?}");
    }
    bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_the_gateway_certificate_gets_a_problem_for_a_malformed_body() {
    let mut bank = Bank::start().await;
    let url = format!("{}/v1/authorizations", bank.url);
    let curl = |extra: &[&str]| {
        let mut command = Command::new("curl");
        command
            .args(["--silent", "--show-error", "--cacert"])
            .arg(bank.pki.root_file())
            .args(["-H", "content-type: application/json", "--data", "{\"payer_packet\": \"not base64!\"}"])
            .args(["--write-out", "\n%{http_code} %{content_type}"])
            .args(extra)
            .arg(&url);
        command
    };
    let bank_ref = &bank;
    let output = tokio::task::spawn_blocking({
        let mut command = curl(&[]);
        command.arg("--cert").arg(&bank_ref.gateway_leaf.chain_file).arg("--key").arg(&bank_ref.gateway_leaf.key_file);
        move || command.output().expect("curl must be installed (apt-get install curl)")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    let (body, status_line) = text.rsplit_once('\n').unwrap();
    assert_eq!(status_line, "400 application/problem+json", "{text}");
    let problem: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(problem["status"], 400);
    assert_eq!(problem["response_code"], "30");
    assert!(problem["detail"].as_str().unwrap().len() > 10);

    // Without a client certificate curl fails in the handshake.
    let output = tokio::task::spawn_blocking({
        let mut command = curl(&[]);
        move || command.output().unwrap()
    })
    .await
    .unwrap();
    assert!(!output.status.success(), "curl without a certificate must fail");
    bank.shutdown().await;
}
