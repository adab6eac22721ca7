//! The `merchant` binary's order commands against a real order book file: create, show, the
//! day's export, and errors that say what to do next.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::{Command, Output};

fn merchant(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_merchant"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("MPS_MERCHANT_CONFIG")
        .output()
        .unwrap()
}

fn config_file(dir: &std::path::Path) -> std::path::PathBuf {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/merchant.example.toml")).unwrap();
    let text = example.replace("path = \"merchant.db\"", &format!("path = \"{}\"", dir.join("orders.db").display()));
    let path = dir.join("merchant.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn orders_are_created_shown_and_exported_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());

    let created =
        merchant(&config, &["order", "create", "--order-no", "ORD-9", "--amount", "12.5", "--currency", "EUR"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let order: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(order["amount"], 1250);
    assert_eq!(order["currency"], 978);
    assert_eq!(order["status"], "open");

    let shown = merchant(&config, &["order", "show", "--order-no", "ORD-9"]);
    assert!(shown.status.success());
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&shown.stdout).unwrap()["order_no"], "ORD-9");

    let export = merchant(&config, &["orders", "export", "--day", "2026-11-30"]);
    assert!(export.status.success());
    let export: serde_json::Value = serde_json::from_slice(&export.stdout).unwrap();
    assert_eq!(export["orders"].as_array().unwrap().len(), 0, "an open order is not in the export");

    let again = merchant(&config, &["order", "create", "--order-no", "ORD-9", "--amount", "1", "--currency", "EUR"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let rounded =
        merchant(&config, &["order", "create", "--order-no", "ORD-10", "--amount", "12.505", "--currency", "EUR"]);
    assert!(String::from_utf8_lossy(&rounded.stderr).contains("decimal places"));
    let missing = merchant(&config, &["order", "show", "--order-no", "NOPE"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("merchant order create"));
    let no_file = merchant(&dir.path().join("absent.toml"), &["order", "show", "--order-no", "X"]);
    assert!(String::from_utf8_lossy(&no_file.stderr).contains("MPS_MERCHANT_CONFIG"));
}

#[test]
fn help_names_every_command() {
    let output = Command::new(env!("CARGO_BIN_EXE_merchant")).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    for command in ["serve", "check-config", "order", "orders"] {
        assert!(text.contains(command), "{text}");
    }
}
