//! Prometheus metrics of the authorization server, served as text at `/metrics` on the admin
//! listener: request latency (total and per stage), answers by ISO 8583 code and HTTP status,
//! MAC failures, HSM pool and ledger figures.

use std::sync::Arc;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Counter, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

use crate::ledger::BatchReport;

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
    /// Requests whose deadline passed after their booking was queued (answered "outcome unknown").
    pub outcome_unknown: IntCounter,
    /// The earliest nextUpdate of the CRLs in force, seconds since the Unix epoch.
    pub crl_next_update_seconds: IntGauge,
    /// CRL reloads that succeeded.
    pub crl_reloads: IntCounter,
    /// CRL reloads that failed (what was in force stayed).
    pub crl_reload_failures: IntCounter,
    /// The mTLS listener's counters, exported at every scrape.
    pub listener: Arc<mps_pki::listener::ListenerStats>,
    /// Authorizations being decided now.
    pub in_flight: IntGauge,
    /// Commands per ledger group commit.
    pub ledger_batch_commands: Histogram,
    /// Duration of a ledger group commit, BEGIN to durable COMMIT.
    pub ledger_commit_seconds: Histogram,
    /// Ledger commands rolled back (their own savepoint or their whole group).
    pub ledger_failed_commands: IntCounter,
    /// Group commits run again after losing a serialization race (PostgreSQL, several instances).
    pub ledger_group_retries: IntCounter,
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
        let outcome_unknown = IntCounter::new(
            "outcome_unknown_total",
            "Requests whose deadline passed after their booking was queued (503 outcome unknown)",
        )?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(stage_seconds.clone()))?;
        registry.register(Box::new(responses.clone()))?;
        registry.register(Box::new(http_status.clone()))?;
        registry.register(Box::new(mac_failures.clone()))?;
        registry.register(Box::new(overload.clone()))?;
        registry.register(Box::new(outcome_unknown.clone()))?;
        let crl_next_update_seconds = IntGauge::new(
            "crl_next_update_seconds",
            "Earliest nextUpdate of the CRLs in force (client and merchant), Unix seconds",
        )?;
        let crl_reloads = IntCounter::new("crl_reloads_total", "CRL reloads that succeeded")?;
        let crl_reload_failures =
            IntCounter::new("crl_reload_failures_total", "CRL reloads that failed; the CRLs before stayed in force")?;
        registry.register(Box::new(crl_next_update_seconds.clone()))?;
        registry.register(Box::new(crl_reloads.clone()))?;
        registry.register(Box::new(crl_reload_failures.clone()))?;
        let listener = Arc::new(mps_pki::listener::ListenerStats::default());
        registry.register(Box::new(mps_pki::listener::ListenerCollector::new(Arc::clone(&listener))?))?;
        let in_flight = IntGauge::new("in_flight", "Authorizations being decided now")?;
        let ledger_batch_commands = Histogram::with_opts(
            HistogramOpts::new("ledger_commit_batch_commands", "Commands per ledger group commit")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )?;
        let ledger_commit_seconds = Histogram::with_opts(
            HistogramOpts::new("ledger_commit_duration_seconds", "Ledger group commit, BEGIN to durable COMMIT")
                .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let ledger_failed_commands = IntCounter::new("ledger_failed_commands_total", "Ledger commands rolled back")?;
        let ledger_group_retries = IntCounter::new(
            "ledger_group_retries_total",
            "Ledger group commits run again after losing a serialization race with another instance (PostgreSQL)",
        )?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(ledger_batch_commands.clone()))?;
        registry.register(Box::new(ledger_commit_seconds.clone()))?;
        registry.register(Box::new(ledger_failed_commands.clone()))?;
        registry.register(Box::new(ledger_group_retries.clone()))?;
        Ok(Self {
            registry,
            request_seconds,
            stage_seconds,
            responses,
            http_status,
            mac_failures,
            overload,
            outcome_unknown,
            crl_next_update_seconds,
            crl_reloads,
            crl_reload_failures,
            listener,
            in_flight,
            ledger_batch_commands,
            ledger_commit_seconds,
            ledger_failed_commands,
            ledger_group_retries,
        })
    }

    /// The registry, for collectors of other parts (HSM pool, ledger).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records one ledger group commit (called on the ledger's writer thread: quick, no I/O).
    pub fn observe_ledger_batch(&self, report: &BatchReport) {
        self.ledger_batch_commands.observe(report.commands as f64);
        self.ledger_commit_seconds.observe(report.elapsed.as_secs_f64());
        self.ledger_failed_commands.inc_by(report.failed_commands as u64);
        self.ledger_group_retries.inc_by(u64::from(report.attempts.saturating_sub(1)));
    }

    /// Exports the ledger's queue and checkpoint figures, read at every scrape.
    pub fn register_ledger(&self, ledger: crate::ledger::Ledger) -> Result<(), MetricsError> {
        self.registry.register(Box::new(LedgerCollector::new(ledger)?))?;
        Ok(())
    }

    /// Exports the HSM pool's figures, read at every scrape.
    pub fn register_hsm(&self, hsm: mps_hsm::Hsm) -> Result<(), MetricsError> {
        self.registry.register(Box::new(HsmCollector::new(hsm)?))?;
        Ok(())
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

/// One family per [`HSM_MEMBER_GAUGES`] entry, one sample per HSM of the pool.
fn member_families(members: &[mps_hsm::MemberMetrics]) -> Vec<MetricFamily> {
    let mut families = Vec::new();
    for (name, help, figure) in &HSM_MEMBER_GAUGES {
        let Ok(gauges) = GaugeVec::new(Opts::new(*name, *help), &["hsm"]) else { continue };
        for (member, m) in members.iter().enumerate() {
            gauges.with_label_values(&[member.to_string().as_str()]).set(figure(m));
        }
        families.extend(gauges.collect());
    }
    families
}

/// Reads the ledger's queue and checkpoint counters at scrape time.
struct LedgerCollector {
    ledger: crate::ledger::Ledger,
    descs: Vec<Desc>,
}

const LEDGER_FIGURES: [(&str, &str); 7] = [
    ("ledger_queued_commands", "Commands waiting for the ledger's writer"),
    ("ledger_wal_frames", "Pages in the SQLite WAL at the last checkpoint"),
    ("ledger_checkpoints_total", "WAL checkpoints run off the commit path (SQLite)"),
    ("ledger_checkpoint_restarts_total", "WAL checkpoints that started the WAL over (SQLite)"),
    (
        "ledger_checkpoint_restarts_deferred_total",
        "WAL restarts put off to after the next group: a read on the WAL or a checkpoint was in the way (SQLite)",
    ),
    ("ledger_checkpoint_seconds_total", "Time spent in WAL checkpoints off the commit path (SQLite)"),
    (
        "ledger_checkpoint_restart_seconds_total",
        "Time the ledger's writer stood still starting the WAL over between groups (SQLite)",
    ),
];

impl LedgerCollector {
    fn new(ledger: crate::ledger::Ledger) -> Result<Self, MetricsError> {
        let descs = LEDGER_FIGURES
            .iter()
            .map(|(name, help)| Desc::new((*name).to_owned(), (*help).to_owned(), vec![], Default::default()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { ledger, descs })
    }
}

impl Collector for LedgerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats = self.ledger.stats();
        let values = [self.ledger.queue_len() as f64, stats.wal_frames as f64];
        let mut families = Vec::new();
        for ((name, help), value) in LEDGER_FIGURES.iter().zip(values) {
            if let Ok(gauge) = Gauge::new(*name, *help) {
                gauge.set(value);
                families.extend(gauge.collect());
            }
        }
        let counts = [stats.checkpoints, stats.checkpoint_restarts, stats.checkpoint_restarts_deferred];
        for ((name, help), count) in LEDGER_FIGURES[2..5].iter().zip(counts) {
            if let Ok(counter) = IntCounter::new(*name, *help) {
                counter.inc_by(count);
                families.extend(counter.collect());
            }
        }
        let micros = [stats.checkpoint_micros, stats.checkpoint_restart_micros];
        for ((name, help), micros) in LEDGER_FIGURES[5..].iter().zip(micros) {
            if let Ok(counter) = Counter::new(*name, *help) {
                counter.inc_by(Duration::from_micros(micros).as_secs_f64());
                families.extend(counter.collect());
            }
        }
        families
    }
}

/// Reads the HSM pool's counters at scrape time (names without the registry's prefix, which
/// the registry adds).
struct HsmCollector {
    hsm: mps_hsm::Hsm,
    descs: Vec<Desc>,
}

const HSM_GAUGES: [(&str, &str); 10] = [
    ("hsm_pool_ready", "1 when at least one HSM of the pool is logged in with its sessions up"),
    ("hsm_pool_size", "HSM sessions (worker threads), every HSM of the pool"),
    ("hsm_in_flight", "HSM operations submitted and not yet answered"),
    ("hsm_queued", "HSM jobs waiting in the workers' queues"),
    ("hsm_open_sessions", "Authorization sessions opened in the HSM and not yet sealed"),
    ("hsm_operations_total", "HSM operations answered"),
    ("hsm_reconnects_total", "Re-initialisations after the HSM was lost"),
    ("hsm_recycles_total", "Planned re-initialisations of the HSM connection"),
    ("hsm_objects_created_total", "Session objects created in the HSM"),
    ("hsm_objects_since_init", "Session objects created since the last HSM initialisation"),
];

/// Per-HSM figures of a pool over several HSMs, labelled `hsm="<index>"` (0 is the HSM of
/// `[hsm]`'s own keys, 1 the first of `[[hsm.additional]]`): at most 8 label values.
type MemberFigure = fn(&mps_hsm::MemberMetrics) -> f64;
const HSM_MEMBER_GAUGES: [(&str, &str, MemberFigure); 8] = [
    ("hsm_member_up", "1 when this HSM of the pool is logged in and takes work", |m| f64::from(u8::from(m.ready))),
    ("hsm_member_pool_size", "Sessions (worker threads) on this HSM", |m| m.pool_size as f64),
    ("hsm_member_in_flight", "Operations submitted to this HSM and not yet answered", |m| m.in_flight as f64),
    ("hsm_member_operations_total", "Operations this HSM answered", |m| m.operations_total as f64),
    ("hsm_member_errors_total", "Failed operations on this HSM, every kind", |m| m.errors_total as f64),
    ("hsm_member_reconnects_total", "Re-initialisations of this HSM after it was lost", |m| m.reconnects_total as f64),
    ("hsm_member_recycles_total", "Planned re-initialisations of this HSM", |m| m.recycles_total as f64),
    (
        "hsm_member_recycle_seconds_total",
        "Time this HSM was out for planned re-initialisations (drain, finalise, log in, until a first worker served again)",
        |m| m.recycle_time_total.as_secs_f64(),
    ),
];

impl HsmCollector {
    fn new(hsm: mps_hsm::Hsm) -> Result<Self, MetricsError> {
        let mut descs = Vec::new();
        for (name, help) in &HSM_GAUGES {
            descs.push(Desc::new((*name).to_owned(), (*help).to_owned(), vec![], Default::default())?);
        }
        for (name, help, _) in &HSM_MEMBER_GAUGES {
            descs.push(Desc::new((*name).to_owned(), (*help).to_owned(), vec!["hsm".to_owned()], Default::default())?);
        }
        descs.push(Desc::new(
            "hsm_errors_total".to_owned(),
            "HSM operation failures by kind".to_owned(),
            vec!["kind".to_owned()],
            Default::default(),
        )?);
        Ok(Self { hsm, descs })
    }
}

impl Collector for HsmCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let m = self.hsm.metrics();
        let values = [
            f64::from(u8::from(m.ready)),
            m.pool_size as f64,
            m.in_flight as f64,
            m.queued as f64,
            m.open_sessions as f64,
            m.operations_total as f64,
            m.reconnects_total as f64,
            m.recycles_total as f64,
            m.objects_created_total as f64,
            m.objects_since_init as f64,
        ];
        let mut families = Vec::new();
        for ((name, help), value) in HSM_GAUGES.iter().zip(values) {
            if let Ok(gauge) = Gauge::new(*name, *help) {
                gauge.set(value);
                families.extend(gauge.collect());
            }
        }
        if let Ok(errors) =
            IntCounterVec::new(Opts::new("hsm_errors_total", "HSM operation failures by kind"), &["kind"])
        {
            for (kind, count) in &m.errors_total {
                errors.with_label_values(&[kind]).inc_by(*count);
            }
            families.extend(errors.collect());
        }
        families.extend(member_families(&m.members));
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerConfig;
    use crate::ledger::testing::{approval, debit, open_ledger, register};

    /// The ledger's figures are read at scrape time: checkpoints, restarts, and the time each
    /// took, which is how long the writer stood still for them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_ledgers_checkpoints_and_their_time_are_exported() {
        let config =
            LedgerConfig { checkpoint_interval_ms: 5, wal_restart_bytes: 1024 * 1024, ..LedgerConfig::default() };
        let (_dir, _path, ledger) = open_ledger(config);
        ledger.create_account(debit(1, 1_000_000_000)).await.unwrap();
        register(&ledger, 1, &[1]).await;
        for n in 1..=600 {
            ledger.commit_session(approval(1, n, 1, 10)).await.unwrap();
        }
        ledger.close().await;
        let stats = ledger.stats();
        let metrics = Metrics::new().unwrap();
        metrics.register_ledger(ledger.clone()).unwrap();
        let text = metrics.render();
        let value = |name: &str| -> f64 {
            let prefix = format!("mps_authz_{name} ");
            let found = text.lines().find_map(|line| line.strip_prefix(prefix.as_str()));
            found.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} is missing:\n{text}"))
        };
        assert_eq!(value("ledger_checkpoints_total"), stats.checkpoints as f64);
        assert_eq!(value("ledger_checkpoint_restarts_total"), stats.checkpoint_restarts as f64);
        assert_eq!(value("ledger_checkpoint_restarts_deferred_total"), stats.checkpoint_restarts_deferred as f64);
        assert!(stats.checkpoint_restarts > 0, "{stats:?}");
        for (name, micros) in [
            ("ledger_checkpoint_seconds_total", stats.checkpoint_micros),
            ("ledger_checkpoint_restart_seconds_total", stats.checkpoint_restart_micros),
        ] {
            let seconds = value(name);
            assert!(seconds > 0.0, "{name}: {seconds}");
            assert!((seconds - micros as f64 / 1e6).abs() < 1e-6, "{name}: {seconds} s for {micros} µs");
        }
    }
}
