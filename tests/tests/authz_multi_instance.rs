//! Several authorization servers on one ledger (DESIGN.md section 10, LEDGER.md "Several
//! instances on PostgreSQL"): two `authz` processes, A and B, share one PostgreSQL database and
//! copies of one HSM token, behind the `gateway` process, which routes the issuer's IIN to both
//! (`balance = "round-robin"`). Seven SIMs pay at once from three accounts that allow a fraction
//! of what is asked: a debit account and a credit line by their funds, a debit account by its
//! daily limit, two or three SIMs to an account. A SIM's successive payments go in turn through
//! the gateway, straight to A and straight to B (as a second gateway would send them), so both
//! instances book sessions of the same SIM, and book on the same account at the same time. Once
//! a third of the payments are answered, A is SIGKILLed while it is deciding one. The gateway
//! fails over to B; a request lost with A is sent again, byte for byte, through the gateway.
//!
//! Afterwards, with every process stopped, from the database: every answer a SIM read is booked
//! once, as it said, under its session; nothing else is booked (sessions, approvals,
//! authorization entries and their postings counted against the answers), no (SIM, counter) and
//! no order twice; each balance is its opening balance minus the approvals the SIMs were told
//! of, so the approvals never exceed the funds, and no balance is below what its kind allows; no
//! day's approvals exceed the daily limit; postings sum to zero per currency and
//! `Ledger::audit` passes; neither instance logged a broken ledger invariant (the ledger's own
//! checks refuse, with a 503, a booking that a race between instances got past the database:
//! READ COMMITTED in place of the writer's REPEATABLE READ fails here). Before that, B answers /readyz and the
//! gateway reports A down and B healthy.
//!
//! The test builds the `authz` and `gateway` binaries into its own target directory first
//! (`mps_tests::process::build_binary`). It needs PostgreSQL's server binaries (`scripts/test`
//! installs them); without them it fails, saying what to install. The summary (payments,
//! declines, resends, the ledger's retried groups) goes to stdout past the harness's capture.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::ffi::OsString;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mps_authz::ledger::postgres_testing::{DATABASE, PgCluster};
use mps_authz::ledger::{AccountKind, Ledger};
use mps_hsm::testing::{TestToken, USER_PIN};
use mps_pki::Role;
use mps_protocol::{Account, Currency, ResponseCode, TxnId};
use mps_tests::booked::{BookedAnswer, SimAnswers, check_answers_are_booked};
use mps_tests::process::{Service, build_binary};
use mps_tests::{AccountSpec, Answer, Bank, IIN, Leaf, TestSim, copy_test_token, free_port, post_json, request};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

const PASSWORD: &str = "8642";
/// Each account allows a fraction of what its SIMs try to pay, so that many payments are
/// declined while two instances book on it at once: a debit account and a credit line by
/// their funds, and a debit account by its daily limit (a sum over the day's approvals, which
/// two instances could each check and together exceed).
const ACCOUNTS: [AccountPlan; 3] = [
    AccountPlan {
        number: "4000120000014000",
        kind: AccountKind::Debit,
        opening_balance: 30_000,
        credit_limit: 0,
        daily_limit: 10_000_000,
        binding: ResponseCode::InsufficientFunds,
    },
    AccountPlan {
        number: "4000120000014001",
        kind: AccountKind::Debit,
        opening_balance: 10_000_000,
        credit_limit: 0,
        daily_limit: 30_000,
        binding: ResponseCode::ExceedsDailyLimit,
    },
    AccountPlan {
        number: "4000120000014002",
        kind: AccountKind::Credit,
        opening_balance: 0,
        credit_limit: 28_000,
        daily_limit: 10_000_000,
        binding: ResponseCode::InsufficientFunds,
    },
];
/// SIM `i` pays from `ACCOUNTS[SIM_ACCOUNT[i]]`.
const SIM_ACCOUNT: [usize; 7] = [0, 0, 1, 1, 1, 2, 2];
const PAYMENTS_PER_SIM: usize = 30;
/// Minor units: sixty to ninety payments of about 11.00 EUR on each account, which allows
/// 280.00 to 300.00.
const AMOUNT: std::ops::RangeInclusive<u64> = 200..=2_000;
/// A is killed once this many payments have been answered (of 210).
const KILL_AFTER_PAYMENTS: usize = 70;
/// The order in which a SIM's successive payments are sent, shifted by one per SIM.
const ROUTES: [Route; 3] = [Route::Gateway, Route::InstanceA, Route::InstanceB];
/// One request's time limit; a request stuck longer counts as lost and is sent again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one payment may take to get a processed answer, resends included.
const PAYMENT_DEADLINE: Duration = Duration::from_secs(30);
const RESEND_PAUSE: Duration = Duration::from_millis(50);
/// How long the kill waits for A to be deciding a payment.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(2);
/// How long the gateway may take to see B healthy again once the payments are done.
const SETTLE_WAIT: Duration = Duration::from_secs(5);
/// The variable that carries the HSM PIN to both `authz` processes (their `hsm.pin_env`).
const PIN_ENV: &str = "MPS_HSM_PIN";

/// An account's kind, money and limit.
#[derive(Clone, Copy)]
struct AccountPlan {
    number: &'static str,
    kind: AccountKind,
    opening_balance: u64,
    credit_limit: u64,
    daily_limit: u64,
    /// The decline its SIMs meet once it has given what it allows.
    binding: ResponseCode,
}

impl AccountPlan {
    /// What may be spent from the opening state: the balance, or the credit line.
    fn spendable(&self) -> u64 {
        self.opening_balance + self.credit_limit
    }

    /// The lowest balance the account's kind allows.
    fn balance_floor(&self) -> i64 {
        match self.kind {
            AccountKind::Debit => 0,
            AccountKind::Credit => -i64::try_from(self.credit_limit).unwrap(),
        }
    }

    fn spec(&self) -> AccountSpec {
        AccountSpec {
            kind: self.kind,
            balance: self.opening_balance,
            credit_limit: self.credit_limit,
            daily_limit: self.daily_limit,
            ..AccountSpec::debit(self.number, PASSWORD, 0)
        }
    }
}

/// Where a request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The gateway process, as the merchant.
    Gateway,
    /// Straight to authz A, with the gateway's client certificate.
    InstanceA,
    /// Straight to authz B.
    InstanceB,
}

/// Why a request had to be sent again.
#[derive(Debug, Clone, Copy)]
enum Lost {
    /// Connection refused or reset, or the answer cut off.
    Connection,
    /// HTTP 503: the instance could not decide now (a ledger conflict, an instance going away)
    /// or the gateway found no instance.
    Unavailable,
    /// HTTP 504 from the gateway: outcome unknown.
    GatewayTimeout,
    /// No answer within [`ATTEMPT_TIMEOUT`].
    Timeout,
}

/// A payment as its SIM learned it from the processed answer it read.
#[derive(Debug)]
struct Payment {
    answer: BookedAnswer,
    /// Where the answer came from.
    answered_by: Route,
    /// Each attempt that got no processed answer.
    lost: Vec<LostAttempt>,
    /// Sent after A was killed.
    after_the_kill: bool,
}

impl Payment {
    /// An attempt of it was on its way to A, straight or through the gateway, when A was
    /// killed, and got no answer.
    fn cut_by_the_kill(&self) -> bool {
        self.lost
            .iter()
            .any(|attempt| attempt.during_the_kill && matches!(attempt.why, Lost::Connection | Lost::Timeout))
    }
}

/// An attempt that got no processed answer.
#[derive(Debug)]
struct LostAttempt {
    route: Route,
    why: Lost,
    /// Sent before A was killed, ended after.
    during_the_kill: bool,
}

/// What every payer task shares.
struct Network {
    bank: Bank,
    /// The gateway's merchant-facing URL and the merchant's mTLS client of it.
    gateway_url: String,
    merchant_client: reqwest::Client,
    /// Both instances' URLs and the gateway's mTLS client of them.
    instance_urls: [String; 2],
    instance_client: reqwest::Client,
    /// Payments answered so far, over all SIMs.
    answered: AtomicUsize,
    /// Set when A has been killed.
    killed_at: std::sync::OnceLock<Instant>,
}

impl Network {
    async fn post(&self, route: Route, body: &[u8], jws: &str) -> Result<Answer, reqwest::Error> {
        let (client, base) = match route {
            Route::Gateway => (&self.merchant_client, &self.gateway_url),
            Route::InstanceA => (&self.instance_client, &self.instance_urls[0]),
            Route::InstanceB => (&self.instance_client, &self.instance_urls[1]),
        };
        post_json(client, &format!("{base}/v1/authorizations"), body.to_vec(), Some(jws)).await
    }

    fn killed_before(&self, moment: Instant) -> bool {
        self.killed_at.get().is_some_and(|killed| *killed <= moment)
    }
}

/// One SIM and what it has paid.
struct Payer {
    index: usize,
    sim: TestSim,
    account: Account,
    rng: StdRng,
    payments: Vec<Payment>,
}

impl Payer {
    /// Every payment of this SIM, one after the other (each needs the RSN of the answer before).
    async fn pay_all(mut self, network: Arc<Network>) -> Payer {
        for number in 0..PAYMENTS_PER_SIM {
            let planned = ROUTES[(self.index + number) % ROUTES.len()];
            self.pay_once(&network, planned).await;
            network.answered.fetch_add(1, Ordering::Relaxed);
        }
        self
    }

    /// One payment: a new packet for the next order, sent to `planned` and, when lost there,
    /// again through the gateway until it is processed; its answer read by the SIM.
    async fn pay_once(&mut self, network: &Network, planned: Route) {
        let order_no = format!("MI{}-{:03}", self.index, self.payments.len() + 1);
        let what = format!("SIM {} order {order_no}", self.index);
        let amount = self.rng.gen_range(AMOUNT);
        let packet = self.sim.pay(&self.account, &order_no, amount, PASSWORD);
        let (body, jws) = network.bank.merchant.request(&packet, &order_no, amount, Currency::EUR.code());
        let started = Instant::now();
        let deadline = started + PAYMENT_DEADLINE;
        let mut route = planned;
        let mut lost = Vec::new();
        let answer = loop {
            let sent = Instant::now();
            let why = match tokio::time::timeout(ATTEMPT_TIMEOUT, network.post(route, &body, &jws)).await {
                Ok(Ok(answer)) if answer.status == 200 => break answer,
                Ok(Ok(answer)) if answer.status == 503 => Lost::Unavailable,
                Ok(Ok(answer)) if answer.status == 504 && route == Route::Gateway => Lost::GatewayTimeout,
                Ok(Ok(answer)) => panic!(
                    "{what}: {route:?} answered HTTP {} after {lost:?}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                ),
                Ok(Err(_)) => Lost::Connection,
                Err(_) => Lost::Timeout,
            };
            let during_the_kill = !network.killed_before(sent) && network.killed_at.get().is_some();
            lost.push(LostAttempt { route, why, during_the_kill });
            assert!(Instant::now() < deadline, "{what}: no processed answer within {PAYMENT_DEADLINE:?}: {lost:?}");
            tokio::time::sleep(RESEND_PAUSE).await;
            // A merchant whose answer was lost sends the same bytes again through the gateway.
            route = Route::Gateway;
        };
        let (code, auth_code, txn_id) = self.read(network, &what, &answer, amount);
        let after_the_kill = network.killed_before(started);
        self.payments.push(Payment {
            answer: BookedAnswer { order_no, amount, code, auth_code, txn_id },
            answered_by: route,
            lost,
            after_the_kill,
        });
    }

    /// Checks the answer (bank signature, JSON against the SIM's decrypted answer) and lets the
    /// SIM read it: response code, auth code, transaction id.
    fn read(
        &mut self,
        network: &Network,
        what: &str,
        answer: &Answer,
        amount: u64,
    ) -> (ResponseCode, Option<String>, TxnId) {
        assert!(answer.payer_answer().is_some(), "{what}: processed without a SIM answer: {:?}", answer.json);
        // Both instances sign with the same key, each in its own copy of the HSM token.
        network.bank.verify_bank_signature(answer);
        let outcome = self.sim.read_answer(answer);
        let plain = &outcome.answer;
        assert_eq!(answer.code(), plain.response_code.as_str(), "{what}: the JSON and the SIM's answer differ");
        assert_eq!(answer.json["txn_id"].as_str(), Some(plain.txn_id.to_hex().as_str()), "{what}: txn ids differ");
        assert!(
            matches!(
                plain.response_code,
                ResponseCode::Approved | ResponseCode::InsufficientFunds | ResponseCode::ExceedsDailyLimit
            ),
            "{what} ({amount}): answered {}, neither approved nor declined for funds or the daily limit",
            answer.code()
        );
        let auth_code = outcome.approved().then(|| plain.auth_code.as_str().to_owned());
        assert_eq!(answer.json["auth_code"].as_str(), auth_code.as_deref(), "{what}: auth codes differ");
        (plain.response_code, auth_code, plain.txn_id)
    }

    fn approved_total(&self) -> u64 {
        self.payments.iter().filter(|p| p.answer.code == ResponseCode::Approved).map(|p| p.answer.amount).sum()
    }
}

/// The two authz processes, their admin addresses, and the gateway's.
struct Processes {
    dir: tempfile::TempDir,
    authz_a: Service,
    authz_b: Service,
    listen_a: SocketAddr,
    listen_b: SocketAddr,
    admin_a: SocketAddr,
    admin_b: SocketAddr,
    gateway: Service,
    gateway_admin: SocketAddr,
}

/// Accounts and SIMs go into the PostgreSQL ledger through the in-process server (then
/// stopped); A and B are started on that database, B on a copy of the HSM token; then the
/// gateway routing to A, then B.
async fn start_network(cluster: &PgCluster) -> (Arc<Network>, Vec<Payer>, Processes) {
    let authz = build_binary("authz");
    let gateway_program = build_binary("gateway");
    let dir = tempfile::tempdir().unwrap();
    let files = Bank::builder().with_postgres_ledger(cluster.connection_string(DATABASE)).files().await;
    let (listen_a, admin_a, listen_b, admin_b) = (free_port(), free_port(), free_port(), free_port());
    let config_a = dir.path().join("authz-a.toml");
    let config_b = dir.path().join("authz-b.toml");
    std::fs::write(&config_a, files.binary_config_text(listen_a, admin_a, PIN_ENV)).unwrap();
    std::fs::write(&config_b, files.binary_config_text(listen_b, admin_b, PIN_ENV)).unwrap();
    let mut bank = Bank::start_from(files).await;
    let accounts = create_accounts(&bank).await;
    let payers = register_payers(&bank, &accounts).await;
    bank.shutdown().await;

    let hsm_b = dir.path().join("hsm-b");
    let softhsm_conf_b = copy_test_token(&hsm_b);
    let env = |softhsm_conf: &Path| -> Vec<(OsString, OsString)> {
        vec![
            (PIN_ENV.into(), USER_PIN.into()),
            ("SOFTHSM2_CONF".into(), softhsm_conf.into()),
            ("MPS_AUTHZ__LOG__LEVEL".into(), "info".into()),
        ]
    };
    let softhsm_conf_a = TestToken::shared().unwrap().softhsm_conf.clone();
    let mut authz_a = Service::start_with_env("authz-a", authz.clone(), config_a, dir.path(), env(&softhsm_conf_a));
    let mut authz_b = Service::start_with_env("authz-b", authz, config_b, dir.path(), env(&softhsm_conf_b));
    authz_a.wait_ready(admin_a, "authz A").await;
    authz_b.wait_ready(admin_b, "authz B").await;

    let gateway_server = bank.pki.issue("gateway-server", &request(Role::GatewayServer, "gateway"));
    let merchant_tls = bank.pki.issue("merchant-tls", &request(Role::Merchant, "merchant tls"));
    let (gateway_listen, gateway_admin) = (free_port(), free_port());
    let instances = [(listen_a, admin_a), (listen_b, admin_b)];
    let gateway_config = dir.path().join("gateway.toml");
    let text = gateway_config_text(&bank, &gateway_server, gateway_listen, gateway_admin, &instances);
    std::fs::write(&gateway_config, text).unwrap();
    let mut gateway = Service::start_with_env("gateway", gateway_program, gateway_config, dir.path(), Vec::new());
    gateway.wait_ready(gateway_admin, "the gateway").await;

    let network = Network {
        gateway_url: format!("https://{gateway_listen}"),
        merchant_client: bank.pki.client(Role::GatewayServer, Some(&merchant_tls)),
        instance_urls: [format!("https://{listen_a}"), format!("https://{listen_b}")],
        instance_client: bank.gateway(),
        bank,
        answered: AtomicUsize::new(0),
        killed_at: std::sync::OnceLock::new(),
    };
    let processes = Processes { dir, authz_a, authz_b, listen_a, listen_b, admin_a, admin_b, gateway, gateway_admin };
    (Arc::new(network), payers, processes)
}

/// The gateway's configuration file: both instances of the issuer, each request starting at
/// the next in turn, health probed every 200 ms; a rate limit no test payment reaches.
fn gateway_config_text(
    bank: &Bank,
    server: &Leaf,
    listen: SocketAddr,
    admin: SocketAddr,
    instances: &[(SocketAddr, SocketAddr)],
) -> String {
    let instances: Vec<String> = instances
        .iter()
        .map(|(url, admin)| format!("{{ url = \"https://{url}\", health_url = \"http://{admin}/readyz\" }}"))
        .collect();
    format!(
        r#"[server]
listen = "{listen}"
certificate = "{server_cert}"
private_key = "{server_key}"
client_ca = ["{root}"]
client_crls = ["{crls}"]
[admin]
listen = "{admin}"
[upstream]
certificate = "{client_cert}"
private_key = "{client_key}"
issuer_ca = ["{root}"]
issuer_crls = ["{crls}"]
health_interval_ms = 200
[rate_limit]
rate_per_second = 10000
burst = 10000
[issuers.{iin}]
instances = [{instances}]
balance = "round-robin"
request_timeout_ms = 5000
attempts_max = 3
deadline_ms = 12000
[log]
level = "info"
"#,
        server_cert = server.chain_file.display(),
        server_key = server.key_file.display(),
        client_cert = bank.gateway_leaf.chain_file.display(),
        client_key = bank.gateway_leaf.key_file.display(),
        root = bank.pki.root_file().display(),
        crls = bank.pki.crls_file().display(),
        iin = bank.iin,
        instances = instances.join(", "),
    )
}

async fn create_accounts(bank: &Bank) -> Vec<Account> {
    let mut accounts = Vec::new();
    for funds in &ACCOUNTS {
        accounts.push(bank.create_account(&funds.spec()).await);
    }
    accounts
}

async fn register_payers(bank: &Bank, accounts: &[Account]) -> Vec<Payer> {
    let seed: u64 = rand::random();
    say(&format!("authz multi-instance test: amounts from seed {seed}"));
    let mut payers = Vec::new();
    for (index, &account_index) in SIM_ACCOUNT.iter().enumerate() {
        let account = accounts[account_index].clone();
        let sim = bank.new_sim(&format!("89490128{index:011}"), &[&account]).await;
        let rng = StdRng::seed_from_u64(seed.wrapping_add(index as u64));
        payers.push(Payer { index, sim, account, rng, payments: Vec::new() });
    }
    payers
}

/// Waits until `count` payments have been answered and A is deciding at least one (its
/// /metrics `in_flight`, for at most [`IN_FLIGHT_WAIT`]), then SIGKILLs A: so that the kill
/// most likely cuts requests, straight ones and the gateway's (the summary counts them).
async fn kill_a_after(network: &Network, processes: &mut Processes, count: usize) {
    let deadline = Instant::now() + PAYMENT_DEADLINE;
    while network.answered.load(Ordering::Relaxed) < count {
        assert!(Instant::now() < deadline, "{count} payments were not answered within {PAYMENT_DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
    let metrics = format!("http://{}/metrics", processes.admin_a);
    let deadline = Instant::now() + IN_FLIGHT_WAIT;
    while Instant::now() < deadline {
        if let Ok(response) = client.get(&metrics).send().await
            && let Ok(text) = response.text().await
            && sample(&text, "mps_authz_in_flight ") > 0
        {
            break;
        }
    }
    // Set first: a request cut by the kill may fail before `kill` returns.
    network.killed_at.set(Instant::now()).unwrap();
    processes.authz_a.kill();
}

/// B is ready and has approved payments; the gateway is ready, with A down and B healthy
/// (waited for up to [`SETTLE_WAIT`]: under load a slow probe may have marked B down for a
/// moment). Returns B's and the gateway's counters for the summary.
async fn check_the_survivors(processes: &Processes) -> Survivors {
    let get = async |url: String| -> (u16, String) {
        let response = reqwest::get(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let (status, text) = get(format!("http://{}/readyz", processes.admin_b)).await;
    assert_eq!(status, 200, "B's /readyz: {text}");
    let (_, metrics) = get(format!("http://{}/metrics", processes.admin_b)).await;
    let approved_by_b = sample(&metrics, "mps_authz_responses_total{code=\"00\"}");
    assert!(approved_by_b > 0, "B approved nothing:\n{metrics}");
    let group_retries_b = sample(&metrics, "mps_authz_ledger_group_retries_total");
    let healthy = |metrics: &str, listen: SocketAddr| {
        let instance = format!("mps_gateway_instance_healthy{{instance=\"https://{listen}/\",issuer=\"{IIN}\"}}");
        sample(metrics, &instance)
    };
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        let (status, text) = get(format!("http://{}/readyz", processes.gateway_admin)).await;
        let (_, metrics) = get(format!("http://{}/metrics", processes.gateway_admin)).await;
        let (a, b) = (healthy(&metrics, processes.listen_a), healthy(&metrics, processes.listen_b));
        if status == 200 && (a, b) == (0, 1) {
            let gateway_retries = samples_sum(&metrics, "mps_gateway_upstream_retries_total{");
            let gateway_log = std::fs::read_to_string(&processes.gateway.log).unwrap();
            let probe_timeouts = gateway_log.matches("health probe timed out").count();
            return Survivors { approved_by_b, group_retries_b, gateway_retries, probe_timeouts };
        }
        assert!(
            Instant::now() < deadline,
            "the gateway: /readyz {status} ({text}), A healthy {a}, B healthy {b} (expected 0 and 1)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the survivors counted.
struct Survivors {
    approved_by_b: u64,
    /// B's group commits run again after a lost serialization race.
    group_retries_b: u64,
    /// The gateway's attempts after the first, over all requests.
    gateway_retries: u64,
    /// Instances the gateway marked down because /readyz took longer than its health timeout.
    probe_timeouts: usize,
}

/// The value of the sample that starts with `name` (a counter or gauge).
fn sample(text: &str, name: &str) -> u64 {
    let line = text.lines().find(|line| line.starts_with(name)).unwrap_or_else(|| panic!("no {name}:\n{text}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    value as u64
}

/// The sum of the samples that start with `prefix` (0 when there is none).
fn samples_sum(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

/// What each SIM read, for `mps_tests::booked::check_answers_are_booked`.
fn answers_read(payers: &[Payer]) -> Vec<SimAnswers> {
    let sim = |p: &Payer| SimAnswers::new(p.index, &p.sim.sim_id, &p.account, p.payments.iter().map(|x| &x.answer));
    payers.iter().map(sim).collect()
}

/// Nothing is booked that no SIM learned of, and nothing twice: counted in the database.
async fn check_nothing_else_is_booked(client: &tokio_postgres::Client, payers: &[Payer]) {
    let count = async |sql: &str| -> u64 {
        let row = client.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        u64::try_from(row.get::<_, i64>(0)).unwrap()
    };
    let payments = payers.iter().flat_map(|p| &p.payments);
    let answered = payments.clone().count() as u64;
    let approved = payments.filter(|p| p.answer.code == ResponseCode::Approved).count() as u64;
    assert_eq!(count("SELECT count(*) FROM transactions").await, answered, "sessions booked vs answers the SIMs read");
    assert_eq!(
        count("SELECT count(*) FROM transactions WHERE response_code = '00'").await,
        approved,
        "approvals booked vs approvals the SIMs read"
    );
    assert_eq!(
        count("SELECT count(*) FROM journal_entries WHERE kind = 'authorization'").await,
        approved,
        "authorization entries vs approvals the SIMs read"
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM postings p JOIN journal_entries e ON e.id = p.entry_id WHERE e.kind = 'authorization'"
        )
        .await,
        2 * approved,
        "postings of authorizations vs approvals the SIMs read (two legs each)"
    );
    for (what, sql) in [
        (
            "a (SIM, counter) booked twice",
            "SELECT count(*) FROM (SELECT 1 FROM transactions GROUP BY sim_id, counter HAVING count(*) > 1) AS twice",
        ),
        (
            "an order approved twice",
            "SELECT count(*) FROM (SELECT 1 FROM transactions WHERE response_code = '00' \
             GROUP BY merchant_id, order_no HAVING count(*) > 1) AS twice",
        ),
        (
            "a transaction with two journal entries",
            "SELECT count(*) FROM (SELECT 1 FROM journal_entries WHERE txn_id IS NOT NULL \
             GROUP BY txn_id HAVING count(*) > 1) AS twice",
        ),
    ] {
        assert_eq!(count(sql).await, 0, "{what}");
    }
}

/// No account's approvals of a business day sum to more than its daily limit, summed in the
/// database.
async fn check_daily_limits(client: &tokio_postgres::Client) {
    let sql = "SELECT account, business_day, CAST(sum(amount) AS BIGINT) FROM transactions \
               WHERE response_code = '00' GROUP BY account, business_day";
    for row in client.query(sql, &[]).await.unwrap() {
        let (number, day, total): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        let index =
            ACCOUNTS.iter().position(|plan| plan.number == number).expect("approvals only on the test's accounts");
        let limit = ACCOUNTS[index].daily_limit;
        assert!(
            u64::try_from(total).unwrap() <= limit,
            "account {index}: {total} approved on {day}, over its daily limit of {limit}"
        );
    }
}

/// Double entry holds; each balance is its opening balance minus the approvals its SIMs were
/// told of, within what its kind allows; the approvals never exceeded the funds.
async fn check_money(ledger: &Ledger, payers: &[Payer], accounts: &[Account]) {
    for (currency, sum) in ledger.postings_sum_by_currency().await.unwrap() {
        assert_eq!(sum, 0, "postings in {currency} do not sum to zero");
    }
    for (funds, account) in ACCOUNTS.iter().zip(accounts) {
        let approved: u64 = payers.iter().filter(|p| &p.account == account).map(Payer::approved_total).sum();
        assert!(approved <= funds.spendable(), "account {account}: {approved} approved of {} funds", funds.spendable());
        let record = ledger.account(account).await.unwrap().unwrap();
        let expected = i64::try_from(funds.opening_balance).unwrap() - i64::try_from(approved).unwrap();
        assert_eq!(record.balance, expected, "account {account}: opening balance minus the approvals answered");
        assert!(
            record.balance >= funds.balance_floor(),
            "account {account}: balance {} below its kind's floor",
            record.balance
        );
    }
    ledger.audit().await.unwrap();
}

/// The run tested what it claims: each SIM had sessions decided by A and by B, each account
/// approvals and declines for its funds or limit, and payments were answered after the kill.
fn check_the_run_was_meaningful(payers: &[Payer]) {
    for payer in payers {
        let by = |route| payer.payments.iter().any(|p| p.answered_by == route && p.lost.is_empty());
        assert!(by(Route::InstanceA) && by(Route::InstanceB), "SIM {}: not booked by both instances", payer.index);
    }
    for (account_index, plan) in ACCOUNTS.iter().enumerate() {
        let codes: Vec<ResponseCode> = payers
            .iter()
            .filter(|p| SIM_ACCOUNT[p.index] == account_index)
            .flat_map(|p| p.payments.iter().map(|payment| payment.answer.code))
            .collect();
        assert!(codes.contains(&ResponseCode::Approved), "account {account_index}: no approval");
        let binding = plan.binding.as_str();
        assert!(codes.contains(&plan.binding), "account {account_index}: never declined with {binding}");
    }
    let after: Vec<&Payment> = payers.iter().flat_map(|p| &p.payments).filter(|p| p.after_the_kill).collect();
    assert!(after.iter().any(|p| p.answered_by == Route::Gateway), "no payment through the gateway after the kill");
}

/// Neither instance found a ledger invariant broken (LEDGER.md, "Invariants": checked before
/// and after every write) or a row it could not read: under a race between instances that the
/// database let through, the ledger's own checks refuse the booking (503, nothing stored), so
/// the books stay right and only the logs tell.
fn check_no_invariant_was_broken(processes: &Processes) {
    for (name, log) in [("A", &processes.authz_a.log), ("B", &processes.authz_b.log)] {
        let text = std::fs::read_to_string(log).unwrap();
        let broken: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("ledger invariant violated") || line.contains("ledger data corrupt"))
            .collect();
        assert!(
            broken.is_empty(),
            "instance {name}: {} ledger invariant failures, the first:\n{}",
            broken.len(),
            broken[0]
        );
    }
}

/// A line on stdout that the test harness does not capture.
fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").unwrap();
    stdout.flush().unwrap();
}

fn summary(payers: &[Payer], survivors: &Survivors, elapsed: Duration) -> String {
    let payments: Vec<&Payment> = payers.iter().flat_map(|p| &p.payments).collect();
    let count = |code| payments.iter().filter(|p| p.answer.code == code).count();
    let cut = payments.iter().filter(|p| p.cut_by_the_kill()).count();
    let lost: Vec<&LostAttempt> = payments.iter().flat_map(|p| &p.lost).collect();
    let lost_count = |route: Route, why: fn(&Lost) -> bool| {
        lost.iter().filter(|attempt| attempt.route == route && !attempt.during_the_kill && why(&attempt.why)).count()
    };
    let refused_by_dead_a = lost_count(Route::InstanceA, |why| matches!(why, Lost::Connection));
    let unavailable = |why: &Lost| matches!(why, Lost::Unavailable);
    let gateway_503 = lost_count(Route::Gateway, unavailable);
    let instance_503 = lost_count(Route::InstanceA, unavailable) + lost_count(Route::InstanceB, unavailable);
    format!(
        "authz multi-instance test: {} payments in {:.1} s: {} approved, {} declined for funds, {} for the daily \
         limit; {cut} cut by the kill of A; {} requests sent again through the gateway ({refused_by_dead_a} refused \
         by the dead A, {instance_503} answered 503 by an instance, {gateway_503} by the gateway); B approved {}; \
         B's ledger ran {} groups again after a lost serialization race; the gateway made {} attempts after a \
         request's first, and marked a live instance down {} times for a slow /readyz",
        payments.len(),
        elapsed.as_secs_f64(),
        count(ResponseCode::Approved),
        count(ResponseCode::InsufficientFunds),
        count(ResponseCode::ExceedsDailyLimit),
        lost.len(),
        survivors.approved_by_b,
        survivors.group_retries_b,
        survivors.gateway_retries,
        survivors.probe_timeouts,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_postgres_ledger_lose_nothing_when_one_is_killed() {
    let cluster = PgCluster::start().unwrap();
    let (network, payers, mut processes) = start_network(&cluster).await;
    let accounts: Vec<Account> = ACCOUNTS.iter().map(|funds| Account::new(funds.number).unwrap()).collect();

    let started = Instant::now();
    let tasks: Vec<_> = payers.into_iter().map(|payer| tokio::spawn(payer.pay_all(Arc::clone(&network)))).collect();
    kill_a_after(&network, &mut processes, KILL_AFTER_PAYMENTS).await;
    let mut payers = Vec::new();
    for (index, task) in tasks.into_iter().enumerate() {
        payers.push(task.await.unwrap_or_else(|e| panic!("SIM {index}: {e}")));
    }
    let elapsed = started.elapsed();
    let survivors = check_the_survivors(&processes).await;

    // Every process stops, so that the checks read what the instances left in the database.
    processes.gateway.kill();
    processes.authz_b.kill();
    let config = &network.bank.config.ledger;
    let ledger = Ledger::open_store(&config.store().unwrap(), config.tuning.clone(), None).unwrap();
    check_answers_are_booked(&ledger, &answers_read(&payers)).await;
    let (client, connection) = cluster.config().connect(tokio_postgres::NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    check_nothing_else_is_booked(&client, &payers).await;
    check_daily_limits(&client).await;
    drop(client);
    connection.await.unwrap().unwrap();
    check_money(&ledger, &payers, &accounts).await;
    ledger.close().await;
    check_no_invariant_was_broken(&processes);
    check_the_run_was_meaningful(&payers);
    say(&summary(&payers, &survivors, elapsed));
    drop(processes.dir);
    drop(cluster);
}
