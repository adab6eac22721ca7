//! The key ceremony is idempotent: run again it keeps every key (no duplicate, no overwrite)
//! and checks it against the key policy, creates every key as a private token object of the
//! user (no security officer), and `keys list` shows labels and attributes only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::token;
use mps_hsm::ceremony::{CeremonyError, KeyOutcome, init_keys, list_keys};
use mps_hsm::{HsmConfig, HsmError};

#[test]
fn ceremony_keeps_existing_keys_and_adds_only_what_is_missing() {
    let token = token();
    let config = &token.config;
    let user = token.user_pin();
    let kept = KeyOutcome::Kept { violation: None };

    let again = init_keys(config, &user, &["test".to_owned()]).unwrap();
    let labels: Vec<&str> = again.keys.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["mps-kek", "mps-imk", "mps-pvk", "mps-tk-test", "mps-sign"]);
    assert!(again.keys.iter().all(|(_, outcome)| *outcome == kept), "{again:?}");
    assert!(matches!(init_keys(config, &user, &["Bad Vendor".to_owned()]), Err(CeremonyError::InvalidVendor(_))));

    let with_new = init_keys(config, &user, &["acme".to_owned(), "test".to_owned()]).unwrap();
    for (label, outcome) in &with_new.keys {
        let expected = if label == "mps-tk-acme" { KeyOutcome::Created } else { kept.clone() };
        assert_eq!(*outcome, expected, "{label}");
    }

    let listed = list_keys(config, &user).unwrap();
    let count = |label: &str, class: &str| listed.iter().filter(|k| k.label == label && k.class == class).count();
    for label in ["mps-kek", "mps-tk-test", "mps-tk-acme", "mps-imk", "mps-pvk"] {
        assert_eq!(count(label, "secret"), 1, "{label}");
        let key = listed.iter().find(|k| k.label == label).unwrap();
        for flag in [("PRIVATE", true), ("SENSITIVE", true), ("EXTRACTABLE", false), ("TRUSTED", false)] {
            assert!(key.flags.contains(&flag), "{label}: {flag:?} in {:?}", key.flags);
        }
    }
    assert_eq!(count("mps-sign", "private"), 1);
    assert_eq!(count("mps-sign", "public"), 1);
    assert_eq!(listed.len(), 7, "{listed:#?}");
    let kek = listed.iter().find(|k| k.label == "mps-kek").unwrap();
    assert_eq!(kek.key_type, "AES");
    assert_eq!(kek.value_len, Some(32));
    assert!(kek.flags.contains(&("PRIVATE", true)) && kek.flags.contains(&("SENSITIVE", true)));
    assert!(kek.flags.contains(&("EXTRACTABLE", false)) && kek.flags.contains(&("ENCRYPT", false)));
    let pvk = listed.iter().find(|k| k.label == "mps-pvk").unwrap();
    assert_eq!(pvk.key_type, "GENERIC_SECRET");

    let elsewhere = HsmConfig { token_label: "no-such-token".to_owned(), ..config.clone() };
    let err = init_keys(&elsewhere, &user, &[]).unwrap_err();
    assert!(matches!(err, CeremonyError::Hsm(HsmError::TokenNotFound { .. })), "{err:?}");
}
