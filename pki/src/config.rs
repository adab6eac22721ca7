//! Configuration of the `pki` command: names and lifetimes of what the CA issues, read from an
//! optional TOML file and overridden by `MPS_PKI_*` environment variables.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Longest validity the CA accepts for any certificate, in days (about 30 years).
pub const VALIDITY_DAYS_MAX: u32 = 11_000;
/// Longest CRL lifetime, in hours (31 days).
pub const CRL_LIFETIME_HOURS_MAX: u32 = 744;
/// Largest backdating of notBefore, in seconds (one day).
pub const BACKDATE_SECONDS_MAX: u32 = 86_400;
const CONFIG_FILE_BYTES_MAX: u64 = 64 * 1024;

/// What the CA puts into certificates and CRLs. Every field has a default; see
/// `config/pki.example.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PkiConfig {
    /// Organization (O) of every subject the CA writes.
    pub organization: String,
    /// Common name of the scheme root CA.
    pub root_common_name: String,
    /// Common name of the intermediate (issuing) CA.
    pub intermediate_common_name: String,
    /// Validity of the root CA certificate, days.
    pub root_validity_days: u32,
    /// Validity of the intermediate CA certificate, days.
    pub intermediate_validity_days: u32,
    /// Default validity of end-entity certificates, days.
    pub leaf_validity_days: u32,
    /// Time from a CRL's thisUpdate to its nextUpdate, hours. Verifiers refuse certificates once
    /// the CRL is past nextUpdate, so `pki crl` must run more often than this.
    pub crl_lifetime_hours: u32,
    /// notBefore is set this many seconds before issuance, for peers whose clocks run behind.
    pub backdate_seconds: u32,
}

impl Default for PkiConfig {
    fn default() -> Self {
        Self {
            organization: "MPS Scheme".to_owned(),
            root_common_name: "MPS Scheme Root CA".to_owned(),
            intermediate_common_name: "MPS Scheme Issuing CA 1".to_owned(),
            root_validity_days: 7300,
            intermediate_validity_days: 3650,
            leaf_validity_days: 365,
            crl_lifetime_hours: 168,
            backdate_seconds: 300,
        }
    }
}

/// A configuration that could not be read or is out of bounds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this config (unknown keys are refused).
    #[error("config file {path} is invalid")]
    Toml {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: toml::de::Error,
    },
    /// An environment variable does not parse.
    #[error("environment variable {name} is not a valid number")]
    Env {
        /// The variable.
        name: &'static str,
    },
    /// A value is outside its bounds.
    #[error("{field} must be between {min} and {max}")]
    OutOfBounds {
        /// The field.
        field: &'static str,
        /// Smallest accepted value.
        min: u32,
        /// Largest accepted value.
        max: u32,
    },
    /// A name is empty or longer than 64 characters.
    #[error("{field} must be 1 to 64 characters")]
    BadName {
        /// The field.
        field: &'static str,
    },
}

impl PkiConfig {
    /// Defaults, then the TOML file (if given), then `MPS_PKI_*` environment variables.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        use std::io::Read;
        let io_error = |source| ConfigError::Io { path: path.display().to_string(), source };
        let file = std::fs::File::open(path).map_err(io_error)?;
        let mut text = String::new();
        file.take(CONFIG_FILE_BYTES_MAX).read_to_string(&mut text).map_err(io_error)?;
        toml::from_str(&text).map_err(|source| ConfigError::Toml { path: path.display().to_string(), source })
    }

    /// Applies overrides from `lookup` (the process environment in [`PkiConfig::load`]).
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let strings: [(&'static str, &mut String); 3] = [
            ("MPS_PKI_ORGANIZATION", &mut self.organization),
            ("MPS_PKI_ROOT_COMMON_NAME", &mut self.root_common_name),
            ("MPS_PKI_INTERMEDIATE_COMMON_NAME", &mut self.intermediate_common_name),
        ];
        for (name, field) in strings {
            if let Some(value) = lookup(name) {
                *field = value;
            }
        }
        let numbers: [(&'static str, &mut u32); 5] = [
            ("MPS_PKI_ROOT_VALIDITY_DAYS", &mut self.root_validity_days),
            ("MPS_PKI_INTERMEDIATE_VALIDITY_DAYS", &mut self.intermediate_validity_days),
            ("MPS_PKI_LEAF_VALIDITY_DAYS", &mut self.leaf_validity_days),
            ("MPS_PKI_CRL_LIFETIME_HOURS", &mut self.crl_lifetime_hours),
            ("MPS_PKI_BACKDATE_SECONDS", &mut self.backdate_seconds),
        ];
        for (name, field) in numbers {
            if let Some(value) = lookup(name) {
                *field = value.trim().parse().map_err(|_| ConfigError::Env { name })?;
            }
        }
        Ok(())
    }

    /// Checks every bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bounds = [
            ("root_validity_days", self.root_validity_days, 1, VALIDITY_DAYS_MAX),
            ("intermediate_validity_days", self.intermediate_validity_days, 1, VALIDITY_DAYS_MAX),
            ("leaf_validity_days", self.leaf_validity_days, 1, VALIDITY_DAYS_MAX),
            ("crl_lifetime_hours", self.crl_lifetime_hours, 1, CRL_LIFETIME_HOURS_MAX),
            ("backdate_seconds", self.backdate_seconds, 0, BACKDATE_SECONDS_MAX),
        ];
        for (field, value, min, max) in bounds {
            if value < min || value > max {
                return Err(ConfigError::OutOfBounds { field, min, max });
            }
        }
        let names = [
            ("organization", &self.organization),
            ("root_common_name", &self.root_common_name),
            ("intermediate_common_name", &self.intermediate_common_name),
        ];
        for (field, value) in names {
            if value.is_empty() || value.chars().count() > 64 {
                return Err(ConfigError::BadName { field });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/pki.example.toml");
        let config = PkiConfig::load(Some(&path)).unwrap();
        assert_eq!(config, PkiConfig::default());
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut config = PkiConfig::default();
        config
            .apply_env(|name| match name {
                "MPS_PKI_LEAF_VALIDITY_DAYS" => Some("30".to_owned()),
                "MPS_PKI_ORGANIZATION" => Some("Test Scheme".to_owned()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.leaf_validity_days, 30);
        assert_eq!(config.organization, "Test Scheme");
        let error = config.apply_env(|name| (name == "MPS_PKI_CRL_LIFETIME_HOURS").then(|| "soon".to_owned()));
        assert!(matches!(error, Err(ConfigError::Env { name: "MPS_PKI_CRL_LIFETIME_HOURS" })));
    }

    #[test]
    fn unknown_keys_and_out_of_bound_values_are_refused() {
        assert!(toml::from_str::<PkiConfig>("leaf_days = 3").is_err());
        let config = PkiConfig { crl_lifetime_hours: 0, ..PkiConfig::default() };
        assert!(matches!(config.validate(), Err(ConfigError::OutOfBounds { field: "crl_lifetime_hours", .. })));
        let config = PkiConfig { organization: String::new(), ..PkiConfig::default() };
        assert!(matches!(config.validate(), Err(ConfigError::BadName { field: "organization" })));
    }
}
