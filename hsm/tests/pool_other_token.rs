//! A member of a pool that holds other keys than the first (another token, with a key ceremony
//! of its own) stops the pool at connect, named.
//!
//! A process of its own, with this one test: making the other token writes token objects
//! through a copy of the module, and SoftHSM's file locks are fcntl locks, which do not hold
//! between two copies of the module in one process. A test of another file running meanwhile
//! in the same process read a half-written token file and failed with CKR_GENERAL_ERROR.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::token;
use mps_hsm::{Hsm, HsmError, HsmMember};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_other_keys_is_refused_and_named() {
    let token = token();
    let other = token.other_token("mps-other").unwrap();
    let mut config = token.config.clone();
    config.additional = Some(vec![HsmMember {
        module_path: other.module_path.clone(),
        token_label: Some("mps-other".to_owned()),
        pin_env: None,
        pin_file: None,
        pool_size: Some(1),
    }]);
    let err = Hsm::connect(config.clone()).await.unwrap_err();
    assert!(
        matches!(&err, HsmError::MemberKeysDiffer { member: 1, token_label, .. } if token_label == "mps-other"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("HSM 1") && text.contains("mps-other") && text.contains("signing"), "{text}");

    // The other token on its own is a valid pool: it is only refused beside the first.
    let alone = Hsm::connect(other).await.unwrap();
    assert!(alone.is_ready());
}
