//! `settlement run` (docs/CLEARING.md): reads every clearing file with its detached JWS, checks
//! each one (bytes, signature of the issuer's bank signing certificate) and all of them together
//! (no day twice, no transaction id twice, each issuer's days chained without a gap), nets them
//! ([`crate::positions`]) and writes `positions.json` and `positions.csv`. Any failure refuses the
//! whole run: the outputs are written to temporary files and put in place only at the end.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use mps_pki::jws::{self, JWS_BYTES_MAX, JwsError};
use mps_pki::{Role, TrustStore};
use rustls_pki_types::UnixTime;
use time::Date;

use crate::clearing::{ClearingError, ClearingFile, sha256_hex};
use crate::positions::{self, Positions, PositionsError};

/// The netted positions, JSON.
pub const POSITIONS_JSON: &str = "positions.json";
/// The same rows, CSV.
pub const POSITIONS_CSV: &str = "positions.csv";
/// The detached signature beside each clearing file: `<file>.jws`.
pub const SIGNATURE_SUFFIX: &str = ".jws";

/// Why a run was refused. Every variant names the file (or files) at fault and says what to do;
/// nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// No file given.
    #[error("no clearing file given: pass --file for each issuer's file of each day")]
    NoFiles,
    /// More files than `limits.files_max`.
    #[error(
        "{count} clearing files given, more than limits.files_max = {max}: settle in smaller runs or raise the limit"
    )]
    TooManyFiles {
        /// Files given.
        count: usize,
        /// The limit.
        max: u32,
    },
    /// A file (or its signature) could not be read.
    #[error("cannot read {}: {source} (check the path and that the file was copied completely)", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The detached signature `<file>.jws` is missing.
    #[error("{} has no signature {}: copy the issuer's .jws file beside it", .file.display(), .signature.display())]
    MissingSignature {
        /// The clearing file.
        file: PathBuf,
        /// Where its signature was looked for.
        signature: PathBuf,
    },
    /// A file (or its signature) is larger than its limit.
    #[error("{} is larger than {max} bytes: raise limits.file_bytes_max if the file is genuine", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// A file is not a valid clearing file.
    #[error("{} is not a valid clearing file ({source}): ask the issuer to export the day again", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: ClearingError,
    },
    /// The signature does not verify, or its certificate is not a bank signing certificate of
    /// the scheme at this time (chain, validity, revocation).
    #[error("the signature of {} is refused ({source}): the file was changed after signing, or the certificate is not a valid bank signing certificate of the scheme; ask the issuer for the file and its .jws again, and check --trust and --crl", .path.display())]
    Signature {
        /// The clearing file.
        path: PathBuf,
        /// Why.
        #[source]
        source: JwsError,
    },
    /// The signing certificate names another bank than the file's issuer.
    #[error("{} says issuer {issuer_iin} but is signed by bank {certificate_iin}: refuse it and report it to the scheme", .path.display())]
    WrongBank {
        /// The clearing file.
        path: PathBuf,
        /// The file's `issuer_iin`.
        issuer_iin: String,
        /// The IIN of the signing certificate (empty if it names none).
        certificate_iin: String,
    },
    /// The same file was given twice.
    #[error("{} and {} are the same file (issuer {issuer_iin}, day {day}): give each file once", .first.display(), .second.display())]
    FileTwice {
        /// The issuer.
        issuer_iin: String,
        /// The day.
        day: String,
        /// The first path.
        first: PathBuf,
        /// The second path.
        second: PathBuf,
    },
    /// Two different files of the same issuer and day.
    #[error("{} and {} are two different files of issuer {issuer_iin} for day {day}: keep the one the issuer's next day chains to (authz clearing verify tells) and remove the other", .first.display(), .second.display())]
    DayTwice {
        /// The issuer.
        issuer_iin: String,
        /// The day.
        day: String,
        /// The first path.
        first: PathBuf,
        /// The second path.
        second: PathBuf,
    },
    /// A transaction id appears in two files.
    #[error("transaction {txn_id} appears in {} and in {}: a transaction is in exactly one file; ask the issuers which file is wrong", .first.display(), .second.display())]
    TxnTwice {
        /// The transaction.
        txn_id: String,
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
    },
    /// A day between two of an issuer's files is missing.
    #[error("issuer {issuer_iin}'s file of day {missing_day} is missing (between {} and {}): add it to the run, or ask the issuer to export it", .after.display(), .before.display())]
    MissingDay {
        /// The issuer.
        issuer_iin: String,
        /// The first missing day.
        missing_day: String,
        /// The file of the day before the gap.
        after: PathBuf,
        /// The file of the day after the gap.
        before: PathBuf,
    },
    /// A file's `previous_sha256` is not the hash of the issuer's file of the previous day.
    #[error("{} (issuer {issuer_iin}, day {day}) does not chain to {} (the previous day): one of the two was replaced; ask the issuer for its exported files again", .path.display(), .previous.display())]
    BrokenChain {
        /// The issuer.
        issuer_iin: String,
        /// The day whose `previous_sha256` does not match.
        day: String,
        /// That day's file.
        path: PathBuf,
        /// The previous day's file.
        previous: PathBuf,
    },
    /// The positions could not be computed.
    #[error(transparent)]
    Positions(#[from] PositionsError),
    /// An output already exists.
    #[error("{} already exists: move it away or choose another --out (a positions file is never overwritten)", .path.display())]
    OutputExists {
        /// The existing file.
        path: PathBuf,
    },
    /// An output could not be written.
    #[error("cannot write {}: {source} (check --out; nothing was written)", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A clearing file as read: its path, its bytes and what they parse to.
#[derive(Debug, Clone)]
pub struct ReadFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its bytes (what the JWS signs and the next day hashes).
    pub bytes: Vec<u8>,
    /// The parsed, self-consistent file.
    pub file: ClearingFile,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

/// What a run needs.
#[derive(Debug)]
pub struct RunRequest<'a> {
    /// The clearing files; each one's signature is `<file>.jws`.
    pub files: &'a [PathBuf],
    /// The scheme's trust anchors and CRLs.
    pub trust: &'a TrustStore,
    /// The time certificates and CRLs are checked at.
    pub now: UnixTime,
    /// Largest clearing file, bytes.
    pub file_bytes_max: u64,
    /// Most files.
    pub files_max: u32,
    /// Where `positions.json` and `positions.csv` go (created if missing).
    pub out: &'a Path,
}

/// A finished run.
#[derive(Debug)]
pub struct RunOutcome {
    /// What was written.
    pub positions: Positions,
    /// The two files written.
    pub written: [PathBuf; 2],
}

/// Checks every file, nets them and writes the positions; on any error nothing is written.
pub fn run(request: &RunRequest<'_>) -> Result<RunOutcome, RunError> {
    let files = check_files(request)?;
    let pairs: Vec<(&ClearingFile, &[u8])> = files.iter().map(|read| (&read.file, read.bytes.as_slice())).collect();
    let positions = positions::compute(&pairs)?;
    let written = write_outputs(request.out, &positions)?;
    Ok(RunOutcome { positions, written })
}

/// Reads and verifies every file, then checks them together.
pub fn check_files(request: &RunRequest<'_>) -> Result<Vec<ReadFile>, RunError> {
    if request.files.is_empty() {
        return Err(RunError::NoFiles);
    }
    if request.files.len() > request.files_max as usize {
        return Err(RunError::TooManyFiles { count: request.files.len(), max: request.files_max });
    }
    let mut files = Vec::with_capacity(request.files.len());
    for path in request.files {
        let read = read_clearing_file(path, request.file_bytes_max)?;
        verify_signature(&read, request.trust, request.now)?;
        files.push(read);
    }
    check_together(&files)?;
    Ok(files)
}

/// The checks across files, each read and verified: no (issuer, day) twice, no transaction id
/// in two files, and each issuer's days consecutive and chained.
pub fn check_together(files: &[ReadFile]) -> Result<(), RunError> {
    check_days_unique(files)?;
    check_txns_unique(files)?;
    check_chains(files)
}

/// The path of a clearing file's detached signature: `<file>.jws`.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(SIGNATURE_SUFFIX);
    PathBuf::from(name)
}

/// Reads a clearing file (at most `bytes_max` bytes) and parses it.
pub fn read_clearing_file(path: &Path, bytes_max: u64) -> Result<ReadFile, RunError> {
    let bytes = read_bounded(path, bytes_max)?;
    let file = ClearingFile::from_bytes(&bytes).map_err(|source| RunError::Parse { path: path.to_owned(), source })?;
    let sha256 = sha256_hex(&bytes);
    Ok(ReadFile { path: path.to_owned(), bytes, file, sha256 })
}

/// Reads `<file>.jws` and verifies it over the file's bytes for a bank signing certificate of
/// the scheme at `now`, whose IIN must be the file's issuer.
pub fn verify_signature(read: &ReadFile, trust: &TrustStore, now: UnixTime) -> Result<(), RunError> {
    let signature_path = signature_path(&read.path);
    // The JWS plus a line end.
    let text = match read_bounded(&signature_path, JWS_BYTES_MAX as u64 + 2) {
        Ok(bytes) => bytes,
        Err(RunError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(RunError::MissingSignature { file: read.path.clone(), signature: signature_path });
        }
        Err(other) => return Err(other),
    };
    let signature_error = |source| RunError::Signature { path: read.path.clone(), source };
    let text = std::str::from_utf8(&text).map_err(|_| signature_error(JwsError::Malformed))?;
    let jws = text.strip_suffix('\n').unwrap_or(text);
    let signer = jws::verify_detached(jws, &read.bytes, trust, Role::BankSigning, now).map_err(signature_error)?;
    let certificate_iin = signer.bank_iin.as_ref().map(|iin| iin.as_str().to_owned()).unwrap_or_default();
    if certificate_iin != read.file.issuer_iin {
        return Err(RunError::WrongBank {
            path: read.path.clone(),
            issuer_iin: read.file.issuer_iin.clone(),
            certificate_iin,
        });
    }
    Ok(())
}

/// Reads at most `bytes_max` bytes; a longer file is refused, not cut.
fn read_bounded(path: &Path, bytes_max: u64) -> Result<Vec<u8>, RunError> {
    let read_error = |source| RunError::Read { path: path.to_owned(), source };
    let file = File::open(path).map_err(read_error)?;
    let length = file.metadata().map_err(read_error)?.len();
    if length > bytes_max {
        return Err(RunError::TooLarge { path: path.to_owned(), max: bytes_max });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
    // One byte more than the limit tells a file that grew while being read.
    file.take(bytes_max.saturating_add(1)).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > bytes_max {
        return Err(RunError::TooLarge { path: path.to_owned(), max: bytes_max });
    }
    Ok(bytes)
}

/// No (issuer, day) twice: the same file given twice, or two different files of one day.
fn check_days_unique(files: &[ReadFile]) -> Result<(), RunError> {
    let mut seen: HashMap<(&str, &str), &ReadFile> = HashMap::with_capacity(files.len());
    for read in files {
        let key = (read.file.issuer_iin.as_str(), read.file.business_day.as_str());
        if let Some(first) = seen.insert(key, read) {
            let (issuer_iin, day) = (key.0.to_owned(), key.1.to_owned());
            let same = first.sha256 == read.sha256;
            let (first, second) = (first.path.clone(), read.path.clone());
            return Err(if same {
                RunError::FileTwice { issuer_iin, day, first, second }
            } else {
                RunError::DayTwice { issuer_iin, day, first, second }
            });
        }
    }
    Ok(())
}

/// No transaction id in two files (within one file [`ClearingFile::from_bytes`] checked it).
fn check_txns_unique(files: &[ReadFile]) -> Result<(), RunError> {
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for read in files {
        for entry in &read.file.entries {
            if let Some(first) = seen.insert(entry.txn_id.as_str(), &read.path) {
                return Err(RunError::TxnTwice {
                    txn_id: entry.txn_id.clone(),
                    first: first.to_owned(),
                    second: read.path.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Per issuer, in order of day: each day follows the previous one and names its SHA-256. The
/// issuer's first file of the run is not checked against anything (its previous day is not here).
fn check_chains(files: &[ReadFile]) -> Result<(), RunError> {
    let mut by_issuer: BTreeMap<&str, Vec<(Date, &ReadFile)>> = BTreeMap::new();
    for read in files {
        by_issuer.entry(read.file.issuer_iin.as_str()).or_default().push((business_day(read)?, read));
    }
    for (issuer, days) in &mut by_issuer {
        days.sort_by_key(|(day, _)| *day);
        for pair in days.windows(2) {
            let [(previous_day, previous), (day, read)] = pair else { continue };
            let expected = previous_day.next_day();
            if expected != Some(*day) {
                return Err(RunError::MissingDay {
                    issuer_iin: (*issuer).to_owned(),
                    missing_day: expected.map_or_else(String::new, format_day),
                    after: previous.path.clone(),
                    before: read.path.clone(),
                });
            }
            if read.file.previous_sha256.as_deref() != Some(previous.sha256.as_str()) {
                return Err(RunError::BrokenChain {
                    issuer_iin: (*issuer).to_owned(),
                    day: read.file.business_day.clone(),
                    path: read.path.clone(),
                    previous: previous.path.clone(),
                });
            }
        }
    }
    Ok(())
}

fn business_day(read: &ReadFile) -> Result<Date, RunError> {
    // The file parsed, so its business_day is a date; the error is for a broken invariant only.
    crate::clearing::parse_day(&read.file.business_day).ok_or_else(|| RunError::Parse {
        path: read.path.clone(),
        source: ClearingError::Field { field: "business_day".to_owned(), problem: "must be a date YYYY-MM-DD" },
    })
}

fn format_day(day: Date) -> String {
    format!("{:04}-{:02}-{:02}", day.year(), u8::from(day.month()), day.day())
}

/// Writes `positions.json` and `positions.csv` into `dir`: both to temporary files first, then
/// linked into place (which, unlike a rename, refuses to replace an existing file), then read
/// back and checked.
fn write_outputs(dir: &Path, positions: &Positions) -> Result<[PathBuf; 2], RunError> {
    // The invariant of the file, checked before it exists: a bug must not publish an unbalanced
    // settlement. This is not an operating error but a broken program: stop.
    assert!(positions.is_balanced(), "positions do not net to zero per currency; nothing written");
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| RunError::Write { path, source }
    };
    fs::create_dir_all(dir).map_err(write_error(dir))?;
    let outputs = [(POSITIONS_JSON, positions.to_json()), (POSITIONS_CSV, positions.to_csv())];
    for (name, _) in &outputs {
        let path = dir.join(name);
        if path.exists() {
            return Err(RunError::OutputExists { path });
        }
    }
    let mut temporaries = Temporaries(Vec::new());
    for (name, bytes) in &outputs {
        let path = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let mut file =
            OpenOptions::new().write(true).create(true).truncate(true).open(&path).map_err(write_error(&path))?;
        temporaries.0.push(path.clone());
        file.write_all(bytes).and_then(|()| file.sync_all()).map_err(write_error(&path))?;
    }
    let finals = [dir.join(POSITIONS_JSON), dir.join(POSITIONS_CSV)];
    for (index, (temporary, target)) in temporaries.0.iter().zip(&finals).enumerate() {
        if let Err(source) = fs::hard_link(temporary, target) {
            // Take back what this run already put in place: all or nothing.
            for placed in &finals[..index] {
                let _ = fs::remove_file(placed);
            }
            return Err(if source.kind() == std::io::ErrorKind::AlreadyExists {
                RunError::OutputExists { path: target.clone() }
            } else {
                RunError::Write { path: target.clone(), source }
            });
        }
    }
    drop(temporaries);
    File::open(dir).and_then(|directory| directory.sync_all()).map_err(write_error(dir))?;
    // Read back what was written and check it again (the paired assertion).
    let back = fs::read(&finals[0]).map_err(write_error(&finals[0]))?;
    let reread: Result<Positions, _> = serde_json::from_slice(&back);
    assert!(
        reread.is_ok_and(|reread| reread == *positions && reread.is_balanced()),
        "positions.json does not read back as written"
    );
    Ok(finals)
}

/// Temporary files removed when dropped, whether the run succeeded or not.
struct Temporaries(Vec<PathBuf>);

impl Drop for Temporaries {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}
