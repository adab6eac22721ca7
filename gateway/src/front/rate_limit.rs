//! The per-merchant rate limit: a token bucket keyed by the merchant id of the TLS
//! certificate (`rate_limit.rate_per_second` tokens a second, at most `rate_limit.burst` saved),
//! checked before the body is read further. At most `rate_limit.merchants_max` buckets are kept.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use mps_protocol::MerchantId;

use crate::config::RateLimitConfig;

/// Token buckets of every merchant seen recently.
pub struct RateLimiter {
    rate_per_second: f64,
    burst: f64,
    merchants_max: usize,
    buckets: Mutex<HashMap<MerchantId, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, rate_per_second: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate_per_second).min(burst);
        self.updated = now;
    }
}

impl RateLimiter {
    /// Buckets per the configuration.
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            rate_per_second: f64::from(config.rate_per_second),
            burst: f64::from(config.burst),
            merchants_max: config.merchants_max,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `merchant`; when there is none, how long until there is one.
    pub fn check(&self, merchant: &MerchantId, now: Instant) -> Result<(), Duration> {
        // A panic elsewhere while holding the lock leaves the buckets usable: they are counters.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(merchant) && buckets.len() >= self.merchants_max {
            self.forget_idle(&mut buckets, now);
            if buckets.len() >= self.merchants_max {
                tracing::warn!(merchants_max = self.merchants_max, "rate limiter full; refusing a new merchant");
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry(*merchant).or_insert(Bucket { tokens: self.burst, updated: now });
        bucket.refill(now, self.rate_per_second, self.burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate_per_second))
        }
    }

    /// Drops the buckets that are full again: forgetting them changes nothing.
    fn forget_idle(&self, buckets: &mut HashMap<MerchantId, Bucket>, now: Instant) {
        buckets.retain(|_, bucket| {
            bucket.refill(now, self.rate_per_second, self.burst);
            bucket.tokens < self.burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate_per_second: u32, burst: u32, merchants_max: usize) -> RateLimiter {
        RateLimiter::new(&RateLimitConfig { rate_per_second, burst, merchants_max })
    }

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = limiter(10, 3, 10);
        let shop = MerchantId::new("SHOP-1").unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(&shop, start).is_ok());
        }
        let wait = limiter.check(&shop, start).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        assert!(limiter.check(&shop, start + Duration::from_millis(100)).is_ok());
        assert!(limiter.check(&shop, start + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn merchants_have_their_own_buckets_and_the_table_is_bounded() {
        let limiter = limiter(1, 1, 2);
        let now = Instant::now();
        let [a, b, c] = ["A", "B", "C"].map(|id| MerchantId::new(id).unwrap());
        assert!(limiter.check(&a, now).is_ok());
        assert!(limiter.check(&a, now).is_err());
        assert!(limiter.check(&b, now).is_ok());
        assert!(limiter.check(&c, now).is_err(), "a third merchant while two buckets are in use");
        assert!(limiter.check(&c, now + Duration::from_secs(2)).is_ok(), "idle buckets are forgotten");
    }
}
