//! Test harness: a real issuer (`mps_tests::Bank`: SoftHSM token, PKI, ledger) on loopback, the
//! merchant server started in-process against it, SIMs from the sim library, and a small
//! loopback TLS "gateway" that forwards to the issuer and can hold, delay or alter its answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs, dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use mps_merchant::app::{self, RunningServer};
use mps_merchant::config::{
    AdminConfig, GatewayConfig, IdentityConfig, LogConfig, MerchantConfig, OrdersConfig, PhoneConfig, PosConfig,
    ReversalConfig, TrustConfig,
};
use mps_pki::Role;
use mps_protocol::{Iin, MerchantId};
use mps_tests::{ACQUIRER_IIN, AccountSpec, Bank, Leaf, MERCHANT_ACCOUNT, MERCHANT_ID, TestSim};
use tokio::net::TcpListener;

pub const PASSWORD: &str = "2468ab";

/// The bank with the certificates the tests need, issued before it is shared.
pub struct Scheme {
    pub bank: Bank,
    /// Our merchant certificate (role merchant, SHOP-0001).
    pub merchant_leaf: Leaf,
    /// A server certificate for the fake gateway (role authz-server, localhost).
    pub fake_server_leaf: Leaf,
}

impl Scheme {
    pub async fn start() -> Scheme {
        let mut bank = Bank::start().await;
        let merchant_leaf = bank.pki.issue("shop", &mps_tests::request(Role::Merchant, "shop"));
        let fake_server_leaf = bank.pki.issue("fake-gateway", &mps_tests::request(Role::AuthzServer, "fake gateway"));
        Scheme { bank, merchant_leaf, fake_server_leaf }
    }

    /// Stops the issuer and closes its HSM pool before the test's runtime ends: a process that
    /// exits while pool threads still call into SoftHSM races SoftHSM's teardown (docs/HSM.md).
    pub async fn finish(mut self) {
        self.bank.shutdown().await;
        let Scheme { bank, .. } = self;
        tokio::task::spawn_blocking(move || drop(bank)).await.unwrap();
    }

    /// A payer with an account and a personalised SIM.
    pub async fn payer(&self, account: &'static str, sim_id: &str) -> (mps_protocol::Account, TestSim) {
        let account = self.bank.create_account(&AccountSpec::debit(account, PASSWORD, 100_000)).await;
        let sim = self.bank.new_sim(sim_id, &[&account]).await;
        (account, sim)
    }

    /// A merchant configuration that talks to `gateway_url` (the issuer itself by default)
    /// with the gateway's client certificate, as long as there is no gateway.
    pub fn config(&self, dir: &Path, gateway_url: &str) -> MerchantConfig {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        MerchantConfig {
            merchant: IdentityConfig {
                merchant_id: MerchantId::new(MERCHANT_ID).unwrap(),
                acquirer_iin: Iin::new(ACQUIRER_IIN).unwrap(),
                merchant_account: MERCHANT_ACCOUNT.to_owned(),
                certificate: self.merchant_leaf.chain_file.clone(),
                private_key: self.merchant_leaf.key_file.clone(),
            },
            trust: TrustConfig { scheme_ca: vec![self.bank.pki.root_file()], crls: vec![self.bank.pki.crls_file()] },
            gateway: GatewayConfig {
                url: gateway_url.to_owned(),
                client_certificate: Some(self.bank.gateway_leaf.chain_file.clone()),
                client_key: Some(self.bank.gateway_leaf.key_file.clone()),
                server_role: Role::AuthzServer,
                connect_timeout_ms: 2_000,
                attempt_timeout_ms: 20_000,
                attempts_max: 3,
                deadline_ms: 40_000,
                retry_backoff_ms: 50,
                answer_bytes_max: 64 * 1024,
                pool_idle_timeout_ms: 90_000,
            },
            reversals: ReversalConfig { interval_ms: 200, backoff_max_ms: 1_000, batch_max: 32 },
            phone: PhoneConfig { listen: loopback, ..PhoneConfig::default() },
            pos: PosConfig { listen: loopback, ..PosConfig::default() },
            admin: AdminConfig { listen: loopback },
            orders: OrdersConfig { path: dir.join("orders.db"), busy_timeout_ms: 5_000 },
            log: LogConfig::default(),
        }
    }
}

/// The merchant server under test and a plain HTTP client for its phone and POS listeners.
pub struct Shop {
    pub server: RunningServer,
    pub http: reqwest::Client,
}

/// A reply: status and JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub json: serde_json::Value,
    /// The content type, without parameters.
    pub content_type: Option<String>,
}

impl Reply {
    /// Opens the reply's payer answer on `sim`, as `sim pay --send` does.
    pub fn open_on(&self, sim: &mut TestSim) -> mps_sim::AnswerOutcome {
        use base64::Engine;
        let text = self.json["payer_answer"].as_str().expect("the reply carries a payer_answer");
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).unwrap();
        sim.profile.open_answer(&bytes, Some(Iin::new(mps_tests::IIN).unwrap())).unwrap()
    }
}

impl Shop {
    pub async fn start(config: &MerchantConfig) -> Shop {
        let server = app::start(config).await.unwrap();
        Shop { server, http: reqwest::Client::new() }
    }

    async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_owned());
        let body = response.bytes().await.unwrap().to_vec();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        Reply { status, body, json, content_type }
    }

    pub async fn create_order(&self, order_no: &str, amount: u64) -> Reply {
        let url = format!("http://{}/v1/orders", self.server.pos_address);
        let body = serde_json::json!({"order_no": order_no, "amount": amount, "currency": "EUR"});
        Self::read(self.http.post(url).json(&body).send().await.unwrap()).await
    }

    pub async fn order(&self, order_no: &str) -> Reply {
        let url = format!("http://{}/v1/orders/{order_no}", self.server.pos_address);
        Self::read(self.http.get(url).send().await.unwrap()).await
    }

    pub async fn export(&self, query: &str) -> Reply {
        let url = format!("http://{}/v1/orders{query}", self.server.pos_address);
        Self::read(self.http.get(url).send().await.unwrap()).await
    }

    /// Posts a packet as `sim pay --send` does.
    pub async fn pay(&self, packet: &[u8]) -> Reply {
        use base64::Engine;
        let url = format!("http://{}/v1/payments", self.server.phone_address);
        let body = serde_json::json!({"payer_packet": base64::engine::general_purpose::STANDARD.encode(packet)});
        Self::read(self.http.post(url).json(&body).send().await.unwrap()).await
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.server.admin_address);
        self.http.get(url).send().await.unwrap().text().await.unwrap()
    }

    /// Attempts made towards the bank for authorizations.
    pub fn bank_attempts(&self) -> u64 {
        self.server.payments.metrics.bank_seconds.with_label_values(&["authorization"]).get_sample_count()
    }
}

/// What the fake gateway does with an authorization.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Forward it and change one byte of the signed answer (the signature stays).
    Alter,
    /// Forward it, then hold the answer this long before sending it.
    Delay(Duration),
    /// Never forward it, never answer.
    Hang,
}

struct FakeState {
    bank_url: String,
    client: reqwest::Client,
    behaviour: Behaviour,
}

/// A loopback mTLS server standing in for the gateway: it presents an authz-server certificate,
/// requires a gateway-client certificate, forwards to the real issuer with the gateway's client,
/// and treats authorizations according to its [`Behaviour`]. Reversals are forwarded as they are.
pub async fn fake_gateway(scheme: &Scheme, behaviour: Behaviour) -> String {
    let trust = scheme.bank.pki.trust_store();
    let verifier = mps_pki::tls::client_cert_verifier(&trust, Role::GatewayClient).unwrap();
    let mut tls =
        mps_pki::tls::server_config(&scheme.fake_server_leaf.chain_file, &scheme.fake_server_leaf.key_file, verifier)
            .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let state = Arc::new(FakeState { bank_url: scheme.bank.url.clone(), client: scheme.bank.gateway(), behaviour });
    let router = Router::new()
        .route("/v1/authorizations", post(fake_authorization))
        .route("/v1/reversals", post(fake_reversal))
        .with_state(state);
    let listener = TlsListener { inner: listener, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)) };
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("https://127.0.0.1:{}", address.port())
}

async fn forward(state: &FakeState, path: &str, headers: &HeaderMap, body: Bytes) -> (u16, Vec<u8>, Option<String>) {
    let mut request = state
        .client
        .post(format!("{}{path}", state.bank_url))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(jws) = headers.get("x-jws-signature") {
        request = request.header("x-jws-signature", jws.clone());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let jws = response.headers().get("x-jws-signature").map(|v| v.to_str().unwrap().to_owned());
    (status, response.bytes().await.unwrap().to_vec(), jws)
}

fn answer(status: u16, body: Vec<u8>, jws: Option<String>) -> Response {
    let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    if let Some(jws) = jws {
        response.headers_mut().insert("x-jws-signature", jws.parse().unwrap());
    }
    response
}

async fn fake_authorization(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    match state.behaviour {
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            answer(504, Vec::new(), None)
        }
        Behaviour::Delay(delay) => {
            let (status, body, jws) = forward(&state, "/v1/authorizations", &headers, body).await;
            tokio::time::sleep(delay).await;
            answer(status, body, jws)
        }
        Behaviour::Alter => {
            let (status, body, jws) = forward(&state, "/v1/authorizations", &headers, body).await;
            let text = String::from_utf8(body).unwrap();
            let marker = "\"auth_code\":\"";
            let at = text.find(marker).expect("an approval carries an auth code") + marker.len();
            let mut altered = text.into_bytes();
            altered[at] = if altered[at] == b'Z' { b'Y' } else { b'Z' };
            answer(status, altered, jws)
        }
    }
}

async fn fake_reversal(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let (status, body, jws) = forward(&state, "/v1/reversals", &headers, body).await;
    answer(status, body, jws)
}

/// TCP plus the TLS handshake, as an axum listener (handshakes that fail are skipped).
struct TlsListener {
    inner: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.inner.accept().await else { continue };
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A TCP listener that accepts connections and never says a word.
pub async fn silent_gateway() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    format!("https://127.0.0.1:{}", address.port())
}

/// Waits until `check` holds, up to `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
