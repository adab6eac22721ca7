//! Shared helpers of the HSM integration tests: the process's test token, a software SIM that
//! builds packets and reads answers with protocol's reference code, and answer contents.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use mps_hsm::testing::{self, TestToken};
use mps_hsm::{AnswerContent, Hsm, SealedSession};
use mps_protocol::keys::{AesKey, SessionKeys};
use mps_protocol::wire::{AnswerPlain, ClearFields, PayerAnswer, PayerPacket, PaymentSecret};
use mps_protocol::{
    Account, Amount, AuthCode, Counter, Currency, Iin, MerchantId, OrderNo, Password, ResponseCode, Rsn, SimId, TxnId,
};

pub const IIN: &str = "400012";
pub const SIM_ID: &str = "8949012345678901234";
pub const ACCOUNT: &str = "4000120000001234";
pub const PASSWORD: &str = "2468ab";

pub fn token() -> &'static TestToken {
    TestToken::shared().expect("SoftHSM test token")
}

/// A read-write session of our own on the test token, outside the pool (not logged in):
/// for tests that act on the token the way another application would.
pub fn raw_session(config: &mps_hsm::HsmConfig) -> cryptoki::session::Session {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::error::{Error, RvError};
    let pkcs11 = Pkcs11::new(&config.module_path).unwrap();
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("{e}"),
    }
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label().trim_end() == config.token_label)
        .unwrap();
    pkcs11.open_rw_session(slot).unwrap()
}

/// [`raw_session`] logged in as the user (login is per process: "already logged in" is fine).
pub fn user_session(config: &mps_hsm::HsmConfig) -> cryptoki::session::Session {
    use cryptoki::error::{Error, RvError};
    let session = raw_session(config);
    let pin = cryptoki::types::AuthPin::from(testing::USER_PIN);
    match session.login(cryptoki::session::UserType::User, Some(&pin)) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("{e}"),
    }
    session
}

/// The one token object of `class` labelled `label`.
pub fn find_key(
    session: &cryptoki::session::Session,
    class: cryptoki::object::ObjectClass,
    label: &str,
) -> cryptoki::object::ObjectHandle {
    use cryptoki::object::Attribute;
    let found = session
        .find_objects(&[Attribute::Token(true), Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())])
        .unwrap();
    assert_eq!(found.len(), 1, "exactly one {label}");
    found[0]
}

pub async fn hsm() -> Hsm {
    token().hsm().await.expect("connect to the test token")
}

/// A SIM in software (protocol's reference code), one issuer key set.
pub struct Sim {
    pub chain_key: AesKey,
    pub counter: Counter,
    pub rsn: Rsn,
    pub account: Account,
    pub password: Password,
}

impl Sim {
    pub fn new(chain_key: [u8; 32], rsn: Rsn) -> Self {
        Self {
            chain_key: AesKey::from_bytes(chain_key),
            counter: Counter::ZERO,
            rsn,
            account: Account::new(ACCOUNT).unwrap(),
            password: Password::new(PASSWORD).unwrap(),
        }
    }

    pub fn next_counter(&self) -> Counter {
        self.counter.next().unwrap()
    }

    pub fn session_keys(&self) -> SessionKeys {
        SessionKeys::derive(&self.chain_key, self.next_counter(), &self.rsn)
    }

    pub fn fields(&self, amount: u64) -> ClearFields {
        ClearFields {
            iin: Iin::new(IIN).unwrap(),
            sim_id: SimId::new(SIM_ID).unwrap(),
            counter: self.next_counter(),
            merchant_id: MerchantId::new("COFFEE-SHOP-01").unwrap(),
            order_no: OrderNo::new("ORD-1").unwrap(),
            amount: Amount::from_minor(amount),
            currency: Currency::EUR,
        }
    }

    /// The packet of the next session.
    pub fn packet(&self, amount: u64, iv: [u8; 16]) -> PayerPacket {
        let secret = PaymentSecret { account: self.account.clone(), password: self.password.clone() };
        PayerPacket::seal(&self.session_keys(), self.fields(amount), &secret, iv)
    }

    /// A packet whose MAC verifies but whose secret is not well formed.
    pub fn packet_with_bad_secret(&self, iv: [u8; 16]) -> PayerPacket {
        let keys = self.session_keys();
        let mut bad = [0u8; 23];
        bad[..10].copy_from_slice(&self.account.to_bcd());
        bad[10] = 2; // password length below 4
        let ciphertext: [u8; 32] = mps_protocol::keys::cbc_encrypt(&keys.encryption, &iv, &bad).try_into().unwrap();
        let mut packet = PayerPacket { fields: self.fields(100), iv, ciphertext, mac: [0; 8] };
        packet.mac = mps_protocol::keys::cmac8(&keys.integrity, &packet.mac_input());
        packet
    }

    /// Reads the issuer's answer with software keys and moves to the next session.
    pub fn accept(&mut self, answer: &PayerAnswer) -> AnswerPlain {
        let keys = self.session_keys();
        let plain = answer.open(&keys).expect("answer opens on the SIM");
        assert_eq!(answer.counter, self.next_counter());
        self.counter = self.next_counter();
        self.rsn = plain.next_rsn;
        self.chain_key = keys.next_chain;
        plain
    }
}

pub fn approved(balance: i64) -> AnswerContent {
    AnswerContent {
        response_code: ResponseCode::Approved,
        auth_code: AuthCode(*b"A1B2C3"),
        balance,
        currency: Currency::EUR,
        txn_id: TxnId([7; 16]),
    }
}

pub fn declined() -> AnswerContent {
    AnswerContent {
        response_code: ResponseCode::InsufficientFunds,
        auth_code: AuthCode::NONE,
        balance: 5,
        currency: Currency::EUR,
        txn_id: TxnId([8; 16]),
    }
}

/// One full authorization against the pool; returns the sealed session.
pub async fn authorize(hsm: &Hsm, wrapped: &mps_hsm::WrappedChainKey, sim: &Sim, iv: [u8; 16]) -> SealedSession {
    let packet = sim.packet(1250, iv);
    let opened = hsm.open_session(wrapped, packet.fields.counter, sim.rsn, &packet).await.expect("open");
    assert_eq!(opened.account.expose(), ACCOUNT);
    hsm.seal_answer(opened.ticket, approved(1000)).await.expect("seal")
}

/// Polls `condition` every 20 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn session_objects(hsm: &Hsm) -> usize {
    testing::session_object_count(hsm).await.expect("count session objects")
}
