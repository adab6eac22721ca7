//! Key custody as the `authz` binary lives it, on a real SoftHSM token:
//! - the PIN given in the environment is gone from /proc/<pid>/environ of the running server
//!   (which still logged in with it);
//! - the server refuses to start when the KEK it would use is public or extractable, and says
//!   which key and which attribute.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mps_hsm::testing::{TestToken, USER_PIN, make_weak_kek};
use mps_tests::{Bank, BankFiles};

/// The bank's configuration with the PIN taken from `MPS_HSM_PIN` instead of the PIN file.
async fn config_with_pin_in_environment() -> (BankFiles, PathBuf) {
    let files = Bank::builder().files().await;
    let token = TestToken::shared().unwrap();
    let pin_file = token.config.pin_file.as_ref().unwrap();
    let pin_line = format!("pin_file = \"{}\"", pin_file.display());
    assert!(files.config_text.contains(&pin_line));
    let text = files.config_text.replace(&pin_line, "pin_env = \"MPS_HSM_PIN\"");
    let path = files.dir.path().join("authz.toml");
    std::fs::write(&path, text).unwrap();
    (files, path)
}

fn authz(config: &Path, overrides: &[(&str, &str)]) -> Child {
    let token = TestToken::shared().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_authz"));
    command
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("MPS_HSM_PIN", USER_PIN)
        .env("SOFTHSM2_CONF", &token.softhsm_conf)
        .env_remove("MPS_AUTHZ_CONFIG")
        .env("MPS_AUTHZ__LOG__FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in overrides {
        command.env(key, value);
    }
    command.spawn().unwrap()
}

/// The tests of this binary run one at a time: SoftHSM's file store answered
/// CKR_GENERAL_ERROR to a token-object creation while another process opened the same token.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pin_is_gone_from_the_environment_of_a_running_server() {
    let _serial = one_at_a_time().await;
    let (_files, config) = config_with_pin_in_environment().await;
    let mut server = authz(&config, &[]);
    let stdout = server.stdout.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("authorization server ready") {
                let _ = ready_tx.send(());
            }
        }
    });
    let ready = ready_rx.recv_timeout(Duration::from_secs(60));
    let environ = std::fs::read(format!("/proc/{}/environ", server.id()));
    let _ = server.kill();
    let output = server.wait_with_output().unwrap();
    assert!(ready.is_ok(), "the server did not become ready: {}", String::from_utf8_lossy(&output.stderr));
    let environ = environ.unwrap();
    let contains = |needle: &[u8]| environ.windows(needle.len()).any(|w| w == needle);
    // What the test put there is there (the right process, the right file) ...
    assert!(contains(b"SOFTHSM2_CONF="), "{}", String::from_utf8_lossy(&environ));
    // ... but the PIN is not, neither its value nor its variable.
    assert!(!contains(USER_PIN.as_bytes()), "the PIN is readable in /proc/<pid>/environ");
    assert!(!contains(b"MPS_HSM_PIN="), "the PIN variable is still in /proc/<pid>/environ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_a_public_or_extractable_kek() {
    let _serial = one_at_a_time().await;
    let (_files, config) = config_with_pin_in_environment().await;
    let token = TestToken::shared().unwrap();
    for (label, public, extractable, attribute) in
        [("weak-public-kek", true, false, "CKA_PRIVATE"), ("weak-extractable-kek", false, true, "CKA_EXTRACTABLE")]
    {
        make_weak_kek(&token.config, label, public, extractable, true).unwrap();
        let server = authz(&config, &[("MPS_AUTHZ__HSM__KEYS__KEY_ENCRYPTION", label)]);
        let output = server.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "authz started with {label}");
        assert!(stderr.contains(label) && stderr.contains(attribute), "{stderr}");
        assert!(stderr.contains("rotate-kek"), "the message says what to do: {stderr}");
    }
}

fn authz_command(config: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let token = TestToken::shared().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_authz"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("MPS_HSM_PIN", USER_PIN)
        .env("SOFTHSM2_CONF", &token.softhsm_conf)
        .env_remove("MPS_AUTHZ_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "authz {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `authz keys usage` and `authz keys rewrap` as an operator runs them after
/// `mps-hsm keys rotate-kek` (made here through the library, the same code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rewrap_command_moves_every_chain_key_and_drains_the_old_kek() {
    let _serial = one_at_a_time().await;
    let (files, config) = config_with_pin_in_environment().await;
    let token = TestToken::shared().unwrap();
    let account = "4000120000000500";
    authz_command(
        &config,
        &[
            "account",
            "create",
            "--account",
            account,
            "--holder",
            "Li Xi",
            "--currency",
            "EUR",
            "--balance",
            "10.00",
            "--password-stdin",
        ],
        Some("8642\n"),
    );
    for sim in ["8949012600000000001", "8949012600000000002", "8949012600000000003"] {
        let out = files.dir.path().join(format!("{sim}.json"));
        authz_command(
            &config,
            &[
                "sim",
                "register",
                "--sim-id",
                sim,
                "--account",
                account,
                "--transport-key",
                "mps-tk-test",
                "--out",
                out.to_str().unwrap(),
            ],
            None,
        );
    }
    let usage = authz_command(&config, &["keys", "usage"], None);
    let usage = String::from_utf8_lossy(&usage.stdout).into_owned();
    assert!(usage.contains("mps-kek ") && usage.contains("3 chain key(s)"), "{usage}");

    let (config_hsm, pin) = (token.config.clone(), token.user_pin());
    tokio::task::spawn_blocking(move || mps_hsm::ceremony::rotate_kek(&config_hsm, &pin)).await.unwrap().unwrap();
    let rewrap = authz_command(&config, &["keys", "rewrap", "--batch-size", "2"], None);
    let rewrap = String::from_utf8_lossy(&rewrap.stdout).into_owned();
    assert!(rewrap.contains("3 moved"), "{rewrap}");
    assert!(rewrap.contains("mps-kek-2") && rewrap.contains("mps-kek              drained"), "{rewrap}");
    let usage = authz_command(&config, &["keys", "usage"], None);
    let usage = String::from_utf8_lossy(&usage.stdout).into_owned();
    assert!(usage.contains("KEK version 2") && !usage.contains("mps-kek  "), "{usage}");
    let (config_hsm, pin) = (token.config.clone(), token.user_pin());
    let retired = tokio::task::spawn_blocking(move || mps_hsm::ceremony::retire_kek(&config_hsm, &pin, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retired, "mps-kek");
}

/// A wrong PIN or a module that does not load stops authz at start with an error that names
/// the cause and exit status 1: no panic, no retry loop (retrying a wrong PIN would lock it on
/// most HSMs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_or_a_missing_module_stops_authz_with_a_clear_error() {
    let _serial = one_at_a_time().await;
    let (_files, config) = config_with_pin_in_environment().await;
    let cases: [(&[(&str, &str)], &str); 2] = [
        (&[("MPS_HSM_PIN", "99999999")], "PIN"),
        (&[("MPS_AUTHZ__HSM__MODULE_PATH", "/nonexistent/libpkcs11.so")], "/nonexistent/libpkcs11.so"),
    ];
    for (overrides, named) in cases {
        let child = authz(&config, overrides);
        let output = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
        )
        .await
        .unwrap_or_else(|_| panic!("authz with {overrides:?} did not stop"))
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{overrides:?}: {stderr}{stdout}");
        assert!(!stderr.contains("panicked") && !stdout.contains("panicked"), "{stderr}{stdout}");
        assert!(stderr.contains(named), "{overrides:?}: the error must name {named}: {stderr}");
        assert!(!stderr.contains("99999999"), "the PIN must not appear: {stderr}");
    }
}
