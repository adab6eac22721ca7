//! The issuer's side of clearing and settlement (docs/CLEARING.md): export a business day's
//! clearing file signed in the HSM, verify a directory of them, and book the settlement
//! center's positions.

use std::path::{Path, PathBuf};

use mps_hsm::Hsm;
use mps_pki::verify::TrustStore;
use mps_protocol::{Currency, Iin};
use mps_settlement::clearing::{self, ClearingFile};
use mps_settlement::positions::{self, Positions};
use mps_settlement::run;
use time::{Date, Duration, OffsetDateTime};

use crate::decision::business_day::Cutoff;
use crate::decision::signature::AnswerSigner;
use crate::ledger::{Ledger, LedgerError, SettlementBooking, StoredClearingFile};

/// Largest positions file `settle` reads.
pub const POSITIONS_BYTES_MAX: u64 = 64 << 20;

/// Why a clearing command failed. Each says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClearingError {
    /// The day has not ended (with the grace for bookings in flight).
    #[error(
        "business day {day} has not ended: it may be exported from {from} UTC (its cut-off plus the request deadline)"
    )]
    NotEnded {
        /// The day.
        day: Date,
        /// When it may be exported.
        from: OffsetDateTime,
    },
    /// The previous day has not been exported.
    #[error("export {previous} first: each day's file carries the SHA-256 of the day before (last exported: {latest})")]
    PreviousNotExported {
        /// The day asked for.
        day: Date,
        /// The day to export first.
        previous: Date,
        /// The latest exported day.
        latest: Date,
    },
    /// The day is before the first exported day: it was never cleared and never will be.
    #[error(
        "business day {day} is before the first cleared day {first}: days before a bank's first export are not cleared"
    )]
    BeforeFirst {
        /// The day asked for.
        day: Date,
        /// The earliest exported day at or after it.
        first: Date,
    },
    /// The ledger failed.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// The HSM could not sign.
    #[error("signing in the HSM: {0} (is the HSM reachable and the PIN right?)")]
    Sign(String),
    /// A file is not a valid clearing file.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: clearing::ClearingError,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file or its signature fails a check of `verify` or `settle`.
    #[error("{0}")]
    Refused(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClearingError + '_ {
    move |source| ClearingError::Io { path: path.to_owned(), source }
}

/// What clearing needs of the bank.
pub struct Issuer<'a> {
    /// The HSM (signs with `mps-sign`).
    pub hsm: &'a Hsm,
    /// The ledger.
    pub ledger: &'a Ledger,
    /// The answer signer (the same key and chain as the authorization answers).
    pub signer: &'a AnswerSigner,
    /// The bank's IIN.
    pub iin: Iin,
    /// The business-day cut-off.
    pub cutoff: Cutoff,
    /// How long after the cut-off a booking of the day may still be in flight: the request
    /// deadline.
    pub grace: std::time::Duration,
}

impl Issuer<'_> {
    /// The clearing file of `day`: the stored one when it was exported before, else made now
    /// (when the day has ended and the day before was exported), signed, and stored.
    pub async fn export(&self, day: Date, now: OffsetDateTime) -> Result<StoredClearingFile, ClearingError> {
        if let Some(stored) = self.ledger.clearing_file(day).await? {
            return Ok(stored);
        }
        let from = self.cutoff.day_end(day) + Duration::try_from(self.grace).unwrap_or(Duration::MAX);
        if now < from {
            return Err(ClearingError::NotEnded { day, from });
        }
        let previous_sha256 = match self.ledger.latest_cleared_day().await? {
            None => None,
            Some(latest) if latest > day => {
                return Err(ClearingError::BeforeFirst { day, first: latest });
            }
            Some(latest) if latest.next_day() != Some(day) => {
                let previous = day.previous_day().unwrap_or(day);
                return Err(ClearingError::PreviousNotExported { day, previous, latest });
            }
            Some(latest) => {
                let stored = self.ledger.clearing_file(latest).await?;
                Some(stored.ok_or(LedgerError::Corrupt("clearing_files: the latest day vanished"))?.sha256)
            }
        };
        let entries = self.ledger.clearing_entries(day).await?;
        let file =
            ClearingFile::new(self.iin.as_str(), &day.to_string(), &self.cutoff.as_text(), previous_sha256, entries)
                .map_err(|source| ClearingError::File { path: PathBuf::from(file_name(self.iin, day)), source })?;
        let bytes = file.to_bytes();
        let jws = self.signer.sign(self.hsm, &bytes).await.map_err(|e| ClearingError::Sign(e.to_string()))?;
        let sha256 = clearing::sha256_hex(&bytes);
        self.ledger.store_clearing_file(StoredClearingFile { business_day: day, sha256, bytes, jws }).await?;
        // Another export may have stored its file first: the stored one is the day's file.
        let stored = self.ledger.clearing_file(day).await?;
        Ok(stored.ok_or(LedgerError::Corrupt("clearing_files: the stored file vanished"))?)
    }
}

/// `clearing-<iin>-<day>.json`.
pub fn file_name(iin: Iin, day: Date) -> String {
    clearing::file_name(iin.as_str(), &day.to_string())
}

/// Writes a stored file and its JWS into `dir`; returns the file's path.
pub fn write_files(dir: &Path, iin: Iin, file: &StoredClearingFile) -> Result<PathBuf, ClearingError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(file_name(iin, file.business_day));
    let jws_path = run::signature_path(&path);
    std::fs::write(&path, &file.bytes).map_err(io(&path))?;
    std::fs::write(&jws_path, format!("{}\n", file.jws)).map_err(io(&jws_path))?;
    Ok(path)
}

/// One file `verify` checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Its business day.
    pub business_day: String,
    /// Its entries.
    pub entries: usize,
    /// SHA-256 of its bytes.
    pub sha256: String,
}

/// Checks every clearing file of bank `iin` in `dir`: its bytes, its signature (a bank
/// signing certificate of `trust` naming `iin`), the chain of `previous_sha256` over
/// consecutive days, and, for each day the ledger exported, that the file is the exported one.
pub async fn verify(
    dir: &Path,
    iin: Iin,
    trust: &TrustStore,
    ledger: &Ledger,
    now: OffsetDateTime,
) -> Result<Vec<Verified>, ClearingError> {
    let prefix = format!("clearing-{}-", iin.as_str());
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(&prefix) && name.ends_with(".json"))
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(ClearingError::Refused(format!("no clearing file of bank {} in {}", iin.as_str(), dir.display())));
    }
    let unix_now = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    ));
    let refused = |e: run::RunError| ClearingError::Refused(e.to_string());
    let mut reads = Vec::with_capacity(paths.len());
    for path in &paths {
        // The settlement center's own reading: bounded, parsed, signed by a bank certificate
        // of the scheme naming the file's issuer.
        let read = run::read_clearing_file(path, clearing::FILE_BYTES_MAX as u64).map_err(refused)?;
        run::verify_signature(&read, trust, unix_now).map_err(refused)?;
        let refuse = |why: String| ClearingError::Refused(format!("{}: {why}", path.display()));
        if read.file.issuer_iin != iin.as_str() {
            return Err(refuse(format!("issued by {}, not by this bank", read.file.issuer_iin)));
        }
        let day = clearing::parse_day(&read.file.business_day).ok_or_else(|| refuse("business_day".to_owned()))?;
        if path.file_name().and_then(|n| n.to_str()) != Some(file_name(iin, day).as_str()) {
            return Err(refuse(format!("its name does not match its business day {day}")));
        }
        if let Some(stored) = ledger.clearing_file(day).await?
            && stored.sha256 != read.sha256
        {
            return Err(refuse("it is not the file this bank exported for that day".to_owned()));
        }
        reads.push(read);
    }
    // Across the files, as the settlement center checks them: no day or transaction twice,
    // consecutive days, each naming the SHA-256 of the day before.
    run::check_together(&reads).map_err(refused)?;
    Ok(reads
        .into_iter()
        .map(|read| Verified {
            business_day: read.file.business_day,
            entries: read.file.entries.len(),
            sha256: read.sha256,
        })
        .collect())
}

/// What `settle` booked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The cleared days of this bank the positions cover.
    pub days: Vec<String>,
    /// (acquirer, currency, amount) paid.
    pub payments: Vec<(Iin, Currency, i64)>,
}

/// Books the positions file at `path` for bank `iin`: only when every file of this bank it
/// was computed from is a file this bank exported.
pub async fn settle(path: &Path, iin: Iin, ledger: &Ledger) -> Result<Settled, ClearingError> {
    let size = std::fs::metadata(path).map_err(io(path))?.len();
    if size > POSITIONS_BYTES_MAX {
        return Err(ClearingError::Refused(format!("{}: larger than {POSITIONS_BYTES_MAX} bytes", path.display())));
    }
    let bytes = std::fs::read(path).map_err(io(path))?;
    let refuse = |why: String| ClearingError::Refused(format!("{}: {why}", path.display()));
    let positions: Positions =
        serde_json::from_slice(&bytes).map_err(|e| refuse(format!("not a positions file: {e}")))?;
    if positions.format != positions::FORMAT {
        return Err(refuse(format!("format {:?} is not {}", positions.format, positions::FORMAT)));
    }
    let mut days = Vec::new();
    for file in positions.files.iter().filter(|f| f.issuer_iin == iin.as_str()) {
        let day = clearing::parse_day(&file.business_day)
            .ok_or_else(|| refuse(format!("business_day {:?}", file.business_day)))?;
        match ledger.clearing_file(day).await? {
            Some(stored) if stored.sha256 == file.sha256 => days.push(file.business_day.clone()),
            Some(_) => return Err(refuse(format!("its file of {day} is not the one this bank exported"))),
            None => return Err(refuse(format!("this bank has not exported a file of {day}"))),
        }
    }
    if days.is_empty() {
        return Err(refuse(format!("no clearing file of bank {} in it", iin.as_str())));
    }
    let mut payments = Vec::new();
    for row in positions.bilateral.iter().filter(|row| row.issuer_iin == iin.as_str()) {
        let acquirer = Iin::new(&row.acquirer_iin).map_err(|e| refuse(format!("acquirer_iin: {e}")))?;
        let currency = Currency::from_code(row.currency).map_err(|e| refuse(format!("currency: {e}")))?;
        payments.push((acquirer, currency, row.amount));
    }
    let booking = SettlementBooking { positions_sha256: clearing::sha256_hex(&bytes), payments: payments.clone() };
    ledger.book_settlement(booking).await?;
    Ok(Settled { days, payments })
}
