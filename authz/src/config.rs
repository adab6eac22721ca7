//! The authorization server's configuration: one typed struct, parsed once at start-up from a
//! TOML file with `MPS_AUTHZ__SECTION__KEY` environment overrides. Secrets (the HSM PIN) never
//! come from here: `hsm.pin_env` / `hsm.pin_file` say where to read them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mps_protocol::Iin;
use serde::Deserialize;

use crate::ledger::LedgerConfig;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "MPS_AUTHZ";

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TOML or override syntax.
    #[error(transparent)]
    Overlay(#[from] mps_protocol::config::ConfigError),
    /// A key is missing, unknown or of the wrong type.
    #[error("configuration is invalid: {0} (see config/authz.example.toml)")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzConfig {
    /// The gateway-facing mTLS listener.
    pub server: ServerConfig,
    /// The admin listener (metrics, health).
    #[serde(default)]
    pub admin: AdminConfig,
    /// The bank as issuer.
    pub issuer: IssuerConfig,
    /// Trust for merchant JWS signatures.
    pub merchants: MerchantTrustConfig,
    /// Reloading CRLs while serving.
    #[serde(default)]
    pub revocation: RevocationConfig,
    /// The HSM.
    pub hsm: mps_hsm::HsmConfig,
    /// The ledger.
    pub ledger: LedgerSection,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// TLS version floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only (default).
    #[default]
    #[serde(rename = "1.3")]
    Tls13,
}

/// The gateway-facing listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Server certificate chain, PEM (leaf first).
    pub certificate: PathBuf,
    /// Server private key, PKCS#8 PEM.
    pub private_key: PathBuf,
    /// Trust anchors for client (gateway) certificates, PEM files.
    pub client_ca: Vec<PathBuf>,
    /// CRLs of the client CAs, PEM files; revoked gateway certificates are refused in the handshake.
    #[serde(default)]
    pub client_crls: Vec<PathBuf>,
    /// Lowest TLS version accepted.
    #[serde(default)]
    pub tls_min_version: TlsVersion,
    /// Largest request body accepted.
    #[serde(default = "defaults::body_bytes_max")]
    pub body_bytes_max: usize,
    /// Time allowed to read a request's headers.
    #[serde(default = "defaults::header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Time allowed for a whole authorization, from headers read to answer.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// TLS handshake timeout.
    #[serde(default = "defaults::handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Authorizations in flight at once; more get 503.
    #[serde(default = "defaults::in_flight_max")]
    pub in_flight_max: usize,
    /// Authenticated connections at once; more are closed after their handshake.
    #[serde(default = "defaults::connections_max")]
    pub connections_max: usize,
    /// TLS handshakes in progress at once, a budget apart from `connections_max`; sockets
    /// beyond it are closed at once.
    #[serde(default = "defaults::handshakes_max")]
    pub handshakes_max: usize,
    /// Sockets (handshaking or served) from one peer address at once.
    #[serde(default = "defaults::connections_per_source_max")]
    pub connections_per_source_max: usize,
    /// Time allowed to read a request's whole body.
    #[serde(default = "defaults::body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed (the first request
    /// must come within `header_read_timeout_ms` of the handshake).
    #[serde(default = "defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Concurrent streams per HTTP/2 connection.
    #[serde(default = "defaults::http2_streams_max")]
    pub http2_streams_max: u32,
    /// Time granted to in-flight authorizations at shutdown.
    #[serde(default = "defaults::shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

impl ServerConfig {
    /// Header read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    /// Whole-request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    /// TLS handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    /// Shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
    /// The listener's bounds.
    pub fn listener_limits(&self) -> mps_pki::listener::ListenerLimits {
        mps_pki::listener::ListenerLimits {
            handshake_timeout: self.handshake_timeout(),
            handshakes_max: self.handshakes_max,
            header_read_timeout: self.header_read_timeout(),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            connections_max: self.connections_max,
            connections_per_source_max: self.connections_per_source_max,
            http2_streams_max: self.http2_streams_max,
            shutdown_grace: self.shutdown_grace(),
        }
    }
}

/// The admin listener: plain HTTP, loopback by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of /metrics, /healthz, /readyz and the operator's console (/console).
    #[serde(default = "defaults::admin_listen")]
    pub listen: SocketAddr,
    /// Answers the console lists under "most recent decisions" (1 to 1000): the ring's bound.
    #[serde(default = "defaults::recent_decisions_max")]
    pub recent_decisions_max: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: defaults::admin_listen(), recent_decisions_max: defaults::recent_decisions_max() }
    }
}

/// The bank as issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Our issuer identification number; packets for another IIN are refused (code 12).
    pub iin: Iin,
    /// The bank's signing certificate chain (mps-sign), PEM: x5c of every signed answer.
    pub signing_certificate: PathBuf,
    /// Label of the SIM vendor's transport key used by `sim register`.
    #[serde(default = "defaults::transport_key")]
    pub transport_key: String,
    /// End of the business day, UTC, "HH:MM".
    #[serde(default = "defaults::cutoff")]
    pub business_day_cutoff: String,
    /// Consecutive wrong passwords that lock payments (code 75 at the last one).
    #[serde(default = "defaults::password_tries_max")]
    pub password_tries_max: u32,
    /// Packets whose MAC failed, per SIM and sending merchant, within `mac_failure_window_s`,
    /// after which that merchant's packets for the SIM get 429 until the window ends (0: no
    /// limit). The SIM itself is never blocked by MAC failures.
    #[serde(default = "defaults::mac_failure_limit")]
    pub mac_failure_limit: u32,
    /// See `mac_failure_limit` (1 to 3600 seconds).
    #[serde(default = "defaults::mac_failure_window_s")]
    pub mac_failure_window_s: u64,
    /// Signing-key renewal: the certificate chain of the next signing key (`hsm.keys.
    /// signing_next`), used for answers signed from `next_signing_from` on.
    #[serde(default)]
    pub next_signing_certificate: Option<PathBuf>,
    /// Signing-key renewal: when answers start being signed with the next key, RFC 3339 UTC
    /// ("2026-12-01T00:00:00Z").
    #[serde(default)]
    pub next_signing_from: Option<String>,
}

impl IssuerConfig {
    /// The signing-key renewal, when configured: (switch time, next certificate).
    pub fn next_signing(&self) -> Result<Option<(time::OffsetDateTime, &std::path::Path)>, ConfigError> {
        match (&self.next_signing_certificate, &self.next_signing_from) {
            (None, None) => Ok(None),
            (Some(certificate), Some(from)) => {
                let from = time::OffsetDateTime::parse(from, &time::format_description::well_known::Rfc3339).map_err(
                    |_| {
                        ConfigError::Invalid(format!(
                            "issuer.next_signing_from {from:?} is not an RFC 3339 time like 2026-12-01T00:00:00Z"
                        ))
                    },
                )?;
                Ok(Some((from, certificate.as_path())))
            }
            _ => Err(ConfigError::Invalid(
                "issuer.next_signing_certificate and issuer.next_signing_from go together (a signing-key renewal)"
                    .to_owned(),
            )),
        }
    }
}

/// Trust for merchant signatures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantTrustConfig {
    /// Scheme CA certificates (PEM) that merchant chains must reach.
    pub scheme_ca: Vec<PathBuf>,
    /// CRLs (PEM) of the scheme CAs.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
}

/// Reloading CRLs while serving (`ops::revocation`): on a change of a CA or CRL file, and on
/// SIGHUP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationConfig {
    /// How often the CA and CRL files are checked for a change (100 to 3600000 ms).
    #[serde(default = "defaults::crl_check_interval_ms")]
    pub check_interval_ms: u64,
    /// `/readyz` reports not ready when the earliest nextUpdate is this close (seconds).
    #[serde(default = "defaults::crl_margin_s")]
    pub margin_s: u64,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        Self { check_interval_ms: defaults::crl_check_interval_ms(), margin_s: defaults::crl_margin_s() }
    }
}

/// The ledger.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// Which database keeps the books.
    #[serde(default)]
    pub backend: LedgerBackend,
    /// The SQLite file (backend "sqlite").
    #[serde(default)]
    pub path: PathBuf,
    /// The PostgreSQL database (backend "postgres").
    #[serde(default)]
    pub postgres: Option<PostgresSection>,
    /// Tuning.
    #[serde(flatten)]
    pub tuning: LedgerConfig,
}

/// The ledger's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerBackend {
    /// An SQLite file that this server alone writes (the default).
    #[default]
    Sqlite,
    /// A PostgreSQL database that several authorization servers may share.
    Postgres,
}

/// Where the PostgreSQL ledger is (`[ledger.postgres]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    /// A libpq connection string (`host=/run/postgresql dbname=ledger user=mps`) or URL
    /// (`postgresql://mps@db.bank.internal/ledger`), without a password.
    pub connection: String,
    /// A file whose first line is the password, when the server asks for one.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// How long one call (connect, statement, COMMIT) may take.
    #[serde(default = "defaults::postgres_call_timeout_ms")]
    pub call_timeout_ms: u64,
}

impl LedgerSection {
    /// Where the books are, with the PostgreSQL password read from its file.
    pub fn store(&self) -> Result<crate::ledger::Store, ConfigError> {
        match (self.backend, &self.postgres) {
            (LedgerBackend::Sqlite, _) => Ok(crate::ledger::Store::Sqlite(self.path.clone())),
            (LedgerBackend::Postgres, None) => Err(ConfigError::Invalid(
                "ledger.backend = \"postgres\" needs a [ledger.postgres] table with its connection".to_owned(),
            )),
            (LedgerBackend::Postgres, Some(postgres)) => {
                let mut connect = postgres.connect_config()?;
                if let Some(file) = &postgres.password_file {
                    let text = zeroize::Zeroizing::new(
                        std::fs::read_to_string(file)
                            .map_err(|source| ConfigError::Read { path: file.clone(), source })?,
                    );
                    let password = text.lines().next().unwrap_or_default();
                    if password.is_empty() {
                        return Err(ConfigError::Invalid(format!(
                            "ledger.postgres.password_file {} is empty: write the password on its first line",
                            file.display()
                        )));
                    }
                    connect.password(password);
                }
                Ok(crate::ledger::Store::Postgres(Box::new(crate::ledger::PostgresStore {
                    connect,
                    call_timeout: Duration::from_millis(postgres.call_timeout_ms),
                })))
            }
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        match self.backend {
            LedgerBackend::Sqlite if self.path.as_os_str().is_empty() => {
                invalid("ledger.path must name the SQLite file (or set ledger.backend = \"postgres\")")
            }
            LedgerBackend::Sqlite => Ok(()),
            LedgerBackend::Postgres => match &self.postgres {
                None => invalid("ledger.backend = \"postgres\" needs a [ledger.postgres] table with its connection"),
                Some(postgres) if !(100..=600_000).contains(&postgres.call_timeout_ms) => {
                    invalid("ledger.postgres.call_timeout_ms must be 100 to 600000")
                }
                Some(postgres) => postgres.connect_config().map(|_| ()),
            },
        }
    }
}

impl PostgresSection {
    /// The connection string parsed; a password inside it is refused, so that it never sits
    /// in a configuration file or in the environment's overrides.
    fn connect_config(&self) -> Result<tokio_postgres::Config, ConfigError> {
        let config: tokio_postgres::Config = self.connection.parse().map_err(|_| {
            ConfigError::Invalid(
                "ledger.postgres.connection is neither a libpq connection string (host=... dbname=... user=...) \
                 nor a postgresql:// URL"
                    .to_owned(),
            )
        })?;
        if config.get_password().is_some() {
            return Err(ConfigError::Invalid(
                "ledger.postgres.connection holds a password: put it in the file named by ledger.postgres.password_file"
                    .to_owned(),
            ));
        }
        if config.get_hosts().is_empty() || config.get_dbname().is_none() {
            return Err(ConfigError::Invalid(
                "ledger.postgres.connection must name the host (or socket directory) and the dbname".to_owned(),
            ));
        }
        Ok(config)
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Filter, e.g. "info" or "mps_authz=debug,info".
    #[serde(default = "defaults::log_level")]
    pub level: String,
    /// "json" (default) or "text".
    #[serde(default = "defaults::log_format")]
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: defaults::log_level(), format: defaults::log_format() }
    }
}

mod defaults {
    use std::net::SocketAddr;

    pub fn postgres_call_timeout_ms() -> u64 {
        5_000
    }

    pub fn body_bytes_max() -> usize {
        8 * 1024
    }
    pub fn header_read_timeout_ms() -> u64 {
        5_000
    }
    pub fn request_timeout_ms() -> u64 {
        20_000
    }
    pub fn handshake_timeout_ms() -> u64 {
        5_000
    }
    pub fn in_flight_max() -> usize {
        1_024
    }
    pub fn connections_max() -> usize {
        4_096
    }
    pub fn handshakes_max() -> usize {
        256
    }
    pub fn connections_per_source_max() -> usize {
        4_096
    }
    pub fn body_read_timeout_ms() -> u64 {
        5_000
    }
    pub fn idle_timeout_ms() -> u64 {
        120_000
    }
    pub fn http2_streams_max() -> u32 {
        256
    }
    pub fn shutdown_grace_ms() -> u64 {
        15_000
    }
    pub fn admin_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9464))
    }
    pub fn recent_decisions_max() -> usize {
        50
    }
    pub fn transport_key() -> String {
        "mps-tk-demo".to_owned()
    }
    pub fn cutoff() -> String {
        "00:00".to_owned()
    }
    pub fn password_tries_max() -> u32 {
        3
    }
    pub fn mac_failure_limit() -> u32 {
        20
    }
    pub fn mac_failure_window_s() -> u64 {
        60
    }
    pub fn crl_check_interval_ms() -> u64 {
        10_000
    }
    pub fn crl_margin_s() -> u64 {
        3_600
    }
    pub fn log_level() -> String {
        "info".to_owned()
    }
    pub fn log_format() -> String {
        "json".to_owned()
    }
}

/// Ledger reads of one authorization, each bounded by `ledger.read_timeout_ms`: the SIM, the
/// account, the day's approved total and the order's earlier approval.
pub const LEDGER_READS_PER_AUTHORIZATION: u64 = 4;
/// HSM calls of one authorization, each bounded by `hsm.op_timeout_ms`: open the session, seal
/// the answer, sign the body.
pub const HSM_CALLS_PER_AUTHORIZATION: u64 = 3;

impl AuthzConfig {
    /// The longest one authorization can spend in its bounded stages; the request deadline
    /// must be above it. (Lock waits are bounded by the deadline alone, and a queued booking
    /// by nothing: it completes, see `decision::attempt`.)
    pub fn stage_timeouts_ms(&self) -> u64 {
        LEDGER_READS_PER_AUTHORIZATION
            .saturating_mul(self.ledger.tuning.read_timeout_ms)
            .saturating_add(HSM_CALLS_PER_AUTHORIZATION.saturating_mul(self.hsm.op_timeout_ms))
            .saturating_add(self.ledger.tuning.enqueue_timeout_ms)
    }

    /// Reads `path` and applies the process environment's overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_parts(&text, mps_protocol::config::env_overrides(ENV_PREFIX)?)
    }

    /// Parses TOML text with the given environment.
    pub fn from_parts(text: &str, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let merged = mps_protocol::config::overlay(text, ENV_PREFIX, vars)?;
        let config: Self = merged.try_into().map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        // The HSM section is checked here too, so that a bad [[hsm.additional]] entry stops
        // the server before it opens anything.
        self.hsm.validate().map_err(|e| ConfigError::Invalid(format!("hsm: {e}")))?;
        self.ledger.check()?;
        if !(512..=1024 * 1024).contains(&self.server.body_bytes_max) {
            return invalid("server.body_bytes_max must be 512 to 1048576");
        }
        if self.server.in_flight_max == 0 || self.server.connections_max == 0 {
            return invalid("server.in_flight_max and server.connections_max must be at least 1");
        }
        self.server.listener_limits().check().map_err(ConfigError::Invalid)?;
        if self.server.client_ca.is_empty() {
            return invalid("server.client_ca must name at least one CA file: clients must present certificates");
        }
        if !(1..=1000).contains(&self.admin.recent_decisions_max) {
            return invalid("admin.recent_decisions_max must be 1 to 1000");
        }
        if !(100..=3_600_000).contains(&self.revocation.check_interval_ms) {
            return invalid("revocation.check_interval_ms must be 100 to 3600000");
        }
        if self.merchants.scheme_ca.is_empty() {
            return invalid("merchants.scheme_ca must name at least one CA file");
        }
        if !(1..=3600).contains(&self.issuer.mac_failure_window_s) {
            return invalid("issuer.mac_failure_window_s must be 1 to 3600");
        }
        if !(1..=10).contains(&self.issuer.password_tries_max) {
            return invalid("issuer.password_tries_max must be 1 to 10");
        }
        if self.issuer.next_signing()?.is_some() && self.hsm.keys.signing_next.is_none() {
            return invalid("issuer.next_signing_certificate needs hsm.keys.signing_next (the next key's label)");
        }
        let stages = self.stage_timeouts_ms();
        if self.server.request_timeout_ms <= stages {
            return Err(ConfigError::Invalid(format!(
                "server.request_timeout_ms ({}) must exceed the sum of one authorization's stage timeouts ({stages} ms = \
                 {LEDGER_READS_PER_AUTHORIZATION} × ledger.read_timeout_ms + {HSM_CALLS_PER_AUTHORIZATION} × hsm.op_timeout_ms \
                 + ledger.enqueue_timeout_ms), so that a stage fails with its own error before the deadline: raise it or \
                 lower those",
                self.server.request_timeout_ms
            )));
        }
        crate::decision::business_day::Cutoff::parse(&self.issuer.business_day_cutoff)
            .map_err(|e| ConfigError::Invalid(format!("issuer.business_day_cutoff: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/authz.example.toml")).unwrap()
    }

    #[test]
    fn the_example_config_parses() {
        let config = AuthzConfig::from_parts(&example(), Vec::new()).unwrap();
        assert_eq!(config.issuer.iin.as_str(), "400012");
        assert_eq!(config.ledger.tuning.batch_max, 64);
        assert_eq!(config.server.body_bytes_max, 8192);
    }

    #[test]
    fn environment_overrides_apply() {
        let vars = vec![
            ("MPS_AUTHZ__LEDGER__BATCH_MAX".to_owned(), "8".to_owned()),
            ("MPS_AUTHZ__SERVER__LISTEN".to_owned(), "127.0.0.1:9999".to_owned()),
        ];
        let config = AuthzConfig::from_parts(&example(), vars).unwrap();
        assert_eq!(config.ledger.tuning.batch_max, 8);
        assert_eq!(config.server.listen.port(), 9999);
    }

    #[test]
    fn unknown_keys_are_refused_in_every_section() {
        for (section, key) in [("server", "listne"), ("ledger", "batch_maxx"), ("issuer", "colour"), ("hsm", "pin")] {
            let vars = vec![(format!("MPS_AUTHZ__{}__{}", section.to_uppercase(), key.to_uppercase()), "1".to_owned())];
            let error = AuthzConfig::from_parts(&example(), vars);
            assert!(error.is_err(), "unknown key {section}.{key} was accepted");
        }
    }

    #[test]
    fn the_request_deadline_must_exceed_the_stage_timeouts() {
        let config = AuthzConfig::from_parts(&example(), Vec::new()).unwrap();
        assert_eq!(config.stage_timeouts_ms(), 4 * 2_000 + 3 * 2_000 + 1_000);
        let at = |ms: u64| vec![("MPS_AUTHZ__SERVER__REQUEST_TIMEOUT_MS".to_owned(), ms.to_string())];
        let error = AuthzConfig::from_parts(&example(), at(15_000)).unwrap_err().to_string();
        assert!(error.contains("request_timeout_ms (15000)") && error.contains("15000 ms"), "{error}");
        assert!(AuthzConfig::from_parts(&example(), at(15_001)).is_ok());
        let slower_hsm = vec![
            ("MPS_AUTHZ__SERVER__REQUEST_TIMEOUT_MS".to_owned(), "15001".to_owned()),
            ("MPS_AUTHZ__HSM__OP_TIMEOUT_MS".to_owned(), "3000".to_owned()),
        ];
        assert!(AuthzConfig::from_parts(&example(), slower_hsm).is_err(), "the HSM's timeout counts three times");
    }

    #[test]
    fn further_hsms_parse_from_the_environment_and_bad_ones_are_named() {
        let list = r#"[{ module_path = "/opt/hsm-b/libpkcs11.so", token_label = "mps-b" }]"#;
        let vars = vec![("MPS_AUTHZ__HSM__ADDITIONAL".to_owned(), list.to_owned())];
        let config = AuthzConfig::from_parts(&example(), vars).unwrap();
        let members = config.hsm.members();
        assert_eq!(members.len(), 2);
        assert_eq!(members[1].token_label, "mps-b");
        assert_eq!(members[1].pool_size, config.hsm.pool_size);
        let vars = vec![("MPS_AUTHZ__HSM__ADDITIONAL".to_owned(), "[]".to_owned())];
        let error = AuthzConfig::from_parts(&example(), vars).unwrap_err().to_string();
        assert!(error.contains("hsm") && error.contains("additional"), "{error}");
        let twice = r#"[{ module_path = "/b.so" }, { module_path = "/b.so" }]"#;
        let vars = vec![("MPS_AUTHZ__HSM__ADDITIONAL".to_owned(), twice.to_owned())];
        let error = AuthzConfig::from_parts(&example(), vars).unwrap_err().to_string();
        assert!(error.contains("additional[1]"), "{error}");
        assert_eq!(AuthzConfig::from_parts(&example(), Vec::new()).unwrap().hsm.members().len(), 1);
    }

    #[test]
    fn the_ledger_backend_is_chosen_and_its_section_checked() {
        let var = |key: &str, value: &str| (format!("MPS_AUTHZ__LEDGER__{key}"), value.to_owned());
        let config = AuthzConfig::from_parts(&example(), Vec::new()).unwrap();
        assert_eq!(config.ledger.backend, LedgerBackend::Sqlite);
        assert!(
            matches!(config.ledger.store().unwrap(), crate::ledger::Store::Sqlite(path) if path == config.ledger.path)
        );

        let postgres = |connection: &str| {
            vec![
                var("BACKEND", "postgres"),
                var("POSTGRES__CONNECTION", connection),
                var("POSTGRES__CALL_TIMEOUT_MS", "2500"),
            ]
        };
        let config =
            AuthzConfig::from_parts(&example(), postgres("host=/run/postgresql user=mps dbname=ledger")).unwrap();
        match config.ledger.store().unwrap() {
            crate::ledger::Store::Postgres(store) => {
                assert_eq!(store.connect.get_dbname(), Some("ledger"));
                assert_eq!(store.call_timeout, Duration::from_millis(2_500));
            }
            other => panic!("{other:?}"),
        }
        let url = AuthzConfig::from_parts(&example(), postgres("postgresql://mps@db.bank.internal/ledger"));
        assert!(url.is_ok(), "{url:?}");

        let refusals = [
            (vec![var("BACKEND", "postgres")], "[ledger.postgres]"),
            (postgres("host=/run/postgresql user=mps dbname=ledger password=hunter2"), "password_file"),
            (postgres("user=mps"), "dbname"),
            (postgres("not a connection string ="), "neither"),
            (vec![var("BACKEND", "oracle")], "backend"),
        ];
        for (vars, expected) in refusals {
            let error = AuthzConfig::from_parts(&example(), vars).unwrap_err().to_string();
            assert!(error.contains(expected), "{expected}: {error}");
            assert!(!error.contains("hunter2"), "the password leaked: {error}");
        }
    }

    #[test]
    fn the_postgres_password_comes_from_its_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg-password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let vars = vec![
            ("MPS_AUTHZ__LEDGER__BACKEND".to_owned(), "postgres".to_owned()),
            (
                "MPS_AUTHZ__LEDGER__POSTGRES__CONNECTION".to_owned(),
                "host=/run/postgresql user=mps dbname=ledger".to_owned(),
            ),
            ("MPS_AUTHZ__LEDGER__POSTGRES__PASSWORD_FILE".to_owned(), file.display().to_string()),
        ];
        let config = AuthzConfig::from_parts(&example(), vars).unwrap();
        let store = config.ledger.store().unwrap();
        match &store {
            crate::ledger::Store::Postgres(postgres) => {
                assert_eq!(postgres.connect.get_password(), Some(&b"s3cret"[..]))
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{store:?}").contains("s3cret"), "Debug shows the password");
        std::fs::write(&file, "").unwrap();
        let error = config.ledger.store().unwrap_err().to_string();
        assert!(error.contains("empty"), "{error}");
    }

    #[test]
    fn bad_values_are_refused() {
        let vars = vec![("MPS_AUTHZ__ISSUER__BUSINESS_DAY_CUTOFF".to_owned(), "25:00".to_owned())];
        assert!(AuthzConfig::from_parts(&example(), vars).is_err());
        let vars = vec![("MPS_AUTHZ__SERVER__BODY_BYTES_MAX".to_owned(), "10".to_owned())];
        assert!(AuthzConfig::from_parts(&example(), vars).is_err());
        let vars = vec![("MPS_AUTHZ__ISSUER__IIN".to_owned(), "12345".to_owned())];
        assert!(AuthzConfig::from_parts(&example(), vars).is_err());
        for unbounded in ["0", "1001"] {
            let vars = vec![("MPS_AUTHZ__ADMIN__RECENT_DECISIONS_MAX".to_owned(), unbounded.to_owned())];
            assert!(AuthzConfig::from_parts(&example(), vars).is_err(), "recent_decisions_max {unbounded}");
        }
    }
}
