//! Fuzz target: the configuration loader as authz runs it at start-up: TOML text with
//! `MPS_AUTHZ__*` environment overrides, merged, typed into `AuthzConfig` and checked
//! (`AuthzConfig::from_parts`), and the shared typed loader `mps_protocol::config::parse` that
//! blames the file by line or an override by name.
//!
//! Input: the TOML text, then up to `OVERRIDES_MAX` overrides, each after a NUL byte, as
//! `SECTION__KEY=value` (the `MPS_AUTHZ__` prefix is added, so mutations stay overrides).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mps_authz::config::{AuthzConfig, ENV_PREFIX};

/// Most overrides taken from one input.
const OVERRIDES_MAX: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let mut parts = input.split('\0');
    let text = parts.next().unwrap_or_default();
    let vars: Vec<(String, String)> = parts
        .take(OVERRIDES_MAX)
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            (format!("{ENV_PREFIX}__{name}"), value.to_owned())
        })
        .collect();
    let checked = AuthzConfig::from_parts(text, vars.clone());
    let typed = mps_protocol::config::parse::<AuthzConfig>(text, ENV_PREFIX, vars);
    // The same merged document: what the checked loader accepts, the typed one accepts too.
    if checked.is_ok() {
        assert!(typed.is_ok(), "from_parts accepted what config::parse refused: {:?}", typed.err());
    }
    // An error's text is what an operator reads; building it must not fail either.
    if let Err(error) = typed {
        let _ = error.to_string();
    }
});
