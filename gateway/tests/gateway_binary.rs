//! The `gateway` binary: `check-config` accepts the example configuration and refuses an unknown
//! override by name; `serve` forwards a payment to a real bank, writes JSON logs without payer
//! packets or signatures, and exits cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Harness;
use mps_protocol::Currency;
use mps_tests::AccountSpec;

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway");

fn example() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../config/gateway.example.toml").to_owned()
}

#[test]
fn check_config_reads_the_example_and_names_a_bad_override() {
    let output = Command::new(GATEWAY).args(["--config", &example(), "check-config"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("configuration OK"));

    let output = Command::new(GATEWAY)
        .args(["check-config"])
        .env("MPS_GATEWAY_CONFIG", example())
        .env("MPS_GATEWAY__UPSTREAM__HEALTH_INTERVAL", "5")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MPS_GATEWAY__UPSTREAM__HEALTH_INTERVAL"), "{stderr}");

    let output =
        Command::new(GATEWAY).args(["--config", "/nonexistent/gateway.toml", "check-config"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("MPS_GATEWAY_CONFIG"));

    let output = Command::new(GATEWAY).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("serve") && help.contains("check-config"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_forwards_logs_no_secrets_and_stops_on_sigterm() {
    let mut harness = Harness::new().await;
    let account = harness.bank.create_account(&AccountSpec::debit("4000120000000201", "2468", 10_000)).await;
    let mut sim = harness.bank.new_sim("8949012300000000201", &[&account]).await;
    let config_file = harness.bank.dir.path().join("gateway.toml");
    std::fs::write(&config_file, harness.config_text(&[harness.bank_instance()])).unwrap();

    let mut child = Command::new(GATEWAY)
        .args(["--config", config_file.to_str().unwrap(), "serve"])
        .env("MPS_GATEWAY__LOG__LEVEL", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let address = loop {
        let line = received.recv_timeout(Duration::from_secs(30)).expect("the gateway logs that it serves");
        let json: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
        log.push(line);
        if json["message"] == "gateway serving" {
            break json["address"].as_str().unwrap().to_owned();
        }
    };

    let packet = sim.pay(&account, "BIN-1", 300, "2468");
    let (body, jws) = harness.bank.merchant.request(&packet, "BIN-1", 300, Currency::EUR.code());
    let answer = harness
        .merchant()
        .post(format!("https://{address}/v1/authorizations"))
        .header("content-type", "application/json")
        .header("x-jws-signature", &jws)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let answer_jws = answer.headers()["x-jws-signature"].to_str().unwrap().to_owned();
    assert_eq!(harness.bank.available(&account).await, 9_700);

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "a clean exit after SIGTERM: {status:?}");
    log.extend(received.try_iter());
    let log = log.join("\n");
    assert!(log.contains("\"issuer answered\"") && log.contains("gateway stopped"), "{log}");
    let packet_base64 = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["payer_packet"].to_string();
    for secret in [packet_base64.trim_matches('"'), jws.as_str(), answer_jws.as_str()] {
        assert!(!log.contains(secret), "a packet or a signature was logged");
    }
    harness.bank.shutdown().await;
}
