//! The `sim` commands that set the SIM up: personalise, account, merchant, status.

use std::io::{BufRead, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use mps_protocol::perso::PersoRecord;
use mps_protocol::{Account, AesKey, Iin, MerchantId};
use mps_sim::{MerchantEntry, Profile};
use zeroize::Zeroizing;

use crate::Context;
use crate::blob::read_text_file;
use crate::error::{CliError, EXIT_OK};
use crate::prompt::Prompter;

/// Largest personalisation record read (a record with a certificate chain is a few KiB).
const RECORD_BYTES_MAX: u64 = 256 * 1024;
/// Largest transport key file read.
const KEY_FILE_BYTES_MAX: u64 = 1024;

/// `sim personalise`.
#[derive(Debug, Args)]
pub struct PersonaliseArgs {
    /// The personalisation record (JSON, format mps-perso/1) from the bank's OTA push.
    #[arg(long, value_name = "FILE")]
    record: PathBuf,
    /// File with the SIM vendor's transport key: 64 hex digits. Else MPS_SIM_TRANSPORT_KEY.
    #[arg(long, value_name = "FILE")]
    transport_key_file: Option<PathBuf>,
    /// Replace an existing key set for the same issuer (drops its pending payment, restarts
    /// its counter at 0).
    #[arg(long)]
    force: bool,
}

/// `sim account ...`.
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Register an account at an issuer whose key set this SIM holds.
    Add {
        /// The account number (12 to 19 digits). Asked for when missing.
        #[arg(long)]
        account: Option<String>,
        /// The issuer (6 digits). Defaults to the only key set; asked for when there are several.
        #[arg(long, value_name = "IIN")]
        issuer: Option<String>,
        /// A name to choose the account by.
        #[arg(long)]
        nickname: Option<String>,
    },
    /// List the accounts (masked).
    List,
    /// Remove an account, chosen by nickname, last 4 digits or full number.
    Remove {
        /// Nickname, last 4 digits or full number.
        account: String,
    },
}

/// `sim merchant ...`.
#[derive(Debug, Subcommand)]
pub enum MerchantCommand {
    /// Register a merchant.
    Add {
        /// The merchant id (1 to 15 printable characters, as on the merchant's till). Asked for
        /// when missing.
        #[arg(long = "id", value_name = "MERCHANT_ID")]
        merchant_id: Option<String>,
        /// A display name.
        #[arg(long)]
        name: Option<String>,
        /// The merchant server's URL for `sim pay --send`.
        #[arg(long)]
        url: Option<String>,
    },
    /// List the merchants.
    List,
    /// Remove a merchant.
    Remove {
        /// The merchant id.
        merchant_id: String,
    },
}

fn transport_key(path: Option<&Path>) -> Result<AesKey, CliError> {
    let text = match path {
        Some(path) => read_text_file(path, KEY_FILE_BYTES_MAX, "transport key file")?,
        None => match std::env::var("MPS_SIM_TRANSPORT_KEY") {
            Ok(value) => Zeroizing::new(value),
            Err(_) => {
                return Err(CliError::input(
                    "no transport key: pass --transport-key-file <file> or set MPS_SIM_TRANSPORT_KEY".into(),
                ));
            }
        },
    };
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), &mut bytes[..])
        .map_err(|_| CliError::input("the transport key must be exactly 64 hex digits".into()))?;
    Ok(AesKey::from_bytes(*bytes))
}

/// Creates the profile's directory (mode 0700) if it does not exist yet.
pub fn ensure_directory(profile_path: &Path) -> Result<(), CliError> {
    match profile_path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && !parent.exists() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| CliError::input(format!("cannot create {}: {e}", parent.display()))),
        _ => Ok(()),
    }
}

/// `sim personalise`.
pub fn personalise(context: &Context, args: PersonaliseArgs) -> Result<u8, CliError> {
    let text = read_text_file(&args.record, RECORD_BYTES_MAX, "personalisation record")?;
    let record = PersoRecord::from_json(&text).map_err(mps_sim::SimError::from)?;
    let key = transport_key(args.transport_key_file.as_deref())?;
    let mut profile = Profile::load_or_new(&context.profile_path)?;
    let key_set = profile.personalise(&record, &key, args.force)?;
    let (iin, sim_id) = (key_set.iin(), key_set.sim_id().clone());
    profile.save(&context.profile_path)?;
    println!("Personalised: issuer {iin}, SIM {sim_id}, ready for payment #1.");
    eprintln!("Next: register an account at this issuer with `sim account add --issuer {iin}`.");
    Ok(EXIT_OK)
}

fn choose_issuer<R: BufRead, W: Write>(
    profile: &Profile,
    given: Option<String>,
    prompter: &mut Prompter<R, W>,
) -> Result<Iin, CliError> {
    if let Some(text) = given {
        let iin = Iin::new(&text).map_err(|e| CliError::input(format!("--issuer: {e}")))?;
        return Ok(iin);
    }
    let issuers: Vec<Iin> = profile.key_sets().map(|k| k.iin()).collect();
    match issuers.as_slice() {
        [] => Err(CliError::input("this SIM holds no key set yet: run `sim personalise` first".into())),
        [only] => Ok(*only),
        several => {
            let labels: Vec<String> = several.iter().map(|iin| format!("issuer {iin}")).collect();
            let index = prompter.choose("--issuer", "Issuers", &labels, |answer| {
                several
                    .iter()
                    .position(|iin| iin.as_str() == answer)
                    .ok_or_else(|| format!("no key set for issuer {answer:?}"))
            })?;
            Ok(several[index])
        }
    }
}

/// `sim account ...`.
pub fn account(context: &Context, command: AccountCommand) -> Result<u8, CliError> {
    let mut profile = Profile::load(&context.profile_path)?;
    match command {
        AccountCommand::Add { account, issuer, nickname } => {
            let mut prompter = Prompter::stdio(context.interactive);
            let account = match account {
                Some(text) => Account::new(&text).map_err(|e| CliError::input(format!("--account: {e}")))?,
                None => prompter.ask("--account", "Account number (12 to 19 digits)", |answer| {
                    Account::new(answer).map_err(|e| e.to_string())
                })?,
            };
            let iin = choose_issuer(&profile, issuer, &mut prompter)?;
            let label = match &nickname {
                Some(nickname) => format!("{nickname} ({})", account.masked()),
                None => account.masked(),
            };
            profile.add_account(account, iin, nickname)?;
            profile.save(&context.profile_path)?;
            println!("Added account {label} at issuer {iin}.");
        }
        AccountCommand::List => {
            if profile.accounts().is_empty() {
                eprintln!("No accounts yet: add one with `sim account add`.");
            }
            for entry in profile.accounts() {
                println!("{}", entry.label());
            }
        }
        AccountCommand::Remove { account } => {
            let removed = profile.remove_account(&account)?;
            profile.save(&context.profile_path)?;
            println!("Removed account {}.", removed.label());
        }
    }
    Ok(EXIT_OK)
}

/// `sim merchant ...`.
pub fn merchant(context: &Context, command: MerchantCommand) -> Result<u8, CliError> {
    let mut profile = Profile::load(&context.profile_path)?;
    match command {
        MerchantCommand::Add { merchant_id, name, url } => {
            let merchant_id = match merchant_id {
                Some(text) => MerchantId::new(&text).map_err(|e| CliError::input(format!("--id: {e}")))?,
                None => {
                    Prompter::stdio(context.interactive).ask("--id", "Merchant id (1 to 15 characters)", |answer| {
                        MerchantId::new(answer).map_err(|e| e.to_string())
                    })?
                }
            };
            let entry = MerchantEntry::new(merchant_id, name, url)?;
            let label = entry.label();
            profile.add_merchant(entry)?;
            profile.save(&context.profile_path)?;
            println!("Added merchant {label}.");
        }
        MerchantCommand::List => {
            if profile.merchants().is_empty() {
                eprintln!("No merchants yet: add one with `sim merchant add --id <merchant id>`.");
            }
            for entry in profile.merchants() {
                match &entry.url {
                    Some(url) => println!("{}  {url}", entry.label()),
                    None => println!("{}", entry.label()),
                }
            }
        }
        MerchantCommand::Remove { merchant_id } => {
            let removed = profile.remove_merchant(&merchant_id)?;
            profile.save(&context.profile_path)?;
            println!("Removed merchant {}.", removed.label());
        }
    }
    Ok(EXIT_OK)
}

/// `sim status`.
pub fn status(context: &Context) -> Result<u8, CliError> {
    let profile = Profile::load(&context.profile_path)?;
    println!("Profile: {}", context.profile_path.display());
    for key_set in profile.key_sets() {
        let completed = key_set.counter().value();
        let pending = match key_set.pending() {
            Some(pending) => {
                let s = pending.summary();
                format!(
                    "payment #{} PENDING ({} to {}, order {})",
                    s.counter.value(),
                    s.amount.display_in(s.currency),
                    s.merchant_id,
                    s.order_no
                )
            }
            None => "no payment pending".to_owned(),
        };
        println!("Issuer {}: SIM {}, {completed} payment(s) completed, {pending}", key_set.iin(), key_set.sim_id());
    }
    println!("Accounts: {}", profile.accounts().len());
    for entry in profile.accounts() {
        println!("  {}", entry.label());
    }
    println!("Merchants: {}", profile.merchants().len());
    for entry in profile.merchants() {
        println!("  {}", entry.label());
    }
    Ok(EXIT_OK)
}
