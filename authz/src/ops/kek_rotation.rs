//! KEK rotation, the ledger's half (`authz keys rewrap`, docs/HSM.md): moves every stored
//! chain key still under an older KEK version to the newest one, in bounded batches, while
//! the server keeps serving, then marks each older KEK that no record needs any more as
//! drained on the token so that `mps-hsm keys retire-kek` may destroy it.
//!
//! Each move is unwrap-under-old and wrap-under-new inside the HSM (the chain key exists only
//! as a sensitive session object), then a compare-and-swap in the ledger: if a payment booked
//! CK_n meanwhile, the row changed and the move is dropped (CK_n is under the newest KEK
//! already). Active SIMs need no rewrap at all: every booking stores CK_n under the newest KEK.

use std::time::Duration;

use mps_hsm::{Hsm, HsmConfig, Pin};

use crate::ledger::{Conflict, Ledger, LedgerError, StoredChainKey};

/// Bounds of one `rewrap` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewrapLimits {
    /// Chain keys read and moved per batch (1 to 10,000).
    pub batch_size: usize,
    /// Moves in flight at once within a batch (1 to 256).
    pub concurrency: usize,
    /// Pause between batches, to leave the HSM and the ledger to live traffic.
    pub pause: Duration,
    /// Batches at most in one run (a server that has not yet adopted the newest KEK keeps
    /// writing under the older one; the run then ends and says so).
    pub batches_max: usize,
}

impl Default for RewrapLimits {
    fn default() -> Self {
        Self { batch_size: 500, concurrency: 16, pause: Duration::from_millis(0), batches_max: 100_000 }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// The KEK version chain keys were moved to.
    pub newest: u32,
    /// Chain keys moved.
    pub moved: u64,
    /// Moves dropped because a payment booked first (its CK_n is under the newest KEK).
    pub superseded: u64,
    /// Chain keys per KEK version afterwards.
    pub usage: Vec<(u32, u64)>,
    /// Older KEK labels marked drained (no record needs them; `mps-hsm keys retire-kek` may
    /// destroy them).
    pub drained: Vec<String>,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RewrapError {
    /// The limits are out of range.
    #[error("rewrap limits: {0}")]
    Limits(&'static str),
    /// The HSM failed (the run can be repeated: nothing half-done stays behind).
    #[error("HSM: {0}")]
    Hsm(#[from] mps_hsm::HsmError),
    /// The ledger failed (likewise).
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// Marking a KEK drained failed.
    #[error("key ceremony: {0}")]
    Ceremony(#[from] mps_hsm::ceremony::CeremonyError),
    /// A blocking task did not finish.
    #[error("a blocking task failed")]
    Join,
}

/// One chain key to the newest KEK: `true` if moved, `false` if a payment booked first.
async fn move_one(hsm: &Hsm, ledger: &Ledger, stored: StoredChainKey) -> Result<bool, RewrapError> {
    let Some(new) = hsm.rewrap_chain_key(&stored.key).await? else { return Ok(false) };
    match ledger.rewrap_chain_key(stored, new).await {
        Ok(()) => Ok(true),
        Err(LedgerError::Conflict(Conflict::StaleCounter)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Moves every chain key under an older KEK to the newest one the pool knows, then, after
/// twice the pools' `kek_refresh_ms` (so every server writes under the newest KEK), marks
/// each older KEK that no record uses as drained. `progress` is told (moved, superseded)
/// after every batch. Safe to repeat and to interrupt.
pub async fn rewrap(
    hsm: &Hsm,
    ledger: &Ledger,
    hsm_config: &HsmConfig,
    pin: &Pin,
    limits: RewrapLimits,
    mut progress: impl FnMut(u64, u64),
) -> Result<RewrapReport, RewrapError> {
    if !(1..=10_000).contains(&limits.batch_size) {
        return Err(RewrapError::Limits("batch_size must be 1 to 10000"));
    }
    if !(1..=256).contains(&limits.concurrency) {
        return Err(RewrapError::Limits("concurrency must be 1 to 256"));
    }
    let newest = hsm.kek_version_newest();
    let mut report = RewrapReport { newest, ..RewrapReport::default() };
    for _ in 0..limits.batches_max {
        let batch = ledger.chain_keys_below(newest, limits.batch_size).await?;
        if batch.is_empty() {
            break;
        }
        for chunk in batch.chunks(limits.concurrency) {
            let mut moves = tokio::task::JoinSet::new();
            for stored in chunk.iter().cloned() {
                let (hsm, ledger) = (hsm.clone(), ledger.clone());
                moves.spawn(async move { move_one(&hsm, &ledger, stored).await });
            }
            while let Some(outcome) = moves.join_next().await {
                if outcome.map_err(|_| RewrapError::Join)?? {
                    report.moved += 1;
                } else {
                    report.superseded += 1;
                }
            }
        }
        progress(report.moved, report.superseded);
        if !limits.pause.is_zero() {
            tokio::time::sleep(limits.pause).await;
        }
    }

    // Every server adopts the newest KEK within kek_refresh_ms (checked at most once a
    // second): wait twice that, then count again before declaring any older KEK unneeded.
    let grace = Duration::from_millis(hsm_config.kek_refresh_ms.max(1_000) * 2);
    tokio::time::sleep(grace).await;
    report.usage = ledger.kek_usage().await?;
    for version in 1..newest {
        let in_use = report.usage.iter().any(|(v, count)| *v == version && *count > 0);
        if in_use {
            continue;
        }
        let (config, pin) = (hsm_config.clone(), pin.clone());
        let marked = tokio::task::spawn_blocking(move || mps_hsm::ceremony::mark_kek_drained(&config, &pin, version))
            .await
            .map_err(|_| RewrapError::Join)?;
        match marked {
            Ok(label) => report.drained.push(label),
            // Retired already.
            Err(mps_hsm::ceremony::CeremonyError::Hsm(mps_hsm::HsmError::KeyNotFound { .. })) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}
