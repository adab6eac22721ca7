//! The harness's configuration, read once at the start: a TOML file (every key has a default
//! or is named by a flag) with `MPS_LOADTEST__SECTION__KEY` environment overrides through
//! `mps_protocol::config`, then the command line's flags on top (see `main.rs`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The prefix of the environment overrides: `MPS_LOADTEST__RUN__CONNECTIONS=64`.
pub const ENV_PREFIX: &str = "MPS_LOADTEST";

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source} (copy config/loadtest.example.toml and edit it)")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file or an override does not fit (unknown key, wrong type).
    #[error(transparent)]
    Parse(#[from] mps_protocol::config::ConfigError),
}

/// Everything the harness reads from its file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadtestConfig {
    /// Which bank to provision payers at, and how many.
    #[serde(default)]
    pub provision: ProvisionSection,
    /// Where requests go and how the TLS connection is made.
    #[serde(default)]
    pub target: TargetSection,
    /// The merchant whose signature every request carries.
    #[serde(default)]
    pub merchant: MerchantSection,
    /// How the run is shaped.
    #[serde(default)]
    pub run: RunSection,
    /// The raw bounds measured after the run.
    #[serde(default)]
    pub bounds: BoundsSection,
    /// A soak: the run sampled as it goes, and judged.
    #[serde(default)]
    pub soak: SoakSection,
}

/// `[provision]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvisionSection {
    /// The bank's authz configuration file: its HSM and ledger are opened exactly as authz does.
    pub authz_config: PathBuf,
    /// The SIM vendor's transport key (64 hex digits), to personalise the SIMs in memory.
    pub transport_key_file: Option<PathBuf>,
    /// How many payers (account + SIM) to register.
    pub payers: usize,
    /// How many registrations run at once.
    pub concurrency: usize,
    /// The payers' payment password (synthetic payers; not a secret of anyone).
    pub password: String,
    /// Opening balance of each account, minor units.
    pub balance_minor: u64,
    /// Per-payment limit of each account, minor units.
    pub per_txn_limit_minor: u64,
    /// Daily limit of each account, minor units.
    pub daily_limit_minor: u64,
}

impl Default for ProvisionSection {
    fn default() -> Self {
        Self {
            authz_config: PathBuf::from("config/authz.toml"),
            transport_key_file: None,
            payers: 10_000,
            concurrency: 16,
            password: "2468".to_owned(),
            balance_minor: 100_000_000,
            per_txn_limit_minor: 100_000,
            daily_limit_minor: 100_000_000,
        }
    }
}

/// Whom the harness talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// The bank's authz directly, acting as the gateway (a gateway-client certificate).
    Authz,
    /// The payment gateway, acting as the merchant (the merchant's TLS certificate).
    Gateway,
}

/// `[target]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetSection {
    /// `authz` or `gateway`.
    pub kind: TargetKind,
    /// Base URL, for example `https://127.0.0.1:8443`; or a list of them (several authz
    /// instances on one ledger), over which the connections are spread round-robin.
    #[serde(deserialize_with = "one_or_many")]
    pub url: Vec<String>,
    /// The scheme CA's root certificate(s): the server's chain and the bank's signature are
    /// checked against them.
    pub scheme_ca: Vec<PathBuf>,
    /// CRL files of the scheme CA.
    pub crls: Vec<PathBuf>,
    /// The TLS client certificate chain: gateway-client (kind authz) or the merchant's (kind gateway).
    pub certificate: Option<PathBuf>,
    /// Its private key (PKCS#8 PEM).
    pub private_key: Option<PathBuf>,
    /// Time allowed for one request and its answer.
    pub request_timeout_ms: u64,
    /// authz's admin `/metrics` (plain HTTP), read before and after the run for per-stage
    /// latency; None: not read.
    pub metrics_url: Option<String>,
    /// The authz process whose CPU time is read from /proc before and after the run.
    pub server_pid: Option<u32>,
    /// A file holding that pid (first line), when `server_pid` is not given.
    pub server_pid_file: Option<PathBuf>,
}

impl Default for TargetSection {
    fn default() -> Self {
        Self {
            kind: TargetKind::Authz,
            url: vec!["https://127.0.0.1:8443".to_owned()],
            scheme_ca: Vec::new(),
            crls: Vec::new(),
            certificate: None,
            private_key: None,
            request_timeout_ms: 10_000,
            metrics_url: None,
            server_pid: None,
            server_pid_file: None,
        }
    }
}

/// `url = "https://..."` or `url = ["https://...", "https://..."]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(url) => vec![url],
        OneOrMany::Many(urls) => urls,
    })
}

/// `[merchant]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MerchantSection {
    /// The merchant id of the certificate.
    pub merchant_id: String,
    /// The merchant's acquirer.
    pub acquirer_iin: String,
    /// The merchant's account at its acquirer.
    pub merchant_account: String,
    /// The merchant's certificate chain (its signature's x5c).
    pub certificate: Option<PathBuf>,
    /// The merchant's private key (PKCS#8 PEM).
    pub private_key: Option<PathBuf>,
}

impl Default for MerchantSection {
    fn default() -> Self {
        Self {
            merchant_id: "SHOP-0001".to_owned(),
            acquirer_iin: "500001".to_owned(),
            merchant_account: "DE89370400440532013000".to_owned(),
            certificate: None,
            private_key: None,
        }
    }
}

/// `[run]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    /// Closed loop: workers, each with its own connection. Open loop: connections shared.
    pub connections: usize,
    /// Open loop: requests per second (0 = closed loop).
    pub rate_per_second: f64,
    /// Stop after this many seconds (0 = no time bound).
    pub duration_s: f64,
    /// Stop after this many requests (0 = no count bound).
    pub count: u64,
    /// Seconds of the same load before the measured run, not recorded (0 = none): connections,
    /// TLS sessions and the server's caches are warm when the clock starts.
    pub warmup_s: f64,
    /// Amount of each payment, minor units.
    pub amount_minor: u64,
    /// Currency of accounts and payments.
    pub currency: String,
    /// Percent of payments sent with a wrong password (expect 55).
    pub wrong_password_percent: u32,
    /// Percent of requests that retransmit a SIM's previous request (expect the stored answer).
    pub retransmit_percent: u32,
    /// Percent of payments sent with a corrupted MAC (expect 63; the SIM does not advance).
    pub bad_mac_percent: u32,
    /// Open loop: requests in flight at most (later ones wait, keeping their intended start).
    pub in_flight_max: usize,
}

impl Default for RunSection {
    fn default() -> Self {
        Self {
            connections: 16,
            rate_per_second: 0.0,
            duration_s: 10.0,
            count: 0,
            warmup_s: 2.0,
            amount_minor: 100,
            currency: "EUR".to_owned(),
            wrong_password_percent: 0,
            retransmit_percent: 0,
            bad_mac_percent: 0,
            in_flight_max: 4096,
        }
    }
}

/// `[bounds]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoundsSection {
    /// Measure the HSM, mTLS and ledger bounds after the run.
    pub enabled: bool,
    /// Seconds each bound runs (0.5 to 600).
    pub seconds: f64,
}

impl Default for BoundsSection {
    fn default() -> Self {
        Self { enabled: false, seconds: 3.0 }
    }
}

/// `[soak]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SoakSection {
    /// Where soak.csv, soak.json and soak.svg go; None: no soak.
    pub directory: Option<PathBuf>,
    /// Seconds between samples (0.1 to 3600).
    pub sample_every_s: f64,
    /// Seconds of the first and the last window whose p99 latencies are compared.
    pub window_s: f64,
    /// Largest rise of resident memory from the first half's peak to the second's, percent.
    pub rss_growth_percent_max: f64,
    /// A ceiling on the server's resident memory, MiB (0: none).
    pub rss_mib_max: u64,
    /// Largest rise of open file descriptors from the first half's peak to the second's.
    pub fds_growth_max: u64,
    /// Largest change of the last window's p99 latency from the first's, percent.
    pub p99_drift_percent_max: f64,
    /// HSM recycles the run must see (0: none required).
    pub recycles_min: u64,
    /// Largest rise of the number of series of the server's /metrics from the first half's
    /// peak to the second's.
    pub metric_series_growth_max: u64,
}

impl Default for SoakSection {
    fn default() -> Self {
        Self {
            directory: None,
            sample_every_s: 5.0,
            window_s: 300.0,
            rss_growth_percent_max: 10.0,
            rss_mib_max: 0,
            fds_growth_max: 8,
            p99_drift_percent_max: 20.0,
            recycles_min: 1,
            metric_series_growth_max: 64,
        }
    }
}

impl LoadtestConfig {
    /// Reads `path` (when given) and applies the process environment's overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => {
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?
            }
            None => String::new(),
        };
        Self::from_parts(&text, mps_protocol::config::env_overrides(ENV_PREFIX)?)
    }

    /// Parses TOML text with the given environment variables.
    pub fn from_parts(text: &str, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        Ok(mps_protocol::config::parse(text, ENV_PREFIX, vars)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_example_parses_and_overrides_apply() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/loadtest.example.toml")).unwrap();
        let vars = vec![("MPS_LOADTEST__RUN__CONNECTIONS".to_owned(), "3".to_owned())];
        let config = LoadtestConfig::from_parts(&text, vars).unwrap();
        assert_eq!(config.run.connections, 3);
        assert_eq!(config.provision.payers, 10_000);
    }

    #[test]
    fn the_target_takes_one_url_or_a_list() {
        let one = LoadtestConfig::from_parts("[target]\nurl = \"https://a:1\"\n", Vec::new()).unwrap();
        assert_eq!(one.target.url, ["https://a:1"]);
        let two =
            LoadtestConfig::from_parts("[target]\nurl = [\"https://a:1\", \"https://b:2\"]\n", Vec::new()).unwrap();
        assert_eq!(two.target.url, ["https://a:1", "https://b:2"]);
        let vars = vec![("MPS_LOADTEST__TARGET__URL".to_owned(), "[\"https://c:3\", \"https://d:4\"]".to_owned())];
        assert_eq!(LoadtestConfig::from_parts("", vars).unwrap().target.url, ["https://c:3", "https://d:4"]);
        assert_eq!(LoadtestConfig::default().target.url, ["https://127.0.0.1:8443"]);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(LoadtestConfig::from_parts("[run]\nconections = 3\n", Vec::new()).is_err());
        let vars = vec![("MPS_LOADTEST__RUN__NOPE".to_owned(), "3".to_owned())];
        assert!(LoadtestConfig::from_parts("", vars).is_err());
    }
}
