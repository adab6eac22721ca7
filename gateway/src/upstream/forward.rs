//! Forwarding one body to its issuer: attempts at the first healthy instance (from the request's
//! turn under round robin), and on a timeout,
//! a connection error or a 503, the identical bytes again at the next healthy one, at most
//! `attempts_max` attempts within `deadline_ms`. The issuer answers a retransmission with its
//! stored answer, so a retry never books twice. The gateway never makes up an answer: when it
//! gives up it says whether the issuer may have decided.

use std::time::Instant;

use reqwest::StatusCode;

use super::client::{self, Answer, AttemptError, Outgoing};
use crate::ops::metrics::Metrics;
use crate::route::table::Issuer;

/// What forwarding came to.
#[derive(Debug)]
pub enum Outcome {
    /// The issuer answered (any status); passed back byte for byte.
    Answered {
        /// The answer.
        answer: Answer,
        /// Attempts made, the answered one included.
        attempts: u32,
    },
    /// No answer within the limits.
    GaveUp {
        /// Whether any attempt may have reached the issuer: then the outcome is unknown and the
        /// merchant must retry the identical body or reverse; else nothing was sent.
        maybe_delivered: bool,
        /// Attempts made.
        attempts: u32,
    },
}

/// Forwards `outgoing` to `issuer` within its limits.
pub async fn forward(issuer: &Issuer, outgoing: &Outgoing, metrics: &Metrics, answer_bytes_max: usize) -> Outcome {
    let started = Instant::now();
    let mut tried = vec![false; issuer.instances.len()];
    let start = issuer.start();
    let mut maybe_delivered = false;
    let mut last_unavailable: Option<Answer> = None;
    let mut attempts = 0;
    while attempts < issuer.attempts_max {
        let remaining = issuer.deadline.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            break;
        }
        let Some(index) = issuer.pick(start, &tried) else {
            tracing::warn!(issuer = %issuer.iin, "no healthy instance");
            break;
        };
        let instance = &issuer.instances[index];
        tried[index] = true;
        attempts += 1;
        if attempts > 1 {
            metrics.retries.with_label_values(&[issuer.iin.as_str()]).inc();
        }
        let timeout = issuer.request_timeout.min(remaining);
        let attempt_started = Instant::now();
        let result = client::attempt(&instance.client, &instance.url, outgoing, timeout, answer_bytes_max).await;
        let outcome_label = if result.is_ok() { "answered" } else { "failed" };
        metrics
            .upstream_seconds
            .with_label_values(&[issuer.iin.as_str(), outcome_label])
            .observe(attempt_started.elapsed().as_secs_f64());
        match result {
            Ok(answer) if answer.status == StatusCode::SERVICE_UNAVAILABLE => {
                // The issuer could not decide now (HSM, ledger or overload) and booked nothing
                // it would not replay: another instance may.
                tracing::info!(issuer = %issuer.iin, instance = %instance.url, attempts, "issuer answered 503");
                last_unavailable = Some(answer);
            }
            Ok(answer) => return Outcome::Answered { answer, attempts },
            Err(error) => {
                maybe_delivered |= error.maybe_delivered();
                let reason = error.to_string();
                tracing::warn!(issuer = %issuer.iin, instance = %instance.url, attempts, %reason, "attempt failed");
                if !matches!(error, AttemptError::AnswerTooLarge) {
                    instance.mark_down(&reason);
                }
            }
        }
    }
    match last_unavailable {
        // The issuer's own 503 is a real answer: pass it back rather than a made-up one.
        Some(answer) if !maybe_delivered => Outcome::Answered { answer, attempts },
        _ => Outcome::GaveUp { maybe_delivered, attempts },
    }
}
