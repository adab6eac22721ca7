//! Two copies of the PKCS#11 module in one process on one SoftHSM token (what a pool over
//! "two HSMs" is in the demo and the tests) connect again and again at the same time. Every
//! C_Login rewrites the token's own file (`token.object`, its flags), and C_Initialize and
//! C_GetTokenInfo read it; SoftHSM guards it with POSIX record locks, which never exclude two
//! holders in one process. Without the crate's process-wide lock around those steps one copy
//! reads the file while the other rewrites it and a connect fails (C_GetTokenInfo answers
//! CKR_GENERAL_ERROR: the CI failure of 2026-12-01). Alone in its binary, as it re-initialises
//! the module under everyone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::token;
use mps_hsm::Hsm;
use mps_hsm::testing::module_copy;

const RECYCLES: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_module_copies_connect_at_once_without_reading_a_half_written_token_file() {
    let token = token();
    let first = token.config.clone();
    let mut second = first.clone();
    second.module_path = module_copy(&first.module_path, &token.dir, "token-file").unwrap();
    let (a, b) = (Hsm::connect(first).await.unwrap(), Hsm::connect(second).await.unwrap());

    // Each recycle finalises its copy and connects it again: C_Initialize, C_GetTokenInfo and
    // C_Login (which writes the token file), while the other copy does the same.
    let run = |hsm: Hsm| {
        tokio::spawn(async move {
            for round in 0..RECYCLES {
                if let Err(e) = hsm.recycle().await {
                    panic!("recycle {round} failed: {e:?}");
                }
            }
            hsm.sign_es256(b"after").await.unwrap();
        })
    };
    let (ra, rb) = (run(a), run(b));
    ra.await.unwrap();
    rb.await.unwrap();
}
