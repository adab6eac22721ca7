//! Merchants' mTLS connections, served by the shared hardened listener (`mps_pki::listener`:
//! handshake budget, idle and body timeouts, per-source limits, graceful shutdown), each
//! request carrying the connection's [`MerchantIdentity`]; and the admin listener.

use std::net::SocketAddr;

use axum::Router;
use mps_pki::listener::Admission;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

use super::identity::MerchantIdentity;

/// Admits a merchant's connection: the merchant its certificate names goes into every
/// request of the connection (an [`axum::Extension`]); a certificate that names none closes it.
pub struct Merchants(pub Router);

impl Admission for Merchants {
    fn admit(&self, stream: &TlsStream<TcpStream>, _peer: SocketAddr) -> Result<Router, String> {
        let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
        let identity = MerchantIdentity::from_chain(chain).map_err(|error| error.to_string())?;
        Ok(self.0.clone().layer(axum::Extension(identity)))
    }
}

/// Serves the admin router over plain HTTP until `shutdown` turns true.
pub async fn serve_admin(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) {
    let served = axum::serve(listener, router).with_graceful_shutdown(async move {
        stopped(&mut shutdown).await;
    });
    if let Err(error) = served.await {
        tracing::error!(%error, "admin listener failed");
    }
}

/// Resolves once the shutdown flag is true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Binds a TCP listener, with an error that names the address.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(address).await.map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("cannot listen on {address}: {error} (is another process on it? change the listen key)"),
        )
    })
}
