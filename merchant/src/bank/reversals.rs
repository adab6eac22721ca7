//! Store and forward of reversals: a background task sends each pending reversal's stored
//! body (identical bytes and signature every time) until a verified, bank-signed answer
//! arrives; the delay between attempts doubles from `reversals.interval_ms` up to
//! `reversals.backoff_max_ms`. Pending reversals live in the order book, so they survive a
//! restart. 00 (reversed) and 25 (nothing to reverse) leave the order reversed, payable again.

use std::time::Duration;

use rustls_pki_types::UnixTime;
use tokio::sync::watch;

use super::answer;
use super::submit::REVERSALS_PATH;
use crate::orders::{self, BookError, PendingReversal};
use crate::payment::Payments;

/// Bounds of the task.
#[derive(Debug, Clone, Copy)]
pub struct ReversalLimits {
    /// Round interval and first retry delay.
    pub interval: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Reversals per round.
    pub batch_max: usize,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundReport {
    /// Reversals with a verified answer.
    pub answered: usize,
    /// Reversals to try again later.
    pub deferred: usize,
}

/// Runs rounds every `limits.interval` until `shutdown` turns true.
pub async fn run(payments: std::sync::Arc<Payments>, limits: ReversalLimits, mut shutdown: watch::Receiver<bool>) {
    loop {
        match round(&payments, limits).await {
            Ok(report) if report != RoundReport::default() => {
                tracing::info!(answered = report.answered, deferred = report.deferred, "reversal round");
            }
            Ok(_) => {}
            Err(error) => tracing::error!(error = %error, "reversal round failed; will try again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(limits.interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
}

/// One round: sends every due reversal once.
pub async fn round(payments: &Payments, limits: ReversalLimits) -> Result<RoundReport, BookError> {
    let batch = limits.batch_max;
    let due = payments.book.call(move |book| book.due_reversals(orders::now_ms(), batch)).await?;
    let mut report = RoundReport::default();
    for reversal in due {
        if send_one(payments, &reversal).await? {
            report.answered += 1;
        } else {
            let delay = retry_delay(limits, reversal.attempts);
            let next = orders::now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
            let id = reversal.id;
            let error = "no verified answer".to_owned();
            payments.book.call(move |book| book.reversal_retry_later(id, next, &error)).await?;
            report.deferred += 1;
        }
    }
    let pending = payments.book.call(|book| book.pending_reversal_count()).await?;
    payments.metrics.pending_reversals.set(i64::try_from(pending).unwrap_or(i64::MAX));
    Ok(report)
}

/// Sends one reversal; true when a verified answer was recorded.
async fn send_one(payments: &Payments, reversal: &PendingReversal) -> Result<bool, BookError> {
    let signed = super::request::SignedBody { body: reversal.body.clone(), signature: reversal.signature.clone() };
    let timeout = payments.bank.limits.attempt_timeout;
    let started = std::time::Instant::now();
    let result = payments.bank.post_once(REVERSALS_PATH, &signed, timeout).await;
    payments.metrics.bank_seconds.with_label_values(&["reversal"]).observe(started.elapsed().as_secs_f64());
    let answer = match result {
        Ok(answer) if answer.status == 200 => answer,
        Ok(answer) => {
            tracing::warn!(order_no = %reversal.order_no, status = answer.status, attempt = reversal.attempts + 1, "reversal not accepted; will retry");
            payments.metrics.reversals.with_label_values(&["failed"]).inc();
            return Ok(false);
        }
        Err(error) => {
            tracing::warn!(order_no = %reversal.order_no, error = %error, attempt = reversal.attempts + 1, "reversal got no answer; will retry");
            payments.metrics.reversals.with_label_values(&["failed"]).inc();
            return Ok(false);
        }
    };
    let verified = answer::verify_reversal(
        &answer,
        &payments.bank.trust,
        payments.merchant_id,
        reversal.order_no,
        reversal.issuer_iin,
        UnixTime::now(),
    );
    match verified {
        Ok(outcome) => {
            let code = outcome.response_code.clone();
            let stored = reversal.clone();
            let order = payments.book.call(move |book| book.reversal_answered(&stored, &outcome)).await?;
            payments.metrics.reversals.with_label_values(&[code.as_str()]).inc();
            tracing::info!(order_no = %reversal.order_no, response_code = %code, status = %order.status, "reversal answered");
            Ok(true)
        }
        Err(error) => {
            tracing::error!(order_no = %reversal.order_no, error = %error, "reversal answer not trusted; will retry");
            payments.metrics.reversals.with_label_values(&["failed"]).inc();
            Ok(false)
        }
    }
}

/// interval * 2^attempts, at most `backoff_max`.
fn retry_delay(limits: ReversalLimits, attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.min(20)).unwrap_or(u32::MAX);
    limits.interval.saturating_mul(factor).min(limits.backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_delay_doubles_up_to_its_bound() {
        let limits =
            ReversalLimits { interval: Duration::from_secs(5), backoff_max: Duration::from_secs(60), batch_max: 10 };
        assert_eq!(retry_delay(limits, 0), Duration::from_secs(5));
        assert_eq!(retry_delay(limits, 2), Duration::from_secs(20));
        assert_eq!(retry_delay(limits, 4), Duration::from_secs(60));
        assert_eq!(retry_delay(limits, u32::MAX), Duration::from_secs(60));
    }
}
