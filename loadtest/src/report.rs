//! The last step of a run: every exchange recorded as it completes (an HDR histogram of
//! latencies, response codes, HTTP statuses, errors by kind, what the mix sent and checked),
//! then one report, printed as a table and written as JSON.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::drive::exchange::{ErrorKind, Exchanged, RequestKind};

/// Latencies above this are recorded as this (one minute, in microseconds).
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// Records exchanges from every task.
pub struct Recorder {
    started: Instant,
    sent: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    latencies_us: Mutex<Histogram<u64>>,
    tallies: Mutex<Tallies>,
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

    /// The report of everything recorded so far.
    pub fn report(&self, mode: String, interrupted: bool) -> Report {
        let elapsed_s = self.started.elapsed().as_secs_f64();
        let histogram = self.latencies_us.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tallies = self.tallies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let done = self.done.load(Ordering::Relaxed);
        let quantile = |q: f64| if done == 0 { 0 } else { histogram.value_at_quantile(q) };
        let kind = |k: RequestKind| tallies.kinds.get(&k).copied().unwrap_or_default();
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
            approved: tallies.response_codes.get("00").copied().unwrap_or(0),
            response_codes: tallies.response_codes.clone(),
            http_statuses: tallies.http_statuses.clone(),
            errors: tallies.errors.clone(),
            payments: kind(RequestKind::Payment),
            wrong_passwords: kind(RequestKind::WrongPassword),
            retransmissions: kind(RequestKind::Retransmission),
        }
    }
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
}

impl Report {
    /// Payments the bank booked as approved: the approved answers that were not retransmissions.
    pub fn approved_payments(&self) -> u64 {
        self.payments.checked
    }

    /// The report as a table for a terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, value: String| out.push_str(&format!("{name:<24}{value}\n"));
        line("mode", format!("{}{}", self.mode, if self.interrupted { " (interrupted by Ctrl-C)" } else { "" }));
        line("elapsed", format!("{:.2} s", self.elapsed_s));
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
    }
}
