//! Prometheus metrics of the authorization server, served as text at `/metrics` on the admin
//! listener: request latency (total and per stage), answers by ISO 8583 code and HTTP status,
//! MAC failures, HSM pool and ledger figures.

use std::time::Duration;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

/// A stage of an authorization whose latency is measured on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Merchant JWS and chain check.
    Jws,
    /// Every HSM call.
    Hsm,
    /// Every ledger call, the durable commit included.
    Ledger,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Self::Jws => "jws",
            Self::Hsm => "hsm",
            Self::Ledger => "ledger",
        }
    }
}

/// Latency buckets in seconds: 100 µs to 5 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    /// Whole authorization latency, by HTTP status.
    pub request_seconds: HistogramVec,
    /// Per-stage latency.
    pub stage_seconds: HistogramVec,
    /// Processed authorizations by ISO 8583 response code.
    pub responses: IntCounterVec,
    /// HTTP answers by status.
    pub http_status: IntCounterVec,
    /// Packets whose MAC (or secret) did not verify.
    pub mac_failures: IntCounter,
    /// Requests refused because too many were in flight.
    pub overload: IntCounter,
}

/// Why the metrics could not be set up (a programming error: duplicate names).
#[derive(Debug, thiserror::Error)]
#[error("metrics registry: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some("mps_authz".into()), None)?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "Whole authorization latency")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["status"],
        )?;
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new("stage_duration_seconds", "Latency of the jws, hsm and ledger stages")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["stage"],
        )?;
        let responses =
            IntCounterVec::new(Opts::new("responses_total", "Processed authorizations by ISO 8583 code"), &["code"])?;
        let http_status = IntCounterVec::new(Opts::new("http_responses_total", "HTTP answers by status"), &["status"])?;
        let mac_failures = IntCounter::new("mac_failures_total", "Packets whose MAC or secret did not verify")?;
        let overload = IntCounter::new("overload_total", "Requests refused with 503 because too many were in flight")?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(stage_seconds.clone()))?;
        registry.register(Box::new(responses.clone()))?;
        registry.register(Box::new(http_status.clone()))?;
        registry.register(Box::new(mac_failures.clone()))?;
        registry.register(Box::new(overload.clone()))?;
        Ok(Self { registry, request_seconds, stage_seconds, responses, http_status, mac_failures, overload })
    }

    /// The registry, for collectors of other parts (HSM pool, ledger).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records one stage's latency.
    pub fn observe_stage(&self, stage: Stage, elapsed: Duration) {
        self.stage_seconds.with_label_values(&[stage.label()]).observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding to a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
