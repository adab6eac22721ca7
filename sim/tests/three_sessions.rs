//! Three sessions between the SIM library and a software issuer written here, checked byte for
//! byte against `protocol/tests/vectors.json`: personalisation from a record carrying the
//! vector's CK_0 wrapped under the vector transport key, then for each session the packet the
//! SIM builds, the keys the issuer derives, the answer it seals, and the chain key, counter and
//! RSN the SIM stores after reading the answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};

use mps_protocol::keys::{self, AesKey, SessionKeys};
use mps_protocol::perso::{PersoRecord, wrap_key};
use mps_protocol::wire::{AnswerPlain, AuthCode, PayerAnswer, PayerPacket, ResponseCode, TxnId};
use mps_protocol::{Account, Amount, Counter, Currency, Iin, MerchantId, OrderNo, Password, Rsn, SimId};
use mps_sim::{MerchantEntry, PaymentRequest, Profile, SimError};
use serde_json::Value;

const BANK_CERTIFICATE_PEM: &str = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";

fn vectors() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/tests/vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("vector field {key} missing"))
}

fn key(hex_text: &str) -> AesKey {
    AesKey::from_bytes(hex::decode(hex_text).unwrap().try_into().unwrap())
}

fn array<const N: usize>(hex_text: &str) -> [u8; N] {
    hex::decode(hex_text).unwrap().try_into().unwrap()
}

/// The issuer's side of the protocol in software: what `authz` does in the HSM, reduced to
/// derive, verify, decrypt, decide, answer, advance.
struct TestIssuer {
    iin: Iin,
    sim_id: SimId,
    account: Account,
    password: Password,
    balance: i64,
    chain_key: AesKey,
    counter: Counter,
    rsn: Rsn,
}

/// The issuer's random choices for one session, taken from the vectors.
struct IssuerDraws {
    auth_code: [u8; 6],
    next_rsn: Rsn,
    txn_id: TxnId,
    answer_iv: [u8; 16],
}

impl TestIssuer {
    fn answer(&mut self, packet_bytes: &[u8], draws: IssuerDraws, session: &Value) -> Vec<u8> {
        let packet = PayerPacket::decode(packet_bytes).unwrap();
        let fields = &packet.fields;
        assert_eq!(fields.iin, self.iin);
        assert_eq!(fields.sim_id, self.sim_id);
        assert_eq!(Some(fields.counter), self.counter.next(), "counter must be stored + 1");
        let session_keys = SessionKeys::derive(&self.chain_key, fields.counter, &self.rsn);
        assert_eq!(hex::encode(session_keys.encryption.expose()), text(session, "encryption_key"));
        assert_eq!(hex::encode(session_keys.integrity.expose()), text(session, "integrity_key"));
        assert_eq!(hex::encode(session_keys.next_chain.expose()), text(session, "next_chain_key"));
        let secret = packet.open(&session_keys).expect("the SIM's packet verifies under the issuer's keys");
        assert_eq!(hex::encode(&secret.to_plaintext()[..]), text(session, "secret_plaintext"));

        let amount = i64::try_from(fields.amount.minor()).unwrap();
        let response_code = if secret.account != self.account {
            ResponseCode::NotPermitted
        } else if secret.password != self.password {
            ResponseCode::IncorrectPassword
        } else if amount > self.balance {
            ResponseCode::InsufficientFunds
        } else {
            ResponseCode::Approved
        };
        let auth_code = if response_code == ResponseCode::Approved {
            self.balance -= amount;
            AuthCode(draws.auth_code)
        } else {
            AuthCode::NONE
        };
        let plain = AnswerPlain {
            response_code,
            auth_code,
            balance: self.balance,
            currency: fields.currency,
            next_rsn: draws.next_rsn,
            txn_id: draws.txn_id,
        };
        let answer = PayerAnswer::seal(&session_keys, fields.counter, &plain, draws.answer_iv);
        // Advance: keep only CK_n, counter n, RSN_{n+1}.
        self.chain_key = session_keys.next_chain.clone();
        self.counter = fields.counter;
        self.rsn = draws.next_rsn;
        answer.encode().to_vec()
    }
}

fn profile_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn key_set_json(path: &Path) -> Value {
    profile_json(path)["key_sets"][0].clone()
}

#[test]
fn three_sessions_match_the_vectors_byte_for_byte() {
    let v = vectors();
    let perso = &v["personalisation"];
    let iin = Iin::new(text(&v, "iin")).unwrap();
    let sim_id = SimId::new(text(&v, "sim_id")).unwrap();
    let account = Account::new(text(&v, "account")).unwrap();
    let password = Password::new(text(&v, "password")).unwrap();
    let transport_key = key(text(&v, "transport_key"));

    // The issuer derives CK_0 from its master key; the record carries it wrapped.
    let ck0 = keys::derive_chain_key_0(&key(text(&v, "issuer_master_key")), &sim_id);
    assert_eq!(hex::encode(ck0.expose()), text(perso, "chain_key_0"));
    let wrapped = wrap_key(&transport_key, &key(text(perso, "chain_key_0")));
    assert_eq!(hex::encode(wrapped), text(perso, "wrapped_chain_key_0"));
    let rsn_1 = Rsn::from_hex(text(perso, "rsn_1")).unwrap();
    let record = PersoRecord::new(iin, &sim_id, "mps-tk-vectors", &wrapped, rsn_1, BANK_CERTIFICATE_PEM);

    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("profile.json");
    let mut profile = Profile::load_or_new(&path).unwrap();
    profile.personalise(&record, &transport_key, false).unwrap();
    profile.add_account(account.clone(), iin, Some("main".into())).unwrap();
    for session in v["sessions"].as_array().unwrap() {
        let merchant_id = MerchantId::new(text(session, "merchant_id")).unwrap();
        if profile.find_merchant(merchant_id.as_str()).is_err() {
            profile.add_merchant(MerchantEntry::new(merchant_id, None, None).unwrap()).unwrap();
        }
    }
    profile.save(&path).unwrap();
    let stored = key_set_json(&path);
    assert_eq!(stored["chain_key"], perso["chain_key_0"]);
    assert_eq!(stored["counter"], 0);
    assert_eq!(stored["next_rsn"], perso["rsn_1"]);

    let mut issuer = TestIssuer {
        iin,
        sim_id: sim_id.clone(),
        account: account.clone(),
        password: password.clone(),
        balance: 100_000,
        chain_key: ck0,
        counter: Counter::ZERO,
        rsn: rsn_1,
    };

    let mut previous_chain = text(perso, "chain_key_0").to_owned();
    for session in v["sessions"].as_array().unwrap() {
        let n = session["counter"].as_u64().unwrap();
        // The SIM: every session starts from the profile on disk.
        let mut profile = Profile::load(&path).unwrap();
        let request = PaymentRequest {
            account: account.clone(),
            merchant_id: MerchantId::new(text(session, "merchant_id")).unwrap(),
            order_no: OrderNo::new(text(session, "order_no")).unwrap(),
            amount: Amount::from_minor(session["amount"].as_u64().unwrap()),
            currency: Currency::from_code(u16::try_from(session["currency"].as_u64().unwrap()).unwrap()).unwrap(),
        };
        let summary = profile.preview_payment(&request).unwrap();
        assert_eq!(summary.counter.value(), n);
        let packet = profile.prepare_payment(&request, &password, array(text(session, "packet_iv"))).unwrap();
        assert_eq!(hex::encode(packet.encode()), text(session, "packet"), "packet of session {n}");
        profile.save(&path).unwrap();

        // While pending: the stored chain key is still CK_{n-1}, the packet is kept byte for byte.
        let stored = key_set_json(&path);
        assert_eq!(stored["chain_key"].as_str().unwrap(), previous_chain);
        assert_eq!(stored["counter"], n - 1);
        assert_eq!(stored["pending"]["packet"], session["packet"]);
        assert_eq!(hex::encode(profile.pending(iin).unwrap().packet()), text(session, "packet"));

        // The issuer answers.
        let answer_vector = &session["answer"];
        let draws = IssuerDraws {
            auth_code: text(answer_vector, "auth_code").as_bytes().try_into().unwrap(),
            next_rsn: Rsn::from_hex(text(answer_vector, "next_rsn")).unwrap(),
            txn_id: TxnId::from_hex(text(answer_vector, "txn_id")).unwrap(),
            answer_iv: array(text(answer_vector, "iv")),
        };
        let answer_bytes = issuer.answer(&hex::decode(text(session, "packet")).unwrap(), draws, session);
        assert_eq!(hex::encode(&answer_bytes), text(answer_vector, "bytes"), "answer of session {n}");

        // The SIM opens it and advances.
        let mut profile = Profile::load(&path).unwrap();
        let outcome = profile.open_answer(&answer_bytes, None).unwrap();
        assert_eq!(outcome.payment.counter.value(), n);
        assert_eq!(outcome.answer.response_code.as_str(), text(answer_vector, "response_code"));
        assert_eq!(outcome.answer.auth_code.as_str(), text(answer_vector, "auth_code"));
        assert_eq!(outcome.answer.balance, answer_vector["balance"].as_i64().unwrap());
        assert_eq!(outcome.answer.txn_id.to_hex(), text(answer_vector, "txn_id"));
        assert_eq!(outcome.approved(), text(answer_vector, "response_code") == "00");
        profile.save(&path).unwrap();

        let stored = key_set_json(&path);
        assert_eq!(stored["chain_key"], session["next_chain_key"], "CK_{n} stored after session {n}");
        assert_eq!(stored["counter"], n);
        assert_eq!(stored["next_rsn"], answer_vector["next_rsn"]);
        assert!(stored.get("pending").is_none());

        // Reading the same answer again is refused and changes nothing.
        let before = std::fs::read(&path).unwrap();
        let mut profile = Profile::load(&path).unwrap();
        assert!(
            matches!(profile.open_answer(&answer_bytes, None), Err(SimError::AnswerAlreadyRead { answer }) if answer == n)
        );
        profile.save(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), before);

        previous_chain = text(session, "next_chain_key").to_owned();
    }
}
