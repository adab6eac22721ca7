//! `authz`: the issuing bank's authorization server and its registration commands.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mps_authz::app;
use mps_authz::config::AuthzConfig;
use mps_authz::ledger::{AccountKind, AccountStatus, NewAccount, SimStatus};
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
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let config =
        AuthzConfig::load(&cli.config).map_err(|e| CliError::new(format!("{e} (file {})", cli.config.display())))?;
    match cli.command {
        Command::CheckConfig => {
            println!("{config:#?}");
            Ok(())
        }
        Command::Serve => {
            let writer = std::io::stdout;
            mps_authz::ops::logging::init(&config.log.level, &config.log.format, writer).map_err(CliError::new)?;
            app::serve(config).await.map_err(CliError::new)
        }
        Command::Account(command) => account(&config, command).await,
        Command::Sim(command) => sim(&config, command).await,
    }
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
                holder_name: create.holder.clone(),
                kind,
                currency,
                opening_balance: amount("--balance", &create.balance, currency)?,
                credit_limit: amount("--credit-limit", &create.credit_limit, currency)?,
                per_txn_limit: amount("--per-txn-limit", &create.per_txn_limit, currency)?,
                daily_limit: amount("--daily-limit", &create.daily_limit, currency)?,
                password_verification_value: [0; 32],
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
            println!("holder:          {}", record.holder_name);
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
