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
        Self::with_capacity(limit, window, Self::CAPACITY)
    }

    fn with_capacity(limit: u32, window: Duration, capacity: u64) -> Self {
        let counts = moka::sync::Cache::builder().max_capacity(capacity).time_to_live(window).build();
        Self { counts, limit }
    }

    /// Pairs tracked now (after the cache's pending evictions).
    pub fn tracked(&self) -> u64 {
        self.counts.run_pending_tasks();
        self.counts.entry_count()
    }

    /// Starts one MAC check of this merchant's packet for this SIM, or None when the merchant's
    /// packets for the SIM are refused now. The check counts against the limit from now until
    /// it passes (dropped) or fails ([`MacCheck::failed`]): checks in flight at once cannot
    /// all pass the test before any of them has failed, so no more than `limit` failures are
    /// ever checked in the HSM per window, however many packets arrive together.
    pub fn begin(&self, sim: &SimId, merchant: &MerchantId) -> Option<MacCheck> {
        if self.limit == 0 {
            return Some(MacCheck { count: None });
        }
        let count = self.counts.get_with((sim.clone(), *merchant), || Arc::new(AtomicU32::new(0)));
        let limit = self.limit;
        count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < limit).then_some(n + 1)).ok()?;
        Some(MacCheck { count: Some(count) })
    }
}

/// One MAC check counted against its SIM and merchant's limit: a check that passes gives its
/// place back when dropped; one that fails keeps it for the window.
#[must_use = "a MAC check gives its place back when dropped"]
pub struct MacCheck {
    /// None when the limiter is off.
    count: Option<Arc<AtomicU32>>,
}

impl MacCheck {
    /// The MAC failed: counted for the rest of the window (dropping the check then gives
    /// nothing back).
    pub fn failed(&mut self) {
        self.count = None;
    }
}

impl Drop for MacCheck {
    fn drop(&mut self) {
        if let Some(count) = self.count.take() {
            count.fetch_sub(1, Ordering::Relaxed);
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
            limiter.begin(&sim, &shop).unwrap().failed();
        }
        assert!(limiter.begin(&sim, &shop).is_none());
        assert!(limiter.begin(&sim, &other_shop).is_some(), "another merchant is not limited");
        assert!(limiter.begin(&other_sim, &shop).is_some(), "another SIM is not limited");
        std::thread::sleep(Duration::from_millis(400));
        assert!(limiter.begin(&sim, &shop).is_some(), "the window ended");
        let off = MacFailures::new(0, Duration::from_secs(1));
        for _ in 0..10 {
            off.begin(&sim, &shop).unwrap().failed();
        }
        assert!(off.begin(&sim, &shop).is_some());
    }

    #[test]
    fn memory_is_bounded_by_the_capacity_and_the_window() {
        let limiter = MacFailures::with_capacity(3, Duration::from_millis(300), 1_000);
        let shop = MerchantId::new("SHOP-1").unwrap();
        // Ten times more SIMs than places, each with a failure and a check that passes.
        for n in 0..10_000u64 {
            let sim = SimId::new(&format!("89490123{n:011}")).unwrap();
            limiter.begin(&sim, &shop).unwrap().failed();
            drop(limiter.begin(&sim, &shop).unwrap());
        }
        let tracked = limiter.tracked();
        assert!(tracked <= 1_000, "{tracked} pairs tracked, capacity 1000");
        assert!(tracked > 0);
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(limiter.tracked(), 0, "every pair ends with its window");
    }

    #[test]
    fn checks_in_flight_count_and_a_passed_check_gives_its_place_back() {
        let limiter = MacFailures::new(2, Duration::from_secs(60));
        let sim = SimId::new("8949012300000000001").unwrap();
        let shop = MerchantId::new("SHOP-1").unwrap();
        // Two checks in flight at once take both places: a third is refused before the HSM.
        let first = limiter.begin(&sim, &shop).unwrap();
        let mut second = limiter.begin(&sim, &shop).unwrap();
        assert!(limiter.begin(&sim, &shop).is_none(), "a third check in flight passed the limit");
        // One passes (its place comes back), one fails (its place is kept).
        drop(first);
        second.failed();
        limiter.begin(&sim, &shop).unwrap().failed();
        assert!(limiter.begin(&sim, &shop).is_none(), "two failures fill a limit of two");
    }
}
