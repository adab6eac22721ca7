//! Detached JWS: a merchant-signed body verifies; a tampered body, the wrong role, another
//! algorithm, an oversize header, a revoked signer and a foreign key are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{TestCa, request};
use mps_pki::jws::{self, JwsError};
use mps_pki::signer::Es256Signer;
use mps_pki::{Role, SoftwareSigner, VerifyError};
use mps_protocol::MerchantId;
use rustls_pki_types::UnixTime;

const BODY: &[u8] = br#"{"merchant_id":"SHOP-001","order_no":"ORDER-000001","amount":1250,"currency":978}"#;

fn now() -> UnixTime {
    UnixTime::now()
}

#[test]
fn a_signed_body_verifies_and_names_the_merchant() {
    let mut ca = TestCa::new();
    let merchant = ca.issue("merchant", &request(Role::Merchant));
    let signer = SoftwareSigner::from_pkcs8_pem_file(&merchant.key_file).unwrap();
    let signature = jws::sign_detached(BODY, &merchant.chain(), &signer).unwrap();

    let parts: Vec<&str> = signature.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[1], "", "the payload is detached");
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["x5c"][0], STANDARD.encode(merchant.chain()[0].as_ref()));
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);

    let identity = jws::verify_detached(&signature, BODY, &ca.trust_store(), Role::Merchant, now()).unwrap();
    assert_eq!(identity.merchant_id.as_ref().map(MerchantId::as_str), Some("SHOP-001"));
    assert_eq!(identity.serial_hex, merchant.issued.serial_hex);
}

#[test]
fn tampered_payloads_and_signatures_are_refused() {
    let mut ca = TestCa::new();
    let merchant = ca.issue("merchant", &request(Role::Merchant));
    let signer = SoftwareSigner::from_pkcs8_pem(&merchant.key_pem).unwrap();
    let signature = jws::sign_detached(BODY, &merchant.chain(), &signer).unwrap();
    let trust = ca.trust_store();

    let mut tampered = BODY.to_vec();
    tampered[30] ^= 0x01;
    let error = jws::verify_detached(&signature, &tampered, &trust, Role::Merchant, now()).unwrap_err();
    assert!(matches!(error, JwsError::BadSignature), "{error:?}");

    let (head, sig) = signature.split_once("..").unwrap();
    let mut sig_bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig_bytes[10] ^= 0x80;
    let flipped = format!("{head}..{}", URL_SAFE_NO_PAD.encode(&sig_bytes));
    let error = jws::verify_detached(&flipped, BODY, &trust, Role::Merchant, now()).unwrap_err();
    assert!(matches!(error, JwsError::BadSignature), "{error:?}");
    // r = s = 0 is not a signature.
    let zero = format!("{head}..{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
    let error = jws::verify_detached(&zero, BODY, &trust, Role::Merchant, now()).unwrap_err();
    assert!(matches!(error, JwsError::BadSignature), "{error:?}");

    // An attached (non-detached) payload part is not our format.
    let attached = format!("{head}.{}.{sig}", URL_SAFE_NO_PAD.encode(BODY));
    let error = jws::verify_detached(&attached, BODY, &trust, Role::Merchant, now()).unwrap_err();
    assert!(matches!(error, JwsError::Malformed), "{error:?}");
}

#[test]
fn the_signer_must_hold_the_role_and_the_key_of_its_certificate() {
    let mut ca = TestCa::new();
    let merchant = ca.issue("merchant", &request(Role::Merchant));
    let other = ca.issue("other", &request(Role::Merchant));
    let signer = SoftwareSigner::from_pkcs8_pem(&merchant.key_pem).unwrap();
    let trust = ca.trust_store();

    // A merchant signature is not a bank signature.
    let signature = jws::sign_detached(BODY, &merchant.chain(), &signer).unwrap();
    let error = jws::verify_detached(&signature, BODY, &trust, Role::BankSigning, now()).unwrap_err();
    assert!(matches!(error, JwsError::Certificate(VerifyError::WrongUsage(Role::BankSigning))), "{error:?}");

    // Signed with one merchant's key under another merchant's certificate.
    let forged = jws::sign_detached(BODY, &other.chain(), &signer).unwrap();
    let error = jws::verify_detached(&forged, BODY, &trust, Role::Merchant, now()).unwrap_err();
    assert!(matches!(error, JwsError::BadSignature), "{error:?}");
}

#[test]
fn a_revoked_signer_is_refused() {
    let mut ca = TestCa::new();
    let merchant = ca.issue("merchant", &request(Role::Merchant));
    let signer = SoftwareSigner::from_pkcs8_pem(&merchant.key_pem).unwrap();
    let signature = jws::sign_detached(BODY, &merchant.chain(), &signer).unwrap();
    assert!(jws::verify_detached(&signature, BODY, &ca.trust_store(), Role::Merchant, now()).is_ok());
    ca.revoke(&merchant);
    let error = jws::verify_detached(&signature, BODY, &ca.trust_store(), Role::Merchant, now()).unwrap_err();
    assert!(matches!(error, JwsError::Certificate(VerifyError::Revoked)), "{error:?}");
}

/// Builds a JWS with an arbitrary header, correctly signed with `signer`.
fn with_header(header: &serde_json::Value, signer: &dyn Es256Signer) -> String {
    let header_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap());
    let input = format!("{header_b64}.{}", URL_SAFE_NO_PAD.encode(BODY));
    let signature = signer.sign_es256(input.as_bytes()).unwrap();
    format!("{header_b64}..{}", URL_SAFE_NO_PAD.encode(signature))
}

#[test]
fn other_algorithms_and_unsupported_headers_are_refused() {
    let mut ca = TestCa::new();
    let merchant = ca.issue("merchant", &request(Role::Merchant));
    let signer = SoftwareSigner::from_pkcs8_pem(&merchant.key_pem).unwrap();
    let trust = ca.trust_store();
    let x5c: Vec<String> = merchant.chain().iter().map(|der| STANDARD.encode(der.as_ref())).collect();

    // The same header with ES256 verifies: the refusals below are about the header alone.
    let good = with_header(&serde_json::json!({"alg": "ES256", "x5c": x5c}), &signer);
    assert!(jws::verify_detached(&good, BODY, &trust, Role::Merchant, now()).is_ok());

    for alg in ["HS256", "ES384", "none", "es256", "RS256"] {
        let jws_text = with_header(&serde_json::json!({"alg": alg, "x5c": x5c}), &signer);
        let error = jws::verify_detached(&jws_text, BODY, &trust, Role::Merchant, now()).unwrap_err();
        assert!(matches!(error, JwsError::UnsupportedAlgorithm), "{alg}: {error:?}");
    }
    let unencoded =
        with_header(&serde_json::json!({"alg": "ES256", "x5c": x5c, "b64": false, "crit": ["b64"]}), &signer);
    let error = jws::verify_detached(&unencoded, BODY, &trust, Role::Merchant, now()).unwrap_err();
    assert!(matches!(error, JwsError::UnsupportedHeader), "{error:?}");
    let no_chain = with_header(&serde_json::json!({"alg": "ES256"}), &signer);
    let error = jws::verify_detached(&no_chain, BODY, &trust, Role::Merchant, now()).unwrap_err();
    assert!(matches!(error, JwsError::BadX5c), "{error:?}");
}

#[test]
fn oversize_headers_and_chains_are_refused() {
    let mut ca = TestCa::new();
    let merchant = ca.issue("merchant", &request(Role::Merchant));
    let signer = SoftwareSigner::from_pkcs8_pem(&merchant.key_pem).unwrap();
    let trust = ca.trust_store();
    let x5c: Vec<String> = merchant.chain().iter().map(|der| STANDARD.encode(der.as_ref())).collect();

    let padding = "x".repeat(jws::HEADER_B64_BYTES_MAX);
    let big = with_header(&serde_json::json!({"alg": "ES256", "x5c": x5c, "pad": padding}), &signer);
    let error = jws::verify_detached(&big, BODY, &trust, Role::Merchant, now()).unwrap_err();
    assert!(matches!(error, JwsError::HeaderTooLarge), "{error:?}");

    let many = vec![x5c[0].clone(); jws::X5C_CERTS_MAX + 1];
    let long_chain = with_header(&serde_json::json!({"alg": "ES256", "x5c": many}), &signer);
    let error = jws::verify_detached(&long_chain, BODY, &trust, Role::Merchant, now()).unwrap_err();
    assert!(matches!(error, JwsError::BadX5c), "{error:?}");

    let error = jws::sign_detached(BODY, &[], &signer).unwrap_err();
    assert!(matches!(error, JwsError::BadX5c), "{error:?}");
}
