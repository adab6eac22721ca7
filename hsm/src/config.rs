//! HSM configuration: which PKCS#11 module, which token, where the PIN comes from, and the
//! bounds of the session pool. Parsed once at the edge ([`HsmConfig::from_parts`]: TOML text
//! with `MPS_HSM__<KEY>` / `MPS_HSM__KEYS__<KEY>` environment overrides, the same mechanism as
//! every MPS binary, `mps_protocol::config`); the PIN itself never sits in a TOML file, only in
//! the environment or in a file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cryptoki::types::AuthPin;
use serde::Deserialize;
use zeroize::Zeroizing;

/// Prefix of the environment overrides of `mps-hsm`'s config: `MPS_HSM__POOL_SIZE=4`.
pub const ENV_PREFIX: &str = "MPS_HSM";
/// Default PKCS#11 module: Debian's SoftHSM2.
pub const DEFAULT_MODULE_PATH: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// Default environment variable holding the user PIN.
pub const DEFAULT_PIN_ENV: &str = "MPS_HSM_PIN";
/// Largest pool the config accepts.
pub const POOL_SIZE_MAX: usize = 64;
/// Longest PIN accepted from a file or the environment.
pub const PIN_BYTES_MAX: usize = 256;
/// Most HSMs one pool spans (the first plus `additional`): bounds the pool's threads and the
/// label set of the per-HSM metrics.
pub const MEMBERS_MAX: usize = 8;

/// Why a configuration or a PIN source was refused. Never carries a PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML text does not parse or has an unknown field (a `pin` field is unknown on
    /// purpose: PINs come from the environment or a file).
    #[error("HSM config is not valid TOML of the expected shape (line {line}): {message}")]
    Toml {
        /// 1-based line of the error, 0 when unknown.
        line: usize,
        /// The parser's message, without the offending source text.
        message: String,
    },
    /// A field outside its allowed range.
    #[error("HSM config field {field} is out of range: {reason}")]
    Range {
        /// The field name.
        field: &'static str,
        /// The allowed range, in words.
        reason: &'static str,
    },
    /// The PIN environment variable is not set or not UTF-8.
    #[error("the HSM PIN environment variable {name} is not set (or not UTF-8)")]
    PinEnvMissing {
        /// The variable's name.
        name: String,
    },
    /// The PIN file cannot be read.
    #[error("cannot read the HSM PIN file {path}: {source}")]
    PinFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The PIN is empty, too long or not printable.
    #[error("the HSM PIN from {origin} is empty, longer than {PIN_BYTES_MAX} bytes or not printable ASCII")]
    PinMalformed {
        /// "environment variable X" or "file Y".
        origin: String,
    },
    /// A PIN file that other users could read or change.
    #[error(
        "the HSM PIN file {path} has mode {mode:o}: a PIN file must not be group- or world-accessible; \
         run `chmod 600 {path}`"
    )]
    PinFilePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A PIN variable could not be taken out of the process environment.
    #[error("cannot take the PIN variable {name} out of the environment: {reason}")]
    PinEnvironment {
        /// The variable(s).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// An entry of `additional` is unusable: named by its place (`additional[0]` is the
    /// second HSM of the pool).
    #[error("HSM config additional[{index}]: {reason}")]
    Member {
        /// Its index in `additional`.
        index: usize,
        /// What is wrong, in words.
        reason: &'static str,
    },
    /// An `MPS_HSM__*` environment override names an unknown key, holds a value of the wrong
    /// type or is not UTF-8.
    #[error("HSM config: {0}")]
    EnvOverride(mps_protocol::config::ConfigError),
}

impl From<mps_protocol::config::ConfigError> for ConfigError {
    fn from(error: mps_protocol::config::ConfigError) -> Self {
        match error {
            mps_protocol::config::ConfigError::File { line, message } => Self::Toml { line, message },
            other => Self::EnvOverride(other),
        }
    }
}

/// A token PIN (user or security officer). Zeroized on drop; Debug prints only the type name.
#[derive(Clone)]
pub struct Pin(AuthPin);

impl Pin {
    /// Takes a PIN from text; the caller's copy should be zeroized by the caller.
    pub fn new(pin: &str) -> Result<Self, ConfigError> {
        Self::checked(pin, "the caller")
    }

    fn checked(pin: &str, origin: &str) -> Result<Self, ConfigError> {
        let ok = !pin.is_empty() && pin.len() <= PIN_BYTES_MAX && pin.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if !ok {
            return Err(ConfigError::PinMalformed { origin: origin.to_owned() });
        }
        Ok(Self(AuthPin::from(pin)))
    }

    /// The PIN of environment variable `name`: the one
    /// [`crate::take_pins_from_environment`] took out of the environment at start, else the
    /// variable as it is now.
    pub fn from_env(name: &str) -> Result<Self, ConfigError> {
        match crate::pin_environment::taken(name) {
            Some(pin) => Ok(pin),
            None => Self::read_env(name),
        }
    }

    /// Reads a PIN from an environment variable as it is now.
    pub(crate) fn read_env(name: &str) -> Result<Self, ConfigError> {
        let value =
            Zeroizing::new(std::env::var(name).map_err(|_| ConfigError::PinEnvMissing { name: name.to_owned() })?);
        Self::checked(&value, &format!("environment variable {name}"))
    }

    /// Reads a PIN from a file: its first line, without the line end. The file must not be
    /// group- or world-accessible (mode 600 or 400).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        let metadata =
            std::fs::metadata(path).map_err(|source| ConfigError::PinFile { path: path.to_owned(), source })?;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::PinFilePermissions { path: path.to_owned(), mode });
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| ConfigError::PinFile { path: path.to_owned(), source })?,
        );
        let line = text.lines().next().unwrap_or("");
        Self::checked(line, &format!("file {}", path.display()))
    }

    pub(crate) fn auth_pin(&self) -> &AuthPin {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// Labels of the issuer keys the pool uses (DESIGN.md section 3).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyLabels {
    /// Issuer master key (AES-256, derive only): personalisation.
    pub issuer_master: String,
    /// Key-encryption key (AES-256, wrap/unwrap, private, unwrap template): chain keys at
    /// rest. This is version 1; `mps-hsm keys rotate-kek` makes `<label>-2`, `<label>-3`, ...
    pub key_encryption: String,
    /// Password verification key (generic secret, HMAC).
    pub password_verification: String,
    /// Signing key pair (EC P-256): the bank's JWS signatures.
    pub signing: String,
    /// The next signing key pair during a signing-key renewal (`mps-hsm keys
    /// new-signing-key`): the pool checks it and keeps it ready, and authz switches to it at
    /// `issuer.next_signing_from`. Unset outside a renewal.
    pub signing_next: Option<String>,
}

impl Default for KeyLabels {
    fn default() -> Self {
        Self {
            issuer_master: "mps-imk".to_owned(),
            key_encryption: "mps-kek".to_owned(),
            password_verification: "mps-pvk".to_owned(),
            signing: "mps-sign".to_owned(),
            signing_next: None,
        }
    }
}

/// Configuration of the HSM connection and its session pool.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module (shared library).
    pub module_path: PathBuf,
    /// Label of the token to use.
    pub token_label: String,
    /// Environment variable holding the user PIN (used when `pin_file` is not set).
    pub pin_env: String,
    /// File holding the user PIN on its first line; takes precedence over `pin_env`.
    pub pin_file: Option<PathBuf>,
    /// Worker threads, each with its own PKCS#11 session (1 to 64).
    pub pool_size: usize,
    /// Jobs waiting per worker before callers get `Busy` (1 to 65536).
    pub queue_depth_max: usize,
    /// How long a caller waits for one operation, queueing included (1 ms to 60 s).
    pub op_timeout_ms: u64,
    /// First wait before re-initialising after the HSM was lost.
    pub reconnect_backoff_min_ms: u64,
    /// Longest wait between re-initialisation attempts.
    pub reconnect_backoff_max_ms: u64,
    /// Opened-but-not-sealed authorization sessions per worker (1 to 65536).
    pub tickets_per_worker_max: usize,
    /// An opened session not sealed within this time is discarded (100 ms to 10 min).
    pub ticket_ttl_ms: u64,
    /// How long a recycle waits for opened sessions to be sealed before it proceeds (it goes
    /// on as soon as they are). A session still open then fails its request with 503: the
    /// default, 5 s, is the gateway's own request timeout, beyond which a request was given up.
    pub recycle_drain_ms: u64,
    /// Recycle automatically once this many session objects were created since the last
    /// (re-)initialisation; 0 turns it off. SoftHSM keeps about 240 bytes per object until
    /// C_Finalize, and C_Finalize's time grows with them: the HSM takes no work meanwhile.
    /// The default, 200,000 (about 48 MB), recycles in about 0.3 s on SoftHSM (half of it
    /// C_Finalize); 1,000,000 took 1.2 s, longer than a queued request may wait.
    pub recycle_after_objects: u64,
    /// How often the pool looks on the token for a KEK made by `mps-hsm keys rotate-kek`
    /// (1 s to 10 min; the supervisor wakes once a second, so less than 1000 acts as 1000).
    pub kek_refresh_ms: u64,
    /// Labels of the issuer keys.
    pub keys: KeyLabels,
    /// Further HSMs holding the same keys (`[[additional]]`, in authz `[[hsm.additional]]`):
    /// the pool spreads work over the HSM above and these by load, and takes one that fails
    /// out until its health check brings it back. Unset: one HSM. An empty list is refused.
    pub additional: Option<Vec<HsmMember>>,
}

/// One further HSM of the pool: its module and token; the PIN source and the pool size
/// default to the first HSM's. Every other setting is the pool's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmMember {
    /// Path of its PKCS#11 module. One module per HSM: two members on one module would
    /// re-initialise each other's sessions (each member recovers by C_Finalize).
    pub module_path: PathBuf,
    /// Label of its token (default: the first HSM's `token_label`).
    pub token_label: Option<String>,
    /// Environment variable holding its user PIN (default: the first HSM's PIN source).
    pub pin_env: Option<String>,
    /// File holding its user PIN; takes precedence over `pin_env`.
    pub pin_file: Option<PathBuf>,
    /// Its worker threads (1 to 64; default: the first HSM's `pool_size`).
    pub pool_size: Option<usize>,
}

impl Default for HsmConfig {
    fn default() -> Self {
        Self {
            module_path: PathBuf::from(DEFAULT_MODULE_PATH),
            token_label: "mps".to_owned(),
            pin_env: DEFAULT_PIN_ENV.to_owned(),
            pin_file: None,
            pool_size: 2,
            queue_depth_max: 1024,
            op_timeout_ms: 2_000,
            reconnect_backoff_min_ms: 100,
            reconnect_backoff_max_ms: 10_000,
            tickets_per_worker_max: 1024,
            ticket_ttl_ms: 30_000,
            recycle_drain_ms: 5_000,
            recycle_after_objects: 200_000,
            kek_refresh_ms: 5_000,
            keys: KeyLabels::default(),
            additional: None,
        }
    }
}

fn range<T: PartialOrd>(
    field: &'static str,
    value: T,
    min: T,
    max: T,
    reason: &'static str,
) -> Result<(), ConfigError> {
    if value < min || value > max { Err(ConfigError::Range { field, reason }) } else { Ok(()) }
}

fn label(field: &'static str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty() && value.len() <= 64 && value.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok { Ok(()) } else { Err(ConfigError::Range { field, reason: "1 to 64 printable ASCII characters, no spaces" }) }
}

impl HsmConfig {
    /// Parses TOML text (no environment overrides) and validates it.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_parts(text, Vec::new())
    }

    /// Parses TOML text, applies the `MPS_HSM__*` variables of the process environment, and
    /// validates the result.
    pub fn from_toml_and_env(text: &str) -> Result<Self, ConfigError> {
        Self::from_parts(text, mps_protocol::config::env_overrides(ENV_PREFIX)?)
    }

    /// Parses TOML text with the given environment (`MPS_HSM__POOL_SIZE=4`,
    /// `MPS_HSM__KEYS__SIGNING=ca-key`; other variables are ignored) and validates the result.
    /// Unknown keys are refused, from the text and from the environment alike.
    pub fn from_parts(text: &str, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let config: Self = mps_protocol::config::parse(text, ENV_PREFIX, vars)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        range("pool_size", self.pool_size, 1, POOL_SIZE_MAX, "1 to 64")?;
        range("queue_depth_max", self.queue_depth_max, 1, 65_536, "1 to 65536")?;
        range("op_timeout_ms", self.op_timeout_ms, 1, 60_000, "1 to 60000")?;
        range("reconnect_backoff_min_ms", self.reconnect_backoff_min_ms, 1, 60_000, "1 to 60000")?;
        range(
            "reconnect_backoff_max_ms",
            self.reconnect_backoff_max_ms,
            self.reconnect_backoff_min_ms,
            600_000,
            "reconnect_backoff_min_ms to 600000",
        )?;
        range("tickets_per_worker_max", self.tickets_per_worker_max, 1, 65_536, "1 to 65536")?;
        range("ticket_ttl_ms", self.ticket_ttl_ms, 100, 600_000, "100 to 600000")?;
        range("recycle_drain_ms", self.recycle_drain_ms, 0, 60_000, "0 to 60000")?;
        range("kek_refresh_ms", self.kek_refresh_ms, 100, 600_000, "100 to 600000")?;
        label("token_label", &self.token_label)?;
        label("pin_env", &self.pin_env)?;
        label("keys.issuer_master", &self.keys.issuer_master)?;
        label("keys.key_encryption", &self.keys.key_encryption)?;
        label("keys.password_verification", &self.keys.password_verification)?;
        label("keys.signing", &self.keys.signing)?;
        if let Some(next) = &self.keys.signing_next {
            label("keys.signing_next", next)?;
            if *next == self.keys.signing {
                return Err(ConfigError::Range {
                    field: "keys.signing_next",
                    reason: "must name another key pair than keys.signing",
                });
            }
        }
        self.validate_additional()
    }

    /// Checks the further HSMs: a list that is not empty, at most [`MEMBERS_MAX`] HSMs in
    /// all, each with its own module, each field in range.
    fn validate_additional(&self) -> Result<(), ConfigError> {
        let Some(additional) = &self.additional else { return Ok(()) };
        if additional.is_empty() {
            return Err(ConfigError::Range {
                field: "additional",
                reason: "an empty list: leave the key out for one HSM, or list the further HSMs",
            });
        }
        if additional.len() + 1 > MEMBERS_MAX {
            return Err(ConfigError::Range { field: "additional", reason: "at most 7 further HSMs (8 in all)" });
        }
        let refuse = |index, reason| Err(ConfigError::Member { index, reason });
        for (index, member) in additional.iter().enumerate() {
            let ok_label = |value: &str| label("", value).is_ok();
            if member.token_label.as_deref().is_some_and(|l| !ok_label(l)) {
                return refuse(index, "token_label: 1 to 64 printable ASCII characters, no spaces");
            }
            if member.pin_env.as_deref().is_some_and(|l| !ok_label(l)) {
                return refuse(index, "pin_env: 1 to 64 printable ASCII characters, no spaces");
            }
            if member.pool_size.is_some_and(|size| !(1..=POOL_SIZE_MAX).contains(&size)) {
                return refuse(index, "pool_size: 1 to 64");
            }
            if member.module_path == self.module_path {
                return refuse(index, "module_path is the first HSM's module: each HSM needs a module of its own");
            }
            if additional[..index].iter().any(|other| other.module_path == member.module_path) {
                return refuse(index, "module_path is listed twice: each HSM needs a module of its own");
            }
        }
        Ok(())
    }

    /// The configuration of every HSM of the pool, the first one first: each is this
    /// configuration with the member's module, token, PIN source and pool size, and no
    /// `additional`.
    pub fn members(&self) -> Vec<HsmConfig> {
        let first = HsmConfig { additional: None, ..self.clone() };
        let mut members = vec![first.clone()];
        for member in self.additional.iter().flatten() {
            let pin_from_member = member.pin_env.is_some() || member.pin_file.is_some();
            members.push(HsmConfig {
                module_path: member.module_path.clone(),
                token_label: member.token_label.clone().unwrap_or_else(|| first.token_label.clone()),
                pin_env: member.pin_env.clone().unwrap_or_else(|| first.pin_env.clone()),
                pin_file: if pin_from_member { member.pin_file.clone() } else { first.pin_file.clone() },
                pool_size: member.pool_size.unwrap_or(first.pool_size),
                ..first.clone()
            });
        }
        members
    }

    /// Reads the user PIN from `pin_file` if set, else from the `pin_env` variable.
    pub fn load_pin(&self) -> Result<Pin, ConfigError> {
        match &self.pin_file {
            Some(path) => Pin::from_file(path),
            None => Pin::from_env(&self.pin_env),
        }
    }

    pub(crate) fn op_timeout(&self) -> Duration {
        Duration::from_millis(self.op_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_a_pin_field_is_refused() {
        let config = HsmConfig::from_toml_str("token_label = \"bank\"\n").unwrap();
        assert_eq!(config.pool_size, 2);
        assert_eq!(config.keys.key_encryption, "mps-kek");
        let err = HsmConfig::from_toml_str("token_label = \"bank\"\npin = \"123456\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("pin"), "{text}");
        assert!(!text.contains("123456"), "the error must not echo the PIN: {text}");
        assert!(matches!(err, ConfigError::Toml { .. }), "{err:?}");
    }

    #[test]
    fn the_example_config_parses_to_the_defaults() {
        let config = HsmConfig::from_toml_str(include_str!("../../config/hsm.example.toml")).unwrap();
        assert_eq!(config, HsmConfig::default());
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(matches!(
            HsmConfig::from_toml_str("pool_size = 0").unwrap_err(),
            ConfigError::Range { field: "pool_size", .. }
        ));
        assert!(matches!(
            HsmConfig::from_toml_str("pool_size = 65").unwrap_err(),
            ConfigError::Range { field: "pool_size", .. }
        ));
        assert!(HsmConfig::from_toml_str("reconnect_backoff_min_ms = 500\nreconnect_backoff_max_ms = 100").is_err());
        assert!(HsmConfig::from_toml_str("[keys]\nsigning = \"\"").is_err());
    }

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn environment_overrides_apply_over_the_file() {
        let text = "token_label = \"bank\"\npool_size = 3\n";
        let config = HsmConfig::from_parts(
            text,
            vars(&[
                ("MPS_HSM__POOL_SIZE", "4"),
                ("MPS_HSM__TOKEN_LABEL", "mps-demo"),
                ("MPS_HSM__MODULE_PATH", "/opt/pkcs11/module.so"),
                ("MPS_HSM__PIN_FILE", "/run/secrets/pin"),
                ("MPS_HSM__KEYS__SIGNING", "ca-root"),
                ("MPS_HSM_POOL_SIZE", "9"),
            ]),
        )
        .unwrap();
        assert_eq!(config.pool_size, 4);
        assert_eq!(config.token_label, "mps-demo");
        assert_eq!(config.module_path, PathBuf::from("/opt/pkcs11/module.so"));
        assert_eq!(config.pin_file, Some(PathBuf::from("/run/secrets/pin")));
        assert_eq!(config.keys.signing, "ca-root");
        assert_eq!(config.keys.issuer_master, "mps-imk");
    }

    #[test]
    fn unknown_or_bad_environment_overrides_are_refused() {
        let err = HsmConfig::from_parts("", vars(&[("MPS_HSM__PIN", "123456")])).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::EnvOverride(_)), "{err:?}");
        assert!(text.contains("MPS_HSM__PIN") && text.contains("unknown field `pin`"), "{text}");
        assert!(!text.contains("123456"), "the error must not echo the PIN: {text}");
        let err = HsmConfig::from_parts("", vars(&[("MPS_HSM__KEYS__SIGN", "x")])).unwrap_err();
        assert!(err.to_string().contains("MPS_HSM__KEYS__SIGN"), "{err}");
        let err = HsmConfig::from_parts("", vars(&[("MPS_HSM__POOL_SIZE", "many")])).unwrap_err();
        assert!(err.to_string().contains("MPS_HSM__POOL_SIZE"), "{err}");
        let err = HsmConfig::from_parts("", vars(&[("MPS_HSM__POOL_SIZE", "65")])).unwrap_err();
        assert!(matches!(err, ConfigError::Range { field: "pool_size", .. }), "{err:?}");
    }

    #[test]
    fn additional_hsms_take_the_first_ones_settings_unless_they_set_their_own() {
        let text = r#"
token_label = "bank"
pin_file = "/run/secrets/pin"
pool_size = 3
op_timeout_ms = 500

[[additional]]
module_path = "/opt/hsm-b/pkcs11.so"

[[additional]]
module_path = "/opt/hsm-c/pkcs11.so"
token_label = "bank-c"
pin_env = "HSM_C_PIN"
pool_size = 1
"#;
        let config = HsmConfig::from_toml_str(text).unwrap();
        let members = config.members();
        assert_eq!(members.len(), 3);
        assert_eq!(members[0], HsmConfig { additional: None, ..config.clone() });
        assert_eq!(members[1].module_path, PathBuf::from("/opt/hsm-b/pkcs11.so"));
        assert_eq!(
            (members[1].token_label.as_str(), members[1].pin_file.clone(), members[1].pool_size),
            ("bank", Some(PathBuf::from("/run/secrets/pin")), 3)
        );
        // A member with a PIN source of its own does not inherit the first one's PIN file.
        assert_eq!((members[2].token_label.as_str(), members[2].pin_env.as_str()), ("bank-c", "HSM_C_PIN"));
        assert_eq!((members[2].pin_file.clone(), members[2].pool_size), (None, 1));
        assert!(members.iter().all(|m| m.op_timeout_ms == 500 && m.additional.is_none()));
        // One HSM when the key is absent.
        assert_eq!(HsmConfig::from_toml_str("").unwrap().members().len(), 1);
    }

    #[test]
    fn additional_hsms_are_refused_when_empty_duplicated_or_out_of_range() {
        let err = HsmConfig::from_toml_str("additional = []").unwrap_err();
        assert!(matches!(err, ConfigError::Range { field: "additional", .. }), "{err:?}");
        let twice = "[[additional]]\nmodule_path = \"/a.so\"\n[[additional]]\nmodule_path = \"/b.so\"\n\
                     [[additional]]\nmodule_path = \"/a.so\"\n";
        let err = HsmConfig::from_toml_str(twice).unwrap_err();
        assert!(matches!(err, ConfigError::Member { index: 2, .. }), "{err:?}");
        assert!(err.to_string().contains("additional[2]") && err.to_string().contains("twice"), "{err}");
        let first = "[[additional]]\nmodule_path = \"/usr/lib/softhsm/libsofthsm2.so\"\n";
        let err = HsmConfig::from_toml_str(first).unwrap_err();
        assert!(matches!(err, ConfigError::Member { index: 0, .. }), "{err:?}");
        let err = HsmConfig::from_toml_str("[[additional]]\nmodule_path = \"/a.so\"\npool_size = 0\n").unwrap_err();
        assert!(matches!(err, ConfigError::Member { index: 0, reason } if reason.contains("pool_size")), "{err:?}");
        let err = HsmConfig::from_toml_str("[[additional]]\nmodule_path = \"/a.so\"\ntoken_label = \"a b\"\n");
        assert!(matches!(err, Err(ConfigError::Member { index: 0, .. })), "{err:?}");
        let err = HsmConfig::from_toml_str("[[additional]]\nmodule_path = \"/a.so\"\npin = \"123456\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Toml { .. }) && !err.to_string().contains("123456"), "{err:?}");
        let err = HsmConfig::from_toml_str("[[additional]]\ntoken_label = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("module_path"), "{err}");
        let eight: String = (0..8).map(|i| format!("[[additional]]\nmodule_path = \"/m{i}.so\"\n")).collect();
        let err = HsmConfig::from_toml_str(&eight).unwrap_err();
        assert!(matches!(err, ConfigError::Range { field: "additional", .. }), "{err:?}");
    }

    #[test]
    fn additional_hsms_can_come_from_the_environment() {
        let config = HsmConfig::from_parts(
            "token_label = \"bank\"\n",
            vars(&[
                ("MPS_HSM__ADDITIONAL", r#"[{ module_path = "/opt/b.so", token_label = "bank-b" }]"#),
                ("MPS_HSM__POOL_SIZE", "4"),
            ]),
        )
        .unwrap();
        let members = config.members();
        assert_eq!(members.len(), 2);
        assert_eq!((members[1].token_label.as_str(), members[1].pool_size), ("bank-b", 4));
        let err = HsmConfig::from_parts("", vars(&[("MPS_HSM__ADDITIONAL", "[]")])).unwrap_err();
        assert!(matches!(err, ConfigError::Range { field: "additional", .. }), "{err:?}");
    }

    #[test]
    fn file_errors_name_their_line() {
        let err = HsmConfig::from_toml_str("token_label = \"bank\"\n\npool_sise = 3\n").unwrap_err();
        assert!(matches!(err, ConfigError::Toml { line: 3, .. }), "{err:?}");
    }

    #[test]
    fn pin_never_prints_and_file_pin_drops_the_line_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "s3cret-pin\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        // A PIN file others may read is refused, with the fix in the message and no PIN.
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = Pin::from_file(&path).unwrap_err();
            assert!(matches!(err, ConfigError::PinFilePermissions { .. }), "{mode:o}: {err:?}");
            assert!(err.to_string().contains("chmod 600") && !err.to_string().contains("s3cret"), "{err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pin = Pin::from_file(&path).unwrap();
        assert_eq!(format!("{pin:?}"), "Pin(<redacted>)");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(Pin::from_file(&path), Err(ConfigError::PinMalformed { .. })));
        assert!(matches!(Pin::from_env("MPS_HSM_TEST_SURELY_UNSET_VARIABLE"), Err(ConfigError::PinEnvMissing { .. })));
    }
}
