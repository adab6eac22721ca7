//! Automatic recycles in a pool of two HSMs take turns: a member recycles on its own only
//! while the other one is up, so that authorizations go on on the other one meanwhile and
//! none fails. Alone in its binary: it loads module copies and recycles them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Sim, authorize, token};
use mps_hsm::Hsm;
use mps_hsm::testing::wrap_known_chain_key;
use mps_protocol::Rsn;

/// Each member's automatic recycles so far.
fn recycles(hsm: &Hsm) -> Vec<u64> {
    hsm.metrics().members.iter().map(|member| member.recycles_total).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_recycles_take_turns_and_fail_nothing() {
    let mut config = token().pool_config(2).unwrap();
    // Four session objects per authorization: a recycle is due after ten on each member, and
    // both members fill up at the same pace.
    config.recycle_after_objects = 40;
    let hsm = Hsm::connect(config).await.unwrap();

    // Looks at the members' states from a thread of its own until told to stop: how often
    // neither was up, and how often each was away (recycling).
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = std::thread::spawn({
        let (hsm, stop) = (hsm.clone(), Arc::clone(&stop));
        move || {
            let (mut looks, mut both_away, mut away) = (0u64, 0u64, [0u64; 2]);
            while !stop.load(Ordering::Relaxed) {
                let up = hsm.members_up();
                looks += 1;
                for (count, up) in away.iter_mut().zip(&up) {
                    *count += u64::from(!up);
                }
                both_away += u64::from(up.iter().all(|up| !up));
                std::thread::sleep(Duration::from_micros(200));
            }
            (looks, both_away, away)
        }
    });

    // Four SIMs pay at once, each waiting for its answer, until each member has recycled at
    // least three times on its own (a member checks once a second whether one is due).
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut payers = Vec::new();
    for index in 0..4u8 {
        let hsm = hsm.clone();
        payers.push(tokio::spawn(async move {
            let sim = Sim::new([0x50 + index; 32], Rsn([index + 1; 8]));
            let wrapped = wrap_known_chain_key(&hsm, sim.chain_key.expose()).await.unwrap();
            let mut authorized = 0u64;
            while recycles(&hsm).iter().any(|&count| count < 3) && Instant::now() < deadline {
                // Panics (and fails the test) on any error: none may fail during a recycle.
                authorize(&hsm, &wrapped, &sim, [authorized as u8; 16]).await;
                authorized += 1;
            }
            authorized
        }));
    }
    let mut authorized = 0;
    for payer in payers {
        authorized += payer.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (looks, both_away, away) = watcher.join().unwrap();

    let figures = format!(
        "{authorized} authorizations, recycles {:?}; of {looks} looks, member 0 away in {}, member 1 in {}, \
         both in {both_away}",
        recycles(&hsm),
        away[0],
        away[1]
    );
    assert!(recycles(&hsm).iter().all(|&count| count >= 3), "{figures}");
    assert!(away.iter().all(|&count| count > 0), "the watcher saw each member recycling: {figures}");
    assert_eq!(both_away, 0, "never both members away at once: {figures}");
    assert!(hsm.metrics().members.iter().all(|member| member.errors_total == 0), "{figures}");
    eprintln!("{figures}");
}
