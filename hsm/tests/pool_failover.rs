//! Failover in a pool of two HSMs: one member's module is finalised under it again and again
//! (an HSM that keeps failing); authorizations go on on the other member, every one that
//! succeeds verifies on the SIM, the one that meets the failed member (and finds it gone)
//! fails with `Unavailable`, never a wrong answer, and the member takes work again once its
//! supervisor has reconnected it. Alone in its binary: it finalises a module copy.
//!
//! The fault is injected between operations, with the member idle: C_Finalize while another
//! thread is inside a SoftHSM call frees memory under that call (a crash no real HSM outage
//! causes, so the test does not provoke it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{Sim, eventually, token};
use mps_hsm::testing::{finalize_module_behind_the_pool, wrap_known_chain_key};
use mps_hsm::{Hsm, HsmError, SessionError};
use mps_protocol::Rsn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_moves_to_the_healthy_member_and_back() {
    let mut config = token().pool_config(2).unwrap();
    config.reconnect_backoff_min_ms = 300;
    config.reconnect_backoff_max_ms = 300;
    // No periodic KEK look on the anchor session while the test finalises the module.
    config.kek_refresh_ms = 600_000;
    let failing = config.members()[1].clone();
    let hsm = Hsm::connect(config).await.unwrap();
    let mut sim = Sim::new([0x71; 32], Rsn([7; 8]));
    let mut wrapped = wrap_known_chain_key(&hsm, sim.chain_key.expose()).await.unwrap();

    let (mut succeeded, mut unavailable, mut faults, mut while_down) = (0u32, 0u32, 0u32, 0u32);
    for round in 0..100u8 {
        if round % 20 == 0 {
            // Up again (its supervisor reconnected it), then fails once more.
            assert!(eventually(Duration::from_secs(10), async || hsm.members_ready() == [true, true]).await);
            finalize_module_behind_the_pool(&failing).unwrap();
            faults += 1;
        }
        let member_down = !hsm.members_ready()[1];
        let packet = sim.packet(1250, [round; 16]);
        let opened = match hsm.open_session(&wrapped, packet.fields.counter, sim.rsn, &packet).await {
            Ok(opened) => opened,
            Err(SessionError::Hsm(HsmError::Unavailable)) => {
                unavailable += 1;
                continue;
            }
            Err(e) => panic!("only Unavailable may fail: {e:?}"),
        };
        match hsm.seal_answer(opened.ticket, common::approved(1000)).await {
            Ok(sealed) => {
                // The SIM's reference code opens the answer: right keys, right MAC.
                sim.accept(&sealed.answer);
                wrapped = sealed.wrapped_next_chain_key;
                succeeded += 1;
                while_down += u32::from(member_down);
            }
            Err(HsmError::Unavailable) => unavailable += 1,
            Err(e) => panic!("only Unavailable may fail: {e:?}"),
        }
    }
    let metrics = hsm.metrics();
    let figures = format!(
        "{succeeded} ok, {unavailable} unavailable, {faults} faults, {while_down} while down: {:?}",
        metrics.members
    );
    assert!(faults >= 4, "{figures}");
    // At most the one call that finds the member gone fails per fault (it takes the open or
    // the seal); after that the member takes no work until it is back.
    assert!(unavailable <= faults, "{figures}");
    assert!(while_down >= faults, "work goes on on member 0 while member 1 is down: {figures}");
    assert_eq!(metrics.members[0].errors_total, 0, "{figures}");
    // Each fault but the last has been recovered by member 1's supervisor.
    assert!(metrics.members[1].reconnects_total >= u64::from(faults - 1), "{figures}");

    // Healthy again: it comes back in and takes work, and nothing fails any more.
    assert!(eventually(Duration::from_secs(10), async || hsm.members_ready() == [true, true]).await);
    let second_back = hsm.metrics().members[1].operations_total;
    for round in 0..20u8 {
        let sealed = common::authorize(&hsm, &wrapped, &sim, [round; 16]).await;
        sim.accept(&sealed.answer);
        wrapped = sealed.wrapped_next_chain_key;
    }
    let after = hsm.metrics();
    assert!(after.members[1].operations_total >= second_back + 10, "{:?}", after.members);
    assert_eq!(after.members[0].errors_total, 0);
}
