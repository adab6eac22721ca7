//! `settlement`: the settlement center's command line (docs/CLEARING.md). `run` checks the
//! issuers' signed clearing files and writes the net positions between banks; `reconcile`
//! compares a merchant's export of its paid orders with the clearing files.
//!
//! Exit status: 0 success (reconcile: the two sides agree), 1 reconcile found differences,
//! 2 error (a run refused, a file unreadable, a bad configuration); nothing is written on error.

use std::error::Error;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mps_pki::TrustStore;
use mps_settlement::config::SettlementConfig;
use mps_settlement::reconcile::{self, MerchantExport};
use mps_settlement::run::{self, RunRequest};
use rustls_pki_types::UnixTime;

/// Exit status when reconcile finds differences.
const EXIT_DIFFERENCES: u8 = 1;
/// Exit status on any error.
const EXIT_ERROR: u8 = 2;

/// The MPS settlement center: checks the issuers' clearing files and nets what each bank owes.
#[derive(Debug, Parser)]
#[command(
    name = "settlement",
    version,
    about,
    after_help = "Exit status: 0 success (reconcile: agreement), 1 reconcile found differences, 2 error."
)]
struct Cli {
    /// Configuration file (TOML, see config/settlement.example.toml); MPS_SETTLEMENT__SECTION__KEY
    /// variables override it. Without one, the defaults and the overrides apply.
    #[arg(long, short, env = "MPS_SETTLEMENT_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the clearing files (each with <file>.jws beside it) and write positions.json and
    /// positions.csv into --out. Any failed check refuses the whole run and writes nothing.
    Run {
        /// A clearing file (repeat for every issuer and day).
        #[arg(long = "file", required = true)]
        files: Vec<PathBuf>,
        /// Scheme root CA certificate, PEM (repeatable); replaces trust.scheme_ca of the config.
        #[arg(long)]
        trust: Vec<PathBuf>,
        /// CRLs of the scheme CAs, PEM (repeatable); replaces trust.crls of the config.
        #[arg(long)]
        crl: Vec<PathBuf>,
        /// Directory for positions.json and positions.csv (created if missing; existing
        /// positions files are never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Compare a merchant's export (GET /v1/orders?day=D) with the approvals of that merchant in
    /// the clearing files; print a table, exit 1 when they differ.
    Reconcile {
        /// The merchant server's export, JSON.
        #[arg(long)]
        merchant_export: PathBuf,
        /// The merchant whose export it is (the export does not name it).
        #[arg(long)]
        merchant_id: String,
        /// A clearing file (repeat for every issuer and day).
        #[arg(long = "file", required = true)]
        files: Vec<PathBuf>,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    mps_protocol::closed_pipe::exit_quietly();
    let cli = Cli::parse();
    match execute(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            let mut shown = error.to_string();
            eprintln!("error: {shown}");
            let mut source = error.source();
            while let Some(cause) = source {
                // Most messages already quote their cause; print only what they do not.
                let text = cause.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                shown = text;
                source = cause.source();
            }
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn execute(cli: Cli) -> Result<u8, Box<dyn Error>> {
    let config = SettlementConfig::load(cli.config.as_deref())?;
    match cli.command {
        Command::Run { files, trust, crl, out } => {
            let anchors = if trust.is_empty() { config.trust.scheme_ca.clone() } else { trust };
            let crls = if crl.is_empty() { config.trust.crls.clone() } else { crl };
            if anchors.is_empty() || crls.is_empty() {
                return Err(
                    "give the scheme root CA (--trust or trust.scheme_ca) and its CRLs (--crl or trust.crls)".into()
                );
            }
            let anchors: Vec<&Path> = anchors.iter().map(PathBuf::as_path).collect();
            let crls: Vec<&Path> = crls.iter().map(PathBuf::as_path).collect();
            let trust = TrustStore::from_pem_files(&anchors, &crls)?;
            let outcome = run::run(&RunRequest {
                files: &files,
                trust: &trust,
                now: UnixTime::now(),
                file_bytes_max: config.limits.file_bytes_max,
                files_max: config.limits.files_max,
                out: &out,
            })?;
            println!(
                "{} files checked; {} bilateral and {} net rows written to {} and {}",
                outcome.positions.files.len(),
                outcome.positions.bilateral.len(),
                outcome.positions.net.len(),
                outcome.written[0].display(),
                outcome.written[1].display()
            );
            Ok(0)
        }
        Command::Reconcile { merchant_export, merchant_id, files, out } => {
            if files.len() > config.limits.files_max as usize {
                return Err(run::RunError::TooManyFiles { count: files.len(), max: config.limits.files_max }.into());
            }
            let export = read_export(&merchant_export, config.limits.merchant_export_bytes_max)?;
            let clearing = files
                .iter()
                .map(|path| run::read_clearing_file(path, config.limits.file_bytes_max).map(|read| read.file))
                .collect::<Result<Vec<_>, _>>()?;
            let report = reconcile::reconcile(&merchant_id, &export, &clearing)?;
            print!("{}", report.to_table());
            if let Some(out) = out {
                std::fs::write(&out, report.to_json())
                    .map_err(|error| format!("cannot write {}: {error}", out.display()))?;
            }
            Ok(if report.agrees() { 0 } else { EXIT_DIFFERENCES })
        }
    }
}

fn read_export(path: &Path, bytes_max: u64) -> Result<MerchantExport, Box<dyn Error>> {
    let cannot = |error: &dyn std::fmt::Display| format!("cannot read the merchant export {}: {error}", path.display());
    let file = std::fs::File::open(path).map_err(|error| cannot(&error))?;
    let mut bytes = Vec::new();
    file.take(bytes_max.saturating_add(1)).read_to_end(&mut bytes).map_err(|error| cannot(&error))?;
    if bytes.len() as u64 > bytes_max {
        return Err(cannot(&format!("larger than limits.merchant_export_bytes_max = {bytes_max} bytes")).into());
    }
    serde_json::from_slice(&bytes).map_err(|error| {
        cannot(&format!("{error} (expected the JSON of the merchant server's GET /v1/orders?day=D)")).into()
    })
}
