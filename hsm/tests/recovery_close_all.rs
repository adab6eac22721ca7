//! C_CloseAllSessions from another handle closes the pool's sessions and logs the token out
//! under its feet: operations fail at once with `Unavailable` (no hang, no approval) and the
//! pool recovers by itself. Alone in its binary: the outage hits the whole process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{Sim, approved, authorize, eventually, token};
use mps_hsm::testing::{close_all_sessions, wrap_known_chain_key};
use mps_hsm::{Hsm, HsmError, SessionError};
use mps_protocol::Rsn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_sessions_are_recovered_without_a_restart() {
    let mut config = token().config.clone();
    // A long first backoff keeps the outage observable.
    config.reconnect_backoff_min_ms = 1_500;
    config.reconnect_backoff_max_ms = 3_000;
    let hsm = Hsm::connect(config.clone()).await.unwrap();
    let sim = Sim::new([0x42; 32], Rsn([1; 8]));
    let wrapped = wrap_known_chain_key(&hsm, sim.chain_key.expose()).await.unwrap();
    authorize(&hsm, &wrapped, &sim, [1; 16]).await;
    let packet = sim.packet(100, [2; 16]);
    let opened_before = hsm.open_session(&wrapped, packet.fields.counter, sim.rsn, &packet).await.unwrap();
    assert!(hsm.is_ready());

    close_all_sessions(&config).unwrap();

    // The first operation finds its session gone.
    let err = hsm.sign_es256(b"during the outage").await.unwrap_err();
    assert!(matches!(err, HsmError::Unavailable), "{err:?}");
    assert!(!hsm.is_ready());
    // While down, everything fails at once, nothing waits for the op timeout.
    let started = std::time::Instant::now();
    let err = hsm.open_session(&wrapped, packet.fields.counter, sim.rsn, &packet).await.unwrap_err();
    assert!(matches!(err, SessionError::Hsm(HsmError::Unavailable)), "{err:?}");
    assert!(matches!(hsm.random_bytes(8).await, Err(HsmError::Unavailable)));
    assert!(matches!(hsm.blocking_sign_es256(b"x"), Err(HsmError::Unavailable)));
    assert!(started.elapsed() < Duration::from_millis(1_000), "fail fast, do not queue");

    assert!(eventually(Duration::from_secs(20), async || hsm.is_ready()).await, "pool recovered");
    // The session opened before the outage died with its HSM session.
    let err = hsm.seal_answer(opened_before.ticket, approved(1)).await.unwrap_err();
    assert!(matches!(err, HsmError::Unavailable), "{err:?}");
    // Everything works again, with the same stored chain key.
    authorize(&hsm, &wrapped, &sim, [3; 16]).await;
    hsm.sign_es256(b"after").await.unwrap();
    let metrics = hsm.metrics();
    assert_eq!(metrics.reconnects_total, 1, "{metrics:?}");
    assert!(metrics.errors_total.iter().any(|(kind, count)| *kind == "unavailable" && *count >= 4));
}
