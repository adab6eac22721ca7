//! A payment on the SIM (paper, section 6, steps 4-5 and 9): check the request and show its
//! summary, build the secured packet of DESIGN.md section 4 under session n's keys and keep it
//! pending, then open the issuer's answer (section 5) and advance the key ratchet.
//!
//! Ratchet: with the stored chain key CK_{n-1} and RSN_n, session n's keys are
//! `SessionKeys::derive(CK_{n-1}, n, RSN_n)`. Only when an answer verifies under them does the
//! SIM replace CK_{n-1} with CK_n and RSN_n with the RSN_{n+1} the answer carries; a forged or
//! damaged answer changes nothing.

use mps_protocol::wire::{AnswerPlain, ClearFields, PayerAnswer, PayerPacket, PaymentSecret};
use mps_protocol::{Account, Amount, Counter, Currency, Iin, MerchantId, OrderNo, Password, SessionKeys};
use serde::{Deserialize, Serialize};

use crate::error::SimError;
use crate::profile::{KeySet, PendingPayment, Profile};

/// What the payer asks to pay: every field already parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    /// The account to pay from (it must be registered; its issuer's key set is used).
    pub account: Account,
    /// The merchant to pay (it must be registered).
    pub merchant_id: MerchantId,
    /// The merchant's order number.
    pub order_no: OrderNo,
    /// The amount in minor units, greater than zero.
    pub amount: Amount,
    /// The currency.
    pub currency: Currency,
}

/// The confirmation summary of the paper's step 5: what the payer sees and agrees to before
/// the packet is built, and what is kept with the pending packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentSummary {
    /// The issuer.
    pub iin: Iin,
    /// The account, masked (first 6, last 4).
    pub account_masked: String,
    /// The merchant id.
    pub merchant_id: MerchantId,
    /// The merchant's display name, if registered with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_name: Option<String>,
    /// The order number.
    pub order_no: OrderNo,
    /// Amount in minor units.
    pub amount: Amount,
    /// Currency.
    pub currency: Currency,
    /// Session number n of this payment.
    pub counter: Counter,
}

impl PaymentSummary {
    /// The summary as lines of text for a screen.
    pub fn lines(&self) -> Vec<String> {
        let merchant = match &self.merchant_name {
            Some(name) => format!("{name} ({})", self.merchant_id),
            None => self.merchant_id.to_string(),
        };
        vec![
            format!("Issuer:   {}", self.iin),
            format!("Account:  {}", self.account_masked),
            format!("Merchant: {merchant}"),
            format!("Order:    {}", self.order_no),
            format!("Amount:   {}", self.amount.display_in(self.currency)),
            format!("Payment:  #{} with this issuer", self.counter.value()),
        ]
    }
}

/// What an answer said, once verified and opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerOutcome {
    /// The payment the answer is for.
    pub payment: PaymentSummary,
    /// The decrypted answer: response code, auth code, balance, next RSN, transaction id.
    pub answer: AnswerPlain,
}

impl AnswerOutcome {
    /// Whether the issuer approved the payment.
    pub fn approved(&self) -> bool {
        self.answer.response_code == mps_protocol::ResponseCode::Approved
    }
}

impl Profile {
    /// Checks a payment request against the profile and returns the summary to confirm, with
    /// the session number the payment will have. Changes nothing.
    pub fn preview_payment(&self, request: &PaymentRequest) -> Result<PaymentSummary, SimError> {
        let entry = self
            .accounts
            .iter()
            .find(|e| e.account == request.account)
            .ok_or_else(|| SimError::UnknownAccount { selector: request.account.masked() })?;
        let merchant = self.find_merchant(request.merchant_id.as_str())?;
        let key_set = self.key_sets.get(&entry.iin).ok_or(SimError::UnknownIssuer { iin: entry.iin })?;
        if let Some(pending) = &key_set.pending {
            return Err(SimError::PaymentPending { iin: key_set.iin, counter: pending.summary.counter.value() });
        }
        if request.amount.minor() == 0 {
            return Err(SimError::ZeroAmount);
        }
        let counter = key_set.counter.next().ok_or(SimError::CounterExhausted { iin: key_set.iin })?;
        Ok(PaymentSummary {
            iin: key_set.iin,
            account_masked: request.account.masked(),
            merchant_id: request.merchant_id,
            merchant_name: merchant.name.clone(),
            order_no: request.order_no,
            amount: request.amount,
            currency: request.currency,
            counter,
        })
    }

    /// Builds the payer packet of session n = counter + 1 with the given IV (drawn from the
    /// OS's random generator by the caller; tests pass fixed IVs) and keeps it as this issuer's
    /// pending payment. Refused while a payment for the issuer is pending.
    pub fn prepare_payment(
        &mut self,
        request: &PaymentRequest,
        password: &Password,
        iv: [u8; 16],
    ) -> Result<PayerPacket, SimError> {
        let summary = self.preview_payment(request)?;
        let key_set = self.key_sets.get_mut(&summary.iin).ok_or(SimError::UnknownIssuer { iin: summary.iin })?;
        let keys = SessionKeys::derive(&key_set.chain_key, summary.counter, &key_set.next_rsn);
        let fields = ClearFields {
            iin: key_set.iin,
            sim_id: key_set.sim_id.clone(),
            counter: summary.counter,
            merchant_id: request.merchant_id,
            order_no: request.order_no,
            amount: request.amount,
            currency: request.currency,
        };
        let secret = PaymentSecret { account: request.account.clone(), password: password.clone() };
        let packet = PayerPacket::seal(&keys, fields, &secret, iv);
        key_set.pending = Some(PendingPayment { packet: packet.encode(), summary });
        Ok(packet)
    }

    /// The pending payment to send again: of `issuer` if given, else the only one.
    pub fn pending_payment(&self, issuer: Option<Iin>) -> Result<&PendingPayment, SimError> {
        if let Some(iin) = issuer {
            let key_set = self.key_sets.get(&iin).ok_or(SimError::UnknownIssuer { iin })?;
            return key_set.pending.as_ref().ok_or(SimError::NoPendingPayment { issuer: Some(iin) });
        }
        let mut pending = self.key_sets.values().filter_map(|k| k.pending.as_ref());
        match (pending.next(), pending.next()) {
            (Some(only), None) => Ok(only),
            (None, _) => Err(SimError::NoPendingPayment { issuer: None }),
            (Some(_), Some(_)) => Err(SimError::SeveralPending { iins: self.pending_issuers() }),
        }
    }

    fn pending_issuers(&self) -> String {
        self.key_sets.values().filter(|k| k.pending.is_some()).map(|k| k.iin.to_string()).collect::<Vec<_>>().join(", ")
    }

    /// Verifies and opens the issuer's answer (of `issuer` if given, else of whichever issuer
    /// has a pending payment with the answer's counter), then advances that key set: CK_n
    /// replaces CK_{n-1}, the counter becomes n, RSN_{n+1} is stored, the pending payment is
    /// cleared. A malformed, forged or misdirected answer changes nothing.
    pub fn open_answer(&mut self, bytes: &[u8], issuer: Option<Iin>) -> Result<AnswerOutcome, SimError> {
        let answer = PayerAnswer::decode(bytes).map_err(SimError::AnswerFormat)?;
        if let Some(iin) = issuer
            && !self.key_sets.contains_key(&iin)
        {
            return Err(SimError::UnknownIssuer { iin });
        }
        let in_scope = |k: &&KeySet| issuer.is_none_or(|iin| k.iin == iin);
        let candidates: Vec<Iin> = self
            .key_sets
            .values()
            .filter(in_scope)
            .filter(|k| k.pending.as_ref().is_some_and(|p| p.summary.counter == answer.counter))
            .map(|k| k.iin)
            .collect();
        if candidates.is_empty() {
            return Err(self.explain_unmatched_answer(&answer, issuer));
        }
        let mut last_error = None;
        for iin in candidates {
            match self.try_answer(iin, &answer) {
                Ok(outcome) => return Ok(outcome),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(SimError::NoPendingPayment { issuer }))
    }

    /// Why no pending payment takes this answer.
    fn explain_unmatched_answer(&self, answer: &PayerAnswer, issuer: Option<Iin>) -> SimError {
        let in_scope: Vec<&KeySet> = self.key_sets.values().filter(|k| issuer.is_none_or(|iin| k.iin == iin)).collect();
        let pending: Vec<String> =
            in_scope.iter().filter_map(|k| k.pending.as_ref().map(|p| p.summary.counter.value().to_string())).collect();
        if !in_scope.is_empty() && in_scope.iter().all(|k| answer.counter <= k.counter) {
            return SimError::AnswerAlreadyRead { answer: answer.counter.value() };
        }
        if pending.is_empty() {
            return SimError::NoPendingPayment { issuer };
        }
        SimError::AnswerCounterMismatch { answer: answer.counter.value(), pending: pending.join(", ") }
    }

    /// Opens the answer under one issuer's pending session keys; advances only on success.
    fn try_answer(&mut self, iin: Iin, answer: &PayerAnswer) -> Result<AnswerOutcome, SimError> {
        let key_set = self.key_sets.get_mut(&iin).ok_or(SimError::UnknownIssuer { iin })?;
        let Some(pending) = &key_set.pending else { return Err(SimError::NoPendingPayment { issuer: Some(iin) }) };
        let counter = pending.summary.counter;
        let keys = SessionKeys::derive(&key_set.chain_key, counter, &key_set.next_rsn);
        let plain = answer.open(&keys).map_err(SimError::AnswerRejected)?;
        // Verified: advance the ratchet. CK_{n-1} is dropped (and zeroized) here.
        key_set.chain_key = keys.next_chain.clone();
        key_set.counter = counter;
        key_set.next_rsn = plain.next_rsn;
        let payment = key_set.pending.take().map(|p| p.summary);
        let payment = payment.ok_or(SimError::NoPendingPayment { issuer: Some(iin) })?;
        Ok(AnswerOutcome { payment, answer: plain })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use mps_protocol::keys::derive_chain_key_0;
    use mps_protocol::perso::{PersoRecord, wrap_key};
    use mps_protocol::wire::{AuthCode, ResponseCode, TxnId};
    use mps_protocol::{AesKey, Rsn, SimId};

    use super::*;
    use crate::merchants::MerchantEntry;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";
    const TRANSPORT: [u8; 32] = [0x42; 32];

    /// The issuer's view of one SIM: its CK_0 and RSN_1.
    struct Bank {
        chain: AesKey,
        rsn: Rsn,
    }

    fn personalised(profile: &mut Profile, iin: &str, sim_id: &str, account: &str) -> Bank {
        let iin = Iin::new(iin).unwrap();
        let sim_id = SimId::new(sim_id).unwrap();
        let chain = derive_chain_key_0(&AesKey::from_bytes([iin.as_str().as_bytes()[5]; 32]), &sim_id);
        let rsn = Rsn([iin.as_str().as_bytes()[4]; 8]);
        let wrapped = wrap_key(&AesKey::from_bytes(TRANSPORT), &chain);
        let record = PersoRecord::new(iin, &sim_id, "tk", &wrapped, rsn, PEM);
        profile.personalise(&record, &AesKey::from_bytes(TRANSPORT), false).unwrap();
        profile.add_account(Account::new(account).unwrap(), iin, None).unwrap();
        if profile.find_merchant("SHOP").is_err() {
            profile.add_merchant(MerchantEntry::new(MerchantId::new("SHOP").unwrap(), None, None).unwrap()).unwrap();
        }
        Bank { chain, rsn }
    }

    fn request(account: &str, minor: u64) -> PaymentRequest {
        PaymentRequest {
            account: Account::new(account).unwrap(),
            merchant_id: MerchantId::new("SHOP").unwrap(),
            order_no: OrderNo::new("O-1").unwrap(),
            amount: Amount::from_minor(minor),
            currency: Currency::EUR,
        }
    }

    fn answer_for(bank: &Bank, packet: &PayerPacket, code: ResponseCode) -> Vec<u8> {
        let keys = SessionKeys::derive(&bank.chain, packet.fields.counter, &bank.rsn);
        packet.open(&keys).unwrap();
        let plain = AnswerPlain {
            response_code: code,
            auth_code: if code == ResponseCode::Approved { AuthCode(*b"ABC123") } else { AuthCode::NONE },
            balance: 500,
            currency: Currency::EUR,
            next_rsn: Rsn([9; 8]),
            txn_id: TxnId([1; 16]),
        };
        PayerAnswer::seal(&keys, packet.fields.counter, &plain, [3; 16]).encode().to_vec()
    }

    fn snapshot(profile: &Profile) -> Vec<u8> {
        profile.to_json().unwrap().to_vec()
    }

    const ACCOUNT_A: &str = "4000120000001234";
    const ACCOUNT_B: &str = "5100990000005678";
    const PASSWORD: &str = "1234";

    #[test]
    fn refused_payments_change_nothing() {
        let mut profile = Profile::new();
        personalised(&mut profile, "400012", "8949012345678901234", ACCOUNT_A);
        let password = Password::new(PASSWORD).unwrap();
        let before = snapshot(&profile);
        assert!(matches!(
            profile.prepare_payment(&request(ACCOUNT_A, 0), &password, [0; 16]),
            Err(SimError::ZeroAmount)
        ));
        let mut unknown_merchant = request(ACCOUNT_A, 1);
        unknown_merchant.merchant_id = MerchantId::new("OTHER").unwrap();
        assert!(matches!(
            profile.prepare_payment(&unknown_merchant, &password, [0; 16]),
            Err(SimError::UnknownMerchant { .. })
        ));
        assert!(matches!(
            profile.prepare_payment(&request("4000120000009999", 1), &password, [0; 16]),
            Err(SimError::UnknownAccount { .. })
        ));
        assert_eq!(snapshot(&profile), before);

        profile.prepare_payment(&request(ACCOUNT_A, 1), &password, [0; 16]).unwrap();
        let pending = snapshot(&profile);
        assert!(matches!(
            profile.prepare_payment(&request(ACCOUNT_A, 2), &password, [0; 16]),
            Err(SimError::PaymentPending { counter: 1, .. })
        ));
        assert_eq!(snapshot(&profile), pending);
    }

    #[test]
    fn a_bad_answer_changes_nothing_and_a_good_one_advances() {
        let mut profile = Profile::new();
        let bank = personalised(&mut profile, "400012", "8949012345678901234", ACCOUNT_A);
        let packet =
            profile.prepare_payment(&request(ACCOUNT_A, 100), &Password::new(PASSWORD).unwrap(), [7; 16]).unwrap();
        let answer = answer_for(&bank, &packet, ResponseCode::InsufficientFunds);
        let before = snapshot(&profile);
        for index in 0..answer.len() {
            let mut tampered = answer.clone();
            tampered[index] ^= 0x01;
            assert!(profile.open_answer(&tampered, None).is_err(), "byte {index}");
            assert_eq!(snapshot(&profile), before, "byte {index}");
        }
        assert!(matches!(profile.open_answer(&answer[..78], None), Err(SimError::AnswerFormat(_))));
        let outcome = profile.open_answer(&answer, None).unwrap();
        assert!(!outcome.approved());
        let key_set = profile.key_set(Iin::new("400012").unwrap()).unwrap();
        assert_eq!(key_set.counter().value(), 1);
        assert!(key_set.pending().is_none());
        let keys = SessionKeys::derive(&bank.chain, Counter::new(1).unwrap(), &bank.rsn);
        assert_eq!(key_set.chain_key.expose(), keys.next_chain.expose());
        assert_eq!(key_set.next_rsn, Rsn([9; 8]));
    }

    #[test]
    fn two_issuers_pending_at_the_same_counter_are_told_apart_by_the_mac() {
        let mut profile = Profile::new();
        let bank_a = personalised(&mut profile, "400012", "8949012345678901234", ACCOUNT_A);
        let bank_b = personalised(&mut profile, "510099", "8949012345678905678", ACCOUNT_B);
        let password = Password::new(PASSWORD).unwrap();
        let packet_a = profile.prepare_payment(&request(ACCOUNT_A, 1), &password, [1; 16]).unwrap();
        let packet_b = profile.prepare_payment(&request(ACCOUNT_B, 2), &password, [2; 16]).unwrap();
        assert!(matches!(profile.pending_payment(None), Err(SimError::SeveralPending { .. })));
        assert_eq!(profile.pending_payment(Some(Iin::new("510099").unwrap())).unwrap().packet(), &packet_b.encode());

        let answer_b = answer_for(&bank_b, &packet_b, ResponseCode::Approved);
        let outcome = profile.open_answer(&answer_b, None).unwrap();
        assert_eq!(outcome.payment.iin.as_str(), "510099");
        assert!(profile.pending(Iin::new("400012").unwrap()).is_some());
        // Naming the wrong issuer: nothing pending there any more.
        let answer_a = answer_for(&bank_a, &packet_a, ResponseCode::Approved);
        assert!(profile.open_answer(&answer_a, Some(Iin::new("510099").unwrap())).is_err());
        assert_eq!(profile.open_answer(&answer_a, None).unwrap().payment.iin.as_str(), "400012");
    }

    #[test]
    fn personalise_refuses_to_overwrite_unless_asked_and_a_wrong_key_changes_nothing() {
        let mut profile = Profile::new();
        personalised(&mut profile, "400012", "8949012345678901234", ACCOUNT_A);
        let iin = Iin::new("400012").unwrap();
        let sim_id = SimId::new("8949012345678901234").unwrap();
        let wrapped = wrap_key(&AesKey::from_bytes(TRANSPORT), &AesKey::from_bytes([5; 32]));
        let record = PersoRecord::new(iin, &sim_id, "tk", &wrapped, Rsn([6; 8]), PEM);
        let before = snapshot(&profile);
        assert!(matches!(
            profile.personalise(&record, &AesKey::from_bytes(TRANSPORT), false),
            Err(SimError::KeySetExists { .. })
        ));
        assert!(matches!(
            profile.personalise(&record, &AesKey::from_bytes([0; 32]), true),
            Err(SimError::Perso(mps_protocol::perso::PersoError::Unwrap))
        ));
        assert_eq!(snapshot(&profile), before);
        profile.prepare_payment(&request(ACCOUNT_A, 1), &Password::new(PASSWORD).unwrap(), [0; 16]).unwrap();
        let key_set = profile.personalise(&record, &AesKey::from_bytes(TRANSPORT), true).unwrap();
        assert_eq!(key_set.counter(), Counter::ZERO);
        assert!(key_set.pending().is_none());
        assert_eq!(profile.accounts().len(), 1, "accounts stay");
    }

    #[test]
    fn debug_output_shows_no_key_and_no_full_account() {
        let mut profile = Profile::new();
        personalised(&mut profile, "400012", "8949012345678901234", ACCOUNT_A);
        profile.prepare_payment(&request(ACCOUNT_A, 1), &Password::new(PASSWORD).unwrap(), [0; 16]).unwrap();
        let debug = format!("{profile:?}");
        let key_hex = hex::encode(profile.key_set(Iin::new("400012").unwrap()).unwrap().chain_key.expose());
        assert!(!debug.contains(&key_hex), "{debug}");
        assert!(!debug.contains(ACCOUNT_A), "{debug}");
        assert!(debug.contains("400012******1234"), "{debug}");
        assert!(debug.contains("AesKey(<redacted>)"), "{debug}");
    }

    #[test]
    fn profiles_that_contradict_themselves_are_refused() {
        let mut profile = Profile::new();
        personalised(&mut profile, "400012", "8949012345678901234", ACCOUNT_A);
        profile.prepare_payment(&request(ACCOUNT_A, 1), &Password::new(PASSWORD).unwrap(), [0; 16]).unwrap();
        let good: serde_json::Value = serde_json::from_slice(&snapshot(&profile)).unwrap();
        let path = Path::new("profile.json");
        assert!(Profile::from_json(good.to_string().as_bytes(), path).is_ok());
        let broken = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut value = good.clone();
            edit(&mut value);
            Profile::from_json(value.to_string().as_bytes(), path)
        };
        type Edit<'a> = &'a dyn Fn(&mut serde_json::Value);
        let cases: [(&str, Edit); 7] = [
            ("format", &|v| v["format"] = "mps-sim-profile/9".into()),
            ("unknown field", &|v| v["extra"] = 1.into()),
            ("duplicate issuer", &|v| {
                let first = v["key_sets"][0].clone();
                v["key_sets"].as_array_mut().unwrap().push(first);
            }),
            ("account at unknown issuer", &|v| v["accounts"][0]["iin"] = "999999".into()),
            ("pending counter", &|v| v["key_sets"][0]["counter"] = 5.into()),
            ("pending summary", &|v| v["key_sets"][0]["pending"]["summary"]["amount"] = 2.into()),
            ("duplicate merchant", &|v| {
                let first = v["merchants"][0].clone();
                v["merchants"].as_array_mut().unwrap().push(first);
            }),
        ];
        for (name, edit) in cases {
            assert!(broken(edit).is_err(), "{name} must be refused");
        }
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        assert!(matches!(Profile::load(&path), Err(crate::ProfileError::NotFound { .. })));
        let mut profile = Profile::load_or_new(&path).unwrap();
        personalised(&mut profile, "400012", "8949012345678901234", ACCOUNT_A);
        profile.prepare_payment(&request(ACCOUNT_A, 1), &Password::new(PASSWORD).unwrap(), [0; 16]).unwrap();
        profile.save(&path).unwrap();
        let back = Profile::load(&path).unwrap();
        assert_eq!(snapshot(&back), snapshot(&profile));
    }
}
