//! `merchant`: the merchant server (`serve`) and the shop's order commands, which work on the
//! order book directly (`order create`, `order show`, `orders export`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mps_merchant::app;
use mps_merchant::config::MerchantConfig;
use mps_merchant::front::pos::{Export, OrderView, parse_day};
use mps_merchant::orders::OrderBook;
use mps_protocol::money::parse_major_amount;
use mps_protocol::{Currency, OrderNo};

/// The merchant server of MPS: takes SIM payment packets from phones, signs them, submits
/// them to the bank and keeps the order book.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML); MPS_MERCHANT__SECTION__KEY variables override it.
    #[arg(long, short, env = "MPS_MERCHANT_CONFIG", default_value = "config/merchant.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the phone, POS and admin listeners until SIGTERM or Ctrl-C.
    Serve,
    /// Read and check the configuration, then print it (no secrets are in it).
    CheckConfig,
    /// One order: create or show.
    #[command(subcommand)]
    Order(OrderCommand),
    /// Many orders: the approved orders of a day, for reconciliation.
    #[command(subcommand)]
    Orders(OrdersCommand),
}

#[derive(Debug, Subcommand)]
enum OrderCommand {
    /// Open an order for a phone to pay.
    Create {
        /// Order number: 1 to 12 printable ASCII characters.
        #[arg(long)]
        order_no: String,
        /// Amount in major units, e.g. 12.50.
        #[arg(long)]
        amount: String,
        /// ISO 4217 currency, e.g. EUR or 978.
        #[arg(long)]
        currency: String,
    },
    /// Show an order and its outcome (JSON).
    Show {
        /// Order number.
        #[arg(long)]
        order_no: String,
    },
}

#[derive(Debug, Subcommand)]
enum OrdersCommand {
    /// Print the approved orders of a day (or of every day) as JSON, with totals per currency.
    Export {
        /// The day, YYYY-MM-DD (UTC); every day when left out.
        #[arg(long)]
        day: Option<String>,
        /// Most orders printed.
        #[arg(long, default_value_t = 100_000)]
        limit: usize,
    },
}

fn main() -> ExitCode {
    mps_protocol::closed_pipe::exit_quietly();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("merchant: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let config = MerchantConfig::load(&cli.config).map_err(|e| e.to_string())?;
    match cli.command {
        Command::Serve => serve(&config),
        Command::CheckConfig => {
            println!("{config:#?}");
            Ok(())
        }
        Command::Order(command) => order(&config, command),
        Command::Orders(OrdersCommand::Export { day, limit }) => {
            let day = match day {
                Some(text) => Some(parse_day(&text).ok_or_else(|| format!("--day {text:?}: use YYYY-MM-DD"))?),
                None => None,
            };
            let orders = open_book(&config)?.paid(day.as_deref(), limit).map_err(|e| e.to_string())?;
            print_json(&Export::new(day, &orders))
        }
    }
}

fn open_book(config: &MerchantConfig) -> Result<OrderBook, String> {
    OrderBook::open(&config.orders.path, Duration::from_millis(config.orders.busy_timeout_ms))
        .map_err(|e| format!("{e} (orders.path = {})", config.orders.path.display()))
}

fn order(config: &MerchantConfig, command: OrderCommand) -> Result<(), String> {
    let parse_order_no = |text: &str| {
        OrderNo::new(text).map_err(|e| format!("--order-no {text:?}: {e}; use 1 to 12 printable ASCII characters"))
    };
    match command {
        OrderCommand::Create { order_no, amount, currency } => {
            let order_no = parse_order_no(&order_no)?;
            let currency = Currency::parse(&currency)
                .map_err(|_| format!("--currency {currency:?}: use an ISO 4217 code like EUR or 978"))?;
            let amount = parse_major_amount(&amount, currency).map_err(|e| format!("--amount: {e}"))?;
            let order = open_book(config)?.create(order_no, amount, currency).map_err(|e| e.to_string())?;
            print_json(&OrderView::from(&order))
        }
        OrderCommand::Show { order_no } => {
            let order_no = parse_order_no(&order_no)?;
            let order = open_book(config)?
                .get(&order_no)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("there is no order {order_no}; create it with `merchant order create`"))?;
            print_json(&OrderView::from(&order))
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

fn serve(config: &MerchantConfig) -> Result<(), String> {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    mps_merchant::ops::logging::init(&config.log.level, &config.log.format, std::io::stderr, ansi)
        .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let server = app::start(config).await.map_err(|e| e.to_string())?;
        mps_pki::listener::shutdown_signal().await;
        tracing::info!("shutting down");
        server.shutdown().await;
        Ok(())
    })
}
