//! The harness against a real bank in-process (`mps_tests::Bank`: SoftHSM token, PKI, SQLite
//! ledger, authz over mTLS): payers provisioned through the registration path into the bank's
//! own ledger and HSM, then closed-loop, open-loop and mixed runs through the library API, with
//! every answer verified and the totals checked against the ledger.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use mps_hsm::testing::TestToken;
use mps_loadtest::config::TargetKind;
use mps_loadtest::drive::client::{self, Connection, Merchant, Target};
use mps_loadtest::drive::exchange::{Context, random_order_prefix, wrong_password_for};
use mps_loadtest::drive::{self, Mix, Mode, Settings, Stop};
use mps_loadtest::provision::{self, Payer, PayerPlan};
use mps_loadtest::report::Report;
use mps_protocol::{Amount, Currency, Iin, MerchantId, Password};
use mps_tests::{ACQUIRER_IIN, Bank, IIN, MERCHANT_ACCOUNT, MERCHANT_ID};

const AMOUNT_MINOR: u64 = 250;
const BALANCE_MINOR: u64 = 10_000_000;

async fn provision_payers(bank: &Bank, count: usize) -> Vec<Payer> {
    let token = TestToken::shared().unwrap();
    let parts = provision::Bank {
        hsm: bank.hsm.clone(),
        ledger: bank.ledger.clone(),
        iin: Iin::new(IIN).unwrap(),
        transport_key_label: token.transport_key_label.clone(),
        bank_certificate_pem: bank.bank_certificate_pem.clone(),
    };
    let plan = PayerPlan {
        count,
        concurrency: 4,
        password: Password::new("2468").unwrap(),
        currency: Currency::EUR,
        balance: Amount::from_minor(BALANCE_MINOR),
        per_txn_limit: Amount::from_minor(100_000),
        daily_limit: Amount::from_minor(BALANCE_MINOR),
        merchant_id: MerchantId::new(MERCHANT_ID).unwrap(),
        run_tag: provision::random_run_tag(),
    };
    let mut progress = Vec::new();
    let payers = provision::provision(&parts, &plan, &mps_tests::transport_key(), |done, total| {
        progress.push((done, total));
    })
    .await
    .unwrap();
    assert_eq!(payers.len(), count);
    assert_eq!(progress.last(), Some(&(count, count)));
    for payer in &payers {
        assert_eq!(payer.counter(), 0, "a fresh SIM has completed no session");
        assert!(bank.ledger.sim(&payer.sim_id).await.unwrap().is_some(), "the SIM is in the bank's ledger");
        assert_eq!(bank.available(&payer.account).await, BALANCE_MINOR as i64);
    }
    payers
}

/// The context and connections for a run against the bank's authz, acting as the gateway.
fn connect(bank: &Bank, connections: usize) -> (Context, Vec<Connection>) {
    let trust = bank.pki.trust_store();
    let targets = [Target::new(TargetKind::Authz, &bank.url)];
    let identity = (bank.gateway_leaf.chain_file.as_path(), bank.gateway_leaf.key_file.as_path());
    let clients = client::spread(&targets, connections, &trust, identity, Duration::from_secs(20)).unwrap();
    let merchant = Merchant::from_files(
        MERCHANT_ID,
        ACQUIRER_IIN,
        MERCHANT_ACCOUNT,
        &bank.dir.path().join("merchant.crt"),
        &bank.dir.path().join("merchant.key"),
    )
    .unwrap();
    let password = Password::new("2468").unwrap();
    let context = Context {
        merchant,
        trust,
        amount: Amount::from_minor(AMOUNT_MINOR),
        currency: Currency::EUR,
        wrong_password: wrong_password_for(&password).unwrap(),
        password,
        order_prefix: random_order_prefix(),
    };
    (context, clients)
}

async fn drive(bank: &Bank, payers: Vec<Payer>, mode: Mode, count: u64, mix: Mix) -> (Vec<Payer>, Report) {
    let connections = match mode {
        Mode::Closed { connections } => connections,
        Mode::Open { .. } => 2,
    };
    let (context, clients) = connect(bank, connections);
    let settings =
        Settings { mode, count, duration: Some(Duration::from_secs(60)), mix, progress: false, first_sequence: 0 };
    drive::run(std::sync::Arc::new(context), clients, payers, settings, Stop::default()).await.unwrap()
}

/// Sessions completed by all SIMs, and money the ledger took from their accounts.
async fn sessions_and_spent(bank: &Bank, payers: &[Payer]) -> (u64, u64) {
    let mut sessions = 0;
    let mut spent = 0;
    for payer in payers {
        sessions += payer.counter();
        spent += BALANCE_MINOR - u64::try_from(bank.available(&payer.account).await).unwrap();
    }
    (sessions, spent)
}

fn assert_clean(report: &Report, count: u64) {
    assert_eq!(report.errors_total, 0, "no errors: {report:#?}");
    assert!(report.errors.is_empty());
    assert_eq!(report.sent, count);
    assert_eq!(report.completed, count);
    assert_eq!(report.http_statuses.get(&200), Some(&count), "every answer was HTTP 200");
    assert!(!report.interrupted);
    assert!(report.latency_us.p50 > 0 && report.latency_us.p50 <= report.latency_us.max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closed_then_open_loop_runs_are_verified_and_booked_once() {
    let mut bank = Bank::start().await;
    let payers = provision_payers(&bank, 6).await;

    let (payers, closed) = drive(&bank, payers, Mode::Closed { connections: 3 }, 30, Mix::default()).await;
    assert_clean(&closed, 30);
    assert_eq!(closed.payments.checked, 30, "every answer verified: signature, SIM opened it, code 00");
    assert_eq!(closed.approved_payments(), 30);
    assert_eq!(closed.response_codes.get("00"), Some(&30));
    let (sessions, spent) = sessions_and_spent(&bank, &payers).await;
    assert_eq!(sessions, 30, "each approved payment advanced its SIM's counter once");
    assert_eq!(spent, 30 * AMOUNT_MINOR, "the ledger booked exactly the approved payments");

    let open_mode = Mode::Open { rate_per_second: 40.0, in_flight_max: 64 };
    let (payers, open) = drive(&bank, payers, open_mode, 20, Mix::default()).await;
    assert_clean(&open, 20);
    assert_eq!(open.approved_payments(), 20);
    assert!(open.mode.starts_with("open loop"));
    // 20 requests at 40/s take about half a second: the schedule, not the server, set the pace.
    assert!(open.elapsed_s >= 0.4, "open loop kept its schedule: {}", open.elapsed_s);
    let (sessions, spent) = sessions_and_spent(&bank, &payers).await;
    assert_eq!(sessions, 50, "the open loop continued each SIM's ratchet");
    assert_eq!(spent, 50 * AMOUNT_MINOR);
    bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mix_sends_wrong_passwords_retransmissions_and_bad_macs_and_checks_them() {
    let mut bank = Bank::start().await;
    let payers = provision_payers(&bank, 4).await;
    let mix = Mix { wrong_password_percent: 25, retransmit_percent: 25, bad_mac_percent: 20 };
    let (payers, report) = drive(&bank, payers, Mode::Closed { connections: 2 }, 80, mix).await;
    assert_clean(&report, 80);
    assert!(report.wrong_passwords.sent > 0, "some wrong passwords were sent: {report:#?}");
    assert_eq!(report.wrong_passwords.checked, report.wrong_passwords.sent, "each answered 55 and verified");
    assert!(report.retransmissions.sent > 0, "some retransmissions were sent: {report:#?}");
    assert_eq!(report.retransmissions.checked, report.retransmissions.sent, "each got the stored answer");
    assert!(report.bad_macs.sent > 0, "some bad MACs were sent: {report:#?}");
    assert_eq!(report.bad_macs.checked, report.bad_macs.sent, "each answered 63, signed, without a payer answer");
    assert_eq!(report.response_codes.get("63"), Some(&report.bad_macs.sent));
    assert_eq!(report.response_codes.get("75"), None, "no account was locked");
    let fresh = report.payments.sent + report.wrong_passwords.sent;
    assert_eq!(fresh + report.retransmissions.sent + report.bad_macs.sent, 80);
    let (sessions, spent) = sessions_and_spent(&bank, &payers).await;
    assert_eq!(
        sessions, fresh,
        "neither retransmissions nor bad MACs advance a SIM (the intact packet after a bad MAC is approved with the same keys)"
    );
    assert_eq!(spent, report.approved_payments() * AMOUNT_MINOR, "retransmissions are not booked again");
    bank.shutdown().await;
}
