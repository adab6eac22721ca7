//! The gateway as an mTLS client of the issuers: a rustls configuration (our gateway-client
//! certificate, the issuers' authz-server certificates checked with CRLs, TLS 1.3, ALPN h2 and
//! http/1.1), one reqwest pool per instance, and one attempt: send the exact bytes, read the
//! whole answer within the attempt's timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderValue;
use mps_pki::{Role, TrustStore};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderName};

use crate::config::UpstreamConfig;

/// Header carrying detached JWS signatures, both ways.
pub const JWS_HEADER: &str = "x-jws-signature";
/// Header carrying the issuer's request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Why the upstream client could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Issuer CA or CRL files.
    #[error("issuer trust (upstream.issuer_ca / upstream.issuer_crls): {0}")]
    Trust(String),
    /// Our client certificate or key.
    #[error("client certificate or key (upstream.certificate / upstream.private_key): {0}")]
    Identity(String),
    /// reqwest refused the settings.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The TLS settings every instance's pool shares.
pub struct UpstreamTls {
    config: Arc<rustls::ClientConfig>,
}

impl UpstreamTls {
    /// Loads our certificate and the issuers' trust.
    pub fn load(upstream: &UpstreamConfig) -> Result<Self, ClientError> {
        let anchors: Vec<&std::path::Path> = upstream.issuer_ca.iter().map(|p| p.as_path()).collect();
        let crls: Vec<&std::path::Path> = upstream.issuer_crls.iter().map(|p| p.as_path()).collect();
        let trust = TrustStore::from_pem_files(&anchors, &crls).map_err(|e| ClientError::Trust(e.to_string()))?;
        let verifier = mps_pki::tls::server_cert_verifier(&trust, Role::AuthzServer)
            .map_err(|e| ClientError::Trust(e.to_string()))?;
        let identity = (upstream.certificate.as_path(), upstream.private_key.as_path());
        let mut config =
            mps_pki::tls::client_config(verifier, Some(identity)).map_err(|e| ClientError::Identity(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self { config: Arc::new(config) })
    }

    /// A connection pool for one instance: keep-alive, HTTP/2 when the issuer offers it, no
    /// redirects, no proxy from the environment.
    pub fn instance_client(&self, upstream: &UpstreamConfig) -> Result<reqwest::Client, ClientError> {
        Ok(self
            .builder()
            .pool_max_idle_per_host(upstream.idle_connections_max)
            .pool_idle_timeout(upstream.idle_timeout())
            .tcp_keepalive(Duration::from_secs(30))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .build()?)
    }

    /// The client of the health probes (plain HTTP or HTTPS to the admin listeners).
    pub fn prober(&self) -> Result<reqwest::Client, ClientError> {
        Ok(self.builder().pool_max_idle_per_host(1).build()?)
    }

    fn builder(&self) -> reqwest::ClientBuilder {
        // use_preconfigured_tls takes the config by value; a clone shares the verifier and keys.
        reqwest::Client::builder()
            .use_preconfigured_tls(rustls::ClientConfig::clone(&self.config))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
    }
}

/// The body and headers to forward, exactly as the merchant sent them.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// `/v1/authorizations` or `/v1/reversals`.
    pub path: &'static str,
    /// The body bytes.
    pub body: Bytes,
    /// The merchant's `x-jws-signature`.
    pub signature: Option<HeaderValue>,
    /// The merchant's `content-type`.
    pub content_type: Option<HeaderValue>,
}

/// An issuer's answer: status, the headers passed back, and the body, byte for byte.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Headers passed back to the merchant unchanged.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body bytes.
    pub body: Bytes,
}

/// Why an attempt got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttemptError {
    /// No connection: the request was not sent.
    #[error("could not connect")]
    Connect,
    /// No whole answer within the attempt's timeout: the issuer may have decided.
    #[error("timed out")]
    Timeout,
    /// The connection failed after the request may have been sent.
    #[error("connection failed")]
    Transport,
    /// The answer is larger than `upstream.answer_bytes_max`.
    #[error("answer too large")]
    AnswerTooLarge,
}

impl AttemptError {
    /// Whether the issuer may have received the request.
    pub fn maybe_delivered(&self) -> bool {
        !matches!(self, Self::Connect)
    }
}

/// Headers of the issuer's answer that reach the merchant.
const PASSED_BACK: [&str; 4] = ["content-type", JWS_HEADER, REQUEST_ID_HEADER, "retry-after"];

/// One attempt: POSTs `outgoing` to `base` + path and reads the whole answer, all within
/// `timeout`.
pub async fn attempt(
    client: &reqwest::Client,
    base: &reqwest::Url,
    outgoing: &Outgoing,
    timeout: Duration,
    answer_bytes_max: usize,
) -> Result<Answer, AttemptError> {
    let url = base.join(outgoing.path).map_err(|_| AttemptError::Connect)?;
    let exchange = async {
        let mut request = client.post(url).body(outgoing.body.clone());
        if let Some(content_type) = &outgoing.content_type {
            request = request.header(CONTENT_TYPE, content_type.clone());
        }
        if let Some(signature) = &outgoing.signature {
            request = request.header(JWS_HEADER, signature.clone());
        }
        let mut response = request.send().await.map_err(classify)?;
        let status = response.status();
        let headers = PASSED_BACK
            .iter()
            .filter_map(|name| {
                let value = response.headers().get(*name)?;
                Some((HeaderName::from_static(name), value.clone()))
            })
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > answer_bytes_max {
                return Err(AttemptError::AnswerTooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer { status, headers, body: Bytes::from(body) })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(AttemptError::Timeout),
    }
}

fn classify(error: reqwest::Error) -> AttemptError {
    if error.is_timeout() {
        AttemptError::Timeout
    } else if error.is_connect() {
        AttemptError::Connect
    } else {
        AttemptError::Transport
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failed_connection_is_known_undelivered() {
        assert!(!AttemptError::Connect.maybe_delivered());
        assert!(AttemptError::Timeout.maybe_delivered());
        assert!(AttemptError::Transport.maybe_delivered());
    }
}
