//! The ceremony's keys are sensitive and not extractable, carry only their usage, and every
//! forbidden use fails: reading CKA_VALUE, encrypting with mps-kek, deriving with mps-pvk,
//! wrapping mps-imk (and a few more of the same kind).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{find_key as find, token, user_session};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use mps_hsm::HsmError;
use mps_hsm::testing::try_derive_from_token_key;

/// A session of our own on the test token, logged in as the user.
fn session() -> Session {
    user_session(&token().config)
}

fn flag(session: &Session, key: ObjectHandle, attribute: AttributeType) -> bool {
    let values = session.get_attributes(key, &[attribute]).unwrap();
    match values.as_slice() {
        [Attribute::Sensitive(v)]
        | [Attribute::Extractable(v)]
        | [Attribute::AlwaysSensitive(v)]
        | [Attribute::NeverExtractable(v)]
        | [Attribute::Trusted(v)]
        | [Attribute::Private(v)]
        | [Attribute::Encrypt(v)]
        | [Attribute::Decrypt(v)]
        | [Attribute::Sign(v)]
        | [Attribute::Verify(v)]
        | [Attribute::Wrap(v)]
        | [Attribute::Unwrap(v)]
        | [Attribute::Derive(v)] => *v,
        other => panic!("{attribute:?} of {key}: {other:?}"),
    }
}

fn rv(result: Result<impl std::fmt::Debug, Error>) -> RvError {
    match result {
        Err(Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

const SECRET_KEYS: [&str; 4] = ["mps-imk", "mps-kek", "mps-pvk", "mps-tk-test"];

#[test]
fn ceremony_keys_are_sensitive_never_extractable_and_only_for_their_use() {
    let session = session();
    let mut keys: Vec<(&str, ObjectHandle)> =
        SECRET_KEYS.iter().map(|l| (*l, find(&session, ObjectClass::SECRET_KEY, l))).collect();
    keys.push(("mps-sign", find(&session, ObjectClass::PRIVATE_KEY, "mps-sign")));
    for (label, key) in &keys {
        assert!(flag(&session, *key, AttributeType::Sensitive), "{label} sensitive");
        // Keys generated in the HSM were never in clear. The vendor's transport key is shared
        // with the vendor, so it is imported from its clear components: PKCS#11 then says,
        // truthfully, that it was not always sensitive and not never-extractable.
        let generated = !label.starts_with("mps-tk-");
        for attribute in [AttributeType::AlwaysSensitive, AttributeType::NeverExtractable] {
            assert_eq!(flag(&session, *key, attribute), generated, "{label} {attribute:?}");
        }
        assert!(!flag(&session, *key, AttributeType::Extractable), "{label} extractable");
        // The value cannot be read: the token says so, and it does not come back.
        let info = session.get_attribute_info(*key, &[AttributeType::Value]).unwrap();
        assert!(matches!(info.as_slice(), [AttributeInfo::Sensitive]), "{label}: {info:?}");
        let values = session.get_attributes(*key, &[AttributeType::Value]).unwrap();
        assert!(values.is_empty(), "{label} CKA_VALUE came back");
    }
    let usage = |label: &str| {
        let key = keys.iter().find(|(l, _)| *l == label).unwrap().1;
        [
            AttributeType::Encrypt,
            AttributeType::Decrypt,
            AttributeType::Sign,
            AttributeType::Verify,
            AttributeType::Wrap,
            AttributeType::Unwrap,
            AttributeType::Derive,
        ]
        .map(|a| flag(&session, key, a))
    };
    // encrypt, decrypt, sign, verify, wrap, unwrap, derive
    assert_eq!(usage("mps-imk"), [false, false, false, false, false, false, true]);
    assert_eq!(usage("mps-kek"), [false, false, false, false, true, true, false]);
    assert_eq!(usage("mps-pvk"), [false, false, true, true, false, false, false]);
    assert_eq!(usage("mps-tk-test"), [false, false, false, false, true, false, false]);
    let sign = keys.iter().find(|(l, _)| *l == "mps-sign").unwrap().1;
    for attribute in [AttributeType::Decrypt, AttributeType::Unwrap, AttributeType::Derive] {
        assert!(!flag(&session, sign, attribute), "mps-sign {attribute:?}");
    }
    assert!(flag(&session, sign, AttributeType::Sign));
    for (label, key) in &keys {
        // Private: nothing finds or uses it without the user PIN, and SoftHSM encrypts it at
        // rest. Not trusted: on SoftHSM only the SO makes trusted keys, and only public ones.
        assert!(flag(&session, *key, AttributeType::Private), "{label} is a private object");
        if *label != "mps-sign" {
            // (A private key has no CKA_TRUSTED.)
            assert!(!flag(&session, *key, AttributeType::Trusted), "{label} trusted");
        }
    }
}

#[test]
fn forbidden_uses_fail() {
    let session = session();
    let kek = find(&session, ObjectClass::SECRET_KEY, "mps-kek");
    let imk = find(&session, ObjectClass::SECRET_KEY, "mps-imk");
    let pvk = find(&session, ObjectClass::SECRET_KEY, "mps-pvk");
    let tk = find(&session, ObjectClass::SECRET_KEY, "mps-tk-test");
    let sign = find(&session, ObjectClass::PRIVATE_KEY, "mps-sign");

    assert_eq!(rv(session.encrypt(&Mechanism::AesCbcPad([0; 16]), kek, &[0; 16])), RvError::KeyFunctionNotPermitted);
    assert_eq!(rv(session.decrypt(&Mechanism::AesCbcPad([0; 16]), kek, &[0; 32])), RvError::KeyFunctionNotPermitted);
    assert_eq!(rv(session.encrypt(&Mechanism::AesCbcPad([0; 16]), imk, &[0; 16])), RvError::KeyFunctionNotPermitted);
    assert_eq!(rv(session.sign(&Mechanism::AesCMac, imk, &[0; 16])), RvError::KeyFunctionNotPermitted);
    assert_eq!(rv(session.wrap_key(&Mechanism::AesKeyWrapPad, kek, imk)), RvError::KeyUnextractable);
    assert_eq!(rv(session.wrap_key(&Mechanism::AesKeyWrapPad, tk, imk)), RvError::KeyUnextractable);
    assert_eq!(rv(session.wrap_key(&Mechanism::AesKeyWrapPad, kek, pvk)), RvError::KeyUnextractable);
    assert_eq!(rv(session.wrap_key(&Mechanism::AesKeyWrapPad, kek, sign)), RvError::KeyUnextractable);
    assert_eq!(rv(session.sign(&Mechanism::Sha256Hmac, kek, b"x")), RvError::KeyFunctionNotPermitted);
    assert_eq!(rv(session.decrypt(&Mechanism::AesCbcPad([0; 16]), tk, &[0; 32])), RvError::KeyFunctionNotPermitted);

    // Deriving with the key schedule's own mechanism: allowed from mps-imk only.
    let config = &token().config;
    try_derive_from_token_key(config, "mps-imk", ObjectClass::SECRET_KEY).unwrap();
    for label in ["mps-pvk", "mps-kek"] {
        let err = try_derive_from_token_key(config, label, ObjectClass::SECRET_KEY).unwrap_err();
        assert!(matches!(err, HsmError::Pkcs11 { rv: RvError::KeyFunctionNotPermitted, .. }), "{label}: {err:?}");
    }
}
