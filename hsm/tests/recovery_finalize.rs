//! The module finalised behind the pool's back while the token is gone: every operation
//! returns `Unavailable` for as long as the token stays away, the supervisor keeps retrying
//! with backoff, and the pool comes back by itself when the token does. Alone in its binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{Sim, authorize, eventually, token};
use mps_hsm::testing::{finalize_module_behind_the_pool, wrap_known_chain_key};
use mps_hsm::{Hsm, HsmError};
use mps_protocol::Rsn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalized_module_is_recovered_when_the_token_is_back() {
    let token = token();
    let mut config = token.config.clone();
    config.reconnect_backoff_min_ms = 50;
    config.reconnect_backoff_max_ms = 200;
    let hsm = Hsm::connect(config.clone()).await.unwrap();
    let sim = Sim::new([0x43; 32], Rsn([2; 8]));
    let wrapped = wrap_known_chain_key(&hsm, sim.chain_key.expose()).await.unwrap();
    authorize(&hsm, &wrapped, &sim, [1; 16]).await;

    // Take the token away, then finalise the module under the pool.
    let tokens = token.dir.join("tokens");
    let away = token.dir.join("tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    finalize_module_behind_the_pool(&config).unwrap();

    let err = hsm.sign_es256(b"x").await.unwrap_err();
    assert!(matches!(err, HsmError::Unavailable), "{err:?}");
    // Several backoff rounds pass; the pool stays down and answers at once.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!hsm.is_ready());
        assert!(matches!(hsm.random_bytes(8).await, Err(HsmError::Unavailable)));
    }
    assert_eq!(hsm.metrics().reconnects_total, 0);

    std::fs::rename(&away, &tokens).unwrap();
    assert!(eventually(Duration::from_secs(20), async || hsm.is_ready()).await, "pool recovered");
    authorize(&hsm, &wrapped, &sim, [2; 16]).await;
    assert_eq!(hsm.metrics().reconnects_total, 1);
}
