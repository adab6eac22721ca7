//! Clearing (docs/CLEARING.md) from a running bank: three business days of payments to two
//! acquirers, with a reversal on the same day and one on the next, give three signed files
//! whose amounts equal what the ledger moved to the acquirers' settlement payables; a day is
//! exported only after it ended and after the day before; exporting again gives the same
//! bytes; a cleared day takes no more bookings; `verify` finds a changed byte, a missing day
//! and a file that is not the exported one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use mps_authz::app::Parts;
use mps_authz::decision::business_day::Cutoff;
use mps_authz::decision::clock::Clock;
use mps_authz::ledger::InternalAccount;
use mps_authz::ops::clearing::{self, ClearingError, Issuer};
use mps_protocol::Iin;
use mps_settlement::clearing::{ClearingFile, EntryKind};
use mps_tests::{AccountSpec, Answer, Bank, TestSim};
use time::{Date, Duration, OffsetDateTime};

const OTHER_ACQUIRER: &str = "500002";
/// The variable that carries the HSM PIN to the `authz` binary (its config's `hsm.pin_env`).
const PIN_ENV: &str = "MPS_HSM_PIN";

/// Today's date, far enough from midnight for what the tests check about days. Yesterday may
/// be exported only once the cut-off (midnight here) plus the grace (`request_timeout_ms`, 20 s)
/// has passed, and "today has not ended" must still hold when the test exports: a run that
/// begins from 23:55 to 00:02 UTC waits until 00:02. (One that began at 00:00:03 failed: its
/// exports of yesterday were refused until 00:00:20.)
async fn today_away_from_midnight() -> Date {
    let now = OffsetDateTime::now_utc();
    if let Some(resume) = resume_after_midnight(now) {
        eprintln!("clearing test: {now} is near midnight UTC; waiting until {resume}");
        tokio::time::sleep((resume - now).unsigned_abs()).await;
    }
    OffsetDateTime::now_utc().date()
}

/// When a run that begins at `now` may go on: `None` from 00:02 to 23:55 UTC, else 00:02 next.
fn resume_after_midnight(now: OffsetDateTime) -> Option<OffsetDateTime> {
    let hms = |h, m| time::Time::from_hms(h, m, 0).unwrap();
    if now.time() >= hms(23, 55) {
        Some((now.date() + Duration::days(1)).with_time(hms(0, 2)).assume_utc())
    } else if now.time() < hms(0, 2) {
        Some(now.date().with_time(hms(0, 2)).assume_utc())
    } else {
        None
    }
}

#[test]
fn a_run_near_midnight_waits_until_two_minutes_past() {
    let at = |text: &str| {
        let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
        time::PrimitiveDateTime::parse(text, format).unwrap().assume_utc()
    };
    assert_eq!(resume_after_midnight(at("2026-12-02 00:00:03")), Some(at("2026-12-02 00:02:00")));
    assert_eq!(resume_after_midnight(at("2026-12-01 23:55:00")), Some(at("2026-12-02 00:02:00")));
    assert_eq!(resume_after_midnight(at("2026-12-31 23:59:59")), Some(at("2027-01-01 00:02:00")));
    assert_eq!(resume_after_midnight(at("2026-12-02 00:02:00")), None);
    assert_eq!(resume_after_midnight(at("2026-12-01 23:54:59")), None);
    assert_eq!(resume_after_midnight(at("2026-12-01 12:00:00")), None);
}

/// A clock the test moves.
#[derive(Clone)]
struct TestClock(Arc<Mutex<OffsetDateTime>>);

impl TestClock {
    fn set(&self, day: Date, hour: u8) {
        *self.0.lock().unwrap() = day.with_hms(hour, 0, 0).unwrap().assume_utc();
    }
}

async fn pay(
    bank: &Bank,
    sim: &mut TestSim,
    account: &mps_protocol::Account,
    acquirer: &str,
    order: &str,
    amount: u64,
) -> Answer {
    let packet = sim.pay(account, order, amount, "8642");
    let (body, jws) = bank.merchant.request_via(acquirer, &packet, order, amount, 978);
    let answer = bank.post(&bank.gateway(), body, Some(&jws)).await.unwrap();
    if answer.status == 200 {
        sim.read_answer(&answer);
    }
    answer
}

fn txn(answer: &Answer) -> String {
    answer.json["txn_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_days_clear_to_what_the_ledger_booked_and_a_cleared_day_is_closed() {
    let today = today_away_from_midnight().await;
    let days = [today - Duration::days(3), today - Duration::days(2), today - Duration::days(1)];
    let clock = TestClock(Arc::new(Mutex::new(OffsetDateTime::now_utc())));
    let reading = clock.clone();
    let files = Bank::builder().with_clock(Clock::from_fn(move || *reading.0.lock().unwrap())).files().await;
    // The `authz` binary's own configuration of this bank, for the CLI checks at the end.
    let cli_config = files.dir.path().join("authz-cli.toml");
    std::fs::write(&cli_config, files.binary_config_text(mps_tests::free_port(), mps_tests::free_port(), PIN_ENV))
        .unwrap();
    let mut bank = Bank::start_from(files).await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000900", "8642", 1_000_000)).await;
    let mut sim = bank.new_sim("8949012300000000900", &[&account]).await;
    let acquirer = mps_tests::ACQUIRER_IIN;

    // Day 1: three approvals; the third is reversed the same day.
    clock.set(days[0], 10);
    let o1 = pay(&bank, &mut sim, &account, acquirer, "C-1", 100).await;
    let o2 = pay(&bank, &mut sim, &account, OTHER_ACQUIRER, "C-2", 200).await;
    let o3 = pay(&bank, &mut sim, &account, acquirer, "C-3", 300).await;
    for answer in [&o1, &o2, &o3] {
        assert_eq!(answer.code(), "00", "{:?}", answer.json);
    }
    clock.set(days[0], 11);
    let reversed = bank.reverse("C-3", 300, Some(&txn(&o3)), "2026-11-30T10:00:00Z").await;
    assert_eq!(reversed.code(), "00", "{:?}", reversed.json);
    // Day 2: one approval, and day 1's C-2 reversed.
    clock.set(days[1], 10);
    let o4 = pay(&bank, &mut sim, &account, OTHER_ACQUIRER, "C-4", 400).await;
    assert_eq!(o4.code(), "00");
    let late = bank.reverse("C-2", 200, Some(&txn(&o2)), "2026-11-30T10:01:00Z").await;
    assert_eq!(late.code(), "00", "{:?}", late.json);
    // Day 3: one approval.
    clock.set(days[2], 10);
    let o5 = pay(&bank, &mut sim, &account, acquirer, "C-5", 500).await;
    assert_eq!(o5.code(), "00");

    let parts = parts_of(&bank);
    let signer = mps_authz::app::answer_signer(&bank.config, &parts).unwrap();
    let iin = Iin::new(mps_tests::IIN).unwrap();
    let issuer = Issuer {
        hsm: &parts.hsm,
        ledger: &parts.ledger,
        signer: &signer,
        iin,
        cutoff: Cutoff::parse(&bank.config.issuer.business_day_cutoff).unwrap(),
        grace: bank.config.server.request_timeout(),
    };
    let now = OffsetDateTime::now_utc();

    // Today has not ended; day 3 needs day 2 first, but day 1 may be the first export.
    assert!(matches!(issuer.export(today, now).await, Err(ClearingError::NotEnded { .. })));
    let first = issuer.export(days[0], now).await.unwrap();
    assert!(matches!(issuer.export(days[2], now).await, Err(ClearingError::PreviousNotExported { .. })));
    let second = issuer.export(days[1], now).await.unwrap();
    let third = issuer.export(days[2], now).await.unwrap();
    // Exporting again gives the same bytes and signature; an earlier day is never cleared.
    assert_eq!(issuer.export(days[0], now).await.unwrap(), first);
    assert!(matches!(issuer.export(days[0] - Duration::days(1), now).await, Err(ClearingError::BeforeFirst { .. })));

    let files: Vec<ClearingFile> =
        [&first, &second, &third].iter().map(|f| ClearingFile::from_bytes(&f.bytes).unwrap()).collect();
    // Payments of one day share the test clock's instant, so the file orders them by txn id.
    let entries = |file: &ClearingFile| -> Vec<(EntryKind, String, i64)> {
        let mut entries: Vec<_> = file.entries.iter().map(|e| (e.kind, e.order_no.clone(), e.amount)).collect();
        entries.sort_by(|a, b| a.1.cmp(&b.1));
        entries
    };
    assert_eq!(
        entries(&files[0]),
        vec![(EntryKind::Approval, "C-1".into(), 100), (EntryKind::Approval, "C-2".into(), 200)],
        "C-3 was reversed the same day: in no file"
    );
    assert_eq!(
        entries(&files[1]),
        vec![(EntryKind::Reversal, "C-2".into(), -200), (EntryKind::Approval, "C-4".into(), 400)]
    );
    let late_entry = files[1].entries.iter().find(|e| e.kind == EntryKind::Reversal).unwrap();
    assert_eq!(late_entry.original_txn_id.as_deref(), Some(txn(&o2).as_str()));
    assert_eq!(entries(&files[2]), vec![(EntryKind::Approval, "C-5".into(), 500)]);
    assert_eq!(files[0].previous_sha256, None);
    assert_eq!(files[1].previous_sha256.as_deref(), Some(first.sha256.as_str()));
    assert_eq!(files[2].previous_sha256.as_deref(), Some(second.sha256.as_str()));

    // The files' amounts per acquirer are what the ledger moved to each settlement payable.
    let mut cleared: BTreeMap<String, i64> = BTreeMap::new();
    for file in &files {
        for total in &file.totals {
            *cleared.entry(total.acquirer_iin.clone()).or_default() += total.amount;
        }
    }
    assert_eq!(cleared, payables(&bank).await);
    assert_eq!(cleared, BTreeMap::from([(acquirer.to_owned(), 600), (OTHER_ACQUIRER.to_owned(), 400)]));

    // A cleared day takes no more bookings: a payment dated day 3 is refused, nothing moves.
    let available = bank.available(&account).await;
    let refused = pay(&bank, &mut sim, &account, acquirer, "C-6", 50).await;
    assert_eq!((refused.status, refused.code()), (503, "91"), "{:?}", refused.json);
    assert_eq!(bank.available(&account).await, available);

    // verify: the three files as written pass; a changed byte, a missing day, or a file that
    // is not the exported one (the right day, signed, but other bytes) is found.
    let dir = tempfile::tempdir().unwrap();
    let trust = bank.pki.trust_store();
    let paths: Vec<_> =
        [&first, &second, &third].iter().map(|f| clearing::write_files(dir.path(), iin, f).unwrap()).collect();
    let checked = clearing::verify(dir.path(), iin, &trust, &bank.ledger, now).await.unwrap();
    assert_eq!(checked.len(), 3);

    let original = std::fs::read(&paths[1]).unwrap();
    let mut changed = original.clone();
    let at = changed.iter().position(|b| *b == b'4').unwrap();
    changed[at] = b'5';
    std::fs::write(&paths[1], &changed).unwrap();
    assert!(clearing::verify(dir.path(), iin, &trust, &bank.ledger, now).await.is_err(), "a changed byte");
    std::fs::remove_file(&paths[1]).unwrap();
    let missing = clearing::verify(dir.path(), iin, &trust, &bank.ledger, now).await.unwrap_err();
    assert!(missing.to_string().contains(&format!("file of day {} is missing", days[1])), "{missing}");
    let mut replaced = files[1].clone();
    replaced.entries.truncate(1);
    let replaced = ClearingFile::new(
        mps_tests::IIN,
        &replaced.business_day,
        &replaced.cutoff_utc,
        replaced.previous_sha256,
        replaced.entries,
    )
    .unwrap()
    .to_bytes();
    let jws = signer.sign(&bank.hsm, &replaced).await.unwrap();
    std::fs::write(&paths[1], &replaced).unwrap();
    std::fs::write(format!("{}.jws", paths[1].display()), format!("{jws}\n")).unwrap();
    let swapped = clearing::verify(dir.path(), iin, &trust, &bank.ledger, now).await.unwrap_err();
    assert!(swapped.to_string().contains("not the file this bank exported"), "{swapped}");
    std::fs::write(&paths[1], &original).unwrap();
    std::fs::write(format!("{}.jws", paths[1].display()), format!("{}\n", second.jws)).unwrap();
    clearing::verify(dir.path(), iin, &trust, &bank.ledger, now).await.unwrap();

    // The same through the `authz` binary, on the same ledger: export writes the stored bytes
    // again, verify passes the directory, and a day that has not ended is refused with a
    // message that says when it may be exported.
    let authz = mps_tests::process::build_binary("authz");
    let token = mps_hsm::testing::TestToken::shared().unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(&authz)
            .arg("--config")
            .arg(&cli_config)
            .args(args)
            .env(PIN_ENV, mps_hsm::testing::USER_PIN)
            .env("SOFTHSM2_CONF", &token.softhsm_conf)
            .output()
            .unwrap()
    };
    let again = tempfile::tempdir().unwrap();
    let day = days[1].to_string();
    let exported = cli(&["clearing", "export", "--date", &day, "--out", again.path().to_str().unwrap()]);
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    let name = paths[1].file_name().unwrap();
    assert_eq!(std::fs::read(again.path().join(name)).unwrap(), original, "the CLI writes the stored bytes");
    let verified = cli(&["clearing", "verify", "--dir", dir.path().to_str().unwrap()]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    assert!(String::from_utf8_lossy(&verified.stdout).contains("3 file(s)"));
    let early = cli(&["clearing", "export", "--date", &today.to_string()]);
    assert!(!early.status.success());
    assert!(
        String::from_utf8_lossy(&early.stderr).contains("has not ended"),
        "{}",
        String::from_utf8_lossy(&early.stderr)
    );

    bank.ledger.audit().await.unwrap();
    bank.shutdown().await;
}

/// The bank's clearing side, as `authz clearing` builds it.
fn parts_of(bank: &Bank) -> Parts {
    Parts {
        hsm: bank.hsm.clone(),
        ledger: bank.ledger.clone(),
        metrics: Arc::clone(&bank.server.as_ref().unwrap().metrics),
        clock: Clock::system(),
    }
}

async fn payables(bank: &Bank) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for balance in bank.ledger.internal_balances().await.unwrap() {
        if let InternalAccount::SettlementPayable { acquirer_iin } = balance.account {
            out.insert(acquirer_iin.as_str().to_owned(), balance.balance);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_issuers_three_days_net_to_zero_and_settle_their_payables_to_zero() {
    let today = today_away_from_midnight().await;
    let days = [today - Duration::days(3), today - Duration::days(2), today - Duration::days(1)];
    let clock = TestClock(Arc::new(Mutex::new(OffsetDateTime::now_utc())));
    let clock_of = |clock: &TestClock| {
        let reading = clock.clone();
        Clock::from_fn(move || *reading.0.lock().unwrap())
    };
    let mut north = Bank::builder().with_clock(clock_of(&clock)).start().await;
    let mut river = Bank::builder().with_clock(clock_of(&clock)).with_iin("510050").start().await;
    let mut payers = Vec::new();
    for (bank, number, sim_id) in
        [(&north, "4000120000000950", "8949012300000000950"), (&river, "5100500000000950", "8949051000000000950")]
    {
        let account = bank.create_account(&AccountSpec::debit(number, "8642", 1_000_000)).await;
        let sim = bank.new_sim(sim_id, &[&account]).await;
        payers.push((account, sim));
    }
    let (acquirer, other) = (mps_tests::ACQUIRER_IIN, OTHER_ACQUIRER);
    // Per day and bank: payments to both acquirers; day 1 has a same-day reversal at each
    // bank, day 2 reverses one of day 1's payments at each bank.
    let mut day_one = Vec::new();
    for (index, day) in days.iter().enumerate() {
        for (bank_index, bank) in [&north, &river].into_iter().enumerate() {
            let (account, sim) = &mut payers[bank_index];
            let amount = 100 * (index as u64 + 1) + 10 * bank_index as u64;
            clock.set(*day, 9);
            let a = pay(bank, sim, account, acquirer, &format!("D{index}-A"), amount).await;
            let b = pay(bank, sim, account, other, &format!("D{index}-B"), amount + 1).await;
            assert_eq!((a.code(), b.code()), ("00", "00"), "{:?} {:?}", a.json, b.json);
            match index {
                0 => {
                    let c = pay(bank, sim, account, acquirer, "D0-C", 7).await;
                    assert_eq!(c.code(), "00");
                    clock.set(*day, 10);
                    assert_eq!(bank.reverse("D0-C", 7, Some(&txn(&c)), "2026-11-30T10:00:00Z").await.code(), "00");
                    day_one.push(txn(&b));
                }
                1 => {
                    clock.set(*day, 10);
                    let late = bank
                        .reverse(
                            "D0-B",
                            101 + bank_index as u64 * 10,
                            Some(&day_one[bank_index]),
                            "2026-11-30T10:01:00Z",
                        )
                        .await;
                    assert_eq!(late.code(), "00", "{:?}", late.json);
                }
                _ => {}
            }
        }
    }

    // One scheme: each harness bank made a CA of its own, so River Bank's clearing files are
    // signed with a bank signing certificate from North Bank's scheme CA (the same HSM key).
    let river_signing = north.pki.issue_for_key(
        "river-signing",
        &mps_tests::bank_signing_request(river.iin, "River Bank"),
        &mps_pki::hsm::HsmSigner::new(river.hsm.clone()),
    );
    let mut river_config = river.config.clone();
    river_config.issuer.signing_certificate = river_signing;

    // Each bank exports its three days; the settlement center nets them.
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let mut files = Vec::new();
    for (bank, config) in [(&north, &north.config), (&river, &river_config)] {
        let parts = parts_of(bank);
        let signer = mps_authz::app::answer_signer(config, &parts).unwrap();
        let issuer = Issuer {
            hsm: &parts.hsm,
            ledger: &parts.ledger,
            signer: &signer,
            iin: bank.iin,
            cutoff: Cutoff::parse(&bank.config.issuer.business_day_cutoff).unwrap(),
            grace: bank.config.server.request_timeout(),
        };
        let mut cleared: BTreeMap<String, i64> = BTreeMap::new();
        for day in days {
            let file = issuer.export(day, now).await.unwrap();
            for total in ClearingFile::from_bytes(&file.bytes).unwrap().totals {
                *cleared.entry(total.acquirer_iin).or_default() += total.amount;
            }
            files.push(clearing::write_files(dir.path(), bank.iin, &file).unwrap());
        }
        assert_eq!(cleared, payables(bank).await, "bank {}: the files hold what the ledger booked", bank.iin);
    }
    let settlement = mps_tests::process::build_binary("settlement");
    let out = dir.path().join("settled");
    let mut command = std::process::Command::new(&settlement);
    command.arg("run").arg("--out").arg(&out);
    command.arg("--trust").arg(north.pki.root_file()).arg("--crl").arg(north.pki.crls_file());
    for file in &files {
        command.arg("--file").arg(file);
    }
    let run = command.output().unwrap();
    assert!(run.status.success(), "settlement run: {}", String::from_utf8_lossy(&run.stderr));
    let positions_path = out.join("positions.json");
    let positions: serde_json::Value = serde_json::from_slice(&std::fs::read(&positions_path).unwrap()).unwrap();
    let net_sum: i64 = positions["net"].as_array().unwrap().iter().map(|row| row["amount"].as_i64().unwrap()).sum();
    assert_eq!(net_sum, 0, "net positions sum to zero: {positions:#}");
    assert_eq!(positions["files"].as_array().unwrap().len(), 6);

    // Feeding one file twice is refused and writes nothing.
    let twice = dir.path().join("twice");
    let refused = std::process::Command::new(&settlement)
        .arg("run")
        .arg("--out")
        .arg(&twice)
        .args(["--trust", north.pki.root_file().to_str().unwrap(), "--crl", north.pki.crls_file().to_str().unwrap()])
        .args(["--file", files[0].to_str().unwrap(), "--file", files[0].to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(!twice.join("positions.json").exists());

    // Each bank books the settlement: its settlement payables are zero, once.
    for bank in [&north, &river] {
        clearing::settle(&positions_path, bank.iin, &bank.ledger).await.unwrap();
        assert!(payables(bank).await.values().all(|balance| *balance == 0), "{:?}", payables(bank).await);
        let again = clearing::settle(&positions_path, bank.iin, &bank.ledger).await.unwrap_err();
        assert!(again.to_string().contains("booked already"), "{again}");
        bank.ledger.audit().await.unwrap();
    }
    north.shutdown().await;
    river.shutdown().await;
}
