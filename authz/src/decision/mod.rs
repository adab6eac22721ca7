//! The issuer's decision of DESIGN.md section 7, in order, first failure wins. Each step lives
//! in its own file, named for what it checks; this file runs them and turns the outcome into
//! a [`Reply`]. Nothing here knows HTTP: `front/` maps a [`Reply`] to a response.
//!
//! Order of work for one authorization: parse (2), merchant signature (3), packet (4), then
//! under the SIM's lock: SIM and counter (5, 6), the HSM opens the session (7); then under the
//! order's and the account's locks: account (8), password (9), limits (10), duplicate order (11), funds (12),
//! approval (13); the HSM seals the SIM's answer and advances the chain key, the HSM signs the
//! answer body, and one ledger transaction stores it all. Only after that commit is durable
//! does the answer leave.

pub mod account;
pub mod approve;
pub mod attempt;
pub mod business_day;
pub mod clock;
pub mod duplicate;
pub mod funds;
pub mod limits;
pub mod locks;
pub mod mac_failures;
pub mod merchant;
pub mod packet;
pub mod password;
pub mod request;
pub mod response;
pub mod reversal;
pub mod rules;
pub mod signature;
pub mod sim;
pub mod summary;

use std::sync::Arc;
use std::time::Instant;

use mps_hsm::{AnswerContent, Hsm, OpenedSession, SessionError};
use mps_protocol::wire::PayerPacket;
use mps_protocol::{Amount, AuthCode, Currency, ResponseCode};

use crate::ledger::{
    AccountRecord, DecisionState, DeclineCode, Ledger, LedgerError, PasswordEffect, SessionCommit, SessionOutcome,
    SimRecord, Transaction,
};
use crate::ops::metrics::{Metrics, Stage};

use self::attempt::Attempt;
use self::business_day::Cutoff;
use self::locks::LockTable;
use self::request::AuthorizationRequest;
use self::signature::AnswerSigner;
use self::summary::About;

/// What the decision hands the front end: `front/` alone turns it into HTTP.
#[derive(Debug)]
pub enum Reply {
    /// A processed authorization, approved or declined, signed.
    Processed {
        /// The exact body bytes.
        body: Vec<u8>,
        /// The detached JWS for `x-jws-signature`.
        signature: String,
        /// The ISO 8583 code inside, for metrics and logs.
        code: ResponseCode,
        /// What it was about, for the operator's console (boxed: it would double the size of
        /// every `Reply` and `Early` result).
        about: Box<About>,
    },
    /// Refused before any decision: nothing is signed, stored or changed.
    Refused(Refusal),
    /// A dependency could not answer; nothing was approved.
    Unavailable(Dependency),
    /// The caller gave up after the booking was queued: it completes, and the same packet
    /// sent again gets the stored answer. Never "nothing was approved".
    OutcomeUnknown,
}

/// Why a request was refused before the issuer decided (steps 2 to 4).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The body is not a well-formed authorization request (step 2).
    #[error("{0}")]
    Format(request::BadRequest),
    /// The merchant's signature does not verify (step 3).
    #[error("{0}")]
    Signature(merchant::MerchantRefusal),
    /// The payer packet is malformed, for another issuer, or says something else than the
    /// body (step 4).
    #[error("{0}")]
    Packet(packet::PacketRefusal),
    /// A reversal named a transaction of another merchant's order.
    #[error("the transaction named belongs to another merchant's order; only that merchant can reverse it")]
    OtherMerchant,
    /// This merchant sent too many packets whose MAC failed for this SIM lately.
    #[error(
        "too many packets for this SIM from this merchant failed their MAC lately; nothing was checked or changed, \
         retry later"
    )]
    Throttled,
}

impl Refusal {
    /// The ISO 8583 code of this refusal.
    pub fn response_code(&self) -> ResponseCode {
        match self {
            Self::Format(_) => ResponseCode::FormatError,
            Self::Signature(_) => ResponseCode::SecurityViolation,
            Self::Packet(refusal) => refusal.response_code(),
            Self::OtherMerchant | Self::Throttled => ResponseCode::SecurityViolation,
        }
    }
}

/// What could not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// The HSM pool.
    Hsm,
    /// The ledger.
    Ledger,
    /// The request's own deadline passed.
    Deadline,
}

impl Dependency {
    /// A name for logs and problem details.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hsm => "hsm",
            Self::Ledger => "ledger",
            Self::Deadline => "deadline",
        }
    }
}

/// Fixed settings of the decision.
#[derive(Debug, Clone)]
pub struct DecisionSettings {
    /// Our IIN.
    pub iin: mps_protocol::Iin,
    /// End of the business day.
    pub cutoff: Cutoff,
    /// Consecutive wrong passwords that lock payments.
    pub password_tries_max: u32,
    /// MAC failures per SIM and merchant within `mac_failure_window` before that merchant's
    /// packets for the SIM are refused for the rest of the window (0: no limit).
    pub mac_failure_limit: u32,
    /// See `mac_failure_limit`.
    pub mac_failure_window: std::time::Duration,
    /// The time of bookings and answers (the system clock in service).
    pub clock: clock::Clock,
}

/// Runs authorizations. Cheap to share (`Arc`).
pub struct Authorizer {
    hsm: Hsm,
    ledger: Ledger,
    merchants: merchant::MerchantVerifier,
    signer: AnswerSigner,
    settings: DecisionSettings,
    sim_locks: LockTable,
    order_locks: LockTable,
    account_locks: LockTable,
    mac_failures: mac_failures::MacFailures,
    metrics: Arc<Metrics>,
}

/// Where steps 5 to 7 leave an authorization.
enum Authentication {
    /// Done: a stored answer, or the whole decision.
    Reply(Reply),
    /// Refused before authentication (14, 62, 63): signed once every lock is released.
    Refused(ResponseCode),
}

/// A step that ended the authorization early with a reply.
type Early<T> = Result<T, Reply>;

const LOCK_SLOTS: usize = 4096;

impl Authorizer {
    /// Assembles an authorizer from its parts.
    pub fn new(
        hsm: Hsm,
        ledger: Ledger,
        merchants: merchant::MerchantVerifier,
        signer: AnswerSigner,
        settings: DecisionSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            hsm,
            ledger,
            merchants,
            signer,
            sim_locks: LockTable::new(LOCK_SLOTS),
            order_locks: LockTable::new(LOCK_SLOTS),
            account_locks: LockTable::new(LOCK_SLOTS),
            mac_failures: mac_failures::MacFailures::new(settings.mac_failure_limit, settings.mac_failure_window),
            settings,
            metrics,
        }
    }

    /// The HSM handle (readiness).
    pub fn hsm(&self) -> &Hsm {
        &self.hsm
    }

    /// The ledger handle (readiness).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Decides one authorization from the exact body bytes and the `x-jws-signature` header.
    /// It queues its booking only if `attempt`'s caller has not given up by then; run it in a
    /// task of its own so that nothing cancels it once it has (see [`attempt`]).
    pub async fn authorize(&self, body: &[u8], jws: Option<&str>, attempt: &Attempt) -> Reply {
        match self.run(body, jws, attempt).await {
            Ok(reply) | Err(reply) => reply,
        }
    }

    async fn run(&self, body: &[u8], jws: Option<&str>, attempt: &Attempt) -> Early<Reply> {
        let request = request::parse(body).map_err(|e| Reply::Refused(Refusal::Format(e)))?;
        self.timed(Stage::Jws, async { self.merchants.check(jws, body, &request.merchant_id) }).await.map_err(|e| {
            tracing::info!(reason = %e, "merchant signature refused");
            Reply::Refused(Refusal::Signature(e))
        })?;
        let packet = packet::check(&request, self.settings.iin).map_err(|e| Reply::Refused(Refusal::Packet(e)))?;
        match self.authenticate(&request, &packet, attempt).await? {
            Authentication::Reply(reply) => Ok(reply),
            // Signed after every lock is released: refusing garbage holds no SIM's lock.
            Authentication::Refused(code) => self.unauthenticated(&request, &packet.fields.sim_id, code).await,
        }
    }

    /// Steps 5 to 7 without the SIM's lock, then again under it, then steps 8 on.
    ///
    /// The first look reads the SIM and verifies the MAC in the HSM without the SIM's lock: a
    /// packet that fails there moves nothing, so it needs no lock, and a flood of garbage under
    /// a victim's SIM id never queues in front of the victim's own payment. Only a packet whose
    /// MAC verified takes the lock, reads the SIM again, and goes on if nothing moved between
    /// the look and the lock; if something did (its own earlier booking completed, an operator
    /// blocked the SIM, the chain key was rewrapped), steps 5 to 7 run again under the lock.
    async fn authenticate(
        &self,
        request: &AuthorizationRequest,
        packet: &PayerPacket,
        attempt: &Attempt,
    ) -> Early<Authentication> {
        let sim_id = &packet.fields.sim_id;
        let Some(mut mac_check) = self.mac_failures.begin(sim_id, &request.merchant_id) else {
            tracing::warn!(sim = %sim_id, merchant = %request.merchant_id, "packet refused: too many MAC failures lately");
            return Err(Reply::Refused(Refusal::Throttled));
        };
        let looked = self.ledger_call(self.ledger.sim(sim_id)).await?;
        let (sim, opened) = match self.steps_5_to_7(request, packet, looked, &mut mac_check).await? {
            Ok(session) => session,
            Err(done) => return Ok(done),
        };
        // Fixed order of the three tables (SIM, order, account) rules out deadlocks; the order
        // lock keeps two SIMs from approving one merchant order at once (step 11). All three are
        // held before the read under them, so the SIM, the account and the order it reads stay
        // as read until the booking is durable.
        let _sim_guard = self.sim_locks.lock(sim_id.as_str()).await;
        let _order_guard = self.order_locks.lock(&(request.merchant_id, request.order_no)).await;
        let mut account_guard = self.account_locks.lock(opened.account.expose()).await;
        let mut state = self.state_under_locks(request, sim_id, &opened.account).await?;
        let (sim, opened) = if state.sim.as_ref() == Some(&sim) {
            (sim, opened)
        } else {
            let locked_account = opened.account.clone();
            drop(opened);
            let (sim, opened) = match self.steps_5_to_7(request, packet, state.sim.take(), &mut mac_check).await? {
                Ok(session) => session,
                Err(done) => return Ok(done),
            };
            // The same packet opens to the same account under a moved SIM; should it name
            // another, that account is locked (still after the SIM and the order) and read.
            if opened.account != locked_account {
                drop(account_guard);
                account_guard = self.account_locks.lock(opened.account.expose()).await;
                state = self.state_under_locks(request, sim_id, &opened.account).await?;
            }
            (sim, opened)
        };
        // The MAC verified: this check's place under the MAC-failure limit comes back.
        drop(mac_check);
        let reply = self.authenticated(request, packet, &sim, opened, state, attempt).await;
        drop(account_guard);
        reply.map(Authentication::Reply)
    }

    /// The read under the locks: the SIM again, the account and the order, in one snapshot.
    async fn state_under_locks(
        &self,
        request: &AuthorizationRequest,
        sim_id: &mps_protocol::SimId,
        account: &mps_protocol::Account,
    ) -> Early<DecisionState> {
        self.ledger_call(self.ledger.decision_state(sim_id, account, &request.merchant_id, &request.order_no)).await
    }

    /// Steps 5 and 6 on the SIM as read, then step 7 in the HSM; a failed MAC is counted in
    /// `mac_check`.
    async fn steps_5_to_7(
        &self,
        request: &AuthorizationRequest,
        packet: &PayerPacket,
        sim: Option<SimRecord>,
        mac_check: &mut mac_failures::MacCheck,
    ) -> Early<Result<(SimRecord, OpenedSession), Authentication>> {
        match sim::check(sim.as_ref(), packet, &request.payer_packet) {
            Err(code) => return Ok(Err(Authentication::Refused(code))),
            Ok(sim::CounterVerdict::Retransmission) => {
                let about =
                    About::order(request.merchant_id, request.amount, request.currency).with_sim(&packet.fields.sim_id);
                return Ok(Err(Authentication::Reply(Self::stored_answer(sim.as_ref(), about))));
            }
            Ok(sim::CounterVerdict::NextSession) => {}
        }
        let Some(sim) = sim else { return Ok(Err(Authentication::Refused(ResponseCode::UnknownSim))) };
        match self.open_session(&sim, packet).await? {
            Ok(opened) => Ok(Ok((sim, opened))),
            Err(code) => {
                mac_check.failed();
                Ok(Err(Authentication::Refused(code)))
            }
        }
    }

    /// Step 7: unwrap, derive, verify the MAC, decrypt; bad MAC is 63 with the state kept.
    async fn open_session(&self, sim: &SimRecord, packet: &PayerPacket) -> Early<Result<OpenedSession, ResponseCode>> {
        let opened = self
            .timed(
                Stage::Hsm,
                self.hsm.open_session(&sim.wrapped_chain_key, packet.fields.counter, sim.next_rsn, packet),
            )
            .await;
        match opened {
            Ok(opened) => Ok(Ok(opened)),
            Err(SessionError::BadMac) => {
                self.metrics.mac_failures.inc();
                tracing::warn!(sim = %sim.sim_id, counter = packet.fields.counter.value(), "packet MAC does not verify");
                Ok(Err(ResponseCode::SecurityViolation))
            }
            Err(SessionError::BadSecret) => {
                self.metrics.mac_failures.inc();
                tracing::warn!(sim = %sim.sim_id, "packet MAC verifies but its secret is malformed");
                Ok(Err(ResponseCode::SecurityViolation))
            }
            Err(e) => {
                tracing::error!(error = %e, "HSM failed while opening a session");
                Err(Reply::Unavailable(Dependency::Hsm))
            }
        }
    }

    /// Steps 8 to 13 and the durable booking, for a session whose MAC verified.
    async fn authenticated(
        &self,
        request: &AuthorizationRequest,
        packet: &PayerPacket,
        sim: &SimRecord,
        opened: OpenedSession,
        state: DecisionState,
        attempt: &Attempt,
    ) -> Early<Reply> {
        let now = self.settings.clock.now();
        let business_day = self.settings.cutoff.business_day(now);
        let DecisionState { account, order_authorized, .. } = state;
        let decision = self.decide(request, sim, &opened, account.as_ref(), order_authorized, business_day).await?;
        let outcome = match DeclineCode::new(decision.code) {
            None => SessionOutcome::Approved { auth_code: approve::new_auth_code() },
            Some(code) => SessionOutcome::Declined { code, password_effect: decision.password_effect },
        };
        let auth_code = outcome.stored().auth_code().unwrap_or(AuthCode::NONE);
        let txn_id = approve::new_txn_id(now);
        let (balance, currency) = Self::answer_balance(account.as_ref(), decision.code, request);
        let content = AnswerContent { response_code: decision.code, auth_code, balance, currency, txn_id };
        let sealed = self.timed(Stage::Hsm, self.hsm.seal_answer(opened.ticket, content)).await.map_err(|e| {
            tracing::error!(error = %e, "HSM failed while sealing an answer");
            Reply::Unavailable(Dependency::Hsm)
        })?;
        let answer_bytes = sealed.answer.encode();
        let body = response::body(request, decision.code, auth_code, txn_id, now, Some(&answer_bytes));
        let signature = self.sign(&body).await?;
        let transaction = Transaction {
            txn_id,
            sim_id: sim.sim_id.clone(),
            counter: packet.fields.counter,
            account: opened.account.clone(),
            merchant_id: request.merchant_id,
            order_no: request.order_no,
            acquirer_iin: request.acquirer_iin,
            merchant_account: request.merchant_account.as_str().to_owned(),
            amount: request.amount,
            currency: request.currency,
            business_day,
            created_at: now,
        };
        let commit = SessionCommit {
            transaction,
            outcome,
            wrapped_next_chain_key: sealed.wrapped_next_chain_key,
            next_rsn: sealed.next_rsn,
            packet: request.payer_packet.clone(),
            response_body: body.clone(),
            response_signature: signature.clone(),
        };
        if !attempt.begin_booking() {
            tracing::info!("the caller gave up before the booking: nothing booked");
            return Err(Reply::Unavailable(Dependency::Deadline));
        }
        // From here on the booking completes whatever the caller does, and the locks are held
        // until it is durable (or has failed).
        self.ledger_call(self.ledger.commit_session(commit)).await?;
        tracing::info!(
            txn_id = %txn_id.to_hex(),
            sim = %sim.sim_id,
            account = %opened.account,
            counter = packet.fields.counter.value(),
            code = decision.code.as_str(),
            "authorization decided"
        );
        let about = About::order(request.merchant_id, request.amount, request.currency)
            .with_sim(&sim.sim_id)
            .with_account(&opened.account);
        Ok(Reply::Processed { body, signature, code: decision.code, about: Box::new(about) })
    }

    /// Steps 8 to 12 on the account, in order; the first refusal wins.
    async fn decide(
        &self,
        request: &AuthorizationRequest,
        sim: &SimRecord,
        opened: &OpenedSession,
        account: Option<&AccountRecord>,
        order_authorized: bool,
        business_day: time::Date,
    ) -> Early<Decision> {
        let refuse = |code| Ok(Decision { code, password_effect: PasswordEffect::None });
        let bound_to_sim = sim.accounts.contains(&opened.account);
        if let Err(code) = account::check(bound_to_sim, account, request.currency) {
            return refuse(code);
        }
        let Some(account) = account else { return refuse(ResponseCode::NotPermitted) };
        let password = password::check(account, &opened.password_verification_value, self.settings.password_tries_max);
        if let Err(code) = password.result {
            return Ok(Decision { code, password_effect: password.effect });
        }
        let verified = |code| Decision { code, password_effect: password.effect };
        // The account row just read carries the day's running total: no sum, no second read.
        let approved_today = self.ledger_call(self.ledger.approved_on(account, business_day)).await?;
        match rules::after_password(account, request.amount, approved_today, order_authorized) {
            Ok(()) => Ok(verified(ResponseCode::Approved)),
            Err(code) => Ok(verified(code)),
        }
    }

    /// The balance the SIM is told: the available funds after this session, but only once
    /// the password has been verified (a wrong password must not reveal the balance); see
    /// [`ResponseCode::discloses_balance`].
    fn answer_balance(
        account: Option<&AccountRecord>,
        code: ResponseCode,
        request: &AuthorizationRequest,
    ) -> (i64, Currency) {
        match account {
            Some(account) if code.discloses_balance() => {
                let available = account.available();
                let spent = if code == ResponseCode::Approved { Self::signed(request.amount) } else { 0 };
                (available.saturating_sub(spent), account.currency)
            }
            Some(account) => (0, account.currency),
            None => (0, request.currency),
        }
    }

    fn signed(amount: Amount) -> i64 {
        i64::try_from(amount.minor()).unwrap_or(i64::MAX)
    }

    /// A processed answer without a SIM answer: the packet could not be authenticated (14, 62
    /// for a blocked SIM, 63). Nothing is stored and the SIM's state does not move.
    async fn unauthenticated(
        &self,
        request: &AuthorizationRequest,
        sim_id: &mps_protocol::SimId,
        code: ResponseCode,
    ) -> Early<Reply> {
        let now = self.settings.clock.now();
        let txn_id = approve::new_txn_id(now);
        let body = response::body(request, code, AuthCode::NONE, txn_id, now, None);
        let signature = self.sign(&body).await?;
        tracing::info!(txn_id = %txn_id.to_hex(), code = code.as_str(), "authorization refused before authentication");
        let about = About::order(request.merchant_id, request.amount, request.currency).with_sim(sim_id);
        Ok(Reply::Processed { body, signature, code, about: Box::new(about) })
    }

    /// The byte-identical stored answer of a retransmitted packet.
    fn stored_answer(sim: Option<&SimRecord>, about: About) -> Reply {
        match sim.and_then(|sim| sim.last_answer.as_ref()) {
            Some(stored) => Reply::Processed {
                body: stored.response_body.clone(),
                signature: stored.response_signature.clone(),
                code: stored.response_code,
                about: Box::new(about),
            },
            // sim::check only reports a retransmission when a stored answer exists.
            None => Reply::Unavailable(Dependency::Ledger),
        }
    }

    async fn sign(&self, body: &[u8]) -> Early<String> {
        self.timed(Stage::Hsm, self.signer.sign(&self.hsm, body)).await.map_err(|e| {
            tracing::error!(error = %e, "HSM failed while signing an answer");
            Reply::Unavailable(Dependency::Hsm)
        })
    }

    async fn ledger_call<T>(&self, call: impl Future<Output = Result<T, LedgerError>>) -> Early<T> {
        self.timed(Stage::Ledger, call).await.map_err(|e| {
            if let LedgerError::Conflict(conflict) = &e {
                // With one instance the decision's locks keep its premises; with several on one
                // PostgreSQL ledger, another instance may book the same SIM or account between
                // the decision's reads and this booking. Nothing was stored: 503, and the resent
                // request is decided afresh (the gateway resends it to the next instance).
                tracing::warn!(%conflict, "a premise of the decision moved before its booking: nothing booked, answered 503");
            } else {
                tracing::error!(error = %e, "ledger failed");
            }
            Reply::Unavailable(Dependency::Ledger)
        })
    }

    async fn timed<T>(&self, stage: Stage, work: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = work.await;
        self.metrics.observe_stage(stage, started.elapsed());
        out
    }
}

/// The outcome of steps 8 to 12.
#[derive(Debug, Clone, Copy)]
struct Decision {
    code: ResponseCode,
    password_effect: PasswordEffect,
}

/// The authorization future must be Send to run on any tokio worker.
#[allow(dead_code)]
fn authorize_is_send<'a>(authorizer: &'a Authorizer, attempt: &'a Attempt) -> impl Send + 'a {
    authorizer.authorize(&[], None, attempt)
}
