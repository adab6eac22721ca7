//! Key custody, as attacks that must fail on a real SoftHSM token (docs/HSM.md):
//! - a process that never logged in finds no issuer key and cannot unwrap a ledger blob;
//! - the token directory holds none of the key values (a known imported key is searched for);
//! - with the PIN, unwrapping under mps-kek into a non-sensitive key is refused (the unwrap
//!   template is enforced), while SoftHSM neither knows CKA_DERIVE_TEMPLATE nor stops a
//!   non-sensitive derive: recorded here so that docs/HSM.md never claims more;
//! - a pool refuses to start on a KEK that is public, extractable or has no unwrap template,
//!   naming the key and the attribute.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{find_key as find, token};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::Session;
use mps_hsm::testing::{TRANSPORT_KEY_VALUE, wrap_known_chain_key};
use mps_hsm::{Hsm, HsmConfig, HsmError};

const CHILD_ENV: &str = "MPS_CUSTODY_CHILD_BLOB";

fn logged_in_session() -> Session {
    common::user_session(&token().config)
}

fn aes_template(extra: &[Attribute]) -> Vec<Attribute> {
    let mut template =
        vec![Attribute::Class(ObjectClass::SECRET_KEY), Attribute::KeyType(KeyType::AES), Attribute::Token(false)];
    template.extend_from_slice(extra);
    template
}

/// The tests of this binary run one at a time: SoftHSM's file store answered
/// CKR_GENERAL_ERROR to a token-object creation while another process opened the same token.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_the_pin_finds_no_issuer_key_and_cannot_unwrap_a_ledger_blob() {
    let _serial = one_at_a_time().await;
    let token = token();
    let hsm = token.hsm().await.unwrap();
    let blob = wrap_known_chain_key(&hsm, &[0x5c; 32]).await.unwrap();
    // Another process, pointed at the same token, that never logs in.
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_without_login", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, hex::encode(blob.bytes))
        .env("SOFTHSM2_CONF", &token.softhsm_conf)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("CHILD: no key found, no unwrap possible"), "{stdout}");
}

/// The other process of the test above: it has the token and a ledger blob, but no PIN.
#[test]
#[ignore = "runs only as the child process of a_process_without_the_pin_finds_no_issuer_key..."]
fn child_without_login() {
    let blob = hex::decode(std::env::var(CHILD_ENV).expect("run by the parent test")).unwrap();
    let config = HsmConfig::default();
    let pkcs11 = Pkcs11::new(&config.module_path).unwrap();
    pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).unwrap();
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label().trim_end() == mps_hsm::testing::TOKEN_LABEL)
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    // (Other tests of this binary make deliberately weak keys labelled weak-* and custody-*
    // on the same token at the same time; no issuer key, mps-*, may be visible.)
    for class in [ObjectClass::SECRET_KEY, ObjectClass::PRIVATE_KEY] {
        for handle in session.find_objects(&[Attribute::Class(class)]).unwrap() {
            let label = session.get_attributes(handle, &[AttributeType::Label]).unwrap();
            let label = match label.as_slice() {
                [Attribute::Label(l)] => String::from_utf8_lossy(l).into_owned(),
                other => panic!("{other:?}"),
            };
            assert!(!label.starts_with("mps-"), "issuer key {label} is visible without login");
        }
    }
    // Whatever it can see cannot unwrap the blob either.
    let template = aes_template(&[Attribute::Sensitive(false), Attribute::Extractable(true)]);
    for handle in session.find_objects(&[]).unwrap() {
        let attempt = session.unwrap_key(&Mechanism::AesKeyWrapPad, handle, &blob, &template);
        assert!(attempt.is_err(), "object {handle} unwrapped a ledger blob without login");
    }
    println!("CHILD: no key found, no unwrap possible");
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            hits.extend(files_containing(&path, needle));
        } else if std::fs::read(&path).unwrap().windows(needle.len()).any(|w| w == needle) {
            hits.push(path.display().to_string());
        }
    }
    hits
}

#[tokio::test]
async fn the_token_directory_holds_no_key_value() {
    let _serial = one_at_a_time().await;
    let token = token();
    let tokens = token.dir.join("tokens");
    // The transport key was imported with a known value: as a private object it is stored
    // encrypted under the user PIN, so a copy of the directory does not show it.
    assert_eq!(files_containing(&tokens, &TRANSPORT_KEY_VALUE), Vec::<String>::new());
    // The search finds a value that is there: a public key with a known value is stored in
    // clear (the mps-kek of the earlier ceremony was such an object).
    let session = logged_in_session();
    let known = [0xa7u8; 32];
    let public = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Sensitive(true),
            Attribute::Label(b"custody-public-probe".to_vec()),
            Attribute::Value(known.to_vec()),
        ])
        .unwrap();
    let found = files_containing(&tokens, &known);
    session.destroy_object(public).unwrap();
    assert_eq!(found.len(), 1, "a public key's value lies in clear in the token directory: {found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_pin_the_unwrap_template_is_enforced_and_derivation_is_not() {
    let _serial = one_at_a_time().await;
    let hsm = token().hsm().await.unwrap();
    let blob = wrap_known_chain_key(&hsm, &[0x3d; 32]).await.unwrap();
    let session = logged_in_session();
    let kek = find(&session, ObjectClass::SECRET_KEY, &mps_hsm::custody::kek_label("mps-kek", blob.kek_version));

    // Unwrap into a key whose value could be read: refused by mps-kek's unwrap template,
    // whether the template says non-sensitive or says nothing.
    for template in [
        aes_template(&[Attribute::Sensitive(false), Attribute::Extractable(true)]),
        aes_template(&[Attribute::Extractable(true)]),
    ] {
        let attempt = session.unwrap_key(&Mechanism::AesKeyWrapPad, kek, &blob.bytes, &template);
        assert!(matches!(attempt, Err(Error::Pkcs11(RvError::TemplateInconsistent, _))), "{attempt:?}");
    }
    // A sensitive unwrap works, and its value stays unreadable.
    let unwrapped = session
        .unwrap_key(
            &Mechanism::AesKeyWrapPad,
            kek,
            &blob.bytes,
            &aes_template(&[Attribute::Sensitive(true), Attribute::Extractable(false)]),
        )
        .unwrap();
    assert!(session.get_attributes(unwrapped, &[AttributeType::Value]).unwrap().is_empty());
    session.destroy_object(unwrapped).unwrap();

    // SoftHSM 2.6.1 does not know CKA_DERIVE_TEMPLATE (0x40000213) ...
    let derive_template = Attribute::VendorDefined((AttributeType::VendorDefined(0x4000_0213), Vec::new()));
    let attempt = session.generate_key(
        &Mechanism::AesKeyGen,
        &aes_template(&[Attribute::ValueLen(32.into()), Attribute::Derive(true), derive_template]),
    );
    assert!(matches!(attempt, Err(Error::Pkcs11(RvError::AttributeTypeInvalid, _))), "{attempt:?}");
    // ... and lets a logged-in caller derive a non-sensitive key from mps-imk and read it:
    // with the PIN, key values can be had. That is why the PIN must never leak (docs/HSM.md).
    let imk = find(&session, ObjectClass::SECRET_KEY, "mps-imk");
    let data = [0x11u8; 32];
    let params = cryptoki::mechanism::misc::KeyDerivationStringData::new(&data);
    let mechanism = ecb_encrypt_data(&params);
    let derived = session
        .derive_key(
            &mechanism,
            imk,
            &aes_template(&[Attribute::ValueLen(32.into()), Attribute::Sensitive(false), Attribute::Extractable(true)]),
        )
        .unwrap();
    let value = session.get_attributes(derived, &[AttributeType::Value]).unwrap();
    assert!(matches!(value.as_slice(), [Attribute::Value(v)] if v.len() == 32), "derivation is not guarded");
    session.destroy_object(derived).unwrap();
}

/// `CKM_AES_ECB_ENCRYPT_DATA` through the crate's own mechanism helper (the one unsafe line
/// stays in the library).
fn ecb_encrypt_data<'a>(
    params: &'a cryptoki::mechanism::misc::KeyDerivationStringData<'a>,
) -> cryptoki::mechanism::Mechanism<'a> {
    mps_hsm::testing::ecb_encrypt_data(params)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_refuses_a_weak_kek_naming_the_key_and_the_attribute() {
    let _serial = one_at_a_time().await;
    for (label, private, extractable, with_template, attribute) in [
        ("weak-public-kek", false, false, true, "CKA_PRIVATE"),
        ("weak-extractable-kek", true, true, true, "CKA_EXTRACTABLE"),
        ("weak-untemplated-kek", true, false, false, "CKA_UNWRAP_TEMPLATE"),
    ] {
        mps_hsm::testing::make_weak_kek(&token().config, label, !private, extractable, with_template).unwrap();

        let mut config = token().config.clone();
        config.keys.key_encryption = label.to_owned();
        let err = Hsm::connect(config).await.expect_err("a weak KEK must stop the pool");
        let HsmError::KeyPolicy(violation) = &err else { panic!("{label}: {err:?}") };
        assert_eq!(violation.label, label);
        assert_eq!(violation.attribute, attribute, "{err}");
        let message = err.to_string();
        assert!(message.contains(label) && message.contains(attribute), "{message}");
    }
    // The ceremony's own keys pass the same check.
    Hsm::connect(token().config.clone()).await.unwrap();
}

/// On SoftHSM only the security officer may set CKA_TRUSTED, and the SO makes only public
/// objects: a private trusted KEK cannot exist, so chain keys cannot be bound to one with
/// CKA_WRAP_WITH_TRUSTED (docs/HSM.md).
#[tokio::test]
async fn the_user_cannot_make_a_trusted_key() {
    let _serial = one_at_a_time().await;
    let session = logged_in_session();
    let attempt = session.generate_key(
        &Mechanism::AesKeyGen,
        &aes_template(&[
            Attribute::ValueLen(32.into()),
            Attribute::Private(true),
            Attribute::Wrap(true),
            Attribute::Trusted(true),
        ]),
    );
    assert!(matches!(attempt, Err(Error::Pkcs11(RvError::AttributeReadOnly, _))), "{attempt:?}");
}
