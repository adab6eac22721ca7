//! CRLs that reload without a restart. authz checks revocation twice: the gateway's client
//! certificate in the TLS handshake (`server.client_ca`, `server.client_crls`) and the
//! merchant's signing certificate at step 3 (`merchants.scheme_ca`, `merchants.crls`). Both
//! refuse everything once a CRL is past its nextUpdate, so fresh CRLs must reach the running
//! server: [`Revocation`] rebuilds both from their files when a file changes (checked every
//! `revocation.check_interval_ms`) or on SIGHUP, and swaps them in together. A reload that
//! fails (a half-written or bad file) keeps what is served, counts the failure and is tried
//! again at the next check. `/readyz` reports not ready, and the metrics show it, when the
//! earliest nextUpdate is past or within `revocation.margin_s`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use mps_pki::TrustStore;
use sha2::{Digest, Sha256};

use crate::config::{AuthzConfig, MerchantTrustConfig, ServerConfig};
use crate::decision::merchant::MerchantVerifier;
use crate::front::tls;
use crate::ops::metrics::Metrics;

/// How fresh the CRLs served are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The earliest nextUpdate is further away than the margin.
    Fresh {
        /// Seconds until the earliest nextUpdate.
        seconds_left: u64,
    },
    /// The earliest nextUpdate is within the margin: publish new CRLs now.
    NearExpiry {
        /// Seconds until the earliest nextUpdate.
        seconds_left: u64,
    },
    /// A CRL is past its nextUpdate: every handshake and merchant signature is refused.
    Expired,
}

impl Freshness {
    /// Whether the server can serve with these CRLs (and for how long it stays so).
    pub fn is_ready(self) -> bool {
        matches!(self, Self::Fresh { .. })
    }

    /// A line for `/readyz`.
    pub fn describe(self) -> String {
        match self {
            Self::Fresh { seconds_left } => format!("fresh (the earliest nextUpdate is in {seconds_left} s)"),
            Self::NearExpiry { seconds_left } => {
                format!(
                    "not ready: the earliest nextUpdate is in {seconds_left} s, within the margin; publish new CRLs"
                )
            }
            Self::Expired => "not ready: a CRL is past its nextUpdate; publish new CRLs".to_owned(),
        }
    }
}

/// The revocation data authz serves with, and how to reload it.
pub struct Revocation {
    listener: ServerConfig,
    merchants_config: MerchantTrustConfig,
    tls: RwLock<Arc<rustls::ServerConfig>>,
    merchants: MerchantVerifier,
    /// The earliest nextUpdate of all CRLs served, seconds since the Unix epoch.
    next_update: AtomicU64,
    /// What the files looked like at the last successful load.
    stamps: Mutex<Vec<Stamp>>,
    margin: Duration,
    metrics: Arc<Metrics>,
}

/// A file's content, by its SHA-256 (None: unreadable): a change triggers a reload. Not its
/// length and modification time: a CRL issued anew has the same length as the one before, and
/// two writes within one tick of the file system's clock leave the same time, so a check that
/// fell between a publisher's two writes of one file loaded the first and never saw the second
/// (CI saw it: fresh CRLs never loaded, and authz stayed not ready on the near-expiry ones).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    path: PathBuf,
    sha256: Option<[u8; 32]>,
}

impl Revocation {
    /// Loads both from the configuration's files (a failure here stops the start).
    pub fn load(config: &AuthzConfig, metrics: Arc<Metrics>) -> Result<Self, String> {
        let stamps = stamps(&config.server, &config.merchants);
        let (tls_config, merchant_trust, next_update) = build(&config.server, &config.merchants)?;
        let revocation = Self {
            listener: config.server.clone(),
            merchants_config: config.merchants.clone(),
            tls: RwLock::new(tls_config),
            merchants: MerchantVerifier::new(merchant_trust),
            next_update: AtomicU64::new(next_update),
            stamps: Mutex::new(stamps),
            margin: Duration::from_secs(config.revocation.margin_s),
            metrics,
        };
        revocation.publish();
        Ok(revocation)
    }

    /// The gateway-facing TLS configuration in force now, for each new handshake.
    pub fn tls_source(self: &Arc<Self>) -> mps_pki::listener::TlsSource {
        let revocation = Arc::clone(self);
        Arc::new(move || Arc::clone(&revocation.tls.read().unwrap_or_else(PoisonError::into_inner)))
    }

    /// The merchant signature check (step 3), which follows every reload.
    pub fn merchant_verifier(&self) -> MerchantVerifier {
        self.merchants.clone()
    }

    /// Rebuilds both from their files and swaps them in; on failure what is served stays.
    pub fn reload(&self) -> Result<(), String> {
        let stamps = stamps(&self.listener, &self.merchants_config);
        match build(&self.listener, &self.merchants_config) {
            Ok((tls_config, merchant_trust, next_update)) => {
                *self.tls.write().unwrap_or_else(PoisonError::into_inner) = tls_config;
                self.merchants.replace(merchant_trust);
                self.next_update.store(next_update, Ordering::Relaxed);
                *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) = stamps;
                self.metrics.crl_reloads.inc();
                self.publish();
                tracing::info!(next_update, "CRLs reloaded");
                Ok(())
            }
            Err(error) => {
                self.metrics.crl_reload_failures.inc();
                tracing::error!(%error, "CRL reload failed; the CRLs loaded before stay in force");
                Err(error)
            }
        }
    }

    /// Reloads when a CA or CRL file changed since the last successful load.
    pub fn reload_if_changed(&self) -> Option<Result<(), String>> {
        let now = stamps(&self.listener, &self.merchants_config);
        let changed = *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) != now;
        changed.then(|| self.reload())
    }

    /// How fresh the CRLs in force are at `now`.
    pub fn freshness(&self, now: SystemTime) -> Freshness {
        let now = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let next_update = self.next_update.load(Ordering::Relaxed);
        match next_update.checked_sub(now) {
            None | Some(0) => Freshness::Expired,
            Some(left) if left <= self.margin.as_secs() => Freshness::NearExpiry { seconds_left: left },
            Some(left) => Freshness::Fresh { seconds_left: left },
        }
    }

    fn publish(&self) {
        let next_update = self.next_update.load(Ordering::Relaxed);
        self.metrics.crl_next_update_seconds.set(i64::try_from(next_update).unwrap_or(i64::MAX));
    }
}

/// Checks for changed files every `interval` and reloads on SIGHUP, until `shutdown`.
pub async fn watch(revocation: Arc<Revocation>, interval: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; CRLs reload on file change only");
            None
        }
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let hangup_received = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup_received = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = ticks.tick() => {
                let _ = revocation.reload_if_changed();
            }
            Some(()) = hangup_received => {
                tracing::info!("SIGHUP: reloading CRLs");
                let _ = revocation.reload();
            }
        }
    }
}

fn build(
    listener: &ServerConfig,
    merchants: &MerchantTrustConfig,
) -> Result<(Arc<rustls::ServerConfig>, TrustStore, u64), String> {
    let client_trust = tls::client_trust(listener).map_err(|e| e.to_string())?;
    let tls_config = tls::server_config(listener, &client_trust).map_err(|e| e.to_string())?;
    let merchant_trust = merchant_trust(merchants)?;
    let next_update = client_trust.crl_next_update().as_secs().min(merchant_trust.crl_next_update().as_secs());
    Ok((tls_config, merchant_trust, next_update))
}

/// The trust store for merchant signatures (step 3).
pub fn merchant_trust(merchants: &MerchantTrustConfig) -> Result<TrustStore, String> {
    let anchors: Vec<&std::path::Path> = merchants.scheme_ca.iter().map(PathBuf::as_path).collect();
    let crls: Vec<&std::path::Path> = merchants.crls.iter().map(PathBuf::as_path).collect();
    TrustStore::from_pem_files(&anchors, &crls)
        .map_err(|e| format!("merchant trust (merchants.scheme_ca / merchants.crls): {e}"))
}

fn stamps(listener: &ServerConfig, merchants: &MerchantTrustConfig) -> Vec<Stamp> {
    let files =
        listener.client_ca.iter().chain(&listener.client_crls).chain(&merchants.scheme_ca).chain(&merchants.crls);
    files.map(|path| stamp(path)).collect()
}

/// Read with the bound the reload itself reads with ([`mps_pki::pem::read_limited`]): a file
/// too large to load is not read whole at every check either.
fn stamp(path: &std::path::Path) -> Stamp {
    let sha256 = mps_pki::pem::read_limited(path).ok().map(|bytes| Sha256::digest(bytes).into());
    Stamp { path: path.to_owned(), sha256 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rewrite of the same length that leaves the same modification time is still a change.
    #[test]
    fn a_same_size_rewrite_within_one_clock_tick_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crls.pem");
        std::fs::write(&path, b"first CRL").unwrap();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let before = stamp(&path);
        std::fs::write(&path, b"fresh CRL").unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(modified).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), modified);
        assert_ne!(stamp(&path), before, "same length and time, other content: must reload");
        assert_eq!(stamp(&path), stamp(&path), "nothing changed: no reload");
        std::fs::remove_file(&path).unwrap();
        assert_ne!(stamp(&path), before, "a file gone is a change too");
    }
}
