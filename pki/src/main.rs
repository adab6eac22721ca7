//! `pki`: the scheme CA's command line. Creates the root and intermediate CA, issues certificates
//! per role, revokes, regenerates CRLs and shows certificates (docs/PKI.md).

use std::error::Error;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mps_pki::ca::{
    self, CaLevel, CertificateAuthority, IssueRequest, KeyLocation, RevocationReason, Subject, SubjectFlags, Validity,
};
use mps_pki::{HsmSigner, PkiConfig, Role, hsm, pem};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Parser)]
#[command(name = "pki", version, about = "MPS scheme CA: init, issue, revoke, crl, show")]
struct Cli {
    /// TOML configuration (see config/pki.example.toml); MPS_PKI__<KEY> variables override it.
    #[arg(long, global = true, env = "MPS_PKI_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the scheme root CA and the intermediate CA in a new directory.
    Init {
        /// CA directory (created; must not hold a CA yet).
        #[arg(long)]
        dir: PathBuf,
        /// Keep the intermediate CA key in the HSM: label of an existing P-256 key pair in the
        /// token of --ca-hsm-config (create it with the HSM key ceremony). Default: a PEM file.
        #[arg(long, requires = "ca_hsm_config")]
        intermediate_key_label: Option<String>,
        /// Keep the root CA key in the HSM under this label (as --intermediate-key-label).
        #[arg(long, requires = "ca_hsm_config")]
        root_key_label: Option<String>,
        #[command(flatten)]
        hsm: HsmArgs,
    },
    /// Issue an end-entity certificate for a role; writes <out>.crt (leaf + intermediate) and,
    /// unless the key comes from a CSR or the HSM, <out>.key (PKCS#8 PEM, mode 0600).
    Issue(IssueArgs),
    /// Record a revocation and regenerate the issuing CA's CRL.
    Revoke {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Serial number in hex (colons allowed), as `pki show` prints it.
        #[arg(long)]
        serial: String,
        /// Reason written into the CRL.
        #[arg(long, value_enum, default_value = "unspecified")]
        reason: RevocationReason,
        #[command(flatten)]
        hsm: HsmArgs,
    },
    /// Regenerate CRLs (run well before the last CRL's nextUpdate).
    Crl {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Only this CA's CRL (default: both).
        #[arg(long, value_enum)]
        ca: Option<CaLevel>,
        #[command(flatten)]
        hsm: HsmArgs,
    },
    /// Print subject, issuer, serial, validity, role, identity and fingerprint of each
    /// certificate in a PEM file.
    Show {
        /// PEM file with one or more certificates.
        cert: PathBuf,
    },
}

#[derive(Args)]
struct HsmArgs {
    /// HSM configuration TOML (mps-hsm) of the token holding the CA keys; needed when a CA key
    /// lives in the HSM. The PIN comes from the environment or a file as that configuration
    /// says, never from the command line. MPS_HSM__<KEY> variables override it.
    #[arg(long)]
    ca_hsm_config: Option<PathBuf>,
}

#[derive(Args)]
struct IssueArgs {
    /// Role of the certificate.
    #[arg(value_enum)]
    role: Role,
    /// CA directory.
    #[arg(long)]
    dir: PathBuf,
    /// Subject common name.
    #[arg(long)]
    name: String,
    /// DNS name (TLS roles; server roles need at least one --dns or --ip); repeatable.
    #[arg(long)]
    dns: Vec<String>,
    /// IP address (TLS roles); repeatable.
    #[arg(long)]
    ip: Vec<IpAddr>,
    /// Merchant id (merchant role): 1 to 15 printable ASCII characters.
    #[arg(long)]
    merchant_id: Option<String>,
    /// IIN of the issuing bank (bank-signing role): 6 digits.
    #[arg(long)]
    iin: Option<String>,
    /// Output prefix: writes <out>.crt and <out>.key (or <out>.csr for HSM keys).
    #[arg(long)]
    out: PathBuf,
    /// Validity in days from now (default: leaf_validity_days of the config).
    #[arg(long, conflicts_with_all = ["not_before", "not_after"])]
    days: Option<u32>,
    /// Start of validity, RFC 3339 (with --not-after; for test certificates).
    #[arg(long, requires = "not_after", value_parser = parse_time)]
    not_before: Option<OffsetDateTime>,
    /// End of validity, RFC 3339 (with --not-before).
    #[arg(long, requires = "not_before", value_parser = parse_time)]
    not_after: Option<OffsetDateTime>,
    /// Certify the key of this PKCS#10 request (PEM) instead of generating one.
    #[arg(long, conflicts_with = "hsm_config")]
    csr: Option<PathBuf>,
    /// bank-signing only: certify the bank's key mps-sign (keys.signing) in the HSM of this
    /// mps-hsm configuration (MPS_HSM__<KEY> variables override it). A request signed in the HSM
    /// is written to <out>.csr; the private key never leaves the HSM and no .key file is written.
    #[arg(long)]
    hsm_config: Option<PathBuf>,
    #[command(flatten)]
    hsm: HsmArgs,
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| format!("{text:?} is not an RFC 3339 time like 2030-01-31T12:00:00Z"))
}

fn main() -> ExitCode {
    mps_protocol::closed_pipe::exit_quietly();
    // While this is the only thread: an HSM PIN in the environment leaves it (and
    // /proc/PID/environ) before anything else runs.
    if let Err(error) = mps_hsm::take_pins_from_environment(&[mps_hsm::config::DEFAULT_PIN_ENV]) {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            let mut source = error.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn Error>> {
    let config = PkiConfig::load(cli.config.as_deref())?;
    let now = OffsetDateTime::now_utc();
    match cli.command {
        Command::Init { dir, intermediate_key_label, root_key_label, hsm } => {
            let labels = HsmLabels { root: root_key_label, intermediate: intermediate_key_label };
            init(&dir, &config, &hsm, &labels, now)
        }
        Command::Issue(args) => issue(&args, &config, now),
        Command::Revoke { dir, serial, reason, hsm } => {
            let mut authority = CertificateAuthority::open(&dir, &config)?;
            let level = authority.revoke(&serial, reason, now)?;
            let keys = CaKeys::open(&authority, &hsm, &[level])?;
            let path = authority.write_crl(level, keys.get(level)?, now)?;
            println!("revoked serial {}; CRL written to {}", ca::normalize_serial(&serial)?, path.display());
            println!("distribute {} to every verifier", authority.crls_path().display());
            Ok(())
        }
        Command::Crl { dir, ca, hsm } => {
            let mut authority = CertificateAuthority::open(&dir, &config)?;
            let levels = match ca {
                Some(level) => vec![level],
                None => vec![CaLevel::Root, CaLevel::Intermediate],
            };
            let keys = CaKeys::open(&authority, &hsm, &levels)?;
            for level in levels {
                let path = authority.write_crl(level, keys.get(level)?, now)?;
                println!("CRL written to {}", path.display());
            }
            Ok(())
        }
        Command::Show { cert } => show(&cert),
    }
}

struct HsmLabels {
    root: Option<String>,
    intermediate: Option<String>,
}

fn init(
    dir: &Path,
    config: &PkiConfig,
    hsm: &HsmArgs,
    labels: &HsmLabels,
    now: OffsetDateTime,
) -> Result<(), Box<dyn Error>> {
    let authority = match (&hsm.ca_hsm_config, &labels.root, &labels.intermediate) {
        (Some(hsm_config), root_label, intermediate_label) if root_label.is_some() || intermediate_label.is_some() => {
            let root = NewKey::open(dir, hsm_config, root_label.as_deref(), ca::ROOT_KEY_FILE)?;
            let intermediate = NewKey::open(dir, hsm_config, intermediate_label.as_deref(), ca::INTERMEDIATE_KEY_FILE)?;
            // Key files first: a key that signed a certificate must never be lost.
            std::fs::create_dir_all(dir)
                .map_err(|source| ca::CaError::Io { path: dir.display().to_string(), source })?;
            root.write_file(dir)?;
            intermediate.write_file(dir)?;
            CertificateAuthority::init_with_keys(dir, config, now, root.as_new(), intermediate.as_new())?
        }
        _ => CertificateAuthority::init(dir, config, now)?,
    };
    for level in [CaLevel::Root, CaLevel::Intermediate] {
        let location = match authority.key_location(level) {
            KeyLocation::File { path } => format!("key file {}", dir.join(path).display()),
            KeyLocation::Hsm { label } => format!("key in the HSM, label {label}"),
        };
        println!("{level:?} CA: {} ({location})", authority.cert_path(level).display());
    }
    println!("CRLs: {}", authority.crls_path().display());
    println!("next: pki issue <role> --dir {} --name ... --out ...", dir.display());
    Ok(())
}

/// A new CA key for `init`: generated in software, or an existing key pair in the HSM.
enum NewKey {
    File { key: rcgen::KeyPair, file: &'static str },
    Hsm { signer: HsmSigner, label: String },
}

impl NewKey {
    fn open(dir: &Path, hsm_config: &Path, label: Option<&str>, file: &'static str) -> Result<Self, Box<dyn Error>> {
        if dir.join(file).exists() {
            return Err(ca::CaError::AlreadyInitialized { dir: dir.display().to_string() }.into());
        }
        Ok(match label {
            Some(label) => NewKey::Hsm {
                signer: HsmSigner::connect_blocking(hsm::load_hsm_config(hsm_config, Some(label))?)?,
                label: label.to_owned(),
            },
            None => NewKey::File { key: ca::generate_key()?, file },
        })
    }

    fn as_new(&self) -> ca::NewCaKey<'_> {
        match self {
            NewKey::File { key, file } => {
                ca::NewCaKey { key, location: KeyLocation::File { path: (*file).to_owned() } }
            }
            NewKey::Hsm { signer, label } => {
                ca::NewCaKey { key: signer, location: KeyLocation::Hsm { label: label.clone() } }
            }
        }
    }

    fn write_file(&self, dir: &Path) -> Result<(), ca::CaError> {
        match self {
            NewKey::File { key, file } => {
                ca::write_key_file(&dir.join(file), &zeroize::Zeroizing::new(key.serialize_pem()))
            }
            NewKey::Hsm { .. } => Ok(()),
        }
    }
}

fn issue(args: &IssueArgs, config: &PkiConfig, now: OffsetDateTime) -> Result<(), Box<dyn Error>> {
    let mut authority = CertificateAuthority::open(&args.dir, config)?;
    let flags = SubjectFlags {
        dns_names: args.dns.clone(),
        ip_addresses: args.ip.clone(),
        merchant_id: args.merchant_id.clone(),
        iin: args.iin.clone(),
    };
    let request = IssueRequest {
        subject: Subject::from_flags(args.role, flags)?,
        common_name: args.name.clone(),
        validity: match (args.days, args.not_before, args.not_after) {
            (Some(days), _, _) => Validity::Days(days),
            (None, Some(not_before), Some(not_after)) => Validity::Window { not_before, not_after },
            _ => Validity::Default,
        },
    };
    let extensions: &[&str] = match (&args.csr, &args.hsm_config) {
        (Some(_), _) => &["crt"],
        (None, Some(_)) => &["crt", "csr"],
        (None, None) => &["crt", "key"],
    };
    for extension in extensions {
        let path = ca::with_suffix(&args.out, extension);
        if path.exists() {
            return Err(ca::CaError::OutputExists { path: path.display().to_string() }.into());
        }
    }
    if args.hsm_config.is_some() && args.role != Role::BankSigning {
        return Err("--hsm-config certifies the bank's HSM key and is only for bank-signing; \
                    for other roles pki generates the key, or pass --csr"
            .into());
    }
    let keys = CaKeys::open(&authority, &args.hsm, &[CaLevel::Intermediate])?;
    let ca_key = keys.get(CaLevel::Intermediate)?;
    let written = if let Some(csr_path) = &args.csr {
        let csr = std::fs::read_to_string(csr_path)
            .map_err(|source| ca::CaError::Io { path: csr_path.display().to_string(), source })?;
        let issued = authority.issue_from_csr(&request, &csr, ca_key, now)?;
        print_issued(&issued);
        ca::write_issued(&args.out, &issued, None)?
    } else if let Some(hsm_config) = &args.hsm_config {
        let signer = HsmSigner::connect_blocking(hsm::load_hsm_config(hsm_config, None)?)?;
        let csr = hsm::certificate_request_pem(&signer, &config.organization, &args.name)?;
        let csr_path = ca::with_suffix(&args.out, "csr");
        std::fs::write(&csr_path, &csr)
            .map_err(|source| ca::CaError::Io { path: csr_path.display().to_string(), source })?;
        println!("wrote {} (signed in the HSM)", csr_path.display());
        let issued = authority.issue_from_csr(&request, &csr, ca_key, now)?;
        print_issued(&issued);
        ca::write_issued(&args.out, &issued, None)?
    } else {
        let subject_key = ca::generate_key()?;
        let issued = authority.issue(&request, &subject_key, ca_key, now)?;
        print_issued(&issued);
        let key_pem = zeroize::Zeroizing::new(subject_key.serialize_pem());
        ca::write_issued(&args.out, &issued, Some(&key_pem))?
    };
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn print_issued(issued: &ca::Issued) {
    println!("serial:    {}", issued.serial_hex);
    println!("not after: {}", issued.not_after.format(&Rfc3339).unwrap_or_default());
}

fn show(path: &Path) -> Result<(), Box<dyn Error>> {
    let certificates = pem::load_certificates(path)?;
    let count = certificates.len();
    for (index, der) in certificates.iter().enumerate() {
        let info = mps_pki::inspect(der)?;
        let format = |time: OffsetDateTime| time.format(&Rfc3339).unwrap_or_default();
        let role = match (info.role, info.is_ca) {
            (Some(role), _) => format!("{role} ({})", role.purpose_oid()),
            (None, true) => "certificate authority".to_owned(),
            (None, false) => "none (no MPS key purpose)".to_owned(),
        };
        println!("certificate {} of {count}", index + 1);
        println!("  subject:     {}", info.subject);
        println!("  issuer:      {}", info.issuer);
        println!("  serial:      {}", info.serial_hex);
        println!("  not before:  {}", format(info.not_before));
        println!("  not after:   {}", format(info.not_after));
        println!("  role:        {role}");
        if let Some(merchant_id) = &info.merchant_id {
            println!("  merchant id: {merchant_id}");
        }
        if let Some(iin) = &info.bank_iin {
            println!("  bank iin:    {iin}");
        }
        for dns in &info.dns_names {
            println!("  dns:         {dns}");
        }
        for ip in &info.ip_addresses {
            println!("  ip:          {ip}");
        }
        println!("  sha256:      {}", info.fingerprint_sha256);
    }
    Ok(())
}

/// The CA keys a command needs, loaded from files (or opened in the HSM).
struct CaKeys {
    keys: Vec<(CaLevel, Box<dyn rcgen::SigningKey>)>,
}

impl CaKeys {
    fn open(authority: &CertificateAuthority, hsm: &HsmArgs, levels: &[CaLevel]) -> Result<Self, Box<dyn Error>> {
        let mut keys: Vec<(CaLevel, Box<dyn rcgen::SigningKey>)> = Vec::new();
        for level in levels {
            match authority.key_location(*level) {
                KeyLocation::File { .. } => keys.push((*level, Box::new(authority.load_file_key(*level)?))),
                KeyLocation::Hsm { label } => match &hsm.ca_hsm_config {
                    Some(path) => {
                        let signer = HsmSigner::connect_blocking(hsm::load_hsm_config(path, Some(label))?)?;
                        keys.push((*level, Box::new(signer)));
                    }
                    None => {
                        return Err(ca::CaError::KeyElsewhere {
                            level: *level,
                            location: format!("in the HSM under label {label:?}"),
                            hint: "pass --ca-hsm-config <mps-hsm config>",
                        }
                        .into());
                    }
                },
            }
        }
        Ok(Self { keys })
    }

    fn get(&self, level: CaLevel) -> Result<&dyn rcgen::SigningKey, ca::CaError> {
        self.keys
            .iter()
            .find(|(candidate, _)| *candidate == level)
            .map(|(_, key)| key.as_ref())
            .ok_or(ca::CaError::KeyElsewhere { level, location: "not loaded".to_owned(), hint: "this is a bug in pki" })
    }
}
