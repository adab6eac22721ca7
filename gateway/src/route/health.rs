//! Instance health: a flag per instance, and the background probes that set it. Every
//! `upstream.health_interval_ms` each instance's `health_url` is fetched; 200 within
//! `upstream.health_timeout_ms` means healthy, anything else down. The forwarder marks an
//! instance down at once when an attempt cannot connect or times out; only a probe brings it back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::table::{Instance, RoutingTable};

/// Whether an instance takes requests, mirrored in the `instance_healthy` gauge.
pub struct Health {
    healthy: AtomicBool,
    gauge: IntGauge,
}

impl Health {
    /// A healthy instance (until a probe or an attempt says otherwise).
    pub fn new(gauge: IntGauge) -> Self {
        gauge.set(1);
        Self { healthy: AtomicBool::new(true), gauge }
    }

    /// Whether requests may go to the instance.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Sets the flag; true when it changed.
    pub fn set(&self, healthy: bool) -> bool {
        self.gauge.set(i64::from(healthy));
        self.healthy.swap(healthy, Ordering::AcqRel) != healthy
    }
}

/// Probes every instance once, all at once (at start-up, before merchants are accepted).
pub async fn probe_all(table: &RoutingTable, prober: &reqwest::Client, timeout: Duration) {
    let mut probes = tokio::task::JoinSet::new();
    for instance in table.instances() {
        let instance = Arc::clone(instance);
        let prober = prober.clone();
        probes.spawn(async move { probe(&prober, &instance, timeout).await });
    }
    while probes.join_next().await.is_some() {}
}

/// Starts one probe loop per instance; each ends when `shutdown` turns true.
pub fn spawn_probes(
    table: &RoutingTable,
    prober: &reqwest::Client,
    interval: Duration,
    timeout: Duration,
    shutdown: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for instance in table.instances() {
        let instance = Arc::clone(instance);
        let prober = prober.clone();
        let mut shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            // The first tick is immediate; start-up has just probed.
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = ticks.tick() => probe(&prober, &instance, timeout).await,
                    _ = crate::front::server::stopped(&mut shutdown) => return,
                }
            }
        }));
    }
    tasks
}

/// One probe: 200 within `timeout` marks the instance up, anything else down.
async fn probe(prober: &reqwest::Client, instance: &Instance, timeout: Duration) {
    match prober.get(instance.health_url.clone()).timeout(timeout).send().await {
        Ok(response) if response.status() == reqwest::StatusCode::OK => instance.mark_up(),
        Ok(response) => instance.mark_down(&format!("health probe answered {}", response.status().as_u16())),
        Err(error) if error.is_timeout() => instance.mark_down("health probe timed out"),
        Err(_) => instance.mark_down("health probe could not connect"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_and_the_gauge_move_together_and_changes_are_reported() {
        let gauge = IntGauge::new("healthy", "test").unwrap();
        let health = Health::new(gauge.clone());
        assert!(health.is_healthy());
        assert_eq!(gauge.get(), 1);
        assert!(health.set(false), "a change");
        assert!(!health.set(false), "no change");
        assert!(!health.is_healthy());
        assert_eq!(gauge.get(), 0);
        assert!(health.set(true));
        assert_eq!(gauge.get(), 1);
    }
}
