//! The logs of a whole run (JSON, debug level) hold no test password, no full account number
//! and no key bytes. The run covers approvals, declines (wrong password, unknown account,
//! insufficient funds), a retransmission, a flipped bit and registration.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use mps_tests::logs::Capture;
use mps_tests::{AccountSpec, Bank};

const PASSWORD: &str = "Pw!7319x";
const WRONG_PASSWORD: &str = "Zq#5820y";
const ACCOUNT: &str = "4000125555666677";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_hold_no_password_no_account_number_and_no_key() {
    let capture = Capture::default();
    mps_authz::ops::logging::init("debug", "json", capture.clone(), false).unwrap();

    let mut bank = Bank::start().await;
    let account = bank.create_account(&AccountSpec::debit(ACCOUNT, PASSWORD, 5_000)).await;
    let mut sim = bank.new_sim("8949012300000007777", &[&account]).await;
    let profile_file = bank.dir.path().join("sim-profile.json");
    let mut chain_keys = std::collections::BTreeSet::new();
    let mut remember_chain_key = |sim: &mps_tests::TestSim| {
        sim.profile.save(&profile_file).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&profile_file).unwrap()).unwrap();
        collect_chain_keys(&json, &mut chain_keys);
    };
    remember_chain_key(&sim);
    let packet = sim.pay(&account, "LOG-1", 1_000, PASSWORD);
    let answer = bank.authorize(&packet, "LOG-1", 1_000).await;
    assert_eq!(answer.code(), "00");
    assert_eq!(bank.authorize(&packet, "LOG-1", 1_000).await.body, answer.body);
    sim.read_answer(&answer);
    remember_chain_key(&sim);
    let packet = sim.pay(&account, "LOG-2", 1_000, WRONG_PASSWORD);
    let answer = bank.authorize(&packet, "LOG-2", 1_000).await;
    assert_eq!(answer.code(), "55");
    sim.read_answer(&answer);
    remember_chain_key(&sim);
    let packet = sim.pay(&account, "LOG-3", 9_000, PASSWORD);
    let mut flipped = packet.clone();
    flipped[100] ^= 0x80;
    assert_eq!(bank.authorize(&flipped, "LOG-3", 9_000).await.code(), "63");
    let answer = bank.authorize(&packet, "LOG-3", 9_000).await;
    assert_eq!(answer.code(), "51");
    bank.shutdown().await;

    let logs = capture.text();
    assert!(logs.lines().count() > 10, "the run must have logged something: {logs}");
    assert!(logs.lines().all(|line| serde_json::from_str::<serde_json::Value>(line).is_ok()), "every line is JSON");
    assert!(logs.contains("400012******6677"), "accounts appear masked");
    for secret in [PASSWORD, WRONG_PASSWORD, ACCOUNT, mps_hsm::testing::USER_PIN, mps_hsm::testing::SO_PIN] {
        assert!(!logs.contains(secret), "the logs contain a secret: {secret}");
    }
    let transport_key_hex = hex::encode(mps_tests::transport_key().expose());
    assert!(!logs.to_lowercase().contains(&transport_key_hex));
    // Every chain key the SIM held during the run (the bank's side held the same keys only
    // inside the HSM) must be absent, in hex and in base64.
    assert!(chain_keys.len() >= 3);
    for key in &chain_keys {
        let bytes = hex::decode(key).unwrap();
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes);
        assert!(!logs.to_lowercase().contains(key), "a chain key appears in the logs");
        assert!(!logs.contains(&b64), "a chain key appears in the logs (base64)");
    }
    // Our own crates log nothing that looks like a 32-byte value.
    for line in logs.lines().filter(|line| line.contains("\"target\":\"mps_")) {
        let longest_hex_run = line.split(|c: char| !c.is_ascii_hexdigit()).map(str::len).max().unwrap_or(0);
        assert!(longest_hex_run < 64, "a 32-byte hex value appears in our logs: {line}");
    }
}

fn collect_chain_keys(value: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (name, field) in map {
                match field.as_str() {
                    Some(text) if name == "chain_key" => {
                        out.insert(text.to_lowercase());
                    }
                    _ => collect_chain_keys(field, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect_chain_keys(item, out)),
        _ => {}
    }
}
