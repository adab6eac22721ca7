//! `authz check-config | head`: a reader that closes the pipe early ends authz quietly (status
//! 141, as SIGPIPE would) instead of a panic with a backtrace. Every other binary installs the
//! same hook (mps_protocol::closed_pipe) first thing in its `main`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::{Command, Stdio};

#[test]
fn check_config_into_a_closed_pipe_exits_quietly() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/authz.example.toml");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_authz"))
        .args(["--config", example, "check-config"])
        .env_remove("MPS_HSM_PIN")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(mps_protocol::closed_pipe::STATUS), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(stderr.is_empty(), "quietly: {stderr}");
}
