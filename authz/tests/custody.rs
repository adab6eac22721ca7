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
use mps_tests::{BankFiles, BankOptions};

/// The bank's configuration with the PIN taken from `MPS_HSM_PIN` instead of the PIN file.
async fn config_with_pin_in_environment() -> (BankFiles, PathBuf) {
    let files = BankFiles::create(&BankOptions::default()).await;
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
        make_weak_kek(&token.config, label, public, extractable).unwrap();
        let server = authz(&config, &[("MPS_AUTHZ__HSM__KEYS__KEY_ENCRYPTION", label)]);
        let output = server.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "authz started with {label}");
        assert!(stderr.contains(label) && stderr.contains(attribute), "{stderr}");
        assert!(stderr.contains("rotate-kek"), "the message says what to do: {stderr}");
    }
}
