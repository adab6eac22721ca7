//! During every attack an honest payment still succeeds within its latency budget. Each test
//! starts a bank, sets attacker tasks going that repeat one attack until the honest payments are
//! done, and meanwhile has another SIM pay through the gateway's connection: every honest
//! payment is approved (00) within [`HONEST_LATENCY_BUDGET`], every round of the attack got the
//! refusal it should, and the attacked SIM's account did not move. The attacks: clear fields
//! that differ from the packet, another issuer's packet, bodies over the limit (just over and
//! huge), bodies and headers dribbled a byte at a time on many connections, two thousand idle
//! authenticated connections, a flood of bad MACs for one SIM, TLS clients with expired,
//! revoked and foreign certificates, and merchant signatures from expired, revoked and foreign
//! certificates. `--nocapture` shows the honest latencies per attack (docs/RELIABILITY.md
//! quotes a run).
//!
//! The tests take turns ([`SERIAL`]): latency measured while another test's attack loads the
//! same cores would measure that test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mps_authz::config::AuthzConfig;
use mps_pki::Role;
use mps_pki::ca::{IssueRequest, Subject};
use mps_protocol::wire::PayerPacket;
use mps_protocol::{Account, Currency, Iin, MerchantId, SimId};
use mps_tests::{AccountSpec, Bank, BankFiles, Leaf, Merchant, Pki, TestSim, expired_request, request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};

/// The most one honest payment may take while an attack runs. Unloaded, a payment takes tens
/// of milliseconds in the debug profile on the 2-core development machine (the baseline test
/// prints it); under the heaviest attack here a few hundred. 2 s leaves room for a CI machine
/// several times slower or busier without flaking, and is a tenth of the 20 s request deadline
/// (`server.request_timeout_ms`): a payment that waited behind the attack for anything like the
/// deadline fails this budget by far.
const HONEST_LATENCY_BUDGET: Duration = Duration::from_secs(2);
/// Honest payments made while one attack runs, one after the other.
const HONEST_PAYMENTS: usize = 10;
/// Pause between two honest payments, so that they spread over the attack.
const HONEST_PAUSE: Duration = Duration::from_millis(50);
/// Time the attackers get before the first honest payment, unless the attack says otherwise.
const RAMP_UP: Duration = Duration::from_millis(300);
/// Rounds one attacker task makes at most (the honest payments normally end it sooner).
const ROUNDS_MAX: usize = 100_000;
/// The longest a raw attack connection waits for the server to answer or close.
const RAW_ANSWER_WAIT: Duration = Duration::from_secs(10);
/// Opening balance of every account here.
const OPENING: u64 = 10_000;
/// The honest payer's amount per payment.
const HONEST_AMOUNT: u64 = 100;
/// The attacked SIM's genuine payment.
const VICTIM_ORDER: &str = "VICTIM-1";
const VICTIM_AMOUNT: u64 = 500;
/// A merchant of the scheme that attacks (its own, valid certificate).
const ATTACKER: &str = "SHOP-0666";
/// Another bank's IIN.
const OTHER_IIN: &str = "400099";

/// One test at a time (see the module's documentation); a failed test leaves it usable.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What one round of an attack got: `status/code` of an answer, the status line of a raw
/// exchange, or what became of the connection.
type Outcome = String;

/// Tells attacker tasks that the honest payments are done.
#[derive(Clone)]
struct Stop(watch::Receiver<bool>);

impl Stop {
    fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// When the honest payments start.
enum RampUp {
    /// After this pause.
    Pause(Duration),
    /// Once the listener has at least this many authenticated connections open.
    ConnectionsOpen(usize),
}

/// The SIM that pays honestly through the gateway's connection, on an account of its own.
struct Honest {
    sim: TestSim,
    account: Account,
    gateway: reqwest::Client,
    paid: usize,
}

impl Honest {
    /// Registers the SIM and makes a first payment, so that the gateway's connection is up
    /// before any attack starts.
    async fn new(bank: &Bank) -> Self {
        let account = bank.create_account(&AccountSpec::debit("4000120000000091", "2468", OPENING)).await;
        let sim = bank.new_sim("8949012300000000091", &[&account]).await;
        let mut honest = Self { sim, account, gateway: bank.gateway(), paid: 0 };
        honest.pay_once(bank, "warm-up").await;
        honest
    }

    /// One payment; its latency (the gateway's round trip only, not the SIM's or merchant's
    /// work before it).
    async fn pay_once(&mut self, bank: &Bank, attack: &str) -> Duration {
        let order = format!("H-{}", self.paid + 1);
        let packet = self.sim.pay(&self.account, &order, HONEST_AMOUNT, "2468");
        let (body, jws) = bank.merchant.request(&packet, &order, HONEST_AMOUNT, Currency::EUR.code());
        let started = Instant::now();
        let answer = bank.post(&self.gateway, body, Some(&jws)).await.unwrap();
        let latency = started.elapsed();
        assert_eq!(
            (answer.status, answer.code()),
            (200, "00"),
            "honest payment {order} during {attack}: {:?}",
            answer.json
        );
        self.sim.read_answer(&answer);
        self.paid += 1;
        latency
    }

    /// [`HONEST_PAYMENTS`] payments, each within the budget; their latencies.
    async fn pay_during(&mut self, bank: &Bank, attack: &str) -> Vec<Duration> {
        let mut latencies = Vec::new();
        for _ in 0..HONEST_PAYMENTS {
            let latency = self.pay_once(bank, attack).await;
            assert!(
                latency <= HONEST_LATENCY_BUDGET,
                "an honest payment during {attack} took {latency:?}, over the budget of {HONEST_LATENCY_BUDGET:?}"
            );
            latencies.push(latency);
            tokio::time::sleep(HONEST_PAUSE).await;
        }
        latencies
    }

    /// Every honest payment is booked once, and nothing else moved the honest account.
    async fn check_balance(&self, bank: &Bank) {
        let paid = u64::try_from(self.paid).unwrap() * HONEST_AMOUNT;
        assert_eq!(bank.available(&self.account).await, i64::try_from(OPENING - paid).unwrap());
    }
}

/// The attacked SIM, with a genuine packet it has not sent yet.
struct Victim {
    sim: TestSim,
    account: Account,
    packet: Vec<u8>,
}

impl Victim {
    async fn new(bank: &Bank) -> Self {
        let account = bank.create_account(&AccountSpec::debit("4000120000000092", "2468", OPENING)).await;
        let mut sim = bank.new_sim("8949012300000000092", &[&account]).await;
        let packet = sim.pay(&account, VICTIM_ORDER, VICTIM_AMOUNT, "2468");
        Self { sim, account, packet }
    }

    /// The attack moved nothing on the victim's account; then its genuine packet, through the
    /// honest merchant, is approved once.
    async fn untouched_then_pays(&mut self, bank: &Bank) {
        assert_eq!(bank.available(&self.account).await, i64::try_from(OPENING).unwrap(), "the attack moved money");
        let answer = bank.authorize(&self.packet, VICTIM_ORDER, VICTIM_AMOUNT).await;
        assert_eq!((answer.status, answer.code()), (200, "00"), "the victim's own payment: {:?}", answer.json);
        self.sim.read_answer(&answer);
        assert_eq!(bank.available(&self.account).await, i64::try_from(OPENING - VICTIM_AMOUNT).unwrap());
    }
}

/// A bank with `change` applied to its configuration, the files made and the server not yet
/// started (for certificates that must be issued or revoked before it starts).
async fn files(change: impl FnOnce(&mut AuthzConfig) + Send + 'static) -> BankFiles {
    Bank::builder().with_config(change).files().await
}

/// Starts the bank and registers the honest payer and the victim.
async fn start(files: BankFiles) -> (Arc<Bank>, Honest, Victim) {
    let bank = Bank::start_from(files).await;
    let honest = Honest::new(&bank).await;
    let victim = Victim::new(&bank).await;
    (Arc::new(bank), honest, victim)
}

/// The ledger's audit passes, the honest payments are booked once, and the server stops.
async fn finish(bank: Arc<Bank>, honest: &Honest) {
    honest.check_balance(&bank).await;
    bank.ledger.audit().await.unwrap();
    let mut bank = Arc::into_inner(bank).expect("every attacker task has ended");
    bank.shutdown().await;
}

/// Runs `attackers` tasks, each repeating `round` until the honest payments are done (at most
/// [`ROUNDS_MAX`] rounds), and the honest payments meanwhile; prints the honest latencies and
/// returns how many rounds got each outcome.
async fn under_attack<R, F>(
    bank: &Arc<Bank>,
    honest: &mut Honest,
    name: &str,
    attackers: usize,
    ramp_up: RampUp,
    round: R,
) -> BTreeMap<Outcome, usize>
where
    R: Fn(Arc<Bank>, usize, Stop) -> F + Send + Sync + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    let (stop_sender, stop) = watch::channel(false);
    let round = Arc::new(round);
    let tasks: Vec<_> = (0..attackers)
        .map(|attacker| {
            let (bank, round, stop) = (Arc::clone(bank), Arc::clone(&round), Stop(stop.clone()));
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for n in 0..ROUNDS_MAX {
                    if stop.is_set() {
                        break;
                    }
                    outcomes.push((*round)(Arc::clone(&bank), attacker * ROUNDS_MAX + n, stop.clone()).await);
                }
                outcomes
            })
        })
        .collect();
    match ramp_up {
        RampUp::Pause(pause) => tokio::time::sleep(pause).await,
        RampUp::ConnectionsOpen(count) => {
            let deadline = Instant::now() + Duration::from_secs(60);
            while bank.metric("mps_authz_listener_connections_open").await < count as f64 {
                assert!(Instant::now() < deadline, "{name}: {count} connections were not open within 60 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let latencies = honest.pay_during(bank, name).await;
    stop_sender.send(true).unwrap();
    let mut tally = BTreeMap::new();
    for task in tasks {
        for outcome in task.await.unwrap() {
            *tally.entry(outcome).or_insert(0) += 1;
        }
    }
    let max = latencies.iter().max().unwrap();
    let mean = latencies.iter().sum::<Duration>() / u32::try_from(latencies.len()).unwrap();
    println!(
        "under attack: {name}: {} honest payments approved, latency max {} ms, mean {} ms (budget {} ms); \
         attack rounds: {tally:?}",
        latencies.len(),
        max.as_millis(),
        mean.as_millis(),
        HONEST_LATENCY_BUDGET.as_millis()
    );
    tally
}

/// Every round got one of `allowed`, and there were rounds.
fn only(name: &str, tally: &BTreeMap<Outcome, usize>, allowed: &[&str]) {
    assert!(!tally.is_empty(), "{name}: the attack made no round");
    for outcome in tally.keys() {
        assert!(
            allowed.contains(&outcome.as_str()),
            "{name}: a round got {outcome:?}, not one of {allowed:?}: {tally:?}"
        );
    }
}

/// `status/code` of an answer to a posted body.
async fn post_outcome(bank: &Bank, client: &reqwest::Client, body: Vec<u8>, jws: Option<&str>) -> Outcome {
    match bank.post(client, body, jws).await {
        Ok(answer) => format!("{}/{}", answer.status, answer.code()),
        Err(error) => format!("error: {error}"),
    }
}

/// A merchant certificate for merchant id `id` from `pki` (valid, or as `issue` says).
fn merchant(pki: &mut Pki, file_name: &str, id: &str, issue: &IssueRequest) -> Merchant {
    Merchant::from_leaf(id, &pki.issue(file_name, issue))
}

fn merchant_request(id: &str, name: &str) -> IssueRequest {
    IssueRequest::new(Subject::Merchant { merchant_id: MerchantId::new(id).unwrap() }, name)
}

/// On a raw HTTP/1.1 connection with the gateway's certificate, sends `head` at once and then
/// `rest` `chunk` bytes every `pause`, reading meanwhile. A write that fails ends the sending,
/// and so does `stop` when `pause` is not zero (a fast send is bounded by its length). The
/// status line of what the server answered; "closed" when it closed without an answer, "closed
/// abruptly" when without TLS's close_notify or with a TCP reset (a server that closes with
/// bytes unread resets the connection).
async fn dribble(bank: &Bank, head: Vec<u8>, rest: Vec<u8>, chunk: usize, pause: Duration, stop: Stop) -> Outcome {
    let stream = match bank.tls_connect(Some(b"http/1.1")).await {
        Ok(stream) => stream,
        Err(error) => return format!("connect failed: {error}"),
    };
    let (mut reader, mut writer) = tokio::io::split(stream);
    let write = async move {
        let mut sent = writer.write_all(&head).await.is_ok() && writer.flush().await.is_ok();
        for piece in rest.chunks(chunk) {
            if !sent || (!pause.is_zero() && stop.is_set()) {
                break;
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            sent = writer.write_all(piece).await.is_ok() && writer.flush().await.is_ok();
        }
        // The write side stays open: the server, not the attacker, ends the exchange.
        writer
    };
    let read = async move {
        let mut answer = Vec::new();
        let result = tokio::time::timeout(RAW_ANSWER_WAIT, reader.read_to_end(&mut answer)).await;
        (result, answer)
    };
    let ((read, answer), _writer) = tokio::join!(read, write);
    match read {
        _ if answer.starts_with(b"HTTP/") => String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned(),
        Err(_) => "neither answered nor closed".to_owned(),
        Ok(Ok(_)) => "closed".to_owned(),
        Ok(Err(_)) => "closed abruptly".to_owned(),
    }
}

/// Another bank's packet: the victim's with its IIN changed (clear fields still match the
/// body), optionally with a SIM id of the other bank too.
fn other_issuers(packet: &[u8], other_sim: bool) -> Vec<u8> {
    let mut decoded = PayerPacket::decode(packet).unwrap();
    decoded.fields.iin = Iin::new(OTHER_IIN).unwrap();
    if other_sim {
        decoded.fields.sim_id = SimId::new("8949099900000000001").unwrap();
    }
    decoded.encode().to_vec()
}

/// The victim's packet made over to the attacker's merchant id, one bit of its ciphertext
/// flipped: the clear fields match the attacker's body, the MAC fails (as in authz_garbage).
fn bad_mac(packet: &[u8], bit: usize) -> Vec<u8> {
    let mut decoded = PayerPacket::decode(packet).unwrap();
    decoded.fields.merchant_id = MerchantId::new(ATTACKER).unwrap();
    let mut garbage = decoded.encode().to_vec();
    garbage[60 + bit % 40] ^= 1 << (bit % 8);
    garbage
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn baseline_without_an_attack() {
    let _serial = SERIAL.lock().await;
    let (bank, mut honest, _victim) = start(files(|_| {}).await).await;
    let tally =
        under_attack(&bank, &mut honest, "none (baseline)", 0, RampUp::Pause(Duration::ZERO), |_, _, _| async {
            String::new()
        })
        .await;
    assert!(tally.is_empty());
    finish(bank, &honest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clear_fields_that_differ_from_the_packet() {
    let _serial = SERIAL.lock().await;
    let mut files = files(|_| {}).await;
    let attacker = Arc::new(merchant(&mut files.pki, "attacker", ATTACKER, &merchant_request(ATTACKER, "attacker")));
    let (bank, mut honest, mut victim) = start(files).await;
    let (client, packet) = (bank.gateway(), Arc::new(victim.packet.clone()));
    let name = "clear fields differing from the packet";
    let tally = under_attack(&bank, &mut honest, name, 4, RampUp::Pause(RAMP_UP), move |bank, n, _| {
        let (client, packet, attacker) = (client.clone(), Arc::clone(&packet), Arc::clone(&attacker));
        async move {
            let eur = Currency::EUR.code();
            // The victim's packet with the body changed: amount, currency, order, merchant.
            let (body, jws) = match n % 4 {
                0 => bank.merchant.request(&packet, VICTIM_ORDER, VICTIM_AMOUNT * 100, eur),
                1 => bank.merchant.request(&packet, VICTIM_ORDER, VICTIM_AMOUNT, Currency::USD.code()),
                2 => bank.merchant.request(&packet, "VICTIM-2", VICTIM_AMOUNT, eur),
                _ => attacker.request(&packet, VICTIM_ORDER, VICTIM_AMOUNT, eur),
            };
            post_outcome(&bank, &client, body, Some(&jws)).await
        }
    })
    .await;
    only(name, &tally, &["400/12"]);
    victim.untouched_then_pays(&bank).await;
    finish(bank, &honest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_issuers_packets() {
    let _serial = SERIAL.lock().await;
    let (bank, mut honest, mut victim) = start(files(|_| {}).await).await;
    let client = bank.gateway();
    let packets = Arc::new([other_issuers(&victim.packet, false), other_issuers(&victim.packet, true)]);
    let name = "another issuer's packets";
    let tally = under_attack(&bank, &mut honest, name, 4, RampUp::Pause(RAMP_UP), move |bank, n, _| {
        let (client, packets) = (client.clone(), Arc::clone(&packets));
        async move {
            let (body, jws) = bank.merchant.request(&packets[n % 2], VICTIM_ORDER, VICTIM_AMOUNT, Currency::EUR.code());
            post_outcome(&bank, &client, body, Some(&jws)).await
        }
    })
    .await;
    only(name, &tally, &["400/12"]);
    victim.untouched_then_pays(&bank).await;
    finish(bank, &honest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_over_the_limit_just_over_and_huge() {
    let _serial = SERIAL.lock().await;
    let (bank, mut honest, mut victim) = start(files(|_| {}).await).await;
    let body_bytes_max = bank.config.server.body_bytes_max;
    let client = bank.gateway();
    let name = "bodies over the limit (one byte over; 1 GiB announced, 1 MiB sent)";
    let tally = under_attack(&bank, &mut honest, name, 4, RampUp::Pause(RAMP_UP), move |bank, n, stop| {
        let client = client.clone();
        async move {
            if n % 2 == 0 {
                return post_outcome(&bank, &client, vec![b' '; body_bytes_max + 1], None).await;
            }
            let head = format!(
                "POST /v1/authorizations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                1u64 << 30
            );
            dribble(&bank, head.into_bytes(), vec![b' '; 1 << 20], 16 * 1024, Duration::ZERO, stop).await
        }
    })
    .await;
    // A server that closes with part of a mebibyte unread resets the connection, and the reset
    // may overtake its 413 on the way to the client: "closed abruptly" is that same refusal.
    only(name, &tally, &["413/30", "HTTP/1.1 413", "closed abruptly"]);
    assert!(tally.contains_key("413/30"), "{tally:?}");
    victim.untouched_then_pays(&bank).await;
    finish(bank, &honest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_bodies_and_slowloris_on_many_connections() {
    const CONNECTIONS: usize = 128;
    const BODY_BYTES: usize = 400;
    let _serial = SERIAL.lock().await;
    // Shorter than the 5 s defaults, so that every attacker is refused, and comes again, while
    // the honest payments run.
    let (bank, mut honest, mut victim) = start(
        files(|c| {
            c.server.header_read_timeout_ms = 1_000;
            c.server.body_read_timeout_ms = 1_000;
        })
        .await,
    )
    .await;
    let name = "slow bodies and slowloris (a byte every 50 ms), 128 connections";
    let ramp_up = RampUp::Pause(Duration::from_millis(1_500));
    let tally = under_attack(&bank, &mut honest, name, CONNECTIONS, ramp_up, |bank, n, stop| async move {
        let head = format!(
            "POST /v1/authorizations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {BODY_BYTES}\r\n"
        );
        let pause = Duration::from_millis(50);
        if n % 2 == 0 {
            // Slow body: the head at once, the body a byte at a time.
            let head = format!("{head}\r\n").into_bytes();
            dribble(&bank, head, vec![b' '; BODY_BYTES], 1, pause, stop).await
        } else {
            // Slowloris: the head itself a byte at a time, never ending.
            let head = format!("{head}{}", "X-Slow: a\r\n".repeat(100)).into_bytes();
            dribble(&bank, Vec::new(), head, 1, pause, stop).await
        }
    })
    .await;
    // A slow body fails its request (4xx); a slow head is closed, with or without a 408.
    only(name, &tally, &["HTTP/1.1 400", "HTTP/1.1 408", "closed", "closed abruptly"]);
    assert!(tally.contains_key("HTTP/1.1 400"), "no slow body was refused: {tally:?}");
    let slow_heads_ended = ["HTTP/1.1 408", "closed", "closed abruptly"].iter().any(|ended| tally.contains_key(*ended));
    assert!(slow_heads_ended, "no slow head was closed: {tally:?}");
    victim.untouched_then_pays(&bank).await;
    finish(bank, &honest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_idle_authenticated_connections() {
    const IDLE: usize = 2_000;
    /// Handshakes the attacker runs at once: below the server's budget (256), so that the
    /// connections are made rather than refused and retried.
    const CONNECTING_MAX: usize = 64;
    let _serial = SERIAL.lock().await;
    // The first request may come 60 s after the handshake (default 5 s): the connections stay
    // open while the honest payments run instead of being closed and opened again.
    let (bank, mut honest, mut victim) = start(files(|c| c.server.header_read_timeout_ms = 60_000).await).await;
    let connecting = Arc::new(Semaphore::new(CONNECTING_MAX));
    let name = "2,000 idle authenticated connections";
    // The gateway's own connection is open too.
    let tally =
        under_attack(&bank, &mut honest, name, IDLE, RampUp::ConnectionsOpen(IDLE + 1), move |bank, _, mut stop| {
            let connecting = Arc::clone(&connecting);
            async move {
                let permit = connecting.acquire_owned().await.unwrap();
                let Ok(mut stream) = bank.tls_connect(None).await else {
                    return "refused".to_owned();
                };
                drop(permit);
                let mut byte = [0u8; 1];
                tokio::select! {
                    _ = stream.read(&mut byte) => "closed by the server".to_owned(),
                    () = stop.wait() => "held".to_owned(),
                }
            }
        })
        .await;
    // A refused handshake is tried again; every attacker held its connection at the end.
    only(name, &tally, &["held", "refused"]);
    assert_eq!(tally["held"], IDLE, "{tally:?}");
    victim.untouched_then_pays(&bank).await;
    finish(bank, &honest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_bad_macs_for_one_sim() {
    let _serial = SERIAL.lock().await;
    let mut files = files(|_| {}).await;
    let limit = files.config.issuer.mac_failure_limit;
    assert!(limit > 0, "the default configuration limits MAC failures");
    let attacker = Arc::new(merchant(&mut files.pki, "attacker", ATTACKER, &merchant_request(ATTACKER, "attacker")));
    let (bank, mut honest, mut victim) = start(files).await;
    let (client, packet) = (bank.gateway(), Arc::new(victim.packet.clone()));
    let name = "a flood of bad MACs for one SIM";
    let tally = under_attack(&bank, &mut honest, name, 4, RampUp::Pause(RAMP_UP), move |bank, n, _| {
        let (client, packet, attacker) = (client.clone(), Arc::clone(&packet), Arc::clone(&attacker));
        async move {
            let (body, jws) = attacker.request(&bad_mac(&packet, n), VICTIM_ORDER, VICTIM_AMOUNT, Currency::EUR.code());
            post_outcome(&bank, &client, body, Some(&jws)).await
        }
    })
    .await;
    // Refused with a signed 63 up to the limit, then 429 before the HSM.
    only(name, &tally, &["200/63", "429/63"]);
    assert_eq!(tally.get("200/63").copied(), Some(usize::try_from(limit).unwrap()), "{tally:?}");
    assert_eq!(bank.metrics().mac_failures.get(), u64::from(limit));
    // The SIM itself pays on, through its own merchant.
    victim.untouched_then_pays(&bank).await;
    finish(bank, &honest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_clients_with_expired_revoked_and_foreign_certificates() {
    let _serial = SERIAL.lock().await;
    let mut files = files(|_| {}).await;
    let expired = files.pki.issue("gateway-expired", &expired_request(Role::GatewayClient, "gateway expired"));
    let (bank, mut honest, mut victim) = start(files).await;
    let expired = Arc::new(expired);
    let name = "TLS clients with expired, revoked and foreign certificates";
    let tally = under_attack(&bank, &mut honest, name, 6, RampUp::Pause(RAMP_UP), move |bank, n, _| {
        let expired = Arc::clone(&expired);
        async move {
            let leaf: &Leaf = match n % 3 {
                0 => expired.as_ref(),
                1 => &bank.revoked_gateway_leaf,
                _ => &bank.foreign_gateway_leaf,
            };
            client_certificate_outcome(&bank, leaf).await
        }
    })
    .await;
    only(name, &tally, &["refused in the handshake", "refused after the handshake"]);
    victim.untouched_then_pays(&bank).await;
    finish(bank, &honest).await;
}

/// A connection with `leaf` that tries a request: whether and where it was refused.
async fn client_certificate_outcome(bank: &Bank, leaf: &Leaf) -> Outcome {
    let Ok(mut stream) = bank.tls_connect_as(Some(leaf), Some(b"http/1.1")).await else {
        return "refused in the handshake".to_owned();
    };
    // TLS 1.3: the server's verdict on the client's certificate comes after the client's
    // Finished, so it shows at the first read.
    let _ = stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    let mut answer = Vec::new();
    match tokio::time::timeout(RAW_ANSWER_WAIT, stream.read_to_end(&mut answer)).await {
        Err(_) => "neither answered nor closed".to_owned(),
        Ok(_) if answer.starts_with(b"HTTP/") => "served".to_owned(),
        Ok(_) => "refused after the handshake".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merchant_signatures_from_expired_revoked_and_foreign_certificates() {
    let _serial = SERIAL.lock().await;
    let mut files = files(|_| {}).await;
    let id = mps_tests::MERCHANT_ID;
    let expired = merchant(&mut files.pki, "merchant-expired", id, &expired_request(Role::Merchant, "expired"));
    let revoked_leaf = files.pki.issue("merchant-revoked", &request(Role::Merchant, "revoked"));
    files.pki.revoke(&revoked_leaf);
    let revoked = Merchant::from_leaf(id, &revoked_leaf);
    let foreign_dir = files.dir.path().join("foreign-scheme");
    std::fs::create_dir_all(&foreign_dir).unwrap();
    let foreign = merchant(&mut Pki::new(&foreign_dir), "merchant-foreign", id, &request(Role::Merchant, "foreign"));
    let (bank, mut honest, mut victim) = start(files).await;
    let (client, packet) = (bank.gateway(), Arc::new(victim.packet.clone()));
    let signers = Arc::new([expired, revoked, foreign]);
    let name = "merchant signatures from expired, revoked and foreign certificates";
    let tally = under_attack(&bank, &mut honest, name, 4, RampUp::Pause(RAMP_UP), move |bank, n, _| {
        let (client, packet, signers) = (client.clone(), Arc::clone(&packet), Arc::clone(&signers));
        async move {
            let (body, jws) = signers[n % 3].request(&packet, VICTIM_ORDER, VICTIM_AMOUNT, Currency::EUR.code());
            post_outcome(&bank, &client, body, Some(&jws)).await
        }
    })
    .await;
    only(name, &tally, &["401/63"]);
    victim.untouched_then_pays(&bank).await;
    finish(bank, &honest).await;
}
