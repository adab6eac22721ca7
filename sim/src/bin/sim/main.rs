//! `sim`: the payer's SIM payment application on the command line (paper, section 6, Fig. 8).
//!
//! Personalise a key set from the bank's record, register accounts and merchants, pay (build
//! the secured packet and print it or send it to the merchant), read the issuer's answer and
//! advance the key ratchet. Every command checks all its input before it writes the profile.

mod admin;
mod blob;
mod config;
mod error;
mod pay;
mod prompt;
mod send;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mps_sim::{Profile, ProfileError};

use crate::config::Config;
use crate::error::{CliError, EXIT_ERROR};
use crate::prompt::Interactive;

/// The payer's SIM payment application of MPS.
///
/// The profile file stands in for the SIM's secure storage: one key set per issuer, the
/// accounts and the merchants. Start with `sim personalise`, then `sim account add`,
/// `sim merchant add`, `sim pay` and `sim answer`. docs/SIM.md walks through it.
#[derive(Debug, Parser)]
#[command(name = "sim", version, propagate_version = true)]
struct Cli {
    /// TOML config file (example: config/sim.example.toml); MPS_SIM__<KEY> variables override it.
    #[arg(long, global = true, env = "MPS_SIM_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// The SIM profile file (created by `sim personalise`); overrides `profile` in the config.
    #[arg(long, global = true, env = "MPS_SIM_PROFILE", value_name = "FILE")]
    profile: Option<PathBuf>,

    /// When to ask for values missing from the command line: auto asks on a terminal only;
    /// always reads the answers from stdin line by line; never treats them as errors.
    #[arg(long, global = true, value_enum, default_value = "auto", env = "MPS_SIM_INTERACTIVE")]
    interactive: Interactive,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import the bank's personalisation record: one key set per issuer.
    #[command(alias = "personalize")]
    Personalise(admin::PersonaliseArgs),
    /// Manage the accounts this SIM pays from.
    #[command(subcommand)]
    Account(admin::AccountCommand),
    /// Manage the merchants this SIM pays.
    #[command(subcommand)]
    Merchant(admin::MerchantCommand),
    /// Pay: confirm the summary, build the secured packet, print or send it.
    Pay(pay::PayArgs),
    /// Verify and open the issuer's answer, show the outcome, advance the keys.
    Answer(pay::AnswerArgs),
    /// Print or send the pending packet again, byte for byte.
    Resend(pay::ResendArgs),
    /// Show the key sets (never their keys), pending payments, accounts and merchants.
    Status,
}

/// Where a packet goes: stdout (default), a file, or the merchant's server.
#[derive(Debug, Args)]
struct OutputArgs {
    /// POST the packet to the merchant's server and open the answer it brings back. Without a
    /// URL, the merchant's registered URL is used.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    send: Option<String>,
    /// Write the raw 113 packet bytes to this file instead of printing base64.
    #[arg(long, value_name = "FILE", conflicts_with = "send")]
    out: Option<PathBuf>,
    /// Print the packet as hex instead of base64.
    #[arg(long, conflicts_with_all = ["send", "out"])]
    hex: bool,
}

/// What every command needs: the configuration, the profile path and the prompter.
struct Context {
    config: Config,
    profile_path: PathBuf,
    interactive: Interactive,
}

fn run(cli: Cli) -> Result<u8, CliError> {
    let config = Config::load(cli.config.as_deref())?;
    let profile_path = cli.profile.clone().or_else(|| config.profile.clone()).ok_or_else(|| {
        CliError::config(
            "no profile file given: pass --profile, set MPS_SIM_PROFILE, or set profile in the config".into(),
        )
    })?;
    // Every command that may write the profile holds its lock from load to save.
    let _lock = match &cli.command {
        Command::Status
        | Command::Account(admin::AccountCommand::List)
        | Command::Merchant(admin::MerchantCommand::List) => None,
        Command::Personalise(_) => {
            admin::ensure_directory(&profile_path)?;
            Some(Profile::lock(&profile_path)?)
        }
        _ if !profile_path.exists() => return Err(ProfileError::NotFound { path: profile_path }.into()),
        _ => Some(Profile::lock(&profile_path)?),
    };
    let context = Context { config, profile_path, interactive: cli.interactive };
    match cli.command {
        Command::Personalise(args) => admin::personalise(&context, args),
        Command::Account(command) => admin::account(&context, command),
        Command::Merchant(command) => admin::merchant(&context, command),
        Command::Pay(args) => pay::pay(&context, args),
        Command::Answer(args) => pay::answer(&context, args),
        Command::Resend(args) => pay::resend(&context, args),
        Command::Status => admin::status(&context),
    }
}

fn main() -> ExitCode {
    mps_protocol::closed_pipe::exit_quietly();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error}");
            if let Some(hint) = error.hint() {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(EXIT_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
