//! Configuration overlay shared by every binary: a TOML document with environment overrides.
//!
//! Pure: the caller passes the file's text and the environment's variables. A variable
//! `<PREFIX>__<SECTION>__<KEY>=value` (double underscores separate levels, names are matched
//! case-insensitively against the lower-case TOML keys) replaces or adds that key. The value is
//! read as a TOML literal when it parses as one (`8443`, `true`, `["a", "b"]`) and as a string
//! otherwise, so `MPS_AUTHZ__SERVER__LISTEN=127.0.0.1:8443` needs no quotes.

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
    }

    #[test]
    fn override_under_a_scalar_is_refused() {
        let err = overlay("a = 1", "P", vars(&[("P__A__B", "2")])).unwrap_err();
        assert!(matches!(err, ConfigError::NotATable { .. }));
        assert!(overlay("not toml [", "P", vars(&[])).is_err());
    }
}
