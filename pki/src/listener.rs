//! The mutual-TLS listener of authz and the gateway: hyper (HTTP/1.1 keep-alive and HTTP/2)
//! over rustls, with bounds that hold against a hostile peer.
//!
//! - TLS handshakes have their own budget (`handshakes_max`, each at most `handshake_timeout`),
//!   apart from the permits of authenticated connections: a flood of sockets that never finish
//!   a handshake, or finish it without a certificate, cannot take the places of served
//!   connections. Past the budget a new socket is closed at once instead of queuing.
//! - At most `connections_max` authenticated connections, and at most
//!   `connections_per_source_max` sockets (handshaking or served) per peer address.
//! - A connection must send its first request within `header_read_timeout` of its handshake,
//!   and is closed once it has had no request in flight for `idle_timeout`: connections that
//!   complete the handshake and then send nothing are closed, not kept for good.
//! - Headers: at most `header_read_timeout` per request (HTTP/1), about 32 KiB of buffer (HTTP/1)
//!   or header list (HTTP/2). Bodies: the whole body within `body_read_timeout`, so a body that
//!   stalls after a few bytes fails its request instead of holding the connection.
//! - HTTP/2: a bounded number of concurrent streams and pending resets, and keep-alive pings.
//!
//! Graceful shutdown stops accepting, asks every connection to finish its requests and close,
//! and waits for them up to `shutdown_grace`.

use std::collections::HashMap;
use std::future::Future as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;

/// Bytes of HTTP/1 read buffer (so of one request's headers) and of an HTTP/2 header list.
pub const HEADER_BYTES_MAX: usize = 32 * 1024;

/// Bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// One TLS handshake, at most.
    pub handshake_timeout: Duration,
    /// TLS handshakes in progress at once.
    pub handshakes_max: usize,
    /// Headers of one request (HTTP/1), and the first request after the handshake.
    pub header_read_timeout: Duration,
    /// The whole body of one request.
    pub body_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Authenticated connections at once.
    pub connections_max: usize,
    /// Sockets (handshaking or served) from one peer address at once.
    pub connections_per_source_max: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_streams_max: u32,
    /// Grace period at shutdown.
    pub shutdown_grace: Duration,
}

impl ListenerLimits {
    /// Refuses a zero count and a timeout outside 1 ms to 1 hour, naming the configuration key
    /// (`server.<key>` in authz's and the gateway's files).
    pub fn check(&self) -> Result<(), String> {
        let counts = [
            ("handshakes_max", self.handshakes_max),
            ("connections_max", self.connections_max),
            ("connections_per_source_max", self.connections_per_source_max),
            ("http2_streams_max", self.http2_streams_max as usize),
        ];
        if let Some((key, _)) = counts.iter().find(|(_, count)| *count == 0) {
            return Err(format!("server.{key} must be at least 1"));
        }
        let timeouts = [
            ("handshake_timeout_ms", self.handshake_timeout),
            ("header_read_timeout_ms", self.header_read_timeout),
            ("body_read_timeout_ms", self.body_read_timeout),
            ("idle_timeout_ms", self.idle_timeout),
        ];
        let range = Duration::from_millis(1)..=Duration::from_secs(3_600);
        if let Some((key, _)) = timeouts.iter().find(|(_, timeout)| !range.contains(timeout)) {
            return Err(format!("server.{key} must be 1 to 3600000"));
        }
        Ok(())
    }
}

/// What the listener did, for metrics. Counters only grow; `open` is a gauge.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Authenticated connections open now.
    pub open: AtomicUsize,
    /// Sockets closed at once because the handshake budget was spent.
    pub handshakes_refused: AtomicU64,
    /// Handshakes that failed or timed out.
    pub handshakes_failed: AtomicU64,
    /// Sockets closed at once because their source had too many.
    pub source_refused: AtomicU64,
    /// Connections closed after the handshake because `connections_max` were open.
    pub connections_refused: AtomicU64,
    /// Connections closed for sending no request in time, or for idling.
    pub idle_closed: AtomicU64,
    /// Source addresses with a socket open now (each tracked only while it has one).
    pub sources: AtomicUsize,
}

/// Decides, after the handshake, whether a connection is served, and by what: the router for
/// this connection (for example with the peer's identity in each request's extensions), or
/// the reason to close it.
pub trait Admission: Send + Sync + 'static {
    /// The router for a connection whose TLS handshake completed.
    fn admit(&self, stream: &TlsStream<TcpStream>, peer: SocketAddr) -> Result<Router, String>;
}

/// Serves every authenticated connection with the same router.
#[derive(Clone)]
pub struct Everyone(pub Router);

impl Admission for Everyone {
    fn admit(&self, _stream: &TlsStream<TcpStream>, _peer: SocketAddr) -> Result<Router, String> {
        Ok(self.0.clone())
    }
}

/// Where the server's TLS configuration comes from at each handshake: a source that is swapped
/// (new CRLs) serves new connections with the new configuration.
pub type TlsSource = Arc<dyn Fn() -> Arc<rustls::ServerConfig> + Send + Sync>;

/// A fixed TLS configuration as a [`TlsSource`].
pub fn fixed(config: Arc<rustls::ServerConfig>) -> TlsSource {
    Arc::new(move || Arc::clone(&config))
}

/// Serves mTLS connections on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: TlsSource,
    admission: Arc<dyn Admission>,
    limits: ListenerLimits,
    stats: Arc<ListenerStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = Arc::new(Shared {
        tls,
        admission,
        limits,
        stats,
        handshakes: Arc::new(Semaphore::new(limits.handshakes_max.max(1))),
        connections: Arc::new(Semaphore::new(limits.connections_max.max(1))),
        sources: Mutex::new(HashMap::new()),
        shutdown: shutdown.clone(),
    });
    // One permit per socket task (handshaking or served), so that shutdown can wait for all.
    let task_permits = u32::try_from(limits.handshakes_max.max(1).saturating_add(limits.connections_max.max(1)))
        .unwrap_or(u32::MAX >> 3);
    let tasks = Arc::new(Semaphore::new(task_permits as usize));
    loop {
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
        let Some(source) = Source::enter(&shared, peer.ip()) else {
            shared.stats.source_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "too many connections from this source: closed");
            continue;
        };
        let Ok(handshake) = Arc::clone(&shared.handshakes).try_acquire_owned() else {
            shared.stats.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "handshake budget spent: closed");
            continue;
        };
        let Ok(task) = Arc::clone(&tasks).try_acquire_owned() else {
            shared.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _task = task;
            let _source = source;
            serve_connection(&shared, tcp, peer, handshake).await;
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; waiting for requests in flight");
    // Every socket task holds one permit: all of them back means every connection ended.
    if tokio::time::timeout(limits.shutdown_grace, tasks.acquire_many(task_permits)).await.is_err() {
        tracing::warn!("grace period over with connections still open");
    }
}

struct Shared {
    tls: TlsSource,
    admission: Arc<dyn Admission>,
    limits: ListenerLimits,
    stats: Arc<ListenerStats>,
    handshakes: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    sources: Mutex<HashMap<IpAddr, usize>>,
    shutdown: watch::Receiver<bool>,
}

/// One socket counted against its source address until dropped.
struct Source {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Source {
    fn enter(shared: &Arc<Shared>, ip: IpAddr) -> Option<Self> {
        let mut sources = shared.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let count = sources.entry(ip).or_insert(0);
        if *count >= shared.limits.connections_per_source_max.max(1) {
            return None;
        }
        *count += 1;
        shared.stats.sources.store(sources.len(), Ordering::Relaxed);
        Some(Self { shared: Arc::clone(shared), ip })
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let mut sources = self.shared.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = sources.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                sources.remove(&self.ip);
            }
        }
        self.shared.stats.sources.store(sources.len(), Ordering::Relaxed);
    }
}

/// Requests in flight and the time of the last one's start or end, for the idle rules.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `started` of the last request's start or end.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(Arc::clone(self))
    }

    /// Why the connection should be closed now, if it should.
    fn overdue(&self, limits: &ListenerLimits) -> Option<&'static str> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let elapsed = self.started.elapsed();
        if self.requests.load(Ordering::Relaxed) == 0 {
            return (elapsed >= limits.header_read_timeout).then_some("no request after the handshake");
        }
        let since = elapsed.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)));
        (since >= limits.idle_timeout).then_some("idle")
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_connection(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    handshake: tokio::sync::OwnedSemaphorePermit,
) {
    let limits = shared.limits;
    let acceptor = TlsAcceptor::from((shared.tls)());
    let stream = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            shared.stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, %error, "TLS handshake refused");
            return;
        }
        Err(_) => {
            shared.stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    drop(handshake);
    let router = match shared.admission.admit(&stream, peer) {
        Ok(router) => router,
        Err(reason) => {
            tracing::warn!(%peer, %reason, "connection closed");
            return;
        }
    };
    let Ok(_permit) = Arc::clone(&shared.connections).try_acquire_owned() else {
        shared.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, connections_max = limits.connections_max, "too many connections: closed");
        return;
    };
    shared.stats.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGauge(Arc::clone(&shared.stats));
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = Arc::clone(&activity);
        let body_timeout = limits.body_read_timeout;
        tower::service_fn(move |request: Request<Incoming>| {
            let in_flight = activity.begin();
            let request = request.map(|body| axum::body::Body::new(TimedBody::new(body, body_timeout)));
            let served = router.clone().oneshot(request);
            async move {
                let response = served.await;
                drop(in_flight);
                response
            }
        })
    };
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(HEADER_BYTES_MAX);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_streams_max)
        .max_header_list_size(u32::try_from(HEADER_BYTES_MAX).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(64))
        .keep_alive_interval(Some(limits.idle_timeout.max(Duration::from_secs(1))))
        .keep_alive_timeout(limits.header_read_timeout.max(Duration::from_secs(1)));
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let mut shutdown = shared.shutdown.clone();
    let check_every = (limits.header_read_timeout.min(limits.idle_timeout) / 4).max(Duration::from_millis(20));
    let mut ticks = tokio::time::interval(check_every);
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            _ = stopped(&mut shutdown), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + limits.shutdown_grace);
            }
            _ = ticks.tick() => {
                if let Some(deadline) = closing {
                    if tokio::time::Instant::now() >= deadline {
                        tracing::debug!(%peer, "connection did not close in time: dropped");
                        return;
                    }
                } else if let Some(reason) = activity.overdue(&limits) {
                    shared.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, reason, "connection closed");
                    connection.as_mut().graceful_shutdown();
                    // A peer that does not take the close gets a moment, then the socket goes.
                    closing = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
        }
    }
}

struct OpenGauge(Arc<ListenerStats>);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request body that must arrive whole within a time limit from the request's start.
struct TimedBody {
    inner: Incoming,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl TimedBody {
    fn new(inner: Incoming, limit: Duration) -> Self {
        Self { inner, sleep: Box::pin(tokio::time::sleep(limit)) }
    }
}

/// The body did not arrive within `body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

impl hyper::body::Body for TimedBody {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if let std::task::Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return std::task::Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Exports a listener's [`ListenerStats`] to a Prometheus registry, read at every scrape (names
/// without the registry's prefix, which the registry adds).
pub struct ListenerCollector {
    stats: Arc<ListenerStats>,
    descs: Vec<prometheus::core::Desc>,
}

const LISTENER_FIGURES: [(&str, &str); 7] = [
    ("listener_connections_open", "Authenticated connections open"),
    ("listener_handshakes_refused_total", "Sockets closed at once: the TLS handshake budget was spent"),
    ("listener_handshakes_failed_total", "TLS handshakes that failed or timed out"),
    ("listener_source_refused_total", "Sockets closed at once: too many from their source address"),
    ("listener_connections_refused_total", "Connections closed after the handshake: connections_max were open"),
    ("listener_idle_closed_total", "Connections closed for sending no request in time or for idling"),
    ("listener_sources", "Source addresses with a socket open (each tracked only while it has one)"),
];

impl ListenerCollector {
    /// A collector of `stats`.
    pub fn new(stats: Arc<ListenerStats>) -> Result<Self, prometheus::Error> {
        let mut descs = Vec::new();
        for (name, help) in &LISTENER_FIGURES {
            descs.push(prometheus::core::Desc::new(
                (*name).to_owned(),
                (*help).to_owned(),
                vec![],
                Default::default(),
            )?);
        }
        Ok(Self { stats, descs })
    }
}

impl prometheus::core::Collector for ListenerCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        let values = [
            s.open.load(Relaxed) as f64,
            s.handshakes_refused.load(Relaxed) as f64,
            s.handshakes_failed.load(Relaxed) as f64,
            s.source_refused.load(Relaxed) as f64,
            s.connections_refused.load(Relaxed) as f64,
            s.idle_closed.load(Relaxed) as f64,
            s.sources.load(Relaxed) as f64,
        ];
        let mut families = Vec::new();
        for ((name, help), value) in LISTENER_FIGURES.iter().zip(values) {
            if let Ok(gauge) = prometheus::Gauge::new(*name, *help) {
                gauge.set(value);
                families.extend(prometheus::core::Collector::collect(&gauge));
            }
        }
        families
    }
}

/// Resolves once the shutdown flag is true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Resolves on SIGTERM or Ctrl-C: what a service waits for before it drains and stops. Where
/// SIGTERM cannot be watched, on Ctrl-C alone.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
