//! `mps-hsm`: the bank's HSM tooling. `keys init` runs the key ceremony (DESIGN.md section
//! 3), `keys list` shows what the token holds (never a value), `keys check` checks every key
//! against the key policy, `keys rotate-kek` and `keys retire-kek` rotate the key-encryption
//! key, `bench` measures the pool's operations per second (built with the `testing` feature,
//! since it imports a known chain key as a session object to build valid packets).
//!
//! Config: `--config <toml>` (or `MPS_HSM_CONFIG`), then `MPS_HSM__<KEY>` environment overrides
//! such as `MPS_HSM__POOL_SIZE` or `MPS_HSM__KEYS__SIGNING` (see `config/hsm.example.toml`).
//! User PIN from `MPS_HSM_PIN` (or `pin_env`/`pin_file`), never from the TOML or the command
//! line; a PIN variable is taken out of the environment before anything else runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mps_hsm::ceremony::{self, KeyOutcome};
use mps_hsm::{HsmConfig, Pin};

#[derive(Parser)]
#[command(name = "mps-hsm", version, about = "MPS HSM tooling: key ceremony, key listing, benchmark")]
struct Cli {
    /// HSM config file (TOML, see config/hsm.example.toml); defaults apply without it.
    /// MPS_HSM__<KEY> variables override it (MPS_HSM__TOKEN_LABEL, MPS_HSM__KEYS__SIGNING, ...).
    #[arg(long, env = "MPS_HSM_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Key ceremony and key listing.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Operations per second of every pool operation and of one authorization's HSM calls,
    /// for each thread count (needs a build with `--features testing`).
    Bench(BenchArgs),
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create the issuer keys that are missing, as the user: mps-kek (with its unwrap
    /// template), mps-imk, mps-pvk and the mps-sign pair, each a private, sensitive,
    /// non-extractable token key with only its usage. Existing keys are kept, checked and
    /// reported, never overwritten.
    Init {
        /// Also generate a transport key mps-tk-<VENDOR> (repeatable). No vendor can know a
        /// generated key: for benchmarks and smoke tests; import a real vendor's key with
        /// `keys import-transport-key`.
        #[arg(long = "transport-key", value_name = "VENDOR")]
        transport_keys: Vec<String>,
    },
    /// Import a SIM vendor's transport key mps-tk-<VENDOR> from its clear value (64 hex digits
    /// on the first line of FILE: the combined key components of the vendor ceremony). A
    /// private token key, sensitive, not extractable, WRAP only. An existing key is kept,
    /// never overwritten.
    ImportTransportKey {
        /// The vendor: the key is labelled mps-tk-<VENDOR>.
        #[arg(long, value_name = "VENDOR")]
        vendor: String,
        /// File with the key as 64 hex digits.
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
    },
    /// List the token's objects: label, class, type, length and attributes. Never a value.
    List,
    /// Check every issuer key against the key policy, as authz does when it starts: private,
    /// sensitive, not extractable, exactly its usage, and each KEK's unwrap template enforced.
    Check,
    /// Make the next KEK version (mps-kek-2, mps-kek-3, ...). Running servers adopt it within
    /// kek_refresh_ms and wrap new chain keys under it; `authz keys rewrap` moves the rest.
    RotateKek,
    /// Make a new signing key pair for a signing-key renewal (mps-sign-2, ...): certify it with
    /// `pki issue --role bank-signing --hsm-config <file>` and MPS_HSM__KEYS__SIGNING=<LABEL>,
    /// then configure authz's issuer.next_signing_* and hsm.keys.signing_next.
    NewSigningKey {
        /// Label of the new pair.
        #[arg(long)]
        label: String,
    },
    /// Destroy an older KEK version once `authz keys rewrap` has moved every chain key off it
    /// and marked it drained. Refused for the newest KEK and for one not yet drained.
    RetireKek {
        /// The KEK version to destroy (1 is mps-kek itself).
        #[arg(long)]
        version: u32,
    },
}

/// Arguments of `bench`.
#[derive(Args)]
struct BenchArgs {
    /// Pool sizes to measure, comma separated (per HSM).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Numbers of HSMs to measure with, comma separated: the first N HSMs of the config (the
    /// one of the top-level keys, then its `additional` ones).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    members: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent callers per pool thread (keeps the queues non-empty).
    #[arg(long, default_value_t = 4)]
    callers_per_thread: usize,
    /// Vendor of the transport key used by the register_sim measurement (mps-tk-<VENDOR>
    /// must exist: `keys init --transport-key <VENDOR>`).
    #[arg(long, default_value = "bench", value_name = "VENDOR")]
    transport_key: String,
}

fn main() -> ExitCode {
    mps_protocol::closed_pipe::exit_quietly();
    // Before anything else, while this is the only thread: the PIN leaves the environment.
    if let Err(e) = mps_hsm::take_pins_from_environment(&[mps_hsm::config::DEFAULT_PIN_ENV]) {
        eprintln!("mps-hsm: error: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mps-hsm: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<HsmConfig, String> {
    match path {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
            HsmConfig::from_toml_and_env(&text).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => HsmConfig::from_toml_and_env("").map_err(|e| e.to_string()),
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let config = load_config(cli.config.as_ref())?;
    match cli.command {
        Command::Keys { action: KeysAction::Init { transport_keys } } => keys_init(&config, &transport_keys),
        Command::Keys { action: KeysAction::List } => keys_list(&config),
        Command::Keys { action: KeysAction::ImportTransportKey { vendor, key_file } } => {
            import_transport_key(&config, &vendor, &key_file)
        }
        Command::Keys { action: KeysAction::Check } => keys_check(&config),
        Command::Keys { action: KeysAction::RotateKek } => {
            let (version, label) = ceremony::rotate_kek(&config, &user_pin(&config)?).map_err(|e| e.to_string())?;
            println!("  {label:<20} created (KEK version {version})");
            println!(
                "running servers wrap new chain keys under it within kek_refresh_ms ({} ms); \
                 then run `authz keys rewrap` to move the others",
                config.kek_refresh_ms
            );
            Ok(())
        }
        Command::Keys { action: KeysAction::NewSigningKey { label } } => {
            let outcome =
                ceremony::create_signing_key(&config, &user_pin(&config)?, &label).map_err(|e| e.to_string())?;
            println!("  {label:<20} {}", outcome_text(&outcome));
            Ok(())
        }
        Command::Keys { action: KeysAction::RetireKek { version } } => {
            let label = ceremony::retire_kek(&config, &user_pin(&config)?, version).map_err(|e| e.to_string())?;
            println!("  {label:<20} destroyed");
            Ok(())
        }
        Command::Bench(args) => bench::run(config, &args),
    }
}

fn user_pin(config: &HsmConfig) -> Result<Pin, String> {
    config.load_pin().map_err(|e| e.to_string())
}

fn outcome_text(outcome: &KeyOutcome) -> String {
    match outcome {
        KeyOutcome::Created => "created".to_owned(),
        KeyOutcome::Kept { violation: None } => "kept".to_owned(),
        KeyOutcome::Kept { violation: Some(violation) } => format!("kept, NOT COMPLIANT: {violation}"),
    }
}

fn keys_init(config: &HsmConfig, vendors: &[String]) -> Result<(), String> {
    let user_pin = user_pin(config)?;
    println!("key ceremony on token {:?} ({})", config.token_label, config.module_path.display());
    let report = ceremony::init_keys(config, &user_pin, vendors).map_err(|e| e.to_string())?;
    let mut non_compliant = 0;
    for (label, outcome) in &report.keys {
        if matches!(outcome, KeyOutcome::Kept { violation: Some(_) }) {
            non_compliant += 1;
        }
        println!("  {label:<20} {}", outcome_text(outcome));
    }
    if non_compliant > 0 {
        return Err(format!("{non_compliant} existing key(s) do not meet the key policy (docs/HSM.md)"));
    }
    Ok(())
}

fn keys_check(config: &HsmConfig) -> Result<(), String> {
    let checked = ceremony::check_keys(config, &user_pin(config)?).map_err(|e| e.to_string())?;
    for label in &checked {
        println!("  {label:<20} meets the key policy");
    }
    Ok(())
}

fn import_transport_key(config: &HsmConfig, vendor: &str, key_file: &std::path::Path) -> Result<(), String> {
    let user_pin = user_pin(config)?;
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(key_file).map_err(|e| format!("cannot read {}: {e}", key_file.display()))?,
    );
    let mut value = zeroize::Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.lines().next().unwrap_or("").trim(), &mut value[..])
        .map_err(|_| format!("{} must hold the key as 64 hex digits on its first line", key_file.display()))?;
    let outcome = ceremony::import_transport_key(config, &user_pin, vendor, &value).map_err(|e| e.to_string())?;
    let label = format!("{}{vendor}", ceremony::TRANSPORT_KEY_PREFIX);
    match outcome {
        KeyOutcome::Created => println!("  {label:<20} imported"),
        kept => println!("  {label:<20} exists, not overwritten: {}", outcome_text(&kept)),
    }
    Ok(())
}

fn keys_list(config: &HsmConfig) -> Result<(), String> {
    let user_pin = user_pin(config)?;
    let keys = ceremony::list_keys(config, &user_pin).map_err(|e| e.to_string())?;
    println!("{:<20} {:<8} {:<15} {:>4}  attributes (+ set, - clear)", "label", "class", "type", "len");
    for key in &keys {
        let length = key.value_len.map(|l| l.to_string()).unwrap_or_else(|| "-".to_owned());
        let flags: Vec<String> =
            key.flags.iter().map(|(name, on)| format!("{}{name}", if *on { '+' } else { '-' })).collect();
        println!("{:<20} {:<8} {:<15} {:>4}  {}", key.label, key.class, key.key_type, length, flags.join(" "));
    }
    println!("{} object(s)", keys.len());
    Ok(())
}

#[cfg(not(feature = "testing"))]
mod bench {
    use super::BenchArgs;
    use mps_hsm::HsmConfig;

    pub fn run(_config: HsmConfig, _args: &BenchArgs) -> Result<(), String> {
        Err("this build has no benchmark: run `cargo run -p mps-hsm --features testing -- bench`".to_owned())
    }
}

#[cfg(feature = "testing")]
mod bench {
    //! The benchmark: each operation in a loop from several concurrent callers for a fixed
    //! time, per pool size. Packets come from a software SIM whose chain key is imported into
    //! the HSM as a session object (the `testing` feature), so the MAC checks really pass.

    use std::sync::Arc;
    use std::time::Duration;

    use mps_hsm::bench::{self, AuthorizationInput};
    use mps_hsm::testing::wrap_known_chain_key;
    use mps_hsm::{Hsm, HsmConfig, HsmError};
    use mps_protocol::keys::{AesKey, SessionKeys};
    use mps_protocol::wire::{ClearFields, PayerPacket, PaymentSecret};
    use mps_protocol::{Account, Amount, Counter, Currency, Iin, MerchantId, OrderNo, Password, Rsn, SimId};

    use super::BenchArgs;

    /// What every bench operation needs.
    struct Fixture {
        hsm: Hsm,
        input: AuthorizationInput,
        account: Account,
        password: Password,
        sim_id: SimId,
        transport_key: String,
    }

    const OPERATIONS: [&str; 8] = [
        "random_bytes(8)",
        "sign_es256",
        "password_verification_value",
        "register_sim",
        "open_session (+ discard)",
        "open_session + seal_answer",
        "authorization: open + seal + sign_es256",
        "authorization, 1 caller (latency view)",
    ];

    /// One measured pool shape: HSMs and workers per HSM.
    #[derive(Clone, Copy, PartialEq, Eq)]
    struct Shape {
        members: usize,
        threads: usize,
    }

    impl std::fmt::Display for Shape {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} HSM x {} thr", self.members, self.threads)
        }
    }

    /// `config` cut to its first `shape.members` HSMs, each with `shape.threads` workers.
    fn shaped(config: &HsmConfig, shape: Shape, callers: usize) -> Result<HsmConfig, String> {
        let mut config = config.clone();
        let available = config.additional.as_ref().map_or(0, Vec::len) + 1;
        if shape.members > available {
            return Err(format!(
                "--members {} needs {} HSMs in the config, it has {available} (add [[additional]] entries)",
                shape.members, shape.members
            ));
        }
        config.pool_size = shape.threads;
        config.queue_depth_max = config.queue_depth_max.max(callers * 2);
        config.additional = match config.additional.take() {
            Some(mut additional) if shape.members > 1 => {
                additional.truncate(shape.members - 1);
                for member in &mut additional {
                    member.pool_size = Some(shape.threads);
                }
                Some(additional)
            }
            _ => None,
        };
        Ok(config)
    }

    pub fn run(config: HsmConfig, args: &BenchArgs) -> Result<(), String> {
        if args.threads.is_empty() || args.threads.iter().any(|t| !(1..=64).contains(t)) {
            return Err("--threads takes pool sizes from 1 to 64".to_owned());
        }
        if args.members.is_empty() || args.members.iter().any(|m| !(1..=mps_hsm::config::MEMBERS_MAX).contains(m)) {
            return Err("--members takes numbers of HSMs from 1 to 8".to_owned());
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let seconds = Duration::from_secs(args.seconds.max(1));
        let shapes: Vec<Shape> = args
            .members
            .iter()
            .flat_map(|&members| args.threads.iter().map(move |&threads| Shape { members, threads }))
            .collect();
        let mut results = Vec::new();
        for &shape in &shapes {
            let callers_max = shape.members * shape.threads * args.callers_per_thread;
            let fixture = runtime
                .block_on(fixture(shaped(&config, shape, callers_max)?, &args.transport_key))
                .map_err(|e| format!("setup: {e} (did `keys init --transport-key {}` run?)", args.transport_key))?;
            let fixture = Arc::new(fixture);
            for (index, name) in OPERATIONS.iter().enumerate() {
                let callers = if index == OPERATIONS.len() - 1 { 1 } else { callers_max };
                eprint!("{shape}, {callers:>2} caller(s): {name:<42} ...");
                let (count, errors) = runtime.block_on(measure(Arc::clone(&fixture), index, callers, seconds));
                let rate = count as f64 / seconds.as_secs_f64();
                eprintln!(" {rate:>9.0} ops/s ({errors} errors)");
                results.push((shape, *name, rate, errors));
            }
            let metrics = fixture.hsm.metrics();
            let per_member: Vec<String> = metrics.members.iter().map(|m| m.operations_total.to_string()).collect();
            eprintln!(
                "{shape}: operations per HSM {}, {} session objects created, {} destroy failures, {} reconnects",
                per_member.join(" / "),
                metrics.objects_created_total,
                metrics.destroy_failures_total,
                metrics.reconnects_total
            );
        }
        println!();
        println!("| operation | {} |", shapes.iter().map(|s| format!("{s} ops/s")).collect::<Vec<_>>().join(" | "));
        println!("|---|{}", "---:|".repeat(shapes.len()));
        for name in OPERATIONS {
            let row: Vec<String> = shapes
                .iter()
                .map(|shape| {
                    results
                        .iter()
                        .find(|(s, n, _, _)| s == shape && *n == name)
                        .map(
                            |(_, _, rate, errors)| {
                                if *errors > 0 { format!("{rate:.0} ({errors} err)") } else { format!("{rate:.0}") }
                            },
                        )
                        .unwrap_or_default()
                })
                .collect();
            println!("| {name} | {} |", row.join(" | "));
        }
        let failed: u64 = results.iter().map(|(_, _, _, errors)| errors).sum();
        if failed > 0 { Err(format!("{failed} operations failed during the benchmark")) } else { Ok(()) }
    }

    async fn fixture(config: HsmConfig, vendor: &str) -> Result<Fixture, HsmError> {
        let hsm = Hsm::connect(config).await?;
        let transport_key = format!("{}{vendor}", mps_hsm::ceremony::TRANSPORT_KEY_PREFIX);
        let chain_key = AesKey::from_bytes([0x5a; 32]);
        let wrapped = wrap_known_chain_key(&hsm, chain_key.expose()).await?;
        let rsn = Rsn([0xa5; 8]);
        let counter = Counter::new(1).map_err(|_| HsmError::InvalidInput { what: "counter" })?;
        let invalid = |_| HsmError::InvalidInput { what: "bench fixture" };
        let account = Account::new("4000120000001234").map_err(invalid)?;
        let password = Password::new("2468ab").map_err(invalid)?;
        let sim_id = SimId::new("8949012345678901234").map_err(invalid)?;
        let fields = ClearFields {
            iin: Iin::new("400012").map_err(invalid)?,
            sim_id: sim_id.clone(),
            counter,
            merchant_id: MerchantId::new("BENCH-SHOP").map_err(invalid)?,
            order_no: OrderNo::new("BENCH-1").map_err(invalid)?,
            amount: Amount::from_minor(1250),
            currency: Currency::EUR,
        };
        let secret = PaymentSecret { account: account.clone(), password: password.clone() };
        let packet = PayerPacket::seal(&SessionKeys::derive(&chain_key, counter, &rsn), fields, &secret, [7; 16]);
        // Fails early, with a clear cause, when the transport key is missing.
        hsm.register_sim(&sim_id, &transport_key).await?;
        Ok(Fixture {
            hsm,
            input: AuthorizationInput { wrapped, rsn, packet },
            account,
            password,
            sim_id,
            transport_key,
        })
    }

    async fn one(fixture: &Fixture, operation: usize) -> Result<(), HsmError> {
        let f = fixture;
        let open = || f.hsm.open_session(&f.input.wrapped, f.input.packet.fields.counter, f.input.rsn, &f.input.packet);
        let session_error = |e: mps_hsm::SessionError| match e {
            mps_hsm::SessionError::Hsm(e) => e,
            _ => HsmError::InvalidInput { what: "the bench packet did not verify" },
        };
        match operation {
            0 => f.hsm.random_bytes(8).await.map(drop),
            1 => f.hsm.sign_es256(b"bench message").await.map(drop),
            2 => f.hsm.password_verification_value(&f.account, &f.password).await.map(drop),
            3 => f.hsm.register_sim(&f.sim_id, &f.transport_key).await.map(drop),
            4 => open().await.map(drop).map_err(session_error),
            5 => {
                let opened = open().await.map_err(session_error)?;
                f.hsm.seal_answer(opened.ticket, bench::approved_answer()).await.map(drop)
            }
            _ => bench::authorization(&f.hsm, &f.input).await,
        }
    }

    async fn measure(fixture: Arc<Fixture>, operation: usize, callers: usize, time: Duration) -> (u64, u64) {
        let measured = bench::measure(callers, time, move |_caller| {
            let fixture = Arc::clone(&fixture);
            async move { one(&fixture, operation).await }
        })
        .await;
        (measured.completed, measured.errors)
    }
}
