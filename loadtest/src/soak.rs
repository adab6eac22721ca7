//! A soak (`--soak DIR`): the measured run, usually long and at a fixed fraction of peak
//! throughput, sampled every few seconds beside it: the harness's own latency percentiles and
//! throughput since the last sample, and the server's resident memory, threads and open file
//! descriptors (`/proc`), its HSM object counters and recycles (`/metrics`), and the ledger
//! file's size. The samples become a time series (CSV and JSON) and a picture (SVG, see
//! [`crate::svg::render_soak`]), and the run is judged by the checks of [`SoakSummary`]: memory
//! levels off, descriptors stay flat, p99 at the end stays near p99 at the start, no errors,
//! HSM recycles happened, and memory stays under a ceiling when one is given.

use std::collections::VecDeque;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::drive::Stop;
use crate::report::Recorder;
use crate::server::prometheus::{self, Sample};
use crate::server::{METRIC_PREFIX, ServerProbe, process};

/// At most this many samples are kept (a day at one a second); sampling stops after them.
pub const SAMPLES_MAX: usize = 86_400;

/// How a soak samples and what it requires.
#[derive(Debug, Clone)]
pub struct SoakSettings {
    /// Time between samples.
    pub every: Duration,
    /// The length of the first and the last window whose p99 latencies are compared.
    pub window: Duration,
    /// The largest rise of resident memory from the first half's peak to the second half's
    /// peak, percent, for memory to count as levelled off.
    pub rss_growth_percent_max: f64,
    /// A ceiling on resident memory, bytes (None: no ceiling).
    pub rss_bytes_max: Option<u64>,
    /// The largest rise of open file descriptors from the first half's peak to the second's.
    pub fds_growth_max: u64,
    /// The largest change of the last window's p99 from the first window's, percent.
    pub p99_drift_percent_max: f64,
    /// HSM recycles the run must see (0: none required).
    pub recycles_min: u64,
    /// The largest rise of the number of series the server's `/metrics` exposes, from the
    /// first half's peak to the second's: a label per SIM or per merchant would add them by
    /// the thousand, a response code seen late adds one (a histogram's status some twenty).
    pub metric_series_growth_max: u64,
    /// The ledger's SQLite file: its size (with its -wal and -shm files) is sampled.
    pub ledger_file: Option<PathBuf>,
    /// Print a line per sample on stderr.
    pub progress: bool,
}

/// One sample: the harness's requests since the previous sample and the server's state now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakSample {
    /// Seconds since the run's start.
    pub t_s: f64,
    /// Requests completed since the run's start.
    pub completed_total: u64,
    /// Requests that failed a check since the run's start.
    pub errors_total: u64,
    /// Completed requests per second since the previous sample.
    pub throughput_per_s: f64,
    /// Median latency since the previous sample, microseconds (0 when none completed).
    pub latency_us_p50: u64,
    /// 99th percentile since the previous sample, microseconds.
    pub latency_us_p99: u64,
    /// 99.9th percentile since the previous sample, microseconds.
    pub latency_us_p99_9: u64,
    /// The server's resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// The server's open file descriptors.
    pub open_fds: Option<u64>,
    /// The server's threads.
    pub threads: Option<u64>,
    /// HSM session objects created since the last initialisation (what a recycle frees).
    pub hsm_objects_since_init: Option<u64>,
    /// HSM session objects created since the server started.
    pub hsm_objects_created_total: Option<u64>,
    /// Planned HSM re-initialisations since the server started.
    pub hsm_recycles_total: Option<u64>,
    /// Whether the HSM pool was ready.
    pub hsm_pool_ready: Option<bool>,
    /// Series (sample lines) the server's `/metrics` exposes.
    pub metric_series: Option<u64>,
    /// The ledger's files, bytes.
    pub ledger_bytes: Option<u64>,
}

/// One check of a soak.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// Whether it held.
    pub passed: bool,
    /// The figures it was judged on.
    pub detail: String,
}

/// The figures a soak is judged on, and the checks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakSummary {
    /// Seconds from the first sample to the last.
    pub duration_s: f64,
    /// Requests completed.
    pub completed: u64,
    /// Requests that failed a check.
    pub errors: u64,
    /// HSM recycles during the run.
    pub hsm_recycles: Option<u64>,
    /// Peak resident memory in the first half, bytes.
    pub rss_bytes_first_half_max: Option<u64>,
    /// Peak resident memory in the second half, bytes.
    pub rss_bytes_second_half_max: Option<u64>,
    /// The second half's peak over the first half's, percent (negative: it fell).
    pub rss_growth_percent: Option<f64>,
    /// Peak resident memory, bytes.
    pub rss_bytes_max: Option<u64>,
    /// Peak open file descriptors in the first half.
    pub open_fds_first_half_max: Option<u64>,
    /// Peak open file descriptors in the second half.
    pub open_fds_second_half_max: Option<u64>,
    /// Peak number of metric series in the first half.
    pub metric_series_first_half_max: Option<u64>,
    /// Peak number of metric series in the second half.
    pub metric_series_second_half_max: Option<u64>,
    /// p99 latency of the first window, microseconds.
    pub latency_us_p99_first_window: Option<u64>,
    /// p99 latency of the last window, microseconds.
    pub latency_us_p99_last_window: Option<u64>,
    /// The last window's p99 over the first's, percent.
    pub p99_drift_percent: Option<f64>,
    /// The checks, in order.
    pub checks: Vec<Check>,
}

impl SoakSummary {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|check| check.passed)
    }
}

/// A soak's time series and its judgement.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Seconds between samples.
    pub every_s: f64,
    /// Seconds of the first and last windows.
    pub window_s: f64,
    /// The samples, in time order.
    pub samples: Vec<SoakSample>,
    /// The judgement.
    pub summary: SoakSummary,
    /// Readings that failed, or anything else the figures depend on (the first of each kind).
    pub notes: Vec<String>,
}

/// Samples `recorder` and the server every `settings.every` until `finished` is stopped, then
/// once more, and judges the run.
pub async fn sample(
    recorder: Arc<Recorder>,
    finished: Stop,
    probe: Arc<ServerProbe>,
    settings: SoakSettings,
) -> SoakReport {
    let started = Instant::now();
    let mut series = Series::new(&settings);
    let mut ticks = tokio::time::interval(settings.every.max(Duration::from_millis(100)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: the run's state at its start.
    ticks.tick().await;
    let mut previous_at = started;
    loop {
        let last = tokio::select! {
            _ = ticks.tick() => false,
            () = finished.stopped() => true,
        };
        let now = Instant::now();
        let window = recorder.take_window();
        let progress = recorder.progress();
        let mut sample = SoakSample {
            t_s: now.duration_since(started).as_secs_f64(),
            completed_total: progress.done,
            errors_total: progress.errors,
            ..SoakSample::default()
        };
        let length_s = now.duration_since(previous_at).as_secs_f64();
        previous_at = now;
        set_latency(&mut sample, &window.latencies_us, length_s);
        read_server(&mut sample, &probe, &settings, &mut series.notes).await;
        if settings.progress {
            eprintln!("{}", progress_line(&sample));
        }
        series.push(sample, window.latencies_us);
        if last || series.samples.len() >= SAMPLES_MAX {
            if !last {
                series.note(format!("sampling stopped after {SAMPLES_MAX} samples"));
            }
            break;
        }
    }
    series.finish(&settings)
}

fn set_latency(sample: &mut SoakSample, latencies_us: &Histogram<u64>, length_s: f64) {
    let completed = latencies_us.len();
    sample.throughput_per_s = if length_s > 0.0 { completed as f64 / length_s } else { 0.0 };
    if completed > 0 {
        sample.latency_us_p50 = latencies_us.value_at_quantile(0.50);
        sample.latency_us_p99 = latencies_us.value_at_quantile(0.99);
        sample.latency_us_p99_9 = latencies_us.value_at_quantile(0.999);
    }
}

/// The server's part of a sample; a reading that fails leaves its fields empty and a note.
async fn read_server(sample: &mut SoakSample, probe: &ServerProbe, settings: &SoakSettings, notes: &mut Notes) {
    if let Some(pid) = probe.pid() {
        match process::footprint(Path::new("/proc"), pid) {
            Ok(footprint) => {
                sample.rss_bytes = Some(footprint.rss_bytes);
                sample.open_fds = Some(footprint.open_fds);
                sample.threads = Some(footprint.threads);
            }
            Err(e) => notes.add(format!("reading the server's process: {e}")),
        }
    }
    match probe.metrics().await {
        Ok(Some(samples)) => set_hsm_figures(sample, &samples),
        Ok(None) => {}
        Err(e) => notes.add(format!("reading the server's metrics: {e}")),
    }
    if let Some(path) = &settings.ledger_file {
        match ledger_bytes(path) {
            Ok(bytes) => sample.ledger_bytes = Some(bytes),
            Err(e) => notes.add(format!("the ledger file {}: {e}", path.display())),
        }
    }
}

fn set_hsm_figures(sample: &mut SoakSample, samples: &[Sample]) {
    let figure = |name: &str| {
        prometheus::counter(samples, &format!("{METRIC_PREFIX}{name}"), &[])
            .filter(|value| value.is_finite() && *value >= 0.0)
            .map(|value| value as u64)
    };
    sample.hsm_objects_since_init = figure("hsm_objects_since_init");
    sample.hsm_objects_created_total = figure("hsm_objects_created_total");
    sample.hsm_recycles_total = figure("hsm_recycles_total");
    sample.hsm_pool_ready = figure("hsm_pool_ready").map(|ready| ready == 1);
    sample.metric_series = Some(samples.len() as u64);
}

/// The SQLite file and its -wal and -shm files, bytes (the last two count 0 when absent).
fn ledger_bytes(path: &Path) -> std::io::Result<u64> {
    let mut bytes = std::fs::metadata(path)?.len();
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        bytes += std::fs::metadata(PathBuf::from(side)).map_or(0, |m| m.len());
    }
    Ok(bytes)
}

fn progress_line(sample: &SoakSample) -> String {
    let mut line = format!(
        "soak {:>7.0} s  done {}  errors {}  rate {:.0}/s  p99 {:.2} ms",
        sample.t_s,
        sample.completed_total,
        sample.errors_total,
        sample.throughput_per_s,
        sample.latency_us_p99 as f64 / 1000.0
    );
    if let Some(rss) = sample.rss_bytes {
        let _ = write!(line, "  rss {:.1} MiB", mib(rss));
    }
    if let Some(fds) = sample.open_fds {
        let _ = write!(line, "  fds {fds}");
    }
    if let Some(recycles) = sample.hsm_recycles_total {
        let _ = write!(line, "  recycles {recycles}");
    }
    line
}

/// Mebibytes, for people.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The first of each kind of note (a failing reading repeats at every sample).
#[derive(Default)]
struct Notes(Vec<String>);

impl Notes {
    /// Notes a message unless one of the same kind (the text before the first ':') is noted.
    fn add(&mut self, message: String) {
        let kind = |text: &str| text.split(':').next().unwrap_or_default().to_owned();
        if !self.0.iter().any(|seen| kind(seen) == kind(&message)) {
            self.0.push(message);
        }
    }
}

/// The samples so far, and the latencies of the first and of the latest window.
struct Series {
    samples: Vec<SoakSample>,
    window_s: f64,
    /// Latencies of the samples in the first window (None before the first sample).
    first_window: Option<Histogram<u64>>,
    /// The latest samples' latencies, at most a window's worth.
    recent: VecDeque<(f64, Histogram<u64>)>,
    notes: Notes,
}

impl Series {
    fn new(settings: &SoakSettings) -> Self {
        Self {
            samples: Vec::new(),
            window_s: settings.window.as_secs_f64(),
            first_window: None,
            recent: VecDeque::new(),
            notes: Notes::default(),
        }
    }

    fn note(&mut self, message: String) {
        self.notes.add(message);
    }

    fn push(&mut self, sample: SoakSample, latencies_us: Histogram<u64>) {
        let t_s = sample.t_s;
        if t_s <= self.window_s {
            // Histograms of one recorder share their bounds, so adding one to another fits.
            match &mut self.first_window {
                Some(first) => {
                    let _ = first.add(&latencies_us);
                }
                None => self.first_window = Some(latencies_us.clone()),
            }
        }
        self.recent.push_back((t_s, latencies_us));
        // A sample's latencies are those since the previous sample: the window ending at t_s
        // holds the samples after t_s - window.
        while self.recent.front().is_some_and(|(at, _)| *at <= t_s - self.window_s) {
            self.recent.pop_front();
        }
        self.samples.push(sample);
    }

    fn finish(mut self, settings: &SoakSettings) -> SoakReport {
        let mut recent = self.recent.iter().map(|(_, latencies)| latencies);
        let last_window = recent.next().cloned().map(|mut sum| {
            for latencies in recent {
                let _ = sum.add(latencies);
            }
            sum
        });
        let duration_s = self.samples.last().map_or(0.0, |s| s.t_s);
        if duration_s < 2.0 * self.window_s {
            self.notes.add(format!(
                "windows overlap: the run ({duration_s:.0} s) is shorter than two windows of {:.0} s",
                self.window_s
            ));
        }
        let summary = summarise(&self.samples, self.first_window.as_ref(), last_window.as_ref(), settings);
        SoakReport {
            every_s: settings.every.as_secs_f64(),
            window_s: self.window_s,
            samples: self.samples,
            summary,
            notes: self.notes.0,
        }
    }
}

/// The figures and the checks of a run's samples.
fn summarise(
    samples: &[SoakSample],
    first_window: Option<&Histogram<u64>>,
    last_window: Option<&Histogram<u64>>,
    settings: &SoakSettings,
) -> SoakSummary {
    let p99 = |window: Option<&Histogram<u64>>| window.filter(|w| !w.is_empty()).map(|w| w.value_at_quantile(0.99));
    let duration_s = samples.last().map_or(0.0, |s| s.t_s);
    let (first_half, second_half): (Vec<&SoakSample>, Vec<&SoakSample>) =
        samples.iter().partition(|s| s.t_s <= duration_s / 2.0);
    let peak =
        |half: &[&SoakSample], figure: fn(&SoakSample) -> Option<u64>| half.iter().filter_map(|s| figure(s)).max();
    let last = samples.last();
    let mut summary = SoakSummary {
        duration_s,
        completed: last.map_or(0, |s| s.completed_total),
        errors: last.map_or(0, |s| s.errors_total),
        hsm_recycles: match (
            samples.first().and_then(|s| s.hsm_recycles_total),
            last.and_then(|s| s.hsm_recycles_total),
        ) {
            (Some(first), Some(last)) => Some(last.saturating_sub(first)),
            _ => None,
        },
        rss_bytes_first_half_max: peak(&first_half, |s| s.rss_bytes),
        rss_bytes_second_half_max: peak(&second_half, |s| s.rss_bytes),
        rss_bytes_max: samples.iter().filter_map(|s| s.rss_bytes).max(),
        open_fds_first_half_max: peak(&first_half, |s| s.open_fds),
        open_fds_second_half_max: peak(&second_half, |s| s.open_fds),
        metric_series_first_half_max: peak(&first_half, |s| s.metric_series),
        metric_series_second_half_max: peak(&second_half, |s| s.metric_series),
        latency_us_p99_first_window: p99(first_window),
        latency_us_p99_last_window: p99(last_window),
        ..SoakSummary::default()
    };
    summary.rss_growth_percent = match (summary.rss_bytes_first_half_max, summary.rss_bytes_second_half_max) {
        (Some(first), Some(second)) if first > 0 => Some(percent_change(first, second)),
        _ => None,
    };
    summary.p99_drift_percent = match (summary.latency_us_p99_first_window, summary.latency_us_p99_last_window) {
        (Some(first), Some(last)) if first > 0 => Some(percent_change(first, last)),
        _ => None,
    };
    summary.checks = checks(&summary, settings);
    summary
}

fn percent_change(from: u64, to: u64) -> f64 {
    (to as f64 - from as f64) * 100.0 / from as f64
}

/// The checks, each failing when its figures are missing: a soak that could not see the
/// server proves nothing about it.
fn checks(summary: &SoakSummary, settings: &SoakSettings) -> Vec<Check> {
    let missing =
        |name: &'static str, what: &str| Check { name, passed: false, detail: format!("not measured: {what}") };
    let mut checks = vec![Check {
        name: "no errors",
        passed: summary.errors == 0 && summary.completed > 0,
        detail: format!("{} completed, {} failed a check", summary.completed, summary.errors),
    }];
    checks.push(
        match (summary.rss_bytes_first_half_max, summary.rss_bytes_second_half_max, summary.rss_growth_percent) {
            (Some(first), Some(second), Some(growth)) => Check {
                name: "memory levels off",
                passed: growth <= settings.rss_growth_percent_max,
                detail: format!(
                    "peak {:.1} MiB in the first half, {:.1} MiB in the second ({growth:+.1} %, at most {:+.1} %)",
                    mib(first),
                    mib(second),
                    settings.rss_growth_percent_max
                ),
            },
            _ => missing("memory levels off", "give the server's pid (--server-pid or --server-pid-file)"),
        },
    );
    if let Some(ceiling) = settings.rss_bytes_max {
        checks.push(match summary.rss_bytes_max {
            Some(max) => Check {
                name: "memory under its ceiling",
                passed: max <= ceiling,
                detail: format!("peak {:.1} MiB, ceiling {:.1} MiB", mib(max), mib(ceiling)),
            },
            None => missing("memory under its ceiling", "give the server's pid"),
        });
    }
    checks.push(match (summary.open_fds_first_half_max, summary.open_fds_second_half_max) {
        (Some(first), Some(second)) => Check {
            name: "file descriptors flat",
            passed: second <= first.saturating_add(settings.fds_growth_max),
            detail: format!(
                "peak {first} in the first half, {second} in the second (at most {} more)",
                settings.fds_growth_max
            ),
        },
        _ => missing("file descriptors flat", "give the server's pid"),
    });
    checks.push(match (summary.metric_series_first_half_max, summary.metric_series_second_half_max) {
        (Some(first), Some(second)) => Check {
            name: "metric series bounded",
            passed: second <= first.saturating_add(settings.metric_series_growth_max),
            detail: format!(
                "peak {first} in the first half, {second} in the second (at most {} more)",
                settings.metric_series_growth_max
            ),
        },
        _ => missing("metric series bounded", "give the server's metrics (--metrics-url)"),
    });
    checks.push(
        match (summary.latency_us_p99_first_window, summary.latency_us_p99_last_window, summary.p99_drift_percent) {
            (Some(first), Some(last), Some(drift)) => Check {
                name: "p99 steady",
                passed: drift.abs() <= settings.p99_drift_percent_max,
                detail: format!(
                    "{:.2} ms in the first {:.0} s, {:.2} ms in the last ({drift:+.1} %, within ±{:.0} %)",
                    first as f64 / 1000.0,
                    settings.window.as_secs_f64(),
                    last as f64 / 1000.0,
                    settings.p99_drift_percent_max
                ),
            },
            _ => missing("p99 steady", "no request completed in the first or the last window"),
        },
    );
    if settings.recycles_min > 0 {
        checks.push(match summary.hsm_recycles {
            Some(recycles) => Check {
                name: "HSM recycles happened",
                passed: recycles >= settings.recycles_min,
                detail: format!("{recycles} during the run (at least {})", settings.recycles_min),
            },
            None => missing("HSM recycles happened", "give the server's metrics (--metrics-url)"),
        });
    }
    checks
}

impl SoakReport {
    /// The samples as CSV, one line per sample under a header; an unmeasured figure is empty.
    pub fn csv(&self) -> String {
        let mut text = String::from(
            "t_s,completed_total,errors_total,throughput_per_s,latency_us_p50,latency_us_p99,latency_us_p99_9,\
             rss_bytes,open_fds,threads,hsm_objects_since_init,hsm_objects_created_total,hsm_recycles_total,\
             hsm_pool_ready,metric_series,ledger_bytes\n",
        );
        let cell = |value: Option<u64>| value.map(|v| v.to_string()).unwrap_or_default();
        for s in &self.samples {
            let _ = writeln!(
                text,
                "{:.3},{},{},{:.1},{},{},{},{},{},{},{},{},{},{},{},{}",
                s.t_s,
                s.completed_total,
                s.errors_total,
                s.throughput_per_s,
                s.latency_us_p50,
                s.latency_us_p99,
                s.latency_us_p99_9,
                cell(s.rss_bytes),
                cell(s.open_fds),
                cell(s.threads),
                cell(s.hsm_objects_since_init),
                cell(s.hsm_objects_created_total),
                cell(s.hsm_recycles_total),
                cell(s.hsm_pool_ready.map(u64::from)),
                cell(s.metric_series),
                cell(s.ledger_bytes),
            );
        }
        text
    }

    /// The judgement as a table for the terminal.
    pub fn table(&self) -> String {
        let mut text = format!(
            "soak: {} samples every {:.1} s over {:.0} s\n",
            self.samples.len(),
            self.every_s,
            self.summary.duration_s
        );
        for check in &self.summary.checks {
            let _ = writeln!(
                text,
                "soak: {:<26} {}  {}",
                check.name,
                if check.passed { "ok    " } else { "FAILED" },
                check.detail
            );
        }
        for note in &self.notes {
            let _ = writeln!(text, "soak: note: {note}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::report::LATENCY_US_MAX;

    fn settings() -> SoakSettings {
        SoakSettings {
            every: Duration::from_secs(1),
            window: Duration::from_secs(3),
            rss_growth_percent_max: 10.0,
            rss_bytes_max: Some(100 * 1024 * 1024),
            fds_growth_max: 4,
            p99_drift_percent_max: 20.0,
            recycles_min: 1,
            metric_series_growth_max: 16,
            ledger_file: None,
            progress: false,
        }
    }

    fn latencies(values_us: &[u64]) -> Histogram<u64> {
        let mut histogram = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).unwrap();
        for value in values_us {
            histogram.record(*value).unwrap();
        }
        histogram
    }

    /// Ten samples a second apart: memory as given, 50 fds, p99 as given, one recycle.
    fn run(rss_mib: [u64; 10], latency_us: [u64; 10], settings: &SoakSettings) -> SoakReport {
        let mut series = Series::new(settings);
        for (index, (rss, latency)) in rss_mib.iter().zip(latency_us).enumerate() {
            let sample = SoakSample {
                t_s: index as f64,
                completed_total: 100 * index as u64,
                rss_bytes: Some(rss * 1024 * 1024),
                open_fds: Some(50),
                metric_series: Some(200 + index as u64),
                hsm_recycles_total: Some(u64::from(index >= 5)),
                ..SoakSample::default()
            };
            series.push(sample, latencies(&vec![latency; 100]));
        }
        series.finish(settings)
    }

    fn check<'a>(report: &'a SoakReport, name: &str) -> &'a Check {
        report.summary.checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn a_steady_run_passes_every_check() {
        let report = run([40, 44, 47, 48, 48, 47, 48, 48, 47, 48], [2000; 10], &settings());
        assert!(report.summary.passed(), "{}", report.table());
        assert_eq!(report.summary.hsm_recycles, Some(1));
        assert_eq!(report.summary.rss_bytes_first_half_max, Some(48 * 1024 * 1024));
        assert_eq!(report.summary.latency_us_p99_first_window, report.summary.latency_us_p99_last_window);
        assert_eq!(report.csv().lines().count(), 11);
    }

    #[test]
    fn memory_that_keeps_rising_fails() {
        let report = run([40, 44, 48, 52, 56, 60, 64, 68, 72, 76], [2000; 10], &settings());
        assert!(!check(&report, "memory levels off").passed, "{}", report.table());
        assert!(check(&report, "memory under its ceiling").passed);
        let over = run([40, 44, 47, 48, 48, 47, 48, 48, 47, 120], [2000; 10], &settings());
        assert!(!check(&over, "memory under its ceiling").passed, "{}", over.table());
    }

    #[test]
    fn metric_series_that_keep_coming_fail() {
        let mut series = Series::new(&settings());
        for index in 0..10u64 {
            // A label per SIM: a series more with each new payer.
            let sample = SoakSample {
                t_s: index as f64,
                completed_total: 100 * index,
                metric_series: Some(200 + 100 * index),
                ..SoakSample::default()
            };
            series.push(sample, latencies(&[2000; 100]));
        }
        let report = series.finish(&settings());
        let failed = check(&report, "metric series bounded");
        assert!(!failed.passed, "{}", report.table());
        assert!(failed.detail.contains("peak 600 in the first half, 1100 in the second"), "{failed:?}");
        assert_eq!(report.csv().lines().nth(1).unwrap().split(',').nth(14), Some("200"));
    }

    #[test]
    fn p99_is_compared_between_the_first_and_the_last_window() {
        // The first window is t <= 3 (samples 0 to 3), the last t > 6 (samples 7 to 9).
        let slower = run([40; 10], [2000, 2000, 2000, 2000, 9000, 9000, 9000, 2600, 2600, 2600], &settings());
        assert!(!check(&slower, "p99 steady").passed, "30 % slower at the end: {}", slower.table());
        let within = run([40; 10], [2000, 2000, 2000, 2000, 9000, 9000, 9000, 2300, 2300, 2300], &settings());
        assert!(check(&within, "p99 steady").passed, "a slow middle is not the end: {}", within.table());
        let faster = run([40; 10], [2000, 2000, 2000, 2000, 2000, 2000, 2000, 1500, 1500, 1500], &settings());
        assert!(!check(&faster, "p99 steady").passed, "25 % faster is a drift too: {}", faster.table());
    }

    #[test]
    fn errors_missing_recycles_and_missing_readings_fail() {
        let mut settings = settings();
        let mut series = Series::new(&settings);
        for index in 0..4 {
            let sample =
                SoakSample { t_s: f64::from(index), completed_total: 10, errors_total: 1, ..SoakSample::default() };
            series.push(sample, latencies(&[1000]));
        }
        let report = series.finish(&settings);
        assert!(!check(&report, "no errors").passed);
        for name in [
            "memory levels off",
            "memory under its ceiling",
            "file descriptors flat",
            "metric series bounded",
            "HSM recycles happened",
        ] {
            let failed = check(&report, name);
            assert!(!failed.passed && failed.detail.starts_with("not measured"), "{name}: {failed:?}");
        }
        settings.recycles_min = 0;
        settings.rss_bytes_max = None;
        let report = run([40; 10], [2000; 10], &settings);
        assert!(
            report
                .summary
                .checks
                .iter()
                .all(|c| c.name != "HSM recycles happened" && c.name != "memory under its ceiling")
        );
    }

    #[test]
    fn a_reading_that_fails_is_noted_once() {
        let mut notes = Notes::default();
        notes.add("reading the server's metrics: refused".to_owned());
        notes.add("reading the server's metrics: refused again".to_owned());
        notes.add("the ledger file x: gone".to_owned());
        assert_eq!(notes.0.len(), 2);
    }

    #[test]
    fn the_ledger_counts_its_wal_and_shm_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        std::fs::write(&path, [0u8; 100]).unwrap();
        assert_eq!(ledger_bytes(&path).unwrap(), 100);
        std::fs::write(dir.path().join("ledger.sqlite-wal"), [0u8; 30]).unwrap();
        std::fs::write(dir.path().join("ledger.sqlite-shm"), [0u8; 7]).unwrap();
        assert_eq!(ledger_bytes(&path).unwrap(), 137);
        assert!(ledger_bytes(&dir.path().join("absent")).is_err());
    }

    #[test]
    fn hsm_figures_come_from_the_metrics() {
        let text = "mps_authz_hsm_objects_since_init 400\nmps_authz_hsm_objects_created_total 4000\n\
                    mps_authz_hsm_recycles_total 3\nmps_authz_hsm_pool_ready 1\n";
        let mut sample = SoakSample::default();
        set_hsm_figures(&mut sample, &prometheus::parse(text).unwrap());
        assert_eq!(sample.hsm_objects_since_init, Some(400));
        assert_eq!(sample.hsm_objects_created_total, Some(4000));
        assert_eq!(sample.hsm_recycles_total, Some(3));
        assert_eq!(sample.hsm_pool_ready, Some(true));
        assert_eq!(sample.metric_series, Some(4));
    }
}
