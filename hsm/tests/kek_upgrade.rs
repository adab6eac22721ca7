//! The upgrade path from the earlier key ceremony, whose mps-kek was a public object, on a
//! real SoftHSM token. Alone in its binary: the KEK rotation test re-initialises the module.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::token;
use mps_hsm::ceremony::{mark_kek_drained, retire_kek, rotate_kek};
use mps_hsm::testing::wrap_known_chain_key;
use mps_hsm::{HsmError, WrappedChainKey};

/// The upgrade path from the earlier ceremony, whose mps-kek was a public object: a pool
/// refuses to start while the newest KEK is public; after `rotate_kek` it starts, unwraps the
/// old chain keys under the public KEK only to move them, and the public KEK is drained and
/// destroyed. (The legacy KEK is made here under its own label, so the test's other KEK
/// versions are not disturbed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_kek_of_an_earlier_ceremony_is_rotated_away() {
    use cryptoki::error::{Error, RvError};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, KeyType, ObjectClass};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;

    let token = token();
    let pin = token.user_pin();
    let mut config = token.config.clone();
    config.keys.key_encryption = "legacy-kek".to_owned();
    mps_hsm::testing::make_weak_kek(&config, "legacy-kek", true, false, true).unwrap();

    // A chain key as the earlier ceremony stored it: wrapped under the public KEK.
    let session = common::raw_session(&config);
    match session.login(UserType::User, Some(&AuthPin::from(mps_hsm::testing::USER_PIN))) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("{e}"),
    }
    let legacy = session.find_objects(&[Attribute::Token(true), Attribute::Label(b"legacy-kek".to_vec())]).unwrap()[0];
    let chain_key = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::Value(vec![0x71; 32]),
        ])
        .unwrap();
    let bytes: [u8; 40] = session.wrap_key(&Mechanism::AesKeyWrapPad, legacy, chain_key).unwrap().try_into().unwrap();
    session.destroy_object(chain_key).unwrap();
    let stored = WrappedChainKey { kek_version: 1, bytes };

    let refused = mps_hsm::Hsm::connect(config.clone()).await.unwrap_err();
    assert!(matches!(&refused, HsmError::KeyPolicy(v) if v.attribute == "CKA_PRIVATE"), "{refused}");

    let (version, label) = rotate_kek(&config, &pin).unwrap();
    assert_eq!((version, label.as_str()), (2, "legacy-kek-2"));
    let hsm = mps_hsm::Hsm::connect(config.clone()).await.unwrap();
    assert_eq!(hsm.kek_version_newest(), 2);
    let moved = hsm.rewrap_chain_key(&stored).await.unwrap().expect("moved");
    assert_eq!(moved.kek_version, 2);
    assert_eq!(moved, wrap_known_chain_key(&hsm, &[0x71; 32]).await.unwrap());

    assert_eq!(mark_kek_drained(&config, &pin, 1).unwrap(), "legacy-kek");
    assert_eq!(retire_kek(&config, &pin, 1).unwrap(), "legacy-kek");
}
