//! Known-answer test: the HSM path reproduces `protocol/tests/vectors.json` byte for byte.
//!
//! Keys cannot be read out of the HSM, so each derived key is checked by what it does: the
//! HSM verifies the vector's packet MAC (all 8 bytes), decrypts its secret to the vector's
//! account, seals the vector's answer bytes exactly (with the vector's IV and RSN_{n+1}), and
//! its CK_n wrapped under mps-kek equals the vector's CK_n wrapped the same way (RFC 5649 is
//! deterministic). CK_0 is derived in the HSM from the vector's IMK the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::hsm;
use mps_hsm::testing::{chain_key_0_with_imk, wrap_known_chain_key};
use mps_hsm::{AnswerContent, SessionError};
use mps_protocol::wire::{PayerPacket, ResponseCode};
use mps_protocol::{Account, AuthCode, Counter, Currency, Password, Rsn, SimId, TxnId};
use serde_json::Value;

fn vectors() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/tests/vectors.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn hex_field<const N: usize>(v: &Value) -> [u8; N] {
    let text = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    hex::decode(text).unwrap().try_into().unwrap()
}

fn hex_vec(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn hsm_reproduces_the_protocol_vectors() {
    let v = vectors();
    let hsm = hsm().await;
    let sim_id = SimId::new(v["sim_id"].as_str().unwrap()).unwrap();
    let account = Account::new(v["account"].as_str().unwrap()).unwrap();
    let password = Password::new(v["password"].as_str().unwrap()).unwrap();
    let personalisation = &v["personalisation"];

    // Personalisation: CK_0 derived in the HSM from the vector's IMK is the vector's CK_0.
    let ck0 = hex_field::<32>(&personalisation["chain_key_0"]);
    let mut wrapped = wrap_known_chain_key(&hsm, &ck0).await.unwrap();
    let derived = chain_key_0_with_imk(&hsm, &hex_field(&v["issuer_master_key"]), &sim_id).await.unwrap();
    assert_eq!(derived, wrapped, "CK_0 derived in the HSM");
    let mut rsn = Rsn(hex_field(&personalisation["rsn_1"]));

    let pvv = hsm.password_verification_value(&account, &password).await.unwrap();
    let sessions = v["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    for s in sessions {
        let counter = Counter::new(s["counter"].as_u64().unwrap()).unwrap();
        assert_eq!(Rsn(hex_field(&s["rsn"])), rsn, "RSN_n chains from the previous answer");
        let packet_bytes = hex_vec(&s["packet"]);
        let packet = PayerPacket::decode(&packet_bytes).unwrap();
        assert_eq!(packet.encode().as_slice(), packet_bytes.as_slice());

        // One wrong MAC byte, the last one, is refused: the comparison covers all 8.
        let mut tampered = packet.clone();
        tampered.mac[7] ^= 1;
        let err = hsm.open_session(&wrapped, counter, rsn, &tampered).await.unwrap_err();
        assert!(matches!(err, SessionError::BadMac), "{err:?}");

        let opened = hsm.open_session(&wrapped, counter, rsn, &packet).await.unwrap();
        let secret = hex_vec(&s["secret_plaintext"]);
        assert_eq!(opened.account.to_bcd().as_slice(), &secret[..10], "decrypted account");
        assert_eq!(opened.account, account);
        assert_eq!(opened.password_verification_value, pvv, "decrypted password");

        let answer = &s["answer"];
        let content = AnswerContent {
            response_code: ResponseCode::parse(answer["response_code"].as_str().unwrap()).unwrap(),
            auth_code: AuthCode(answer["auth_code"].as_str().unwrap().as_bytes().try_into().unwrap()),
            balance: answer["balance"].as_i64().unwrap(),
            currency: Currency::from_code(u16::try_from(answer["currency"].as_u64().unwrap()).unwrap()).unwrap(),
            txn_id: TxnId::from_hex(answer["txn_id"].as_str().unwrap()).unwrap(),
        };
        let next_rsn = Rsn(hex_field(&answer["next_rsn"]));
        let sealed = hsm.seal_answer_with(opened.ticket, content, hex_field(&answer["iv"]), next_rsn).await.unwrap();
        assert_eq!(sealed.answer.encode().as_slice(), hex_vec(&answer["bytes"]).as_slice(), "answer bytes");
        assert_eq!(sealed.next_rsn, next_rsn);

        let expected_next = wrap_known_chain_key(&hsm, &hex_field(&s["next_chain_key"])).await.unwrap();
        assert_eq!(sealed.wrapped_next_chain_key, expected_next, "CK_n");
        wrapped = sealed.wrapped_next_chain_key;
        rsn = next_rsn;
    }
}
