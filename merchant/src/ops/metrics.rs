//! Prometheus metrics of the merchant server, served as text at `/metrics` on the admin
//! listener: payments by outcome, bank latency and retries, reversals and the pending gauge.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Latency buckets in seconds: 1 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    /// Payments that reached the bank, by outcome (approved, declined, refused, unverified, timeout).
    pub payments: IntCounterVec,
    /// Latency of one attempt towards the bank, by kind (authorization, reversal).
    pub bank_seconds: HistogramVec,
    /// Retries of identical bodies, by kind.
    pub bank_retries: IntCounterVec,
    /// Reversal answers by response code, and failed attempts ("failed").
    pub reversals: IntCounterVec,
    /// Reversals waiting for a verified answer.
    pub pending_reversals: IntGauge,
}

/// Why the metrics could not be set up (a programming error: duplicate names).
#[derive(Debug, thiserror::Error)]
#[error("metrics registry: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some("mps_merchant".into()), None)?;
        let payments = IntCounterVec::new(Opts::new("payments_total", "Payments by outcome"), &["outcome"])?;
        let bank_seconds = HistogramVec::new(
            HistogramOpts::new("bank_request_duration_seconds", "One attempt towards the bank")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["kind"],
        )?;
        let bank_retries =
            IntCounterVec::new(Opts::new("bank_retries_total", "Retries of identical bodies"), &["kind"])?;
        let reversals = IntCounterVec::new(Opts::new("reversals_total", "Reversal attempts by result"), &["result"])?;
        let pending_reversals = IntGauge::new("pending_reversals", "Reversals waiting for a verified answer")?;
        registry.register(Box::new(payments.clone()))?;
        registry.register(Box::new(bank_seconds.clone()))?;
        registry.register(Box::new(bank_retries.clone()))?;
        registry.register(Box::new(reversals.clone()))?;
        registry.register(Box::new(pending_reversals.clone()))?;
        Ok(Self { registry, payments, bank_seconds, bank_retries, reversals, pending_reversals })
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if TextEncoder::new().encode(&self.registry.gather(), &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
