//! Signing-key renewal while serving: a new key pair is made in the HSM (`new-signing-key`)
//! and certified through the HSM, the server is configured to switch to it at a time, answers
//! before that time carry the current certificate and after it the new one, both verify, and a
//! retransmission of an answer signed before the switch returns it unchanged, still verifying.
//! A next certificate that does not certify the HSM's next key stops the server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use mps_hsm::Hsm;
use mps_hsm::ceremony::{KeyOutcome, create_signing_key};
use mps_hsm::testing::TestToken;
use mps_pki::Role;
use mps_tests::{AccountSpec, Answer, Bank, request};
use time::format_description::well_known::Rfc3339;

fn leaf_of(answer: &Answer) -> Vec<u8> {
    let jws = answer.jws.as_deref().unwrap();
    let header = jws.split('.').next().unwrap();
    use base64::Engine as _;
    let header: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    base64::engine::general_purpose::STANDARD.decode(header["x5c"][0].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_switch_to_the_next_signing_key_at_its_time() {
    let token = TestToken::shared().unwrap();
    let outcome = tokio::task::spawn_blocking(|| {
        let token = TestToken::shared().unwrap();
        create_signing_key(&token.config, &token.user_pin(), "mps-sign-2")
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(outcome, KeyOutcome::Created);

    // A server pool that keeps mps-sign-2 ready.
    let mut files =
        Bank::builder().with_pool(|pool| pool.keys.signing_next = Some("mps-sign-2".to_owned())).files().await;
    assert!(files.hsm.signing_public_key_next().is_some());
    // The next key's certificate, its request signed inside the HSM by mps-sign-2.
    let mut next_config = token.config.clone();
    next_config.keys.signing = "mps-sign-2".to_owned();
    let next_pool = Hsm::connect(next_config).await.unwrap();
    let next_cert = {
        let signer = mps_pki::HsmSigner::new(next_pool);
        files.pki.issue_for_key("bank-signing-2", &request(Role::BankSigning, "bank"), &signer)
    };
    // The switch 3 seconds from now.
    let switch = time::OffsetDateTime::now_utc() + Duration::from_secs(3);
    files.config.issuer.next_signing_certificate = Some(next_cert.clone());
    files.config.issuer.next_signing_from = Some(switch.format(&Rfc3339).unwrap());
    let bank = Bank::start_from(files).await;

    let account = bank.create_account(&AccountSpec::debit("4000120000000400", "8642", 100_000)).await;
    let mut sim = bank.new_sim("8949012500000000001", &[&account]).await;
    let before_packet = sim.pay(&account, "R-1", 100, "8642");
    let before = bank.authorize(&before_packet, "R-1", 100).await;
    assert_eq!(before.code(), "00");
    sim.read_answer(&before);
    bank.verify_bank_signature(&before);
    let current_leaf = leaf_of(&before);

    while time::OffsetDateTime::now_utc() < switch {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let packet = sim.pay(&account, "R-2", 100, "8642");
    let after = bank.authorize(&packet, "R-2", 100).await;
    assert_eq!(after.code(), "00");
    bank.verify_bank_signature(&after);
    let next_leaf = leaf_of(&after);
    assert_ne!(current_leaf, next_leaf, "after the switch the answer carries the next certificate");
    assert_eq!(next_leaf, mps_pki::pem::load_certificates(&next_cert).unwrap()[0].as_ref());
    // The retransmission of the answer signed after the switch is the stored one, unchanged.
    let again = bank.authorize(&packet, "R-2", 100).await;
    assert_eq!((again.body.clone(), again.jws.clone()), (after.body.clone(), after.jws.clone()));
    // The answer signed before the switch still verifies: its certificate was not revoked.
    bank.verify_bank_signature(&before);
    assert_eq!(leaf_of(&before), current_leaf);
    let mut bank = bank;
    bank.shutdown().await;
    drop(bank);

    // A "next" certificate of another key stops the server at start.
    let mut wrong =
        Bank::builder().with_pool(|pool| pool.keys.signing_next = Some("mps-sign-2".to_owned())).files().await;
    wrong.config.issuer.next_signing_certificate = Some(wrong.bank_cert.clone());
    wrong.config.issuer.next_signing_from = Some("2030-01-01T00:00:00Z".to_owned());
    let config = wrong.config.clone();
    let parts = mps_authz::app::parts_with_hsm(&config, wrong.hsm.clone()).unwrap();
    let err =
        mps_authz::app::start(&config, parts).await.err().expect("a mismatched next certificate must stop the server");
    assert!(err.to_string().contains("issuer.next_signing_certificate certifies another key"), "{err}");
}
