//! The routing table: issuer IIN to the issuer's authorization server instances, each with its
//! own connection pool and health, and the choice of the instance for the next attempt (the
//! first healthy one not yet tried, never a dead one, in configuration order or, with
//! `balance = "round-robin"`, starting at the next instance in turn).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mps_protocol::Iin;
use reqwest::Url;

use super::health::Health;
use crate::config::{Balance, GatewayConfig};
use crate::ops::metrics::Metrics;
use crate::upstream::client::{ClientError, UpstreamTls};

/// The routing table, built once from the configuration.
pub struct RoutingTable {
    issuers: BTreeMap<Iin, Arc<Issuer>>,
}

/// One issuing bank.
pub struct Issuer {
    /// Its IIN.
    pub iin: Iin,
    /// Its instances, in order of preference.
    pub instances: Vec<Arc<Instance>>,
    /// Time one attempt may take.
    pub request_timeout: Duration,
    /// Attempts of one request, the first included.
    pub attempts_max: u32,
    /// Time all attempts together may take.
    pub deadline: Duration,
    /// How requests are spread over the healthy instances.
    pub balance: Balance,
    /// The next request's first instance, under round robin.
    turn: AtomicUsize,
}

/// One authorization server instance of an issuer.
pub struct Instance {
    /// The issuer's IIN (for logs and metrics).
    pub iin: Iin,
    /// Base URL of its mTLS listener.
    pub url: Url,
    /// Its readiness URL.
    pub health_url: Url,
    /// Whether requests may go to it.
    pub health: Health,
    /// Its connection pool (keep-alive, HTTP/2).
    pub client: reqwest::Client,
}

impl RoutingTable {
    /// Builds every issuer and a connection pool per instance. Instances start healthy until a
    /// probe or a failed attempt says otherwise.
    pub fn build(config: &GatewayConfig, tls: &UpstreamTls, metrics: &Metrics) -> Result<Self, ClientError> {
        let mut issuers = BTreeMap::new();
        for (iin, issuer) in &config.issuers {
            let mut instances = Vec::with_capacity(issuer.instances.len());
            for instance in &issuer.instances {
                let gauge = metrics.instance_healthy.with_label_values(&[iin.as_str(), instance.url.as_str()]);
                instances.push(Arc::new(Instance {
                    iin: *iin,
                    url: instance.url.clone(),
                    health_url: instance.health_url.clone(),
                    health: Health::new(gauge),
                    client: tls.instance_client(&config.upstream)?,
                }));
            }
            let built = Issuer {
                iin: *iin,
                instances,
                request_timeout: issuer.request_timeout(),
                attempts_max: issuer.attempts_max,
                deadline: issuer.deadline(),
                balance: issuer.balance,
                turn: AtomicUsize::new(0),
            };
            issuers.insert(*iin, Arc::new(built));
        }
        Ok(Self { issuers })
    }

    /// The issuer of `iin`, if it is routed.
    pub fn issuer(&self, iin: &Iin) -> Option<&Arc<Issuer>> {
        self.issuers.get(iin)
    }

    /// Every issuer, by IIN.
    pub fn issuers(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.issuers.values()
    }

    /// Every instance of every issuer.
    pub fn instances(&self) -> impl Iterator<Item = &Arc<Instance>> {
        self.issuers.values().flat_map(|issuer| issuer.instances.iter())
    }

    /// Ready when every issuer has at least one healthy instance.
    pub fn is_ready(&self) -> bool {
        self.issuers.values().all(|issuer| issuer.has_healthy_instance())
    }
}

impl Issuer {
    /// Whether any instance may take requests.
    pub fn has_healthy_instance(&self) -> bool {
        self.instances.iter().any(|instance| instance.health.is_healthy())
    }

    /// Where a new request starts looking: instance 0 (`first`), or the next one in turn
    /// (`round-robin`). Called once per request; [`Issuer::pick`] takes it for every attempt.
    pub fn start(&self) -> usize {
        match self.balance {
            Balance::First => 0,
            Balance::RoundRobin => self.turn.fetch_add(1, Ordering::Relaxed) % self.instances.len().max(1),
        }
    }

    /// The instance for the next attempt: from `start` on (wrapping around), the first healthy
    /// one not `tried` yet, else the first healthy one again; None when every instance is down.
    pub fn pick(&self, start: usize, tried: &[bool]) -> Option<usize> {
        let healthy: Vec<bool> = self.instances.iter().map(|instance| instance.health.is_healthy()).collect();
        choose(&healthy, start, tried)
    }
}

/// The choice of [`Issuer::pick`] over plain flags: in order from `start` (wrapping around),
/// healthy only, untried first.
fn choose(healthy: &[bool], start: usize, tried: &[bool]) -> Option<usize> {
    let is_tried = |index: usize| tried.get(index).copied().unwrap_or(false);
    let count = healthy.len();
    let mut healthy_indexes =
        (0..count).map(|offset| (start + offset) % count).filter(|index| healthy.get(*index).copied().unwrap_or(false));
    let first_healthy = healthy_indexes.next()?;
    if !is_tried(first_healthy) {
        return Some(first_healthy);
    }
    Some(healthy_indexes.find(|index| !is_tried(*index)).unwrap_or(first_healthy))
}

impl Instance {
    /// Takes the instance out of rotation until a probe succeeds.
    pub fn mark_down(&self, reason: &str) {
        if self.health.set(false) {
            tracing::warn!(issuer = %self.iin, instance = %self.url, reason, "issuer instance marked down");
        }
    }

    /// Puts the instance back in rotation.
    pub fn mark_up(&self) {
        if self.health.set(true) {
            tracing::info!(issuer = %self.iin, instance = %self.url, "issuer instance healthy");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(instances: usize, balance: Balance) -> Issuer {
        // reqwest's client needs the process's crypto provider (the gateway installs it at start).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let iin = Iin::new("400012").unwrap();
        let instances = (0..instances)
            .map(|n| {
                Arc::new(Instance {
                    iin,
                    url: Url::parse(&format!("https://127.0.0.1:{}", 8443 + n)).unwrap(),
                    health_url: Url::parse(&format!("http://127.0.0.1:{}/readyz", 9464 + n)).unwrap(),
                    health: Health::new(prometheus::IntGauge::new("healthy", "test").unwrap()),
                    client: reqwest::Client::new(),
                })
            })
            .collect();
        Issuer {
            iin,
            instances,
            request_timeout: Duration::from_secs(1),
            attempts_max: 3,
            deadline: Duration::from_secs(3),
            balance,
            turn: AtomicUsize::new(0),
        }
    }

    #[test]
    fn requests_start_at_the_first_instance_or_at_each_in_turn() {
        let first = issuer(3, Balance::First);
        assert_eq!((0..4).map(|_| first.start()).collect::<Vec<_>>(), vec![0, 0, 0, 0]);
        let turns = issuer(3, Balance::RoundRobin);
        let starts: Vec<usize> = (0..7).map(|_| turns.start()).collect();
        assert_eq!(starts, vec![0, 1, 2, 0, 1, 2, 0]);
        // Each request's first pick follows its start, and skips a down instance.
        turns.instances[1].mark_down("test");
        assert_eq!(turns.pick(1, &[false; 3]), Some(2));
        assert_eq!(turns.pick(0, &[false; 3]), Some(0));
    }

    #[test]
    fn the_first_healthy_untried_instance_is_chosen() {
        assert_eq!(choose(&[true, true, true], 0, &[false, false, false]), Some(0));
        assert_eq!(choose(&[false, true, true], 0, &[false, false, false]), Some(1));
        assert_eq!(choose(&[true, true, true], 0, &[true, false, false]), Some(1));
        assert_eq!(choose(&[true, false, true], 0, &[true, false, false]), Some(2));
    }

    #[test]
    fn when_every_healthy_instance_was_tried_the_first_healthy_one_is_tried_again() {
        assert_eq!(choose(&[false, true, true], 0, &[false, true, true]), Some(1));
    }

    #[test]
    fn a_down_instance_is_never_chosen() {
        assert_eq!(choose(&[false, false], 0, &[false, false]), None);
        assert_eq!(choose(&[], 0, &[]), None);
        assert_eq!(choose(&[false, true], 0, &[false, true]), Some(1));
        assert_eq!(choose(&[false, false], 1, &[false, false]), None);
    }

    #[test]
    fn round_robin_starts_at_its_turn_and_fails_over_in_the_same_order() {
        let up = [true, true, true];
        assert_eq!(choose(&up, 1, &[false, false, false]), Some(1));
        assert_eq!(choose(&up, 2, &[false, false, false]), Some(2));
        // After the start failed, the next in turn, wrapping around.
        assert_eq!(choose(&up, 2, &[false, false, true]), Some(0));
        assert_eq!(choose(&up, 2, &[true, false, true]), Some(1));
        // A down instance is skipped from any start; every one tried: the start's first healthy.
        assert_eq!(choose(&[true, false, true], 1, &[false, false, false]), Some(2));
        assert_eq!(choose(&[true, false, true], 1, &[true, false, true]), Some(2));
        // Any start wraps: a turn counter past the end never indexes out of range.
        assert_eq!(choose(&up, 7, &[false, false, false]), Some(1));
    }
}
