//! The authorization session in the HSM, in two phases (DESIGN.md sections 3 to 5, 7):
//!
//! 1. [`Hsm::open_session`]: unwrap CK_{n-1}, derive Ki_n, verify the packet's MAC, derive
//!    Ks_n, decrypt the secret, compute the password verification value. The keys stay in
//!    the worker's session under a [`SessionTicket`].
//! 2. [`Hsm::seal_answer`]: after the ledger decided, encrypt and MAC the answer under the
//!    same Ks_n and Ki_n, derive CK_n and wrap it under mps-kek for the ledger, destroy all.
//!
//! Two phases because the answer's content depends on the decision taken between them; one
//! call per phase keeps the object creations at the protocol's minimum (unwrap + 3 derives).

use std::fmt;
use std::time::Instant;

use crossbeam_channel::Sender;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::misc::KeyDerivationStringData;
use cryptoki::object::ObjectHandle;
use mps_protocol::keys::{
    CONTEXT_LEN, LABEL_CHAIN, LABEL_ENCRYPTION, LABEL_INTEGRITY, MAC_LEN, kdf_data, session_context,
};
use mps_protocol::perso::WRAPPED_KEY_LEN;
use mps_protocol::wire::{ANSWER_CIPHERTEXT_LEN, SECRET_CIPHERTEXT_LEN};
use mps_protocol::{
    Account, AnswerPlain, AuthCode, Counter, Currency, PasswordVerificationValue, PayerAnswer, PayerPacket,
    PaymentSecret, ResponseCode, Rsn, TxnId,
};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::custody::WrappedChainKey;
use crate::error::{HsmError, Pkcs11Function, RvError, SessionError};
use crate::pool::{Generation, Hsm, Route, TicketId};
use crate::templates;
use crate::worker::{Ctx, Job, OpenTicket};

/// What [`Hsm::open_session`] learnt from an authenticated packet.
pub struct OpenedSession {
    /// The account the payer chose (from the decrypted secret).
    pub account: Account,
    /// HMAC-SHA256(mps-pvk, account BCD || password): compare with the stored value in
    /// constant time. The clear password never leaves the HSM worker.
    pub password_verification_value: PasswordVerificationValue,
    /// Seals the answer later; dropping it discards the session's keys.
    pub ticket: SessionTicket,
}

impl fmt::Debug for OpenedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedSession")
            .field("account", &self.account)
            .field("password_verification_value", &self.password_verification_value)
            .field("ticket", &self.ticket)
            .finish()
    }
}

/// The right to seal one opened session: names the member (HSM), the worker and the objects
/// that hold Ks_n, Ki_n and CK_{n-1}. Dropping it without sealing destroys them.
pub struct SessionTicket {
    id: TicketId,
    member: usize,
    worker: usize,
    generation: Generation,
    discard: Option<Sender<Job>>,
}

impl SessionTicket {
    fn disarm(&mut self) {
        self.discard = None;
    }
}

impl fmt::Debug for SessionTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionTicket")
            .field("id", &self.id)
            .field("member", &self.member)
            .field("worker", &self.worker)
            .finish()
    }
}

impl Drop for SessionTicket {
    fn drop(&mut self) {
        if let Some(discard) = self.discard.take() {
            let (id, generation) = (self.id, self.generation);
            let job: Job = Box::new(move |ctx: Result<&mut Ctx, HsmError>| {
                if let Ok(ctx) = ctx {
                    ctx.discard(id, generation);
                }
            });
            // A worker that is gone took the objects with its session.
            let _ = discard.send(job);
        }
    }
}

/// The content of the answer for the SIM: everything of protocol's [`AnswerPlain`] except
/// RSN_{n+1}, which the HSM draws.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerContent {
    /// ISO 8583 response code.
    pub response_code: ResponseCode,
    /// Auth code, or [`AuthCode::NONE`] when declined.
    pub auth_code: AuthCode,
    /// Available balance in minor units.
    pub balance: i64,
    /// Currency of the balance.
    pub currency: Currency,
    /// The issuer's transaction id.
    pub txn_id: TxnId,
}

/// A sealed session: the answer for the SIM and what the ledger stores for session n + 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSession {
    /// The 79-byte answer (encode with [`PayerAnswer::encode`]).
    pub answer: PayerAnswer,
    /// RSN_{n+1}, drawn by the HSM and inside the answer.
    pub next_rsn: Rsn,
    /// CK_n wrapped under the newest KEK (RFC 5649), for the ledger.
    pub wrapped_next_chain_key: WrappedChainKey,
}

impl Hsm {
    /// Phase 1 of an authorization: on one worker, unwraps CK_{n-1} from
    /// `wrapped_chain_key` (under the KEK version it names), derives Ki_n for session
    /// `counter` = n with `rsn` = RSN_n, checks the packet's 8-byte MAC in constant time,
    /// derives Ks_n, decrypts and parses the secret, and computes the password verification
    /// value. On a bad MAC or secret every object is destroyed and nothing else happens.
    pub async fn open_session(
        &self,
        wrapped_chain_key: &WrappedChainKey,
        counter: Counter,
        rsn: Rsn,
        packet: &PayerPacket,
    ) -> Result<OpenedSession, SessionError> {
        let wrapped = *wrapped_chain_key;
        if packet.fields.counter != counter {
            return Err(HsmError::InvalidInput { what: "packet counter differs from the session counter" }.into());
        }
        let packet = packet.clone();
        self.call(Route::Any, move |ctx| ctx.open_session(&wrapped, counter, &rsn, &packet)).await
    }

    /// Phase 2: seals the answer of an opened session on the worker that holds its keys.
    /// Draws RSN_{n+1} and the IV from the HSM's generator. Returns `Unavailable` if the pool
    /// was re-initialised since the session was opened (its keys died with the session), and
    /// `TicketExpired` if the session outlived `ticket_ttl_ms`.
    pub async fn seal_answer(&self, ticket: SessionTicket, answer: AnswerContent) -> Result<SealedSession, HsmError> {
        self.seal(ticket, answer, None).await
    }

    /// [`Hsm::seal_answer`] with a fixed IV and RSN_{n+1}, for known-answer tests.
    #[cfg(feature = "testing")]
    pub async fn seal_answer_with(
        &self,
        ticket: SessionTicket,
        answer: AnswerContent,
        iv: [u8; 16],
        next_rsn: Rsn,
    ) -> Result<SealedSession, HsmError> {
        self.seal(ticket, answer, Some((iv, next_rsn))).await
    }

    async fn seal(
        &self,
        mut ticket: SessionTicket,
        answer: AnswerContent,
        fixed: Option<([u8; 16], Rsn)>,
    ) -> Result<SealedSession, HsmError> {
        let (id, generation, member, worker) = (ticket.id, ticket.generation, ticket.member, ticket.worker);
        // From here the seal job owns the objects: it destroys them on every path, and if it
        // cannot run the worker has no session and the objects are gone already.
        ticket.disarm();
        self.call(Route::Ticket { member, worker }, move |ctx| ctx.seal(id, generation, &answer, fixed)).await
    }
}

/// The 40 bytes of an RFC 5649 wrap of a 32-byte key, as `C_WrapKey` returned them.
pub(crate) fn wrapped_key_bytes(wrapped: &[u8]) -> Result<[u8; WRAPPED_KEY_LEN], HsmError> {
    wrapped.try_into().map_err(|_| HsmError::UnexpectedLength {
        function: Pkcs11Function::WrapKey,
        expected: WRAPPED_KEY_LEN,
        actual: wrapped.len(),
    })
}

/// The 32 bytes of derivation data, as `CKM_AES_ECB_ENCRYPT_DATA` parameters.
fn derivation(label: u8, context: &[u8; CONTEXT_LEN]) -> [u8; 32] {
    kdf_data(label, context)
}

impl Ctx {
    fn derive(
        &self,
        base: ObjectHandle,
        label: u8,
        context: &[u8; CONTEXT_LEN],
        template: &[cryptoki::object::Attribute],
    ) -> Result<ObjectHandle, HsmError> {
        let data = derivation(label, context);
        let params = KeyDerivationStringData::new(&data);
        self.session()?.derive_key(&templates::ecb_encrypt_data(&params), base, template).map_err(|e| self.fail(e))
    }

    fn cmac8(&self, key: ObjectHandle, data: &[u8]) -> Result<[u8; MAC_LEN], HsmError> {
        let full = self.session()?.sign(&Mechanism::AesCMac, key, data).map_err(|e| self.fail(e))?;
        let mut out = [0u8; MAC_LEN];
        match full.get(..MAC_LEN) {
            Some(prefix) if full.len() == 16 => out.copy_from_slice(prefix),
            _ => {
                return Err(HsmError::UnexpectedLength {
                    function: Pkcs11Function::Sign,
                    expected: 16,
                    actual: full.len(),
                });
            }
        }
        Ok(out)
    }

    fn open_session(
        &mut self,
        wrapped: &WrappedChainKey,
        counter: Counter,
        rsn: &Rsn,
        packet: &PayerPacket,
    ) -> Result<OpenedSession, SessionError> {
        self.reap_expired_tickets();
        if self.tickets.len() >= self.shared.config.tickets_per_worker_max {
            return Err(HsmError::Busy.into());
        }
        let kek = self.kek(wrapped.kek_version, false)?;
        let session = self.session()?;
        let previous_chain = session
            .unwrap_key(&Mechanism::AesKeyWrapPad, kek, &wrapped.bytes, &templates::unwrapped_chain_key())
            .map_err(|e| match self.fail(e) {
                // SoftHSM reports a failed integrity check as CKR_GENERAL_ERROR (the session
                // was probed alive, else this would be `Unavailable`).
                HsmError::Pkcs11 {
                    rv:
                        RvError::WrappedKeyInvalid
                        | RvError::WrappedKeyLenRange
                        | RvError::EncryptedDataInvalid
                        | RvError::EncryptedDataLenRange
                        | RvError::GeneralError,
                    ..
                } => HsmError::WrappedKeyInvalid,
                other => other,
            })?;
        let previous_chain = self.guard(previous_chain);
        let context = session_context(counter, rsn);

        let integrity =
            self.guard(self.derive(previous_chain.handle(), LABEL_INTEGRITY, &context, &templates::integrity_key())?);
        let expected = self.cmac8(integrity.handle(), &packet.mac_input())?;
        if !bool::from(expected.ct_eq(&packet.mac)) {
            return Err(SessionError::BadMac);
        }

        let encryption = self.guard(self.derive(
            previous_chain.handle(),
            LABEL_ENCRYPTION,
            &context,
            &templates::encryption_key(),
        )?);
        let plaintext = self
            .session()?
            .decrypt(&Mechanism::AesCbcPad(packet.iv), encryption.handle(), &packet.ciphertext)
            .map(Zeroizing::new)
            .map_err(|e| match self.fail(e) {
                // Bad padding (SoftHSM: CKR_GENERAL_ERROR with the session alive).
                HsmError::Pkcs11 {
                    rv: RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange | RvError::GeneralError,
                    ..
                } => SessionError::BadSecret,
                other => SessionError::Hsm(other),
            })?;
        debug_assert!(packet.ciphertext.len() == SECRET_CIPHERTEXT_LEN);
        let secret = PaymentSecret::from_plaintext(&plaintext).map_err(|_| SessionError::BadSecret)?;
        drop(plaintext);
        let password_verification_value = self.password_verification_value(&secret.account, &secret.password)?;
        let PaymentSecret { account, password } = secret;
        drop(password);

        let ticket = OpenTicket {
            previous_chain: previous_chain.keep(),
            integrity: integrity.keep(),
            encryption: encryption.keep(),
            counter,
            context,
            opened: Instant::now(),
        };
        let id = self.insert_ticket(ticket);
        let ticket = SessionTicket {
            id,
            member: self.shared.member,
            worker: self.worker,
            generation: self.generation,
            discard: Some(self.tickets_sender.clone()),
        };
        Ok(OpenedSession { account, password_verification_value, ticket })
    }

    fn seal(
        &mut self,
        id: TicketId,
        generation: Generation,
        content: &AnswerContent,
        fixed: Option<([u8; 16], Rsn)>,
    ) -> Result<SealedSession, HsmError> {
        if generation != self.generation {
            return Err(HsmError::Unavailable);
        }
        let kek_version = self.kek_newest();
        let kek = self.kek(kek_version, true);
        let ticket = self.take_ticket(id).ok_or(HsmError::TicketExpired)?;
        // Each object is destroyed when its guard drops, on every path below.
        let previous_chain = self.guard_existing(ticket.previous_chain);
        let integrity = self.guard_existing(ticket.integrity);
        let encryption = self.guard_existing(ticket.encryption);
        if ticket.opened.elapsed() >= std::time::Duration::from_millis(self.shared.config.ticket_ttl_ms) {
            return Err(HsmError::TicketExpired);
        }
        let kek = kek?;

        let (iv, next_rsn) = match fixed {
            Some(fixed) => fixed,
            None => {
                let mut random = [0u8; 24];
                self.session()?.generate_random_slice(&mut random).map_err(|e| self.fail(e))?;
                let mut iv = [0u8; 16];
                let mut rsn = [0u8; 8];
                iv.copy_from_slice(&random[..16]);
                rsn.copy_from_slice(&random[16..]);
                (iv, Rsn(rsn))
            }
        };
        let plain = AnswerPlain {
            response_code: content.response_code,
            auth_code: content.auth_code,
            balance: content.balance,
            currency: content.currency,
            next_rsn,
            txn_id: content.txn_id,
        };
        let ciphertext_vec = self
            .session()?
            .encrypt(&Mechanism::AesCbcPad(iv), encryption.handle(), &plain.to_plaintext()[..])
            .map_err(|e| self.fail(e))?;
        let ciphertext: [u8; ANSWER_CIPHERTEXT_LEN] =
            ciphertext_vec.as_slice().try_into().map_err(|_| HsmError::UnexpectedLength {
                function: Pkcs11Function::Encrypt,
                expected: ANSWER_CIPHERTEXT_LEN,
                actual: ciphertext_vec.len(),
            })?;
        let mut answer = PayerAnswer { counter: ticket.counter, iv, ciphertext, mac: [0; MAC_LEN] };
        answer.mac = self.cmac8(integrity.handle(), &answer.mac_input())?;

        let next_chain =
            self.guard(self.derive(previous_chain.handle(), LABEL_CHAIN, &ticket.context, &templates::chain_key())?);
        let wrapped =
            self.session()?.wrap_key(&Mechanism::AesKeyWrapPad, kek, next_chain.handle()).map_err(|e| self.fail(e))?;
        let wrapped_next_chain_key = WrappedChainKey { kek_version, bytes: wrapped_key_bytes(&wrapped)? };
        Ok(SealedSession { answer, next_rsn, wrapped_next_chain_key })
    }

    /// Destroys an opened session's objects (its ticket was dropped without sealing).
    pub(crate) fn discard(&mut self, id: TicketId, generation: Generation) {
        if generation != self.generation {
            return;
        }
        if let Some(ticket) = self.take_ticket(id) {
            self.destroy_ticket(&ticket);
        }
    }
}
