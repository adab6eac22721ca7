//! Crash test of the issuer: eight SIMs pay at once through the gateway's mTLS client while the
//! `authz` process is SIGKILLed at random moments and restarted on the same config and ledger
//! (with `MPS_CRASH_START_UP_KILLS=1`, every fourth kill is followed by one a few milliseconds
//! into the next start-up). A SIM whose
//! answer is lost (connection refused or reset, timeout, 503) sends the identical request bytes
//! again until a processed answer comes, reads it (MAC, next RSN) and pays again with the next
//! keys; one payment in flight per SIM. Afterwards the ledger must agree with what the SIMs
//! learned: every answer a SIM read is booked once, as it said; nothing is booked that no SIM
//! learned of; no (SIM, counter), txn id or order twice; postings sum to zero per currency; each
//! balance is its opening balance minus its approvals; the audit passes; and every SIM pays once
//! more.
//!
//! - `MPS_CRASH_KILLS`: how many kills (default 20).
//! - `MPS_CRASH_START_UP_KILLS=1`: also kill during start-up. Off by default: a kill while
//!   authz logs in to SoftHSM can leave the test token's `token.object` empty (SoftHSM's file
//!   store rewrites it in place), and the next start fails with `token "mps-test" not found`.
//! - `MPS_CRASH_SEED`: the seed of the kill schedule and the amounts (default drawn at random;
//!   the first line of output prints it).
//!
//! The seed line and the summary (kills, payments, approvals, resends) go to stdout past the
//! test harness's capture, so a CI log shows them on success too. A SIGKILL keeps what the
//! process handed the kernel: this finds an answer sent before its booking committed and a
//! retransmission booked anew, not a missing fsync (that takes a power cut).
//!
//! The test builds the `authz` binary into its own target directory first
//! (`mps_tests::process::build_binary`): `cargo test -p mps-tests` alone would not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::ffi::OsString;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mps_authz::ledger::Ledger;
use mps_hsm::testing::{TestToken, USER_PIN};
use mps_protocol::{Account, Currency, ResponseCode};
use mps_tests::booked::{BookedAnswer, SimAnswers, check_answers_are_booked};
use mps_tests::process::{Service, build_binary};
use mps_tests::{AccountSpec, Answer, Bank, TestSim, free_port};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Kills in a run unless `MPS_CRASH_KILLS` says otherwise.
const KILLS_DEFAULT: u64 = 20;
/// One account per SIM, except that SIMs 6 and 7 pay from the accounts of SIMs 4 and 5.
const ACCOUNTS: [&str; 6] = [
    "4000120000007000",
    "4000120000007001",
    "4000120000007002",
    "4000120000007003",
    "4000120000007004",
    "4000120000007005",
];
/// `SIM_ACCOUNT[sim]` indexes [`ACCOUNTS`].
const SIM_ACCOUNT: [usize; 8] = [0, 1, 2, 3, 4, 5, 4, 5];
const PASSWORD: &str = "8642";
/// Enough that no payment of a long run (`MPS_CRASH_KILLS` in the thousands) is declined for
/// funds or the daily limit: a decline would be a finding.
const OPENING_BALANCE: u64 = 1_000_000_000_000;
const AMOUNT_MAX: u64 = 999;
/// The pause before each kill, counted from the last restart's readiness.
const KILL_PAUSE_MS: std::ops::RangeInclusive<u64> = 100..=600;
/// Every this many kills, the next kill falls during the start-up of the restarted process.
const START_UP_KILL_EVERY: u64 = 4;
/// When a start-up kill falls after the start: a restart is ready within tens of milliseconds,
/// so some land before and some just after (the summary counts those before).
const START_UP_KILL_MS: std::ops::RangeInclusive<u64> = 0..=30;
/// One request's time limit: a request stuck longer counts as lost and is sent again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one payment may take to get a processed answer, restarts included.
const PAYMENT_DEADLINE: Duration = Duration::from_secs(60);
/// The pause before sending a lost request again.
const RESEND_PAUSE: Duration = Duration::from_millis(20);
/// The variable that carries the HSM PIN to `authz` (the config's `hsm.pin_env`).
const PIN_ENV: &str = "MPS_HSM_PIN";

/// Why a request had to be sent again, counted.
#[derive(Debug, Default, Clone, Copy)]
struct Resends {
    /// Connection refused or reset, or the answer cut off.
    connection: u32,
    /// 503: not ready yet, or "outcome unknown".
    unavailable: u32,
    /// No answer within [`ATTEMPT_TIMEOUT`].
    timeout: u32,
}

impl Resends {
    fn total(&self) -> u32 {
        self.connection + self.unavailable + self.timeout
    }

    fn add(&mut self, other: Resends) {
        self.connection += other.connection;
        self.unavailable += other.unavailable;
        self.timeout += other.timeout;
    }
}

/// A payment as its SIM learned it from the processed answer it finally read.
#[derive(Debug)]
struct Payment {
    answer: BookedAnswer,
    resends: Resends,
    /// The answer was decided before the request that got it was sent: the stored answer of a
    /// booking whose first answer was lost with its process.
    from_storage: bool,
}

/// One SIM and what it has paid.
struct Payer {
    index: usize,
    sim: TestSim,
    account: Account,
    /// The only SIM on its account: the balance in each of its answers is then known exactly.
    sole_payer: bool,
    rng: StdRng,
    payments: Vec<Payment>,
    approved_total: u64,
}

impl Payer {
    /// One payment: a new packet for the next order, sent until processed, its answer read.
    async fn pay_once(&mut self, bank: &Bank, client: &reqwest::Client) -> &Payment {
        let order_no = format!("CR{}-{:06}", self.index, self.payments.len() + 1);
        let what = format!("SIM {} order {order_no}", self.index);
        let amount = self.rng.gen_range(1..=AMOUNT_MAX);
        let packet = self.sim.pay(&self.account, &order_no, amount, PASSWORD);
        let (body, jws) = bank.merchant.request(&packet, &order_no, amount, Currency::EUR.code());
        let (answer, resends, last_sent) = send_until_processed(bank, client, &body, &jws, &what).await;
        let issuer_time = answer.json["issuer_time"].as_str().unwrap_or_default();
        let issuer_time = OffsetDateTime::parse(issuer_time, &Rfc3339)
            .unwrap_or_else(|e| panic!("{what}: issuer_time {issuer_time:?}: {e}"));
        if resends.total() > 0 {
            // An answer after a crash, perhaps the stored one: still the bank's, over these bytes.
            bank.verify_bank_signature(&answer);
        }
        let outcome = self.sim.read_answer(&answer);
        let plain = &outcome.answer;
        assert_eq!(answer.code(), plain.response_code.as_str(), "{what}: the JSON and the SIM's answer differ");
        assert_eq!(answer.json["txn_id"].as_str(), Some(plain.txn_id.to_hex().as_str()), "{what}: txn ids differ");
        assert!(outcome.approved(), "{what}: declined with {} after {resends:?}", answer.code());
        assert_eq!(answer.json["auth_code"].as_str(), Some(plain.auth_code.as_str()), "{what}: auth codes differ");
        self.approved_total += amount;
        if self.sole_payer {
            let expected = i64::try_from(OPENING_BALANCE - self.approved_total).unwrap();
            assert_eq!(plain.balance, expected, "{what}: the answer's balance shows a payment booked twice or lost");
        }
        self.payments.push(Payment {
            answer: BookedAnswer {
                order_no,
                amount,
                code: plain.response_code,
                auth_code: (!plain.auth_code.is_none()).then(|| plain.auth_code.as_str().to_owned()),
                txn_id: plain.txn_id,
            },
            resends,
            from_storage: issuer_time < last_sent,
        });
        self.payments.last().unwrap()
    }
}

/// Sends the same request bytes until authz processes them: HTTP 200 with a SIM answer. A
/// refused or reset connection, a timeout and a 503 mean the answer was lost; anything else,
/// including a refusal without a SIM answer (63: the retransmission was not recognised), fails.
/// Returns the answer, the resends and when the request that got the answer was sent.
async fn send_until_processed(
    bank: &Bank,
    client: &reqwest::Client,
    body: &[u8],
    jws: &str,
    what: &str,
) -> (Answer, Resends, OffsetDateTime) {
    let deadline = Instant::now() + PAYMENT_DEADLINE;
    let mut resends = Resends::default();
    loop {
        let sent = OffsetDateTime::now_utc();
        match tokio::time::timeout(ATTEMPT_TIMEOUT, bank.post(client, body.to_vec(), Some(jws))).await {
            Ok(Ok(answer)) if answer.status == 200 => {
                assert!(
                    answer.payer_answer().is_some(),
                    "{what}: answered {} without a SIM answer after {resends:?}: {}",
                    answer.code(),
                    String::from_utf8_lossy(&answer.body)
                );
                return (answer, resends, sent);
            }
            Ok(Ok(answer)) if answer.status == 503 => resends.unavailable += 1,
            Ok(Ok(answer)) => {
                panic!("{what}: unexpected HTTP {}: {}", answer.status, String::from_utf8_lossy(&answer.body))
            }
            Ok(Err(_)) => resends.connection += 1,
            Err(_) => resends.timeout += 1,
        }
        assert!(Instant::now() < deadline, "{what}: no processed answer within {PAYMENT_DEADLINE:?} ({resends:?})");
        tokio::time::sleep(RESEND_PAUSE).await;
    }
}

/// Pays until `stop`, then finishes the payment in flight.
async fn keep_paying(bank: Arc<Bank>, mut payer: Payer, stop: Arc<AtomicBool>) -> Payer {
    let client = bank.gateway();
    while !stop.load(Ordering::Relaxed) {
        payer.pay_once(&bank, &client).await;
    }
    payer
}

/// What the killer did.
#[derive(Default)]
struct Kills {
    /// From each kill of a serving authz to the readiness of its successor (start-up kills
    /// included).
    restarts: Vec<Duration>,
    /// Kills aimed at a start-up.
    during_start_up: u64,
}

/// How many processes logged that they were ready (the rest were killed before).
fn ready_lines(log: &Path) -> usize {
    std::fs::read_to_string(log).unwrap().matches("authorization server ready").count()
}

/// `kills` times in all: wait a random pause, SIGKILL authz and start it again; after every
/// [`START_UP_KILL_EVERY`]th kill the fresh process is killed once more a few milliseconds into
/// its start-up (opening the ledger, logging in to the HSM). Each restart is waited for until
/// ready before the next pause. Start-up kills only with `start_up_kills`.
async fn kill_and_restart(
    authz: &mut Service,
    admin: SocketAddr,
    kills: u64,
    start_up_kills: bool,
    rng: &mut StdRng,
) -> Kills {
    let mut done = Kills::default();
    let mut count = 0;
    while count < kills {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(KILL_PAUSE_MS))).await;
        let killed = Instant::now();
        authz.kill();
        authz.spawn();
        count += 1;
        if start_up_kills && count % START_UP_KILL_EVERY == 0 && count < kills {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(START_UP_KILL_MS))).await;
            authz.kill();
            authz.spawn();
            count += 1;
            done.during_start_up += 1;
        }
        authz.wait_ready(admin, "the restarted authz").await;
        done.restarts.push(killed.elapsed());
    }
    done
}

async fn create_accounts(bank: &Bank) -> Vec<Account> {
    let mut accounts = Vec::new();
    for number in ACCOUNTS {
        let mut spec = AccountSpec::debit(number, PASSWORD, OPENING_BALANCE);
        spec.daily_limit = OPENING_BALANCE;
        accounts.push(bank.create_account(&spec).await);
    }
    accounts
}

async fn register_payers(bank: &Bank, accounts: &[Account], seed: u64) -> Vec<Payer> {
    let mut payers = Vec::new();
    for (index, &account_index) in SIM_ACCOUNT.iter().enumerate() {
        let account = accounts[account_index].clone();
        let sim = bank.new_sim(&format!("89490127{index:011}"), &[&account]).await;
        payers.push(Payer {
            index,
            sim,
            account,
            sole_payer: SIM_ACCOUNT.iter().filter(|&&a| a == account_index).count() == 1,
            rng: StdRng::seed_from_u64(seed.wrapping_add(1 + index as u64)),
            payments: Vec::new(),
            approved_total: 0,
        });
    }
    payers
}

/// What each SIM read, for `mps_tests::booked::check_answers_are_booked`.
fn answers_read(payers: &[Payer]) -> Vec<SimAnswers> {
    let sim = |p: &Payer| SimAnswers::new(p.index, &p.sim.sim_id, &p.account, p.payments.iter().map(|x| &x.answer));
    payers.iter().map(sim).collect()
}

/// Nothing is booked that no SIM learned of, and nothing twice.
fn check_nothing_else_is_booked(path: &Path, payers: &[Payer]) {
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let count = |sql: &str| -> u64 {
        let n: i64 = conn.query_row(sql, [], |row| row.get(0)).unwrap_or_else(|e| panic!("{sql}: {e}"));
        u64::try_from(n).unwrap()
    };
    let answered = payers.iter().map(|p| p.payments.len() as u64).sum::<u64>();
    let approved =
        payers.iter().flat_map(|p| &p.payments).filter(|p| p.answer.code == ResponseCode::Approved).count() as u64;
    assert_eq!(count("SELECT count(*) FROM transactions"), answered, "sessions booked vs answers the SIMs read");
    assert_eq!(
        count("SELECT count(*) FROM transactions WHERE response_code = '00'"),
        approved,
        "approvals booked vs approvals the SIMs read"
    );
    assert_eq!(
        count("SELECT count(*) FROM journal_entries WHERE kind = 'authorization'"),
        approved,
        "authorization entries vs approvals the SIMs read"
    );
    for (what, sql) in [
        (
            "a (SIM, counter) booked twice",
            "SELECT count(*) FROM (SELECT 1 FROM transactions GROUP BY sim_id, counter HAVING count(*) > 1)",
        ),
        (
            "an order approved twice",
            "SELECT count(*) FROM (SELECT 1 FROM transactions WHERE response_code = '00' GROUP BY merchant_id, order_no HAVING count(*) > 1)",
        ),
        (
            "a transaction with two journal entries",
            "SELECT count(*) FROM (SELECT 1 FROM journal_entries WHERE txn_id IS NOT NULL GROUP BY txn_id HAVING count(*) > 1)",
        ),
    ] {
        assert_eq!(count(sql), 0, "{what}");
    }
}

/// Double entry holds and each balance is its opening balance minus its approvals.
async fn check_money(ledger: &Ledger, payers: &[Payer], accounts: &[Account]) {
    for (currency, sum) in ledger.postings_sum_by_currency().await.unwrap() {
        assert_eq!(sum, 0, "postings in {currency} do not sum to zero");
    }
    for account in accounts {
        let approved: u64 = payers.iter().filter(|p| &p.account == account).map(|p| p.approved_total).sum();
        let record = ledger.account(account).await.unwrap().unwrap();
        let expected = i64::try_from(OPENING_BALANCE - approved).unwrap();
        assert_eq!(record.balance, expected, "account {account}: opening balance minus approvals");
    }
    ledger.audit().await.unwrap();
}

/// A line on stdout that the test harness does not capture (it captures `print!` only).
fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").unwrap();
    stdout.flush().unwrap();
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(text.trim().parse().unwrap_or_else(|e| panic!("{name}={text}: {e}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_authz_loses_no_approval_and_books_none_twice() {
    let kills = env_number("MPS_CRASH_KILLS").unwrap_or(KILLS_DEFAULT);
    let seed = env_number("MPS_CRASH_SEED").unwrap_or_else(rand::random);
    say(&format!("authz crash test: {kills} kills, seed {seed} (MPS_CRASH_SEED={seed} replays the schedule)"));
    let program = build_binary("authz");

    // The ledger gets its accounts and SIMs through the in-process server's parts; that server
    // stops (closing the ledger) before the `authz` process opens the same file.
    let (listen, admin) = (free_port(), free_port());
    let files = Bank::builder().files().await;
    let config = files.dir.path().join("authz-process.toml");
    std::fs::write(&config, files.binary_config_text(listen, admin, PIN_ENV)).unwrap();
    let mut bank = Bank::start_from(files).await;
    let accounts = create_accounts(&bank).await;
    let mut payers = register_payers(&bank, &accounts, seed).await;
    bank.shutdown().await;
    bank.url = format!("https://{listen}");
    let token = TestToken::shared().unwrap();
    let env: Vec<(OsString, OsString)> = vec![
        (PIN_ENV.into(), USER_PIN.into()),
        ("SOFTHSM2_CONF".into(), token.softhsm_conf.clone().into()),
        ("MPS_AUTHZ__LOG__LEVEL".into(), "info".into()),
    ];
    let mut authz = Service::start_with_env("authz", program, config, bank.dir.path(), env);
    authz.wait_ready(admin, "authz").await;

    let bank = Arc::new(bank);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> =
        payers.drain(..).map(|payer| tokio::spawn(keep_paying(Arc::clone(&bank), payer, Arc::clone(&stop)))).collect();
    let start_up_kills = env_number("MPS_CRASH_START_UP_KILLS").unwrap_or(0) != 0;
    let killed = kill_and_restart(&mut authz, admin, kills, start_up_kills, &mut StdRng::seed_from_u64(seed)).await;
    stop.store(true, Ordering::Relaxed);
    for (index, task) in tasks.into_iter().enumerate() {
        payers.push(task.await.unwrap_or_else(|e| panic!("SIM {index} (seed {seed}): {e}")));
    }
    let crash_run = started.elapsed();

    // Every SIM goes on paying; then a last SIGKILL, so that the checks read what a crash leaves.
    let client = bank.gateway();
    for payer in &mut payers {
        payer.pay_once(&bank, &client).await;
    }
    authz.kill();
    let killed_before_ready = (1 + kills as usize).saturating_sub(ready_lines(&authz.log));
    let ledger_path = bank.config.ledger.path.clone();
    let ledger = Ledger::open(&ledger_path, bank.config.ledger.tuning.clone()).unwrap();
    check_answers_are_booked(&ledger, &answers_read(&payers)).await;
    check_nothing_else_is_booked(&ledger_path, &payers);
    check_money(&ledger, &payers, &accounts).await;
    ledger.close().await;

    let payments: Vec<&Payment> = payers.iter().flat_map(|p| &p.payments).collect();
    let mut resends = Resends::default();
    payments.iter().for_each(|p| resends.add(p.resends));
    let lost = payments.iter().filter(|p| p.resends.total() > 0).count();
    let from_storage = payments.iter().filter(|p| p.from_storage).count();
    let approved = payments.iter().filter(|p| p.answer.code == ResponseCode::Approved).count();
    let restarts = &killed.restarts;
    let restart_ms_mean = restarts.iter().map(Duration::as_millis).sum::<u128>() / restarts.len().max(1) as u128;
    let restart_ms_max = restarts.iter().map(Duration::as_millis).max().unwrap_or(0);
    say(&format!(
        "authz crash test: {kills} kills ({} aimed at a start-up, {killed_before_ready} before ready) in {:.1} s (kill to ready: mean {restart_ms_mean} ms, \
         max {restart_ms_max} ms); \
         {} SIMs, {} payments, {approved} approved; {lost} answers lost, {from_storage} of them booked before the \
         crash and answered from storage; {} resends ({} connection refused or reset, {} HTTP 503, {} timeouts); \
         seed {seed}",
        killed.during_start_up,
        crash_run.as_secs_f64(),
        payers.len(),
        payments.len(),
        resends.total(),
        resends.connection,
        resends.unavailable,
        resends.timeout,
    ));
}
