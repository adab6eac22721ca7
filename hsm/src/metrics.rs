//! Pool counters as plain atomics, read as a [`PoolMetrics`] snapshot. The authorization
//! server exports them to Prometheus; this crate does not depend on a metrics library.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// Time the HSMs were out for them (drain, finalise, initialise and log in again, until a
    /// first worker served again), failed ones whole.
    pub recycle_time_total: Duration,
    /// Session objects created since start.
    pub objects_created_total: u64,
    /// Session objects created since the last (re-)initialisation: SoftHSM's memory grows
    /// with this until the next recycle.
    pub objects_since_init: u64,
    /// C_DestroyObject calls that failed (the object then lives until its session closes).
    pub destroy_failures_total: u64,
    /// Each member (HSM) of the pool, the first HSM first; the figures above are their sums.
    pub members: Vec<MemberMetrics>,
}

/// One member's (HSM's) figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetrics {
    /// Its token label.
    pub token_label: String,
    /// Whether it is logged in with its sessions (up), else it takes no work.
    pub ready: bool,
    /// Its workers.
    pub pool_size: usize,
    /// Its operations submitted and not yet answered.
    pub in_flight: u64,
    /// Its operations answered, successful or not.
    pub operations_total: u64,
    /// Its failed operations, every kind together.
    pub errors_total: u64,
    /// Its re-initialisations after it was lost.
    pub reconnects_total: u64,
    /// Its planned re-initialisations.
    pub recycles_total: u64,
    /// Time it was out for them, from the drain until its first worker served again: it
    /// took no work meanwhile.
    pub recycle_time_total: Duration,
}

impl PoolMetrics {
    /// The pool's figures from each member's (label, figures): sums, ready when any is.
    pub(crate) fn combine(members: Vec<(String, PoolMetrics)>) -> PoolMetrics {
        let mut total = PoolMetrics {
            ready: false,
            pool_size: 0,
            in_flight: 0,
            queued: 0,
            open_sessions: 0,
            operations_total: 0,
            errors_total: HsmError::KINDS.iter().chain(SESSION_KINDS.iter()).map(|name| (*name, 0)).collect(),
            reconnects_total: 0,
            recycles_total: 0,
            recycle_time_total: Duration::ZERO,
            objects_created_total: 0,
            objects_since_init: 0,
            destroy_failures_total: 0,
            members: Vec::with_capacity(members.len()),
        };
        for (token_label, m) in members {
            total.ready |= m.ready;
            total.pool_size += m.pool_size;
            total.in_flight += m.in_flight;
            total.queued += m.queued;
            total.open_sessions += m.open_sessions;
            total.operations_total += m.operations_total;
            for ((_, sum), (_, count)) in total.errors_total.iter_mut().zip(&m.errors_total) {
                *sum += count;
            }
            total.reconnects_total += m.reconnects_total;
            total.recycles_total += m.recycles_total;
            total.recycle_time_total += m.recycle_time_total;
            total.objects_created_total += m.objects_created_total;
            total.objects_since_init += m.objects_since_init;
            total.destroy_failures_total += m.destroy_failures_total;
            total.members.push(MemberMetrics {
                token_label,
                ready: m.ready,
                pool_size: m.pool_size,
                in_flight: m.in_flight,
                operations_total: m.operations_total,
                errors_total: m.errors_total.iter().map(|(_, count)| count).sum(),
                reconnects_total: m.reconnects_total,
                recycles_total: m.recycles_total,
                recycle_time_total: m.recycle_time_total,
            });
        }
        total
    }
}

/// The live counters.
#[derive(Default)]
pub(crate) struct Metrics {
    pub in_flight: AtomicU64,
    pub operations: AtomicU64,
    errors: [AtomicU64; KIND_COUNT],
    pub reconnects: AtomicU64,
    pub recycles: AtomicU64,
    recycle_micros: AtomicU64,
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

    pub fn add_recycle_time(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.recycle_micros.fetch_add(micros, Ordering::Relaxed);
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
            recycle_time_total: Duration::from_micros(load(&self.recycle_micros)),
            objects_created_total: load(&self.objects_created),
            objects_since_init: load(&self.objects_since_init),
            destroy_failures_total: load(&self.destroy_failures),
            members: Vec::new(),
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

    #[test]
    fn members_add_up_and_stay_apart() {
        let (one, two) = (Metrics::default(), Metrics::default());
        one.record::<(), HsmError>(&Ok(()));
        two.record::<(), _>(&Err(HsmError::Unavailable));
        two.record::<(), HsmError>(&Ok(()));
        let total = PoolMetrics::combine(vec![
            ("a".to_owned(), one.snapshot(true, 2, 0)),
            ("b".to_owned(), two.snapshot(false, 3, 1)),
        ]);
        assert!(total.ready);
        assert_eq!((total.pool_size, total.queued, total.operations_total), (5, 1, 3));
        assert!(total.errors_total.contains(&("unavailable", 1)));
        let figures: Vec<_> = total
            .members
            .iter()
            .map(|m| (m.token_label.as_str(), m.ready, m.operations_total, m.errors_total))
            .collect();
        assert_eq!(figures, [("a", true, 1, 0), ("b", false, 2, 1)]);
    }
}
