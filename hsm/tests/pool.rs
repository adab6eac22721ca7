//! A pool over two HSMs (SoftHSM loaded twice, from two copies of its file, on one token):
//! work is spread over both, a chain key wrapped on one unwraps on the other, and a member
//! that cannot be loaded stops the pool at connect, named. (A member with other keys is in
//! `pool_other_token.rs`, a process of its own.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{Sim, authorize, token};
use mps_hsm::testing::{wrap_known_chain_key, wrap_known_chain_key_on};
use mps_hsm::{Hsm, HsmError, HsmMember};
use mps_protocol::Rsn;
use p256::ecdsa::signature::Verifier;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorizations_spread_over_both_members_and_all_verify() {
    let config = token().pool_config(2).unwrap();
    let hsm = Hsm::connect(config).await.unwrap();
    assert_eq!(hsm.members_ready(), [true, true]);

    // Eight SIMs at once, each a chain of authorizations: a chain key sealed on one member
    // is opened on whichever member is least loaded next.
    let mut tasks = Vec::new();
    for sim_index in 0..8u8 {
        let hsm = hsm.clone();
        tasks.push(tokio::spawn(async move {
            let mut sim = Sim::new([0x60 + sim_index; 32], Rsn([sim_index; 8]));
            let mut wrapped = wrap_known_chain_key(&hsm, sim.chain_key.expose()).await.unwrap();
            for round in 0..15u8 {
                let sealed = authorize(&hsm, &wrapped, &sim, [round; 16]).await;
                // The SIM's reference code opens the answer: right keys, right MAC.
                sim.accept(&sealed.answer);
                wrapped = sealed.wrapped_next_chain_key;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let public_key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&hsm.signing_public_key()).unwrap();
    for round in 0..10u8 {
        let message = [round; 32];
        let signature = p256::ecdsa::Signature::from_slice(&hsm.sign_es256(&message).await.unwrap()).unwrap();
        public_key.verify(&message, &signature).unwrap();
    }

    let metrics = hsm.metrics();
    let per_member: Vec<u64> = metrics.members.iter().map(|m| m.operations_total).collect();
    let total: u64 = per_member.iter().sum();
    assert_eq!(total, metrics.operations_total);
    assert!(total >= 8 * 15 * 2 + 10, "{per_member:?}");
    for count in &per_member {
        assert!(*count * 5 >= total, "each member takes a fair share of the work: {per_member:?}");
    }
    assert!(metrics.members.iter().all(|m| m.errors_total == 0 && m.ready), "{:?}", metrics.members);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_key_wrapped_on_one_member_is_the_same_on_the_other() {
    let hsm = Hsm::connect(token().pool_config(2).unwrap()).await.unwrap();
    let value = [0x3c; 32];
    let operations = |hsm: &Hsm| hsm.metrics().members.iter().map(|m| m.operations_total).collect::<Vec<u64>>();
    // The key check at connect ran once on each member.
    assert_eq!(operations(&hsm), [1, 1]);
    let on_first = wrap_known_chain_key_on(&hsm, 0, &value).await.unwrap();
    let on_second = wrap_known_chain_key_on(&hsm, 1, &value).await.unwrap();
    // RFC 5649 is deterministic: equal bytes mean the same KEK, so either member unwraps it.
    assert_eq!(on_first, on_second);
    assert_eq!(operations(&hsm), [2, 2]);

    // A session opened from a key wrapped on member 1 runs on whichever member is chosen.
    let sim = Sim::new(value, Rsn([9; 8]));
    for round in 0..4 {
        authorize(&hsm, &on_second, &sim, [round; 16]).await;
    }
    assert!(hsm.metrics().members.iter().all(|m| m.operations_total >= 4), "{:?}", hsm.metrics().members);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_module_is_a_link_to_another_ones_is_refused() {
    let token = token();
    let link = token.dir.join("libsofthsm2-link.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&token.config.module_path, &link).unwrap();
    let mut config = token.config.clone();
    config.additional =
        Some(vec![HsmMember { module_path: link, token_label: None, pin_env: None, pin_file: None, pool_size: None }]);
    let err = Hsm::connect(config).await.unwrap_err();
    assert!(matches!(&err, HsmError::Member { member: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("same file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_cannot_connect_stops_the_pool_and_is_named() {
    let mut config = token().config.clone();
    config.additional = Some(vec![HsmMember {
        module_path: "/nonexistent/libpkcs11-missing.so".into(),
        token_label: None,
        pin_env: None,
        pin_file: None,
        pool_size: None,
    }]);
    let err = Hsm::connect(config).await.unwrap_err();
    assert!(
        matches!(&err, HsmError::Member { member: 1, source, .. } if matches!(**source, HsmError::Load { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("HSM 1"), "{err}");
}
