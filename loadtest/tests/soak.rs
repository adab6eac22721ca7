//! The soak mode in CI's short form: `authz` as its own process (so that its resident memory
//! and descriptors are its own), its HSM connection recycled every 50 authorizations
//! (`recycle_after_objects = 200`, four session objects each), and `loadtest --soak` at a fixed
//! rate for a minute, sampling every two seconds. It asserts what a soak must show: no failed
//! request while the HSM is recycled dozens of times, resident memory under a fixed ceiling
//! and levelling off (within 25 % from the first half's peak to the second's, where the long
//! soak allows 10 %), descriptors flat, HSM session objects freed by each recycle, and the time series written as CSV, JSON and SVG. The
//! p99 comparison is left to the long soak on a quiet machine (docs/PERFORMANCE.md): a shared
//! CI machine's minute says nothing about it, so its limit is lifted here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use mps_hsm::testing::{TestToken, USER_PIN};
use mps_tests::process::{Service, build_binary};
use mps_tests::{Bank, free_port};

mod common;

/// The variable that carries the HSM PIN to `authz` and `loadtest`.
const PIN_ENV: &str = "MPS_HSM_PIN";
/// Objects per recycle: 50 authorizations of four objects.
const RECYCLE_AFTER_OBJECTS: u64 = 200;
/// The ceiling on authz's resident memory: a debug build serving 40 payments a second held
/// 31 to 33 MiB over this minute (2026-11-30), so three times that is a leak, not noise.
const RSS_MIB_MAX: u64 = 96;
/// A minute is short for "levels off": caches and SQLite's page cache still fill. The long soak
/// keeps the default of 10 %.
const RSS_GROWTH_PERCENT_MAX: u64 = 25;
const RATE_PER_SECOND: u64 = 40;
const DURATION_S: u64 = 60;
const SAMPLE_EVERY_S: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_hsm_recycles_fails_no_request_and_keeps_memory_under_its_ceiling() {
    let program = build_binary("authz");
    let token = TestToken::shared().unwrap();
    let files = Bank::builder().files().await;
    let dir = files.dir.path().to_owned();
    let (listen, admin) = (free_port(), free_port());
    let config_text = files.binary_config_text(listen, admin, PIN_ENV);
    let authz_config = dir.join("authz-process.toml");
    std::fs::write(&authz_config, &config_text).unwrap();
    // The harness opens the same HSM and ledger to register its payers; its copy of the
    // configuration names the SIM vendor's transport key.
    let (harness_config, transport_key_file) =
        common::write_harness_files(&dir, "authz-for-loadtest.toml", &config_text, &token.transport_key_label);

    let hsm_env = vec![
        (OsString::from(PIN_ENV), OsString::from(USER_PIN)),
        ("SOFTHSM2_CONF".into(), token.softhsm_conf.clone().into()),
    ];
    let mut authz_env = hsm_env.clone();
    authz_env.push(("MPS_AUTHZ__HSM__RECYCLE_AFTER_OBJECTS".into(), RECYCLE_AFTER_OBJECTS.to_string().into()));
    let mut authz = Service::start_with_env("authz", program, authz_config, &dir, authz_env);
    authz.wait_ready(admin, "authz").await;
    let pid = authz.pid().unwrap();

    let soak_dir = dir.join("soak");
    let path = |p: &Path| p.display().to_string();
    let mut args = common::bank_args(
        &harness_config,
        &transport_key_file,
        64,
        &format!("https://{listen}"),
        &files.pki,
        &files.gateway_leaf,
        &dir,
    );
    args.extend::<[String; _]>([
        "--connections".into(),
        "4".into(),
        "--rate".into(),
        RATE_PER_SECOND.to_string(),
        "--duration".into(),
        DURATION_S.to_string(),
        "--warmup".into(),
        "1".into(),
        "--metrics-url".into(),
        format!("http://{admin}/metrics"),
        "--server-pid".into(),
        pid.to_string(),
        "--soak".into(),
        path(&soak_dir),
        "--soak-every".into(),
        SAMPLE_EVERY_S.to_string(),
        "--soak-window".into(),
        "15".into(),
        "--soak-rss-max-mib".into(),
        RSS_MIB_MAX.to_string(),
    ]);
    let loadtest_env = hsm_env.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args(&args)
            .envs(loadtest_env)
            .env("MPS_LOADTEST__SOAK__P99_DRIFT_PERCENT_MAX", "100000")
            .env("MPS_LOADTEST__SOAK__RSS_GROWTH_PERCENT_MAX", RSS_GROWTH_PERCENT_MAX.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The soak's table and its sample lines in the test's log, for whoever reads a CI run.
    println!("{stdout}");
    assert!(
        output.status.success(),
        "loadtest --soak failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nauthz's log:\n{}",
        mps_tests::process::log_tail(&authz.log)
    );
    assert!(stderr.contains("soak ") && stderr.contains("rss "), "a progress line per sample:\n{stderr}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(soak_dir.join("soak.json")).unwrap()).unwrap();
    let summary = &report["summary"];
    let samples = report["samples"].as_array().unwrap();
    assert!(
        samples.len() as u64 >= DURATION_S / SAMPLE_EVERY_S,
        "a sample every {SAMPLE_EVERY_S} s: {}",
        samples.len()
    );
    assert_eq!(summary["errors"], 0, "{summary:#}");
    let recycles = summary["hsm_recycles"].as_u64().unwrap();
    assert!(recycles >= 10, "the HSM was recycled many times while serving: {summary:#}");
    // authz exports the time its HSM was out for them: more than nothing, less than the run.
    let metrics = reqwest::get(format!("http://{admin}/metrics")).await.unwrap().text().await.unwrap();
    let recycle_seconds: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("mps_authz_hsm_member_recycle_seconds_total{hsm=\"0\"} "))
        .unwrap_or_else(|| panic!("no recycle time in /metrics:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(recycle_seconds > 0.0 && recycle_seconds < DURATION_S as f64, "{recycle_seconds} s");
    let rss_max = summary["rss_bytes_max"].as_u64().unwrap();
    assert!(rss_max > 1024 * 1024 && rss_max <= RSS_MIB_MAX * 1024 * 1024, "{summary:#}");
    for check in summary["checks"].as_array().unwrap() {
        assert_eq!(check["passed"], true, "{check:#}");
    }
    let names: Vec<&str> = summary["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for name in [
        "no errors",
        "memory levels off",
        "memory under its ceiling",
        "file descriptors flat",
        "metric series bounded",
        "HSM recycles happened",
    ] {
        assert!(names.contains(&name), "the soak checked `{name}`: {names:?}");
    }
    // Every sample read the server: memory, descriptors, HSM objects, the ledger.
    for sample in samples {
        for figure in
            ["rss_bytes", "open_fds", "hsm_objects_since_init", "hsm_recycles_total", "metric_series", "ledger_bytes"]
        {
            assert!(sample[figure].as_u64().is_some(), "{figure} in every sample: {sample:#}");
        }
        // The pool looks at its count once a second: at most three seconds of objects past
        // the threshold (without recycles it would reach four per request of the run).
        assert!(
            sample["hsm_objects_since_init"].as_u64().unwrap() <= RECYCLE_AFTER_OBJECTS + 3 * 4 * RATE_PER_SECOND,
            "a recycle frees the session objects: {sample:#}"
        );
    }
    let csv = std::fs::read_to_string(soak_dir.join("soak.csv")).unwrap();
    assert_eq!(csv.lines().count(), samples.len() + 1, "a header and a line per sample");
    assert!(csv.starts_with("t_s,completed_total,errors_total,"));
    let svg = std::fs::read_to_string(soak_dir.join("soak.svg")).unwrap();
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("class=\"recycle\""), "the recycles are marked on the picture");
}
