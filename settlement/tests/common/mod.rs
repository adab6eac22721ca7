//! Test scheme for the settlement tests: a real CA (mps_pki::ca, file keys) in a temporary
//! directory issuing bank signing certificates, real ES256 signatures (software P-256 keys, the
//! same JWS code as the issuers' HSM path), and the clearing files of two issuers and two
//! acquirers over three days, chained and signed.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mps_pki::ca::{self, CaLevel, CertificateAuthority, IssueRequest, RevocationReason, Subject};
use mps_pki::{PkiConfig, SoftwareSigner, TrustStore, jws};
use mps_protocol::Iin;
use mps_settlement::clearing::{ClearingFile, Entry, EntryKind, file_name, sha256_hex};
use mps_settlement::run::{self, RunError, RunOutcome, RunRequest};
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;

pub const ISSUER_A: &str = "400001";
pub const ISSUER_B: &str = "400002";
pub const ACQUIRER_1: &str = "500001";
pub const ACQUIRER_2: &str = "500002";
pub const DAYS: [&str; 3] = ["2026-11-28", "2026-11-29", "2026-11-30"];
pub const EUR: u16 = 978;
pub const USD: u16 = 840;
pub const SHOP: &str = "SHOP-01";

/// A bank's signing identity: certificate chain (leaf, intermediate) and key.
pub struct Bank {
    pub chain: Vec<CertificateDer<'static>>,
    pub signer: SoftwareSigner,
    pub serial_hex: String,
}

/// The scheme CA and a working directory.
pub struct Scheme {
    pub dir: tempfile::TempDir,
    pub authority: CertificateAuthority,
    intermediate_key: rcgen::KeyPair,
}

impl Scheme {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let authority =
            CertificateAuthority::init(&dir.path().join("ca"), &PkiConfig::default(), OffsetDateTime::now_utc())
                .unwrap();
        let intermediate_key = authority.load_file_key(CaLevel::Intermediate).unwrap();
        Self { dir, authority, intermediate_key }
    }

    pub fn bank(&mut self, iin: &str) -> Bank {
        let key = ca::generate_key().unwrap();
        let request = IssueRequest::new(Subject::BankSigning { iin: Iin::new(iin).unwrap() }, &format!("bank {iin}"));
        let issued = self.authority.issue(&request, &key, &self.intermediate_key, OffsetDateTime::now_utc()).unwrap();
        Bank {
            chain: issued.chain.clone(),
            signer: SoftwareSigner::from_pkcs8_pem(&key.serialize_pem()).unwrap(),
            serial_hex: issued.serial_hex.clone(),
        }
    }

    pub fn revoke(&mut self, bank: &Bank) {
        let now = OffsetDateTime::now_utc();
        let level = self.authority.revoke(&bank.serial_hex, RevocationReason::KeyCompromise, now).unwrap();
        self.authority.write_crl(level, &self.intermediate_key, now).unwrap();
    }

    pub fn root_file(&self) -> PathBuf {
        self.authority.cert_path(CaLevel::Root)
    }

    pub fn crls_file(&self) -> PathBuf {
        self.authority.crls_path()
    }

    pub fn trust(&self) -> TrustStore {
        TrustStore::from_pem_files(&[&self.root_file()], &[&self.crls_file()]).unwrap()
    }

    /// A fresh directory under the scheme's.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// Runs the settlement over `files` into `out` at the current time.
    pub fn run(&self, files: &[PathBuf], out: &Path) -> Result<RunOutcome, RunError> {
        run::run(&RunRequest {
            files,
            trust: &self.trust(),
            now: UnixTime::now(),
            file_bytes_max: 1 << 20,
            files_max: 100,
            out,
        })
    }
}

/// Writes `file` into `dir` under its standard name and signs it with `bank` (`<file>.jws`).
pub fn write_signed(dir: &Path, file: &ClearingFile, bank: &Bank) -> PathBuf {
    let bytes = file.to_bytes();
    let path = dir.join(file_name(&file.issuer_iin, &file.business_day));
    std::fs::write(&path, &bytes).unwrap();
    let signature = jws::sign_detached(&bytes, &bank.chain, &bank.signer).unwrap();
    std::fs::write(signature_path(&path), format!("{signature}\n")).unwrap();
    path
}

pub fn signature_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".jws");
    PathBuf::from(name)
}

pub fn txn(issuer: &str, day: usize, n: u32) -> String {
    format!("{issuer:0>8}{day:08x}{n:016x}")
}

pub fn approval(issuer: &str, day: usize, n: u32, acquirer: &str, amount: i64, currency: u16) -> Entry {
    Entry {
        txn_id: txn(issuer, day, n),
        kind: EntryKind::Approval,
        original_txn_id: None,
        auth_code: format!("{:06}", 100_000 + n),
        merchant_id: if acquirer == issuer { "OWN-SHOP".to_owned() } else { SHOP.to_owned() },
        order_no: format!("O-{}-{day}-{n}", &issuer[5..]),
        acquirer_iin: acquirer.to_owned(),
        amount,
        currency,
        time: format!("{}T{:02}:00:00Z", DAYS[day], 8 + n),
    }
}

pub fn reversal(issuer: &str, day: usize, n: u32, original: &Entry) -> Entry {
    Entry {
        txn_id: txn(issuer, day, n),
        kind: EntryKind::Reversal,
        original_txn_id: Some(original.txn_id.clone()),
        amount: -original.amount,
        time: format!("{}T{:02}:00:00Z", DAYS[day], 8 + n),
        ..original.clone()
    }
}

/// The entries of `issuer`'s file of `DAYS[day]`: approvals to both acquirers in EUR, one in
/// USD, one to the issuer's own merchant, and on the last day a reversal of the first day's
/// first approval.
pub fn entries(issuer: &str, day: usize) -> Vec<Entry> {
    let scale = if issuer == ISSUER_A { 1 } else { 3 };
    let base = i64::try_from(day).unwrap() + 1;
    let mut entries = vec![
        approval(issuer, day, 1, ACQUIRER_1, 1000 * base * scale, EUR),
        approval(issuer, day, 2, ACQUIRER_2, 250 * base + scale, EUR),
        approval(issuer, day, 3, ACQUIRER_1, 777 * scale, USD),
        approval(issuer, day, 4, issuer, 50, EUR),
    ];
    if day == 2 {
        entries.push(reversal(issuer, day, 5, &approval(issuer, 0, 1, ACQUIRER_1, 1000 * scale, EUR)));
    }
    entries
}

/// Each issuer's three files, chained.
pub fn chained_files(issuer: &str) -> Vec<ClearingFile> {
    let mut files: Vec<ClearingFile> = Vec::new();
    for (day, name) in DAYS.iter().enumerate() {
        let previous = files.last().map(|file| sha256_hex(&file.to_bytes()));
        files.push(ClearingFile::new(issuer, name, "00:00", previous, entries(issuer, day)).unwrap());
    }
    files
}

/// The two issuers' files written and signed into a fresh directory: (issuer, day index) → path.
pub struct Written {
    pub paths: BTreeMap<(&'static str, usize), PathBuf>,
    pub files: BTreeMap<(&'static str, usize), ClearingFile>,
}

impl Written {
    pub fn all(&self) -> Vec<PathBuf> {
        self.paths.values().cloned().collect()
    }

    pub fn of(&self, issuer: &str) -> Vec<PathBuf> {
        self.paths.iter().filter(|((i, _), _)| *i == issuer).map(|(_, path)| path.clone()).collect()
    }

    pub fn without(&self, issuer: &str, day: usize) -> Vec<PathBuf> {
        self.paths.iter().filter(|((i, d), _)| !(*i == issuer && *d == day)).map(|(_, path)| path.clone()).collect()
    }
}

pub fn write_all(scheme: &Scheme, dir: &Path, bank_a: &Bank, bank_b: &Bank) -> Written {
    let _ = scheme;
    let mut written = Written { paths: BTreeMap::new(), files: BTreeMap::new() };
    for (issuer, bank) in [(ISSUER_A, bank_a), (ISSUER_B, bank_b)] {
        for (day, file) in chained_files(issuer).into_iter().enumerate() {
            written.paths.insert((issuer, day), write_signed(dir, &file, bank));
            written.files.insert((issuer, day), file);
        }
    }
    written
}

/// Nothing in `out` (it does not exist, or is empty).
pub fn assert_nothing_written(out: &Path) {
    if out.exists() {
        let names: Vec<_> = std::fs::read_dir(out).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert!(names.is_empty(), "written: {names:?}");
    }
}
