//! `gateway`: the MPS payment gateway binary: `serve` merchants until SIGTERM or Ctrl-C, or
//! `check-config` to read and print the configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mps_gateway::app;
use mps_gateway::config::GatewayConfig;

/// The MPS payment gateway: merchants' mutual TLS in, routing by issuer IIN, mutual TLS out to
/// the issuers' authorization servers with health checks, retries and failover.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML; config/gateway.example.toml documents every key);
    /// MPS_GATEWAY__SECTION__KEY variables override it.
    #[arg(long, short, env = "MPS_GATEWAY_CONFIG", default_value = "config/gateway.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve merchants over mTLS until SIGTERM or Ctrl-C.
    Serve,
    /// Read and check the configuration, then print it (no secrets are in it).
    CheckConfig,
}

fn main() -> ExitCode {
    mps_protocol::closed_pipe::exit_quietly();
    let cli = Cli::parse();
    let config = match GatewayConfig::load(&cli.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error} (file {})", cli.config.display());
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::CheckConfig => {
            println!("{config:#?}");
            println!("configuration OK");
            ExitCode::SUCCESS
        }
        Command::Serve => serve(config),
    }
}

fn serve(config: GatewayConfig) -> ExitCode {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    if let Err(error) = mps_gateway::ops::logging::init(&config.log.level, &config.log.format, std::io::stdout, ansi) {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
