//! `soft_issuer`: a software issuer for trying `sim` by hand without the bank's server.
//! TEST ONLY (keys in clear in a JSON file); docs/SIM.md walks through it.
//!
//! ```text
//! cargo run -p mps-sim --example soft_issuer -- --state demo/issuer.json init \
//!     --iin 400012 --sim-id 8949012345678901234 --account 4000120000001234 \
//!     --password 2468ab --balance 1000.00 --record demo/record.json --transport-key demo/transport.key
//! cargo run -p mps-sim --example soft_issuer -- --state demo/issuer.json answer <packet>
//! cargo run -p mps-sim --example soft_issuer -- --state demo/issuer.json serve --listen 127.0.0.1:8080
//! ```

mod http;
mod issuer;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Parser, Subcommand};
use mps_protocol::wire::PACKET_LEN;
use mps_protocol::{Account, Currency, Iin, Password, SimId};

use crate::issuer::IssuerState;

/// A software issuer for trying `sim` by hand. TEST ONLY: it keeps keys in clear.
#[derive(Parser)]
#[command(name = "soft_issuer")]
struct Cli {
    /// The issuer's state file (created by `init`).
    #[arg(long, value_name = "FILE")]
    state: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll a SIM with one account: writes its personalisation record and transport key.
    Init {
        /// Issuer identification number (6 digits).
        #[arg(long)]
        iin: String,
        /// The SIM's ICCID (19 or 20 digits).
        #[arg(long)]
        sim_id: String,
        /// The account number (12 to 19 digits).
        #[arg(long)]
        account: String,
        /// The payment password (4 to 12 characters).
        #[arg(long)]
        password: String,
        /// Opening balance in major units, e.g. 1000.00.
        #[arg(long)]
        balance: String,
        /// The account's currency.
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// Where to write the personalisation record (JSON).
        #[arg(long, value_name = "FILE")]
        record: PathBuf,
        /// Where to write the transport key (64 hex digits).
        #[arg(long, value_name = "FILE")]
        transport_key: PathBuf,
    },
    /// Answer a payer packet (base64, hex or @FILE); prints the answer in base64.
    Answer {
        /// The 113-byte payer packet.
        packet: String,
    },
    /// Play the merchant's server on loopback for `sim pay --send`.
    Serve {
        /// Address to listen on (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
}

fn load(path: &Path) -> Result<IssuerState, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e} (run init first)", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not a soft issuer state: {e}", path.display()))
}

/// Writes a file only its owner can read: the state and the transport key are secrets.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn save(path: &Path, state: &IssuerState) -> Result<(), String> {
    let text = serde_json::to_string_pretty(state).map_err(|e| e.to_string())?;
    write_private(path, text.as_bytes())
}

fn decode_packet(arg: &str) -> Result<Vec<u8>, String> {
    let content = match arg.strip_prefix('@') {
        Some(path) => std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?,
        None => arg.as_bytes().to_vec(),
    };
    if content.len() == PACKET_LEN {
        return Ok(content);
    }
    let text: String = String::from_utf8_lossy(&content).split_whitespace().collect();
    hex::decode(&text).or_else(|_| BASE64.decode(&text)).map_err(|_| "the packet is neither hex nor base64".into())
}

fn run(cli: Cli) -> Result<(), String> {
    let mut rng = rand::rngs::OsRng;
    match cli.command {
        Command::Init { iin, sim_id, account, password, balance, currency, record, transport_key } => {
            let iin = Iin::new(&iin).map_err(|e| e.to_string())?;
            let sim_id = SimId::new(&sim_id).map_err(|e| e.to_string())?;
            let account = Account::new(&account).map_err(|e| e.to_string())?;
            let password = Password::new(&password).map_err(|e| e.to_string())?;
            let currency = Currency::parse(&currency).map_err(|e| e.to_string())?;
            let balance = mps_sim::parse_major_amount(&balance, currency).map_err(|e| e.to_string())?;
            let balance = i64::try_from(balance.minor()).map_err(|_| "balance too large".to_string())?;
            let mut state = if cli.state.exists() { load(&cli.state)? } else { IssuerState::new(&mut rng) };
            let certificate = rcgen::generate_simple_self_signed(vec!["soft-issuer.test".to_owned()])
                .map_err(|e| format!("cannot make the test certificate: {e}"))?;
            let (perso, key) = state
                .enroll(iin, &sim_id, &account, &password, balance, currency, &certificate.cert.pem(), &mut rng)
                .map_err(|e| e.to_string())?;
            std::fs::write(&record, perso.to_json()).map_err(|e| format!("cannot write {}: {e}", record.display()))?;
            write_private(&transport_key, (hex::encode(key.expose()) + "\n").as_bytes())?;
            save(&cli.state, &state)?;
            eprintln!("Enrolled SIM {sim_id} at issuer {iin} with account {}.", account.masked());
            eprintln!("Record: {}  Transport key: {}", record.display(), transport_key.display());
        }
        Command::Answer { packet } => {
            let bytes = decode_packet(&packet)?;
            let mut state = load(&cli.state)?;
            let answered = state.answer(&bytes, &mut rng).map_err(|e| format!("no answer: {e}"))?;
            save(&cli.state, &state)?;
            eprintln!("Response code {}.", answered.response_code);
            println!("{}", BASE64.encode(answered.answer));
        }
        Command::Serve { listen } => {
            let listener = TcpListener::bind(&listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            let address = listener.local_addr().map_err(|e| e.to_string())?;
            if !address.ip().is_loopback() {
                return Err(format!("{address} is not a loopback address"));
            }
            eprintln!("Playing the merchant at http://{address}/pay (Ctrl-C to stop).");
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let served = http::serve_one(&mut stream, |packet| {
                    let mut state = match load(&cli.state) {
                        Ok(state) => state,
                        Err(error) => {
                            eprintln!("{error}");
                            return http::Reply::NoAnswer { response_code: "96".into() };
                        }
                    };
                    match state.answer(packet, &mut rng) {
                        Ok(answered) => {
                            if let Err(error) = save(&cli.state, &state) {
                                eprintln!("{error}");
                                return http::Reply::NoAnswer { response_code: "96".into() };
                            }
                            eprintln!("Answered a packet: response code {}.", answered.response_code);
                            http::Reply::Answer {
                                response_code: answered.response_code,
                                answer: answered.answer.to_vec(),
                            }
                        }
                        Err(error) => {
                            eprintln!("No answer: {error}");
                            http::Reply::NoAnswer { response_code: error.response_code().into() }
                        }
                    }
                });
                if let Err(error) = served {
                    eprintln!("connection failed: {error}");
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
