//! The operator's console's "most recent decisions": a ring of the last answers of the
//! gateway-facing listener, bounded by `admin.recent_decisions_max`. `front/routes` records one
//! summary as each answer leaves; the admin listener serves them as JSON
//! (`GET /console/decisions`). Only what a screen may show enters it: the account masked, never
//! a packet, password, key or signature.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::decision::summary::About;

/// What the request asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `POST /v1/authorizations`.
    Authorization,
    /// `POST /v1/reversals`.
    Reversal,
}

/// One answered request, as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionSummary {
    /// When the answer left, RFC 3339 UTC.
    pub at: String,
    /// Authorization or reversal.
    pub operation: Operation,
    /// HTTP status of the answer.
    pub status: u16,
    /// ISO 8583 code of the answer, when it carried one.
    pub response_code: Option<&'static str>,
    /// The merchant, when the request was read that far.
    pub merchant_id: Option<String>,
    /// Amount with its currency ("12.50 EUR").
    pub amount: Option<String>,
    /// The SIM's ICCID.
    pub sim_id: Option<String>,
    /// The account, first 6 and last 4 digits.
    pub account: Option<String>,
    /// From the request's arrival to its answer, milliseconds.
    pub latency_ms: f64,
}

impl DecisionSummary {
    /// The summary of one answer leaving now.
    pub fn new(
        operation: Operation,
        status: u16,
        response_code: Option<&'static str>,
        about: &About,
        latency: Duration,
    ) -> Self {
        Self {
            at: OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
            operation,
            status,
            response_code,
            merchant_id: about.merchant_id.as_ref().map(|merchant| merchant.as_str().to_owned()),
            amount: about.amount.as_ref().map(|(amount, currency)| amount.display_in(*currency)),
            sim_id: about.sim_id.as_ref().map(|sim| sim.as_str().to_owned()),
            account: about.account_masked.clone(),
            latency_ms: latency.as_secs_f64() * 1000.0,
        }
    }
}

/// The last `capacity` summaries, newest last.
#[derive(Debug)]
pub struct RecentDecisions {
    capacity: usize,
    ring: Mutex<VecDeque<DecisionSummary>>,
}

impl RecentDecisions {
    /// An empty ring that keeps at most `capacity` summaries (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { capacity, ring: Mutex::new(VecDeque::with_capacity(capacity)) }
    }

    /// Records one answer, dropping the oldest when full. Quick: no I/O under the lock.
    pub fn record(&self, summary: DecisionSummary) {
        // A poisoned lock only means a panic elsewhere while pushing; the ring stays usable.
        let mut ring = self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(summary);
        debug_assert!(ring.len() <= self.capacity);
    }

    /// The summaries kept, newest first.
    pub fn newest_first(&self) -> Vec<DecisionSummary> {
        let ring = self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        ring.iter().rev().cloned().collect()
    }

    /// How many it keeps at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use mps_protocol::{Account, Amount, Currency, MerchantId, SimId};

    use super::*;

    fn about(index: u64, account: &Account) -> About {
        About::order(MerchantId::new("SHOP-1").unwrap(), Amount::from_minor(1000 + index), Currency::EUR)
            .with_sim(&SimId::new("8949012300000000301").unwrap())
            .with_account(account)
    }

    #[test]
    fn the_ring_keeps_only_the_newest_and_never_a_full_account_number() {
        let recent = RecentDecisions::new(50);
        let account = Account::new("4000123456789010").unwrap();
        for index in 0..500 {
            let summary = DecisionSummary::new(
                Operation::Authorization,
                200,
                Some("00"),
                &about(index, &account),
                Duration::from_micros(1500),
            );
            recent.record(summary);
        }
        let kept = recent.newest_first();
        assert_eq!(kept.len(), 50);
        assert_eq!(kept[0].amount.as_deref(), Some("14.99 EUR"), "newest first");
        assert_eq!(kept[49].amount.as_deref(), Some("14.50 EUR"));
        assert_eq!(kept[0].account.as_deref(), Some("400012******9010"));
        assert!((kept[0].latency_ms - 1.5).abs() < 1e-9);
        let json = serde_json::to_string(&kept).unwrap();
        assert!(!json.contains("4000123456789010"), "a full account number reached the ring: {json}");
    }

    #[test]
    fn a_ring_keeps_at_least_one() {
        let recent = RecentDecisions::new(0);
        let summary = DecisionSummary::new(Operation::Reversal, 503, None, &About::default(), Duration::ZERO);
        recent.record(summary.clone());
        recent.record(summary);
        assert_eq!((recent.capacity(), recent.newest_first().len()), (1, 1));
    }
}
