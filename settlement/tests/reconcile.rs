//! `settlement reconcile` (the binary) against real signed clearing files and a merchant export
//! in the merchant server's shape: agreement exits 0; a missing order, an extra order or a
//! changed amount is listed and exits 1; an unreadable export exits 2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use mps_settlement::clearing::{Entry, EntryKind};
use serde_json::{Value, json};

struct Setup {
    scheme: Scheme,
    written: Written,
}

fn setup() -> Setup {
    let mut scheme = Scheme::new();
    let bank_a = scheme.bank(ISSUER_A);
    let bank_b = scheme.bank(ISSUER_B);
    let dir = scheme.subdir("files");
    let written = write_all(&scheme, &dir, &bank_a, &bank_b);
    Setup { scheme, written }
}

/// The merchant server's `GET /v1/orders?day=D` for `SHOP` on `DAYS[day]`: its paid orders are
/// the approvals of that day that were not reversed (a reversed order leaves the export).
fn export(setup: &Setup, day: usize) -> Value {
    let reversed: Vec<&str> = setup
        .written
        .files
        .values()
        .flat_map(|file| &file.entries)
        .filter_map(|entry| entry.original_txn_id.as_deref())
        .collect();
    let orders: Vec<Value> = setup
        .written
        .files
        .values()
        .flat_map(|file| file.entries.iter().map(move |entry| (file, entry)))
        .filter(|(_, entry)| {
            entry.kind == EntryKind::Approval
                && entry.merchant_id == SHOP
                && entry.time.starts_with(DAYS[day])
                && !reversed.contains(&entry.txn_id.as_str())
        })
        .map(|(file, entry)| order(&file.issuer_iin, entry, DAYS[day]))
        .collect();
    json!({ "day": DAYS[day], "orders": orders, "totals": { "978": 0 } })
}

fn order(issuer: &str, entry: &Entry, day: &str) -> Value {
    json!({
        "order_no": entry.order_no,
        "amount": entry.amount,
        "currency": entry.currency,
        "amount_display": "ignored",
        "status": "paid",
        "issuer_iin": issuer,
        "response_code": "00",
        "auth_code": entry.auth_code,
        "txn_id": entry.txn_id,
        "reason": null,
        "reversal_code": null,
        "paid_day": day,
        "bank_answer": "{}",
        "bank_signature": "x..y",
        "created_at": entry.time,
        "updated_at": entry.time,
    })
}

fn reconcile(setup: &Setup, export: &Value, out: Option<&Path>) -> Output {
    let path = setup.scheme.dir.path().join("export.json");
    std::fs::write(&path, serde_json::to_vec(export).unwrap()).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_settlement"));
    command.arg("reconcile").arg("--merchant-export").arg(&path).arg("--merchant-id").arg(SHOP);
    for file in setup.written.all() {
        command.arg("--file").arg(file);
    }
    if let Some(out) = out {
        command.arg("--out").arg(out);
    }
    command.env_remove("MPS_SETTLEMENT_CONFIG").output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn an_export_that_matches_the_files_agrees() {
    let setup = setup();
    let export = export(&setup, 1);
    assert_eq!(export["orders"].as_array().unwrap().len(), 6);
    let output = reconcile(&setup, &export, None);
    assert_eq!(output.status.code(), Some(0), "{}{}", stdout(&output), String::from_utf8_lossy(&output.stderr));
    assert!(stdout(&output).contains("agree"), "{}", stdout(&output));
}

#[test]
fn a_reversed_order_is_in_neither_side() {
    let setup = setup();
    // Day 1's first approval of each issuer was reversed on day 3: the export leaves it out,
    // and the reversal entry of day 3's file cancels the approval of day 1's.
    let export = export(&setup, 0);
    assert_eq!(export["orders"].as_array().unwrap().len(), 4);
    let output = reconcile(&setup, &export, None);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
}

#[test]
fn a_missing_order_or_a_changed_amount_is_listed_and_exits_1() {
    let setup = setup();
    let mut export = export(&setup, 1);
    let orders = export["orders"].as_array_mut().unwrap();
    let dropped = orders.remove(0);
    orders[0]["amount"] = json!(orders[0]["amount"].as_u64().unwrap() + 1);
    let changed_order = orders[0]["order_no"].as_str().unwrap().to_owned();
    orders.push(json!({ "order_no": "O-EXTRA", "amount": 10, "currency": 978, "status": "paid",
                        "auth_code": "999999", "txn_id": "ffffffffffffffffffffffffffffffff" }));
    let out = setup.scheme.dir.path().join("report.json");
    let output = reconcile(&setup, &export, Some(&out));
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let table = stdout(&output);
    let dropped_order = dropped["order_no"].as_str().unwrap();
    assert!(table.contains("missing in export") && table.contains(dropped_order), "{table}");
    assert!(table.contains("missing in clearing") && table.contains("O-EXTRA"), "{table}");
    assert!(table.contains("amount") && table.contains(&changed_order), "{table}");

    let report: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(report["format"], "mps-reconcile/1");
    assert_eq!(report["missing_in_export"].as_array().unwrap().len(), 1);
    assert_eq!(report["missing_in_export"][0]["txn_id"], dropped["txn_id"]);
    assert_eq!(report["missing_in_clearing"][0]["order_no"], "O-EXTRA");
    let differences = report["differences"].as_array().unwrap();
    assert_eq!(differences.len(), 1);
    assert_eq!(differences[0]["field"], "amount");
    assert_eq!(differences[0]["order_no"], changed_order.as_str());
}

#[test]
fn an_unreadable_export_exits_2() {
    let setup = setup();
    let output = reconcile(&setup, &json!({ "day": DAYS[1] }), None);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("merchant export"));
    let missing: PathBuf = setup.scheme.dir.path().join("no-such-file.json");
    let output = Command::new(env!("CARGO_BIN_EXE_settlement"))
        .args(["reconcile", "--merchant-id", SHOP, "--merchant-export"])
        .arg(&missing)
        .arg("--file")
        .arg(&setup.written.all()[0])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}
