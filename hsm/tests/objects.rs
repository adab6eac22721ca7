//! No session object outlives its operation: the count of session objects in the process is
//! the same before and after many authorizations, successful and failing. Alone in its test
//! binary, so that no other test creates objects meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{Sim, authorize, eventually, hsm, session_objects, token};
use mps_hsm::testing::wrap_known_chain_key;
use mps_hsm::{HsmError, SessionError};
use mps_protocol::{Account, Password, Rsn, SimId};

#[tokio::test]
async fn session_objects_are_destroyed_on_every_path() {
    let hsm = hsm().await;
    let sim = Sim::new([0x88; 32], Rsn([0xAA; 8]));
    let wrapped = wrap_known_chain_key(&hsm, sim.chain_key.expose()).await.unwrap();
    let sim_id = SimId::new(common::SIM_ID).unwrap();
    // Warm both workers (their key copies exist from attach on; this only settles the pool).
    let before = session_objects(&hsm).await;
    let before_metrics = hsm.metrics();

    for round in 0..60u8 {
        let packet = sim.packet(100, [round; 16]);
        match round % 6 {
            0 => {
                authorize(&hsm, &wrapped, &sim, [round; 16]).await;
            }
            1 => {
                let mut bad = packet.clone();
                bad.mac[0] ^= 1;
                let err = hsm.open_session(&wrapped, packet.fields.counter, sim.rsn, &bad).await;
                assert!(matches!(err, Err(SessionError::BadMac)), "{err:?}");
            }
            2 => {
                let bad = sim.packet_with_bad_secret([round; 16]);
                let err = hsm.open_session(&wrapped, bad.fields.counter, sim.rsn, &bad).await;
                assert!(matches!(err, Err(SessionError::BadSecret)), "{err:?}");
            }
            3 => {
                // Opened, then abandoned: the ticket's Drop discards the keys.
                drop(hsm.open_session(&wrapped, packet.fields.counter, sim.rsn, &packet).await.unwrap());
            }
            4 => {
                let mut garbage = wrapped;
                garbage.bytes[0] ^= 1;
                let err = hsm.open_session(&garbage, packet.fields.counter, sim.rsn, &packet).await;
                assert!(matches!(err, Err(SessionError::Hsm(HsmError::WrappedKeyInvalid))), "{err:?}");
                let err = hsm.register_sim(&sim_id, "mps-tk-nobody").await;
                assert!(matches!(err, Err(HsmError::KeyNotFound { .. })), "{err:?}");
            }
            _ => {
                hsm.register_sim(&sim_id, &token().transport_key_label).await.unwrap();
                let account = Account::new(common::ACCOUNT).unwrap();
                hsm.password_verification_value(&account, &Password::new("1234").unwrap()).await.unwrap();
                hsm.sign_es256(b"x").await.unwrap();
            }
        }
    }

    assert!(eventually(Duration::from_secs(5), async || hsm.metrics().open_sessions == 0).await);
    let after = session_objects(&hsm).await;
    assert_eq!(after, before, "session objects before and after");
    let metrics = hsm.metrics();
    // 10 full authorizations alone create 40 objects: the count above saw real work.
    assert!(metrics.objects_created_total >= before_metrics.objects_created_total + 100, "{metrics:?}");
    assert_eq!(metrics.destroy_failures_total, 0);
    let errors = |kind: &str| metrics.errors_total.iter().find(|(k, _)| *k == kind).map(|(_, c)| *c).unwrap();
    assert_eq!(errors("bad_mac"), 10);
    assert_eq!(errors("bad_secret"), 10);
}
