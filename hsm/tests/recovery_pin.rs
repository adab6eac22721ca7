//! A PIN refused at re-login (it was changed under the running pool) stops the retries: most
//! HSMs lock a PIN after a few wrong tries. The pool stays down, even once the PIN is right
//! again, until `recycle()` asks for one more attempt. Alone in its binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{raw_session, token};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use mps_hsm::testing::{USER_PIN, close_all_sessions};
use mps_hsm::{Hsm, HsmConfig, HsmError};

/// C_SetPIN from a session of our own.
fn change_user_pin(config: &HsmConfig, old: &str, new: &str) {
    let session = raw_session(config);
    session.login(UserType::User, Some(&AuthPin::from(old))).unwrap();
    session.set_pin(&AuthPin::from(old), &AuthPin::from(new)).unwrap();
    session.logout().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_pin_is_not_retried_until_recycle() {
    let mut config = token().config.clone();
    config.reconnect_backoff_min_ms = 1_000;
    config.reconnect_backoff_max_ms = 1_000;
    let hsm = Hsm::connect(config.clone()).await.unwrap();
    hsm.sign_es256(b"before").await.unwrap();

    close_all_sessions(&config).unwrap();
    assert!(matches!(hsm.sign_es256(b"x").await, Err(HsmError::Unavailable)));
    // Within the first backoff, the PIN changes: the supervisor's login will be refused.
    change_user_pin(&config, USER_PIN, "a-new-user-pin-99");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    change_user_pin(&config, "a-new-user-pin-99", USER_PIN);
    // The PIN is right again, but a pool that stopped retrying stays down.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert!(!hsm.is_ready(), "the pool must not have retried the login");
    assert_eq!(hsm.metrics().reconnects_total, 0);
    assert!(matches!(hsm.random_bytes(8).await, Err(HsmError::Unavailable)));

    hsm.recycle().await.unwrap();
    assert!(hsm.is_ready());
    hsm.sign_es256(b"after").await.unwrap();
    assert_eq!(hsm.metrics().reconnects_total, 1);
}
