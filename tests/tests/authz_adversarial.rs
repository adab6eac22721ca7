//! Hostile packets: every single-bit flip of a valid packet (all 904 bits) and every
//! truncation of it is refused, none changes anything, and none gets a SIM answer; then the
//! genuine packet is approved exactly once. The bank's limit on MAC failures per SIM and
//! merchant is off here, so that every flip reaches the check it targets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;

use base64::Engine as _;
use mps_protocol::wire::PACKET_LEN;
use mps_tests::{AccountSpec, Bank};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_bit_flip_and_truncation_of_a_packet_is_refused_and_changes_nothing() {
    let mut bank = Bank::builder().with_config(|c| c.issuer.mac_failure_limit = 0).start().await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000081", "2468", 10_000)).await;
    let other = bank.create_account(&AccountSpec::debit("4000120000000082", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000081", &[&account]).await;
    let _neighbour = bank.new_sim("8949012300000000082", &[&other]).await;
    let packet = sim.pay(&account, "ADV-1", 500, "2468");
    assert_eq!(packet.len(), PACKET_LEN);
    let gateway = bank.gateway();
    let mut outcomes: BTreeMap<(u16, String), usize> = BTreeMap::new();

    for bit in 0..PACKET_LEN * 8 {
        let mut flipped = packet.clone();
        flipped[bit / 8] ^= 0x80 >> (bit % 8);
        let (body, jws) = bank.merchant.request(&flipped, "ADV-1", 500, 978);
        let answer = bank.post(&gateway, body, Some(&jws)).await.unwrap();
        assert!(!(answer.status == 200 && answer.code() == "00"), "bit {bit} flipped was approved: {:?}", answer.json);
        assert!(answer.json["payer_answer"].is_null(), "bit {bit} flipped got a SIM answer");
        *outcomes.entry((answer.status, answer.code().to_owned())).or_default() += 1;
    }
    for length in 0..PACKET_LEN {
        let body = serde_json::json!({
            "payer_packet": base64::engine::general_purpose::STANDARD.encode(&packet[..length]),
            "merchant_id": mps_tests::MERCHANT_ID,
            "order_no": "ADV-1",
            "amount": 500,
            "currency": 978,
            "acquirer_iin": mps_tests::ACQUIRER_IIN,
            "merchant_account": mps_tests::MERCHANT_ACCOUNT,
            "merchant_time": "2026-11-26T12:00:00Z",
        });
        let body = serde_json::to_vec(&body).unwrap();
        let jws = bank.merchant.sign(&body);
        let answer = bank.post(&gateway, body, Some(&jws)).await.unwrap();
        assert_eq!((answer.status, answer.code()), (400, "30"), "a packet of {length} bytes: {:?}", answer.json);
    }
    println!("{} bit flips answered: {outcomes:?}", PACKET_LEN * 8);
    assert_eq!(bank.available(&account).await, 10_000, "nothing moved");
    assert_eq!(bank.available(&other).await, 10_000, "nothing moved on the neighbour's account");

    let genuine = bank.authorize(&packet, "ADV-1", 500).await;
    assert_eq!(genuine.code(), "00", "{:?}", genuine.json);
    sim.read_answer(&genuine);
    assert_eq!(bank.available(&account).await, 9_500);
    bank.ledger.audit().await.unwrap();
    bank.shutdown().await;
}
