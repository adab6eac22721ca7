//! The accept loops: merchants' mTLS connections served by hyper (HTTP/1.1 keep-alive and
//! HTTP/2) with a handshake timeout, a header read timeout and a bound on connections, each
//! request carrying the connection's [`MerchantIdentity`]; the admin listener; and graceful
//! shutdown that stops accepting and lets requests in flight finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::identity::MerchantIdentity;

/// Limits of the merchant listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// TLS handshake timeout.
    pub handshake_timeout: Duration,
    /// HTTP/1 header read timeout.
    pub header_read_timeout: Duration,
    /// Connections at once.
    pub connections_max: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_streams_max: u32,
    /// Grace period at shutdown.
    pub shutdown_grace: Duration,
}

/// Serves `router` over mTLS on `listener` until `shutdown` turns true; then stops accepting
/// and waits (up to the grace period) for open connections to finish their requests.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: ListenerLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let connections = Arc::new(Semaphore::new(limits.connections_max));
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            _ = stopped(&mut shutdown) => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let connection = Connection { acceptor: acceptor.clone(), router: router.clone(), limits, peer };
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Some((stream, identity)) = connection.handshake(tcp).await else { return };
            let router = connection.router.map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(identity.clone());
                request
            });
            let mut builder = Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
            builder.http2().timer(TokioTimer::new()).max_concurrent_streams(limits.http2_streams_max);
            let served = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router)).into_owned();
            if let Err(error) = watcher.watch(served).await {
                tracing::debug!(peer = %connection.peer, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("stopped accepting merchants; waiting for requests in flight");
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("grace period over with connections still open");
    }
}

/// One accepted TCP connection on its way to being served.
struct Connection {
    acceptor: TlsAcceptor,
    router: Router,
    limits: ListenerLimits,
    peer: SocketAddr,
}

impl Connection {
    /// The TLS handshake (client certificate verified by rustls), then the merchant it names.
    async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, MerchantIdentity)> {
        let peer = self.peer;
        let stream = match tokio::time::timeout(self.limits.handshake_timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::info!(%peer, %error, "TLS handshake refused");
                return None;
            }
            Err(_) => {
                tracing::info!(%peer, "TLS handshake timed out");
                return None;
            }
        };
        let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
        match MerchantIdentity::from_chain(chain) {
            Ok(identity) => Some((stream, identity)),
            Err(error) => {
                tracing::warn!(%peer, %error, "connection closed");
                None
            }
        }
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
