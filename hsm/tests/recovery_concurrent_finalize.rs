//! Two pools of one process share the PKCS#11 module. One of them re-initialises the module
//! (a recycle: C_Finalize, C_Initialize) again and again while the other is busy with HSM
//! work: C_Finalize waits until no call of either pool is inside the module, so nothing
//! crashes (finalising under a running call frees what the call uses: a segfault on SoftHSM),
//! the busy pool sees at most `Unavailable` and recovers by itself, and every answer it gives
//! is right. Alone in its binary, as it re-initialises the module under everyone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{eventually, token};
use mps_hsm::{Hsm, HsmError};

const RECYCLES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recycling_one_pool_never_finalises_under_the_other_pools_calls() {
    let token = token();
    let mut config = token.config.clone();
    config.reconnect_backoff_min_ms = 10;
    config.reconnect_backoff_max_ms = 50;
    config.pool_size = 2;
    let busy = Hsm::connect(config.clone()).await.unwrap();
    let recycler = Hsm::connect(config.clone()).await.unwrap();
    let public_key = busy.signing_public_key();
    let verifying = p256::ecdsa::VerifyingKey::from_sec1_bytes(&public_key).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (signed, unavailable) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for caller in 0..4u8 {
        let (busy, stop, signed, unavailable) =
            (busy.clone(), Arc::clone(&stop), Arc::clone(&signed), Arc::clone(&unavailable));
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let message = [&[caller][..], &n.to_be_bytes()].concat();
                match busy.sign_es256(&message).await {
                    Ok(signature) => {
                        let signature = p256::ecdsa::Signature::from_slice(&signature).unwrap();
                        p256::ecdsa::signature::Verifier::verify(&verifying, &message, &signature)
                            .expect("every signature the busy pool gives verifies");
                        signed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(HsmError::Unavailable) => {
                        unavailable.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(other) => panic!("the busy pool failed otherwise than Unavailable: {other:?}"),
                }
            }
        }));
    }
    for _ in 0..RECYCLES {
        tokio::time::sleep(Duration::from_millis(20)).await;
        recycler.recycle().await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(eventually(Duration::from_secs(20), async || busy.is_ready()).await, "the busy pool recovered");
    busy.sign_es256(b"after").await.unwrap();
    println!(
        "{RECYCLES} recycles under load: {} signatures, {} Unavailable",
        signed.load(Ordering::Relaxed),
        unavailable.load(Ordering::Relaxed)
    );
    assert!(signed.load(Ordering::Relaxed) > 0);
}
