//! Raw bounds, measured in the same invocation as the run so that the run's throughput can be
//! read as a fraction of what the machine allows today: the bank's HSM doing only an
//! authorization's calls ([`hsm`]), the mTLS and HTTP/2 stack with an empty handler ([`tls`]),
//! and the ledger committing sessions of an authorization's shape ([`ledger`]). On a noisy
//! machine the ratios hold where the absolute figures do not.

pub mod hsm;
pub mod ledger;
pub mod tls;

use std::time::Duration;

use serde::Serialize;

/// Each bound runs at least this long.
pub const BOUND_SECONDS_MIN: f64 = 0.5;
/// Each bound runs at most this long.
pub const BOUND_SECONDS_MAX: f64 = 600.0;

/// Why a bound could not be measured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BoundError {
    /// No payer could give the HSM bound its packet.
    #[error("HSM bound: {0}")]
    Hsm(String),
    /// The empty mTLS server or its clients.
    #[error("mTLS bound: {0}")]
    Tls(String),
    /// The temporary ledger.
    #[error("ledger bound: {0}")]
    Ledger(String),
}

/// One bound: how many operations per second the part alone sustains.
#[derive(Debug, Clone, Serialize)]
pub struct Bound {
    /// What was measured, for the reader.
    pub what: String,
    /// Concurrent callers (connections, tasks).
    pub callers: usize,
    /// Operations completed.
    pub operations: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// Operations per second.
    pub ops_per_s: f64,
}

impl Bound {
    /// A bound from a measured loop.
    pub fn new(what: &str, callers: usize, measured: mps_hsm::bench::Measured) -> Self {
        Self {
            what: what.to_owned(),
            callers,
            operations: measured.completed,
            errors: measured.errors,
            elapsed_s: measured.elapsed.as_secs_f64(),
            ops_per_s: measured.per_second(),
        }
    }
}

/// The three bounds and the run against them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BoundsReport {
    /// The bank's HSM: open_session + seal_answer + sign_es256.
    pub hsm: Option<Bound>,
    /// Loopback mTLS + HTTP/2 with an empty handler.
    pub mtls: Option<Bound>,
    /// Ledger session commits with the bank's group-commit settings.
    pub ledger: Option<Bound>,
    /// The name of the smallest bound.
    pub smallest: Option<String>,
    /// The run's throughput divided by the smallest bound.
    pub run_fraction_of_smallest: Option<f64>,
    /// Bounds that could not be measured, and why.
    pub notes: Vec<String>,
}

impl BoundsReport {
    /// Fills in the smallest bound and the run's fraction of it.
    pub fn compare(&mut self, run_per_s: f64) {
        let smallest = [("hsm", &self.hsm), ("mtls", &self.mtls), ("ledger", &self.ledger)]
            .into_iter()
            .filter_map(|(name, bound)| bound.as_ref().map(|b| (name, b.ops_per_s)))
            .filter(|(_, rate)| *rate > 0.0)
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((name, rate)) = smallest {
            self.smallest = Some(name.to_owned());
            self.run_fraction_of_smallest = Some(run_per_s / rate);
        }
    }

    /// The bounds part of the report's table.
    pub fn table(&self, run_per_s: f64) -> String {
        let mut out = String::new();
        let mut line = |name: &str, value: String| out.push_str(&format!("{name:<23} {value}\n"));
        for (name, bound) in [("bound: HSM", &self.hsm), ("bound: mTLS", &self.mtls), ("bound: ledger", &self.ledger)] {
            if let Some(b) = bound {
                line(
                    name,
                    format!(
                        "{:.0} ops/s ({}, {} callers, {} errors); run at {:.0} %",
                        b.ops_per_s,
                        b.what,
                        b.callers,
                        b.errors,
                        100.0 * run_per_s / b.ops_per_s.max(f64::MIN_POSITIVE)
                    ),
                );
            }
        }
        if let (Some(name), Some(fraction)) = (&self.smallest, self.run_fraction_of_smallest) {
            line("bound: smallest", format!("{name}: the run reached {:.1} % of it", fraction * 100.0));
        }
        for note in &self.notes {
            line("bound: note", note.clone());
        }
        out
    }
}

/// A bound's duration from seconds, within [`BOUND_SECONDS_MIN`] and [`BOUND_SECONDS_MAX`].
pub fn bound_duration(seconds: f64) -> Duration {
    Duration::from_secs_f64(if seconds.is_finite() { seconds.clamp(BOUND_SECONDS_MIN, BOUND_SECONDS_MAX) } else { 3.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(rate: f64) -> Option<Bound> {
        Some(Bound { what: "x".to_owned(), callers: 1, operations: 1, errors: 0, elapsed_s: 1.0, ops_per_s: rate })
    }

    #[test]
    fn the_run_is_compared_with_the_smallest_bound() {
        let mut report =
            BoundsReport { hsm: bound(2000.0), mtls: bound(9000.0), ledger: bound(500.0), ..Default::default() };
        report.compare(250.0);
        assert_eq!(report.smallest.as_deref(), Some("ledger"));
        assert_eq!(report.run_fraction_of_smallest, Some(0.5));
        assert!(report.table(250.0).contains("ledger: the run reached 50.0 %"));
        let mut none = BoundsReport::default();
        none.compare(250.0);
        assert_eq!(none.smallest, None);
        assert_eq!(bound_duration(0.0), Duration::from_millis(500));
        assert_eq!(bound_duration(f64::NAN), Duration::from_secs(3));
    }
}
