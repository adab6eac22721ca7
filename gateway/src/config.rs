//! The gateway's configuration: one typed struct, parsed once at start-up from a TOML file with
//! `MPS_GATEWAY__SECTION__KEY` environment overrides (`mps_protocol::config`). Every bound has a
//! name and a safe default; `config/gateway.example.toml` documents each key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mps_protocol::Iin;
use reqwest::Url;
use serde::{Deserialize, Deserializer};

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "MPS_GATEWAY";

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source} (pass --config or set MPS_GATEWAY_CONFIG)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, a wrong type, or a bad override.
    #[error("{0} (see config/gateway.example.toml)")]
    Parse(#[from] mps_protocol::config::ConfigError),
    /// A value out of its allowed range, or keys that do not fit together.
    #[error("configuration is invalid: {0} (see config/gateway.example.toml)")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The merchant-facing mTLS listener.
    pub server: ServerConfig,
    /// The admin listener (metrics, health).
    #[serde(default)]
    pub admin: AdminConfig,
    /// How the gateway connects to issuers (its client certificate, trust, health probes).
    pub upstream: UpstreamConfig,
    /// Per-merchant rate limit.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// The routing table: issuer IIN to the issuer's authorization server instances.
    pub issuers: BTreeMap<Iin, IssuerConfig>,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// The merchant-facing listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Our certificate chain (role gateway-server), PEM, leaf first.
    pub certificate: PathBuf,
    /// Our private key, PEM.
    pub private_key: PathBuf,
    /// Scheme CA certificates (PEM) that merchant client certificates must chain to.
    pub client_ca: Vec<PathBuf>,
    /// CRLs (PEM) of those CAs; revoked merchants are refused in the handshake.
    #[serde(default)]
    pub client_crls: Vec<PathBuf>,
    /// Largest request body accepted (bytes).
    #[serde(default = "defaults::body_bytes_max")]
    pub body_bytes_max: usize,
    /// Requests being forwarded at once; more get 503.
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
    #[serde(default = "defaults::server_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// TLS handshake timeout.
    #[serde(default = "defaults::handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Time allowed to read a request's headers (HTTP/1.1).
    #[serde(default = "defaults::header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Concurrent streams per HTTP/2 connection.
    #[serde(default = "defaults::http2_streams_max")]
    pub http2_streams_max: u32,
    /// Time granted to requests in flight at shutdown.
    #[serde(default = "defaults::shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

impl ServerConfig {
    /// TLS handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    /// Header read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
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
    /// Address of /metrics, /healthz, /readyz.
    #[serde(default = "defaults::admin_listen")]
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: defaults::admin_listen() }
    }
}

/// The gateway as a client of the issuers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Our client certificate chain (role gateway-client), PEM, leaf first.
    pub certificate: PathBuf,
    /// Its private key, PEM.
    pub private_key: PathBuf,
    /// CA certificates (PEM) that the issuers' server certificates (role authz-server) must
    /// chain to.
    pub issuer_ca: Vec<PathBuf>,
    /// CRLs (PEM) of those CAs.
    #[serde(default)]
    pub issuer_crls: Vec<PathBuf>,
    /// Time between two health probes of one instance.
    #[serde(default = "defaults::health_interval_ms")]
    pub health_interval_ms: u64,
    /// Time a health probe may take before the instance counts as down.
    #[serde(default = "defaults::health_timeout_ms")]
    pub health_timeout_ms: u64,
    /// Idle connections kept per issuer instance.
    #[serde(default = "defaults::idle_connections_max")]
    pub idle_connections_max: usize,
    /// How long an idle connection to an instance is kept.
    #[serde(default = "defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Largest issuer answer accepted (bytes); a larger one counts as a failed attempt.
    #[serde(default = "defaults::answer_bytes_max")]
    pub answer_bytes_max: usize,
}

impl UpstreamConfig {
    /// Time between probes.
    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms)
    }
    /// Probe timeout.
    pub fn health_timeout(&self) -> Duration {
        Duration::from_millis(self.health_timeout_ms)
    }
    /// Idle connection lifetime.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

/// The per-merchant token bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Tokens added per second for each merchant (sustained requests per second).
    #[serde(default = "defaults::rate_per_second")]
    pub rate_per_second: u32,
    /// Bucket size: requests a merchant may send at once after being idle.
    #[serde(default = "defaults::burst")]
    pub burst: u32,
    /// Merchants tracked at once; beyond it, merchants with a full bucket are forgotten.
    #[serde(default = "defaults::merchants_max")]
    pub merchants_max: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            rate_per_second: defaults::rate_per_second(),
            burst: defaults::burst(),
            merchants_max: defaults::merchants_max(),
        }
    }
}

/// One issuer: its instances and its timeouts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The issuer's authorization server instances, in order of preference.
    pub instances: Vec<InstanceConfig>,
    /// How requests are spread over the healthy instances.
    #[serde(default)]
    pub balance: Balance,
    /// Time one attempt (connect, send, whole answer) may take.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Attempts of one request, the first included.
    #[serde(default = "defaults::attempts_max")]
    pub attempts_max: u32,
    /// Time all attempts of one request may take together.
    #[serde(default = "defaults::deadline_ms")]
    pub deadline_ms: u64,
}

impl IssuerConfig {
    /// Per-attempt timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    /// Whole-request deadline.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
}

/// Which healthy instance a request tries first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// The first healthy one in configuration order; the others are standbys (the default).
    #[default]
    First,
    /// Each request starts at the next healthy instance in turn, so that instances sharing one
    /// PostgreSQL ledger share the load; failover goes on in the same turn.
    RoundRobin,
}

/// One authorization server instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Base URL of its mTLS listener, e.g. `https://127.0.0.1:8443`.
    #[serde(deserialize_with = "base_url")]
    pub url: Url,
    /// Its readiness URL, e.g. `http://127.0.0.1:9464/readyz` (authz's admin listener).
    #[serde(deserialize_with = "http_url")]
    pub health_url: Url,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Filter, e.g. "info" or "mps_gateway=debug,info".
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

/// An `https` URL with no path beyond `/`, no query and no fragment: the gateway appends
/// `/v1/authorizations` or `/v1/reversals` itself.
fn base_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
    let text = String::deserialize(deserializer)?;
    let url = Url::parse(&text).map_err(|e| serde::de::Error::custom(format!("url {text:?}: {e}")))?;
    if url.scheme() != "https" {
        return Err(serde::de::Error::custom(format!("url {text:?} must be https (the issuer speaks mutual TLS)")));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || url.host().is_none() {
        return Err(serde::de::Error::custom(format!(
            "url {text:?} must be a base like https://host:port, without a path"
        )));
    }
    Ok(url)
}

/// An `http` or `https` URL with a host.
fn http_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
    let text = String::deserialize(deserializer)?;
    let url = Url::parse(&text).map_err(|e| serde::de::Error::custom(format!("health_url {text:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(serde::de::Error::custom(format!("health_url {text:?} must be an http(s) URL with a host")));
    }
    Ok(url)
}

mod defaults {
    use std::net::SocketAddr;

    pub fn body_bytes_max() -> usize {
        8 * 1024
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
        256
    }
    pub fn body_read_timeout_ms() -> u64 {
        5_000
    }
    pub fn server_idle_timeout_ms() -> u64 {
        120_000
    }
    pub fn handshake_timeout_ms() -> u64 {
        5_000
    }
    pub fn header_read_timeout_ms() -> u64 {
        5_000
    }
    pub fn http2_streams_max() -> u32 {
        256
    }
    pub fn shutdown_grace_ms() -> u64 {
        15_000
    }
    pub fn admin_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9465))
    }
    pub fn health_interval_ms() -> u64 {
        1_000
    }
    pub fn health_timeout_ms() -> u64 {
        500
    }
    pub fn idle_connections_max() -> usize {
        32
    }
    pub fn idle_timeout_ms() -> u64 {
        90_000
    }
    pub fn answer_bytes_max() -> usize {
        64 * 1024
    }
    pub fn rate_per_second() -> u32 {
        50
    }
    pub fn burst() -> u32 {
        100
    }
    pub fn merchants_max() -> usize {
        100_000
    }
    pub fn request_timeout_ms() -> u64 {
        5_000
    }
    pub fn attempts_max() -> u32 {
        3
    }
    pub fn deadline_ms() -> u64 {
        12_000
    }
    pub fn log_level() -> String {
        "info".to_owned()
    }
    pub fn log_format() -> String {
        "json".to_owned()
    }
}

impl GatewayConfig {
    /// Reads `path` and applies the process environment's `MPS_GATEWAY__*` overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_parts(&text, mps_protocol::config::env_overrides(ENV_PREFIX)?)
    }

    /// Parses TOML text with the given environment variables.
    pub fn from_parts(text: &str, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let config: Self = mps_protocol::config::parse(text, ENV_PREFIX, vars)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |what: String| Err(ConfigError::Invalid(what));
        if !(512..=1024 * 1024).contains(&self.server.body_bytes_max) {
            return invalid("server.body_bytes_max must be 512 to 1048576".to_owned());
        }
        if self.server.in_flight_max == 0 {
            return invalid("server.in_flight_max must be at least 1".to_owned());
        }
        self.server.listener_limits().check().map_err(ConfigError::Invalid)?;
        if self.server.client_ca.is_empty() {
            return invalid(
                "server.client_ca must name at least one CA file: merchants must present certificates".into(),
            );
        }
        if self.upstream.issuer_ca.is_empty() {
            return invalid("upstream.issuer_ca must name at least one CA file to check the issuers' servers".into());
        }
        if self.upstream.health_interval_ms < 10 || self.upstream.health_timeout_ms == 0 {
            return invalid("upstream.health_interval_ms must be at least 10 and health_timeout_ms at least 1".into());
        }
        if self.upstream.answer_bytes_max < 1024 {
            return invalid("upstream.answer_bytes_max must be at least 1024".into());
        }
        if self.rate_limit.rate_per_second == 0 || self.rate_limit.burst == 0 || self.rate_limit.merchants_max == 0 {
            return invalid("rate_limit.rate_per_second, burst and merchants_max must be at least 1".into());
        }
        if self.issuers.is_empty() {
            return invalid("[issuers] must name at least one issuer, e.g. [issuers.400012]".into());
        }
        for (iin, issuer) in &self.issuers {
            issuer.check(iin)?;
        }
        Ok(())
    }
}

impl IssuerConfig {
    fn check(&self, iin: &Iin) -> Result<(), ConfigError> {
        let invalid = |what: &str| Err(ConfigError::Invalid(format!("issuers.{iin}: {what}")));
        if self.instances.is_empty() {
            return invalid("instances must list at least one instance");
        }
        if self.request_timeout_ms == 0 {
            return invalid("request_timeout_ms must be at least 1");
        }
        if !(1..=10).contains(&self.attempts_max) {
            return invalid("attempts_max must be 1 to 10");
        }
        if self.deadline_ms < self.request_timeout_ms {
            return invalid("deadline_ms must be at least request_timeout_ms (else no attempt can finish)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/gateway.example.toml")).unwrap()
    }

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }

    #[test]
    fn the_example_config_parses_with_its_defaults() {
        let config = GatewayConfig::from_parts(&example(), Vec::new()).unwrap();
        let issuer = &config.issuers[&Iin::new("400012").unwrap()];
        assert_eq!(issuer.instances.len(), 2);
        assert_eq!(issuer.attempts_max, 3);
        assert_eq!(issuer.balance, Balance::First);
        assert_eq!(config.server.body_bytes_max, 8192);
        assert_eq!(config.rate_limit.burst, 100);
    }

    #[test]
    fn the_balance_is_first_or_round_robin_and_nothing_else() {
        let at = |value: &str| vars(&[("MPS_GATEWAY__ISSUERS__400012__BALANCE", value)]);
        let config = GatewayConfig::from_parts(&example(), at("round-robin")).unwrap();
        assert_eq!(config.issuers[&Iin::new("400012").unwrap()].balance, Balance::RoundRobin);
        assert!(GatewayConfig::from_parts(&example(), at("random")).is_err());
    }

    #[test]
    fn environment_overrides_apply() {
        let overrides = vars(&[
            ("MPS_GATEWAY__SERVER__LISTEN", "127.0.0.1:9999"),
            ("MPS_GATEWAY__RATE_LIMIT__BURST", "7"),
            ("MPS_GATEWAY__ISSUERS__400012__ATTEMPTS_MAX", "2"),
        ]);
        let config = GatewayConfig::from_parts(&example(), overrides).unwrap();
        assert_eq!(config.server.listen.port(), 9999);
        assert_eq!(config.rate_limit.burst, 7);
        assert_eq!(config.issuers[&Iin::new("400012").unwrap()].attempts_max, 2);
    }

    #[test]
    fn unknown_keys_are_refused_in_every_section() {
        for name in [
            "MPS_GATEWAY__SERVER__LISTNE",
            "MPS_GATEWAY__UPSTREAM__COLOUR",
            "MPS_GATEWAY__RATE_LIMIT__RATE",
            "MPS_GATEWAY__ISSUERS__400012__TIMEOUT",
            "MPS_GATEWAY__NOPE__KEY",
        ] {
            let result = GatewayConfig::from_parts(&example(), vars(&[(name, "1")]));
            assert!(result.is_err(), "{name} was accepted");
        }
    }

    #[test]
    fn bad_values_are_refused() {
        for (name, value) in [
            ("MPS_GATEWAY__SERVER__BODY_BYTES_MAX", "10"),
            ("MPS_GATEWAY__ISSUERS__400012__ATTEMPTS_MAX", "0"),
            ("MPS_GATEWAY__ISSUERS__400012__DEADLINE_MS", "1"),
            ("MPS_GATEWAY__ISSUERS__40001__ATTEMPTS_MAX", "2"),
            ("MPS_GATEWAY__ISSUERS__400012__INSTANCES", "[{url = \"http://x:1\", health_url = \"http://x:2/\"}]"),
            ("MPS_GATEWAY__ISSUERS__400012__INSTANCES", "[{url = \"https://x:1/v1\", health_url = \"http://x/\"}]"),
            ("MPS_GATEWAY__ISSUERS__400012__INSTANCES", "[]"),
            ("MPS_GATEWAY__RATE_LIMIT__BURST", "0"),
        ] {
            let result = GatewayConfig::from_parts(&example(), vars(&[(name, value)]));
            assert!(result.is_err(), "{name}={value} was accepted");
        }
    }
}
