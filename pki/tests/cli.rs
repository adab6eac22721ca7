//! The `pki` command end to end: init, issue for every role, show, revoke, crl, with the real
//! `openssl verify` on what it writes, and clear refusals of bad requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

fn pki(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pki")).args(args).current_dir(cwd).env_remove("MPS_PKI_CONFIG").output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn ok(args: &[&str], cwd: &Path) -> String {
    let output = pki(args, cwd);
    assert!(output.status.success(), "pki {args:?} failed: {}", text(&output));
    text(&output)
}

fn fails(args: &[&str], cwd: &Path) -> String {
    let output = pki(args, cwd);
    assert!(!output.status.success(), "pki {args:?} should fail: {}", text(&output));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn openssl_verify(cwd: &Path, chain_file: &str, purpose: &str) -> (bool, String) {
    // openssl verify checks the first certificate of the file: the leaf.
    let output = Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile", "ca/root.crt", "-untrusted", "ca/intermediate.crt"])
        .args(["-CRLfile", "ca/crls.pem", "-crl_check_all", "-purpose", purpose, chain_file])
        .current_dir(cwd)
        .output()
        .unwrap();
    (output.status.success(), text(&output))
}

fn serial_of(show_output: &str) -> String {
    show_output.lines().find_map(|line| line.trim().strip_prefix("serial:")).unwrap().trim().to_owned()
}

#[test]
fn init_issue_show_revoke_crl() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    assert!(ok(&["--help"], cwd).contains("issue"));
    ok(&["init", "--dir", "ca"], cwd);
    let again = fails(&["init", "--dir", "ca"], cwd);
    assert!(again.contains("already holds a CA"), "{again}");

    ok(
        &[
            "issue",
            "authz-server",
            "--dir",
            "ca",
            "--name",
            "authz",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--out",
            "authz",
        ],
        cwd,
    );
    ok(&["issue", "gateway-server", "--dir", "ca", "--name", "gateway", "--dns", "gateway.test", "--out", "gws"], cwd);
    ok(&["issue", "gateway-client", "--dir", "ca", "--name", "gateway", "--out", "gwc"], cwd);
    ok(&["issue", "merchant", "--dir", "ca", "--name", "Shop", "--merchant-id", "SHOP-001", "--out", "shop"], cwd);
    ok(&["issue", "bank-signing", "--dir", "ca", "--name", "Bank", "--iin", "123456", "--out", "bank"], cwd);

    for (file, purpose) in [
        ("authz.crt", "sslserver"),
        ("gws.crt", "sslserver"),
        ("gwc.crt", "sslclient"),
        ("shop.crt", "sslclient"),
        ("bank.crt", "any"),
    ] {
        let (accepted, output) = openssl_verify(cwd, file, purpose);
        assert!(accepted, "{file}: {output}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["shop.key", "ca/root.key", "ca/intermediate.key"] {
            let mode = std::fs::metadata(cwd.join(key)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
    }

    let shown = ok(&["show", "shop.crt"], cwd);
    assert!(shown.contains("merchant id: SHOP-001"), "{shown}");
    assert!(shown.contains("role:        merchant (2.25.257204730236683699390176674850572015653.1.4)"), "{shown}");
    assert!(shown.contains("certificate 2 of 2"), "{shown}");
    let bank_shown = ok(&["show", "bank.crt"], cwd);
    assert!(bank_shown.contains("bank iin:    123456"), "{bank_shown}");

    let serial = serial_of(&shown);
    let revoked = ok(&["revoke", "--dir", "ca", "--serial", &serial, "--reason", "key-compromise"], cwd);
    assert!(revoked.contains("revoked serial"), "{revoked}");
    let (accepted, output) = openssl_verify(cwd, "shop.crt", "sslclient");
    assert!(!accepted && output.contains("revoked"), "{output}");
    let twice = fails(&["revoke", "--dir", "ca", "--serial", &serial], cwd);
    assert!(twice.contains("revoked already"), "{twice}");

    let crl_before = std::fs::read(cwd.join("ca/intermediate.crl")).unwrap();
    ok(&["crl", "--dir", "ca"], cwd);
    let crl_after = std::fs::read(cwd.join("ca/intermediate.crl")).unwrap();
    assert_ne!(crl_before, crl_after, "a new CRL (new number) is written");
    let (accepted, _) = openssl_verify(cwd, "bank.crt", "any");
    assert!(accepted);
    let (accepted, _) = openssl_verify(cwd, "shop.crt", "sslclient");
    assert!(!accepted, "the revocation survives the regeneration");
}

#[test]
fn bad_requests_say_what_to_do() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let no_ca =
        fails(&["issue", "merchant", "--dir", "nowhere", "--name", "x", "--merchant-id", "M", "--out", "m"], cwd);
    assert!(no_ca.contains("pki init --dir nowhere"), "{no_ca}");
    ok(&["init", "--dir", "ca"], cwd);

    let cases: [(&[&str], &str); 9] = [
        (
            &["issue", "authz-server", "--dir", "ca", "--name", "authz", "--out", "a"],
            "needs at least one --dns or --ip",
        ),
        (&["issue", "merchant", "--dir", "ca", "--name", "Shop", "--out", "m"], "--merchant-id is required"),
        (
            &["issue", "merchant", "--dir", "ca", "--name", "Shop", "--merchant-id", "1234567890123456", "--out", "m"],
            "merchant id must be",
        ),
        (
            &["issue", "bank-signing", "--dir", "ca", "--name", "Bank", "--iin", "12345", "--out", "b"],
            "6 decimal digits",
        ),
        (
            &["issue", "gateway-client", "--dir", "ca", "--name", "gw", "--merchant-id", "M", "--out", "g"],
            "gateway-client certificates take no --merchant-id; --merchant-id is only for merchant certificates",
        ),
        (
            &[
                "issue",
                "bank-signing",
                "--dir",
                "ca",
                "--name",
                "Bank",
                "--iin",
                "123456",
                "--dns",
                "b.test",
                "--out",
                "b",
            ],
            "bank-signing certificates take no --dns",
        ),
        (&["issue", "bank-signing", "--dir", "ca", "--name", "Bank", "--out", "b"], "--iin is required"),
        (&["issue", "gateway-client", "--dir", "ca", "--name", "gw", "--days", "20000", "--out", "g"], "validity"),
        (&["revoke", "--dir", "ca", "--serial", "abcdef"], "no certificate with serial abcdef"),
    ];
    for (args, expected) in cases {
        let message = fails(args, cwd);
        assert!(message.contains(expected), "{args:?}: {message}");
    }
    for refused in ["a.key", "m.key", "b.key", "g.key"] {
        assert!(!cwd.join(refused).exists(), "nothing written for refused requests: {refused}");
    }

    ok(&["issue", "gateway-client", "--dir", "ca", "--name", "gw", "--out", "g"], cwd);
    let exists = fails(&["issue", "gateway-client", "--dir", "ca", "--name", "gw", "--out", "g"], cwd);
    assert!(exists.contains("exists already"), "{exists}");
    let time = fails(
        &[
            "issue",
            "gateway-client",
            "--dir",
            "ca",
            "--name",
            "gw",
            "--not-before",
            "yesterday",
            "--not-after",
            "2030-01-01T00:00:00Z",
            "--out",
            "t",
        ],
        cwd,
    );
    assert!(time.contains("RFC 3339"), "{time}");
}

#[test]
fn validity_windows_and_csrs_from_the_command_line() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    ok(&["init", "--dir", "ca"], cwd);
    ok(
        &[
            "issue",
            "merchant",
            "--dir",
            "ca",
            "--name",
            "Old",
            "--merchant-id",
            "OLD",
            "--not-before",
            "2020-01-01T00:00:00Z",
            "--not-after",
            "2021-01-01T00:00:00Z",
            "--out",
            "old",
        ],
        cwd,
    );
    let shown = ok(&["show", "old.crt"], cwd);
    assert!(shown.contains("not after:   2021-01-01T00:00:00Z"), "{shown}");
    let (accepted, output) = openssl_verify(cwd, "old.crt", "sslclient");
    assert!(!accepted && output.contains("expired"), "{output}");

    // A CSR made elsewhere (here: by openssl) is certified without its key ever reaching pki.
    let status = Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
        .args(["-keyout", "ext.key", "-out", "ext.csr", "-subj", "/CN=external"])
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", text(&status));
    ok(&["issue", "gateway-client", "--dir", "ca", "--name", "external", "--csr", "ext.csr", "--out", "ext"], cwd);
    assert!(!cwd.join("ext.key.pem").exists());
    let (accepted, output) = openssl_verify(cwd, "ext.crt", "sslclient");
    assert!(accepted, "{output}");
    // The certificate is for the CSR's key.
    let cert_key = Command::new("openssl")
        .args(["x509", "-in", "ext.crt", "-noout", "-pubkey"])
        .current_dir(cwd)
        .output()
        .unwrap();
    let csr_key =
        Command::new("openssl").args(["req", "-in", "ext.csr", "-noout", "-pubkey"]).current_dir(cwd).output().unwrap();
    assert_eq!(cert_key.stdout, csr_key.stdout);
}
