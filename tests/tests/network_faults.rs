//! The merchant and the gateway as separate processes in front of a real issuer, killed with
//! SIGKILL in the middle of a burst of payments: afterwards every order ends either paid with
//! its booking at the bank, or unpaid with none, never paid without a booking or booked twice.
//! The merchant's store-and-forward reversals and identical-body retries are what make it so.
//!
//! The `gateway` and `merchant` binaries are taken from the same target directory as this
//! test (`cargo test --workspace` builds them, as their crates have integration tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use mps_pki::Role;
use mps_protocol::{MerchantId, OrderNo};
use mps_tests::process::Service;
use mps_tests::{AccountSpec, Bank, Leaf, MERCHANT_ID, TestSim, free_port, request};

const ORDERS: usize = 10;
const AMOUNT: u64 = 300;

struct Network {
    bank: Bank,
    dir: tempfile::TempDir,
    gateway: Service,
    gateway_admin: SocketAddr,
    merchant: Service,
    merchant_admin: SocketAddr,
    phone: SocketAddr,
    pos: SocketAddr,
}

fn toml_list(paths: &[&Path]) -> String {
    let quoted: Vec<String> = paths.iter().map(|p| format!("\"{}\"", p.display())).collect();
    format!("[{}]", quoted.join(", "))
}

async fn network() -> Network {
    let mut bank = Bank::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway_server: Leaf = bank.pki.issue("gw-server", &request(Role::GatewayServer, "gateway"));
    let gateway_client: Leaf = bank.pki.issue("gw-client", &request(Role::GatewayClient, "gateway"));
    let merchant_leaf: Leaf = bank.pki.issue("shop", &request(Role::Merchant, "shop"));
    let root = bank.pki.root_file();
    let crls = bank.pki.crls_file();
    let (gateway_listen, gateway_admin) = (free_port(), free_port());
    let bank_port = bank.url.rsplit(':').next().unwrap().to_owned();
    let gateway_toml = format!(
        r#"[server]
listen = "{gateway_listen}"
certificate = "{}"
private_key = "{}"
client_ca = {roots}
client_crls = {crls}
[admin]
listen = "{gateway_admin}"
[upstream]
certificate = "{}"
private_key = "{}"
issuer_ca = {roots}
issuer_crls = {crls}
health_interval_ms = 200
[issuers.{iin}]
instances = [{{ url = "https://127.0.0.1:{bank_port}", health_url = "{admin}/readyz" }}]
request_timeout_ms = 2000
attempts_max = 2
deadline_ms = 5000
[log]
level = "info"
"#,
        gateway_server.chain_file.display(),
        gateway_server.key_file.display(),
        gateway_client.chain_file.display(),
        gateway_client.key_file.display(),
        roots = toml_list(&[&root]),
        crls = toml_list(&[&crls]),
        iin = mps_tests::IIN,
        admin = bank.admin_url,
    );
    let gateway_config = dir.path().join("gateway.toml");
    std::fs::write(&gateway_config, gateway_toml).unwrap();
    let (phone, pos, merchant_admin) = (free_port(), free_port(), free_port());
    let merchant_toml = format!(
        r#"[merchant]
merchant_id = "{MERCHANT_ID}"
acquirer_iin = "{acquirer}"
merchant_account = "DE89 3704 0044 0532 0130 00"
certificate = "{}"
private_key = "{}"
[trust]
scheme_ca = {roots}
crls = {crls}
[gateway]
url = "https://{gateway_listen}"
attempt_timeout_ms = 1500
attempts_max = 3
deadline_ms = 6000
retry_backoff_ms = 100
[reversals]
interval_ms = 200
backoff_max_ms = 1000
[phone]
listen = "{phone}"
[pos]
listen = "{pos}"
[admin]
listen = "{merchant_admin}"
[orders]
path = "{book}"
[log]
level = "info"
"#,
        merchant_leaf.chain_file.display(),
        merchant_leaf.key_file.display(),
        acquirer = mps_tests::ACQUIRER_IIN,
        roots = toml_list(&[&root]),
        crls = toml_list(&[&crls]),
        book = dir.path().join("orders.db").display(),
    );
    let merchant_config = dir.path().join("merchant.toml");
    std::fs::write(&merchant_config, merchant_toml).unwrap();
    let mut gateway = Service::start("gateway", gateway_config, dir.path());
    gateway.wait_ready(gateway_admin, "the gateway").await;
    let mut merchant = Service::start("merchant", merchant_config, dir.path());
    merchant.wait_ready(merchant_admin, "the merchant").await;
    Network { bank, dir, gateway, gateway_admin, merchant, merchant_admin, phone, pos }
}

async fn open_orders(network: &Network, prefix: &str) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut orders = Vec::new();
    for index in 0..ORDERS {
        let order_no = format!("{prefix}-{index:02}");
        let body = serde_json::json!({"order_no": order_no, "amount": AMOUNT, "currency": 978});
        let response = client.post(format!("http://{}/v1/orders", network.pos)).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 201);
        orders.push(order_no);
    }
    orders
}

/// Every SIM posts its packet to the phone endpoint, 25 ms apart; replies are whatever they are.
fn pay_all(
    network: &Network,
    sims: Vec<(TestSim, Vec<u8>)>,
) -> Vec<tokio::task::JoinHandle<(TestSim, Option<serde_json::Value>)>> {
    let url = format!("http://{}/v1/payments", network.phone);
    sims.into_iter()
        .enumerate()
        .map(|(index, (sim, packet))| {
            let url = url.clone();
            tokio::spawn(async move {
                // Staggered, so that the kill lands among payments before, during and after.
                tokio::time::sleep(Duration::from_millis(25 * index as u64)).await;
                let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
                let body =
                    serde_json::json!({"payer_packet": base64::engine::general_purpose::STANDARD.encode(&packet)});
                let reply = match client.post(&url).json(&body).send().await {
                    Ok(response) => response.json::<serde_json::Value>().await.ok(),
                    Err(_) => None,
                };
                (sim, reply)
            })
        })
        .collect()
}

/// Waits until no order is on its way (submitted or waiting for a reversal), then returns
/// each order's status.
async fn settled(network: &Network, orders: &[String]) -> BTreeMap<String, String> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let mut statuses = BTreeMap::new();
        for order in orders {
            let url = format!("http://{}/v1/orders/{order}", network.pos);
            if let Ok(response) = client.get(&url).send().await
                && let Ok(json) = response.json::<serde_json::Value>().await
            {
                statuses.insert(order.clone(), json["status"].as_str().unwrap_or("").to_owned());
            }
        }
        let moving = statuses.values().any(|s| matches!(s.as_str(), "submitted" | "reversal_pending" | "unknown" | ""));
        if statuses.len() == orders.len() && !moving {
            return statuses;
        }
        assert!(Instant::now() < deadline, "orders still moving: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Paid at the merchant if and only if approved and not reversed at the bank; the money moved
/// exactly for the paid orders.
async fn check_outcomes(
    network: &Network,
    statuses: &BTreeMap<String, String>,
    account: &mps_protocol::Account,
    before: i64,
) {
    let merchant = MerchantId::new(MERCHANT_ID).unwrap();
    let mut paid = 0i64;
    for (order, status) in statuses {
        let booked = network.bank.ledger.order_authorized(&merchant, &OrderNo::new(order).unwrap()).await.unwrap();
        assert_eq!(status == "paid", booked, "order {order}: merchant says {status}, bank booked: {booked}");
        if booked {
            paid += 1;
        }
    }
    assert_eq!(network.bank.available(account).await, before - paid * AMOUNT as i64, "{statuses:?}");
    network.bank.ledger.audit().await.unwrap();
}

async fn sims_with_packets(
    network: &Network,
    account: &mps_protocol::Account,
    orders: &[String],
    base: u64,
) -> Vec<(TestSim, Vec<u8>)> {
    let mut sims = Vec::new();
    for (index, order) in orders.iter().enumerate() {
        let mut sim = network.bank.new_sim(&format!("{:019}", base + index as u64), &[account]).await;
        let packet = sim.pay(account, order, AMOUNT, "8642");
        sims.push((sim, packet));
    }
    sims
}

/// Which process the test kills.
#[derive(Clone, Copy)]
enum Victim {
    Gateway,
    Merchant,
}

/// Ten staggered payments; `victim` is SIGKILLed 110 ms in and restarted 700 ms later (the
/// merchant on the same order book, so the orders it left on their way are reversed by store
/// and forward). Afterwards every order is paid with its booking or unpaid with none.
async fn kill_among_payments(victim: Victim, account_number: &'static str, prefix: &str, first_sim: u64) {
    let mut network = network().await;
    let mut spec = AccountSpec::debit(account_number, "8642", 1_000_000);
    spec.daily_limit = 100_000_000;
    let account = network.bank.create_account(&spec).await;
    let orders = open_orders(&network, prefix).await;
    let sims = sims_with_packets(&network, &account, &orders, first_sim).await;
    let tasks = pay_all(&network, sims);
    tokio::time::sleep(Duration::from_millis(110)).await;
    let (service, admin, what) = match victim {
        Victim::Gateway => (&mut network.gateway, network.gateway_admin, "the restarted gateway"),
        Victim::Merchant => (&mut network.merchant, network.merchant_admin, "the restarted merchant"),
    };
    service.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    service.spawn();
    service.wait_ready(admin, what).await;
    for task in tasks {
        task.await.unwrap();
    }
    let statuses = settled(&network, &orders).await;
    eprintln!("outcomes: {statuses:?}");
    assert!(statuses.values().any(|s| s != "paid"), "the kill caught no payment: {statuses:?}");
    check_outcomes(&network, &statuses, &account, 1_000_000).await;
    network.bank.shutdown().await;
    drop(network.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_killed_mid_payment_leaves_no_order_paid_without_a_booking() {
    kill_among_payments(Victim::Gateway, "4000120000000900", "GK", 8_949_012_900_000_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_merchant_killed_mid_payment_leaves_no_order_paid_without_a_booking() {
    kill_among_payments(Victim::Merchant, "4000120000000901", "MK", 8_949_012_910_000_000_000).await;
}
