//! Known-answer vectors: three successive sessions of one SIM, every intermediate value.
//!
//! `vectors.json` beside this file is the contract other implementations (and the HSM path of
//! the issuer, in `hsm/tests`) check themselves against byte for byte. This test rebuilds every
//! value from the fixed inputs and compares; `MPS_WRITE_VECTORS=1 cargo test -p mps-protocol
//! --test vectors` rewrites the file (only ever on purpose: a change is a protocol change).
//! A second test recomputes the key schedule, the CBC encryption and the CMAC with the
//! `openssl` command line tool, so the file does not rest on our code alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::process::Command;

use mps_protocol::keys::{self, AesKey, SessionKeys};
use mps_protocol::perso::wrap_key;
use mps_protocol::wire::{
    AnswerPlain, AuthCode, ClearFields, PayerAnswer, PayerPacket, PaymentSecret, ResponseCode, TxnId,
};
use mps_protocol::{Account, Amount, Counter, Currency, Iin, MerchantId, OrderNo, Password, Rsn, SimId};
use serde_json::{Value, json};

const ISSUER_MASTER_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const TRANSPORT_KEY: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const IIN: &str = "400012";
const SIM_ID: &str = "8949012345678901234";
const ACCOUNT: &str = "4000120000001234";
const PASSWORD: &str = "2468ab";
const RSN_1: &str = "a1a2a3a4a5a6a7a8";

/// Per session: merchant, order, amount, currency, packet IV, answer (code, auth code,
/// balance), answer IV, next RSN, txn id.
struct SessionInput {
    merchant_id: &'static str,
    order_no: &'static str,
    amount: u64,
    packet_iv: &'static str,
    response_code: ResponseCode,
    auth_code: &'static str,
    balance: i64,
    answer_iv: &'static str,
    next_rsn: &'static str,
    txn_id: &'static str,
}

const SESSIONS: [SessionInput; 3] = [
    SessionInput {
        merchant_id: "COFFEE-SHOP-01",
        order_no: "ORD-0000001",
        amount: 1250,
        packet_iv: "101112131415161718191a1b1c1d1e1f",
        response_code: ResponseCode::Approved,
        auth_code: "A1B2C3",
        balance: 98750,
        answer_iv: "202122232425262728292a2b2c2d2e2f",
        next_rsn: "b1b2b3b4b5b6b7b8",
        txn_id: "0123456789abcdef0123456789abcdef",
    },
    SessionInput {
        merchant_id: "BOOKSTORE-0042",
        order_no: "INV-77",
        amount: 500000,
        packet_iv: "303132333435363738393a3b3c3d3e3f",
        response_code: ResponseCode::InsufficientFunds,
        auth_code: "      ",
        balance: 98750,
        answer_iv: "404142434445464748494a4b4c4d4e4f",
        next_rsn: "c1c2c3c4c5c6c7c8",
        txn_id: "fedcba9876543210fedcba9876543210",
    },
    SessionInput {
        merchant_id: "COFFEE-SHOP-01",
        order_no: "ORD-0000002",
        amount: 380,
        packet_iv: "505152535455565758595a5b5c5d5e5f",
        response_code: ResponseCode::Approved,
        auth_code: "Z9Y8X7",
        balance: 98370,
        answer_iv: "606162636465666768696a6b6c6d6e6f",
        next_rsn: "d1d2d3d4d5d6d7d8",
        txn_id: "00112233445566778899aabbccddeeff",
    },
];

fn key(hex_text: &str) -> AesKey {
    AesKey::from_bytes(hex::decode(hex_text).unwrap().try_into().unwrap())
}

fn bytes<const N: usize>(hex_text: &str) -> [u8; N] {
    hex::decode(hex_text).unwrap().try_into().unwrap()
}

fn build_vectors() -> Value {
    let imk = key(ISSUER_MASTER_KEY);
    let sim_id = SimId::new(SIM_ID).unwrap();
    let iin = Iin::new(IIN).unwrap();
    let secret = PaymentSecret { account: Account::new(ACCOUNT).unwrap(), password: Password::new(PASSWORD).unwrap() };
    let perso_ctx = keys::personalisation_context(&sim_id);
    let ck0 = keys::derive_chain_key_0(&imk, &sim_id);
    let wrapped_ck0 = wrap_key(&key(TRANSPORT_KEY), &ck0);

    let mut chain = ck0.clone();
    let mut rsn = Rsn::from_hex(RSN_1).unwrap();
    let mut sessions = Vec::new();
    for (index, input) in SESSIONS.iter().enumerate() {
        let counter = Counter::new(index as u64 + 1).unwrap();
        let ctx = keys::session_context(counter, &rsn);
        let session_keys = SessionKeys::derive(&chain, counter, &rsn);
        let fields = ClearFields {
            iin,
            sim_id: sim_id.clone(),
            counter,
            merchant_id: MerchantId::new(input.merchant_id).unwrap(),
            order_no: OrderNo::new(input.order_no).unwrap(),
            amount: Amount::from_minor(input.amount),
            currency: Currency::EUR,
        };
        let packet = PayerPacket::seal(&session_keys, fields, &secret, bytes(input.packet_iv));
        let plain = AnswerPlain {
            response_code: input.response_code,
            auth_code: AuthCode(input.auth_code.as_bytes().try_into().unwrap()),
            balance: input.balance,
            currency: Currency::EUR,
            next_rsn: Rsn::from_hex(input.next_rsn).unwrap(),
            txn_id: TxnId::from_hex(input.txn_id).unwrap(),
        };
        let answer = PayerAnswer::seal(&session_keys, counter, &plain, bytes(input.answer_iv));
        sessions.push(json!({
            "counter": counter.value(),
            "rsn": rsn.to_hex(),
            "context": hex::encode(ctx),
            "derivation_data": {
                "encryption": hex::encode(keys::kdf_data(keys::LABEL_ENCRYPTION, &ctx)),
                "integrity": hex::encode(keys::kdf_data(keys::LABEL_INTEGRITY, &ctx)),
                "chain": hex::encode(keys::kdf_data(keys::LABEL_CHAIN, &ctx)),
            },
            "encryption_key": hex::encode(session_keys.encryption.expose()),
            "integrity_key": hex::encode(session_keys.integrity.expose()),
            "next_chain_key": hex::encode(session_keys.next_chain.expose()),
            "merchant_id": input.merchant_id,
            "order_no": input.order_no,
            "amount": input.amount,
            "currency": Currency::EUR.code(),
            "packet_iv": input.packet_iv,
            "secret_plaintext": hex::encode(&secret.to_plaintext()[..]),
            "packet": hex::encode(packet.encode()),
            "answer": {
                "response_code": input.response_code.as_str(),
                "auth_code": input.auth_code,
                "balance": input.balance,
                "currency": Currency::EUR.code(),
                "next_rsn": input.next_rsn,
                "txn_id": input.txn_id,
                "iv": input.answer_iv,
                "plaintext": hex::encode(&plain.to_plaintext()[..]),
                "bytes": hex::encode(answer.encode()),
            },
        }));
        chain = session_keys.next_chain.clone();
        rsn = plain.next_rsn;
    }

    json!({
        "description": "MPS known-answer vectors (DESIGN.md sections 3-5, 9): personalisation and three successive sessions of one SIM. All byte strings are lower-case hex. KDF(K,label,ctx) = AES-256-ECB(K, derivation_data); derivation_data = label||01||ctx||label||02||ctx.",
        "issuer_master_key": ISSUER_MASTER_KEY,
        "transport_key": TRANSPORT_KEY,
        "iin": IIN,
        "sim_id": SIM_ID,
        "account": ACCOUNT,
        "password": PASSWORD,
        "personalisation": {
            "context": hex::encode(perso_ctx),
            "derivation_data": hex::encode(keys::kdf_data(keys::LABEL_PERSONALISATION, &perso_ctx)),
            "chain_key_0": hex::encode(ck0.expose()),
            "wrapped_chain_key_0": hex::encode(wrapped_ck0),
            "rsn_1": RSN_1,
        },
        "sessions": sessions,
    })
}

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("vectors.json")
}

fn committed() -> Value {
    serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap()
}

#[test]
fn vectors_file_matches_the_implementation() {
    let built = build_vectors();
    if std::env::var_os("MPS_WRITE_VECTORS").is_some() {
        std::fs::write(vectors_path(), serde_json::to_string_pretty(&built).unwrap() + "\n").unwrap();
    }
    assert_eq!(committed(), built, "protocol/tests/vectors.json differs from what the code computes");
}

#[test]
fn vectors_decode_and_open_with_the_sim_side_code() {
    let v = committed();
    let mut chain = key(v["personalisation"]["chain_key_0"].as_str().unwrap());
    for s in v["sessions"].as_array().unwrap() {
        let rsn = Rsn::from_hex(s["rsn"].as_str().unwrap()).unwrap();
        let counter = Counter::new(s["counter"].as_u64().unwrap()).unwrap();
        let session_keys = SessionKeys::derive(&chain, counter, &rsn);
        let packet_bytes = hex::decode(s["packet"].as_str().unwrap()).unwrap();
        assert_eq!(packet_bytes.len(), 113);
        let packet = PayerPacket::decode(&packet_bytes).unwrap();
        assert_eq!(packet.encode().to_vec(), packet_bytes);
        let secret = packet.open(&session_keys).unwrap();
        assert_eq!(secret.account.expose(), v["account"].as_str().unwrap());
        assert_eq!(secret.password.expose(), v["password"].as_str().unwrap().as_bytes());
        let answer_bytes = hex::decode(s["answer"]["bytes"].as_str().unwrap()).unwrap();
        assert_eq!(answer_bytes.len(), 79);
        let plain = PayerAnswer::decode(&answer_bytes).unwrap().open(&session_keys).unwrap();
        assert_eq!(plain.response_code.as_str(), s["answer"]["response_code"].as_str().unwrap());
        assert_eq!(plain.balance, s["answer"]["balance"].as_i64().unwrap());
        chain = session_keys.next_chain.clone();
    }
}

fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the openssl command line tool is needed for this test (apt-get install openssl)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?} failed");
    out.stdout
}

fn openssl_ecb(key_hex: &str, data: &[u8]) -> String {
    hex::encode(openssl(&["enc", "-aes-256-ecb", "-nopad", "-K", key_hex], data))
}

#[test]
fn vectors_agree_with_openssl() {
    let v = committed();
    let p = &v["personalisation"];
    let ck0 = openssl_ecb(
        v["issuer_master_key"].as_str().unwrap(),
        &hex::decode(p["derivation_data"].as_str().unwrap()).unwrap(),
    );
    assert_eq!(ck0, p["chain_key_0"].as_str().unwrap());
    // RFC 5649 wrap under the transport key (OpenSSL's id-aes256-wrap-pad, IV = the RFC's AIV).
    let wrapped = openssl(
        &["enc", "-id-aes256-wrap-pad", "-K", v["transport_key"].as_str().unwrap(), "-iv", "A65959A6"],
        &hex::decode(&ck0).unwrap(),
    );
    assert_eq!(hex::encode(wrapped), p["wrapped_chain_key_0"].as_str().unwrap());
    let mut chain = ck0;
    for s in v["sessions"].as_array().unwrap() {
        for (name, key_field) in
            [("encryption", "encryption_key"), ("integrity", "integrity_key"), ("chain", "next_chain_key")]
        {
            let data = hex::decode(s["derivation_data"][name].as_str().unwrap()).unwrap();
            assert_eq!(
                openssl_ecb(&chain, &data),
                s[key_field].as_str().unwrap(),
                "{name} key of session {}",
                s["counter"]
            );
        }
        let packet = hex::decode(s["packet"].as_str().unwrap()).unwrap();
        let ciphertext = hex::encode(openssl(
            &[
                "enc",
                "-aes-256-cbc",
                "-K",
                s["encryption_key"].as_str().unwrap(),
                "-iv",
                s["packet_iv"].as_str().unwrap(),
            ],
            &hex::decode(s["secret_plaintext"].as_str().unwrap()).unwrap(),
        ));
        assert_eq!(ciphertext, hex::encode(&packet[73..105]));
        let mac_hex = String::from_utf8(openssl(
            &[
                "mac",
                "-cipher",
                "AES-256-CBC",
                "-macopt",
                &format!("hexkey:{}", s["integrity_key"].as_str().unwrap()),
                "CMAC",
            ],
            &packet[..105],
        ))
        .unwrap()
        .trim()
        .to_lowercase();
        assert_eq!(&mac_hex[..16], hex::encode(&packet[105..]));
        chain = s["next_chain_key"].as_str().unwrap().to_owned();
    }
}
