//! What the binary tests share: the harness's copy of the bank's authz configuration, the SIM
//! vendor's transport key file, and the flags that point `loadtest` at the bank.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};

use mps_tests::{Leaf, MERCHANT_ID, Pki};

/// Writes `config_text` to `<dir>/<name>`, naming the test token's transport key in [issuer]
/// (the harness registers payers through it), and the transport key file beside it; returns
/// (the configuration, the key file).
pub fn write_harness_files(dir: &Path, name: &str, config_text: &str, transport_key_label: &str) -> (PathBuf, PathBuf) {
    let text = config_text.replacen("[issuer]\n", &format!("[issuer]\ntransport_key = \"{transport_key_label}\"\n"), 1);
    assert_ne!(text, config_text, "the test configuration has an [issuer] section");
    let config = dir.join(name);
    std::fs::write(&config, text).unwrap();
    let transport_key_file = dir.join("vendor-transport.key");
    std::fs::write(&transport_key_file, hex::encode(mps_tests::transport_key().expose())).unwrap();
    (config, transport_key_file)
}

/// The flags for `payers` payers registered through `authz_config`, sent to `url` as the
/// gateway (`gateway`'s certificate) and signed by the test merchant whose files are in `dir`.
pub fn bank_args(
    authz_config: &Path,
    transport_key_file: &Path,
    payers: usize,
    url: &str,
    pki: &Pki,
    gateway: &Leaf,
    dir: &Path,
) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    vec![
        "--authz-config".into(),
        path(authz_config),
        "--transport-key-file".into(),
        path(transport_key_file),
        "--payers".into(),
        payers.to_string(),
        "--target".into(),
        "authz".into(),
        "--url".into(),
        url.to_owned(),
        "--scheme-ca".into(),
        path(&pki.root_file()),
        "--crl".into(),
        path(&pki.crls_file()),
        "--cert".into(),
        path(&gateway.chain_file),
        "--key".into(),
        path(&gateway.key_file),
        "--merchant-id".into(),
        MERCHANT_ID.into(),
        "--merchant-cert".into(),
        path(&dir.join("merchant.crt")),
        "--merchant-key".into(),
        path(&dir.join("merchant.key")),
    ]
}

/// Runs the `loadtest` binary with `args` on a blocking thread (the servers it loads run on the
/// test's runtime), asserts that it succeeded, and returns its standard output, printed too for
/// whoever reads a CI run.
#[allow(dead_code, reason = "not every test binary that includes this module runs loadtest so")]
pub async fn run_loadtest(args: Vec<String>) -> String {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_loadtest")).args(&args).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadtest failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    println!("{stdout}");
    stdout
}
