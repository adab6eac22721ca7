//! The SIM vendor's transport key imported from its clear value (the combined key
//! components): kept on a second import, a private wrap-only key, and CK_0 wrapped under it
//! unwraps with the vendor's copy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::token;
use mps_hsm::ceremony::{KeyOutcome, list_keys};

/// The vendor's transport key is imported once, kept on a second import, carries the private
/// wrap-only policy, and wraps CK_0 so that the vendor's copy of the key unwraps it.
#[test]
fn imported_transport_key_is_private_and_wraps_for_the_vendor() {
    use mps_hsm::ceremony::import_transport_key;
    use mps_hsm::testing::{TRANSPORT_KEY_VALUE, TRANSPORT_VENDOR};
    use mps_protocol::keys::AesKey;

    let token = token();
    let value = zeroize::Zeroizing::new(TRANSPORT_KEY_VALUE);
    let again = import_transport_key(&token.config, &token.user_pin(), TRANSPORT_VENDOR, &value).unwrap();
    assert!(matches!(again, KeyOutcome::Kept { violation: None }), "{again:?}");
    let listed = list_keys(&token.config, &token.user_pin()).unwrap();
    let key = listed.iter().find(|k| k.label == token.transport_key_label).expect("transport key listed");
    for (flag, expected) in [
        ("PRIVATE", true),
        ("SENSITIVE", true),
        ("EXTRACTABLE", false),
        ("WRAP", true),
        ("UNWRAP", false),
        ("ENCRYPT", false),
    ] {
        let actual = key.flags.iter().find(|(name, _)| *name == flag).map(|(_, on)| *on);
        assert_eq!(actual, Some(expected), "{flag} of the transport key");
    }

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let registration = runtime.block_on(async {
        let hsm = token.hsm().await.unwrap();
        let sim = mps_protocol::SimId::new("8949012345678900042").unwrap();
        hsm.register_sim(&sim, &token.transport_key_label).await.unwrap()
    });
    let vendor_key = AesKey::from_bytes(TRANSPORT_KEY_VALUE);
    mps_protocol::perso::unwrap_key(&vendor_key, &registration.wrapped_chain_key_for_transport)
        .expect("the vendor's copy of the transport key unwraps CK_0");
    assert!(
        mps_protocol::perso::unwrap_key(&AesKey::from_bytes([0; 32]), &registration.wrapped_chain_key_for_transport)
            .is_err()
    );
}
