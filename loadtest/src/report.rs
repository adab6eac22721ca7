//! The last step of a run: every exchange recorded as it completes (an HDR histogram of
//! latencies, a per-second timeline of throughput and latency, response codes, HTTP statuses,
//! errors by kind, what the mix sent and checked), then one report, printed as a table and
//! written as JSON. The server's side (`crate::server`) and the bounds (`crate::bounds`) are
//! attached to it by the binary.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::drive::exchange::{ErrorKind, Exchanged, RequestKind};

/// Latencies above this are recorded as this (one minute, in microseconds).
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// The timeline keeps at most this many one-second intervals (a day); later completions count
/// in the last one.
pub const INTERVALS_MAX: usize = 86_400;
/// Points of the percentile curve per decade of 1 / (1 - percentile).
const CURVE_POINTS_PER_DECADE: u32 = 10;
/// The percentile curve ends at 99.99 (four decades).
const CURVE_DECADES: u32 = 4;

/// The warm-up before a run: the same load, checked, not measured.
#[derive(Debug, Clone, Serialize)]
pub struct Warmup {
    /// Its length, seconds.
    pub seconds: f64,
    /// Requests sent.
    pub sent: u64,
    /// Requests completed.
    pub completed: u64,
    /// Requests that failed a check.
    pub errors: u64,
}

impl Warmup {
    /// The summary of a warm-up's report.
    pub fn from(report: &Report, seconds: f64) -> Self {
        Self { seconds, sent: report.sent, completed: report.completed, errors: report.errors_total }
    }
}

/// Records exchanges from every task.
pub struct Recorder {
    started: Instant,
    sent: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    latencies_us: Mutex<Histogram<u64>>,
    tallies: Mutex<Tallies>,
    timeline: Mutex<Timeline>,
}

/// The second being filled, and the seconds before it summed up; and the window a soak's
/// sampler takes away at each sample (`Recorder::take_window`).
struct Timeline {
    /// Index of the second `current` holds (from the run's start).
    second: u64,
    current: Histogram<u64>,
    current_errors: u64,
    points: Vec<TimePoint>,
    window: Histogram<u64>,
    window_errors: u64,
}

impl Timeline {
    /// An empty timeline at second 0; `histogram` is the empty histogram its seconds and
    /// windows start from.
    fn new(histogram: Histogram<u64>) -> Self {
        Self {
            second: 0,
            current: histogram.clone(),
            current_errors: 0,
            points: Vec::new(),
            window: histogram,
            window_errors: 0,
        }
    }

    /// Moves to `second`, summing up the seconds it passes (empty ones included).
    fn advance_to(&mut self, second: u64) {
        while self.second < second && self.points.len() < INTERVALS_MAX - 1 {
            self.close(1.0);
            self.second += 1;
        }
    }

    /// Sums up the current second (`length_s` long) and empties it.
    fn close(&mut self, length_s: f64) {
        let completed = self.current.len();
        let quantile = |q: f64| if completed == 0 { 0 } else { self.current.value_at_quantile(q) };
        self.points.push(TimePoint {
            start_s: self.second as f64,
            length_s,
            completed,
            errors: self.current_errors,
            throughput_per_s: if length_s > 0.0 { completed as f64 / length_s } else { 0.0 },
            latency_us_p50: quantile(0.50),
            latency_us_p99: quantile(0.99),
            latency_us_max: if completed == 0 { 0 } else { self.current.max() },
        });
        self.current.reset();
        self.current_errors = 0;
    }
}

/// One interval of the timeline (one second; the last may be shorter).
#[derive(Debug, Clone, Serialize)]
pub struct TimePoint {
    /// Start of the interval, seconds from the run's start.
    pub start_s: f64,
    /// Its length, seconds.
    pub length_s: f64,
    /// Requests completed in it.
    pub completed: u64,
    /// Of those, requests that failed a check.
    pub errors: u64,
    /// Completed requests per second.
    pub throughput_per_s: f64,
    /// Median latency of the requests completed in it, microseconds.
    pub latency_us_p50: u64,
    /// 99th percentile, microseconds.
    pub latency_us_p99: u64,
    /// Largest, microseconds.
    pub latency_us_max: u64,
}

/// One point of the latency percentile curve.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PercentilePoint {
    /// The percentile, 0 to 99.99.
    pub percentile: f64,
    /// The latency at it, microseconds.
    pub latency_us: u64,
}

#[derive(Default)]
struct Tallies {
    response_codes: BTreeMap<String, u64>,
    http_statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<ErrorKind, u64>,
    kinds: BTreeMap<RequestKind, KindCount>,
}

/// How many requests of a kind were sent and how many passed every check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KindCount {
    /// Completed requests of this kind.
    pub sent: u64,
    /// Of those, answered as expected and verified.
    pub checked: u64,
}

/// What completed since the last [`Recorder::take_window`] (or the run's start).
#[derive(Debug, Clone)]
pub struct Window {
    /// Latencies, microseconds.
    pub latencies_us: Histogram<u64>,
    /// Of those, requests that failed a check.
    pub errors: u64,
}

/// A snapshot for the progress line.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Requests started.
    pub sent: u64,
    /// Requests completed.
    pub done: u64,
    /// Requests that failed a check.
    pub errors: u64,
    /// p99 of latencies so far, microseconds.
    pub latency_us_p99: u64,
}

impl Recorder {
    /// An empty recorder; the run's clock starts now.
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        // 3 significant digits from 1 µs to a minute.
        let histogram = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)?;
        Ok(Self {
            timeline: Mutex::new(Timeline::new(histogram.clone())),
            started: Instant::now(),
            sent: AtomicU64::new(0),
            done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latencies_us: Mutex::new(histogram),
            tallies: Mutex::new(Tallies::default()),
        })
    }

    /// Counts a request as started unless `count_max` (0 = none) are already; returns its index.
    pub fn claim(&self, count_max: u64) -> Option<u64> {
        self.sent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sent| {
                (count_max == 0 || sent < count_max).then_some(sent + 1)
            })
            .ok()
    }

    /// Records a completed exchange and its latency.
    pub fn record(&self, latency: Duration, exchanged: &Exchanged) {
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(LATENCY_US_MAX).clamp(1, LATENCY_US_MAX);
        self.latencies_us.lock().unwrap_or_else(std::sync::PoisonError::into_inner).saturating_record(latency_us);
        {
            let mut timeline = self.timeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            timeline.advance_to(self.started.elapsed().as_secs());
            timeline.current.saturating_record(latency_us);
            timeline.current_errors += u64::from(exchanged.error.is_some());
            timeline.window.saturating_record(latency_us);
            timeline.window_errors += u64::from(exchanged.error.is_some());
        }
        let mut tallies = self.tallies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(code) = exchanged.code {
            *tallies.response_codes.entry(code.as_str().to_owned()).or_default() += 1;
        }
        if let Some(status) = exchanged.status {
            *tallies.http_statuses.entry(status).or_default() += 1;
        }
        let kind = tallies.kinds.entry(exchanged.kind).or_default();
        kind.sent += 1;
        match exchanged.error {
            Some(error) => {
                *tallies.errors.entry(error).or_default() += 1;
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            None => kind.checked += 1,
        }
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Figures for the progress line.
    pub fn progress(&self) -> Progress {
        let latency_us_p99 =
            self.latencies_us.lock().unwrap_or_else(std::sync::PoisonError::into_inner).value_at_quantile(0.99);
        Progress {
            sent: self.sent.load(Ordering::Relaxed),
            done: self.done.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency_us_p99,
        }
    }

    /// What completed since the last call (or the run's start), and a new window begun.
    pub fn take_window(&self) -> Window {
        let mut timeline = self.timeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = Window { latencies_us: timeline.window.clone(), errors: timeline.window_errors };
        timeline.window.reset();
        timeline.window_errors = 0;
        window
    }

    /// The report of everything recorded so far.
    pub fn report(&self, mode: String, interrupted: bool) -> Report {
        let elapsed_s = self.started.elapsed().as_secs_f64();
        let histogram = self.latencies_us.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tallies = self.tallies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let done = self.done.load(Ordering::Relaxed);
        let quantile = |q: f64| if done == 0 { 0 } else { histogram.value_at_quantile(q) };
        let kind = |k: RequestKind| tallies.kinds.get(&k).copied().unwrap_or_default();
        let timeline = {
            let mut timeline = self.timeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            timeline.advance_to(elapsed_s as u64);
            let length_s = (elapsed_s - timeline.second as f64).clamp(0.0, 1.0);
            if length_s > 0.0 || !timeline.current.is_empty() {
                timeline.close(length_s);
            }
            std::mem::take(&mut timeline.points)
        };
        Report {
            mode,
            interrupted,
            elapsed_s,
            sent: self.sent.load(Ordering::Relaxed),
            completed: done,
            errors_total: self.errors.load(Ordering::Relaxed),
            throughput_per_s: if elapsed_s > 0.0 { done as f64 / elapsed_s } else { 0.0 },
            latency_us: Latency {
                p50: quantile(0.50),
                p90: quantile(0.90),
                p99: quantile(0.99),
                p99_9: quantile(0.999),
                max: if done == 0 { 0 } else { histogram.max() },
                mean: if done == 0 { 0.0 } else { histogram.mean() },
            },
            latency_percentiles_us: if done == 0 { Vec::new() } else { percentile_curve(&histogram) },
            timeline,
            approved: tallies.response_codes.get("00").copied().unwrap_or(0),
            response_codes: tallies.response_codes.clone(),
            http_statuses: tallies.http_statuses.clone(),
            errors: tallies.errors.clone(),
            payments: kind(RequestKind::Payment),
            wrong_passwords: kind(RequestKind::WrongPassword),
            retransmissions: kind(RequestKind::Retransmission),
            bad_macs: kind(RequestKind::BadMac),
            endpoints: Vec::new(),
            server: None,
            warmup: None,
            bounds: None,
        }
    }
}

/// The latency at percentiles evenly spaced on a log scale of 1 / (1 - p): 0, 20.6, 36.9, ...,
/// 90, ..., 99, ..., 99.9, ..., 99.99.
fn percentile_curve(histogram: &Histogram<u64>) -> Vec<PercentilePoint> {
    (0..=CURVE_POINTS_PER_DECADE * CURVE_DECADES)
        .map(|step| {
            let tail = 10f64.powf(-f64::from(step) / f64::from(CURVE_POINTS_PER_DECADE));
            let percentile = 100.0 * (1.0 - tail);
            PercentilePoint { percentile, latency_us: histogram.value_at_percentile(percentile) }
        })
        .collect()
}

/// Latency quantiles, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// What one of several targets answered (a run against several authz instances).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointCount {
    /// The target's authorization URL.
    pub url: String,
    /// Requests completed there (answered or failed).
    pub completed: u64,
    /// Of those, requests that failed a check.
    pub errors: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// "closed loop, 16 connections" or "open loop, 500/s".
    pub mode: String,
    /// Stopped by Ctrl-C before its bound.
    pub interrupted: bool,
    /// Wall time of the run, seconds.
    pub elapsed_s: f64,
    /// Requests started.
    pub sent: u64,
    /// Requests completed (answered or failed).
    pub completed: u64,
    /// Requests that failed a check.
    pub errors_total: u64,
    /// Completed requests per second.
    pub throughput_per_s: f64,
    /// Latency quantiles (open loop: from each request's intended start).
    pub latency_us: Latency,
    /// The latency percentile curve, 0 to 99.99 on a log scale of 1 / (1 - p).
    pub latency_percentiles_us: Vec<PercentilePoint>,
    /// Throughput and latency per second of the run (by completion time).
    pub timeline: Vec<TimePoint>,
    /// Response code 00 answers (retransmissions included: they are counted once more here,
    /// but booked once; see `retransmissions`).
    pub approved: u64,
    /// Response codes of verified answers.
    pub response_codes: BTreeMap<String, u64>,
    /// HTTP statuses.
    pub http_statuses: BTreeMap<u16, u64>,
    /// Errors by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Payments with the right password.
    pub payments: KindCount,
    /// Payments with a wrong password (expect 55).
    pub wrong_passwords: KindCount,
    /// Retransmissions (expect the stored answer).
    pub retransmissions: KindCount,
    /// Packets with a corrupted MAC (expect 63, no payer answer, the SIM not advanced).
    pub bad_macs: KindCount,
    /// Per target, when the run spread its connections over several (empty with one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointCount>,
    /// The server's side: per-stage latency and CPU time, when `[target] metrics_url` or
    /// `server_pid` is set.
    pub server: Option<crate::server::ServerReport>,
    /// The warm-up before the run, when there was one (not in any figure above).
    pub warmup: Option<Warmup>,
    /// The raw bounds measured after the run (`--bounds`).
    pub bounds: Option<crate::bounds::BoundsReport>,
}

impl Report {
    /// Payments the bank booked as approved: the approved answers that were not retransmissions.
    pub fn approved_payments(&self) -> u64 {
        self.payments.checked
    }

    /// The report as a table for a terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, value: String| out.push_str(&format!("{name:<23} {value}\n"));
        line("mode", format!("{}{}", self.mode, if self.interrupted { " (interrupted by Ctrl-C)" } else { "" }));
        line("elapsed", format!("{:.2} s", self.elapsed_s));
        if let Some(warmup) = &self.warmup {
            line(
                "warm-up (not measured)",
                format!("{} s before: {} requests, {} errors", warmup.seconds, warmup.completed, warmup.errors),
            );
        }
        line("requests", format!("{} sent, {} completed, {} errors", self.sent, self.completed, self.errors_total));
        line("throughput", format!("{:.1} requests/s", self.throughput_per_s));
        let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
        let l = &self.latency_us;
        line("latency p50", ms(l.p50));
        line("latency p90", ms(l.p90));
        line("latency p99", ms(l.p99));
        line("latency p99.9", ms(l.p99_9));
        line("latency max", ms(l.max));
        let join = |items: Vec<String>| if items.is_empty() { "none".to_owned() } else { items.join(", ") };
        line("response codes", join(self.response_codes.iter().map(|(c, n)| format!("{c}: {n}")).collect()));
        line("HTTP statuses", join(self.http_statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect()));
        line("errors", join(self.errors.iter().map(|(e, n)| format!("{}: {n}", error_name(*e))).collect()));
        let kind = |k: &KindCount| format!("{} sent, {} checked", k.sent, k.checked);
        line("payments", kind(&self.payments));
        line("wrong passwords (55)", kind(&self.wrong_passwords));
        line("retransmissions", kind(&self.retransmissions));
        line("bad MACs (63)", kind(&self.bad_macs));
        for (index, endpoint) in self.endpoints.iter().enumerate() {
            line(
                &format!("target {}", index + 1),
                format!("{}: {} completed, {} errors", endpoint.url, endpoint.completed, endpoint.errors),
            );
        }
        if let Some(server) = &self.server {
            out.push_str(&server.table());
        }
        if let Some(bounds) = &self.bounds {
            out.push_str(&bounds.table(self.throughput_per_s));
        }
        out
    }
}

fn error_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Transport => "transport",
        ErrorKind::HttpStatus => "HTTP status",
        ErrorKind::BadSignature => "bad signature",
        ErrorKind::MalformedAnswer => "malformed answer",
        ErrorKind::SimCouldNotOpen => "SIM could not open the answer",
        ErrorKind::UnexpectedCode => "unexpected response code",
        ErrorKind::RetransmissionMismatch => "retransmission answer differs",
        ErrorKind::SimRefused => "SIM refused to build the packet",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mps_protocol::ResponseCode;

    #[test]
    fn counts_and_quantiles_add_up() {
        let recorder = Recorder::new().unwrap();
        for i in 0..100u64 {
            assert_eq!(recorder.claim(100), Some(i));
            let exchanged = Exchanged {
                kind: RequestKind::Payment,
                status: Some(200),
                code: Some(ResponseCode::Approved),
                error: None,
            };
            recorder.record(Duration::from_millis(i + 1), &exchanged);
        }
        assert_eq!(recorder.claim(100), None);
        let report = recorder.report("test".to_owned(), false);
        assert_eq!(report.completed, 100);
        assert_eq!(report.approved_payments(), 100);
        assert!(report.latency_us.p50 >= 49_000 && report.latency_us.p50 <= 51_000);
        assert!(report.latency_us.max >= 99_000);
        assert!(report.table().contains("00: 100"));
        assert!(serde_json::to_string(&report).unwrap().contains("\"p99_9\""));
        let curve = &report.latency_percentiles_us;
        assert_eq!(curve.len(), 41);
        assert_eq!(curve[0].percentile, 0.0);
        assert!((curve[40].percentile - 99.99).abs() < 1e-9);
        assert!(curve.windows(2).all(|w| w[0].latency_us <= w[1].latency_us), "the curve never falls");
        assert!(!report.timeline.is_empty());
        assert_eq!(report.timeline.iter().map(|p| p.completed).sum::<u64>(), 100);
    }

    #[test]
    fn a_window_holds_what_completed_since_the_last_one() {
        let recorder = Recorder::new().unwrap();
        let ok = Exchanged { kind: RequestKind::Payment, status: Some(200), code: None, error: None };
        let failed = Exchanged { error: Some(ErrorKind::Transport), ..ok };
        for latency_us in [100, 200, 300] {
            recorder.record(Duration::from_micros(latency_us), &ok);
        }
        recorder.record(Duration::from_micros(400), &failed);
        let first = recorder.take_window();
        assert_eq!((first.latencies_us.len(), first.errors, first.latencies_us.max()), (4, 1, 400));
        let empty = recorder.take_window();
        assert_eq!((empty.latencies_us.len(), empty.errors), (0, 0), "a window is taken away with it");
        recorder.record(Duration::from_micros(50), &ok);
        let second = recorder.take_window();
        assert_eq!((second.latencies_us.len(), second.latencies_us.max()), (1, 50));
        assert_eq!(recorder.report(String::new(), false).completed, 5, "the run's figures keep every request");
    }

    #[test]
    fn the_timeline_sums_up_each_second_and_keeps_empty_ones() {
        let histogram = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).unwrap();
        let mut timeline = Timeline::new(histogram);
        for latency_us in [100, 200, 300] {
            timeline.current.record(latency_us).unwrap();
        }
        timeline.advance_to(2);
        timeline.current.record(1_000).unwrap();
        timeline.current_errors = 1;
        timeline.close(0.5);
        let points = &timeline.points;
        assert_eq!(points.len(), 3);
        assert_eq!((points[0].completed, points[0].latency_us_max), (3, 300));
        assert_eq!((points[1].completed, points[1].throughput_per_s), (0, 0.0), "an idle second is kept");
        assert_eq!((points[2].start_s, points[2].errors), (2.0, 1));
        assert_eq!(points[2].throughput_per_s, 2.0, "one request in half a second");
    }
}
