//! The merchant server's configuration: one typed struct, parsed once at start-up from a TOML
//! file with `MPS_MERCHANT__SECTION__KEY` environment overrides (mps_protocol::config). Every
//! bound has a name and a safe default; `config/merchant.example.toml` documents each key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mps_pki::Role;
use mps_protocol::{Iin, MerchantId};
use serde::Deserialize;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "MPS_MERCHANT";

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source} (pass --config or set MPS_MERCHANT_CONFIG)")]
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
    /// A key is missing, unknown, of the wrong type or out of its range.
    #[error("configuration is invalid: {0} (see config/merchant.example.toml)")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantConfig {
    /// Who the merchant is and how it signs.
    pub merchant: IdentityConfig,
    /// The scheme CA and its CRLs: the bank's signatures and the gateway's certificate.
    pub trust: TrustConfig,
    /// The payment gateway (or, in tests, the issuer directly).
    pub gateway: GatewayConfig,
    /// The background reversal task.
    #[serde(default)]
    pub reversals: ReversalConfig,
    /// The phone-facing listener (`POST /v1/payments`).
    #[serde(default)]
    pub phone: PhoneConfig,
    /// The shop/POS listener (`/v1/orders`).
    #[serde(default)]
    pub pos: PosConfig,
    /// The admin listener (metrics, health).
    #[serde(default)]
    pub admin: AdminConfig,
    /// The order book.
    pub orders: OrdersConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// Who the merchant is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Our merchant id; must equal the SAN URI of our certificate and every packet's merchant id.
    pub merchant_id: MerchantId,
    /// Our acquiring bank.
    pub acquirer_iin: Iin,
    /// Our account at the acquirer (1 to 34 letters, digits, spaces or hyphens; an IBAN fits).
    pub merchant_account: String,
    /// Our certificate chain, PEM, leaf first (role merchant): the x5c of every signed request.
    pub certificate: PathBuf,
    /// Our private key, PKCS#8 PEM (P-256).
    pub private_key: PathBuf,
}

/// Trust for the bank's answers and the gateway's TLS certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Scheme root CA certificates, PEM.
    pub scheme_ca: Vec<PathBuf>,
    /// CRLs of the scheme CAs, PEM (at least one: revocation is always checked).
    pub crls: Vec<PathBuf>,
}

/// The link to the payment gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Base URL, `https://host:port` (requests go to `<url>/v1/authorizations` and `/v1/reversals`).
    pub url: String,
    /// TLS client certificate chain; default: `merchant.certificate`. Tests that talk to the
    /// issuer directly (no gateway yet) present a gateway-client certificate here.
    #[serde(default)]
    pub client_certificate: Option<PathBuf>,
    /// TLS client key; default: `merchant.private_key`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Role the server's certificate must have: `gateway-server` (default) or `authz-server`
    /// (talking to the issuer directly).
    #[serde(default = "defaults::server_role")]
    pub server_role: Role,
    /// TCP and TLS connect timeout.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time allowed for one attempt, request sent to answer read.
    #[serde(default = "defaults::attempt_timeout_ms")]
    pub attempt_timeout_ms: u64,
    /// Attempts of one authorization, the first included (identical bytes each time).
    #[serde(default = "defaults::attempts_max")]
    pub attempts_max: u32,
    /// Time allowed for all attempts of one authorization; then a reversal is queued.
    #[serde(default = "defaults::deadline_ms")]
    pub deadline_ms: u64,
    /// Pause before the second attempt; doubled before each further one.
    #[serde(default = "defaults::retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Largest answer body read from the gateway.
    #[serde(default = "defaults::answer_bytes_max")]
    pub answer_bytes_max: usize,
    /// Idle keep-alive connections are closed after this long.
    #[serde(default = "defaults::pool_idle_timeout_ms")]
    pub pool_idle_timeout_ms: u64,
}

impl GatewayConfig {
    /// The TLS client identity: (chain, key) files.
    pub fn client_identity<'a>(&'a self, merchant: &'a IdentityConfig) -> (&'a Path, &'a Path) {
        (
            self.client_certificate.as_deref().unwrap_or(&merchant.certificate),
            self.client_key.as_deref().unwrap_or(&merchant.private_key),
        )
    }
}

/// Store-and-forward of reversals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReversalConfig {
    /// How often the task looks for due reversals; also the first retry delay.
    #[serde(default = "defaults::reversal_interval_ms")]
    pub interval_ms: u64,
    /// Longest delay between two attempts of one reversal (the delay doubles up to this).
    #[serde(default = "defaults::reversal_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Reversals sent per round.
    #[serde(default = "defaults::reversal_batch_max")]
    pub batch_max: usize,
}

impl Default for ReversalConfig {
    fn default() -> Self {
        Self {
            interval_ms: defaults::reversal_interval_ms(),
            backoff_max_ms: defaults::reversal_backoff_max_ms(),
            batch_max: defaults::reversal_batch_max(),
        }
    }
}

/// The phone-facing listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneConfig {
    /// Address of `POST /v1/payments`.
    #[serde(default = "defaults::phone_listen")]
    pub listen: SocketAddr,
    /// Largest request body.
    #[serde(default = "defaults::body_bytes_max")]
    pub body_bytes_max: usize,
    /// Payments in flight at once; more get 503.
    #[serde(default = "defaults::in_flight_max")]
    pub in_flight_max: usize,
    /// Time granted to payments in flight at shutdown.
    #[serde(default = "defaults::shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

impl Default for PhoneConfig {
    fn default() -> Self {
        Self {
            listen: defaults::phone_listen(),
            body_bytes_max: defaults::body_bytes_max(),
            in_flight_max: defaults::in_flight_max(),
            shutdown_grace_ms: defaults::shutdown_grace_ms(),
        }
    }
}

/// The shop/POS listener: no authentication of its own, so keep it on loopback or a shop LAN.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PosConfig {
    /// Address of `/v1/orders`.
    #[serde(default = "defaults::pos_listen")]
    pub listen: SocketAddr,
    /// Largest request body.
    #[serde(default = "defaults::body_bytes_max")]
    pub body_bytes_max: usize,
    /// Most orders in one export.
    #[serde(default = "defaults::export_rows_max")]
    pub export_rows_max: usize,
}

impl Default for PosConfig {
    fn default() -> Self {
        Self {
            listen: defaults::pos_listen(),
            body_bytes_max: defaults::body_bytes_max(),
            export_rows_max: defaults::export_rows_max(),
        }
    }
}

/// The admin listener: plain HTTP, loopback by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of /metrics, /healthz, /readyz.
    #[serde(default = "defaults::admin_listen")]
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: defaults::admin_listen() }
    }
}

/// The order book.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersConfig {
    /// The SQLite file.
    pub path: PathBuf,
    /// How long a write waits for the database lock.
    #[serde(default = "defaults::busy_timeout_ms")]
    pub busy_timeout_ms: u64,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Filter, e.g. "info" or "mps_merchant=debug,info".
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

    use mps_pki::Role;

    pub fn server_role() -> Role {
        Role::GatewayServer
    }
    pub fn connect_timeout_ms() -> u64 {
        3_000
    }
    pub fn attempt_timeout_ms() -> u64 {
        8_000
    }
    pub fn attempts_max() -> u32 {
        3
    }
    pub fn deadline_ms() -> u64 {
        25_000
    }
    pub fn retry_backoff_ms() -> u64 {
        250
    }
    pub fn answer_bytes_max() -> usize {
        64 * 1024
    }
    pub fn pool_idle_timeout_ms() -> u64 {
        90_000
    }
    pub fn reversal_interval_ms() -> u64 {
        5_000
    }
    pub fn reversal_backoff_max_ms() -> u64 {
        300_000
    }
    pub fn reversal_batch_max() -> usize {
        32
    }
    pub fn phone_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }
    pub fn pos_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8081))
    }
    pub fn admin_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9465))
    }
    pub fn body_bytes_max() -> usize {
        4 * 1024
    }
    pub fn in_flight_max() -> usize {
        256
    }
    pub fn shutdown_grace_ms() -> u64 {
        30_000
    }
    pub fn export_rows_max() -> usize {
        100_000
    }
    pub fn busy_timeout_ms() -> u64 {
        5_000
    }
    pub fn log_level() -> String {
        "info".to_owned()
    }
    pub fn log_format() -> String {
        "json".to_owned()
    }
}

impl MerchantConfig {
    /// Reads the file and the process's `MPS_MERCHANT__*` overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_parts(&text, mps_protocol::config::env_overrides(ENV_PREFIX)?)
    }

    /// Parses `text` with the overrides `vars`, then checks every bound.
    pub fn from_parts(text: &str, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let merged = mps_protocol::config::overlay(text, ENV_PREFIX, vars)?;
        let config: Self = merged.try_into().map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        if !valid_merchant_account(&self.merchant.merchant_account) {
            return invalid("merchant.merchant_account must be 1 to 34 letters, digits, spaces or hyphens");
        }
        if self.trust.scheme_ca.is_empty() || self.trust.crls.is_empty() {
            return invalid("trust.scheme_ca and trust.crls must each name at least one PEM file");
        }
        if !self.gateway.url.starts_with("https://") {
            return invalid("gateway.url must start with https:// (the link is mutual TLS)");
        }
        if !matches!(self.gateway.server_role, Role::GatewayServer | Role::AuthzServer) {
            return invalid("gateway.server_role must be gateway-server or authz-server");
        }
        if self.gateway.client_certificate.is_some() != self.gateway.client_key.is_some() {
            return invalid("gateway.client_certificate and gateway.client_key go together");
        }
        if !(1..=10).contains(&self.gateway.attempts_max) {
            return invalid("gateway.attempts_max must be 1 to 10");
        }
        let positive = [
            ("gateway.connect_timeout_ms", self.gateway.connect_timeout_ms),
            ("gateway.attempt_timeout_ms", self.gateway.attempt_timeout_ms),
            ("gateway.deadline_ms", self.gateway.deadline_ms),
            ("reversals.interval_ms", self.reversals.interval_ms),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Invalid(format!("{name} must be greater than 0")));
        }
        if self.reversals.backoff_max_ms < self.reversals.interval_ms {
            return invalid("reversals.backoff_max_ms must be at least reversals.interval_ms");
        }
        if !(1..=1000).contains(&self.reversals.batch_max) {
            return invalid("reversals.batch_max must be 1 to 1000");
        }
        if !(512..=1024 * 1024).contains(&self.phone.body_bytes_max)
            || !(512..=1024 * 1024).contains(&self.pos.body_bytes_max)
        {
            return invalid("phone.body_bytes_max and pos.body_bytes_max must be 512 to 1048576");
        }
        if !(4096..=16 * 1024 * 1024).contains(&self.gateway.answer_bytes_max) {
            return invalid("gateway.answer_bytes_max must be 4096 to 16777216");
        }
        if self.phone.in_flight_max == 0 || self.pos.export_rows_max == 0 {
            return invalid("phone.in_flight_max and pos.export_rows_max must be at least 1");
        }
        Ok(())
    }

    /// One attempt's timeout.
    pub fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.gateway.attempt_timeout_ms)
    }
}

/// DESIGN.md section 6: 1 to 34 letters, digits, spaces or hyphens.
pub fn valid_merchant_account(text: &str) -> bool {
    (1..=34).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/merchant.example.toml")).unwrap()
    }

    #[test]
    fn the_example_parses_with_its_defaults() {
        let config = MerchantConfig::from_parts(&example(), Vec::new()).unwrap();
        assert_eq!(config.gateway.server_role, Role::GatewayServer);
        assert_eq!(config.gateway.attempts_max, 3);
        assert_eq!(config.merchant.merchant_id.as_str(), "COFFEE-SHOP-01");
    }

    #[test]
    fn overrides_apply_and_unknown_keys_are_refused() {
        let vars = vec![("MPS_MERCHANT__GATEWAY__ATTEMPTS_MAX".to_owned(), "5".to_owned())];
        assert_eq!(MerchantConfig::from_parts(&example(), vars).unwrap().gateway.attempts_max, 5);
        let vars = vec![("MPS_MERCHANT__GATEWAY__COLOUR".to_owned(), "red".to_owned())];
        assert!(MerchantConfig::from_parts(&example(), vars).is_err());
        let vars = vec![("MPS_MERCHANT__GATEWAY__ATTEMPTS_MAX".to_owned(), "0".to_owned())];
        assert!(MerchantConfig::from_parts(&example(), vars).is_err());
        let vars = vec![("MPS_MERCHANT__GATEWAY__URL".to_owned(), "http://plain".to_owned())];
        assert!(MerchantConfig::from_parts(&example(), vars).is_err());
    }

    #[test]
    fn merchant_accounts_follow_the_design() {
        assert!(valid_merchant_account("DE89 3704 0044 0532 0130 00"));
        assert!(!valid_merchant_account(""));
        assert!(!valid_merchant_account("DE89_3704"));
        assert!(!valid_merchant_account(&"1".repeat(35)));
    }
}
