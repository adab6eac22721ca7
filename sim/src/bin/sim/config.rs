//! The `sim` binary's configuration: an optional TOML file (`--config` or `MPS_SIM_CONFIG`)
//! whose every key can be overridden by an `MPS_SIM_*` environment variable, parsed once into
//! typed fields. Secrets (the payment password, the transport key) never come from this file.

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

fn env_var(name: &str) -> Result<Option<String>, CliError> {
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(CliError::config(format!("{name} is not valid UTF-8"))),
    }
}

fn env_u64(name: &str) -> Result<Option<u64>, CliError> {
    env_var(name)?
        .map(|v| v.parse::<u64>().map_err(|_| CliError::config(format!("{name}={v:?} is not a whole number"))))
        .transpose()
}

impl Config {
    /// Reads the file (if any) and applies the environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, CliError> {
        let file = match path {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let profile = env_var("MPS_SIM_PROFILE")?.map(PathBuf::from).or(file.profile);
        let currency_text = env_var("MPS_SIM_DEFAULT_CURRENCY")?.or(file.default_currency);
        let default_currency = currency_text
            .map(|text| {
                Currency::parse(&text).map_err(|_| {
                    CliError::config(format!(
                        "default_currency {text:?} is not a known ISO 4217 code (like EUR or 978)"
                    ))
                })
            })
            .transpose()?;
        let merchant_ca_file = env_var("MPS_SIM_MERCHANT_CA_FILE")?.map(PathBuf::from).or(file.merchant_ca_file);
        let send_timeout_ms =
            env_u64("MPS_SIM_SEND_TIMEOUT_MS")?.or(file.send_timeout_ms).unwrap_or(SEND_TIMEOUT_MS_DEFAULT);
        if !(1..=600_000).contains(&send_timeout_ms) {
            return Err(CliError::config("send_timeout_ms must be between 1 and 600000".into()));
        }
        let response_bytes_max =
            env_u64("MPS_SIM_RESPONSE_BYTES_MAX")?.or(file.response_bytes_max).unwrap_or(RESPONSE_BYTES_MAX_DEFAULT);
        if !(1024..=16 * 1024 * 1024).contains(&response_bytes_max) {
            return Err(CliError::config("response_bytes_max must be between 1024 and 16777216".into()));
        }
        Ok(Self {
            profile,
            default_currency,
            merchant_ca_file,
            send_timeout: Duration::from_millis(send_timeout_ms),
            response_bytes_max,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, CliError> {
    let text = crate::blob::read_text_file(path, CONFIG_BYTES_MAX, "config file")?;
    toml::from_str(&text).map_err(|e| CliError::config(format!("{}: {}", path.display(), e.message())))
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
    }
}
