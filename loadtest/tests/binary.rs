//! The `loadtest` binary itself, as an operator runs it, against a real bank in-process
//! (`mps_tests::Bank`): its authz configuration written to a file, a tiny run with the whole
//! mix, the server's metrics and CPU time, the three bounds, and --json and --svg. A smoke
//! test: no thresholds on speed, only that every part ran, was verified, and came out readable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;

use mps_hsm::testing::TestToken;
use mps_tests::Bank;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_binary_runs_verifies_observes_the_server_and_writes_json_and_svg() {
    let token = TestToken::shared().unwrap();
    let files = Bank::builder().files().await;
    let dir = files.dir.path().to_owned();
    let (authz_config, transport_key_file) =
        common::write_harness_files(&dir, "authz.toml", &files.config_text, &token.transport_key_label);
    let mut bank = Bank::start_from(files).await;
    let (json, svg) = (dir.join("report.json"), dir.join("report.svg"));
    let path = |p: &Path| p.display().to_string();
    let mut args =
        common::bank_args(&authz_config, &transport_key_file, 4, &bank.url, &bank.pki, &bank.gateway_leaf, &dir);
    args.extend::<[String; _]>([
        "--connections".into(),
        "2".into(),
        "--count".into(),
        "60".into(),
        "--duration".into(),
        "30".into(),
        "--warmup".into(),
        "0.5".into(),
        "--mix".into(),
        "wrong-password=10,retransmit=10,bad-mac=10".into(),
        // The server runs in this test's process.
        "--metrics-url".into(),
        format!("{}/metrics", bank.admin_url),
        "--server-pid".into(),
        std::process::id().to_string(),
        "--bounds".into(),
        "--bound-seconds".into(),
        "0.5".into(),
        "--json".into(),
        path(&json),
        "--svg".into(),
        path(&svg),
        "--quiet".into(),
    ]);
    let stdout = common::run_loadtest(args).await;
    assert!(!stdout.contains("target 1"), "one URL: no per-URL lines:\n{stdout}");
    for line in ["throughput", "bad MACs (63)", "server: stage hsm", "server: CPU", "bound: HSM", "bound: smallest"] {
        assert!(stdout.contains(line), "the table has `{line}`:\n{stdout}");
    }

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["completed"], 60);
    assert!(report.get("endpoints").is_none(), "one URL: no per-URL counts, the report as it was: {report:#}");
    assert_eq!(report["errors_total"], 0, "{report:#}");
    assert!(report["bad_macs"]["sent"].as_u64().unwrap() > 0 || report["payments"]["sent"].as_u64().unwrap() > 0);
    assert_eq!(report["bad_macs"]["sent"], report["bad_macs"]["checked"]);
    assert_eq!(report["latency_percentiles_us"].as_array().unwrap().len(), 41);
    assert!(!report["timeline"].as_array().unwrap().is_empty());
    let server = &report["server"];
    for stage in ["jws", "hsm", "ledger"] {
        assert!(server["stages"][stage]["count"].as_u64().unwrap() > 0, "stage {stage} observed: {server:#}");
    }
    assert_eq!(server["mac_failures"], report["bad_macs"]["sent"], "authz counted every bad MAC");
    assert!(server["cpu"]["total_ms"].as_f64().unwrap() >= 0.0);
    assert!(server["cpu"]["ms_per_approved"].as_f64().is_some(), "{server:#}");
    assert!(server["machine"]["cores"].as_u64().unwrap() >= 1, "{server:#}");
    assert!(server["machine"]["generator_ms"].as_f64().is_some(), "the harness's own CPU time: {server:#}");
    // The warm-up ran, was checked, and is in no figure of the run.
    assert!(report["warmup"]["completed"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(report["warmup"]["errors"], 0, "{report:#}");
    let bounds = &report["bounds"];
    for bound in ["hsm", "mtls", "ledger"] {
        assert!(bounds[bound]["ops_per_s"].as_f64().unwrap() > 0.0, "bound {bound} measured: {bounds:#}");
        assert_eq!(bounds[bound]["errors"], 0, "bound {bound} without errors: {bounds:#}");
    }
    assert!(bounds["run_fraction_of_smallest"].as_f64().unwrap() > 0.0);

    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg ") && picture.trim_end().ends_with("</svg>"));
    assert_eq!(picture.matches("<svg").count(), 1);
    for series in ["latency-curve", "throughput", "p99"] {
        assert!(picture.contains(&format!("id=\"{series}\"")), "the picture has the {series} series");
    }
    bank.shutdown().await;
}
