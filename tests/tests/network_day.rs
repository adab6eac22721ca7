//! The whole network as separate processes, as the README's demo runs it: two authorization
//! servers (two banks with their own SoftHSM tokens and IINs), the gateway, three merchant
//! servers and five payers' `sim`, through a scripted day. Every outcome of the day, the
//! balances after it, the lost answer's resend booked once and the timed-out payment's
//! reversal are checked in the demo's table. Then the end of the day (docs/CLEARING.md): both
//! banks' clearing files verify, the net positions are the table's approvals and sum to zero,
//! the settlement leaves no payable, every merchant's export agrees with the files, and a
//! changed export does not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// (order, code, balance after, what happened): the rows the scripted day must produce.
const EXPECTED: &[(&str, &str, &str, &str)] = &[
    ("C-0001", "00 approved", "246.20", "paid"),
    ("B-0001", "00 approved", "95.10", "paid: the same phone, its other bank"),
    ("C-0002", "00 approved", "115.80", "paid"),
    ("T-0001", "55 wrong password", "250.00", "wrong password, 1st try"),
    ("T-0001", "55 wrong password", "250.00", "wrong password, 2nd try"),
    ("T-0001", "75 password tries exceeded", "250.00", "3rd wrong password: payments locked"),
    ("T-0001", "75 password tries exceeded", "250.00", "right password, but locked"),
    ("B-0002", "51 insufficient funds", "40.00", "insufficient funds"),
    ("C-0002", "94 duplicate order", "115.80", "duplicate order: declined by the bank, nothing moved"),
    ("C-0002", "00 approved", "250.00", "duplicate order, other bank: approved, reversed by the merchant"),
    ("T-0002", "00 approved", "238.00", "answer lost on the way to the phone"),
    ("T-0002", "00 approved", "238.00", "resend: the stored answer, booked once"),
    ("T-0003", "91 no answer in time", "120.00", "merchant timeout: payment failed, reversal queued"),
    ("T-0003", "25 nothing to reverse", "120.00", "reversal: the bank never booked it"),
    ("T-0003", "00 approved", "90.00", "resend after the reversal: paid once"),
    ("C-0003", "00 approved", "247.50", "paid"),
];

/// Each merchant's bank (acquirer), as scripts/demo configures them.
const ACQUIRER_OF: &[(&str, &str)] =
    &[("Corner Coffee", "400012"), ("Page One Books", "510050"), ("City Taxi", "510050")];
const BANKS: &[(&str, &str)] = &[("A", "400012"), ("B", "510050")];
/// EUR, the day's only currency.
const EUR: i64 = 978;

#[test]
fn the_demo_day_runs_through_every_party_with_the_expected_outcomes() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    // The demo runs the binaries of this test's own target directory (also when cargo was given
    // --target-dir rather than CARGO_TARGET_DIR), as the workspace's test run built them, where
    // the checks of the day's end below find `authz` and `settlement` too. Its own `cargo build`
    // would resolve other features and compile much of the tree a second time.
    mps_tests::process::build_binary("authz");
    let output = Command::new(repo.join("scripts/demo"))
        .env("MPS_DEMO_DIR", dir.path().join("demo"))
        .env("CARGO_TARGET_DIR", mps_tests::process::target_dir())
        .env("MPS_DEMO_BUILD", "0")
        // Steps 3 to 6 take about 10 s on two busy cores, and CI's may be busier than the
        // demo's default day of 18 s allows for; a longer day costs only the wait for its cut-off.
        .env("MPS_DEMO_DAY_SECONDS", "30")
        .env_remove("MPS_HSM_PIN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    // The table: from its header line to the first blank line.
    let rows: Vec<&str> = stdout
        .lines()
        .skip_while(|line| !(line.starts_with("payer") && line.contains("balance after")))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(rows.len(), EXPECTED.len(), "the table:\n{stdout}");
    for (row, (order, code, balance, what)) in rows.iter().zip(EXPECTED) {
        for part in [order, code, balance, what] {
            assert!(row.contains(part), "expected {part:?} in the row of {order}: {row}");
        }
    }
    the_day_is_cleared_and_settled(&dir.path().join("demo"), &stdout, &rows);
    // The demo stops everything it started: nothing of it is left running.
    let pids = std::fs::read_to_string(dir.path().join("demo/pids")).unwrap_or_default();
    for line in pids.lines() {
        let pid = line.split_whitespace().nth(1).unwrap_or("");
        assert!(!PathBuf::from(format!("/proc/{pid}/cmdline")).exists() || pid.is_empty(), "{line} still runs");
    }
}

/// The end of the day, from the files the demo left: clearing files, positions, reconcile
/// reports, and the banks' ledgers read through `authz`.
fn the_day_is_cleared_and_settled(demo: &Path, stdout: &str, rows: &[&str]) {
    let clearing = demo.join("clearing");
    for (letter, iin) in BANKS {
        let verified = authz(demo, letter, &["clearing", "verify", "--dir", clearing.to_str().unwrap()]);
        assert!(
            String::from_utf8_lossy(&verified.stdout)
                .contains("1 file(s): signatures, bytes and the chain of days verified"),
            "bank {iin}: {}",
            String::from_utf8_lossy(&verified.stdout)
        );
        // Settled: nothing owed to any acquirer any more.
        let payables = String::from_utf8_lossy(&authz(demo, letter, &["clearing", "payables"]).stdout).into_owned();
        let lines: Vec<&str> = payables.lines().filter(|line| line.starts_with("  to ")).collect();
        assert_eq!(lines.len(), 2, "bank {iin} owes both banks' merchants for the day:\n{payables}");
        assert!(lines.iter().all(|line| line.ends_with(" 0.00 EUR")), "bank {iin}:\n{payables}");
        assert!(payables.contains("2 settlement payable(s), 0 not settled"), "bank {iin}:\n{payables}");
    }

    // The positions: what the table's approvals make, by issuer and acquirer, and per bank.
    let positions: serde_json::Value =
        serde_json::from_slice(&std::fs::read(demo.join("settlement/positions.json")).unwrap()).unwrap();
    let mut bilateral = BTreeMap::new();
    for row in positions["bilateral"].as_array().unwrap() {
        assert_eq!(row["currency"], EUR, "{row}");
        let key = (row["issuer_iin"].as_str().unwrap().to_owned(), row["acquirer_iin"].as_str().unwrap().to_owned());
        bilateral.insert(key, row["amount"].as_i64().unwrap());
    }
    let mut net = BTreeMap::new();
    for row in positions["net"].as_array().unwrap() {
        assert_eq!(row["currency"], EUR, "{row}");
        net.insert(row["bank_iin"].as_str().unwrap().to_owned(), row["amount"].as_i64().unwrap());
    }
    assert_eq!(net.values().sum::<i64>(), 0, "net positions sum to zero: {net:?}");
    let expected = approvals_of_the_table(rows);
    assert_eq!(bilateral, expected, "positions.json against the table's approvals");
    let mut expected_net: BTreeMap<String, i64> = BTreeMap::new();
    for ((issuer, acquirer), amount) in &expected {
        *expected_net.entry(issuer.clone()).or_default() -= amount;
        *expected_net.entry(acquirer.clone()).or_default() += amount;
    }
    net.retain(|_, amount| *amount != 0);
    expected_net.retain(|_, amount| *amount != 0);
    assert_eq!(net, expected_net);
    assert!(stdout.contains("net position of North Bank"), "{stdout}");

    // Reconcile: every merchant's export agrees with the files.
    for merchant in ["coffee", "books", "taxi"] {
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(demo.join(format!("settlement/reconcile-{merchant}.json"))).unwrap())
                .unwrap();
        for list in ["missing_in_clearing", "missing_in_export", "differences"] {
            assert_eq!(report[list], serde_json::json!([]), "{merchant}: {report:#}");
        }
        assert_eq!(report["orders"], report["approvals"], "{merchant}: {report:#}");
    }
    assert_eq!(stdout.matches("in the clearing files: they agree").count(), 3, "{stdout}");

    // A changed export does not: one amount off by a cent, one order left out.
    let export_path = demo.join("settlement/orders-coffee.json");
    let mut export: serde_json::Value = serde_json::from_slice(&std::fs::read(&export_path).unwrap()).unwrap();
    let orders = export["orders"].as_array_mut().unwrap();
    let dropped = orders.pop().unwrap();
    let changed = orders[0]["amount"].as_u64().unwrap() + 1;
    orders[0]["amount"] = changed.into();
    let changed_order = orders[0]["order_no"].as_str().unwrap().to_owned();
    let tampered = demo.join("settlement/orders-coffee-changed.json");
    std::fs::write(&tampered, serde_json::to_vec(&export).unwrap()).unwrap();
    let mut command = Command::new(mps_tests::process::binary("settlement"));
    command.args(["reconcile", "--merchant-id", "COFFEE-SHOP-01", "--merchant-export"]).arg(&tampered);
    for entry in std::fs::read_dir(&clearing).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "json") {
            command.arg("--file").arg(path);
        }
    }
    let reconciled = command.output().unwrap();
    let table = String::from_utf8_lossy(&reconciled.stdout);
    assert_eq!(reconciled.status.code(), Some(1), "differences are exit 1: {table}");
    let line_of = |needle: &str| table.lines().find(|line| line.starts_with(needle)).unwrap_or_default().to_owned();
    let missing = line_of("missing in export");
    assert!(missing.contains(dropped["order_no"].as_str().unwrap()), "{table}");
    let different = line_of("different");
    assert!(different.contains(&changed_order) && different.contains("amount"), "{table}");
    assert!(different.contains(&changed.to_string()), "{table}");
}

/// (issuer, acquirer) -> minor units approved: the table's approved orders, once each (the
/// lost answer and its resend are one payment), less any the bank reversed.
fn approvals_of_the_table(rows: &[&str]) -> BTreeMap<(String, String), i64> {
    let mut approved = BTreeMap::new();
    let mut reversed = Vec::new();
    for row in rows {
        // Columns are padded with at least two spaces; a cell has at most one space in a row.
        let cells: Vec<&str> = row.split("  ").map(str::trim).filter(|cell| !cell.is_empty()).collect();
        let [_payer, merchant, bank, order, amount, code, _balance, what] = cells[..] else {
            panic!("a row of eight cells: {row}");
        };
        if what.starts_with("reversal: the late approval undone") {
            reversed.push(order);
        } else if code == "00 approved" && !what.starts_with("reversal") && !what.contains("reversed by the merchant") {
            let issuer = bank.split(' ').next().unwrap().to_owned();
            let acquirer = ACQUIRER_OF.iter().find(|(name, _)| *name == merchant).unwrap().1.to_owned();
            let (units, cents) = amount.split_once('.').unwrap();
            let minor = units.parse::<i64>().unwrap() * 100 + cents.parse::<i64>().unwrap();
            approved.insert(order, (issuer, acquirer, minor));
        }
    }
    let mut sums = BTreeMap::new();
    for (order, (issuer, acquirer, minor)) in approved {
        if !reversed.contains(&order) {
            *sums.entry((issuer, acquirer)).or_default() += minor;
        }
    }
    sums
}

/// `authz --config <bank's config> ARGS` on the bank's ledger and token, which the demo left;
/// asserts success.
fn authz(demo: &Path, letter: &str, args: &[&str]) -> Output {
    let bank = demo.join(format!("bank-{letter}"));
    let token_env = std::fs::read_to_string(bank.join("token.env")).unwrap();
    let softhsm_conf = token_env.lines().next().unwrap();
    let output = Command::new(mps_tests::process::binary("authz"))
        .arg("--config")
        .arg(bank.join("authz.toml"))
        .args(args)
        .env("SOFTHSM2_CONF", softhsm_conf)
        .env_remove("MPS_HSM_PIN")
        .output()
        .unwrap();
    assert!(output.status.success(), "authz {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}
