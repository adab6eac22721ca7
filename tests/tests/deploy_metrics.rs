//! deploy/ holds what a bank starts monitoring authz from: a Grafana dashboard and Prometheus
//! alert rules. Both parse, every alert rule has a `for:`, a severity and a runbook-style
//! description, and every metric they name is in a live authz's /metrics: renaming a metric
//! without them fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use mps_tests::{AccountSpec, Bank};
use yaml_rust2::YamlLoader;

fn deploy_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `mps_authz_*` name in a PromQL expression.
fn metric_names(expression: &str, into: &mut BTreeSet<String>) {
    let mut rest = expression;
    while let Some(start) = rest.find("mps_authz_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        into.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
}

/// Every string under an "expr" or "query"/"definition" key, anywhere in the dashboard.
fn dashboard_expressions(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", serde_json::Value::String(text)) => into.push(text.clone()),
                    _ => dashboard_expressions(value, into),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| dashboard_expressions(item, into)),
        _ => {}
    }
}

/// The alert rules' expressions, each rule checked for what an operator needs.
fn alert_expressions(rules_text: &str) -> Vec<String> {
    let documents = YamlLoader::load_from_str(rules_text).unwrap();
    assert_eq!(documents.len(), 1, "one YAML document");
    let groups = documents[0]["groups"].as_vec().expect("a list of groups");
    let mut expressions = Vec::new();
    let mut alerts = BTreeSet::new();
    for group in groups {
        assert!(group["name"].as_str().is_some_and(|name| !name.is_empty()), "a group without a name");
        for rule in group["rules"].as_vec().expect("a group's rules") {
            let alert = rule["alert"].as_str().expect("every rule is an alert");
            assert!(alerts.insert(alert.to_owned()), "alert {alert} twice");
            let expression = rule["expr"].as_str().unwrap_or_else(|| panic!("{alert} has no expr"));
            let wait = rule["for"].as_str().unwrap_or_else(|| panic!("{alert} has no for:"));
            assert!(wait.ends_with('m') || wait.ends_with('s'), "{alert}: for: {wait}");
            let severity = rule["labels"]["severity"].as_str();
            assert!(matches!(severity, Some("critical" | "warning")), "{alert}: severity {severity:?}");
            let summary = rule["annotations"]["summary"].as_str().unwrap_or("");
            let description = rule["annotations"]["description"].as_str().unwrap_or("");
            assert!(!summary.is_empty(), "{alert} has no summary");
            assert!(description.len() > 150, "{alert}'s description is no runbook: {description:?}");
            expressions.push(expression.to_owned());
        }
    }
    for needed in [
        "MpsAuthzHsmPoolNotReady",
        "MpsAuthzLatencyP99OverBudget",
        "MpsAuthzServiceUnavailableRate",
        "MpsAuthzCrlNearExpiry",
        "MpsAuthzLedgerCommitSlow",
    ] {
        assert!(alerts.contains(needed), "the rules lack {needed}");
    }
    expressions
}

/// The sample names of a /metrics text.
fn exposed(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alert_rules_name_only_metrics_authz_exports() {
    let dashboard: serde_json::Value = serde_json::from_str(&deploy_file("grafana/mps-authz.json")).unwrap();
    assert!(dashboard["panels"].as_array().is_some_and(|panels| panels.len() >= 10), "a dashboard with panels");
    let mut expressions = Vec::new();
    dashboard_expressions(&dashboard, &mut expressions);
    expressions.extend(alert_expressions(&deploy_file("prometheus/mps-authz-alerts.yml")));
    let mut named = BTreeSet::new();
    for expression in &expressions {
        metric_names(expression, &mut named);
    }
    assert!(named.len() >= 20, "the dashboard and rules name only {} metrics: {named:?}", named.len());

    // Labelled families appear in /metrics once they have a sample: one approval gives every
    // one the dashboard and rules name.
    let mut bank = Bank::start().await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000910", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000910", &[&account]).await;
    let answer = bank.authorize(&sim.pay(&account, "D-1", 100, "2468"), "D-1", 100).await;
    assert_eq!(answer.code(), "00");
    let metrics = reqwest::get(format!("{}/metrics", bank.admin_url)).await.unwrap().text().await.unwrap();
    let exposed = exposed(&metrics);
    let missing: Vec<&String> = named.iter().filter(|name| !exposed.contains(*name)).collect();
    assert!(missing.is_empty(), "deploy/ names metrics authz does not export: {missing:?}\n/metrics:\n{metrics}");
    bank.shutdown().await;
}

#[test]
fn names_are_read_whole_from_expressions() {
    let mut named = BTreeSet::new();
    metric_names("sum(rate(mps_authz_a_total{x=\"1\"}[5m])) / mps_authz_b_seconds_bucket", &mut named);
    assert_eq!(named.into_iter().collect::<Vec<_>>(), ["mps_authz_a_total", "mps_authz_b_seconds_bucket"]);
}
