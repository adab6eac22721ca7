//! The `sim` binary's configuration: an optional TOML file (`--config` or `MPS_SIM_CONFIG`)
//! whose every key can be overridden by an `MPS_SIM__<KEY>` environment variable (the shared
//! mechanism of every MPS binary, `mps_protocol::config`), parsed once into typed fields.
//! Secrets (the payment password, the transport key) never come from this file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mps_protocol::Currency;
use serde::Deserialize;

use crate::error::CliError;

/// Default time allowed for one `--send` round trip to a merchant.
pub const SEND_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default limit on the size of a merchant's reply.
pub const RESPONSE_BYTES_MAX_DEFAULT: u64 = 64 * 1024;
/// Largest config file read.
const CONFIG_BYTES_MAX: u64 = 64 * 1024;
/// Prefix of the environment overrides: `MPS_SIM__SEND_TIMEOUT_MS=5000`.
const ENV_PREFIX: &str = "MPS_SIM";

/// The TOML file, as written (see `config/sim.example.toml`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    profile: Option<PathBuf>,
    default_currency: Option<String>,
    merchant_ca_file: Option<PathBuf>,
    send_timeout_ms: Option<u64>,
    response_bytes_max: Option<u64>,
}

/// The configuration in force.
#[derive(Debug, Clone)]
pub struct Config {
    /// Path of the profile, if configured (the `--profile` flag wins over it).
    pub profile: Option<PathBuf>,
    /// Currency offered at the prompt when `--currency` is not given.
    pub default_currency: Option<Currency>,
    /// PEM file of the CA(s) that sign merchants' HTTPS certificates.
    pub merchant_ca_file: Option<PathBuf>,
    /// Time allowed for one `--send` round trip.
    pub send_timeout: Duration,
    /// Largest merchant reply accepted, in bytes.
    pub response_bytes_max: u64,
}

impl Config {
    /// Reads the file (if any) and applies the process environment's `MPS_SIM__*` overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, CliError> {
        let text = match path {
            Some(path) => crate::blob::read_text_file(path, CONFIG_BYTES_MAX, "config file")?,
            None => zeroize::Zeroizing::new(String::new()),
        };
        let with_origin = |message: String| match path {
            Some(path) => CliError::config(format!("{}: {message}", path.display())),
            None => CliError::config(message),
        };
        let vars = mps_protocol::config::env_overrides(ENV_PREFIX).map_err(|e| with_origin(e.to_string()))?;
        Self::from_parts(&text, vars).map_err(|e| match e {
            CliError::Config(message) => with_origin(message),
            other => other,
        })
    }

    /// Parses TOML text (may be empty) with the given environment (`MPS_SIM__<KEY>` variables;
    /// others are ignored) and checks every value.
    fn from_parts(text: &str, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, CliError> {
        let file: FileConfig =
            mps_protocol::config::parse(text, ENV_PREFIX, vars).map_err(|e| CliError::config(e.to_string()))?;
        let default_currency = file
            .default_currency
            .map(|text| {
                Currency::parse(&text).map_err(|_| {
                    CliError::config(format!(
                        "default_currency {text:?} is not a known ISO 4217 code (like EUR or 978)"
                    ))
                })
            })
            .transpose()?;
        let send_timeout_ms = file.send_timeout_ms.unwrap_or(SEND_TIMEOUT_MS_DEFAULT);
        if !(1..=600_000).contains(&send_timeout_ms) {
            return Err(CliError::config("send_timeout_ms must be between 1 and 600000".into()));
        }
        let response_bytes_max = file.response_bytes_max.unwrap_or(RESPONSE_BYTES_MAX_DEFAULT);
        if !(1024..=16 * 1024 * 1024).contains(&response_bytes_max) {
            return Err(CliError::config("response_bytes_max must be between 1024 and 16777216".into()));
        }
        Ok(Self {
            profile: file.profile,
            default_currency,
            merchant_ca_file: file.merchant_ca_file,
            send_timeout: Duration::from_millis(send_timeout_ms),
            response_bytes_max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sim.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let file: FileConfig = toml::from_str(&text).unwrap();
        assert!(file.profile.is_some());
        assert_eq!(file.send_timeout_ms, Some(SEND_TIMEOUT_MS_DEFAULT));
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("profil = \"x\"").is_err());
        let Err(CliError::Config(message)) = Config::from_parts("\nprofil = \"x\"", Vec::new()) else {
            panic!("an unknown key in the file was accepted")
        };
        assert!(message.contains("line 2") && message.contains("profil"), "{message}");
    }

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn environment_overrides_apply_over_the_file() {
        let text = "default_currency = \"USD\"\nsend_timeout_ms = 1000\n";
        let config = Config::from_parts(
            text,
            vars(&[
                ("MPS_SIM__DEFAULT_CURRENCY", "EUR"),
                ("MPS_SIM__MERCHANT_CA_FILE", "ca.pem"),
                ("MPS_SIM__SEND_TIMEOUT_MS", "5000"),
                ("MPS_SIM__PROFILE", "p.json"),
                ("MPS_SIM_RESPONSE_BYTES_MAX", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(config.default_currency, Some(Currency::EUR));
        assert_eq!(config.merchant_ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(config.send_timeout, Duration::from_millis(5000));
        assert_eq!(config.profile, Some(PathBuf::from("p.json")));
        assert_eq!(config.response_bytes_max, RESPONSE_BYTES_MAX_DEFAULT);
    }

    #[test]
    fn unknown_or_bad_environment_overrides_are_refused() {
        for (name, value) in [
            ("MPS_SIM__MERCHANT_CA", "ca.pem"),
            ("MPS_SIM__SEND_TIMEOUT_MS", "soon"),
            ("MPS_SIM__SEND_TIMEOUT_MS", "0"),
            ("MPS_SIM__DEFAULT_CURRENCY", "XXX1"),
        ] {
            let result = Config::from_parts("", vars(&[(name, value)]));
            assert!(matches!(result, Err(CliError::Config(_))), "{name}={value} was accepted: {result:?}");
        }
        let Err(CliError::Config(message)) = Config::from_parts("", vars(&[("MPS_SIM__MERCHANT_CA", "x")])) else {
            panic!("an unknown override was accepted")
        };
        assert!(message.contains("MPS_SIM__MERCHANT_CA") && message.contains("merchant_ca"), "{message}");
    }
}
