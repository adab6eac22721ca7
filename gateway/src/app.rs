//! Start-up and shutdown of the gateway: builds the routing table and its connection pools from
//! the configuration, probes every instance once, then serves merchants and the admin listener
//! until SIGTERM or Ctrl-C, and drains.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{Semaphore, watch};

use crate::config::GatewayConfig;
use crate::front::rate_limit::RateLimiter;
use crate::front::{admin, routes, server, tls};
use crate::ops::metrics::{Metrics, MetricsError};
use crate::route::health;
use crate::route::table::RoutingTable;
use crate::upstream::client::{ClientError, UpstreamTls};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// Merchant-facing TLS.
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    /// The client towards the issuers.
    #[error(transparent)]
    Upstream(#[from] ClientError),
    /// Sockets.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Metrics registry.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// A gateway that is running.
pub struct RunningGateway {
    /// The merchant listener's address (useful when configured with port 0).
    pub address: SocketAddr,
    /// The admin listener's address.
    pub admin_address: SocketAddr,
    /// The metrics it records.
    pub metrics: Arc<Metrics>,
    /// The routing table with its instances' health.
    pub table: Arc<RoutingTable>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningGateway {
    /// Stops accepting, lets requests in flight finish (up to the grace period), and waits.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Waits for the gateway to end.
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A sender that stops the gateway when `true` is sent.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Binds both listeners, probes the instances once, and starts serving.
pub async fn start(config: &GatewayConfig) -> Result<RunningGateway, AppError> {
    let metrics = Arc::new(Metrics::new()?);
    if !config.admin.listen.ip().is_loopback() {
        tracing::warn!(admin = %config.admin.listen, "the admin listener is plain HTTP and not on loopback");
    }
    let server_tls = tls::server_config(&config.server)?;
    let upstream_tls = UpstreamTls::load(&config.upstream)?;
    let table = Arc::new(RoutingTable::build(config, &upstream_tls, &metrics)?);
    let prober = upstream_tls.prober()?;
    let listener = server::bind(config.server.listen).await?;
    let admin_listener = server::bind(config.admin.listen).await?;
    let address = listener.local_addr()?;
    let admin_address = admin_listener.local_addr()?;
    health::probe_all(&table, &prober, config.upstream.health_timeout()).await;
    let (stop, shutdown) = watch::channel(false);
    let probes = health::spawn_probes(
        &table,
        &prober,
        config.upstream.health_interval(),
        config.upstream.health_timeout(),
        &shutdown,
    );
    let state = Arc::new(routes::AppState {
        table: Arc::clone(&table),
        metrics: Arc::clone(&metrics),
        limiter: RateLimiter::new(&config.rate_limit),
        in_flight: Semaphore::new(config.server.in_flight_max),
        answer_bytes_max: config.upstream.answer_bytes_max,
    });
    let router = routes::router(state, config.server.body_bytes_max);
    let admin_router =
        admin::router(Arc::new(admin::AdminState { table: Arc::clone(&table), metrics: Arc::clone(&metrics) }));
    let limits = config.server.listener_limits();
    let listener_stats = Arc::clone(&metrics.listener);
    let admin_shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        let admin = tokio::spawn(server::serve_admin(admin_listener, admin_router, admin_shutdown));
        let admission: Arc<dyn mps_pki::listener::Admission> = Arc::new(server::Merchants(router));
        let tls = mps_pki::listener::fixed(server_tls);
        mps_pki::listener::serve(listener, tls, admission, limits, listener_stats, shutdown).await;
        let _ = admin.await;
        for probe in probes {
            let _ = probe.await;
        }
        tracing::info!("gateway stopped");
    });
    tracing::info!(%address, %admin_address, issuers = config.issuers.len(), "gateway serving");
    Ok(RunningGateway { address, admin_address, metrics, table, stop, task })
}

/// Starts, serves until SIGTERM or Ctrl-C, then drains.
pub async fn serve(config: GatewayConfig) -> Result<(), AppError> {
    let running = start(&config).await?;
    let stop = running.stopper();
    tokio::spawn(async move {
        mps_pki::listener::shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop.send(true);
    });
    running.wait().await;
    Ok(())
}
