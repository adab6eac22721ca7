//! The HSM work of one authorization as a benchmark step (open_session, seal_answer and the
//! ES256 signature of the answer, the exact calls authz makes for an authenticated payment),
//! and a loop that runs a step from concurrent callers for a fixed time. Shared by
//! `mps-hsm bench` and the load-test harness's raw HSM bound, so both measure the same thing.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mps_protocol::wire::PayerPacket;
use mps_protocol::{AuthCode, Currency, ResponseCode, Rsn, TxnId};

use crate::{AnswerContent, Hsm, HsmError, SessionError, WrappedChainKey};

/// At most this many concurrent callers in [`measure`].
pub const CALLERS_MAX: usize = 4096;

/// What an authorization's HSM calls need: a SIM's stored chain key and RSN, and a packet of
/// its next session whose MAC verifies under them.
#[derive(Debug, Clone)]
pub struct AuthorizationInput {
    /// CK_{n-1} wrapped under the KEK, as the ledger stores it.
    pub wrapped: WrappedChainKey,
    /// RSN_n, as the ledger stores it.
    pub rsn: Rsn,
    /// The packet of session n.
    pub packet: PayerPacket,
}

/// An approval's answer content (the bench's answer: the figures do not change the work).
pub fn approved_answer() -> AnswerContent {
    AnswerContent {
        response_code: ResponseCode::Approved,
        auth_code: AuthCode(*b"BENCH1"),
        balance: 1_000,
        currency: Currency::EUR,
        txn_id: TxnId([1; 16]),
    }
}

/// One authorization's HSM calls: open the session (unwrap, derive, check the MAC, decrypt,
/// password verification value), seal the answer (encrypt, MAC, derive and wrap CK_n), sign the
/// answer (ECDSA P-256). Nothing is stored: the same input can be used again and again.
pub async fn authorization(hsm: &Hsm, input: &AuthorizationInput) -> Result<(), HsmError> {
    let opened = hsm
        .open_session(&input.wrapped, input.packet.fields.counter, input.rsn, &input.packet)
        .await
        .map_err(|error| match error {
            SessionError::Hsm(error) => error,
            _ => HsmError::InvalidInput { what: "the benchmark packet did not verify" },
        })?;
    let sealed = hsm.seal_answer(opened.ticket, approved_answer()).await?;
    hsm.sign_es256(&sealed.answer.encode()).await.map(drop)
}

/// What a [`measure`] loop did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Steps that succeeded.
    pub completed: u64,
    /// Steps that failed.
    pub errors: u64,
    /// Wall time from the start to the last step's end.
    pub elapsed: Duration,
}

impl Measured {
    /// Successful steps per second.
    pub fn per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 { self.completed as f64 / seconds } else { 0.0 }
    }
}

/// Runs `step` from `callers` concurrent tasks (1 to [`CALLERS_MAX`]) until `time` has passed;
/// each task starts its next step when its previous one ends, and passes its own index (0 to
/// callers - 1) to every step, so a step can use a resource of its caller's alone.
pub async fn measure<F, Fut, E>(callers: usize, time: Duration, step: F) -> Measured
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
{
    let step = Arc::new(step);
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + time;
    let tasks: Vec<_> = (0..callers.clamp(1, CALLERS_MAX))
        .map(|caller| {
            let (step, completed, errors) = (Arc::clone(&step), Arc::clone(&completed), Arc::clone(&errors));
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    match step(caller).await {
                        Ok(()) => completed.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for task in tasks {
        // A task that panicked has counted what it did; the figures stand.
        let _ = task.await;
    }
    Measured {
        completed: completed.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}
