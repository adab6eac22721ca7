//! The whole network as separate processes, as the README's demo runs it: two authorization
//! servers (two banks with their own SoftHSM tokens and IINs), the gateway, three merchant
//! servers and five payers' `sim`, through a scripted day. Every outcome of the day, the
//! balances after it, the lost answer's resend booked once and the timed-out payment's
//! reversal are checked in the demo's table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::process::Command;

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
    ("C-0002", "HTTP 409 order paid", "250.00", "duplicate order: refused by the merchant"),
    ("T-0002", "00 approved", "238.00", "answer lost on the way to the phone"),
    ("T-0002", "00 approved", "238.00", "resend: the stored answer, booked once"),
    ("T-0003", "91 no answer in time", "120.00", "merchant timeout: payment failed, reversal queued"),
    ("T-0003", "25 nothing to reverse", "120.00", "reversal: the bank never booked it"),
    ("T-0003", "00 approved", "90.00", "resend after the reversal: paid once"),
    ("C-0003", "00 approved", "247.50", "paid"),
];

#[test]
fn the_demo_day_runs_through_every_party_with_the_expected_outcomes() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(repo.join("scripts/demo"))
        .env("MPS_DEMO_DIR", dir.path().join("demo"))
        // The demo builds into and runs from this test's own target directory (also when
        // cargo was given --target-dir rather than CARGO_TARGET_DIR).
        .env("CARGO_TARGET_DIR", mps_tests::process::target_dir())
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
    // The demo stops everything it started: nothing of it is left running.
    let pids = std::fs::read_to_string(dir.path().join("demo/pids")).unwrap_or_default();
    for line in pids.lines() {
        let pid = line.split_whitespace().nth(1).unwrap_or("");
        assert!(!PathBuf::from(format!("/proc/{pid}/cmdline")).exists() || pid.is_empty(), "{line} still runs");
    }
}
