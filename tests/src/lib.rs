//! End-to-end harness: the issuing bank's authorization server started in-process on loopback
//! with a real SoftHSM token, a real PKI and a real SQLite ledger; the gateway's mTLS client; a
//! merchant that signs requests; SIMs from the sim library. Tests in `tests/tests/` use it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

pub mod booked;
pub mod browser;
pub mod logs;
pub mod openapi;
pub mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mps_authz::app::{self, RunningServer};
use mps_authz::config::AuthzConfig;
use mps_authz::ledger::{AccountKind, Ledger, NewAccount};
use mps_hsm::Hsm;
use mps_hsm::testing::TestToken;
use mps_pki::ca::{self, CaLevel, CertificateAuthority, HostNames, IssueRequest, ServerNames, Subject};
use mps_pki::{PkiConfig, Role, SoftwareSigner, TrustStore};
use mps_protocol::keys::AesKey;
use mps_protocol::{Account, Amount, Currency, Iin, MerchantId, OrderNo, Password, SimId};
use mps_sim::{MerchantEntry, PaymentRequest, Profile};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

/// Our issuer's IIN.
pub const IIN: &str = "400012";
/// The merchant's acquirer.
pub const ACQUIRER_IIN: &str = "500001";
/// The test merchant.
pub const MERCHANT_ID: &str = "SHOP-0001";
/// The merchant's account at its acquirer.
pub const MERCHANT_ACCOUNT: &str = "DE89370400440532013000";

/// A certificate and key written to files.
pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub serial_hex: String,
    pub key_pem: String,
    pub chain_file: PathBuf,
    pub key_file: PathBuf,
}

/// The scheme's CA in a directory, with file keys.
pub struct Pki {
    pub dir: PathBuf,
    pub authority: CertificateAuthority,
    intermediate_key: rcgen::KeyPair,
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        let authority =
            CertificateAuthority::init(&dir.join("ca"), &PkiConfig::default(), OffsetDateTime::now_utc()).unwrap();
        let intermediate_key = authority.load_file_key(CaLevel::Intermediate).unwrap();
        Self { dir: dir.to_owned(), authority, intermediate_key }
    }

    pub fn root_file(&self) -> PathBuf {
        self.authority.cert_path(CaLevel::Root)
    }

    pub fn crls_file(&self) -> PathBuf {
        self.authority.crls_path()
    }

    /// Issues a certificate with a fresh file key.
    pub fn issue(&mut self, name: &str, request: &IssueRequest) -> Leaf {
        let key = ca::generate_key().unwrap();
        let issued = self.authority.issue(request, &key, &self.intermediate_key, OffsetDateTime::now_utc()).unwrap();
        let prefix = self.dir.join(name);
        let key_pem = key.serialize_pem();
        ca::write_issued(&prefix, &issued, Some(&key_pem)).unwrap();
        Leaf {
            chain: issued.chain.clone(),
            serial_hex: issued.serial_hex.clone(),
            key_pem,
            chain_file: ca::with_suffix(&prefix, "crt"),
            key_file: ca::with_suffix(&prefix, "key"),
        }
    }

    /// Issues a certificate for a key held elsewhere (the HSM's mps-sign).
    pub fn issue_for_key(&mut self, name: &str, request: &IssueRequest, key: &dyn rcgen::PublicKeyData) -> PathBuf {
        let issued = self.authority.issue(request, key, &self.intermediate_key, OffsetDateTime::now_utc()).unwrap();
        let prefix = self.dir.join(name);
        ca::write_issued(&prefix, &issued, None).unwrap();
        ca::with_suffix(&prefix, "crt")
    }

    /// Revokes a certificate and rewrites the CRL files.
    pub fn revoke(&mut self, leaf: &Leaf) {
        let now = OffsetDateTime::now_utc();
        let level = self.authority.revoke(&leaf.serial_hex, ca::RevocationReason::KeyCompromise, now).unwrap();
        self.authority.write_crl(level, &self.intermediate_key, now).unwrap();
    }

    /// Publishes fresh CRLs of both CA levels as of `now` (a `now` in the past makes CRLs whose
    /// nextUpdate may have passed).
    pub fn publish_crls(&mut self, now: OffsetDateTime) {
        let root_key = self.authority.load_file_key(CaLevel::Root).unwrap();
        self.authority.write_crl(CaLevel::Root, &root_key, now).unwrap();
        self.authority.write_crl(CaLevel::Intermediate, &self.intermediate_key, now).unwrap();
    }

    pub fn trust_store(&self) -> TrustStore {
        TrustStore::from_pem_files(&[&self.root_file()], &[&self.crls_file()]).unwrap()
    }

    /// An mTLS client (HTTP/2 or HTTP/1.1) of servers with a `server` certificate of this CA,
    /// presenting `leaf` (None: no client certificate): the gateway's client of authz
    /// (`Role::AuthzServer`, a gateway-client leaf), or a merchant's of the gateway
    /// (`Role::GatewayServer`, a merchant leaf).
    pub fn client(&self, server: Role, leaf: Option<&Leaf>) -> reqwest::Client {
        let trust = self.trust_store();
        let verifier = mps_pki::tls::server_cert_verifier(&trust, server).unwrap();
        let identity = leaf.map(|leaf| (leaf.chain_file.as_path(), leaf.key_file.as_path()));
        let mut tls = mps_pki::tls::client_config(verifier, identity).unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap()
    }
}

/// The bank signing certificate request of bank `iin`.
pub fn bank_signing_request(iin: Iin, name: &str) -> IssueRequest {
    IssueRequest::new(Subject::BankSigning { iin }, name)
}

/// A certificate request for a role with the names the tests use.
pub fn request(role: Role, name: &str) -> IssueRequest {
    let localhost = || {
        let names = HostNames::new(vec!["localhost".to_owned()], vec!["127.0.0.1".parse().unwrap()]).unwrap();
        ServerNames::new(names).unwrap()
    };
    let subject = match role {
        Role::AuthzServer => Subject::AuthzServer { names: localhost() },
        Role::GatewayServer => Subject::GatewayServer { names: localhost() },
        Role::GatewayClient => Subject::GatewayClient { names: HostNames::default() },
        Role::Merchant => Subject::Merchant { merchant_id: MerchantId::new(MERCHANT_ID).unwrap() },
        Role::BankSigning => Subject::BankSigning { iin: Iin::new(IIN).unwrap() },
    };
    IssueRequest::new(subject, name)
}

/// A certificate request like [`request`] whose validity ended a day ago (it began two days
/// ago): for the expired certificates of the hostile tests.
pub fn expired_request(role: Role, name: &str) -> IssueRequest {
    let now = OffsetDateTime::now_utc();
    let mut expired = request(role, name);
    expired.validity =
        ca::Validity::Window { not_before: now - time::Duration::days(2), not_after: now - time::Duration::days(1) };
    expired
}

/// A merchant that signs its requests.
pub struct Merchant {
    pub id: MerchantId,
    /// The bank its reversals are addressed to.
    pub issuer_iin: Iin,
    pub chain: Vec<CertificateDer<'static>>,
    pub signer: SoftwareSigner,
}

impl Merchant {
    pub fn from_leaf(id: &str, leaf: &Leaf) -> Self {
        Self {
            id: MerchantId::new(id).unwrap(),
            issuer_iin: Iin::new(IIN).unwrap(),
            chain: leaf.chain.clone(),
            signer: SoftwareSigner::from_pkcs8_pem(&leaf.key_pem).unwrap(),
        }
    }

    /// The body of an authorization request for `packet`, with its detached JWS.
    pub fn request(&self, packet: &[u8], order_no: &str, amount: u64, currency: u16) -> (Vec<u8>, String) {
        self.request_via(ACQUIRER_IIN, packet, order_no, amount, currency)
    }

    /// [`Merchant::request`] naming another acquirer (the merchant's bank).
    pub fn request_via(
        &self,
        acquirer_iin: &str,
        packet: &[u8],
        order_no: &str,
        amount: u64,
        currency: u16,
    ) -> (Vec<u8>, String) {
        let body = serde_json::json!({
            "payer_packet": BASE64.encode(packet),
            "merchant_id": self.id.as_str(),
            "order_no": order_no,
            "amount": amount,
            "currency": currency,
            "acquirer_iin": acquirer_iin,
            "merchant_account": MERCHANT_ACCOUNT,
            "merchant_time": "2026-11-26T12:00:00Z",
        });
        let body = serde_json::to_vec(&body).unwrap();
        let jws = self.sign(&body);
        (body, jws)
    }

    /// The body of a reversal request (DESIGN.md section 6.1) with its detached JWS;
    /// `merchant_time` tells repeats (the same bytes) from new requests.
    pub fn reversal(
        &self,
        order_no: &str,
        amount: u64,
        txn_id: Option<&str>,
        merchant_time: &str,
    ) -> (Vec<u8>, String) {
        let body = serde_json::json!({
            "merchant_id": self.id.as_str(),
            "order_no": order_no,
            "amount": amount,
            "currency": Currency::EUR.code(),
            "acquirer_iin": ACQUIRER_IIN,
            "issuer_iin": self.issuer_iin.as_str(),
            "txn_id": txn_id,
            "reason": "timeout",
            "merchant_time": merchant_time,
        });
        let body = serde_json::to_vec(&body).unwrap();
        let jws = self.sign(&body);
        (body, jws)
    }

    pub fn sign(&self, body: &[u8]) -> String {
        mps_pki::jws::sign_detached(body, &self.chain, &self.signer).unwrap()
    }
}

/// What the server answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub json: serde_json::Value,
    pub jws: Option<String>,
    pub content_type: Option<String>,
    /// Names of the answer's headers, lower case.
    pub header_names: Vec<String>,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.json["response_code"].as_str().unwrap_or("")
    }

    pub fn payer_answer(&self) -> Option<Vec<u8>> {
        self.json["payer_answer"].as_str().map(|b| BASE64.decode(b).unwrap())
    }
}

/// An account to create.
pub struct AccountSpec {
    pub number: &'static str,
    pub password: &'static str,
    pub kind: AccountKind,
    pub currency: Currency,
    pub balance: u64,
    pub credit_limit: u64,
    pub per_txn_limit: u64,
    pub daily_limit: u64,
}

impl AccountSpec {
    /// A debit account in EUR with generous limits.
    pub fn debit(number: &'static str, password: &'static str, balance: u64) -> Self {
        Self {
            number,
            password,
            kind: AccountKind::Debit,
            currency: Currency::EUR,
            balance,
            credit_limit: 0,
            per_txn_limit: 100_000,
            daily_limit: 1_000_000,
        }
    }
}

/// Everything a bank server needs on disk: a PKI with every certificate, the bank's signing
/// certificate for mps-sign (issued through the HSM), and the authz configuration text. For
/// tests that run the server in-process ([`Bank`]) or as the `authz` binary.
pub struct BankFiles {
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    /// A pool on the process's test token (it issued the bank certificate); the in-process
    /// server uses it.
    pub hsm: Hsm,
    /// The server's configuration, typed; [`BankBuilder::with_config`] changes are applied.
    pub config: AuthzConfig,
    /// The same configuration as the TOML file a deployment would have, before any
    /// `with_config` change: for tests that run the `authz` binary (HSM PIN from the test
    /// token's PIN file).
    pub config_text: String,
    pub gateway_leaf: Leaf,
    pub merchant_leaf: Leaf,
    pub bank_cert: PathBuf,
    pub revoked_gateway_leaf: Leaf,
    pub foreign_gateway_leaf: Leaf,
    /// The in-process server's clock.
    pub clock: mps_authz::decision::clock::Clock,
}

/// One change to a typed configuration.
type Change<T> = Box<dyn FnOnce(&mut T) + Send>;

/// Builds a test bank in the style of a typed test app: every change is a closure over the
/// typed configuration, never TOML text.
///
/// ```text
/// let bank = Bank::builder().with_config(|c| c.server.header_read_timeout_ms = 300).start().await;
/// ```
#[derive(Default)]
pub struct BankBuilder {
    config_changes: Vec<Change<AuthzConfig>>,
    pool_changes: Vec<Change<mps_hsm::HsmConfig>>,
    clock: mps_authz::decision::clock::Clock,
    iin: Option<Iin>,
    postgres_ledger: Option<String>,
}

impl BankBuilder {
    /// Changes the server's configuration (applied after the files are made).
    pub fn with_config(mut self, change: impl FnOnce(&mut AuthzConfig) + Send + 'static) -> Self {
        self.config_changes.push(Box::new(change));
        self
    }

    /// Changes the HSM configuration of the in-process server's pool (it starts from the
    /// test token's), for example `keys.signing_next`.
    pub fn with_pool(mut self, change: impl FnOnce(&mut mps_hsm::HsmConfig) + Send + 'static) -> Self {
        self.pool_changes.push(Box::new(change));
        self
    }

    /// The clock the in-process server books and answers by (the system clock by default),
    /// for payments of several business days in one test.
    pub fn with_clock(mut self, clock: mps_authz::decision::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Another issuer than [`IIN`]: its configuration, signing certificate and SIMs name `iin`
    /// (for tests with two banks).
    pub fn with_iin(mut self, iin: &str) -> Self {
        self.iin = Some(Iin::new(iin).unwrap());
        self
    }

    /// The ledger in PostgreSQL instead of an SQLite file of the bank's dir: `connection` is
    /// the libpq string of `[ledger.postgres]` (for a test cluster,
    /// `mps_authz::ledger::postgres_testing::PgCluster::connection_string`). It goes into the
    /// configuration text, so the in-process server and the `authz` binary
    /// ([`BankFiles::binary_config_text`]) both open that database.
    pub fn with_postgres_ledger(mut self, connection: impl Into<String>) -> Self {
        self.postgres_ledger = Some(connection.into());
        self
    }

    /// Makes the PKI, the bank's certificates and the configuration, without starting.
    pub async fn files(self) -> BankFiles {
        BankFiles::create(self).await
    }

    /// Makes the files and starts the server in-process.
    pub async fn start(self) -> Bank {
        Bank::start_from(self.files().await).await
    }
}

impl BankFiles {
    async fn create(builder: BankBuilder) -> BankFiles {
        // Plain-HTTP helpers (reqwest::get on the admin listener) need a process provider.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let token = TestToken::shared().unwrap();
        let mut pool_config = token.config.clone();
        for change in builder.pool_changes {
            change(&mut pool_config);
        }
        let hsm = Hsm::connect(pool_config.clone()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let iin = builder.iin.unwrap_or_else(|| Iin::new(IIN).unwrap());
        let (pki, gateway_leaf, merchant_leaf, server_leaf, bank_cert, revoked_gateway_leaf, foreign_gateway_leaf) = {
            let dir_path = dir.path().to_owned();
            let hsm = hsm.clone();
            tokio::task::spawn_blocking(move || {
                let mut pki = Pki::new(&dir_path);
                let gateway = pki.issue("gateway-client", &request(Role::GatewayClient, "gateway"));
                let revoked = pki.issue("gateway-revoked", &request(Role::GatewayClient, "gateway revoked"));
                pki.revoke(&revoked);
                let foreign_dir = dir_path.join("foreign");
                std::fs::create_dir_all(&foreign_dir).unwrap();
                let mut foreign_pki = Pki::new(&foreign_dir);
                let foreign = foreign_pki.issue("gateway-foreign", &request(Role::GatewayClient, "gateway"));
                let merchant = pki.issue("merchant", &request(Role::Merchant, "merchant"));
                let server = pki.issue("authz-server", &request(Role::AuthzServer, "authz"));
                let signer = mps_pki::hsm::HsmSigner::new(hsm);
                let bank = pki.issue_for_key("bank-signing", &bank_signing_request(iin, "bank"), &signer);
                (pki, gateway, merchant, server, bank, revoked, foreign)
            })
            .await
            .unwrap()
        };
        let ledger = match &builder.postgres_ledger {
            Some(connection) => LedgerText::Postgres(connection),
            None => LedgerText::Sqlite(dir.path().join("authz.db")),
        };
        let config_text = authz_config_text(&pki, &server_leaf, &bank_cert, &token.config, iin, &ledger);
        let mut config = AuthzConfig::from_parts(&config_text, Vec::new()).unwrap();
        config.hsm = pool_config;
        for change in builder.config_changes {
            change(&mut config);
        }
        BankFiles {
            clock: builder.clock,
            dir,
            pki,
            hsm,
            config,
            config_text,
            gateway_leaf,
            merchant_leaf,
            bank_cert,
            revoked_gateway_leaf,
            foreign_gateway_leaf,
        }
    }
}

impl BankFiles {
    /// The configuration file of the `authz` binary: [`BankFiles::config_text`] with fixed
    /// listen addresses (a restarted process keeps its ports) and the HSM PIN from the
    /// environment variable `pin_env` instead of the test token's PIN file.
    pub fn binary_config_text(&self, listen: SocketAddr, admin: SocketAddr, pin_env: &str) -> String {
        fn section<'a>(config: &'a mut toml::Table, name: &str) -> &'a mut toml::Table {
            config
                .get_mut(name)
                .and_then(toml::Value::as_table_mut)
                .unwrap_or_else(|| panic!("no [{name}] in the text"))
        }
        let mut config: toml::Table = self.config_text.parse().unwrap();
        section(&mut config, "server").insert("listen".to_owned(), listen.to_string().into());
        section(&mut config, "admin").insert("listen".to_owned(), admin.to_string().into());
        let hsm = section(&mut config, "hsm");
        hsm.remove("pin_file");
        hsm.insert("pin_env".to_owned(), pin_env.into());
        config.to_string()
    }
}

/// The bank, its server and a gateway client.
pub struct Bank {
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    pub config: AuthzConfig,
    pub hsm: Hsm,
    pub ledger: Ledger,
    pub server: Option<RunningServer>,
    pub gateway_leaf: Leaf,
    /// A gateway certificate of our CA, revoked before the server started.
    pub revoked_gateway_leaf: Leaf,
    /// A gateway certificate from another CA.
    pub foreign_gateway_leaf: Leaf,
    pub merchant: Merchant,
    /// This bank's IIN.
    pub iin: Iin,
    pub url: String,
    pub admin_url: String,
    pub bank_certificate_pem: String,
}

impl Bank {
    /// A bank with the default test configuration.
    pub async fn start() -> Bank {
        Self::builder().start().await
    }

    /// A builder for a bank with changes to its configuration.
    pub fn builder() -> BankBuilder {
        BankBuilder::default()
    }

    /// Starts the server in-process from prepared files, with `files.hsm` as its pool and
    /// `files.config` as its configuration (both may be changed before).
    pub async fn start_from(files: BankFiles) -> Bank {
        let BankFiles {
            dir,
            pki,
            hsm,
            config,
            gateway_leaf,
            merchant_leaf,
            bank_cert,
            revoked_gateway_leaf,
            foreign_gateway_leaf,
            config_text: _,
            clock,
        } = files;
        let mut parts = app::parts_with_hsm(&config, hsm.clone()).unwrap();
        parts.clock = clock;
        let ledger = parts.ledger.clone();
        let server = app::start(&config, parts).await.unwrap();
        let url = format!("https://127.0.0.1:{}", server.address.port());
        let admin_url = format!("http://{}", server.admin_address);
        let bank_certificate_pem = std::fs::read_to_string(&bank_cert).unwrap();
        let iin = config.issuer.iin;
        Bank {
            merchant: Merchant { issuer_iin: iin, ..Merchant::from_leaf(MERCHANT_ID, &merchant_leaf) },
            iin,
            dir,
            pki,
            config,
            hsm,
            ledger,
            server: Some(server),
            gateway_leaf,
            revoked_gateway_leaf,
            foreign_gateway_leaf,
            url,
            admin_url,
            bank_certificate_pem,
        }
    }

    /// A gateway client presenting `leaf` (None: no client certificate).
    pub fn client(&self, leaf: Option<&Leaf>) -> reqwest::Client {
        self.pki.client(Role::AuthzServer, leaf)
    }

    /// A client that offers only HTTP/1.1 in ALPN.
    pub fn client_http1(&self, leaf: Option<&Leaf>) -> reqwest::Client {
        let trust = self.pki.trust_store();
        let verifier = mps_pki::tls::server_cert_verifier(&trust, Role::AuthzServer).unwrap();
        let identity = leaf.map(|leaf| (leaf.chain_file.as_path(), leaf.key_file.as_path()));
        let mut tls = mps_pki::tls::client_config(verifier, identity).unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        reqwest::Client::builder().use_preconfigured_tls(tls).http1_only().build().unwrap()
    }

    /// The gateway's client.
    pub fn gateway(&self) -> reqwest::Client {
        self.client(Some(&self.gateway_leaf))
    }

    /// The value of an unlabelled metric on the admin listener's /metrics (panics when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.admin_url)).await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{name} is not in /metrics"))
    }

    /// A raw TLS connection to the server with the gateway's client certificate (offering
    /// `alpn`, or the client default), handshake done, nothing sent; an error when the server
    /// refused or closed it. For tests that speak HTTP by hand or send nothing at all.
    pub async fn tls_connect(
        &self,
        alpn: Option<&[u8]>,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, std::io::Error> {
        self.tls_connect_as(Some(&self.gateway_leaf), alpn).await
    }

    /// Like [`Bank::tls_connect`], presenting `leaf` (None: no client certificate). In TLS 1.3
    /// the server checks the client's certificate after the client has finished its side of
    /// the handshake: a refused certificate may show only at the first read.
    pub async fn tls_connect_as(
        &self,
        leaf: Option<&Leaf>,
        alpn: Option<&[u8]>,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, std::io::Error> {
        let trust = self.pki.trust_store();
        let verifier = mps_pki::tls::server_cert_verifier(&trust, Role::AuthzServer).unwrap();
        let identity = leaf.map(|leaf| (leaf.chain_file.as_path(), leaf.key_file.as_path()));
        let mut tls = mps_pki::tls::client_config(verifier, identity).unwrap();
        if let Some(alpn) = alpn {
            tls.alpn_protocols = vec![alpn.to_vec()];
        }
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let tcp = tokio::net::TcpStream::connect(self.server.as_ref().expect("server running").address).await?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        connector.connect(name, tcp).await
    }

    /// Creates an account.
    pub async fn create_account(&self, spec: &AccountSpec) -> Account {
        let account = Account::new(spec.number).unwrap();
        let new = NewAccount {
            account: account.clone(),
            holder_name: mps_protocol::Secret::new("Test Holder".to_owned()),
            kind: spec.kind,
            currency: spec.currency,
            opening_balance: Amount::from_minor(spec.balance),
            credit_limit: Amount::from_minor(spec.credit_limit),
            per_txn_limit: Amount::from_minor(spec.per_txn_limit),
            daily_limit: Amount::from_minor(spec.daily_limit),
            password_verification_value: mps_protocol::PasswordVerificationValue::new([0; 32]),
        };
        let password = Password::new(spec.password).unwrap();
        mps_authz::registration::create_account(&self.hsm, &self.ledger, new, &password).await.unwrap();
        account
    }

    /// Registers a SIM bound to `accounts` and personalises a SIM profile with its record.
    pub async fn new_sim(&self, sim_id: &str, accounts: &[&Account]) -> TestSim {
        let sim_id = SimId::new(sim_id).unwrap();
        let bound: Vec<Account> = accounts.iter().map(|a| (*a).clone()).collect();
        let token = TestToken::shared().unwrap();
        let record = mps_authz::registration::register_sim(
            &self.hsm,
            &self.ledger,
            self.iin,
            &sim_id,
            &bound,
            &token.transport_key_label,
            &self.bank_certificate_pem,
        )
        .await
        .unwrap();
        let mut profile = Profile::new();
        profile.personalise(&record, &transport_key(), false).unwrap();
        for account in &bound {
            profile.add_account(account.clone(), self.iin, None).unwrap();
        }
        profile.add_merchant(MerchantEntry::new(self.merchant.id, None, None).unwrap()).unwrap();
        TestSim { sim_id, profile, issuer: self.iin }
    }

    /// A SIM personalised with a record the bank never issued (its SIM id is unknown to the bank).
    pub fn unregistered_sim(&self, sim_id: &str, account: &Account) -> TestSim {
        let sim_id = SimId::new(sim_id).unwrap();
        let chain_key = AesKey::from_bytes(rand_bytes());
        let wrapped = mps_protocol::perso::wrap_key(&transport_key(), &chain_key);
        let record = mps_protocol::perso::PersoRecord::new(
            self.iin,
            &sim_id,
            "mps-tk-test",
            &wrapped,
            mps_protocol::Rsn([7; 8]),
            &self.bank_certificate_pem,
        );
        let mut profile = Profile::new();
        profile.personalise(&record, &transport_key(), false).unwrap();
        profile.add_account(account.clone(), self.iin, None).unwrap();
        profile.add_merchant(MerchantEntry::new(self.merchant.id, None, None).unwrap()).unwrap();
        TestSim { sim_id, profile, issuer: self.iin }
    }

    /// The running server's metrics.
    pub fn metrics(&self) -> &mps_authz::ops::metrics::Metrics {
        &self.server.as_ref().expect("server running").metrics
    }

    /// Posts a body with a JWS header through `client`.
    pub async fn post(
        &self,
        client: &reqwest::Client,
        body: Vec<u8>,
        jws: Option<&str>,
    ) -> Result<Answer, reqwest::Error> {
        self.post_to(client, "/v1/authorizations", body, jws).await
    }

    /// Posts `body` to `path` on the server with an optional signature header.
    pub async fn post_to(
        &self,
        client: &reqwest::Client,
        path: &str,
        body: Vec<u8>,
        jws: Option<&str>,
    ) -> Result<Answer, reqwest::Error> {
        post_json(client, &format!("{}{path}", self.url), body, jws).await
    }

    /// The merchant signs and the gateway posts a reversal of `order_no`.
    pub async fn reverse(&self, order_no: &str, amount: u64, txn_id: Option<&str>, merchant_time: &str) -> Answer {
        let (body, jws) = self.merchant.reversal(order_no, amount, txn_id, merchant_time);
        self.post_to(&self.gateway(), "/v1/reversals", body, Some(&jws)).await.unwrap()
    }

    /// The merchant signs and the gateway posts a payment for `packet`.
    pub async fn authorize(&self, packet: &[u8], order_no: &str, amount: u64) -> Answer {
        let (body, jws) = self.merchant.request(packet, order_no, amount, Currency::EUR.code());
        self.post(&self.gateway(), body, Some(&jws)).await.unwrap()
    }

    /// Available funds of an account, from the ledger.
    pub async fn available(&self, account: &Account) -> i64 {
        self.ledger.account(account).await.unwrap().unwrap().available()
    }

    /// The bank's answer signature checked against the bank's certificate.
    pub fn verify_bank_signature(&self, answer: &Answer) {
        let jws = answer.jws.as_deref().expect("a processed answer carries x-jws-signature");
        let trust = self.pki.trust_store();
        let identity = mps_pki::jws::verify_detached(
            jws,
            &answer.body,
            &trust,
            Role::BankSigning,
            rustls_pki_types::UnixTime::now(),
        )
        .unwrap();
        assert_eq!(identity.bank_iin, Some(self.iin));
    }

    pub async fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// A SIM personalised from the bank's record.
pub struct TestSim {
    pub sim_id: SimId,
    pub profile: Profile,
    /// The bank that issued it.
    pub issuer: Iin,
}

impl TestSim {
    /// Builds a payment packet (it stays pending in the profile until its answer is read).
    pub fn pay(&mut self, account: &Account, order_no: &str, amount: u64, password: &str) -> Vec<u8> {
        let request = PaymentRequest {
            account: account.clone(),
            merchant_id: MerchantId::new(MERCHANT_ID).unwrap(),
            order_no: OrderNo::new(order_no).unwrap(),
            amount: Amount::from_minor(amount),
            currency: Currency::EUR,
        };
        let iv: [u8; 16] = rand_iv();
        let packet = self.profile.prepare_payment(&request, &Password::new(password).unwrap(), iv).unwrap();
        packet.encode().to_vec()
    }

    /// Opens the issuer's answer and advances the ratchet.
    pub fn read_answer(&mut self, answer: &Answer) -> mps_sim::AnswerOutcome {
        let bytes = answer.payer_answer().expect("the answer carries a payer_answer");
        self.profile.open_answer(&bytes, Some(self.issuer)).unwrap()
    }
}

/// Posts a JSON `body` to `url` through `client`, with the signature header when `jws` is
/// given, and reads the whole answer: to an authz instance, or to a gateway as its merchant.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    jws: Option<&str>,
) -> Result<Answer, reqwest::Error> {
    let mut request = client.post(url).header("content-type", "application/json").body(body);
    if let Some(jws) = jws {
        request = request.header("x-jws-signature", jws);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let jws = response.headers().get("x-jws-signature").map(|v| v.to_str().unwrap().to_owned());
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let header_names = response.headers().keys().map(|k| k.as_str().to_owned()).collect();
    let body = response.bytes().await?.to_vec();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Ok(Answer { status, body, json, jws, content_type, header_names })
}

fn rand_iv() -> [u8; 16] {
    rand_bytes()
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut out);
    out
}

/// The test token's transport key, as the SIM vendor holds it.
/// Holds a ledger's SQLite write lock from another connection: authz's writer then waits in
/// BEGIN IMMEDIATE (reads go on, in WAL mode) until [`WriteLock::release`].
pub struct WriteLock(rusqlite::Connection);

impl WriteLock {
    pub fn take(path: &Path) -> Self {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        Self(conn)
    }

    pub fn release(self) {
        self.0.execute_batch("ROLLBACK").unwrap();
    }
}

/// A TCP port of 127.0.0.1 that nothing listens on now, for a service started as a separate
/// process with a fixed `listen` address.
///
/// Drawn below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`): a port from
/// inside it, found free by binding port 0 and then released, can be taken by any outgoing
/// connection before the service binds it (a CI run failed that way). Below the range only
/// another test choosing the same port can collide, and this process never hands one out twice.
pub fn free_port() -> std::net::SocketAddr {
    use rand::Rng as _;
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next().and_then(|low| low.parse::<u16>().ok()))
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_100));
    let mut taken = TAKEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..1000 {
        let port = rand::thread_rng().gen_range(low..high);
        if taken.contains(&port) {
            continue;
        }
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            taken.push(port);
            if let Ok(address) = listener.local_addr() {
                return address;
            }
        }
    }
    panic!("no free TCP port of 127.0.0.1 below {high}")
}

/// A second HSM holding the bank's keys, for a second `authz` process: the test token's
/// directory (`directories.tokendir` of its softhsm2.conf) copied into `<dir>/tokens`, and a
/// softhsm2.conf naming the copy in `dir`. Returns that file, the process's `SOFTHSM2_CONF`.
/// Copy while no process changes the token (SoftHSM rewrites `token.object` at a login, so
/// before any other process logs in).
pub fn copy_test_token(dir: &Path) -> PathBuf {
    const TOKENDIR_KEY: &str = "directories.tokendir";
    let conf = &TestToken::shared().unwrap().softhsm_conf;
    let text = std::fs::read_to_string(conf).unwrap();
    let tokens = dir.join("tokens");
    let mut copied = String::new();
    for line in text.lines() {
        match line.split_once('=') {
            Some((key, value)) if key.trim() == TOKENDIR_KEY => {
                copy_dir(Path::new(value.trim()), &tokens);
                copied.push_str(&format!("{TOKENDIR_KEY} = {}\n", tokens.display()));
            }
            _ => copied.push_str(&format!("{line}\n")),
        }
    }
    assert!(tokens.is_dir(), "{} names no {TOKENDIR_KEY}:\n{text}", conf.display());
    let copy_conf = dir.join("softhsm2.conf");
    std::fs::write(&copy_conf, copied).unwrap();
    copy_conf
}

/// Copies directory `from` to `to` (created), with its subdirectories.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub fn transport_key() -> AesKey {
    AesKey::from_bytes(mps_hsm::testing::TRANSPORT_KEY_VALUE)
}

/// Where a test bank's configuration puts its ledger.
enum LedgerText<'a> {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its libpq connection string.
    Postgres(&'a str),
}

impl LedgerText<'_> {
    /// The `[ledger]` table (and `[ledger.postgres]`), values quoted by the TOML writer.
    fn toml(&self) -> String {
        let quoted = |text: &str| toml::Value::from(text).to_string();
        match self {
            Self::Sqlite(path) => format!("[ledger]\npath = {}\n", quoted(&path.display().to_string())),
            Self::Postgres(connection) => {
                format!("[ledger]\nbackend = \"postgres\"\n\n[ledger.postgres]\nconnection = {}\n", quoted(connection))
            }
        }
    }
}

fn authz_config_text(
    pki: &Pki,
    server: &Leaf,
    bank_cert: &Path,
    hsm: &mps_hsm::HsmConfig,
    iin: Iin,
    ledger: &LedgerText<'_>,
) -> String {
    let hsm_toml = toml_of_hsm(hsm);
    let ledger_toml = ledger.toml();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
certificate = "{cert}"
private_key = "{key}"
client_ca = ["{root}"]
client_crls = ["{crls}"]
request_timeout_ms = 20000

[admin]
listen = "127.0.0.1:0"

[issuer]
iin = "{iin}"
signing_certificate = "{bank}"

[merchants]
scheme_ca = ["{root}"]
crls = ["{crls}"]

{hsm_toml}

{ledger_toml}

[log]
level = "debug"
"#,
        cert = server.chain_file.display(),
        key = server.key_file.display(),
        root = pki.root_file().display(),
        crls = pki.crls_file().display(),
        bank = bank_cert.display(),
    )
}

fn toml_of_hsm(hsm: &mps_hsm::HsmConfig) -> String {
    let pin = match &hsm.pin_file {
        Some(path) => format!("pin_file = \"{}\"", path.display()),
        None => format!("pin_env = \"{}\"", hsm.pin_env),
    };
    format!(
        "[hsm]\nmodule_path = \"{}\"\ntoken_label = \"{}\"\n{pin}\npool_size = {}\nreconnect_backoff_min_ms = {}\nreconnect_backoff_max_ms = {}\nkek_refresh_ms = {}\n",
        hsm.module_path.display(),
        hsm.token_label,
        hsm.pool_size,
        hsm.reconnect_backoff_min_ms,
        hsm.reconnect_backoff_max_ms,
        hsm.kek_refresh_ms,
    )
}

/// Shared handle type for tests that spawn many tasks.
pub type SharedBank = Arc<Bank>;
