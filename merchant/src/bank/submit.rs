//! Posting a signed body to the gateway over mutual TLS, and retrying it: on a timeout, a
//! connection error, a 429 or a 502/503/504 (the gateway's code 91), the IDENTICAL bytes and signature
//! go again, up to `gateway.attempts_max` within `gateway.deadline_ms`. The issuer answers a
//! retransmission with its stored answer, so a retry never books twice.

use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;

use super::BankLink;
use super::request::SignedBody;
use crate::config::MerchantConfig;
use crate::ops::metrics::Metrics;

/// Header carrying detached JWS signatures, both ways.
pub const JWS_HEADER: &str = "x-jws-signature";

/// Path of authorizations at the gateway.
pub const AUTHORIZATIONS_PATH: &str = "/v1/authorizations";
/// Path of reversals at the gateway.
pub const REVERSALS_PATH: &str = "/v1/reversals";

/// Bounds of one delivery.
#[derive(Debug, Clone, Copy)]
pub struct RetryLimits {
    /// Attempts, the first included.
    pub attempts_max: u32,
    /// All attempts together.
    pub deadline: Duration,
    /// One attempt.
    pub attempt_timeout: Duration,
    /// Pause before the second attempt (doubled after).
    pub backoff: Duration,
}

impl RetryLimits {
    /// From `[gateway]`.
    pub fn from_config(config: &MerchantConfig) -> Self {
        Self {
            attempts_max: config.gateway.attempts_max,
            deadline: Duration::from_millis(config.gateway.deadline_ms),
            attempt_timeout: config.attempt_timeout(),
            backoff: Duration::from_millis(config.gateway.retry_backoff_ms),
        }
    }
}

/// What the gateway sent back: status, exact body, signature header.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    /// HTTP status.
    pub status: u16,
    /// The body, byte for byte.
    pub body: Vec<u8>,
    /// `x-jws-signature`, if any.
    pub signature: Option<String>,
}

/// Why one attempt got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No answer within the attempt's time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connect, TLS or HTTP failure.
    #[error("{}", describe(.0))]
    Http(#[source] reqwest::Error),
    /// The answer was larger than `gateway.answer_bytes_max`.
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
}

/// The end of a delivery.
#[derive(Debug)]
pub enum Delivery {
    /// An answer the caller must judge (any status but a retryable one, or the last retryable one).
    Answered {
        /// What came back.
        answer: RawAnswer,
        /// Attempts made.
        attempts: u32,
    },
    /// No usable answer within the limits.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last failure, for the order's reason.
        last_error: String,
    },
}

/// 429 (the gateway's rate limit) and 502 to 504 (the issuer unavailable, code 91): the
/// request was not decided, so the identical bytes may go again.
fn retryable_status(status: u16) -> bool {
    matches!(status, 429 | 502..=504)
}

impl BankLink {
    /// Posts `signed` to `path` and retries as the module says. `kind` labels the metrics.
    pub async fn deliver(&self, path: &str, signed: &SignedBody, kind: &'static str, metrics: &Metrics) -> Delivery {
        let started = Instant::now();
        let mut attempts = 0;
        let mut backoff = self.limits.backoff;
        let mut last_error = String::from("no attempt made");
        while attempts < self.limits.attempts_max {
            let left = self.limits.deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            if attempts > 0 {
                metrics.bank_retries.with_label_values(&[kind]).inc();
            }
            attempts += 1;
            let attempt_started = Instant::now();
            let result = self.post_once(path, signed, self.limits.attempt_timeout.min(left)).await;
            metrics.bank_seconds.with_label_values(&[kind]).observe(attempt_started.elapsed().as_secs_f64());
            match result {
                Ok(answer) if !retryable_status(answer.status) => return Delivery::Answered { answer, attempts },
                Ok(answer) => {
                    last_error = format!("the gateway answered HTTP {}", answer.status);
                    tracing::warn!(kind, attempt = attempts, status = answer.status, "bank unavailable; will retry");
                }
                Err(error) => {
                    last_error = error.to_string();
                    tracing::warn!(kind, attempt = attempts, error = %error, "no answer from the bank; will retry");
                }
            }
            let left = self.limits.deadline.saturating_sub(started.elapsed());
            if attempts < self.limits.attempts_max && !left.is_zero() {
                tokio::time::sleep(backoff.min(left)).await;
                backoff = backoff.saturating_mul(2);
            }
        }
        Delivery::GaveUp { attempts, last_error }
    }

    /// One POST with the exact body and its signature; reads at most `answer_bytes_max`.
    pub async fn post_once(
        &self,
        path: &str,
        signed: &SignedBody,
        timeout: Duration,
    ) -> Result<RawAnswer, TransportError> {
        let url = format!("{}{path}", self.base_url);
        let exchange = async {
            let mut response = self
                .http
                .post(url)
                .header(CONTENT_TYPE, "application/json")
                .header(JWS_HEADER, &signed.signature)
                .body(signed.body.clone())
                .send()
                .await
                .map_err(TransportError::Http)?;
            let status = response.status().as_u16();
            let signature = response.headers().get(JWS_HEADER).and_then(|value| value.to_str().ok()).map(str::to_owned);
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(TransportError::Http)? {
                if body.len() + chunk.len() > self.answer_bytes_max {
                    return Err(TransportError::TooLarge(self.answer_bytes_max));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(RawAnswer { status, body, signature })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| TransportError::Timeout(timeout))?
    }
}

/// The error and its causes on one line (reqwest keeps the useful part in the source chain).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gateway_unavailability_is_retried() {
        assert!(retryable_status(503) && retryable_status(504) && retryable_status(502) && retryable_status(429));
        assert!(!retryable_status(200) && !retryable_status(400) && !retryable_status(401) && !retryable_status(500));
    }
}
