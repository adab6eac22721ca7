//! `loadtest`: the command line over the harness. Reads the configuration, takes the HSM PIN
//! out of the environment before any thread starts (as authz does), opens the bank's HSM and
//! ledger from the bank's authz configuration, provisions payers, reads the server's metrics
//! and CPU time, drives the run, reads them again, measures the raw bounds (--bounds), and
//! prints the report (and writes it as JSON with --json and as a picture with --svg).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use mps_authz::config::AuthzConfig;
use mps_loadtest::bounds::{self, BoundsReport};
use mps_loadtest::config::{LoadtestConfig, TargetKind};
use mps_loadtest::drive::client::{self, Connection, Merchant, Target};
use mps_loadtest::drive::exchange::{Context, random_order_prefix, wrong_password_for};
use mps_loadtest::drive::{self, Mix, Mode, Settings, Stop};
use mps_loadtest::provision::{self, Bank, Payer, PayerPlan};
use mps_loadtest::report::Report;
use mps_loadtest::report::Warmup;
use mps_loadtest::server::{ServerProbe, ServerReport};
use mps_pki::{Role, TrustStore};
use mps_protocol::{Amount, Currency, Password};

/// Load-tests an MPS deployment: registers payers at the bank, then sends signed payments to
/// authz (as the gateway) or to the gateway (as a merchant) and checks every answer.
#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    version,
    // A flag given twice keeps its last value, so a wrapper's defaults can be overridden.
    args_override_self = true,
    after_help = "Every flag overrides the configuration file's key of the same meaning; \
the file's keys can also be set with MPS_LOADTEST__SECTION__KEY. See config/loadtest.example.toml and docs/PERFORMANCE.md."
)]
struct Cli {
    /// The harness's configuration (TOML); every key has a default.
    #[arg(long, short, env = "MPS_LOADTEST_CONFIG")]
    config: Option<PathBuf>,
    /// The bank's authz configuration: its HSM and ledger are opened from it ([provision] authz_config).
    #[arg(long)]
    authz_config: Option<PathBuf>,
    /// The SIM vendor's transport key file, 64 hex digits ([provision] transport_key_file).
    #[arg(long)]
    transport_key_file: Option<PathBuf>,
    /// How many payers to register ([provision] payers; default 10000).
    #[arg(long)]
    payers: Option<usize>,
    /// Registrations at once ([provision] concurrency).
    #[arg(long)]
    provision_concurrency: Option<usize>,
    /// authz (act as the gateway) or gateway (act as the merchant) ([target] kind).
    #[arg(long, value_enum)]
    target: Option<TargetKind>,
    /// Base URL of authz or the gateway; repeat for several authz instances on one ledger, and
    /// the connections are spread over them round-robin ([target] url).
    #[arg(long)]
    url: Vec<String>,
    /// The scheme CA's root certificate; repeat for several ([target] scheme_ca).
    #[arg(long)]
    scheme_ca: Vec<PathBuf>,
    /// A CRL file of the scheme CA; repeat for several ([target] crls).
    #[arg(long = "crl")]
    crls: Vec<PathBuf>,
    /// TLS client certificate: gateway-client for authz, the merchant's for the gateway ([target] certificate).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// TLS client key ([target] private_key).
    #[arg(long)]
    key: Option<PathBuf>,
    /// The signing merchant's id ([merchant] merchant_id).
    #[arg(long)]
    merchant_id: Option<String>,
    /// The merchant's certificate chain ([merchant] certificate).
    #[arg(long)]
    merchant_cert: Option<PathBuf>,
    /// The merchant's private key ([merchant] private_key).
    #[arg(long)]
    merchant_key: Option<PathBuf>,
    /// Closed loop: workers, one connection each. Open loop: connections shared ([run] connections).
    #[arg(long)]
    connections: Option<usize>,
    /// Open loop at this many requests per second; without it the loop is closed ([run] rate_per_second).
    #[arg(long)]
    rate: Option<f64>,
    /// Stop after this many seconds; 0 for no time bound ([run] duration_s).
    #[arg(long)]
    duration: Option<f64>,
    /// Stop after this many requests; 0 for no count bound ([run] count).
    #[arg(long)]
    count: Option<u64>,
    /// Seconds of the same load before the measured run, checked but not recorded; 0 for none
    /// ([run] warmup_s; default 2).
    #[arg(long)]
    warmup: Option<f64>,
    /// Special requests in percent: `wrong-password=5,retransmit=5,bad-mac=2` ([run]
    /// wrong_password_percent, retransmit_percent, bad_mac_percent).
    #[arg(long)]
    mix: Option<String>,
    /// authz's admin metrics, read before and after the run for per-stage latency:
    /// http://ADMIN/metrics ([target] metrics_url).
    #[arg(long)]
    metrics_url: Option<String>,
    /// authz's process id, for its CPU time from /proc ([target] server_pid).
    #[arg(long)]
    server_pid: Option<u32>,
    /// A file holding authz's process id ([target] server_pid_file).
    #[arg(long)]
    server_pid_file: Option<PathBuf>,
    /// After the run, measure the raw HSM, mTLS and ledger bounds and the run's fraction of the
    /// smallest ([bounds] enabled).
    #[arg(long)]
    bounds: bool,
    /// Seconds each bound runs ([bounds] seconds; default 3).
    #[arg(long)]
    bound_seconds: Option<f64>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also draw the report as SVG to this file: the latency percentile curve, and throughput
    /// and p99 per second.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Soak: sample the run as it goes (server memory, descriptors, HSM objects and recycles,
    /// ledger size, latency) and write soak.csv, soak.json and soak.svg into DIR; the run fails
    /// when a soak check fails ([soak] directory).
    #[arg(long, value_name = "DIR")]
    soak: Option<PathBuf>,
    /// Seconds between soak samples ([soak] sample_every_s; default 5).
    #[arg(long)]
    soak_every: Option<f64>,
    /// Seconds of the first and last windows whose p99 are compared ([soak] window_s; default 300).
    #[arg(long)]
    soak_window: Option<f64>,
    /// A ceiling on the server's resident memory during the soak, MiB ([soak] rss_mib_max).
    #[arg(long)]
    soak_rss_max_mib: Option<u64>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

/// An error for the operator, saying what to do next.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(error: E) -> Self {
        Self(error.to_string())
    }
}

fn main() -> ExitCode {
    mps_protocol::closed_pipe::exit_quietly();
    let cli = Cli::parse();
    let config =
        match LoadtestConfig::load(cli.config.as_deref()).map_err(Failure::from).and_then(|c| apply_flags(c, &cli)) {
            Ok(config) => config,
            Err(Failure(message)) => {
                eprintln!("error: {message}");
                return ExitCode::FAILURE;
            }
        };
    let authz_config = match AuthzConfig::load(&config.provision.authz_config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!(
                "error: the bank's authz configuration {}: {e} (give it with --authz-config)",
                config.provision.authz_config.display()
            );
            return ExitCode::FAILURE;
        }
    };
    // While this is the only thread: the PIN leaves the environment before any thread starts.
    if let Err(e) = mps_hsm::take_pins_from_environment(&[&authz_config.hsm.pin_env]) {
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
    match runtime.block_on(run(&cli, config, authz_config)) {
        Ok(code) => code,
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn apply_flags(mut config: LoadtestConfig, cli: &Cli) -> Result<LoadtestConfig, Failure> {
    let set = |slot: &mut Option<PathBuf>, flag: &Option<PathBuf>| {
        if flag.is_some() {
            slot.clone_from(flag);
        }
    };
    if let Some(path) = &cli.authz_config {
        config.provision.authz_config.clone_from(path);
    }
    set(&mut config.provision.transport_key_file, &cli.transport_key_file);
    config.provision.payers = cli.payers.unwrap_or(config.provision.payers);
    config.provision.concurrency = cli.provision_concurrency.unwrap_or(config.provision.concurrency);
    config.target.kind = cli.target.unwrap_or(config.target.kind);
    if !cli.url.is_empty() {
        config.target.url.clone_from(&cli.url);
    }
    if !cli.scheme_ca.is_empty() {
        config.target.scheme_ca.clone_from(&cli.scheme_ca);
    }
    if !cli.crls.is_empty() {
        config.target.crls.clone_from(&cli.crls);
    }
    set(&mut config.target.certificate, &cli.cert);
    set(&mut config.target.private_key, &cli.key);
    if let Some(id) = &cli.merchant_id {
        config.merchant.merchant_id.clone_from(id);
    }
    set(&mut config.merchant.certificate, &cli.merchant_cert);
    set(&mut config.merchant.private_key, &cli.merchant_key);
    config.run.connections = cli.connections.unwrap_or(config.run.connections);
    config.run.rate_per_second = cli.rate.unwrap_or(config.run.rate_per_second);
    config.run.duration_s = cli.duration.unwrap_or(config.run.duration_s);
    config.run.count = cli.count.unwrap_or(config.run.count);
    config.run.warmup_s = cli.warmup.unwrap_or(config.run.warmup_s);
    if let Some(mix) = &cli.mix {
        let mix = parse_mix(mix)?;
        config.run.wrong_password_percent = mix.wrong_password_percent;
        config.run.retransmit_percent = mix.retransmit_percent;
        config.run.bad_mac_percent = mix.bad_mac_percent;
    }
    if cli.metrics_url.is_some() {
        config.target.metrics_url.clone_from(&cli.metrics_url);
    }
    config.target.server_pid = cli.server_pid.or(config.target.server_pid);
    set(&mut config.target.server_pid_file, &cli.server_pid_file);
    if cli.soak.is_some() {
        config.soak.directory.clone_from(&cli.soak);
    }
    config.soak.sample_every_s = cli.soak_every.unwrap_or(config.soak.sample_every_s);
    config.soak.window_s = cli.soak_window.unwrap_or(config.soak.window_s);
    config.soak.rss_mib_max = cli.soak_rss_max_mib.unwrap_or(config.soak.rss_mib_max);
    config.bounds.enabled |= cli.bounds;
    config.bounds.seconds = cli.bound_seconds.unwrap_or(config.bounds.seconds);
    Ok(config)
}

/// `wrong-password=5,retransmit=5,bad-mac=2` into percents (their sum at most 100).
fn parse_mix(text: &str) -> Result<Mix, Failure> {
    let mut mix = Mix::default();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, value) =
            part.split_once('=').ok_or_else(|| Failure(format!("--mix: `{part}` is not name=percent")))?;
        let value: u32 =
            value.trim().parse().map_err(|_| Failure(format!("--mix: `{value}` is not a whole percent")))?;
        match name.trim() {
            "wrong-password" => mix.wrong_password_percent = value,
            "retransmit" => mix.retransmit_percent = value,
            "bad-mac" => mix.bad_mac_percent = value,
            other => {
                return Err(Failure(format!("--mix: unknown `{other}`; use wrong-password=N,retransmit=N,bad-mac=N")));
            }
        }
    }
    if mix.total_percent() > 100 {
        return Err(Failure("--mix: the percents add up to more than 100".to_owned()));
    }
    Ok(mix)
}

fn required<'a>(value: &'a Option<PathBuf>, what: &str) -> Result<&'a Path, Failure> {
    value
        .as_deref()
        .ok_or_else(|| Failure(format!("{what} is not set: give it in the configuration file or with its flag")))
}

async fn run(cli: &Cli, config: LoadtestConfig, authz_config: AuthzConfig) -> Result<ExitCode, Failure> {
    let currency = Currency::parse(&config.run.currency).map_err(|e| Failure(format!("[run] currency: {e}")))?;
    let password =
        Password::new(&config.provision.password).map_err(|e| Failure(format!("[provision] password: {e}")))?;
    // Everything about the target is checked before a single payer is registered.
    let (context, connections) = connect(&config, currency, &password)?;
    let soak = soak_settings(&config, &authz_config, !cli.quiet)?;
    let transport_key =
        provision::read_transport_key(required(&config.provision.transport_key_file, "--transport-key-file")?)?;
    let parts = mps_authz::app::open_parts(&authz_config).await.map_err(|e| {
        Failure(format!("opening the bank's HSM and ledger: {e} (is SOFTHSM2_CONF / the PIN set as for authz?)"))
    })?;
    let bank_certificate_pem = std::fs::read_to_string(&authz_config.issuer.signing_certificate).map_err(|e| {
        Failure(format!("the bank's signing certificate {}: {e}", authz_config.issuer.signing_certificate.display()))
    })?;
    let bank = Bank {
        hsm: parts.hsm.clone(),
        ledger: parts.ledger.clone(),
        iin: authz_config.issuer.iin,
        transport_key_label: authz_config.issuer.transport_key.clone(),
        bank_certificate_pem,
    };
    let plan = PayerPlan {
        count: config.provision.payers,
        concurrency: config.provision.concurrency,
        password: password.clone(),
        currency,
        balance: Amount::from_minor(config.provision.balance_minor),
        per_txn_limit: Amount::from_minor(config.provision.per_txn_limit_minor),
        daily_limit: Amount::from_minor(config.provision.daily_limit_minor),
        merchant_id: context.merchant.id,
        run_tag: provision::random_run_tag(),
    };
    let started = Instant::now();
    let mut last_line = Instant::now();
    let payers = provision::provision(&bank, &plan, &transport_key, |done, total| {
        if !cli.quiet && (last_line.elapsed() >= Duration::from_secs(1) || done == total) {
            eprintln!("provisioned {done}/{total} payers ({:.0}/s)", done as f64 / started.elapsed().as_secs_f64());
            last_line = Instant::now();
        }
    })
    .await?;
    // The HSM bound's packet comes from a payer's SIM, checked against the ledger as provisioned.
    let hsm_input =
        if config.bounds.enabled { Some(hsm_bound_input(&payers, &parts.ledger, &context).await) } else { None };
    parts.ledger.close().await;
    let probe = server_probe(&config, &context.trust)?;
    let context = std::sync::Arc::new(context);

    let stop = Stop::default();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("Ctrl-C: stopping; requests in flight finish, then the report");
            on_signal.stop();
        }
    });
    let settings = settings(&config, !cli.quiet);
    let (payers, warmup) = match warmup_settings(&config, &settings) {
        Some(warm) => {
            if !cli.quiet {
                eprintln!("warming up for {} s (checked, not measured)", config.run.warmup_s);
            }
            let (payers, warm_report) =
                drive::run(std::sync::Arc::clone(&context), connections.clone(), payers, warm, stop.clone()).await?;
            (payers, Some(Warmup::from(&warm_report, config.run.warmup_s)))
        }
        None => (payers, None),
    };
    let settings = Settings { first_sequence: warmup.as_ref().map_or(0, |w| w.sent), ..settings };
    let before = probe.snapshot().await?;
    let sampler_probe = std::sync::Arc::new(server_probe(&config, &context.trust)?);
    let (_payers, mut report, soak_report) =
        drive::run_observed(context, connections, payers, settings, stop, move |recorder, finished| async move {
            match soak {
                Some(soak) => Some(mps_loadtest::soak::sample(recorder, finished, sampler_probe, soak).await),
                None => None,
            }
        })
        .await?;
    report.warmup = warmup;
    // The run is measured by now: a failed reading is a note in its report, not a lost report.
    report.server = Some(match probe.snapshot().await {
        Ok(after) => ServerReport::between(&before, &after, report.approved_payments()),
        Err(e) => ServerReport { notes: vec![format!("reading the server after the run: {e}")], ..Default::default() },
    });
    if let Some(hsm_input) = hsm_input {
        report.bounds =
            Some(measure_bounds(&config, &authz_config, &parts.hsm, hsm_input, currency, &password, cli.quiet).await);
        if let Some(bounds) = report.bounds.as_mut() {
            bounds.compare(report.throughput_per_s);
        }
    }
    print!("{}", report.table());
    write_outputs(cli, &config, &report)?;
    let soak_failed = match (&soak_report, &config.soak.directory) {
        (Some(soak), Some(directory)) => {
            print!("{}", soak.table());
            write_soak(directory, &config, soak)?;
            !soak.summary.passed()
        }
        _ => false,
    };
    if report.errors_total > 0 {
        eprintln!("{} request(s) failed a check: see `errors` above and the server's logs", report.errors_total);
        return Ok(ExitCode::FAILURE);
    }
    if let Some(warmup) = report.warmup.as_ref().filter(|w| w.errors > 0) {
        eprintln!("{} request(s) of the warm-up failed a check: see the server's logs", warmup.errors);
        return Ok(ExitCode::FAILURE);
    }
    if soak_failed {
        eprintln!("a soak check failed: see `soak:` above and the time series in the soak directory");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The soak's settings from `[soak]`, None without a directory; the directory is made here, so
/// that a path that cannot be written fails before the run, not after it.
fn soak_settings(
    config: &LoadtestConfig,
    authz_config: &AuthzConfig,
    progress: bool,
) -> Result<Option<mps_loadtest::soak::SoakSettings>, Failure> {
    let Some(directory) = &config.soak.directory else { return Ok(None) };
    let soak = &config.soak;
    let seconds = |value: f64, what: &str, min: f64| {
        if value.is_finite() && (min..=86_400.0).contains(&value) {
            Ok(Duration::from_secs_f64(value))
        } else {
            Err(Failure(format!("[soak] {what} must be {min} to 86400 seconds, not {value}")))
        }
    };
    std::fs::create_dir_all(directory).map_err(|e| {
        Failure(format!("the soak directory {}: {e} (give --soak a writable directory)", directory.display()))
    })?;
    Ok(Some(mps_loadtest::soak::SoakSettings {
        every: seconds(soak.sample_every_s, "sample_every_s", 0.1)?,
        window: seconds(soak.window_s, "window_s", 1.0)?,
        rss_growth_percent_max: soak.rss_growth_percent_max,
        rss_bytes_max: (soak.rss_mib_max > 0).then(|| soak.rss_mib_max.saturating_mul(1024 * 1024)),
        fds_growth_max: soak.fds_growth_max,
        p99_drift_percent_max: soak.p99_drift_percent_max,
        recycles_min: soak.recycles_min,
        metric_series_growth_max: soak.metric_series_growth_max,
        // A PostgreSQL ledger has no file of its own to measure.
        ledger_file: (authz_config.ledger.backend == mps_authz::config::LedgerBackend::Sqlite)
            .then(|| authz_config.ledger.path.clone()),
        progress,
    }))
}

/// soak.csv, soak.json and soak.svg in `directory`, saying where.
fn write_soak(directory: &Path, config: &LoadtestConfig, soak: &mps_loadtest::soak::SoakReport) -> Result<(), Failure> {
    let write = |name: &str, bytes: &[u8]| write_file(&directory.join(name), bytes);
    write("soak.csv", soak.csv().as_bytes())?;
    write("soak.json", &serde_json::to_vec_pretty(soak)?)?;
    let title = format!(
        "soak: {} at {}, {} payers",
        config.target.url.join(", "),
        if config.run.rate_per_second > 0.0 {
            format!("{}/s", config.run.rate_per_second)
        } else {
            format!("{} connections, closed loop", config.run.connections)
        },
        config.provision.payers
    );
    write("soak.svg", mps_loadtest::svg::render_soak(soak, &title).as_bytes())?;
    eprintln!("soak: wrote soak.csv, soak.json and soak.svg in {}", directory.display());
    Ok(())
}

/// Writes one output file; the error names it.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    std::fs::write(path, bytes).map_err(|e| Failure(format!("writing {}: {e}", path.display())))
}

/// Writes --json and --svg, saying where.
fn write_outputs(cli: &Cli, config: &LoadtestConfig, report: &Report) -> Result<(), Failure> {
    let write = write_file;
    if let Some(path) = &cli.json {
        write(path, &serde_json::to_vec_pretty(report)?)?;
    }
    if let Some(path) = &cli.svg {
        let title = format!(
            "loadtest: {} to {} {}, {} payers, mix wrong-password={} retransmit={} bad-mac={}",
            report.mode,
            match config.target.kind {
                TargetKind::Authz => "authz",
                TargetKind::Gateway => "gateway",
            },
            config.target.url.join(", "),
            config.provision.payers,
            config.run.wrong_password_percent,
            config.run.retransmit_percent,
            config.run.bad_mac_percent,
        );
        write(path, mps_loadtest::svg::render(report, &title).as_bytes())?;
    }
    Ok(())
}

/// The probe of the server's metrics and CPU time, from `[target]`.
fn server_probe(config: &LoadtestConfig, trust: &TrustStore) -> Result<ServerProbe, Failure> {
    let pid = ServerProbe::pid_from(config.target.server_pid, config.target.server_pid_file.as_ref())?;
    // The scrape is plain HTTP; reqwest still wants a TLS configuration, made as for the run.
    let verifier = mps_pki::tls::server_cert_verifier(trust, Role::AuthzServer)?;
    let tls = mps_pki::tls::client_config(verifier, None)?;
    let client = reqwest::Client::builder().use_preconfigured_tls(tls).build()?;
    Ok(ServerProbe::new(config.target.metrics_url.clone(), pid, client))
}

/// The HSM bound's input from the first payer whose SIM and ledger record give one.
async fn hsm_bound_input(
    payers: &[Payer],
    ledger: &mps_authz::ledger::Ledger,
    context: &Context,
) -> Result<mps_hsm::bench::AuthorizationInput, bounds::BoundError> {
    let payer = payers.first().ok_or_else(|| bounds::BoundError::Hsm("no payer".to_owned()))?;
    bounds::hsm::fixture(payer, ledger, context).await
}

/// The three bounds, one after the other, each for [bounds] seconds; a bound that cannot be
/// measured is a note, not a failure of the run.
async fn measure_bounds(
    config: &LoadtestConfig,
    authz_config: &AuthzConfig,
    hsm: &mps_hsm::Hsm,
    hsm_input: Result<mps_hsm::bench::AuthorizationInput, bounds::BoundError>,
    currency: Currency,
    password: &Password,
    quiet: bool,
) -> BoundsReport {
    let time = bounds::bound_duration(config.bounds.seconds);
    let connections = config.run.connections.clamp(1, drive::CONNECTIONS_MAX);
    let mut report = BoundsReport::default();
    let say = |what: &str| {
        if !quiet {
            eprintln!("measuring the {what} bound for {:.1} s", time.as_secs_f64());
        }
    };
    say("HSM");
    match hsm_input {
        Ok(input) => {
            let callers = authz_config.hsm.pool_size.max(1) * bounds::hsm::CALLERS_PER_POOL_THREAD;
            report.hsm = Some(bounds::hsm::measure(hsm, input, callers, time).await);
        }
        Err(e) => report.notes.push(e.to_string()),
    }
    say("mTLS");
    match mtls_bound(config, authz_config, currency, password, connections, time).await {
        Ok(bound) => report.mtls = Some(bound),
        Err(Failure(message)) => report.notes.push(format!("mTLS bound: {message}")),
    }
    say("ledger");
    let amount = Amount::from_minor(config.run.amount_minor);
    match bounds::ledger::measure(&authz_config.ledger.tuning, connections, amount, currency, time).await {
        Ok(bound) => report.ledger = Some(bound),
        Err(e) => report.notes.push(e.to_string()),
    }
    report
}

async fn mtls_bound(
    config: &LoadtestConfig,
    authz_config: &AuthzConfig,
    currency: Currency,
    password: &Password,
    connections: usize,
    time: Duration,
) -> Result<bounds::Bound, Failure> {
    if config.target.kind != TargetKind::Authz {
        return Err(Failure(
            "it serves with authz's TLS settings, which admit gateway-client certificates only: \
             measure the bounds with --target authz and the gateway-client certificate"
                .to_owned(),
        ));
    }
    let (context, _connections) = connect(config, currency, password)?;
    let identity = (required(&config.target.certificate, "--cert")?, required(&config.target.private_key, "--key")?);
    let client_side = bounds::tls::TlsClientSide { trust: &context.trust, identity };
    Ok(bounds::tls::measure(authz_config, &client_side, &context, connections, time).await?)
}

fn connect(
    config: &LoadtestConfig,
    currency: Currency,
    password: &Password,
) -> Result<(Context, Vec<Connection>), Failure> {
    if config.target.scheme_ca.is_empty() {
        return Err(Failure("no scheme CA: give --scheme-ca (the scheme's root.crt)".to_owned()));
    }
    let anchors: Vec<&Path> = config.target.scheme_ca.iter().map(PathBuf::as_path).collect();
    let crls: Vec<&Path> = config.target.crls.iter().map(PathBuf::as_path).collect();
    let trust = TrustStore::from_pem_files(&anchors, &crls)
        .map_err(|e| Failure(format!("scheme CA: {e} (check --scheme-ca and --crl)")))?;
    let targets: Vec<Target> = config.target.url.iter().map(|url| Target::new(config.target.kind, url)).collect();
    let identity = (required(&config.target.certificate, "--cert")?, required(&config.target.private_key, "--key")?);
    let timeout = Duration::from_millis(config.target.request_timeout_ms);
    let connections = config.run.connections.clamp(1, drive::CONNECTIONS_MAX);
    let connections = client::spread(&targets, connections, &trust, identity, timeout)?;
    let merchant = Merchant::from_files(
        &config.merchant.merchant_id,
        &config.merchant.acquirer_iin,
        &config.merchant.merchant_account,
        required(&config.merchant.certificate, "--merchant-cert")?,
        required(&config.merchant.private_key, "--merchant-key")?,
    )?;
    let context = Context {
        merchant,
        trust,
        amount: Amount::from_minor(config.run.amount_minor),
        currency,
        wrong_password: wrong_password_for(password)?,
        password: password.clone(),
        order_prefix: random_order_prefix(),
    };
    Ok((context, connections))
}

/// The warm-up's shape: the run's load for `warmup_s` seconds, without a count bound or
/// progress lines; None when there is no warm-up or the run was stopped already.
fn warmup_settings(config: &LoadtestConfig, run: &Settings) -> Option<Settings> {
    let duration = Duration::try_from_secs_f64(config.run.warmup_s).ok().filter(|d| !d.is_zero())?;
    Some(Settings { duration: Some(duration), count: 0, progress: false, ..run.clone() })
}

fn settings(config: &LoadtestConfig, progress: bool) -> Settings {
    let mode = if config.run.rate_per_second > 0.0 {
        Mode::Open { rate_per_second: config.run.rate_per_second, in_flight_max: config.run.in_flight_max }
    } else {
        Mode::Closed { connections: config.run.connections }
    };
    let duration = Duration::try_from_secs_f64(config.run.duration_s).ok().filter(|d| !d.is_zero());
    Settings {
        mode,
        count: config.run.count,
        duration,
        mix: Mix {
            wrong_password_percent: config.run.wrong_password_percent,
            retransmit_percent: config.run.retransmit_percent,
            bad_mac_percent: config.run.bad_mac_percent,
        },
        progress,
        first_sequence: 0,
    }
}
