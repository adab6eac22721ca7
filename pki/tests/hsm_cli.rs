//! The `pki` command with keys in a real SoftHSM token: the intermediate CA key lives in the HSM
//! (issue, revoke and CRLs are signed there), and `issue bank-signing --hsm-config` certifies
//! `mps-sign` without a key file. Checked with the real `openssl`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use mps_hsm::testing::TestToken;

const CA_LABEL: &str = "mps-ca-intermediate-test";

fn pki(args: &[&str], cwd: &Path, token: &TestToken) -> Output {
    pki_env(args, cwd, token, &[])
}

/// Runs `pki` with `env` added; config overrides from the caller's shell (`MPS_HSM__*`,
/// `MPS_PKI__*`, for example from `eval "$(hsm/scripts/test-token.sh)"`) are removed first.
fn pki_env(args: &[&str], cwd: &Path, token: &TestToken, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pki"));
    command.args(args).current_dir(cwd).env("SOFTHSM2_CONF", &token.softhsm_conf).env_remove("MPS_PKI_CONFIG");
    for (name, _) in std::env::vars_os() {
        let bytes = name.as_encoded_bytes();
        if bytes.starts_with(b"MPS_HSM__") || bytes.starts_with(b"MPS_PKI__") {
            command.env_remove(&name);
        }
    }
    command.envs(env.iter().copied()).output().unwrap()
}

fn ok(args: &[&str], cwd: &Path, token: &TestToken) -> String {
    let output = pki(args, cwd, token);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "pki {args:?}: {text}");
    text
}

fn openssl(args: &[&str], cwd: &Path) -> (bool, String) {
    let output = Command::new("openssl").args(args).current_dir(cwd).output().unwrap();
    (
        output.status.success(),
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
    )
}

fn verify(cwd: &Path, file: &str, purpose: &str) -> (bool, String) {
    openssl(
        &[
            "verify",
            "-x509_strict",
            "-CAfile",
            "ca/root.crt",
            "-untrusted",
            "ca/intermediate.crt",
            "-CRLfile",
            "ca/crls.pem",
            "-crl_check_all",
            "-purpose",
            purpose,
            file,
        ],
        cwd,
    )
}

#[test]
fn ca_key_and_bank_key_in_the_hsm() {
    let token = TestToken::shared().unwrap();
    // The HSM key ceremony creates the CA's P-256 pair under its own label (the token's other
    // keys exist already and are kept).
    let mut ceremony_config = token.config.clone();
    ceremony_config.keys.signing = CA_LABEL.to_owned();
    mps_hsm::ceremony::init_keys(&ceremony_config, &token.user_pin(), &[]).unwrap();

    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let pin_file = token.config.pin_file.as_ref().unwrap();
    let hsm_toml = format!(
        "module_path = {:?}\ntoken_label = {:?}\npin_file = {:?}\n",
        token.config.module_path.display().to_string(),
        token.config.token_label,
        pin_file.display().to_string()
    );
    std::fs::write(cwd.join("hsm.toml"), hsm_toml).unwrap();

    let init =
        ok(&["init", "--dir", "ca", "--ca-hsm-config", "hsm.toml", "--intermediate-key-label", CA_LABEL], cwd, token);
    assert!(init.contains(&format!("label {CA_LABEL}")), "{init}");
    assert!(cwd.join("ca/root.key").exists());
    assert!(!cwd.join("ca/intermediate.key").exists(), "the intermediate key stays in the HSM");

    // Without the HSM config the command says what to pass.
    let refused = pki(&["issue", "gateway-client", "--dir", "ca", "--name", "gw", "--out", "gw"], cwd, token);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--ca-hsm-config"));

    ok(
        &[
            "issue",
            "merchant",
            "--dir",
            "ca",
            "--name",
            "Shop",
            "--merchant-id",
            "SHOP-9",
            "--out",
            "shop",
            "--ca-hsm-config",
            "hsm.toml",
        ],
        cwd,
        token,
    );
    let (accepted, output) = verify(cwd, "shop.crt", "sslclient");
    assert!(accepted, "{output}");

    // The HSM config file gets the MPS_HSM__* overrides mps-hsm reads: a wrong token label
    // from the environment wins over the file's, and a misspelt key is refused by name.
    let bank_args = |out: &'static str| {
        [
            "issue",
            "bank-signing",
            "--dir",
            "ca",
            "--name",
            "Bank 123456",
            "--iin",
            "123456",
            "--hsm-config",
            "hsm.toml",
            "--out",
            out,
            "--ca-hsm-config",
            "hsm.toml",
        ]
    };
    let refused = pki_env(&bank_args("bank-refused"), cwd, token, &[("MPS_HSM__TOKEN_LABEL", "no-such-token")]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("cannot use the HSM"), "{stderr}");
    let refused = pki_env(&bank_args("bank-refused"), cwd, token, &[("MPS_HSM__TOKN_LABEL", "x")]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("MPS_HSM__TOKN_LABEL"), "{stderr}");
    assert!(!cwd.join("bank-refused.csr").exists() && !cwd.join("bank-refused.crt").exists());

    // The bank's certificate for mps-sign: request signed in the HSM, no key file.
    ok(&bank_args("bank"), cwd, token);
    assert!(cwd.join("bank.csr").exists() && !cwd.join("bank.key").exists());
    let (accepted, output) = verify(cwd, "bank.crt", "any");
    assert!(accepted, "{output}");
    let (_, cert_key) = openssl(&["x509", "-in", "bank.crt", "-noout", "-pubkey"], cwd);
    let (_, csr_key) = openssl(&["req", "-in", "bank.csr", "-noout", "-pubkey", "-verify"], cwd);
    assert!(csr_key.contains(cert_key.trim()), "{csr_key}\n{cert_key}");
    let hsm = mps_hsm::Hsm::connect_blocking(token.config.clone()).unwrap();
    let shown = ok(&["show", "bank.crt"], cwd, token);
    assert!(shown.contains("bank iin:    123456"), "{shown}");
    let leaf = mps_pki::pem::load_certificates(&cwd.join("bank.crt")).unwrap();
    let parsed = x509_parser::parse_x509_certificate(&leaf[0]).unwrap().1;
    assert_eq!(parsed.public_key().subject_public_key.data.as_ref(), hsm.signing_public_key().as_slice());

    // Revocation with the intermediate key in the HSM: the new CRL is signed there.
    let serial = ok(&["show", "shop.crt"], cwd, token)
        .lines()
        .find_map(|line| line.trim().strip_prefix("serial:").map(|s| s.trim().to_owned()))
        .unwrap();
    ok(&["revoke", "--dir", "ca", "--serial", &serial, "--ca-hsm-config", "hsm.toml"], cwd, token);
    let (accepted, output) = verify(cwd, "shop.crt", "sslclient");
    assert!(!accepted && output.contains("revoked"), "{output}");
    ok(&["crl", "--dir", "ca", "--ca-hsm-config", "hsm.toml"], cwd, token);
    let (accepted, output) = verify(cwd, "bank.crt", "any");
    assert!(accepted, "{output}");
}
