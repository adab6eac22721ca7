//! Packets whose MAC does not verify, counted per SIM and sending merchant. A packet under a
//! SIM's id whose MAC fails moved nothing and held no lock (step 7 runs before the SIM's lock
//! is taken), so a flood of them cannot queue in front of the SIM's owner; what it still costs
//! is HSM time. Past `limit` failures within `window` for one SIM from one merchant, that
//! merchant's further packets for the SIM are refused at once (429, before the HSM) until the
//! window ends. The SIM is never blocked by this, and payments for it through other merchants
//! go on: the merchant's signature (step 3) names who sent the garbage.
//!
//! Memory is bounded: at most `capacity` pairs are tracked (moka's size bound evicts the
//! least used), each for at most one window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mps_protocol::{MerchantId, SimId};

/// The limiter. Cheap to share.
pub struct MacFailures {
    counts: moka::sync::Cache<(SimId, MerchantId), Arc<AtomicU32>>,
    limit: u32,
}

impl MacFailures {
    /// Pairs tracked at most.
    pub const CAPACITY: u64 = 100_000;

    /// At most `limit` failures per SIM and merchant within `window`; a limit of 0 turns the
    /// limiter off.
    pub fn new(limit: u32, window: Duration) -> Self {
        let counts = moka::sync::Cache::builder().max_capacity(Self::CAPACITY).time_to_live(window).build();
        Self { counts, limit }
    }

    /// Whether this merchant's packets for this SIM are refused now.
    pub fn over_limit(&self, sim: &SimId, merchant: &MerchantId) -> bool {
        self.limit > 0
            && self
                .counts
                .get(&(sim.clone(), *merchant))
                .is_some_and(|count| count.load(Ordering::Relaxed) >= self.limit)
    }

    /// Counts one failure.
    pub fn record(&self, sim: &SimId, merchant: &MerchantId) {
        if self.limit > 0 {
            let count = self.counts.get_with((sim.clone(), *merchant), || Arc::new(AtomicU32::new(0)));
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_per_sim_and_merchant_and_ends_with_the_window() {
        let limiter = MacFailures::new(3, Duration::from_millis(300));
        let sim = SimId::new("8949012300000000001").unwrap();
        let other_sim = SimId::new("8949012300000000002").unwrap();
        let shop = MerchantId::new("SHOP-1").unwrap();
        let other_shop = MerchantId::new("SHOP-2").unwrap();
        for _ in 0..3 {
            assert!(!limiter.over_limit(&sim, &shop));
            limiter.record(&sim, &shop);
        }
        assert!(limiter.over_limit(&sim, &shop));
        assert!(!limiter.over_limit(&sim, &other_shop), "another merchant is not limited");
        assert!(!limiter.over_limit(&other_sim, &shop), "another SIM is not limited");
        std::thread::sleep(Duration::from_millis(400));
        assert!(!limiter.over_limit(&sim, &shop), "the window ended");
        let off = MacFailures::new(0, Duration::from_secs(1));
        for _ in 0..10 {
            off.record(&sim, &shop);
        }
        assert!(!off.over_limit(&sim, &shop));
    }
}
