//! Start-up and shutdown of the server: reads every part from the configuration, connects the
//! HSM, opens the ledger, serves until SIGTERM or Ctrl-C, then drains.

use std::sync::Arc;

use mps_hsm::Hsm;
use tokio::sync::{Semaphore, watch};

use crate::config::AuthzConfig;
use crate::decision::business_day::Cutoff;
use crate::decision::merchant::MerchantVerifier;
use crate::decision::signature::AnswerSigner;
use crate::decision::{Authorizer, DecisionSettings};
use crate::front::{admin, routes, server, tls};
use crate::ledger::Ledger;
use crate::ops::metrics::Metrics;
use crate::ops::recent::RecentDecisions;
use crate::ops::revocation::{self, Revocation};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// HSM connection at start-up.
    #[error("HSM: {0} (check hsm.module_path, hsm.token_label and the PIN in the environment)")]
    Hsm(#[from] mps_hsm::HsmError),
    /// Ledger.
    #[error(
        "ledger: {0} (check the [ledger] section: ledger.path and its directory's permissions for SQLite, \
         ledger.postgres.connection and the server for PostgreSQL)"
    )]
    Ledger(#[from] crate::ledger::LedgerError),
    /// Certificates and trust.
    #[error("{0}")]
    Pki(String),
    /// TLS set-up.
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    /// Sockets.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Metrics registry.
    #[error(transparent)]
    Metrics(#[from] crate::ops::metrics::MetricsError),
}

/// The parts every command that touches the bank needs.
pub struct Parts {
    /// HSM handle.
    pub hsm: Hsm,
    /// Ledger handle.
    pub ledger: Ledger,
    /// Metrics, with the HSM pool's and the ledger's figures wired in.
    pub metrics: Arc<Metrics>,
    /// The decision's clock: the system clock, unless a test sets another.
    pub clock: crate::decision::clock::Clock,
}

/// Connects the HSM and opens the ledger.
pub async fn open_parts(config: &AuthzConfig) -> Result<Parts, AppError> {
    let hsm = Hsm::connect(config.hsm.clone()).await?;
    parts_with_hsm(config, hsm)
}

/// Refuses to serve a ledger whose chain keys need a KEK the token does not have (retired too
/// early, or a token that does not belong to this ledger): every payment of those SIMs would
/// fail, so the operator hears it at start, with the count per version.
pub async fn check_kek_coverage(parts: &Parts, labels: &mps_hsm::KeyLabels) -> Result<(), AppError> {
    let on_token = parts.hsm.kek_versions();
    let missing: Vec<String> = parts
        .ledger
        .kek_usage()
        .await?
        .into_iter()
        .filter(|(version, count)| *count > 0 && !on_token.contains(version))
        .map(|(version, count)| {
            format!("{count} under {}", mps_hsm::custody::kek_label(&labels.key_encryption, version))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(AppError::Pki(format!(
        "the ledger holds chain keys under KEKs the token does not have ({}): connect the token that \
         belongs to this ledger, or restore the KEK; never retire a KEK before `authz keys rewrap` drained it",
        missing.join(", ")
    )))
}

/// Opens the ledger beside an HSM pool that is already connected.
pub fn parts_with_hsm(config: &AuthzConfig, hsm: Hsm) -> Result<Parts, AppError> {
    let metrics = Arc::new(Metrics::new()?);
    metrics.register_hsm(hsm.clone())?;
    let observer_metrics = Arc::clone(&metrics);
    let observer: crate::ledger::BatchObserver =
        Arc::new(move |report: &crate::ledger::BatchReport| observer_metrics.observe_ledger_batch(report));
    let store = config.ledger.store()?;
    let ledger = Ledger::open_store(&store, config.ledger.tuning.clone(), Some(observer))?;
    metrics.register_ledger(ledger.clone())?;
    Ok(Parts { hsm, ledger, metrics, clock: crate::decision::clock::Clock::system() })
}

/// The signer of answers and clearing files: `mps-sign` in the HSM with the bank's chain, and
/// the next key from its time when a renewal is configured. Refuses a certificate whose key is
/// not the HSM's.
pub fn answer_signer(config: &AuthzConfig, parts: &Parts) -> Result<AnswerSigner, AppError> {
    let chain = mps_pki::pem::load_certificates(&config.issuer.signing_certificate)
        .map_err(|e| AppError::Pki(format!("issuer.signing_certificate: {e}")))?;
    check_certificate_key(&chain, parts.hsm.signing_public_key(), "issuer.signing_certificate", "hsm.keys.signing")?;
    let mut signer = AnswerSigner::new(&chain);
    if let Some((from, path)) = config.issuer.next_signing()? {
        let next_chain = mps_pki::pem::load_certificates(path)
            .map_err(|e| AppError::Pki(format!("issuer.next_signing_certificate: {e}")))?;
        let next_key = parts
            .hsm
            .signing_public_key_next()
            .ok_or_else(|| AppError::Pki("issuer.next_signing_certificate needs hsm.keys.signing_next".to_owned()))?;
        check_certificate_key(&next_chain, next_key, "issuer.next_signing_certificate", "hsm.keys.signing_next")?;
        tracing::info!(%from, "signing-key renewal configured: answers switch to the next signing key then");
        signer = signer.with_next(from, &next_chain);
    }
    Ok(signer)
}

/// Builds the decision from the configuration and open parts.
pub fn authorizer(config: &AuthzConfig, parts: &Parts, merchants: MerchantVerifier) -> Result<Authorizer, AppError> {
    let signer = answer_signer(config, parts)?;
    let cutoff = Cutoff::parse(&config.issuer.business_day_cutoff)
        .map_err(|e| AppError::Pki(format!("issuer.business_day_cutoff: {e}")))?;
    let settings = DecisionSettings {
        iin: config.issuer.iin,
        cutoff,
        password_tries_max: config.issuer.password_tries_max,
        mac_failure_limit: config.issuer.mac_failure_limit,
        mac_failure_window: std::time::Duration::from_secs(config.issuer.mac_failure_window_s),
        clock: parts.clock.clone(),
    };
    Ok(Authorizer::new(
        parts.hsm.clone(),
        parts.ledger.clone(),
        merchants,
        signer,
        settings,
        Arc::clone(&parts.metrics),
    ))
}

/// Refuses a signing certificate whose key is not the HSM's key: every answer it would sign
/// would fail verification at the merchant.
fn check_certificate_key(
    chain: &[rustls_pki_types::CertificateDer<'static>],
    hsm_key: [u8; 65],
    certificate_field: &str,
    key_field: &str,
) -> Result<(), AppError> {
    let leaf =
        chain.first().ok_or_else(|| AppError::Pki(format!("{certificate_field}: the file holds no certificate")))?;
    let key =
        mps_pki::identity::subject_public_key(leaf).map_err(|e| AppError::Pki(format!("{certificate_field}: {e}")))?;
    if key != hsm_key {
        return Err(AppError::Pki(format!(
            "{certificate_field} certifies another key than the HSM's {key_field}: issue it for that key \
             (pki issue --role bank-signing --hsm-config ...)"
        )));
    }
    Ok(())
}

/// A server that is running: its bound addresses, a way to stop it, and its task.
pub struct RunningServer {
    /// The mTLS listener's address (useful when configured with port 0).
    pub address: std::net::SocketAddr,
    /// The admin listener's address.
    pub admin_address: std::net::SocketAddr,
    /// The metrics the server records.
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Asks the server to stop accepting and waits until in-flight work is done and the
    /// ledger has drained.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Waits for the server to end (after a signal, or [`RunningServer::shutdown`] elsewhere).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A sender that stops the server when `true` is sent.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Binds both listeners and starts serving with already open parts.
pub async fn start(config: &AuthzConfig, parts: Parts) -> Result<RunningServer, AppError> {
    let metrics = Arc::clone(&parts.metrics);
    let revocation = Arc::new(Revocation::load(config, Arc::clone(&metrics)).map_err(AppError::Pki)?);
    let authorizer = Arc::new(authorizer(config, &parts, revocation.merchant_verifier())?);
    let in_flight = Arc::new(Semaphore::new(config.server.in_flight_max));
    let recent = Arc::new(RecentDecisions::new(config.admin.recent_decisions_max));
    let state = Arc::new(routes::AppState {
        authorizer: Arc::clone(&authorizer),
        metrics: Arc::clone(&metrics),
        recent: Arc::clone(&recent),
        in_flight: Arc::clone(&in_flight),
        request_timeout: config.server.request_timeout(),
    });
    let router = routes::router(state, config.server.body_bytes_max);
    let admin_router = admin::router(Arc::new(admin::AdminState {
        authorizer,
        metrics: Arc::clone(&metrics),
        revocation: Arc::clone(&revocation),
        recent,
    }));
    let listener = server::bind(config.server.listen).await?;
    let admin_listener = server::bind(config.admin.listen).await?;
    let address = listener.local_addr()?;
    let admin_address = admin_listener.local_addr()?;
    let limits = config.server.listener_limits();
    let listener_stats = Arc::clone(&metrics.listener);
    let (stop, shutdown) = watch::channel(false);
    let (in_flight_max, shutdown_grace) = (config.server.in_flight_max, config.server.shutdown_grace());
    let crl_check_interval = std::time::Duration::from_millis(config.revocation.check_interval_ms);
    let task = tokio::spawn(async move {
        let admin_task = tokio::spawn(server::serve_admin(admin_listener, admin_router, shutdown.clone()));
        let watcher = tokio::spawn(revocation::watch(Arc::clone(&revocation), crl_check_interval, shutdown.clone()));
        let admission: Arc<dyn mps_pki::listener::Admission> = Arc::new(mps_pki::listener::Everyone(router));
        let tls = revocation.tls_source();
        mps_pki::listener::serve(listener, tls, admission, limits, listener_stats, shutdown).await;
        let _ = admin_task.await;
        let _ = watcher.await;
        // Decisions whose caller went away may still be booking: they finish before the
        // ledger closes (bounded by the grace period, like the connections).
        let permits = u32::try_from(in_flight_max).unwrap_or(u32::MAX);
        if tokio::time::timeout(shutdown_grace, in_flight.acquire_many(permits)).await.is_err() {
            tracing::error!("decisions still running after the shutdown grace period; closing the ledger under them");
        }
        parts.ledger.close().await;
        tracing::info!("authorization server stopped");
    });
    tracing::info!(%address, admin = %admin_address, iin = %config.issuer.iin, "authorization server ready");
    Ok(RunningServer { address, admin_address, metrics, stop, task })
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn serve(config: AuthzConfig) -> Result<(), AppError> {
    let parts = open_parts(&config).await?;
    check_kek_coverage(&parts, &config.hsm.keys).await?;
    let running = start(&config, parts).await?;
    let stop = running.stopper();
    tokio::spawn(async move {
        mps_pki::listener::shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop.send(true);
    });
    running.wait().await;
    Ok(())
}
