//! The server's side of a run, read before and after it: authz's `/metrics` (per-stage
//! latency of the jws, hsm and ledger stages, whole-request latency, ledger group commits,
//! MAC failures, HSM operations) through [`prometheus`], and its CPU time through [`cpu`].
//! The differences become the report's `server` part: what one authorization cost the server.

pub mod cpu;
pub mod process;
pub mod prometheus;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use prometheus::{HistogramData, Sample};

/// authz's registry prefix.
pub const METRIC_PREFIX: &str = "mps_authz_";
/// The stages authz times on their own (`stage_duration_seconds{stage=...}`).
pub const STAGES: [&str; 3] = ["jws", "hsm", "ledger"];
/// A `/metrics` answer larger than this is refused.
pub const METRICS_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Time allowed for one scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not be observed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The scrape failed.
    #[error("scraping {url}: {message} (is [target] metrics_url authz's admin listener, http://ADMIN/metrics?)")]
    Scrape {
        /// The URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The scrape is not the Prometheus text format.
    #[error("{url}: {source}")]
    Parse {
        /// The URL.
        url: String,
        /// The cause.
        source: prometheus::ParseError,
    },
    /// /proc could not be read.
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
}

/// Where the server's figures come from.
pub struct ServerProbe {
    metrics_url: Option<String>,
    pid: Option<u32>,
    client: reqwest::Client,
}

/// One reading of the server.
pub struct ServerSnapshot {
    at: Instant,
    metrics: Option<Vec<Sample>>,
    cpu: Option<cpu::CpuSnapshot>,
    /// The whole machine, when /proc/stat could be read.
    machine: Option<cpu::MachineTicks>,
    /// This load generator's own CPU time, ticks.
    generator_ticks: Option<u64>,
}

impl ServerProbe {
    /// A probe of `metrics_url` and/or process `pid`; `client` makes the plain HTTP scrape.
    pub fn new(metrics_url: Option<String>, pid: Option<u32>, client: reqwest::Client) -> Self {
        Self { metrics_url, pid, client }
    }

    /// The pid from `server_pid`, else from `server_pid_file`.
    pub fn pid_from(pid: Option<u32>, pid_file: Option<&PathBuf>) -> Result<Option<u32>, ServerError> {
        match (pid, pid_file) {
            (Some(pid), _) => Ok(Some(pid)),
            (None, Some(path)) => Ok(Some(cpu::read_pidfile(path)?)),
            (None, None) => Ok(None),
        }
    }

    /// Reads the metrics and the CPU times now (the machine's and the generator's always, when
    /// /proc can be read).
    pub async fn snapshot(&self) -> Result<ServerSnapshot, ServerError> {
        let metrics = self.metrics().await?;
        let cpu = match self.pid {
            Some(pid) => Some(cpu::snapshot(std::path::Path::new("/proc"), pid)?),
            None => None,
        };
        let proc_root = std::path::Path::new("/proc");
        let machine = cpu::machine(proc_root).ok();
        let generator_ticks = cpu::snapshot(proc_root, std::process::id()).ok().map(|own| own.process_ticks);
        Ok(ServerSnapshot { at: Instant::now(), metrics, cpu, machine, generator_ticks })
    }

    /// The server's process id, when known.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The server's metrics now, when [target] metrics_url is set.
    pub async fn metrics(&self) -> Result<Option<Vec<Sample>>, ServerError> {
        match &self.metrics_url {
            Some(url) => Ok(Some(self.scrape(url).await?)),
            None => Ok(None),
        }
    }

    async fn scrape(&self, url: &str) -> Result<Vec<Sample>, ServerError> {
        let fail = |message: String| ServerError::Scrape { url: url.to_owned(), message };
        let response = self.client.get(url).timeout(SCRAPE_TIMEOUT).send().await.map_err(|e| fail(e.to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        let body = response.bytes().await.map_err(|e| fail(e.to_string()))?;
        if body.len() > METRICS_BYTES_MAX {
            return Err(fail(format!("answer over {METRICS_BYTES_MAX} bytes")));
        }
        let text = std::str::from_utf8(&body).map_err(|_| fail("answer is not UTF-8".to_owned()))?;
        prometheus::parse(text).map_err(|source| ServerError::Parse { url: url.to_owned(), source })
    }
}

/// Latency of a stage (or the whole request) over the run, from histogram deltas.
#[derive(Debug, Clone, Serialize)]
pub struct StageLatency {
    /// Observations during the run.
    pub count: u64,
    /// Mean, milliseconds (exact: sum / count).
    pub mean_ms: f64,
    /// p50, milliseconds, interpolated inside authz's buckets (approximate).
    pub p50_ms: Option<f64>,
    /// p99, milliseconds, interpolated inside authz's buckets (approximate).
    pub p99_ms: Option<f64>,
    /// Total time in the stage divided by the requests authz answered: what one request
    /// spends in it (a stage may be observed more than once per request, for example one
    /// observation per HSM call).
    pub ms_per_request: Option<f64>,
}

impl StageLatency {
    fn from_delta(delta: &HistogramData) -> Option<Self> {
        let ms = |seconds: f64| seconds * 1000.0;
        Some(Self {
            count: delta.count as u64,
            mean_ms: ms(delta.mean()?),
            p50_ms: delta.quantile(0.50).map(ms),
            p99_ms: delta.quantile(0.99).map(ms),
            ms_per_request: None,
        })
    }
}

/// The ledger's group commits over the run.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerCommits {
    /// Group commits.
    pub commits: u64,
    /// Mean commands per group commit.
    pub mean_batch_commands: f64,
    /// Mean time of a group commit, BEGIN to durable COMMIT, milliseconds.
    pub mean_commit_ms: f64,
}

/// The server's CPU time over the run.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// The process's user + system time, milliseconds.
    pub total_ms: f64,
    /// Cores kept busy on average: CPU time / wall time.
    pub cores_busy: f64,
    /// CPU milliseconds per approved payment of the run (None without approvals).
    pub ms_per_approved: Option<f64>,
    /// CPU milliseconds by thread group (`tokio-rt-worker`: the async workers, blocking-pool
    /// threads of the ledger's reads included; `mps-hsm-*`: HSM pool threads;
    /// `ledger-writer`: the group commit thread).
    pub threads_ms: BTreeMap<String, f64>,
    /// CPU milliseconds of threads that ended during the run.
    pub ended_threads_ms: f64,
}

/// What the run cost the whole machine: the server and the load generator share its cores.
#[derive(Debug, Clone, Serialize)]
pub struct MachineReport {
    /// Cores of the machine.
    pub cores: usize,
    /// Cores kept busy on average, by every process.
    pub cores_busy: f64,
    /// This load generator's CPU time, milliseconds.
    pub generator_ms: Option<f64>,
    /// The load generator's cores kept busy on average.
    pub generator_cores_busy: Option<f64>,
    /// The generator's CPU milliseconds per approved payment.
    pub generator_ms_per_approved: Option<f64>,
}

/// What the run cost the server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerReport {
    /// Wall time between the two readings, seconds.
    pub observed_s: f64,
    /// Whole-request latency as authz measured it (every HTTP status).
    pub request: Option<StageLatency>,
    /// Per stage: jws, hsm, ledger.
    pub stages: BTreeMap<String, StageLatency>,
    /// Ledger group commits.
    pub ledger: Option<LedgerCommits>,
    /// Packets whose MAC did not verify (the mix's bad MACs should all be here).
    pub mac_failures: Option<u64>,
    /// HSM operations answered.
    pub hsm_operations: Option<u64>,
    /// Authorizations by response code, as authz counted them.
    pub responses: BTreeMap<String, u64>,
    /// CPU time, when the server's pid is known.
    pub cpu: Option<CpuReport>,
    /// The whole machine's CPU time and the load generator's part of it.
    pub machine: Option<MachineReport>,
    /// Figures that could not be compared (the server restarted, a metric is absent).
    pub notes: Vec<String>,
}

impl ServerReport {
    /// The differences between two readings; `approved` is the run's approved payments.
    pub fn between(before: &ServerSnapshot, after: &ServerSnapshot, approved: u64) -> Self {
        let observed_s = after.at.saturating_duration_since(before.at).as_secs_f64();
        let mut report = Self { observed_s, ..Self::default() };
        if let (Some(earlier), Some(later)) = (&before.metrics, &after.metrics) {
            report.add_metrics(earlier, later);
        }
        if let (Some(earlier), Some(later)) = (&before.cpu, &after.cpu) {
            report.cpu = Some(cpu_report(earlier, later, observed_s, approved));
        }
        if let (Some(earlier), Some(later)) = (before.machine, after.machine) {
            let total = later.total.saturating_sub(earlier.total);
            let busy = later.busy.saturating_sub(earlier.busy);
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            let generator_ms = match (before.generator_ticks, after.generator_ticks) {
                (Some(earlier), Some(later)) => Some(cpu::ticks_to_ms(later.saturating_sub(earlier))),
                _ => None,
            };
            report.machine = Some(MachineReport {
                cores,
                // busy / total is the busy share of all cores' time over the interval.
                cores_busy: if total > 0 { busy as f64 / total as f64 * cores as f64 } else { 0.0 },
                generator_ms,
                generator_cores_busy: generator_ms.filter(|_| observed_s > 0.0).map(|ms| ms / 1000.0 / observed_s),
                generator_ms_per_approved: generator_ms.filter(|_| approved > 0).map(|ms| ms / approved as f64),
            });
        }
        report
    }

    fn add_metrics(&mut self, before: &[Sample], after: &[Sample]) {
        let mut delta = |name: &str, with: &[(&str, &str)]| {
            let full = format!("{METRIC_PREFIX}{name}");
            let later = HistogramData::from_samples(after, &full, with);
            let earlier = HistogramData::from_samples(before, &full, with).unwrap_or_default();
            let delta = later
                .as_ref()
                .and_then(|later| if earlier.buckets.is_empty() { Some(later.clone()) } else { later.since(&earlier) });
            if delta.is_none() {
                self.notes.push(format!("{full}{with:?}: absent or went down (server restarted?)"));
            }
            delta
        };
        let request = delta("request_duration_seconds", &[]);
        let stages: Vec<_> =
            STAGES.iter().map(|stage| (*stage, delta("stage_duration_seconds", &[("stage", stage)]))).collect();
        let batches = delta("ledger_commit_batch_commands", &[]);
        let commits = delta("ledger_commit_duration_seconds", &[]);
        self.request = request.as_ref().and_then(StageLatency::from_delta);
        let requests = request.as_ref().map_or(0.0, |r| r.count);
        for (stage, data) in stages {
            if let Some(mut latency) = data.as_ref().and_then(StageLatency::from_delta) {
                latency.ms_per_request = data.filter(|_| requests > 0.0).map(|d| d.sum * 1000.0 / requests);
                self.stages.insert(stage.to_owned(), latency);
            }
        }
        if let (Some(batches), Some(commits)) = (batches, commits) {
            self.ledger = Some(LedgerCommits {
                commits: commits.count as u64,
                mean_batch_commands: batches.mean().unwrap_or(0.0),
                mean_commit_ms: commits.mean().map_or(0.0, |s| s * 1000.0),
            });
        }
        let counter_delta = |name: &str, with: &[(&str, &str)]| {
            let full = format!("{METRIC_PREFIX}{name}");
            let later = prometheus::counter(after, &full, with)?;
            let earlier = prometheus::counter(before, &full, with).unwrap_or(0.0);
            (later >= earlier).then_some((later - earlier) as u64)
        };
        self.mac_failures = counter_delta("mac_failures_total", &[]);
        self.hsm_operations = counter_delta("hsm_operations_total", &[]);
        let codes: std::collections::BTreeSet<&str> = after
            .iter()
            .filter(|s| s.name == format!("{METRIC_PREFIX}responses_total"))
            .filter_map(|s| s.label("code"))
            .collect();
        for code in codes {
            if let Some(count) = counter_delta("responses_total", &[("code", code)]).filter(|n| *n > 0) {
                self.responses.insert(code.to_owned(), count);
            }
        }
    }

    /// The server part of the report's table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, value: String| out.push_str(&format!("{name:<23} {value}\n"));
        let optional = |ms: Option<f64>| ms.map_or("-".to_owned(), |ms| format!("{ms:.2}"));
        let latency = |l: &StageLatency| {
            let per_request = l.ms_per_request.map_or(String::new(), |ms| format!(", {ms:.2} ms per request"));
            format!(
                "mean {:.2} ms, p50 ~{} ms, p99 ~{} ms ({} observed{per_request})",
                l.mean_ms,
                optional(l.p50_ms),
                optional(l.p99_ms),
                l.count
            )
        };
        if let Some(request) = &self.request {
            line("server: request", latency(request));
        }
        for (stage, l) in &self.stages {
            line(&format!("server: stage {stage}"), latency(l));
        }
        if let Some(ledger) = &self.ledger {
            line(
                "server: ledger commits",
                format!(
                    "{} group commits, {:.1} commands each, {:.2} ms each",
                    ledger.commits, ledger.mean_batch_commands, ledger.mean_commit_ms
                ),
            );
        }
        if let Some(failures) = self.mac_failures {
            line("server: MAC failures", failures.to_string());
        }
        if let Some(operations) = self.hsm_operations {
            line("server: HSM operations", operations.to_string());
        }
        if let Some(cpu) = &self.cpu {
            let per = cpu.ms_per_approved.map_or("-".to_owned(), |ms| format!("{ms:.3}"));
            line(
                "server: CPU",
                format!("{:.0} ms ({:.2} cores busy), {per} ms per approved payment", cpu.total_ms, cpu.cores_busy),
            );
            for (group, ms) in &cpu.threads_ms {
                line(&format!("  threads {group}"), format!("{ms:.0} ms"));
            }
            if cpu.ended_threads_ms > 0.0 {
                line("  ended threads", format!("{:.0} ms", cpu.ended_threads_ms));
            }
        }
        if let Some(machine) = &self.machine {
            line("machine: CPU", format!("{:.2} of {} cores busy (every process)", machine.cores_busy, machine.cores));
            if let (Some(ms), Some(cores)) = (machine.generator_ms, machine.generator_cores_busy) {
                let per = machine.generator_ms_per_approved.map_or("-".to_owned(), |ms| format!("{ms:.3}"));
                line(
                    "  of which loadtest",
                    format!("{ms:.0} ms ({cores:.2} cores busy), {per} ms per approved payment"),
                );
            }
        }
        for note in &self.notes {
            line("server: note", note.clone());
        }
        out
    }
}

fn cpu_report(before: &cpu::CpuSnapshot, after: &cpu::CpuSnapshot, observed_s: f64, approved: u64) -> CpuReport {
    let delta = cpu::CpuDelta::between(before, after);
    let total_ms = cpu::ticks_to_ms(delta.process_ticks);
    CpuReport {
        total_ms,
        cores_busy: if observed_s > 0.0 { total_ms / 1000.0 / observed_s } else { 0.0 },
        ms_per_approved: (approved > 0).then(|| total_ms / approved as f64),
        threads_ms: delta.groups.iter().map(|(group, ticks)| (group.clone(), cpu::ticks_to_ms(*ticks))).collect(),
        ended_threads_ms: cpu::ticks_to_ms(delta.unattributed_ticks()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn scrape(hsm_count: u64, hsm_sum: f64, mac_failures: u64) -> Vec<Sample> {
        let text = format!(
            "mps_authz_stage_duration_seconds_bucket{{stage=\"hsm\",le=\"0.001\"}} {hsm_count}\n\
             mps_authz_stage_duration_seconds_bucket{{stage=\"hsm\",le=\"+Inf\"}} {hsm_count}\n\
             mps_authz_stage_duration_seconds_sum{{stage=\"hsm\"}} {hsm_sum}\n\
             mps_authz_stage_duration_seconds_count{{stage=\"hsm\"}} {hsm_count}\n\
             mps_authz_mac_failures_total {mac_failures}\n\
             mps_authz_responses_total{{code=\"00\"}} {hsm_count}\n"
        );
        prometheus::parse(&text).unwrap()
    }

    #[test]
    fn the_report_is_the_difference_of_two_readings() {
        let at = Instant::now();
        let machine = |busy, total| Some(cpu::MachineTicks { busy, total });
        let before = ServerSnapshot {
            at,
            metrics: Some(scrape(10, 0.005, 1)),
            cpu: None,
            machine: machine(1_000, 4_000),
            generator_ticks: Some(50),
        };
        let after = ServerSnapshot {
            at: at + Duration::from_secs(2),
            metrics: Some(scrape(110, 0.055, 4)),
            cpu: None,
            machine: machine(1_300, 4_400),
            generator_ticks: Some(90),
        };
        let report = ServerReport::between(&before, &after, 100);
        assert_eq!(report.observed_s, 2.0);
        let hsm = &report.stages["hsm"];
        assert_eq!(hsm.count, 100);
        assert!((hsm.mean_ms - 0.5).abs() < 1e-9, "50 ms over 100 observations");
        assert!(hsm.p99_ms.unwrap() <= 1.0);
        assert_eq!(report.mac_failures, Some(3));
        assert_eq!(report.responses.get("00"), Some(&100));
        assert!(report.request.is_none());
        assert!(report.notes.iter().any(|n| n.contains("request_duration_seconds")), "{:?}", report.notes);
        assert!(report.table().contains("server: stage hsm"));
        // 300 of 400 ticks busy: three quarters of every core; the generator 40 ticks = 400 ms.
        let machine = report.machine.as_ref().unwrap();
        assert!((machine.cores_busy - 0.75 * machine.cores as f64).abs() < 1e-9, "{machine:?}");
        assert_eq!(machine.generator_ms, Some(400.0));
        assert_eq!(machine.generator_cores_busy, Some(0.2));
        assert_eq!(machine.generator_ms_per_approved, Some(4.0));
        assert!(report.table().contains("of which loadtest"));
    }
}
