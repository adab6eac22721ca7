//! Pool counters as plain atomics, read as a [`PoolMetrics`] snapshot. The authorization
//! server exports them to Prometheus; this crate does not depend on a metrics library.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{HsmError, SessionError};

/// Error kinds counted besides [`HsmError::KINDS`]: the two session refusals.
const SESSION_KINDS: [&str; 2] = ["bad_mac", "bad_secret"];
const KIND_COUNT: usize = HsmError::KINDS.len() + SESSION_KINDS.len();

/// A snapshot of the pool's counters and gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMetrics {
    /// Whether the pool is logged in and its workers have sessions (`/readyz`).
    pub ready: bool,
    /// Number of workers (sessions).
    pub pool_size: usize,
    /// Operations submitted and not yet answered.
    pub in_flight: u64,
    /// Jobs waiting in the workers' queues.
    pub queued: u64,
    /// Authorization sessions opened and not yet sealed or discarded.
    pub open_sessions: u64,
    /// Operations answered, successful or not.
    pub operations_total: u64,
    /// Failed operations by kind ([`HsmError::kind`], plus `bad_mac` and `bad_secret`).
    pub errors_total: Vec<(&'static str, u64)>,
    /// Successful re-initialisations after the HSM was lost.
    pub reconnects_total: u64,
    /// Planned re-initialisations ([`crate::Hsm::recycle`], automatic or called).
    pub recycles_total: u64,
    /// Session objects created since start.
    pub objects_created_total: u64,
    /// Session objects created since the last (re-)initialisation: SoftHSM's memory grows
    /// with this until the next recycle.
    pub objects_since_init: u64,
    /// C_DestroyObject calls that failed (the object then lives until its session closes).
    pub destroy_failures_total: u64,
}

/// The live counters.
#[derive(Default)]
pub(crate) struct Metrics {
    pub in_flight: AtomicU64,
    pub operations: AtomicU64,
    errors: [AtomicU64; KIND_COUNT],
    pub reconnects: AtomicU64,
    pub recycles: AtomicU64,
    pub objects_created: AtomicU64,
    pub objects_since_init: AtomicU64,
    pub destroy_failures: AtomicU64,
    pub open_tickets: AtomicU64,
}

/// Something the metrics can count as an error kind.
pub(crate) trait CountedError {
    fn kind_slot(&self) -> usize;
}

impl CountedError for HsmError {
    fn kind_slot(&self) -> usize {
        self.kind_index()
    }
}

impl CountedError for SessionError {
    fn kind_slot(&self) -> usize {
        match self {
            SessionError::BadMac => HsmError::KINDS.len(),
            SessionError::BadSecret => HsmError::KINDS.len() + 1,
            SessionError::Hsm(e) => e.kind_index(),
        }
    }
}

impl Metrics {
    pub fn record<T, E: CountedError>(&self, result: &Result<T, E>) {
        self.operations.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            self.errors[e.kind_slot()].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn object_created(&self) {
        self.objects_created.fetch_add(1, Ordering::Relaxed);
        self.objects_since_init.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self, ready: bool, pool_size: usize, queued: u64) -> PoolMetrics {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let names = HsmError::KINDS.iter().chain(SESSION_KINDS.iter());
        PoolMetrics {
            ready,
            pool_size,
            in_flight: load(&self.in_flight),
            queued,
            open_sessions: load(&self.open_tickets),
            operations_total: load(&self.operations),
            errors_total: names.zip(self.errors.iter()).map(|(name, count)| (*name, load(count))).collect(),
            reconnects_total: load(&self.reconnects),
            recycles_total: load(&self.recycles),
            objects_created_total: load(&self.objects_created),
            objects_since_init: load(&self.objects_since_init),
            destroy_failures_total: load(&self.destroy_failures),
        }
    }
}

/// Counts an operation as in flight while alive.
pub(crate) struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    pub fn enter(metrics: &'a Metrics) -> Self {
        metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_kind() {
        let metrics = Metrics::default();
        metrics.record::<(), _>(&Err(SessionError::BadMac));
        metrics.record::<(), _>(&Err(HsmError::Timeout));
        metrics.record::<(), HsmError>(&Ok(()));
        {
            let _a = InFlight::enter(&metrics);
            assert_eq!(metrics.snapshot(true, 1, 0).in_flight, 1);
        }
        let snap = metrics.snapshot(true, 1, 0);
        assert_eq!(snap.in_flight, 0);
        assert_eq!(snap.operations_total, 3);
        let count = |k: &str| snap.errors_total.iter().find(|(n, _)| *n == k).map(|(_, c)| *c);
        assert_eq!(count("bad_mac"), Some(1));
        assert_eq!(count("timeout"), Some(1));
        assert_eq!(count("pkcs11"), Some(0));
    }
}
