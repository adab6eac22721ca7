//! Prometheus metrics of the gateway, served as text at `/metrics` on the admin listener:
//! answers by route and HTTP status, upstream latency per issuer, retries, instance health and
//! rate-limited requests. The front, the health prober and the forwarder record into it.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds: 1 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    /// Answers to merchants, by route (`authorizations`, `reversals`, `other`) and HTTP status.
    pub requests: IntCounterVec,
    /// Duration of one upstream attempt, by issuer IIN and outcome (`answered`, `failed`).
    pub upstream_seconds: HistogramVec,
    /// Attempts after the first, by issuer IIN.
    pub retries: IntCounterVec,
    /// Requests given up on with code 91, by issuer IIN and whether the outcome is unknown.
    pub gave_up: IntCounterVec,
    /// 1 when an instance is healthy, 0 when down, by issuer IIN and instance URL.
    pub instance_healthy: IntGaugeVec,
    /// Requests refused by the per-merchant rate limit.
    pub rate_limited: IntCounter,
    /// Requests refused because too many were in flight.
    pub overload: IntCounter,
    /// The merchant listener's counters, exported at every scrape.
    pub listener: std::sync::Arc<mps_pki::listener::ListenerStats>,
}

/// Why the metrics could not be set up (a programming error: duplicate names).
#[derive(Debug, thiserror::Error)]
#[error("metrics registry: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some("mps_gateway".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Answers to merchants by route and HTTP status"),
            &["route", "status"],
        )?;
        let upstream_seconds = HistogramVec::new(
            HistogramOpts::new("upstream_duration_seconds", "Duration of one attempt at an issuer instance")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["issuer", "outcome"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new("upstream_retries_total", "Attempts after the first, by issuer"),
            &["issuer"],
        )?;
        let gave_up = IntCounterVec::new(
            Opts::new("upstream_gave_up_total", "Requests answered with code 91, by issuer and outcome known or not"),
            &["issuer", "outcome"],
        )?;
        let instance_healthy = IntGaugeVec::new(
            Opts::new("instance_healthy", "1 when an issuer instance is healthy, 0 when it is down"),
            &["issuer", "instance"],
        )?;
        let rate_limited = IntCounter::new("rate_limited_total", "Requests refused by the per-merchant rate limit")?;
        let overload = IntCounter::new("overload_total", "Requests refused with 503 because too many were in flight")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(upstream_seconds.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(gave_up.clone()))?;
        registry.register(Box::new(instance_healthy.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(overload.clone()))?;
        let listener = std::sync::Arc::new(mps_pki::listener::ListenerStats::default());
        registry.register(Box::new(mps_pki::listener::ListenerCollector::new(std::sync::Arc::clone(&listener))?))?;
        Ok(Self {
            registry,
            requests,
            upstream_seconds,
            retries,
            gave_up,
            instance_healthy,
            rate_limited,
            overload,
            listener,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "metrics could not be encoded");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders_under_the_gateway_prefix() {
        let metrics = Metrics::new().unwrap();
        metrics.requests.with_label_values(&["authorizations", "200"]).inc();
        metrics.rate_limited.inc();
        metrics.instance_healthy.with_label_values(&["400012", "https://127.0.0.1:1/"]).set(1);
        let text = metrics.render();
        assert!(text.contains("mps_gateway_requests_total{route=\"authorizations\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("mps_gateway_rate_limited_total 1"), "{text}");
        assert!(text.contains("mps_gateway_instance_healthy{"), "{text}");
    }
}
