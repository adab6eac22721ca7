//! A software issuer for trying `sim` by hand and for the `sim` binary's tests: it enrolls a
//! SIM (writes the personalisation record and the transport key), and answers payer packets the
//! way DESIGN.md section 7 says, reduced to what a SIM can observe: derive, verify, decrypt,
//! check account, password and funds, answer (00, 51, 55 or 57) with a fresh RSN, advance.
//!
//! TEST ONLY. It holds its master key and the SIMs' chain keys in clear in a JSON file; the
//! bank's authorization server (`authz/`) keeps them in the HSM. It uses only `mps_protocol`.
#![allow(dead_code)]

use mps_protocol::keys::{self, AesKey, SessionKeys};
use mps_protocol::perso::{PersoRecord, wrap_key};
use mps_protocol::wire::{AnswerPlain, AuthCode, PayerAnswer, PayerPacket, ResponseCode, TxnId};
use mps_protocol::{Account, Counter, Currency, Iin, Password, Rsn, SimId};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

/// Label the records name their transport key by.
pub const TRANSPORT_KEY_LABEL: &str = "mps-tk-soft-issuer";

/// Why the issuer sent no answer (the state did not move).
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// Not a payer packet.
    #[error("not a payer packet: {0}")]
    Packet(mps_protocol::WireError),
    /// No enrolled SIM with this IIN and SIM id.
    #[error("unknown SIM (code 14)")]
    UnknownSim,
    /// Neither the next session nor a retransmission of the last one.
    #[error("counter {got} out of step: expected {expected} (code 63)")]
    CounterOutOfStep {
        /// The packet's counter.
        got: u64,
        /// stored + 1.
        expected: u64,
    },
    /// The MAC does not verify.
    #[error("packet does not verify (code 63)")]
    BadPacket(mps_protocol::WireError),
    /// A field of the state file is invalid.
    #[error("state: {0}")]
    State(String),
}

impl IssuerError {
    /// The response code a merchant would relay.
    pub fn response_code(&self) -> &'static str {
        match self {
            Self::Packet(_) => "30",
            Self::UnknownSim => "14",
            Self::CounterOutOfStep { .. } | Self::BadPacket(_) => "63",
            Self::State(_) => "96",
        }
    }
}

/// One enrolled SIM and its account.
#[derive(Serialize, Deserialize)]
pub struct SimState {
    pub iin: String,
    pub sim_id: String,
    pub account: String,
    pub password: String,
    /// Available balance in minor units.
    pub balance: i64,
    pub currency: u16,
    /// Last completed session.
    pub counter: u64,
    /// CK_{counter}, hex.
    pub chain_key: String,
    /// RSN_{counter+1}, hex.
    pub next_rsn: String,
    /// The last packet and its answer, hex, for retransmissions.
    pub last_packet: Option<String>,
    pub last_answer: Option<String>,
    pub last_response_code: Option<String>,
}

/// An answer and the response code inside it.
pub struct Answered {
    /// The 79 bytes for the SIM.
    pub answer: [u8; 79],
    /// "00", "51", "55" or "57".
    pub response_code: String,
}

/// The issuer's whole state.
#[derive(Serialize, Deserialize)]
pub struct IssuerState {
    /// The issuer master key, hex. TEST ONLY.
    pub issuer_master_key: String,
    pub sims: Vec<SimState>,
}

fn key(hex_text: &str) -> Result<AesKey, IssuerError> {
    let bytes: [u8; 32] = hex::decode(hex_text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| IssuerError::State("a key is not 64 hex digits".into()))?;
    Ok(AesKey::from_bytes(bytes))
}

impl IssuerState {
    /// A new issuer with a random master key.
    pub fn new(rng: &mut impl RngCore) -> Self {
        let mut imk = [0u8; 32];
        rng.fill_bytes(&mut imk);
        Self { issuer_master_key: hex::encode(imk), sims: Vec::new() }
    }

    /// Enrolls a SIM with one account: derives CK_0, draws RSN_1 and a transport key, and
    /// returns the personalisation record and the transport key.
    #[allow(clippy::too_many_arguments)]
    pub fn enroll(
        &mut self,
        iin: Iin,
        sim_id: &SimId,
        account: &Account,
        password: &Password,
        balance: i64,
        currency: Currency,
        bank_certificate_pem: &str,
        rng: &mut impl RngCore,
    ) -> Result<(PersoRecord, AesKey), IssuerError> {
        if self.sims.iter().any(|s| s.iin == iin.as_str() && s.sim_id == sim_id.as_str()) {
            return Err(IssuerError::State(format!("SIM {sim_id} is enrolled already")));
        }
        let ck0 = keys::derive_chain_key_0(&key(&self.issuer_master_key)?, sim_id);
        let rsn_1 = Rsn(rng.r#gen());
        let transport_key = AesKey::from_bytes(rng.r#gen());
        let wrapped = wrap_key(&transport_key, &ck0);
        let record = PersoRecord::new(iin, sim_id, TRANSPORT_KEY_LABEL, &wrapped, rsn_1, bank_certificate_pem);
        self.sims.push(SimState {
            iin: iin.as_str().to_owned(),
            sim_id: sim_id.as_str().to_owned(),
            account: account.expose().to_owned(),
            password: String::from_utf8_lossy(password.expose()).into_owned(),
            balance,
            currency: currency.code(),
            counter: 0,
            chain_key: hex::encode(ck0.expose()),
            next_rsn: rsn_1.to_hex(),
            last_packet: None,
            last_answer: None,
            last_response_code: None,
        });
        Ok((record, transport_key))
    }

    /// Answers a payer packet; on an error nothing changes and no answer is sent.
    pub fn answer(&mut self, packet_bytes: &[u8], rng: &mut impl RngCore) -> Result<Answered, IssuerError> {
        let packet = PayerPacket::decode(packet_bytes).map_err(IssuerError::Packet)?;
        let fields = &packet.fields;
        let sim = self
            .sims
            .iter_mut()
            .find(|s| s.iin == fields.iin.as_str() && s.sim_id == fields.sim_id.as_str())
            .ok_or(IssuerError::UnknownSim)?;
        let n = fields.counter.value();
        if n == sim.counter && sim.last_packet.as_deref() == Some(hex::encode(packet_bytes).as_str()) {
            // A retransmission after a lost answer: the same answer again.
            let last = sim.last_answer.as_deref().unwrap_or_default();
            let answer = hex::decode(last)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| IssuerError::State("stored answer is damaged".into()))?;
            return Ok(Answered { answer, response_code: sim.last_response_code.clone().unwrap_or_default() });
        }
        if n != sim.counter + 1 {
            return Err(IssuerError::CounterOutOfStep { got: n, expected: sim.counter + 1 });
        }
        let rsn = Rsn::from_hex(&sim.next_rsn).map_err(|e| IssuerError::State(e.to_string()))?;
        let session_keys = SessionKeys::derive(&key(&sim.chain_key)?, fields.counter, &rsn);
        let secret = packet.open(&session_keys).map_err(IssuerError::BadPacket)?;

        let amount = i64::try_from(fields.amount.minor()).unwrap_or(i64::MAX);
        let response_code = if secret.account.expose() != sim.account || fields.currency.code() != sim.currency {
            ResponseCode::NotPermitted
        } else if secret.password.expose() != sim.password.as_bytes() {
            ResponseCode::IncorrectPassword
        } else if amount > sim.balance {
            ResponseCode::InsufficientFunds
        } else {
            ResponseCode::Approved
        };
        let auth_code = if response_code == ResponseCode::Approved {
            sim.balance -= amount;
            const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
            AuthCode(std::array::from_fn(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        } else {
            AuthCode::NONE
        };
        let currency = Currency::from_code(sim.currency).map_err(|e| IssuerError::State(e.to_string()))?;
        let plain = AnswerPlain {
            response_code,
            auth_code,
            balance: sim.balance,
            currency,
            next_rsn: Rsn(rng.r#gen()),
            txn_id: TxnId(rng.r#gen()),
        };
        let answer = PayerAnswer::seal(&session_keys, fields.counter, &plain, rng.r#gen()).encode();
        sim.chain_key = hex::encode(session_keys.next_chain.expose());
        sim.counter = n;
        sim.next_rsn = plain.next_rsn.to_hex();
        sim.last_packet = Some(hex::encode(packet_bytes));
        sim.last_answer = Some(hex::encode(answer));
        sim.last_response_code = Some(response_code.as_str().to_owned());
        Ok(Answered { answer, response_code: response_code.as_str().to_owned() })
    }

    /// The counter of a SIM's last completed session.
    pub fn counter(&self, sim_id: &str) -> Option<Counter> {
        self.sims.iter().find(|s| s.sim_id == sim_id).and_then(|s| Counter::new(s.counter).ok())
    }
}
