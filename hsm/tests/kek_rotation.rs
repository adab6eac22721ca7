//! KEK rotation on a real SoftHSM token, against a running pool: `rotate_kek` makes
//! mps-kek-2, the pool adopts it by itself and wraps every new chain key under it, a chain
//! key under mps-kek moves to mps-kek-2 inside the HSM, and `retire_kek` refuses the newest
//! KEK and an older one not yet drained, then destroys a drained one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{Sim, approved, authorize, eventually, token};
use mps_hsm::ceremony::{CeremonyError, mark_kek_drained, retire_kek, rotate_kek};
use mps_hsm::testing::wrap_known_chain_key;
use mps_hsm::{HsmError, SessionError, WrappedChainKey};
use mps_protocol::Rsn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_adopt_rewrap_drain_retire() {
    let token = token();
    let hsm = token.hsm().await.unwrap();
    let pin = token.user_pin();
    assert_eq!(hsm.kek_version_newest(), 1);
    let mut sim = Sim::new([0x61; 32], Rsn([9; 8]));
    let under_v1 = wrap_known_chain_key(&hsm, sim.chain_key.expose()).await.unwrap();
    assert_eq!(under_v1.kek_version, 1);

    let (version, label) = rotate_kek(&token.config, &pin).unwrap();
    assert_eq!((version, label.as_str()), (2, "mps-kek-2"));
    // The running pool finds the rotated KEK by itself (kek_refresh_ms, 500 ms in tests).
    assert!(
        eventually(Duration::from_secs(10), async || hsm.kek_version_newest() == 2).await,
        "pool adopted mps-kek-2"
    );

    // An older chain key still opens under mps-kek, and the next one is stored under mps-kek-2.
    let sealed = authorize(&hsm, &under_v1, &sim, [1; 16]).await;
    assert_eq!(sealed.wrapped_next_chain_key.kek_version, 2);
    sim.accept(&sealed.answer);
    let opened_v2 = hsm
        .open_session(&sealed.wrapped_next_chain_key, sim.next_counter(), sim.rsn, &sim.packet(10, [2; 16]))
        .await
        .unwrap();
    drop(opened_v2);

    // Rewrap: the same chain key, now under mps-kek-2; byte-equal to wrapping it there directly.
    let old = WrappedChainKey { kek_version: 1, ..under_v1 };
    let moved = hsm.rewrap_chain_key(&old).await.unwrap().expect("moved to the newest KEK");
    assert_eq!(moved, wrap_known_chain_key(&hsm, &[0x61; 32]).await.unwrap());
    assert_eq!(hsm.rewrap_chain_key(&moved).await.unwrap(), None, "already under the newest KEK");
    let mut damaged = old;
    damaged.bytes[9] ^= 1;
    assert!(matches!(hsm.rewrap_chain_key(&damaged).await, Err(HsmError::WrappedKeyInvalid)));

    // Retiring: never the newest, never one that may still be needed.
    let refused = retire_kek(&token.config, &pin, 2).unwrap_err();
    assert!(matches!(refused, CeremonyError::KekRefused { .. }), "{refused:?}");
    let refused = retire_kek(&token.config, &pin, 1).unwrap_err();
    assert!(matches!(refused, CeremonyError::KekRefused { .. }), "{refused}");
    assert!(refused.to_string().contains("authz keys rewrap"), "{refused}");
    assert!(matches!(mark_kek_drained(&token.config, &pin, 2), Err(CeremonyError::KekRefused { .. })));
    assert_eq!(mark_kek_drained(&token.config, &pin, 1).unwrap(), "mps-kek");
    assert_eq!(retire_kek(&token.config, &pin, 1).unwrap(), "mps-kek");
    assert!(matches!(retire_kek(&token.config, &pin, 1), Err(CeremonyError::Hsm(HsmError::KeyNotFound { .. }))));

    // After a re-initialisation the pool has no copy of mps-kek left: a chain key under it
    // no longer opens, and one under mps-kek-2 does. A new pool starts with mps-kek-2 alone.
    hsm.recycle().await.unwrap();
    let err = hsm.open_session(&under_v1, sim.next_counter(), sim.rsn, &sim.packet(10, [4; 16])).await;
    assert!(matches!(err, Err(SessionError::Hsm(HsmError::KeyNotFound { .. }))), "{err:?}");
    let fresh = token.hsm().await.unwrap();
    assert_eq!(fresh.kek_version_newest(), 2);
    let opened = fresh
        .open_session(&sealed.wrapped_next_chain_key, sim.next_counter(), sim.rsn, &sim.packet(10, [5; 16]))
        .await
        .unwrap();
    fresh.seal_answer(opened.ticket, approved(5)).await.unwrap();
}
