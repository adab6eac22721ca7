//! Garbage under a victim's SIM id cannot starve the victim. Packets whose MAC fails are
//! checked without the SIM's lock and refused (63, signed) without waiting for it; they never
//! block the SIM; and past a limit per SIM and sending merchant, that merchant's packets for the
//! SIM get 429 before the HSM while other merchants' payments for the SIM go on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use mps_pki::ca::{IssueRequest, Subject};
use mps_protocol::{Currency, MerchantId};
use mps_tests::{AccountSpec, Bank, Merchant, WriteLock};

const LIMIT: u32 = 5;
const ATTACKER: &str = "SHOP-0666";

/// The victim's genuine packet made over to the attacker's merchant id, with one bit of its
/// ciphertext flipped: the clear fields match the attacker's body, the MAC fails.
fn garbage(packet: &[u8], bit: usize) -> Vec<u8> {
    let mut decoded = mps_protocol::wire::PayerPacket::decode(packet).unwrap();
    decoded.fields.merchant_id = MerchantId::new(ATTACKER).unwrap();
    let mut garbage = decoded.encode().to_vec();
    garbage[60 + bit % 40] ^= 1 << (bit % 8);
    garbage
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_under_a_victims_sim_id_neither_waits_for_nor_blocks_it() {
    let mut bank = Bank::builder()
        .with_config(|c| {
            c.issuer.mac_failure_limit = LIMIT;
            c.issuer.mac_failure_window_s = 600;
            c.server.request_timeout_ms = 30_000;
            c.ledger.tuning.busy_timeout_ms = 60_000;
        })
        .start()
        .await;
    let request = IssueRequest::new(Subject::Merchant { merchant_id: MerchantId::new(ATTACKER).unwrap() }, "attacker");
    let attacker = Merchant::from_leaf(ATTACKER, &bank.pki.issue("attacker", &request));
    let account = bank.create_account(&AccountSpec::debit("4000120000000041", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000041", &[&account]).await;
    let send = |merchant: &Merchant, packet: &[u8], order: &str, amount: u64| {
        let (body, jws) = merchant.request(packet, order, amount, Currency::EUR.code());
        let (bank_client, bank_ref) = (bank.gateway(), &bank);
        async move { bank_ref.post(&bank_client, body, Some(&jws)).await.unwrap() }
    };

    // The victim's payment is booking (its SIM's lock held until the disk answers) ...
    let packet = sim.pay(&account, "V-1", 500, "2468");
    let lock = WriteLock::take(&bank.config.ledger.path);
    let honest = {
        let (body, jws) = bank.merchant.request(&packet, "V-1", 500, Currency::EUR.code());
        let (client, url) = (bank.gateway(), bank.url.clone());
        tokio::spawn(async move {
            let response = client
                .post(format!("{url}/v1/authorizations"))
                .header("content-type", "application/json")
                .header("x-jws-signature", jws)
                .body(body)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.bytes().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!honest.is_finished(), "the booking waits for the ledger's write lock");

    // ... and garbage under its SIM id is refused meanwhile: it never waits for that lock.
    for bit in 0..LIMIT as usize {
        let refused =
            tokio::time::timeout(Duration::from_secs(20), send(&attacker, &garbage(&packet, bit), "V-1", 500))
                .await
                .expect("garbage was answered while the SIM's booking held its lock");
        assert_eq!(refused.status, 200, "{:?}", refused.json);
        assert_eq!(refused.code(), "63");
        assert!(refused.json["payer_answer"].is_null());
        bank.verify_bank_signature(&refused);
    }
    assert!(!honest.is_finished(), "the garbage did not need the booking to finish");
    // Past the limit, the attacker's packets for this SIM are refused before the HSM.
    let throttled = send(&attacker, &garbage(&packet, 99), "V-1", 500).await;
    assert_eq!(throttled.status, 429, "{:?}", throttled.json);
    assert!(throttled.header_names.iter().any(|h| h == "retry-after"));
    assert_eq!(bank.metrics().mac_failures.get(), u64::from(LIMIT));

    lock.release();
    let (status, body) = honest.await.unwrap();
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["response_code"], "00", "{json:?}");
    let answer = mps_tests::Answer {
        status,
        body: body.to_vec(),
        json,
        jws: None,
        content_type: None,
        header_names: Vec::new(),
    };
    sim.read_answer(&answer);

    // The SIM was never blocked: its next payment, through the honest merchant, is approved.
    let next = sim.pay(&account, "V-2", 300, "2468");
    let approved = send(&bank.merchant, &next, "V-2", 300).await;
    assert_eq!(approved.code(), "00", "{:?}", approved.json);
    assert_eq!(bank.available(&account).await, 9_200);
    bank.shutdown().await;
}
