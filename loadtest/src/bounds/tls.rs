//! The raw mTLS bound: authz's own listener code (`mps_pki::listener::serve` with
//! `mps_authz::front::tls::server_config` from the bank's configuration: its certificate, its
//! client CA and CRLs, rustls with aws-lc-rs, hyper with HTTP/2) in front of a handler that
//! does nothing but answer, on loopback, driven by the harness's own clients (one HTTP/2
//! connection each, the run's count) with a request and an answer of an authorization's size.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::routing::post;
use mps_authz::config::AuthzConfig;
use mps_authz::front::server;
use mps_pki::TrustStore;
use mps_protocol::OrderNo;
use tokio::sync::watch;

use super::{Bound, BoundError};
use crate::config::TargetKind;
use crate::drive::client::{AUTHORIZATIONS_PATH, Target};
use crate::drive::exchange::Context;

/// The empty handler's answer: the size of an approval's JSON body.
const ANSWER_BODY_BYTES: usize = 420;
/// The empty handler's `x-jws-signature`: the size of the bank's detached JWS with its chain.
const ANSWER_SIGNATURE_BYTES: usize = 1_500;

/// What the clients present and trust: the run's gateway-client identity and scheme CA.
pub struct TlsClientSide<'a> {
    /// The scheme CA (the authz certificate must chain to it).
    pub trust: &'a TrustStore,
    /// The gateway-client certificate chain and key (authz refuses any other role).
    pub identity: (&'a Path, &'a Path),
}

/// Serves an empty handler behind the bank's TLS settings on 127.0.0.1 and drives it from
/// `connections` clients for `time`.
pub async fn measure(
    authz: &AuthzConfig,
    client_side: &TlsClientSide<'_>,
    context: &Context,
    connections: usize,
    time: Duration,
) -> Result<Bound, BoundError> {
    let fail = |what: String| BoundError::Tls(what);
    let client_trust = mps_authz::front::tls::client_trust(&authz.server).map_err(|e| fail(e.to_string()))?;
    let tls = mps_authz::front::tls::server_config(&authz.server, &client_trust).map_err(|e| fail(e.to_string()))?;
    let listener = server::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.map_err(|e| fail(e.to_string()))?;
    let address = listener.local_addr().map_err(|e| fail(e.to_string()))?;
    let limits =
        mps_pki::listener::ListenerLimits { shutdown_grace: Duration::from_secs(1), ..authz.server.listener_limits() };
    let (stop, shutdown) = watch::channel(false);
    let admission: Arc<dyn mps_pki::listener::Admission> = Arc::new(mps_pki::listener::Everyone(empty_router()));
    let stats = Arc::new(mps_pki::listener::ListenerStats::default());
    let served = tokio::spawn(mps_pki::listener::serve(
        listener,
        mps_pki::listener::fixed(tls),
        admission,
        limits,
        stats,
        shutdown,
    ));

    let target = Target::new(TargetKind::Authz, &format!("https://{address}"));
    let timeout = Duration::from_millis(authz.server.request_timeout_ms.max(1_000));
    let clients = (0..connections.max(1))
        .map(|_| target.client(client_side.trust, client_side.identity, timeout))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    let (body, jws) = representative_request(context)?;
    let clients = Arc::new(clients);
    let shared = Arc::new((target, body, jws));
    let callers = clients.len();
    // Caller i uses connection i: one request at a time on each, as in the closed loop.
    let measured = mps_hsm::bench::measure(callers, time, move |caller| {
        let (clients, shared) = (Arc::clone(&clients), Arc::clone(&shared));
        async move {
            let (target, body, jws) = &*shared;
            let client = clients.get(caller).ok_or(())?;
            match target.post(client, body, jws).await {
                Ok(answer) if answer.status == 200 => Ok(()),
                _ => Err(()),
            }
        }
    })
    .await;
    stop.send_replace(true);
    // The accept loop ends within its grace period; its JoinError would only say it was cancelled.
    let _ = served.await;
    Ok(Bound::new("empty handler behind authz's TLS and HTTP/2 stack on loopback", callers, measured))
}

/// A request of an authorization's size: the merchant's body around a packet-sized blob, signed.
fn representative_request(context: &Context) -> Result<(Vec<u8>, String), BoundError> {
    let order_no = OrderNo::new("BOUND-TLS-1").map_err(|e| BoundError::Tls(e.to_string()))?;
    let body = context.merchant.request_body(
        &[0u8; mps_protocol::wire::PACKET_LEN],
        order_no,
        context.amount,
        context.currency,
    );
    let jws = context.merchant.sign(&body).map_err(|e| BoundError::Tls(format!("signing: {e}")))?;
    Ok((body, jws))
}

fn empty_router() -> Router {
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(ANSWER_BODY_BYTES.saturating_sub(10)));
    let signature = HeaderValue::from_str(&"s".repeat(ANSWER_SIGNATURE_BYTES)).unwrap_or(HeaderValue::from_static("s"));
    // The request body is read, as authz reads it, and dropped.
    let handler = move |_request: axum::body::Bytes| {
        let (body, signature) = (body.clone(), signature.clone());
        async move {
            (
                StatusCode::OK,
                [
                    (axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
                    (HeaderName::from_static("x-jws-signature"), signature),
                ],
                body,
            )
        }
    };
    Router::new().route(AUTHORIZATIONS_PATH, post(handler))
}
