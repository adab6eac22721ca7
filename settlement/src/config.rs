//! The `settlement` command's configuration: one typed struct read once at start-up from an
//! optional TOML file with `MPS_SETTLEMENT__SECTION__KEY` environment overrides
//! (`mps_protocol::config`). Every key has a default; `config/settlement.example.toml`
//! documents each one.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Prefix of environment overrides: `MPS_SETTLEMENT__LIMITS__FILES_MAX=500`.
pub const ENV_PREFIX: &str = "MPS_SETTLEMENT";
/// Largest configuration file read.
const CONFIG_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Upper bound of `limits.file_bytes_max`: the clearing format's own limit.
pub const FILE_BYTES_MAX_CEILING: u64 = crate::clearing::FILE_BYTES_MAX as u64;
/// Upper bound of `limits.files_max`.
pub const FILES_MAX_CEILING: u32 = 100_000;
/// Upper bound of `limits.merchant_export_bytes_max`.
pub const MERCHANT_EXPORT_BYTES_MAX_CEILING: u64 = 1 << 30;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettlementConfig {
    /// The scheme CA and its CRLs, for the banks' signatures.
    pub trust: TrustConfig,
    /// Bounds on what is read.
    pub limits: LimitsConfig,
}

/// Trust for the issuers' detached JWS over their clearing files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Scheme root CA certificates, PEM. `--trust` on the command line replaces this list.
    pub scheme_ca: Vec<PathBuf>,
    /// CRLs of the scheme CAs, PEM (at least one is needed: revocation is always checked).
    /// `--crl` on the command line replaces this list.
    pub crls: Vec<PathBuf>,
}

/// Bounds on what one run reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest clearing file read, bytes.
    pub file_bytes_max: u64,
    /// Most clearing files in one run.
    pub files_max: u32,
    /// Largest merchant export read by `reconcile`, bytes.
    pub merchant_export_bytes_max: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { file_bytes_max: 256 * 1024 * 1024, files_max: 10_000, merchant_export_bytes_max: 64 * 1024 * 1024 }
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source} (check --config or MPS_SETTLEMENT_CONFIG)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrong type, in the file or an override.
    #[error("settlement configuration is invalid: {0} (see config/settlement.example.toml)")]
    Invalid(#[from] mps_protocol::config::ConfigError),
    /// A value is outside its bounds.
    #[error("{field} must be between {min} and {max} (see config/settlement.example.toml)")]
    OutOfBounds {
        /// The key.
        field: &'static str,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
}

impl SettlementConfig {
    /// Defaults, then the TOML file (if given), then `MPS_SETTLEMENT__<SECTION>__<KEY>`
    /// environment variables.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => read_file(path)?,
            None => String::new(),
        };
        Self::from_parts(&text, mps_protocol::config::env_overrides(ENV_PREFIX)?)
    }

    /// Parses TOML text (may be empty) with the given environment and checks every bound.
    pub fn from_parts(text: &str, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let config: Self = mps_protocol::config::parse(text, ENV_PREFIX, vars)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        let bounds = [
            ("limits.file_bytes_max", limits.file_bytes_max, 1, FILE_BYTES_MAX_CEILING),
            ("limits.files_max", u64::from(limits.files_max), 1, u64::from(FILES_MAX_CEILING)),
            (
                "limits.merchant_export_bytes_max",
                limits.merchant_export_bytes_max,
                1,
                MERCHANT_EXPORT_BYTES_MAX_CEILING,
            ),
        ];
        for (field, value, min, max) in bounds {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::OutOfBounds { field, min, max });
            }
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read as _;
    let read_error = |source| ConfigError::Read { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(CONFIG_FILE_BYTES_MAX).read_to_string(&mut text).map_err(read_error)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn the_example_config_parses_to_the_defaults_plus_its_trust_files() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/settlement.example.toml");
        let config = SettlementConfig::from_parts(&std::fs::read_to_string(path).unwrap(), Vec::new()).unwrap();
        assert_eq!(config.limits, LimitsConfig::default());
        assert_eq!(config.trust.scheme_ca, vec![PathBuf::from("pki/ca/root.crt")]);
        assert_eq!(config.trust.crls, vec![PathBuf::from("pki/ca/crls.pem")]);
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let config = SettlementConfig::from_parts(
            "[limits]\nfiles_max = 20\n",
            vars(&[("MPS_SETTLEMENT__LIMITS__FILES_MAX", "30"), ("MPS_SETTLEMENT__TRUST__CRLS", "[\"a.pem\"]")]),
        )
        .unwrap();
        assert_eq!(config.limits.files_max, 30);
        assert_eq!(config.trust.crls, vec![PathBuf::from("a.pem")]);
    }

    #[test]
    fn unknown_keys_and_out_of_bound_values_are_refused() {
        let error = SettlementConfig::from_parts("[limits]\nfile_max = 3\n", Vec::new()).unwrap_err();
        assert!(matches!(error, ConfigError::Invalid(_)), "{error:?}");
        let error = SettlementConfig::from_parts("", vars(&[("MPS_SETTLEMENT__LIMITS__FILES_MAX", "0")])).unwrap_err();
        let ConfigError::OutOfBounds { field, .. } = error else { panic!("{error:?}") };
        assert_eq!(field, "limits.files_max");
    }
}
