//! Chains issued by the CA pass the real `openssl verify` (with CRL checks) and our verifier;
//! expired, not-yet-valid, wrong-EKU, revoked, wrong-CA and self-signed certificates are each
//! refused by our verifier with their own error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Leaf, TestCa, days, now, openssl_purpose, openssl_verify, request, request_with_window};
use mps_pki::ca::{CaLevel, RevocationReason, Subject};
use mps_pki::{PkiConfig, Role, TrustStore, VerifyError, pem};
use mps_protocol::{Iin, MerchantId};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;

fn unix(time: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(time.unix_timestamp() as u64))
}

#[test]
fn openssl_and_our_verifier_accept_every_issued_chain() {
    let mut ca = TestCa::new();
    let trust = ca.trust_store();
    for role in Role::ALL {
        let leaf = ca.issue(role.name(), &request(role));
        let (ok, output) = openssl_verify(&ca, &leaf.leaf_file, openssl_purpose(role));
        assert!(ok, "openssl refused {role}: {output}");
        assert!(output.contains(": OK"), "{output}");

        let identity = trust.verify_now(&leaf.chain(), role).unwrap();
        assert_eq!(identity.role, role);
        assert_eq!(identity.serial_hex, leaf.issued.serial_hex);
        assert_eq!(
            identity.merchant_id.as_ref().map(MerchantId::as_str),
            (role == Role::Merchant).then_some("SHOP-001")
        );
        assert_eq!(identity.bank_iin.as_ref().map(Iin::as_str), (role == Role::BankSigning).then_some("123456"));
        assert_eq!(identity.not_after, leaf.issued.not_after);
        assert_eq!(identity.fingerprint_sha256, mps_pki::inspect(&leaf.chain()[0]).unwrap().fingerprint_sha256);
    }
    // The intermediate itself, against the root and the root's CRL.
    let (ok, output) = openssl_verify(&ca, &ca.intermediate_file(), "any");
    assert!(ok, "{output}");
}

#[test]
fn each_kind_of_bad_certificate_gets_its_own_error() {
    let mut ca = TestCa::new();
    let expired = ca.issue("expired", &request_with_window(Role::Merchant, now() - days(30), now() - days(1)));
    let future = ca.issue("future", &request_with_window(Role::Merchant, now() + days(1), now() + days(30)));
    let server = ca.issue("server", &request(Role::AuthzServer));
    let revoked = ca.issue("revoked", &request(Role::Merchant));
    ca.revoke(&revoked);
    let mut other_ca = TestCa::new();
    let foreign = other_ca.issue("foreign", &request(Role::Merchant));
    let self_signed = self_signed_merchant();
    let trust = ca.trust_store();

    let results = [
        (trust.verify_now(&expired.chain(), Role::Merchant), VerifyError::Expired),
        (trust.verify_now(&future.chain(), Role::Merchant), VerifyError::NotYetValid),
        (trust.verify_now(&server.chain(), Role::Merchant), VerifyError::WrongUsage(Role::Merchant)),
        (trust.verify_now(&revoked.chain(), Role::Merchant), VerifyError::Revoked),
        (trust.verify_now(&foreign.chain(), Role::Merchant), VerifyError::UnknownIssuer),
        (trust.verify_now(&[self_signed], Role::Merchant), VerifyError::SelfSigned),
    ];
    let mut seen = Vec::new();
    for (result, expected) in results {
        let error = result.unwrap_err();
        assert_eq!(error, expected);
        assert!(!seen.contains(&error), "{error:?} twice");
        seen.push(error);
    }

    // openssl agrees on the revoked one.
    let (ok, output) = openssl_verify(&ca, &revoked.leaf_file, "sslclient");
    assert!(!ok && output.contains("revoked"), "{output}");
}

fn self_signed_merchant() -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    // Same name as the scheme's intermediate, to look like it.
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "MPS Scheme");
    params.distinguished_name.push(DnType::CommonName, "MPS Scheme Issuing CA 1");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.self_signed(&key).unwrap().der().clone()
}

#[test]
fn a_certificate_without_the_mps_purpose_is_wrong_usage_even_from_our_ca() {
    let ca = TestCa::new();
    // Signed by the real intermediate, EKU clientAuth only: a generic TLS client certificate.
    let issuer = Issuer::from_ca_cert_der(ca.authority.intermediate_certificate(), &ca.intermediate_key).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.not_before = now() - days(1);
    params.not_after = now() + days(10);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.subject_alt_names = vec![rcgen::SanType::URI("urn:mps:merchant:SHOP-001".try_into().unwrap())];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer).unwrap();
    let chain = vec![cert.der().clone(), ca.authority.intermediate_certificate().clone()];
    let trust = ca.trust_store();
    assert_eq!(trust.verify_now(&chain, Role::Merchant).unwrap_err(), VerifyError::WrongUsage(Role::Merchant));
    assert_eq!(
        trust.verify_now(&chain, Role::GatewayClient).unwrap_err(),
        VerifyError::WrongUsage(Role::GatewayClient)
    );
}

#[test]
fn every_role_refuses_the_certificates_of_the_other_roles() {
    let mut ca = TestCa::new();
    let trust = ca.trust_store();
    let leaves: Vec<(Role, Leaf)> =
        Role::ALL.into_iter().map(|role| (role, ca.issue(role.name(), &request(role)))).collect();
    for (issued_for, leaf) in &leaves {
        for role in Role::ALL {
            let result = trust.verify_now(&leaf.chain(), role);
            if role == *issued_for {
                assert!(result.is_ok(), "{role}: {result:?}");
            } else {
                assert_eq!(result.unwrap_err(), VerifyError::WrongUsage(role), "{issued_for} as {role}");
            }
        }
    }
}

#[test]
fn a_ca_with_other_names_is_also_an_unknown_issuer() {
    let ca = TestCa::new();
    let config = PkiConfig {
        organization: "Rogue Scheme".to_owned(),
        root_common_name: "Rogue Root".to_owned(),
        intermediate_common_name: "Rogue Issuing".to_owned(),
        ..PkiConfig::default()
    };
    let mut rogue = TestCa::with_config(&config);
    let foreign = rogue.issue("foreign", &request(Role::BankSigning));
    let trust = ca.trust_store();
    assert_eq!(trust.verify_now(&foreign.chain(), Role::BankSigning).unwrap_err(), VerifyError::UnknownIssuer);
    // And our own leaf without its intermediate does not chain either.
    let mut ca = ca;
    let leaf = ca.issue("alone", &request(Role::BankSigning));
    assert_eq!(trust.verify_now(&leaf.chain()[..1], Role::BankSigning).unwrap_err(), VerifyError::UnknownIssuer);
}

#[test]
fn a_revoked_intermediate_revokes_everything_below_it() {
    let mut ca = TestCa::new();
    let leaf = ca.issue("merchant", &request(Role::Merchant));
    let intermediate_serial = mps_pki::inspect(ca.authority.intermediate_certificate()).unwrap().serial_hex;
    let level = ca.authority.revoke(&intermediate_serial, RevocationReason::CaCompromise, now()).unwrap();
    assert_eq!(level, CaLevel::Root);
    ca.authority.write_crl(CaLevel::Root, &ca.root_key, now()).unwrap();
    let trust = ca.trust_store();
    assert_eq!(trust.verify_now(&leaf.chain(), Role::Merchant).unwrap_err(), VerifyError::Revoked);
    let (ok, output) = openssl_verify(&ca, &leaf.leaf_file, "sslclient");
    assert!(!ok && output.contains("revoked"), "{output}");
}

#[test]
fn revocation_must_be_known_and_crls_fresh() {
    let mut ca = TestCa::new();
    let leaf = ca.issue("merchant", &request(Role::Merchant));

    // Only the root's CRL: the leaf's status is unknown, which is refused.
    let root_only = TrustStore::from_pem_files(&[&ca.root_file()], &[&ca.authority.crl_path(CaLevel::Root)]).unwrap();
    assert_eq!(root_only.verify_now(&leaf.chain(), Role::Merchant).unwrap_err(), VerifyError::RevocationUnknown);

    // Past the CRLs' nextUpdate (168 h by default) the CRL is stale, and refused.
    let trust = ca.trust_store();
    let next_update = trust.crl_next_update().as_secs();
    let expected = (now() + time::Duration::hours(168)).unix_timestamp() as u64;
    assert!(next_update.abs_diff(expected) < 120, "{next_update} vs {expected}");
    assert_eq!(
        trust.verify(&leaf.chain(), Role::Merchant, unix(now() + days(8))).unwrap_err(),
        VerifyError::CrlExpired
    );
}

#[test]
fn cached_results_still_respect_the_time_asked_for() {
    let mut ca = TestCa::new();
    let leaf = ca.issue("merchant", &request_with_window(Role::Merchant, now() - days(1), now() + days(3)));
    let trust = ca.trust_store();
    let first = trust.verify_now(&leaf.chain(), Role::Merchant).unwrap();
    let second = trust.verify_now(&leaf.chain(), Role::Merchant).unwrap();
    assert_eq!(first, second);
    // The result is cached, but not for a time beyond the certificate's validity ...
    assert_eq!(trust.verify(&leaf.chain(), Role::Merchant, unix(now() + days(4))).unwrap_err(), VerifyError::Expired);
    // ... nor before it.
    assert_eq!(
        trust.verify(&leaf.chain(), Role::Merchant, unix(now() - days(2))).unwrap_err(),
        VerifyError::NotYetValid
    );
    // And a new trust store with a new CRL sees the revocation at once.
    ca.revoke(&leaf);
    assert_eq!(ca.trust_store().verify_now(&leaf.chain(), Role::Merchant).unwrap_err(), VerifyError::Revoked);
}

#[test]
fn the_cache_of_results_is_bounded() {
    let mut ca = TestCa::new();
    let trust = ca.trust_store().with_cache_entries_max(8);
    // Five times more merchants than places: every one verifies, the cache keeps at most 8.
    for index in 0..40 {
        let leaf = ca.issue(&format!("merchant-{index}"), &request(Role::Merchant));
        trust.verify_now(&leaf.chain(), Role::Merchant).unwrap();
        trust.verify_now(&leaf.chain(), Role::Merchant).unwrap();
    }
    let cached = trust.cached_results();
    assert!((1..=8).contains(&cached), "{cached} results cached, room for 8");
    // Refusals are never cached.
    let refused = ca.trust_store();
    assert_eq!(refused.verify_now(&[self_signed_merchant()], Role::Merchant).unwrap_err(), VerifyError::SelfSigned);
    assert_eq!(refused.cached_results(), 0);
}

#[test]
fn tampered_and_garbage_chains_are_refused() {
    let mut ca = TestCa::new();
    let leaf = ca.issue("merchant", &request(Role::Merchant));
    let trust = ca.trust_store();
    let mut bytes = leaf.chain()[0].to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let tampered = vec![CertificateDer::from(bytes), leaf.chain()[1].clone()];
    assert_eq!(trust.verify_now(&tampered, Role::Merchant).unwrap_err(), VerifyError::UnknownIssuer);
    let garbage = vec![CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])];
    assert_eq!(trust.verify_now(&garbage, Role::Merchant).unwrap_err(), VerifyError::Malformed);
    assert_eq!(trust.verify_now(&[], Role::Merchant).unwrap_err(), VerifyError::Malformed);
}

#[test]
fn padded_merchant_ids_and_inner_spaces_survive_the_round_trip() {
    let mut ca = TestCa::new();
    let mut padded = request(Role::Merchant);
    padded.subject = Subject::Merchant { merchant_id: MerchantId::new("SHOP 7         ").unwrap() };
    let leaf = ca.issue("padded", &padded);
    let identity = ca.trust_store().verify_now(&leaf.chain(), Role::Merchant).unwrap();
    assert_eq!(identity.merchant_id.as_ref().map(MerchantId::as_str), Some("SHOP 7"));
    let chain_pem = std::fs::read_to_string(&leaf.chain_file).unwrap();
    assert_eq!(chain_pem, pem::encode_certificates(&leaf.chain()));
}
