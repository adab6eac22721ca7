//! Configuration overlay shared by every binary: a TOML document with environment overrides.
//!
//! [`overlay`] and [`parse`] are pure: the caller passes the file's text and the environment's
//! variables. A variable `<PREFIX>__<SECTION>__<KEY>=value` (double underscores separate levels,
//! names are matched case-insensitively against the lower-case TOML keys) replaces or adds that
//! key. The value is read as a TOML literal when it parses as one (`8443`, `true`, `["a", "b"]`)
//! and as a string otherwise, so `MPS_AUTHZ__SERVER__LISTEN=127.0.0.1:8443` needs no quotes.
//!
//! [`parse`] adds the typed step every binary needs (merge, then deserialize, blaming the file
//! by line or the override by name), and [`env_overrides`] is the one place that reads the
//! process environment for it. Every binary's overrides use this style: `MPS_AUTHZ__*` (authz
//! calls [`overlay`] itself), `MPS_HSM__*`, `MPS_PKI__*` and `MPS_SIM__*` (through [`parse`]).

use serde::de::DeserializeOwned;
use toml::Value;
use toml::map::Map;

/// Why a configuration could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML text does not parse.
    #[error("configuration is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    /// An override names a key under something that is not a table.
    #[error("environment override {variable} names a key under a value that is not a table")]
    NotATable {
        /// The variable's name.
        variable: String,
    },
    /// An override's name or value is not UTF-8.
    #[error("environment variable {variable} is not valid UTF-8")]
    NotUnicode {
        /// The variable's name, lossily decoded.
        variable: String,
    },
    /// The file alone does not parse or does not fit the configuration (unknown key, wrong
    /// type). The file's text is never quoted, so a secret typed into it by mistake is not echoed.
    #[error("configuration file is invalid{}: {message}", line_note(*.line))]
    File {
        /// 1-based line of the error, 0 when unknown.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// The file fits, but the environment overrides make it not fit.
    #[error("environment override {variables} is invalid: {message}")]
    Override {
        /// The variable (or, when no single one is at fault, the variables) to blame.
        variables: String,
        /// The parser's message (names the key, for example "unknown field `pin`").
        message: String,
    },
}

fn line_note(line: usize) -> String {
    if line == 0 { String::new() } else { format!(" at line {line}") }
}

/// Parses `text` (may be empty) and applies every variable of `vars` that starts with
/// `prefix` followed by `__`. Returns the merged document, ready for `Value::try_into`.
pub fn overlay(
    text: &str,
    prefix: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Value, ConfigError> {
    let mut root: Value = if text.trim().is_empty() { Value::Table(Map::new()) } else { toml::from_str(text)? };
    let marker = format!("{prefix}__");
    let mut overrides: Vec<(String, String)> =
        vars.into_iter().filter(|(name, _)| name.starts_with(&marker) && name.len() > marker.len()).collect();
    overrides.sort();
    for (name, raw) in overrides {
        let path: Vec<String> = name[marker.len()..].split("__").map(str::to_ascii_lowercase).collect();
        set_path(&mut root, &path, parse_literal(&raw)).map_err(|()| ConfigError::NotATable { variable: name })?;
    }
    Ok(root)
}

/// The variables of the process environment that [`overlay`] reads for `prefix`: those whose
/// name starts with `<prefix>__`. No other variable is looked at, so a non-UTF-8 variable
/// elsewhere in the environment does no harm; one of ours is refused.
pub fn env_overrides(prefix: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let marker = format!("{prefix}__");
    let mut found = Vec::new();
    for (name, value) in std::env::vars_os() {
        if !name.as_encoded_bytes().starts_with(marker.as_bytes()) {
            continue;
        }
        let variable = name.to_string_lossy().into_owned();
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => found.push((name, value)),
            _ => return Err(ConfigError::NotUnicode { variable }),
        }
    }
    Ok(found)
}

/// [`overlay`], then the merged document as a `T` (whose `deny_unknown_fields` refuses unknown
/// keys from the file and from the environment alike). A failure is blamed on the file, with
/// its line, when the file alone is already wrong ([`ConfigError::File`]); else on the override
/// that fails on its own, or on all of them ([`ConfigError::Override`]). Meant for configs
/// whose keys all have defaults: a required key supplied only by an override is blamed on the
/// file when something else is wrong too.
pub fn parse<T: DeserializeOwned>(
    text: &str,
    prefix: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let marker = format!("{prefix}__");
    let overrides: Vec<(String, String)> =
        vars.into_iter().filter(|(name, _)| name.starts_with(&marker) && name.len() > marker.len()).collect();
    let merged = overlay(text, prefix, overrides.iter().cloned()).map_err(|error| match error {
        ConfigError::Toml(error) => file_error(text, &error),
        other => other,
    })?;
    let error = match merged.try_into::<T>() {
        Ok(config) => return Ok(config),
        Err(error) => error,
    };
    if let Err(file) = toml::from_str::<T>(text) {
        return Err(file_error(text, &file));
    }
    let alone_fails = |(name, value): &&(String, String)| {
        overlay(text, prefix, [(name.clone(), value.clone())]).map_or(true, |merged| merged.try_into::<T>().is_err())
    };
    let culprits: Vec<&str> = overrides.iter().filter(alone_fails).map(|(name, _)| name.as_str()).collect();
    let variables = if culprits.is_empty() {
        overrides.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(", ")
    } else {
        culprits.join(", ")
    };
    Err(ConfigError::Override { variables, message: error.message().to_owned() })
}

fn file_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let newlines_before = |start: usize| text.bytes().take(start).filter(|byte| *byte == b'\n').count();
    let line = error.span().map_or(0, |span| newlines_before(span.start) + 1);
    ConfigError::File { line, message: error.message().to_owned() }
}

fn parse_literal(raw: &str) -> Value {
    toml::from_str::<Map<String, Value>>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

fn set_path(node: &mut Value, path: &[String], value: Value) -> Result<(), ()> {
    let Value::Table(table) = node else { return Err(()) };
    match path {
        [] => Err(()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let child = table.entry(first.clone()).or_insert_with(|| Value::Table(Map::new()));
            set_path(child, rest, value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn env_overrides_replace_and_add_keys() {
        let text = "[server]\nlisten = \"0.0.0.0:1\"\nhttp2 = true\n";
        let merged = overlay(
            text,
            "MPS_AUTHZ",
            vars(&[
                ("MPS_AUTHZ__SERVER__LISTEN", "127.0.0.1:8443"),
                ("MPS_AUTHZ__SERVER__HTTP2", "false"),
                ("MPS_AUTHZ__LEDGER__BATCH_MAX", "32"),
                ("MPS_AUTHZ__SERVER__CLIENT_CA", "[\"a.pem\", \"b.pem\"]"),
                ("OTHER__SERVER__LISTEN", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(merged["server"]["listen"].as_str(), Some("127.0.0.1:8443"));
        assert_eq!(merged["server"]["http2"].as_bool(), Some(false));
        assert_eq!(merged["ledger"]["batch_max"].as_integer(), Some(32));
        assert_eq!(merged["server"]["client_ca"].as_array().map(Vec::len), Some(2));
        let sections: Vec<&String> = merged.as_table().unwrap().keys().collect();
        assert_eq!(sections, ["ledger", "server"], "another prefix's variable added nothing");
    }

    #[test]
    fn a_variable_named_only_by_the_prefix_is_ignored() {
        let merged = overlay("", "P", vars(&[("P__", "1")])).unwrap();
        assert!(merged.as_table().unwrap().is_empty(), "{merged:?}");
        let sample: Sample = parse("", "P", vars(&[("P__", "1")])).unwrap();
        assert_eq!(sample.size, 2);
    }

    /// Run by `env_overrides_reads_our_prefix_and_nothing_else` in a child process whose
    /// environment it prepares: setting variables in this process would be `unsafe`.
    #[test]
    #[ignore = "run in a prepared child process by env_overrides_reads_our_prefix_and_nothing_else"]
    fn env_overrides_in_a_prepared_environment() {
        let mut found = env_overrides("MPS_CONFIG_TEST").unwrap();
        found.sort();
        assert_eq!(found, vars(&[("MPS_CONFIG_TEST__A", "1"), ("MPS_CONFIG_TEST__B__C", "x")]));
    }

    #[test]
    fn env_overrides_reads_our_prefix_and_nothing_else() {
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "config::tests::env_overrides_in_a_prepared_environment"])
            .env("MPS_CONFIG_TEST__A", "1")
            .env("MPS_CONFIG_TEST__B__C", "x")
            .env("MPS_CONFIG_TESTS__D", "another prefix")
            .env("OTHER__MPS_CONFIG_TEST__E", "another prefix")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&child.stdout);
        assert!(child.status.success(), "{stdout}");
        assert!(stdout.contains("1 passed"), "the child ran no test: {stdout}");
    }

    #[test]
    fn a_file_error_names_its_line_when_known() {
        let at_line = ConfigError::File { line: 2, message: "unknown field".to_owned() };
        assert_eq!(at_line.to_string(), "configuration file is invalid at line 2: unknown field");
        let no_line = ConfigError::File { line: 0, message: "unknown field".to_owned() };
        assert_eq!(no_line.to_string(), "configuration file is invalid: unknown field");
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        size: u32,
        name: String,
        inner: Inner,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        label: String,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self { size: 2, name: "a".to_owned(), inner: Inner::default() }
        }
    }

    #[test]
    fn parse_applies_overrides_to_a_typed_config() {
        let sample: Sample =
            parse("size = 3\n", "P", vars(&[("P__NAME", "b"), ("P__INNER__LABEL", "c"), ("Q__SIZE", "9")])).unwrap();
        assert_eq!((sample.size, sample.name.as_str(), sample.inner.label.as_str()), (3, "b", "c"));
        let sample: Sample = parse("", "P", vars(&[("P__SIZE", "7")])).unwrap();
        assert_eq!(sample.size, 7);
    }

    #[test]
    fn parse_blames_the_file_by_line_and_the_override_by_name() {
        let error = parse::<Sample>("size = 3\nsecret = \"hunter2\"\n", "P", vars(&[])).unwrap_err();
        assert!(matches!(error, ConfigError::File { line: 2, .. }), "{error:?}");
        assert!(!error.to_string().contains("hunter2"), "{error}");
        let error = parse::<Sample>("size = [\n", "P", vars(&[])).unwrap_err();
        assert!(matches!(error, ConfigError::File { .. }), "{error:?}");
        let error = parse::<Sample>("size = 3\n", "P", vars(&[("P__NAME", "b"), ("P__COLOUR", "red")])).unwrap_err();
        let ConfigError::Override { variables, message } = &error else { panic!("{error:?}") };
        assert_eq!(variables, "P__COLOUR");
        assert!(message.contains("colour"), "{message}");
        let error = parse::<Sample>("", "P", vars(&[("P__SIZE", "many")])).unwrap_err();
        assert!(matches!(&error, ConfigError::Override { variables, .. } if variables == "P__SIZE"), "{error:?}");
    }

    #[test]
    fn override_under_a_scalar_is_refused() {
        let err = overlay("a = 1", "P", vars(&[("P__A__B", "2")])).unwrap_err();
        assert!(matches!(err, ConfigError::NotATable { .. }));
        assert!(overlay("not toml [", "P", vars(&[])).is_err());
    }
}
