//! Configuration of the `pki` command: names and lifetimes of what the CA issues, read from an
//! optional TOML file and overridden by `MPS_PKI__<KEY>` environment variables (the shared
//! mechanism of every MPS binary, `mps_protocol::config`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Longest validity the CA accepts for any certificate, in days (about 30 years).
pub const VALIDITY_DAYS_MAX: u32 = 11_000;
/// Longest CRL lifetime, in hours (31 days).
pub const CRL_LIFETIME_HOURS_MAX: u32 = 744;
/// Largest backdating of notBefore, in seconds (one day).
pub const BACKDATE_SECONDS_MAX: u32 = 86_400;
const CONFIG_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Prefix of the environment overrides: `MPS_PKI__LEAF_VALIDITY_DAYS=30`.
pub const ENV_PREFIX: &str = "MPS_PKI";

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
    /// The file, or an `MPS_PKI__*` override, is not valid for this config (unknown keys and
    /// wrong types are refused; the cause names the line or the variable).
    #[error("pki configuration{} is invalid", origin_note(.path))]
    Invalid {
        /// The file, when one was given.
        path: Option<PathBuf>,
        /// The cause.
        #[source]
        source: mps_protocol::config::ConfigError,
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

fn origin_note(path: &Option<PathBuf>) -> String {
    path.as_ref().map(|path| format!(" ({})", path.display())).unwrap_or_default()
}

impl PkiConfig {
    /// Defaults, then the TOML file (if given), then `MPS_PKI__<KEY>` environment variables.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let invalid = |source| ConfigError::Invalid { path: path.map(Path::to_owned), source };
        let text = match path {
            Some(path) => read_file(path)?,
            None => String::new(),
        };
        let vars = mps_protocol::config::env_overrides(ENV_PREFIX).map_err(invalid)?;
        Self::from_parts(&text, vars).map_err(|error| match error {
            ConfigError::Invalid { path: None, source } => invalid(source),
            other => other,
        })
    }

    /// Parses TOML text (may be empty) with the given environment (`MPS_PKI__<KEY>` variables;
    /// others are ignored) and validates the result.
    pub fn from_parts(text: &str, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let config: Self = mps_protocol::config::parse(text, ENV_PREFIX, vars)
            .map_err(|source| ConfigError::Invalid { path: None, source })?;
        config.validate()?;
        Ok(config)
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

fn read_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let io_error = |source| ConfigError::Io { path: path.display().to_string(), source };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let mut text = String::new();
    file.take(CONFIG_FILE_BYTES_MAX).read_to_string(&mut text).map_err(io_error)?;
    Ok(text)
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

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn environment_overrides_the_file() {
        let text = "leaf_validity_days = 90\norganization = \"File Scheme\"\n";
        let config = PkiConfig::from_parts(
            text,
            vars(&[
                ("MPS_PKI__LEAF_VALIDITY_DAYS", "30"),
                ("MPS_PKI__ORGANIZATION", "Test Scheme"),
                ("MPS_PKI_ORGANIZATION", "old style, ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(config.leaf_validity_days, 30);
        assert_eq!(config.organization, "Test Scheme");
        assert_eq!(config.crl_lifetime_hours, 168);
    }

    #[test]
    fn unknown_or_bad_environment_overrides_are_refused() {
        let error = PkiConfig::from_parts("", vars(&[("MPS_PKI__LEAF_DAYS", "3")])).unwrap_err();
        let ConfigError::Invalid { source, .. } = &error else { panic!("{error:?}") };
        let cause = source.to_string();
        assert!(cause.contains("MPS_PKI__LEAF_DAYS") && cause.contains("unknown field `leaf_days`"), "{cause}");
        let error = PkiConfig::from_parts("", vars(&[("MPS_PKI__CRL_LIFETIME_HOURS", "soon")])).unwrap_err();
        assert!(matches!(error, ConfigError::Invalid { .. }), "{error:?}");
        let error = PkiConfig::from_parts("", vars(&[("MPS_PKI__CRL_LIFETIME_HOURS", "0")])).unwrap_err();
        assert!(matches!(error, ConfigError::OutOfBounds { field: "crl_lifetime_hours", .. }), "{error:?}");
    }

    #[test]
    fn unknown_keys_and_out_of_bound_values_are_refused() {
        let error = PkiConfig::from_parts("\nleaf_days = 3", Vec::new()).unwrap_err();
        let ConfigError::Invalid { source, .. } = &error else { panic!("{error:?}") };
        assert!(matches!(source, mps_protocol::config::ConfigError::File { line: 2, .. }), "{source:?}");
        let config = PkiConfig { crl_lifetime_hours: 0, ..PkiConfig::default() };
        assert!(matches!(config.validate(), Err(ConfigError::OutOfBounds { field: "crl_lifetime_hours", .. })));
        let config = PkiConfig { organization: String::new(), ..PkiConfig::default() };
        assert!(matches!(config.validate(), Err(ConfigError::BadName { field: "organization" })));
    }
}
