//! Fuzz target: the detached-JWS verifier authz runs on every merchant request (step 3 of the
//! decision) and the merchant on every bank answer, against a fixed test PKI committed beside
//! the targets (`pki/`, written with the corpus by `tests/tests/fuzz_seeds.rs`) at a fixed
//! time, so that a run is the same on every day.
//!
//! Input: the JWS text, a newline, then the signed payload (a JWS holds no newline).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mps_pki::{Role, TrustStore, jws};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};

const ROOT_PEM: &[u8] = include_bytes!("../pki/root.pem");
const CRLS_PEM: &[u8] = include_bytes!("../pki/crls.pem");
/// The instant every verification is made at: inside the test PKI's validity and its CRLs'.
const NOW_UNIX_S: &str = include_str!("../pki/now");

fn trust() -> &'static TrustStore {
    static TRUST: OnceLock<TrustStore> = OnceLock::new();
    TRUST.get_or_init(|| {
        let anchors = CertificateDer::pem_slice_iter(ROOT_PEM).collect::<Result<Vec<_>, _>>();
        let crls = CertificateRevocationListDer::pem_slice_iter(CRLS_PEM).collect::<Result<Vec<_>, _>>();
        // The committed test PKI is read once; without it there is nothing to fuzz.
        TrustStore::new(anchors.expect("pki/root.pem"), crls.expect("pki/crls.pem")).expect("the test PKI")
    })
}

fn now() -> UnixTime {
    static NOW: OnceLock<UnixTime> = OnceLock::new();
    // A committed file of digits, written by the seed test.
    *NOW.get_or_init(|| UnixTime::since_unix_epoch(Duration::from_secs(NOW_UNIX_S.trim().parse().expect("pki/now"))))
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&byte| byte == b'\n').unwrap_or(data.len());
    let (jws_bytes, payload) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let Ok(jws_text) = std::str::from_utf8(jws_bytes) else { return };
    if let Ok(identity) = jws::verify_detached(jws_text, payload, trust(), Role::Merchant, now()) {
        assert_eq!(identity.role, Role::Merchant);
        assert!(identity.merchant_id.is_some(), "a merchant signature without a merchant id");
    }
});
