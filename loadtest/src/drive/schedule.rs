//! The open loop's schedule: request i is due at start + i / rate, whatever happened to the
//! requests before it. Latency is measured from that intended time, so a server that stalls
//! is charged for every request it delayed (no coordinated omission).

use std::time::{Duration, Instant};

/// Intended send times at a constant arrival rate.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    rate_per_second: f64,
}

impl Schedule {
    /// A schedule from `start` at `rate_per_second` (> 0).
    pub fn new(start: Instant, rate_per_second: f64) -> Self {
        Self { start, rate_per_second }
    }

    /// When request `index` (from 0) is due.
    pub fn intended(&self, index: u64) -> Instant {
        self.start + Duration::from_secs_f64(index as f64 / self.rate_per_second)
    }

    /// The latency of a request due at `intended` that completed at `done`: a request sent
    /// late keeps its intended start.
    pub fn latency(intended: Instant, done: Instant) -> Duration {
        done.saturating_duration_since(intended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_follow_the_rate_not_the_sends() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 100.0);
        assert_eq!(schedule.intended(0), start);
        assert_eq!(schedule.intended(10), start + Duration::from_millis(100));
        assert_eq!(schedule.intended(250), start + Duration::from_millis(2500));
    }

    #[test]
    fn a_late_request_is_measured_from_its_intended_start() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 100.0);
        let intended = schedule.intended(10); // due at 100 ms
        // The generator was stalled: request 10 went out at 300 ms and was answered at 350 ms.
        let done = start + Duration::from_millis(350);
        assert_eq!(Schedule::latency(intended, done), Duration::from_millis(250));
        // Never negative.
        assert_eq!(Schedule::latency(intended, start), Duration::ZERO);
    }
}
