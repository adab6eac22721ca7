//! The harness's two faces on the wire: the TLS client (acting as the gateway towards authz,
//! or as the merchant towards the gateway; HTTP/2 with keep-alive) and the merchant that signs
//! each request with a detached JWS made in software.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mps_pki::{Role, SoftwareSigner, TrustStore};
use mps_protocol::{Amount, Currency, Iin, MerchantId, OrderNo};
use rustls_pki_types::CertificateDer;

use crate::config::TargetKind;
use crate::drive::exchange::Answer;

/// The path every authorization request goes to, at authz and at the gateway alike.
pub const AUTHORIZATIONS_PATH: &str = "/v1/authorizations";
/// Answers larger than this are not read (a 79-byte answer in JSON is well under 1 KiB).
pub const ANSWER_BYTES_MAX: usize = 64 * 1024;
/// At most this many base URLs in one run (several authz instances behind one ledger).
pub const TARGETS_MAX: usize = 64;

/// Why the client or the merchant could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The scheme CA or CRL files.
    #[error("scheme CA: {0} (give the scheme root with --scheme-ca and its CRLs with --crl)")]
    Trust(#[from] mps_pki::TrustStoreError),
    /// The TLS configuration.
    #[error("TLS client: {0} (check the client certificate and key files)")]
    Tls(#[from] mps_pki::tls::TlsError),
    /// reqwest refused the configuration.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The merchant's certificate or key.
    #[error("merchant certificate or key: {0} (give --merchant-cert and --merchant-key)")]
    MerchantFiles(String),
    /// A merchant identifier.
    #[error("merchant: {0} (check [merchant] in the configuration)")]
    MerchantId(#[from] mps_protocol::IdError),
    /// A file is missing from the configuration.
    #[error("{0} is not set: give it in the configuration file or with its flag")]
    Missing(&'static str),
    /// No base URL, or more than [`TARGETS_MAX`].
    #[error("give 1 to {TARGETS_MAX} URLs with --url (or [target] url), not {0}")]
    TargetCount(usize),
    /// Fewer connections than targets: some target would get no request.
    #[error("{connections} connection(s) for {targets} URLs: give at least one connection per URL (--connections)")]
    TooFewConnections {
        /// Connections asked for.
        connections: usize,
        /// Targets given.
        targets: usize,
    },
}

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Target {
    /// authz or gateway.
    pub kind: TargetKind,
    /// The full URL of the authorization endpoint.
    pub url: String,
}

impl Target {
    /// A target at base URL `base`.
    pub fn new(kind: TargetKind, base: &str) -> Self {
        Self { kind, url: format!("{}{AUTHORIZATIONS_PATH}", base.trim_end_matches('/')) }
    }

    /// The role the server's certificate must have.
    pub fn server_role(&self) -> Role {
        match self.kind {
            TargetKind::Authz => Role::AuthzServer,
            TargetKind::Gateway => Role::GatewayServer,
        }
    }

    /// Posts a signed body; an answer of any status is Ok.
    pub async fn post(&self, client: &reqwest::Client, body: &[u8], jws: &str) -> Result<Answer, reqwest::Error> {
        let response = client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-jws-signature", jws)
            .body(body.to_vec())
            .send()
            .await?;
        let status = response.status().as_u16();
        let jws = response.headers().get("x-jws-signature").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.bytes().await?;
        let body = body[..body.len().min(ANSWER_BYTES_MAX)].to_vec();
        Ok(Answer { status, body, jws })
    }

    /// One HTTP/2 client (one connection, kept alive) presenting `identity`.
    pub fn client(
        &self,
        trust: &TrustStore,
        identity: (&Path, &Path),
        timeout: Duration,
    ) -> Result<reqwest::Client, ClientError> {
        let verifier = mps_pki::tls::server_cert_verifier(trust, self.server_role())?;
        let mut tls = mps_pki::tls::client_config(verifier, Some(identity))?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .build()?)
    }
}

/// One connection of a run (one HTTP/2 client), bound to one of the run's targets.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Where this connection's requests go.
    pub target: Target,
    /// Index of `target` among the run's targets, for the per-URL counts.
    pub endpoint: usize,
    /// The HTTP/2 client (one connection, kept alive).
    pub client: reqwest::Client,
}

impl Connection {
    /// Posts a signed body to this connection's target; an answer of any status is Ok.
    pub async fn post(&self, body: &[u8], jws: &str) -> Result<Answer, reqwest::Error> {
        self.target.post(&self.client, body, jws).await
    }
}

/// `count` connections spread over `targets` round-robin: connection i goes to target
/// i mod n, so each target gets `count / n` connections, the first `count mod n` one more.
/// The closed loop's worker i and the open loop's request i use connection i mod `count`,
/// so the load follows the same split.
pub fn spread(
    targets: &[Target],
    count: usize,
    trust: &TrustStore,
    identity: (&Path, &Path),
    timeout: Duration,
) -> Result<Vec<Connection>, ClientError> {
    if targets.is_empty() || targets.len() > TARGETS_MAX {
        return Err(ClientError::TargetCount(targets.len()));
    }
    if count < targets.len() {
        return Err(ClientError::TooFewConnections { connections: count, targets: targets.len() });
    }
    (0..count)
        .map(|index| {
            let endpoint = index % targets.len();
            let target = targets[endpoint].clone();
            let client = target.client(trust, identity, timeout)?;
            Ok(Connection { target, endpoint, client })
        })
        .collect()
}

/// The merchant: its identity and its software key.
pub struct Merchant {
    /// Merchant id (must match its certificate).
    pub id: MerchantId,
    /// Its acquirer.
    pub acquirer_iin: Iin,
    /// Its account at the acquirer.
    pub merchant_account: String,
    chain: Vec<CertificateDer<'static>>,
    signer: SoftwareSigner,
}

impl Merchant {
    /// A merchant from its certificate chain and PKCS#8 key files.
    pub fn from_files(
        id: &str,
        acquirer_iin: &str,
        merchant_account: &str,
        certificate: &Path,
        key: &Path,
    ) -> Result<Self, ClientError> {
        let chain =
            mps_pki::pem::load_certificates(certificate).map_err(|e| ClientError::MerchantFiles(e.to_string()))?;
        let signer = SoftwareSigner::from_pkcs8_pem_file(key).map_err(|e| ClientError::MerchantFiles(e.to_string()))?;
        Ok(Self {
            id: MerchantId::new(id)?,
            acquirer_iin: Iin::new(acquirer_iin)?,
            merchant_account: merchant_account.to_owned(),
            chain,
            signer,
        })
    }

    /// The authorization request body (DESIGN.md section 6) for a payer packet.
    pub fn request_body(&self, packet: &[u8], order_no: OrderNo, amount: Amount, currency: Currency) -> Vec<u8> {
        let merchant_time = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .ok()
            .and_then(|now| now.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned());
        let body = serde_json::json!({
            "payer_packet": BASE64.encode(packet),
            "merchant_id": self.id.as_str(),
            "order_no": order_no.as_str(),
            "amount": amount.minor(),
            "currency": currency.code(),
            "acquirer_iin": self.acquirer_iin.as_str(),
            "merchant_account": self.merchant_account,
            "merchant_time": merchant_time,
        });
        body.to_string().into_bytes()
    }

    /// The detached JWS over `body`.
    pub fn sign(&self, body: &[u8]) -> Result<String, mps_pki::jws::JwsError> {
        mps_pki::jws::sign_detached(body, &self.chain, &self.signer)
    }
}
