//! The admin listener, and binding. The gateway-facing mTLS listener, with its bounds against
//! hostile peers, is `mps_pki::listener`, shared with the gateway.

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serves the admin router over plain HTTP until `shutdown` turns true.
pub async fn serve_admin(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) {
    let served = axum::serve(listener, router).with_graceful_shutdown(async move {
        stopped(&mut shutdown).await;
    });
    if let Err(e) = served.await {
        tracing::error!(error = %e, "admin listener failed");
    }
}

/// Resolves once the shutdown flag is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Binds a TCP listener, with an error that names the address.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(address)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {address}: {e}")))
}
