//! The fuzz targets' seed corpus (`tests/fuzz/corpus/*/seed-*`) and test PKI (`tests/fuzz/pki/`)
//! are real inputs made by the real code: a SIM's packet from the sim library, an answer the SIM
//! opens, a merchant's signed request, a personalisation record, the example configuration.
//! This test checks that every committed seed is still accepted by the code it seeds, so a
//! change of format that leaves the fuzzers starting from refused inputs fails here;
//! `MPS_FUZZ_SEEDS=write` writes them anew first (docs/RELIABILITY.md, "Fuzzing").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};

use mps_authz::config::AuthzConfig;
use mps_pki::{Role, TrustStore};
use mps_protocol::keys::derive_chain_key_0;
use mps_protocol::perso::{PersoRecord, wrap_key};
use mps_protocol::wire::{AnswerPlain, AuthCode, PayerAnswer, PayerPacket, PaymentSecret, ResponseCode, TxnId};
use mps_protocol::{Account, AesKey, Amount, Currency, Iin, MerchantId, OrderNo, Password, Rsn, SessionKeys, SimId};
use mps_sim::{MerchantEntry, PaymentRequest, Profile};
use mps_tests::{IIN, MERCHANT_ID, Merchant, Pki, request};
use rustls_pki_types::UnixTime;

const SIM_ID: &str = "8949012345678901234";
const ACCOUNT: &str = "4000120000001234";
const PASSWORD: &str = "1234";
const TRANSPORT_KEY: [u8; 32] = [0x42; 32];
const ISSUER_MASTER_KEY: [u8; 32] = [0x07; 32];
const RSN_1: Rsn = Rsn([0x05; 8]);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn seed_path(target: &str, name: &str) -> PathBuf {
    fuzz_dir().join("corpus").join(target).join(format!("seed-{name}"))
}

fn read_seed(target: &str, name: &str) -> Vec<u8> {
    let path = seed_path(target, name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (MPS_FUZZ_SEEDS=write makes it)", path.display()))
}

#[test]
fn the_committed_fuzz_seeds_are_accepted_by_the_code_they_seed() {
    if std::env::var("MPS_FUZZ_SEEDS").as_deref() == Ok("write") {
        write_seeds();
    }
    let packet = PayerPacket::decode(&read_seed("packet", "packet")).expect("seed-packet decodes");
    assert_eq!(packet.fields.sim_id.as_str(), SIM_ID);
    PaymentSecret::from_plaintext(&read_seed("packet", "secret")).expect("seed-secret decodes");
    PayerAnswer::decode(&read_seed("answer", "answer")).expect("seed-answer decodes");
    for name in ["body-approved", "body-declined"] {
        AnswerPlain::from_plaintext(&read_seed("answer", name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    mps_authz::decision::request::parse(&read_seed("request", "authorization")).expect("seed-authorization");
    for name in ["reversal", "reversal-without-txn-id"] {
        mps_authz::decision::reversal::parse(&read_seed("request", name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let signed = read_seed("jws", "signed-request");
    let split = signed.iter().position(|&byte| byte == b'\n').expect("JWS, newline, payload");
    let jws = std::str::from_utf8(&signed[..split]).unwrap();
    let identity = mps_pki::jws::verify_detached(jws, &signed[split + 1..], &trust(), Role::Merchant, now()).unwrap();
    assert_eq!(identity.merchant_id.as_ref().map(MerchantId::as_str), Some(MERCHANT_ID));
    let record = PersoRecord::from_json(std::str::from_utf8(&read_seed("perso", "record")).unwrap()).unwrap();
    record.parse().expect("seed-record parses");
    for name in ["example", "example-with-overrides"] {
        let text = String::from_utf8(read_seed("config", name)).unwrap();
        let mut parts = text.split('\0');
        let toml = parts.next().unwrap_or_default();
        let vars: Vec<(String, String)> = parts
            .map(|part| {
                let (key, value) = part.split_once('=').expect("KEY=value");
                (format!("MPS_AUTHZ__{key}"), value.to_owned())
            })
            .collect();
        AuthzConfig::from_parts(toml, vars).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

fn trust() -> TrustStore {
    let pki = fuzz_dir().join("pki");
    TrustStore::from_pem_files(&[&pki.join("root.pem")], &[&pki.join("crls.pem")]).unwrap()
}

fn now() -> UnixTime {
    let text = std::fs::read_to_string(fuzz_dir().join("pki").join("now")).unwrap();
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(text.trim().parse().unwrap()))
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Writes every seed and the test PKI from the real code.
fn write_seeds() {
    let iin = Iin::new(IIN).unwrap();
    let sim_id = SimId::new(SIM_ID).unwrap();
    let chain_key = derive_chain_key_0(&AesKey::from_bytes(ISSUER_MASTER_KEY), &sim_id);
    let wrapped = wrap_key(&AesKey::from_bytes(TRANSPORT_KEY), &chain_key);

    // The PKI first: the personalisation record carries a real certificate.
    let dir = tempfile::tempdir().unwrap();
    let mut pki = Pki::new(dir.path());
    let leaf = pki.issue("merchant", &request(Role::Merchant, "fuzz seed merchant"));
    let merchant = Merchant::from_leaf(MERCHANT_ID, &leaf);
    let pki_dir = fuzz_dir().join("pki");
    write(&pki_dir.join("root.pem"), &std::fs::read(pki.root_file()).unwrap());
    write(&pki_dir.join("crls.pem"), &std::fs::read(pki.crls_file()).unwrap());
    // A minute after issuance: inside the leaf's validity and before the CRLs' nextUpdate.
    let now = time::OffsetDateTime::now_utc().unix_timestamp() + 60;
    write(&pki_dir.join("now"), format!("{now}\n").as_bytes());
    let certificate_pem = std::fs::read_to_string(pki.root_file()).unwrap();

    let record = PersoRecord::new(iin, &sim_id, "mps-tk-fuzz", &wrapped, RSN_1, &certificate_pem);
    write(&seed_path("perso", "record"), record.to_json().as_bytes());

    // The SIM personalised from that record pays: its packet, and the answer it opens.
    let mut profile = Profile::new();
    profile.personalise(&record, &AesKey::from_bytes(TRANSPORT_KEY), false).unwrap();
    let account = Account::new(ACCOUNT).unwrap();
    profile.add_account(account.clone(), iin, None).unwrap();
    profile.add_merchant(MerchantEntry::new(MerchantId::new(MERCHANT_ID).unwrap(), None, None).unwrap()).unwrap();
    let payment = PaymentRequest {
        account: account.clone(),
        merchant_id: MerchantId::new(MERCHANT_ID).unwrap(),
        order_no: OrderNo::new("FUZZ-0001").unwrap(),
        amount: Amount::from_minor(1250),
        currency: Currency::EUR,
    };
    let password = Password::new(PASSWORD).unwrap();
    let packet = profile.prepare_payment(&payment, &password, [0x11; 16]).unwrap();
    write(&seed_path("packet", "packet"), &packet.encode());
    let secret = PaymentSecret { account, password };
    write(&seed_path("packet", "secret"), &secret.to_plaintext()[..]);

    let counter = packet.fields.counter;
    let keys = SessionKeys::derive(&chain_key, counter, &RSN_1);
    let approved = AnswerPlain {
        response_code: ResponseCode::Approved,
        auth_code: AuthCode(*b"0AGO7P"),
        balance: 23_800,
        currency: Currency::EUR,
        next_rsn: Rsn([0x09; 8]),
        txn_id: TxnId([0x01; 16]),
    };
    let declined =
        AnswerPlain { response_code: ResponseCode::InsufficientFunds, auth_code: AuthCode::NONE, ..approved.clone() };
    let answer = PayerAnswer::seal(&keys, counter, &approved, [0x22; 16]).encode();
    profile.open_answer(&answer, Some(iin)).expect("the SIM opens its answer");
    write(&seed_path("answer", "answer"), &answer);
    write(&seed_path("answer", "body-approved"), &approved.to_plaintext()[..]);
    write(&seed_path("answer", "body-declined"), &declined.to_plaintext()[..]);

    // The merchant's signed bodies.
    let (body, jws) = merchant.request(&packet.encode(), "FUZZ-0001", 1250, Currency::EUR.code());
    write(&seed_path("request", "authorization"), &body);
    write(&seed_path("jws", "signed-request"), &[jws.as_bytes(), b"\n", &body].concat());
    let txn_id = TxnId([0x01; 16]).to_hex();
    let (reversal, _) = merchant.reversal("FUZZ-0001", 1250, Some(&txn_id), "2026-11-26T12:00:05Z");
    write(&seed_path("request", "reversal"), &reversal);
    let (reversal, _) = merchant.reversal("FUZZ-0001", 1250, None, "2026-11-26T12:00:05Z");
    write(&seed_path("request", "reversal-without-txn-id"), &reversal);

    // The commented example configuration, alone and with overrides after NUL bytes.
    let example = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/authz.example.toml")).unwrap();
    write(&seed_path("config", "example"), &example);
    let overrides = "\0SERVER__LISTEN=127.0.0.1:9443\0LEDGER__BATCH_MAX=8\0\
                     HSM__ADDITIONAL=[{ module_path = \"/opt/hsm-b/libpkcs11.so\", token_label = \"mps-b\" }]";
    write(&seed_path("config", "example-with-overrides"), &[&example[..], overrides.as_bytes()].concat());
}
