//! Start-up and shutdown: opens the order book, reads the keys and trust, queues reversals for
//! orders a previous run left submitted, binds the phone, POS and admin listeners, starts the
//! reversal task, and on shutdown stops accepting and lets payments in flight finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::bank::reversals::{self, ReversalLimits};
use crate::bank::{BankLink, SetupError};
use crate::config::MerchantConfig;
use crate::front::{admin, phone, pos, routes};
use crate::ops::metrics::{Metrics, MetricsError};
use crate::orders::{BookError, OrderBook};
use crate::payment::{PaymentError, Payments};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The order book could not be opened.
    #[error("orders.path: {0}")]
    Book(#[from] BookError),
    /// Keys, certificates or the TLS client.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// Metrics registry.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source} (is another process using it? change the listen key)")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Orders left submitted could not be queued for reversal.
    #[error("recovering orders left submitted: {0}")]
    Recover(#[from] PaymentError),
}

/// Opens the order book and the link to the bank.
pub fn payments(config: &MerchantConfig) -> Result<Arc<Payments>, StartError> {
    let book = OrderBook::open(&config.orders.path, Duration::from_millis(config.orders.busy_timeout_ms))?;
    let bank = BankLink::new(config)?;
    Ok(Arc::new(Payments {
        book,
        bank,
        metrics: Arc::new(Metrics::new()?),
        merchant_id: config.merchant.merchant_id,
        acquirer_iin: config.merchant.acquirer_iin,
        merchant_account: config.merchant.merchant_account.clone(),
    }))
}

/// A running server.
pub struct RunningServer {
    /// The phone listener's address.
    pub phone_address: SocketAddr,
    /// The POS listener's address.
    pub pos_address: SocketAddr,
    /// The admin listener's address.
    pub admin_address: SocketAddr,
    /// The payment flow (for tests and tools).
    pub payments: Arc<Payments>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer").field("phone_address", &self.phone_address).finish_non_exhaustive()
    }
}

async fn bind(address: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address).await.map_err(|source| StartError::Bind { address, source })
}

fn local(listener: &TcpListener, address: SocketAddr) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind { address, source })
}

/// Starts everything.
pub async fn start(config: &MerchantConfig) -> Result<RunningServer, StartError> {
    let payments = payments(config)?;
    let recovered = payments.recover_submitted().await?;
    if recovered > 0 {
        tracing::warn!(orders = recovered, "orders left submitted by the last run now wait for reversal");
    }
    let phone_listener = bind(config.phone.listen).await?;
    let pos_listener = bind(config.pos.listen).await?;
    let admin_listener = bind(config.admin.listen).await?;
    let phone_address = local(&phone_listener, config.phone.listen)?;
    let pos_address = local(&pos_listener, config.pos.listen)?;
    let admin_address = local(&admin_listener, config.admin.listen)?;

    let phone_state = Arc::new(phone::PhoneState {
        payments: Arc::clone(&payments),
        in_flight: Arc::new(Semaphore::new(config.phone.in_flight_max)),
    });
    let pos_state =
        Arc::new(pos::PosState { book: payments.book.clone(), export_rows_max: config.pos.export_rows_max });
    let admin_state =
        Arc::new(admin::AdminState { book: payments.book.clone(), metrics: Arc::clone(&payments.metrics) });
    let (shutdown, stop) = watch::channel(false);
    let limits = ReversalLimits {
        interval: Duration::from_millis(config.reversals.interval_ms),
        backoff_max: Duration::from_millis(config.reversals.backoff_max_ms),
        batch_max: config.reversals.batch_max,
    };
    let tasks = vec![
        tokio::spawn(serve(
            phone_listener,
            routes::phone_router(phone_state, config.phone.body_bytes_max),
            stop.clone(),
        )),
        tokio::spawn(serve(pos_listener, routes::pos_router(pos_state, config.pos.body_bytes_max), stop.clone())),
        tokio::spawn(serve(admin_listener, routes::admin_router(admin_state), stop.clone())),
        tokio::spawn(reversals::run(Arc::clone(&payments), limits, stop)),
    ];
    tracing::info!(%phone_address, %pos_address, %admin_address, merchant_id = %payments.merchant_id, "merchant serving");
    Ok(RunningServer {
        phone_address,
        pos_address,
        admin_address,
        payments,
        shutdown,
        tasks,
        grace: Duration::from_millis(config.phone.shutdown_grace_ms),
    })
}

async fn serve(listener: TcpListener, router: axum::Router, mut stop: watch::Receiver<bool>) {
    let served = axum::serve(listener, router).with_graceful_shutdown(async move {
        let _ = stop.wait_for(|stop| *stop).await;
    });
    if let Err(error) = served.await {
        tracing::error!(error = %error, "listener failed");
    }
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish (up to `phone.shutdown_grace_ms`), stops
    /// the reversal task.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let all = async {
            for task in self.tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(self.grace, all).await.is_err() {
            tracing::warn!("grace period over with requests still in flight");
        }
        tracing::info!("merchant stopped");
    }
}
