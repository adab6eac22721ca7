//! `authz`: the issuing bank's authorization server and its registration commands.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mps_authz::app;
use mps_authz::config::AuthzConfig;
use mps_authz::ledger::{AccountKind, AccountStatus, InternalAccount, NewAccount, SimStatus};
use mps_authz::ops::clearing;
use mps_authz::ops::kek_rotation::{self, RewrapLimits};
use mps_protocol::money::parse_major_amount_or_zero;
use mps_protocol::{Account, Amount, Currency, Password, SimId, format_minor};
use zeroize::Zeroizing;

/// The issuing bank's authorization server (MPS).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML); MPS_AUTHZ__SECTION__KEY variables override it.
    #[arg(long, short, env = "MPS_AUTHZ_CONFIG", default_value = "config/authz.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve authorizations over mTLS until SIGTERM or Ctrl-C.
    Serve,
    /// Read and check the configuration, then print it (no secrets are in it).
    CheckConfig,
    /// Accounts: create, show, statement, password tries, close and reopen.
    #[command(subcommand)]
    Account(AccountCommand),
    /// SIMs: register (writes the personalisation record), block, unblock.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Key custody: how many chain keys are under each KEK version, and moving them to the
    /// newest KEK after `mps-hsm keys rotate-kek` (docs/HSM.md).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Clearing and settlement (docs/CLEARING.md): export a business day's signed clearing
    /// file, verify a directory of them, book the settlement center's positions.
    #[command(subcommand)]
    Clearing(ClearingCommand),
}

#[derive(Debug, Subcommand)]
enum ClearingCommand {
    /// Write the clearing file of a business day that has ended, and its JWS (the same bytes
    /// on every run: the first export is kept in the ledger). Nothing more is booked into
    /// that day afterwards.
    Export {
        /// The business day, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        /// Directory to write clearing-<iin>-<day>.json and .json.jws into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Check every clearing file of this bank in a directory: bytes, signature, the chain of
    /// days, and that each is the file this bank exported.
    Verify {
        /// The directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Book the settlement center's positions.json for this bank: what it owes each acquirer
    /// leaves the acquirer's settlement payable. Once per positions file.
    Settle {
        /// The positions.json `settlement run` wrote.
        #[arg(long)]
        positions: PathBuf,
    },
    /// Show what this bank owes each acquirer and has not settled yet: its settlement
    /// payables, per acquirer and currency (zero once `settle` has booked every cleared day).
    Payables,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// How many stored chain keys are under each KEK version.
    Usage,
    /// Move every chain key still under an older KEK to the newest one, in bounded batches,
    /// while the server keeps serving; then mark each older KEK no record needs as drained, so
    /// that `mps-hsm keys retire-kek` may destroy it. Safe to interrupt and to run again.
    Rewrap {
        /// Chain keys per batch (1 to 10000).
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        /// Moves in flight at once (1 to 256).
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Pause between batches, in milliseconds, to leave room for live traffic.
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Create an account. The payment password is read without echo, or from stdin with
    /// --password-stdin; only its verification value (made in the HSM) is stored.
    Create(CreateAccount),
    /// Show an account's balance, limits and status.
    Show(AccountArg),
    /// Show an account's latest ledger lines.
    Statement {
        #[command(flatten)]
        account: AccountArg,
        /// How many lines.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Clear the count of wrong passwords and lift the lock (code 75).
    ResetPasswordTries(AccountArg),
    /// Close the account: payments are refused with 62.
    Close(AccountArg),
    /// Reopen a closed account.
    Reopen(AccountArg),
}

#[derive(Debug, Args)]
struct AccountArg {
    /// The account number (12 to 19 digits).
    #[arg(long)]
    account: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KindArg {
    Debit,
    Credit,
}

#[derive(Debug, Args)]
struct CreateAccount {
    /// The account number (12 to 19 digits).
    #[arg(long)]
    account: String,
    /// Holder's name.
    #[arg(long)]
    holder: String,
    /// Debit (spends its balance) or credit (spends a credit line).
    #[arg(long, value_enum, default_value = "debit")]
    kind: KindArg,
    /// ISO 4217 currency, e.g. EUR or 978.
    #[arg(long)]
    currency: String,
    /// Opening balance of a debit account, in major units (e.g. 1000.00).
    #[arg(long, default_value = "0")]
    balance: String,
    /// Credit limit of a credit account, in major units.
    #[arg(long, default_value = "0")]
    credit_limit: String,
    /// Largest single payment, in major units.
    #[arg(long, default_value = "1000")]
    per_txn_limit: String,
    /// Largest total of approved payments per business day, in major units.
    #[arg(long, default_value = "5000")]
    daily_limit: String,
    /// Read the payment password from the first line of stdin.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, Subcommand)]
enum SimCommand {
    /// Register a SIM bound to accounts and write its personalisation record.
    Register {
        /// The SIM's ICCID (19 or 20 digits).
        #[arg(long)]
        sim_id: String,
        /// An account to bind (repeat for several).
        #[arg(long = "account", required = true)]
        accounts: Vec<String>,
        /// Transport key label (default: issuer.transport_key).
        #[arg(long)]
        transport_key: Option<String>,
        /// Where to write the personalisation record (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Block a SIM: its packets are refused with 62.
    Block {
        /// The SIM's ICCID.
        #[arg(long)]
        sim_id: String,
    },
    /// Unblock a SIM.
    Unblock {
        /// The SIM's ICCID.
        #[arg(long)]
        sim_id: String,
    },
}

/// An error for the operator: what went wrong and what to do next.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CliError(String);

impl CliError {
    fn new(message: impl std::fmt::Display) -> Self {
        Self(message.to_string())
    }
}

fn main() -> ExitCode {
    mps_protocol::closed_pipe::exit_quietly();
    let cli = Cli::parse();
    let config = match AuthzConfig::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e} (file {})", cli.config.display());
            return ExitCode::FAILURE;
        }
    };
    // While this is the only thread: the PIN leaves the environment (and /proc/PID/environ)
    // before the runtime, the HSM pool or the ledger start any thread.
    if let Err(e) = mps_hsm::take_pins_from_environment(&[&config.hsm.pin_env]) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: AuthzConfig) -> Result<(), CliError> {
    match command {
        Command::CheckConfig => {
            println!("{config:#?}");
            Ok(())
        }
        Command::Serve => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            mps_authz::ops::logging::init(&config.log.level, &config.log.format, std::io::stdout, ansi)
                .map_err(CliError::new)?;
            app::serve(config).await.map_err(CliError::new)
        }
        Command::Account(command) => account(&config, command).await,
        Command::Sim(command) => sim(&config, command).await,
        Command::Keys(command) => keys(&config, command).await,
        Command::Clearing(command) => clearing_command(&config, command).await,
    }
}

async fn clearing_command(config: &AuthzConfig, command: ClearingCommand) -> Result<(), CliError> {
    let parts = app::open_parts(config).await.map_err(CliError::new)?;
    let result = clearing_with(config, &parts, command).await;
    parts.ledger.close().await;
    result
}

async fn clearing_with(config: &AuthzConfig, parts: &app::Parts, command: ClearingCommand) -> Result<(), CliError> {
    let iin = config.issuer.iin;
    match command {
        ClearingCommand::Export { date, out } => {
            let day = mps_settlement::clearing::parse_day(&date)
                .ok_or_else(|| CliError::new(format!("--date {date:?}: give the business day as YYYY-MM-DD")))?;
            let signer = app::answer_signer(config, parts).map_err(CliError::new)?;
            let cutoff = mps_authz::decision::business_day::Cutoff::parse(&config.issuer.business_day_cutoff)
                .map_err(|e| CliError::new(format!("issuer.business_day_cutoff: {e}")))?;
            let issuer = clearing::Issuer {
                hsm: &parts.hsm,
                ledger: &parts.ledger,
                signer: &signer,
                iin,
                cutoff,
                grace: config.server.request_timeout(),
            };
            let file = issuer.export(day, time::OffsetDateTime::now_utc()).await.map_err(CliError::new)?;
            let path = clearing::write_files(&out, iin, &file).map_err(CliError::new)?;
            println!("{} ({} bytes, sha256 {}) and its .jws", path.display(), file.bytes.len(), file.sha256);
        }
        ClearingCommand::Verify { dir } => {
            let trust = mps_authz::ops::revocation::merchant_trust(&config.merchants).map_err(CliError::new)?;
            let checked = clearing::verify(&dir, iin, &trust, &parts.ledger, time::OffsetDateTime::now_utc())
                .await
                .map_err(CliError::new)?;
            for file in &checked {
                println!("  {}  {:>6} entries  sha256 {}  ok", file.business_day, file.entries, file.sha256);
            }
            println!("{} file(s): signatures, bytes and the chain of days verified", checked.len());
        }
        ClearingCommand::Settle { positions } => {
            let settled = clearing::settle(&positions, iin, &parts.ledger).await.map_err(CliError::new)?;
            for (acquirer, currency, amount) in &settled.payments {
                println!("  to {}  {}  {}", acquirer.as_str(), currency, format_minor(i128::from(*amount), *currency));
            }
            println!("settlement of {} booked", settled.days.join(", "));
        }
        ClearingCommand::Payables => {
            let balances = parts.ledger.internal_balances().await.map_err(CliError::new)?;
            let mut open = 0_usize;
            let mut count = 0_usize;
            for balance in &balances {
                if let InternalAccount::SettlementPayable { acquirer_iin } = &balance.account {
                    let amount = format_minor(i128::from(balance.balance), balance.currency);
                    println!("  to {}  {}  {amount}", acquirer_iin.as_str(), balance.currency);
                    count += 1;
                    open += usize::from(balance.balance != 0);
                }
            }
            println!("{count} settlement payable(s), {open} not settled");
        }
    }
    Ok(())
}

async fn keys(config: &AuthzConfig, command: KeysCommand) -> Result<(), CliError> {
    let parts = app::open_parts(config).await.map_err(CliError::new)?;
    let print_usage = |usage: &[(u32, u64)]| {
        for (version, count) in usage {
            let label = mps_hsm::custody::kek_label(&config.hsm.keys.key_encryption, *version);
            println!("  {label:<20} {count} chain key(s)");
        }
    };
    match command {
        KeysCommand::Usage => {
            println!("new chain keys are wrapped under KEK version {}", parts.hsm.kek_version_newest());
            print_usage(&parts.ledger.kek_usage().await.map_err(CliError::new)?);
        }
        KeysCommand::Rewrap { batch_size, concurrency, pause_ms } => {
            let pin = config.hsm.load_pin().map_err(CliError::new)?;
            let limits = RewrapLimits {
                batch_size,
                concurrency,
                pause: std::time::Duration::from_millis(pause_ms),
                ..RewrapLimits::default()
            };
            println!("moving chain keys to KEK version {}", parts.hsm.kek_version_newest());
            let report =
                kek_rotation::rewrap(&parts.hsm, &parts.ledger, &config.hsm, &pin, limits, |moved, superseded| {
                    eprintln!("  ... {moved} moved, {superseded} superseded by a payment");
                })
                .await
                .map_err(CliError::new)?;
            println!(
                "{} moved, {} superseded by a payment (already under the newest KEK)",
                report.moved, report.superseded
            );
            print_usage(&report.usage);
            for label in &report.drained {
                println!("  {label:<20} drained: no chain key needs it; `mps-hsm keys retire-kek` may destroy it");
            }
            let left: u64 = report.usage.iter().filter(|(v, _)| *v < report.newest).map(|(_, count)| count).sum();
            if left > 0 {
                parts.ledger.close().await;
                return Err(CliError::new(format!(
                    "{left} chain key(s) are still under an older KEK (a server that has not yet adopted the \
                     newest KEK wrote them): run `authz keys rewrap` again"
                )));
            }
        }
    }
    parts.ledger.close().await;
    Ok(())
}

fn parse_account(text: &str) -> Result<Account, CliError> {
    Account::new(text).map_err(|e| CliError::new(format!("--account: {e}")))
}

fn amount(flag: &str, text: &str, currency: Currency) -> Result<Amount, CliError> {
    parse_major_amount_or_zero(text, currency).map_err(|e| CliError::new(format!("{flag}: {e}")))
}

fn read_password(from_stdin: bool) -> Result<Password, CliError> {
    let text = if from_stdin || !std::io::stdin().is_terminal() {
        let mut input = Zeroizing::new(String::new());
        std::io::stdin().read_to_string(&mut input).map_err(|e| CliError::new(format!("cannot read stdin: {e}")))?;
        Zeroizing::new(input.lines().next().unwrap_or("").to_owned())
    } else {
        Zeroizing::new(
            rpassword::prompt_password("Payment password: ")
                .map_err(|e| CliError::new(format!("cannot read the password: {e}")))?,
        )
    };
    Password::new(&text).map_err(|e| CliError::new(format!("payment password refused: {e}")))
}

async fn account(config: &AuthzConfig, command: AccountCommand) -> Result<(), CliError> {
    let parts = app::open_parts(config).await.map_err(CliError::new)?;
    match command {
        AccountCommand::Create(create) => {
            let account = parse_account(&create.account)?;
            let currency = Currency::parse(&create.currency).map_err(|e| CliError::new(format!("--currency: {e}")))?;
            let kind = match create.kind {
                KindArg::Debit => AccountKind::Debit,
                KindArg::Credit => AccountKind::Credit,
            };
            let new = NewAccount {
                account: account.clone(),
                holder_name: mps_protocol::Secret::new(create.holder.clone()),
                kind,
                currency,
                opening_balance: amount("--balance", &create.balance, currency)?,
                credit_limit: amount("--credit-limit", &create.credit_limit, currency)?,
                per_txn_limit: amount("--per-txn-limit", &create.per_txn_limit, currency)?,
                daily_limit: amount("--daily-limit", &create.daily_limit, currency)?,
                password_verification_value: mps_protocol::PasswordVerificationValue::new([0; 32]),
            };
            let password = read_password(create.password_stdin)?;
            mps_authz::registration::create_account(&parts.hsm, &parts.ledger, new, &password)
                .await
                .map_err(CliError::new)?;
            println!("account {account} created");
        }
        AccountCommand::Show(arg) => {
            let account = parse_account(&arg.account)?;
            let record = parts
                .ledger
                .account(&account)
                .await
                .map_err(CliError::new)?
                .ok_or_else(|| CliError::new(format!("account {account} is not registered")))?;
            println!("account:         {account}");
            println!("holder:          {}", record.holder_name.expose());
            println!("kind:            {:?}", record.kind);
            println!("status:          {:?}", record.status);
            println!("currency:        {}", record.currency);
            println!("balance:         {}", format_minor(i128::from(record.balance), record.currency));
            println!("available:       {}", format_minor(i128::from(record.available()), record.currency));
            println!("credit limit:    {}", record.credit_limit.display_in(record.currency));
            println!("per payment:     {}", record.per_txn_limit.display_in(record.currency));
            println!("per day:         {}", record.daily_limit.display_in(record.currency));
            println!(
                "password:        {} wrong in a row{}",
                record.password_failures,
                if record.password_locked { ", LOCKED" } else { "" }
            );
        }
        AccountCommand::Statement { account, limit } => {
            let account = parse_account(&account.account)?;
            let lines = parts.ledger.statement(&account, limit).await.map_err(CliError::new)?;
            for line in lines {
                println!("{line}");
            }
        }
        AccountCommand::ResetPasswordTries(arg) => {
            let account = parse_account(&arg.account)?;
            parts.ledger.reset_password_tries(&account).await.map_err(CliError::new)?;
            println!("password tries of {account} reset");
        }
        AccountCommand::Close(arg) => {
            let account = parse_account(&arg.account)?;
            parts.ledger.set_account_status(&account, AccountStatus::Closed).await.map_err(CliError::new)?;
            println!("account {account} closed");
        }
        AccountCommand::Reopen(arg) => {
            let account = parse_account(&arg.account)?;
            parts.ledger.set_account_status(&account, AccountStatus::Open).await.map_err(CliError::new)?;
            println!("account {account} reopened");
        }
    }
    parts.ledger.close().await;
    Ok(())
}

async fn sim(config: &AuthzConfig, command: SimCommand) -> Result<(), CliError> {
    let parts = app::open_parts(config).await.map_err(CliError::new)?;
    let parse_sim = |text: &str| SimId::new(text).map_err(|e| CliError::new(format!("--sim-id: {e}")));
    match command {
        SimCommand::Register { sim_id, accounts, transport_key, out } => {
            let sim_id = parse_sim(&sim_id)?;
            let accounts = accounts.iter().map(|a| parse_account(a)).collect::<Result<Vec<_>, _>>()?;
            let transport_key = transport_key.unwrap_or_else(|| config.issuer.transport_key.clone());
            let bank_pem = std::fs::read_to_string(&config.issuer.signing_certificate)
                .map_err(|e| CliError::new(format!("cannot read issuer.signing_certificate: {e}")))?;
            let record = mps_authz::registration::register_sim(
                &parts.hsm,
                &parts.ledger,
                config.issuer.iin,
                &sim_id,
                &accounts,
                &transport_key,
                &bank_pem,
            )
            .await
            .map_err(CliError::new)?;
            std::fs::write(&out, record.to_json())
                .map_err(|e| CliError::new(format!("cannot write {}: {e}", out.display())))?;
            println!("SIM {sim_id} registered; personalisation record written to {}", out.display());
        }
        SimCommand::Block { sim_id } => {
            let sim_id = parse_sim(&sim_id)?;
            parts.ledger.set_sim_status(&sim_id, SimStatus::Blocked).await.map_err(CliError::new)?;
            println!("SIM {sim_id} blocked");
        }
        SimCommand::Unblock { sim_id } => {
            let sim_id = parse_sim(&sim_id)?;
            parts.ledger.set_sim_status(&sim_id, SimStatus::Active).await.map_err(CliError::new)?;
            println!("SIM {sim_id} unblocked");
        }
    }
    parts.ledger.close().await;
    Ok(())
}
