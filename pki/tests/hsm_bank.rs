//! The bank's signing certificate for `mps-sign` in a real SoftHSM token: the request is signed in
//! the HSM, the certificate carries exactly the token's public key, a signature made in the HSM
//! verifies with `openssl dgst -verify` against the certificate's key, and HSM-signed detached
//! JWS verify for the bank-signing role.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{TestCa, now, request};
use mps_hsm::testing::TestToken;
use mps_pki::hsm::certificate_request_pem;
use mps_pki::jws::{self, DetachedSigning};
use mps_pki::signer::{Es256Signer, signature_raw_to_der};
use mps_pki::{HsmSigner, Role, VerifyError};
use mps_protocol::Iin;
use rustls_pki_types::UnixTime;

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{command:?}: {text}");
    text
}

#[test]
fn the_bank_certificate_is_for_the_hsm_key_and_hsm_signatures_verify_with_openssl() {
    let token = TestToken::shared().unwrap();
    let signer = HsmSigner::connect_blocking(token.config.clone()).unwrap();
    assert_eq!(signer.public_key_sec1(), signer.hsm().signing_public_key());
    assert_eq!(signer.public_key_sec1()[0], 0x04);

    let mut ca = TestCa::new();
    let csr = certificate_request_pem(&signer, "MPS Scheme", "Bank 123456").unwrap();
    let issued = ca.authority.issue_from_csr(&request(Role::BankSigning), &csr, &ca.intermediate_key, now()).unwrap();
    let leaf = x509_parser::parse_x509_certificate(&issued.chain[0]).unwrap().1;
    assert_eq!(leaf.public_key().subject_public_key.data.as_ref(), signer.public_key_sec1().as_slice());

    // Write the chain and let openssl check it, then check an HSM signature against its key.
    let dir = ca.path();
    mps_pki::ca::write_issued(&dir.join("bank"), &issued, None).unwrap();
    std::fs::write(dir.join("bank.leaf.pem"), mps_pki::pem::encode_certificates(&issued.chain[..1])).unwrap();
    let (ok, output) = common::openssl_verify(&ca, &dir.join("bank.leaf.pem"), "any");
    assert!(ok, "{output}");

    let message = b"clearing file 2026-11-26, issuer 123456";
    std::fs::write(dir.join("message.bin"), message).unwrap();
    let raw = signer.sign_es256(message).unwrap();
    std::fs::write(dir.join("signature.der"), signature_raw_to_der(&raw).unwrap()).unwrap();
    let public_pem = run(Command::new("openssl").args(["x509", "-noout", "-pubkey", "-in"]).arg(dir.join("bank.crt")));
    std::fs::write(dir.join("bank.pub.pem"), public_pem).unwrap();
    let verified = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(dir.join("bank.pub.pem"))
        .arg("-signature")
        .arg(dir.join("signature.der"))
        .arg(dir.join("message.bin")));
    assert!(verified.contains("Verified OK"), "{verified}");

    // The same check fails for another message: the test can fail.
    std::fs::write(dir.join("other.bin"), b"another message").unwrap();
    let refused = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(dir.join("bank.pub.pem"))
        .arg("-signature")
        .arg(dir.join("signature.der"))
        .arg(dir.join("other.bin"))
        .output()
        .unwrap();
    assert!(!refused.status.success());

    // Our verifier accepts the chain as the bank's signing certificate, and no other role.
    let trust = ca.trust_store();
    let identity = trust.verify_now(&issued.chain, Role::BankSigning).unwrap();
    assert_eq!(identity.bank_iin.as_ref().map(Iin::as_str), Some("123456"));
    assert_eq!(trust.verify_now(&issued.chain, Role::Merchant).unwrap_err(), VerifyError::WrongUsage(Role::Merchant));

    // Detached JWS signed in the HSM (blocking form) verifies for the bank-signing role.
    let answer = br#"{"response_code":"00","auth_code":"A1B2C3"}"#;
    let signature = jws::sign_detached(answer, &issued.chain, &signer).unwrap();
    let identity = jws::verify_detached(&signature, answer, &trust, Role::BankSigning, UnixTime::now()).unwrap();
    assert_eq!(identity.serial_hex, issued.serial_hex);
    assert!(jws::verify_detached(&signature, b"{}", &trust, Role::BankSigning, UnixTime::now()).is_err());

    // The async form authz uses: prepare, sign with the pool's async call, finish.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let hsm = signer.hsm().clone();
    let signing = DetachedSigning::new(answer, &issued.chain).unwrap();
    let raw = runtime.block_on(hsm.sign_es256(signing.signing_input())).unwrap();
    let signature = signing.finish(&raw);
    assert!(jws::verify_detached(&signature, answer, &trust, Role::BankSigning, UnixTime::now()).is_ok());
}
