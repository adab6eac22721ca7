//! `settlement run` against real signed clearing files of two issuers and two acquirers over
//! three days: a good run nets to zero and equals the files' totals; every kind of bad input
//! (a changed byte, a file twice, a transaction twice, a missing or replaced day, a bad or
//! missing signature, another bank's certificate, a revoked one) refuses the run and writes
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;
use mps_pki::VerifyError;
use mps_pki::jws::JwsError;
use mps_settlement::clearing::{ClearingFile, sha256_hex};
use mps_settlement::positions::{CSV_HEADER, Positions};
use mps_settlement::run::RunError;

struct Setup {
    scheme: Scheme,
    bank_a: Bank,
    bank_b: Bank,
    written: Written,
}

fn setup() -> Setup {
    let mut scheme = Scheme::new();
    let bank_a = scheme.bank(ISSUER_A);
    let bank_b = scheme.bank(ISSUER_B);
    let dir = scheme.subdir("files");
    let written = write_all(&scheme, &dir, &bank_a, &bank_b);
    Setup { scheme, bank_a, bank_b, written }
}

#[test]
fn a_good_run_nets_to_zero_and_equals_the_files_totals() {
    let setup = setup();
    let out = setup.scheme.dir.path().join("out");
    let outcome = setup.scheme.run(&setup.written.all(), &out).unwrap();
    let positions = outcome.positions;

    // Per currency, the net amounts sum to zero.
    let mut per_currency: BTreeMap<u16, i64> = BTreeMap::new();
    for row in &positions.net {
        *per_currency.entry(row.currency).or_default() += row.amount;
    }
    assert_eq!(per_currency, BTreeMap::from([(USD, 0), (EUR, 0)]));

    // Bilateral rows equal the sums of the files' own totals rows.
    let mut totals: BTreeMap<(String, String, u16), i64> = BTreeMap::new();
    for file in setup.written.files.values() {
        for total in &file.totals {
            *totals.entry((file.issuer_iin.clone(), total.acquirer_iin.clone(), total.currency)).or_default() +=
                total.amount;
        }
    }
    let bilateral: BTreeMap<(String, String, u16), i64> = positions
        .bilateral
        .iter()
        .map(|row| ((row.issuer_iin.clone(), row.acquirer_iin.clone(), row.currency), row.amount))
        .collect();
    assert_eq!(bilateral, totals);
    assert_eq!(positions.bilateral.len(), bilateral.len(), "one row per issuer, acquirer and currency");

    // The late reversal netted with its approval: A's EUR to acquirer 1 is days 2 and 3 only.
    assert_eq!(bilateral[&(ISSUER_A.into(), ACQUIRER_1.into(), EUR)], 2000 + 3000);
    // The issuer's own merchants: listed, netting to nothing for that bank.
    assert_eq!(bilateral[&(ISSUER_A.into(), ISSUER_A.into(), EUR)], 150);
    let net = |bank: &str, currency| {
        positions.net.iter().find(|row| row.bank_iin == bank && row.currency == currency).unwrap().amount
    };
    let a_pays_eur = 5000 + (251 + 501 + 751);
    assert_eq!(net(ISSUER_A, EUR), -a_pays_eur);
    assert_eq!(net(ACQUIRER_1, USD), 3 * 777 + 3 * 3 * 777);

    // The files list names every file by its hash, in issuer then day order.
    assert_eq!(positions.files.len(), 6);
    let first = &setup.written.paths[&(ISSUER_A, 0)];
    assert_eq!(positions.files[0].sha256, sha256_hex(&std::fs::read(first).unwrap()));
    assert_eq!(positions.files[0].business_day, DAYS[0]);

    // What is on disk is what was computed, in both forms.
    let json: Positions = serde_json::from_slice(&std::fs::read(out.join("positions.json")).unwrap()).unwrap();
    assert_eq!(json, positions);
    assert_eq!(json.format, "mps-settlement/1");
    let csv = std::fs::read_to_string(out.join("positions.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], CSV_HEADER);
    assert_eq!(lines.len(), 1 + positions.bilateral.len() + positions.net.len());
    assert!(lines.contains(&format!("net,{ISSUER_A},,{EUR},{}", -a_pays_eur).as_str()), "{csv}");

    // A second run into the same directory does not overwrite the positions.
    let error = setup.scheme.run(&setup.written.all(), &out).unwrap_err();
    assert!(matches!(error, RunError::OutputExists { .. }), "{error}");
}

#[test]
fn one_changed_byte_is_refused_and_nothing_is_written() {
    let setup = setup();
    let path = &setup.written.paths[&(ISSUER_B, 1)];
    let text = std::fs::read_to_string(path).unwrap();
    // Still a valid, self-consistent file: only the signature can tell.
    let changed = text.replacen("\"auth_code\": \"100001\"", "\"auth_code\": \"100009\"", 1);
    assert_ne!(changed, text);
    std::fs::write(path, changed).unwrap();
    let out = setup.scheme.dir.path().join("out");
    let error = setup.scheme.run(&setup.written.all(), &out).unwrap_err();
    assert!(
        matches!(&error, RunError::Signature { path: p, source: JwsError::BadSignature } if p == path),
        "{error:?}"
    );
    assert!(error.to_string().contains(&path.display().to_string()));
    assert_nothing_written(&out);

    // A changed amount breaks the file's own totals first.
    let text = text.replacen("\"amount\": 6000", "\"amount\": 6001", 1);
    assert_ne!(text, std::fs::read_to_string(path).unwrap());
    std::fs::write(path, text).unwrap();
    let error = setup.scheme.run(&setup.written.all(), &out).unwrap_err();
    assert!(matches!(error, RunError::Parse { .. }), "{error:?}");
    assert_nothing_written(&out);
}

#[test]
fn a_file_given_twice_is_refused() {
    let setup = setup();
    let mut files = setup.written.all();
    files.push(setup.written.paths[&(ISSUER_A, 1)].clone());
    let out = setup.scheme.dir.path().join("out");
    let error = setup.scheme.run(&files, &out).unwrap_err();
    assert!(matches!(&error, RunError::FileTwice { day, .. } if day == DAYS[1]), "{error:?}");
    assert_nothing_written(&out);
}

#[test]
fn a_transaction_in_two_files_is_refused() {
    let setup = setup();
    // Issuer B's single file of another day repeats a transaction id of issuer A's.
    let duplicate = approval(ISSUER_A, 1, 2, ACQUIRER_2, 99, EUR);
    let file = ClearingFile::new(ISSUER_B, "2026-12-05", "00:00", None, vec![duplicate]).unwrap();
    let extra = write_signed(&setup.scheme.subdir("extra"), &file, &setup.bank_b);
    let mut files = setup.written.of(ISSUER_A);
    files.push(extra);
    let out = setup.scheme.dir.path().join("out");
    let error = setup.scheme.run(&files, &out).unwrap_err();
    assert!(matches!(&error, RunError::TxnTwice { txn_id, .. } if *txn_id == txn(ISSUER_A, 1, 2)), "{error:?}");
    assert_nothing_written(&out);
}

#[test]
fn a_missing_middle_day_is_refused_and_named() {
    let setup = setup();
    let out = setup.scheme.dir.path().join("out");
    let error = setup.scheme.run(&setup.written.without(ISSUER_A, 1), &out).unwrap_err();
    assert!(
        matches!(&error, RunError::MissingDay { issuer_iin, missing_day, .. }
            if issuer_iin == ISSUER_A && missing_day == DAYS[1]),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(DAYS[1]) && message.contains(ISSUER_A), "{message}");
    assert_nothing_written(&out);

    // The other issuer's gap is found the same way.
    let error = setup.scheme.run(&setup.written.without(ISSUER_B, 1), &out).unwrap_err();
    assert!(matches!(&error, RunError::MissingDay { issuer_iin, .. } if issuer_iin == ISSUER_B), "{error:?}");
    assert_nothing_written(&out);
}

#[test]
fn a_replaced_day_is_refused() {
    let setup = setup();
    // Another valid, signed file for A's middle day, chained to day 1 but not the one day 3 hashes.
    let original = &setup.written.files[&(ISSUER_A, 1)];
    let mut entries = original.entries.clone();
    entries.pop();
    let replacement = ClearingFile::new(ISSUER_A, DAYS[1], "00:00", original.previous_sha256.clone(), entries).unwrap();
    let replaced = write_signed(&setup.scheme.subdir("replaced"), &replacement, &setup.bank_a);
    let mut files = setup.written.without(ISSUER_A, 1);
    files.push(replaced.clone());
    let out = setup.scheme.dir.path().join("out");
    let error = setup.scheme.run(&files, &out).unwrap_err();
    assert!(
        matches!(&error, RunError::BrokenChain { issuer_iin, day, previous, .. }
            if issuer_iin == ISSUER_A && day == DAYS[2] && *previous == replaced),
        "{error:?}"
    );
    assert_nothing_written(&out);

    // Given beside the original, it is a second file of the same day.
    let mut both = setup.written.all();
    both.push(replaced);
    let error = setup.scheme.run(&both, &out).unwrap_err();
    assert!(matches!(&error, RunError::DayTwice { day, .. } if day == DAYS[1]), "{error:?}");
    assert_nothing_written(&out);
}

#[test]
fn a_bad_or_missing_signature_is_refused() {
    let setup = setup();
    let out = setup.scheme.dir.path().join("out");
    let path = &setup.written.paths[&(ISSUER_A, 2)];
    let signature = signature_path(path);

    // A valid signature of the same bank, but over another file.
    let other = std::fs::read(signature_path(&setup.written.paths[&(ISSUER_A, 1)])).unwrap();
    std::fs::write(&signature, &other).unwrap();
    let error = setup.scheme.run(&setup.written.all(), &out).unwrap_err();
    assert!(matches!(&error, RunError::Signature { source: JwsError::BadSignature, .. }), "{error:?}");
    assert_nothing_written(&out);

    std::fs::write(&signature, "not a jws\n").unwrap();
    let error = setup.scheme.run(&setup.written.all(), &out).unwrap_err();
    assert!(matches!(&error, RunError::Signature { source: JwsError::Malformed, .. }), "{error:?}");
    assert_nothing_written(&out);

    std::fs::remove_file(&signature).unwrap();
    let error = setup.scheme.run(&setup.written.all(), &out).unwrap_err();
    assert!(matches!(&error, RunError::MissingSignature { file, .. } if file == path), "{error:?}");
    assert!(error.to_string().contains(".jws"));
    assert_nothing_written(&out);
}

#[test]
fn a_certificate_of_another_bank_is_refused() {
    let setup = setup();
    // A's file, validly signed, but with B's bank signing certificate.
    let file = &setup.written.files[&(ISSUER_A, 0)];
    let dir = setup.scheme.subdir("forged");
    let forged = write_signed(&dir, file, &setup.bank_b);
    let mut files = setup.written.without(ISSUER_A, 0);
    files.push(forged);
    let out = setup.scheme.dir.path().join("out");
    let error = setup.scheme.run(&files, &out).unwrap_err();
    assert!(
        matches!(&error, RunError::WrongBank { issuer_iin, certificate_iin, .. }
            if issuer_iin == ISSUER_A && certificate_iin == ISSUER_B),
        "{error:?}"
    );
    assert_nothing_written(&out);
}

#[test]
fn a_revoked_bank_certificate_is_refused() {
    let mut setup = setup();
    setup.scheme.revoke(&setup.bank_b);
    let out = setup.scheme.dir.path().join("out");
    let error = setup.scheme.run(&setup.written.all(), &out).unwrap_err();
    assert!(
        matches!(&error, RunError::Signature { source: JwsError::Certificate(VerifyError::Revoked), .. }),
        "{error:?}"
    );
    assert_nothing_written(&out);
    // A's files alone still settle.
    setup.scheme.run(&setup.written.of(ISSUER_A), &out).unwrap();
}

#[test]
fn the_binary_writes_positions_or_exits_2_writing_nothing() {
    let setup = setup();
    let binary = env!("CARGO_BIN_EXE_settlement");
    let command = |files: &[std::path::PathBuf], out: &std::path::Path| {
        let mut command = Command::new(binary);
        command.arg("run").arg("--trust").arg(setup.scheme.root_file()).arg("--crl").arg(setup.scheme.crls_file());
        for file in files {
            command.arg("--file").arg(file);
        }
        command.arg("--out").arg(out).env_remove("MPS_SETTLEMENT_CONFIG").output().unwrap()
    };
    let bad_out = setup.scheme.dir.path().join("bad");
    let output = command(&setup.written.without(ISSUER_B, 1), &bad_out);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(DAYS[1]) && stderr.contains("missing"), "{stderr}");
    assert_nothing_written(&bad_out);

    let out = setup.scheme.dir.path().join("good");
    let output = command(&setup.written.all(), &out);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let positions: Positions = serde_json::from_slice(&std::fs::read(out.join("positions.json")).unwrap()).unwrap();
    assert!(positions.is_balanced());
    assert!(out.join("positions.csv").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&out).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "no temporary file stays: {leftovers:?}");

    let help = Command::new(binary).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("Exit status"));
}
