//! Test harness of the gateway's end-to-end tests: a real bank ([`mps_tests::Bank`], SoftHSM,
//! PKI, ledger) on loopback, the gateway's certificates issued by the bank's PKI, a typed
//! gateway configuration changed by closures, merchants' mTLS clients, and issuer instances
//! that misbehave on purpose (a dead port, a TCP listener that never answers, an issuer proxy
//! that forwards to the bank and then keeps the answer).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs, dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use mps_gateway::app::{self, RunningGateway};
use mps_gateway::config::{GatewayConfig, InstanceConfig};
use mps_pki::{IssueRequest, Role, Subject};
use mps_protocol::{Iin, MerchantId};
use mps_tests::{Answer, Bank, IIN, Leaf, request};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The bank and the gateway's certificates from its PKI.
pub struct Harness {
    pub bank: Bank,
    pub server_leaf: Leaf,
    pub client_leaf: Leaf,
    /// Merchant TLS certificate naming the bank's test merchant (`SHOP-0001`).
    pub merchant_leaf: Leaf,
}

impl Harness {
    pub async fn new() -> Self {
        let mut bank = Bank::start().await;
        let server_leaf = bank.pki.issue("gateway-server", &request(Role::GatewayServer, "gateway"));
        let client_leaf = bank.pki.issue("gateway-upstream", &request(Role::GatewayClient, "gateway upstream"));
        let merchant_leaf = bank.pki.issue("merchant-tls", &request(Role::Merchant, "merchant tls"));
        Self { bank, server_leaf, client_leaf, merchant_leaf }
    }

    /// A merchant certificate for another merchant id.
    pub fn merchant_certificate(&mut self, merchant_id: &str) -> Leaf {
        let subject = Subject::Merchant { merchant_id: MerchantId::new(merchant_id).unwrap() };
        self.bank.pki.issue(&format!("merchant-{merchant_id}"), &IssueRequest::new(subject, merchant_id))
    }

    /// The bank as an instance.
    pub fn bank_instance(&self) -> InstanceConfig {
        instance(&self.bank.url, &self.bank_health_url())
    }

    pub fn bank_health_url(&self) -> String {
        format!("{}/readyz", self.bank.admin_url)
    }

    /// The configuration file a deployment would have: the bank's IIN routed to `instances`
    /// (url, health_url), both listeners on ephemeral ports, every bound at its default.
    pub fn config_text(&self, instances: &[InstanceConfig]) -> String {
        let instances: Vec<String> =
            instances.iter().map(|i| format!("{{ url = \"{}\", health_url = \"{}\" }}", i.url, i.health_url)).collect();
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
certificate = "{server_cert}"
private_key = "{server_key}"
client_ca = ["{root}"]
client_crls = ["{crls}"]

[admin]
listen = "127.0.0.1:0"

[upstream]
certificate = "{client_cert}"
private_key = "{client_key}"
issuer_ca = ["{root}"]
issuer_crls = ["{crls}"]
health_interval_ms = 60000

[issuers.{IIN}]
instances = [{instances}]
"#,
            server_cert = self.server_leaf.chain_file.display(),
            server_key = self.server_leaf.key_file.display(),
            client_cert = self.client_leaf.chain_file.display(),
            client_key = self.client_leaf.key_file.display(),
            root = self.bank.pki.root_file().display(),
            crls = self.bank.pki.crls_file().display(),
            instances = instances.join(", "),
        )
    }

    /// A typed configuration routing the bank's IIN to `instances`, then `change`.
    pub fn config(&self, instances: Vec<InstanceConfig>, change: impl FnOnce(&mut GatewayConfig)) -> GatewayConfig {
        let mut config = GatewayConfig::from_parts(&self.config_text(&instances), Vec::new()).unwrap();
        change(&mut config);
        config
    }

    pub async fn start(&self, config: &GatewayConfig) -> Gateway {
        let running = app::start(config).await.unwrap();
        let url = format!("https://127.0.0.1:{}", running.address.port());
        let admin_url = format!("http://{}", running.admin_address);
        Gateway { running, url, admin_url }
    }

    /// A merchant's client presenting `leaf` (None: no certificate), HTTP/2 or HTTP/1.1.
    pub fn merchant_client(&self, leaf: Option<&Leaf>) -> reqwest::Client {
        let trust = self.bank.pki.trust_store();
        let verifier = mps_pki::tls::server_cert_verifier(&trust, Role::GatewayServer).unwrap();
        let identity = leaf.map(|leaf| (leaf.chain_file.as_path(), leaf.key_file.as_path()));
        let mut tls = mps_pki::tls::client_config(verifier, identity).unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        reqwest::Client::builder().use_preconfigured_tls(tls).no_proxy().build().unwrap()
    }

    /// The merchant's usual client.
    pub fn merchant(&self) -> reqwest::Client {
        self.merchant_client(Some(&self.merchant_leaf))
    }
}

pub fn iin() -> Iin {
    Iin::new(IIN).unwrap()
}

pub fn instance(url: &str, health_url: &str) -> InstanceConfig {
    InstanceConfig { url: url.parse().unwrap(), health_url: health_url.parse().unwrap() }
}

/// A running gateway and its URLs.
pub struct Gateway {
    pub running: RunningGateway,
    pub url: String,
    pub admin_url: String,
}

impl Gateway {
    pub async fn post(&self, client: &reqwest::Client, path: &str, body: &[u8], jws: Option<&str>) -> Answer {
        self.try_post(client, path, body, jws).await.unwrap()
    }

    pub async fn try_post(
        &self,
        client: &reqwest::Client,
        path: &str,
        body: &[u8],
        jws: Option<&str>,
    ) -> Result<Answer, reqwest::Error> {
        let mut request =
            client.post(format!("{}{path}", self.url)).header("content-type", "application/json").body(body.to_vec());
        if let Some(jws) = jws {
            request = request.header("x-jws-signature", jws);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        let jws = header("x-jws-signature");
        let content_type = header("content-type");
        let header_names = response.headers().keys().map(|name| name.as_str().to_owned()).collect();
        let body = response.bytes().await?.to_vec();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        Ok(Answer { status, body, json, jws, content_type, header_names })
    }

    pub async fn admin(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("{}{path}", self.admin_url)).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    pub async fn metrics(&self) -> String {
        self.admin("/metrics").await.1
    }

    pub async fn shutdown(self) {
        self.running.shutdown().await;
    }
}

/// A loopback port nothing listens on.
pub async fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A TCP listener that accepts connections and never says a word.
pub async fn silent_listener() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    address
}

/// An issuer instance that forwards each request to the bank (over the bank's gateway mTLS
/// client), reports the bank's answer on the channel, and never answers the gateway: the
/// payment is decided and booked, and the answer is lost on the way back.
pub async fn answer_keeping_proxy(harness: &mut Harness) -> (SocketAddr, mpsc::UnboundedReceiver<Answer>) {
    let leaf = harness.bank.pki.issue("swallower", &request(Role::AuthzServer, "swallower"));
    let trust = harness.bank.pki.trust_store();
    let verifier = mps_pki::tls::client_cert_verifier(&trust, Role::GatewayClient).unwrap();
    let mut tls = mps_pki::tls::server_config(&leaf.chain_file, &leaf.key_file, verifier).unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let (sender, receiver) = mpsc::unbounded_channel();
    let state = Arc::new(ProxyState { client: harness.bank.gateway(), bank_url: harness.bank.url.clone(), sender });
    let router = Router::new().route("/v1/authorizations", post(keep_the_answer)).with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let service = TowerToHyperService::new(router);
                let _ = Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (address, receiver)
}

struct ProxyState {
    client: reqwest::Client,
    bank_url: String,
    sender: mpsc::UnboundedSender<Answer>,
}

async fn keep_the_answer(State(state): State<Arc<ProxyState>>, headers: HeaderMap, body: Bytes) -> &'static str {
    let mut request = state
        .client
        .post(format!("{}/v1/authorizations", state.bank_url))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(jws) = headers.get("x-jws-signature") {
        request = request.header("x-jws-signature", jws.clone());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let jws = response.headers().get("x-jws-signature").map(|v| v.to_str().unwrap().to_owned());
    let body = response.bytes().await.unwrap().to_vec();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let answer = Answer { status, body, json, jws, content_type: None, header_names: Vec::new() };
    let _ = state.sender.send(answer);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    "never"
}
