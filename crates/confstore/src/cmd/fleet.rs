//! `confstore fleet [SERVICE]`: which instance runs which version, from a running `serve`
//! (the fleet view lives in its memory: `GET /api/v1/fleet`, `/api/v1/fleet/{service}`;
//! docs/format.md §20, ADR 0029). Text tables, or the server's JSON with `--json`.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::Value;

use super::{Ctx, remote};
use crate::cli::FleetArgs;
use crate::output;

pub fn run(ctx: &Ctx, args: FleetArgs) -> Result<ExitCode> {
    let token = remote::token(args.remote.token, &ctx.data_dir)?;
    let base = args.remote.url.trim_end_matches('/');
    let url = match &args.service {
        Some(s) => {
            confstore_core::state::check_service_name(s).map_err(|e| anyhow::anyhow!("{e}"))?;
            format!("{base}/api/v1/fleet/{s}")
        }
        None => format!("{base}/api/v1/fleet"),
    };
    let answer = remote::request(reqwest::Method::GET, &url, &token, None)?;
    if args.remote.json {
        output::json(&answer);
    } else if args.service.is_some() {
        print_instances(&answer);
    } else {
        print_services(&answer);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn num(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".to_owned(), |n| n.to_string())
}

fn print_services(answer: &Value) {
    let services = answer["services"].as_array().cloned().unwrap_or_default();
    if services.is_empty() {
        println!("no instance has reported (clients report with CONFSTORE_REPORT_STATUS=1)");
        return;
    }
    println!(
        "{:<24} {:>8} {:>9} {:>8} {:>7} {:>10} {:>8} {:>8}",
        "SERVICE", "VERSION", "INSTANCES", "CURRENT", "BEHIND", "UNHEALTHY", "OFFLINE", "OLDEST"
    );
    for s in services {
        println!(
            "{:<24} {:>8} {:>9} {:>8} {:>7} {:>10} {:>8} {:>8}",
            s["service"].as_str().unwrap_or("?"),
            num(&s["version"]),
            num(&s["instances"]),
            num(&s["current"]),
            num(&s["behind"]),
            num(&s["unhealthy"]),
            num(&s["offline"]),
            num(&s["oldest_version"]),
        );
    }
}

fn print_instances(answer: &Value) {
    println!("service {} at version {}", answer["service"].as_str().unwrap_or("?"), num(&answer["version"]));
    let instances = answer["instances"].as_array().cloned().unwrap_or_default();
    if instances.is_empty() {
        println!("no instance has reported (clients report with CONFSTORE_REPORT_STATUS=1)");
        return;
    }
    println!(
        "{:<28} {:<10} {:>8} {:>5} {:<6} {:<8} {:<24} ENV OVERRIDES",
        "INSTANCE", "STATE", "VERSION", "LAG", "SOURCE", "HEALTHY", "LAST SEEN"
    );
    for i in instances {
        let healthy = match i["healthy"].as_bool() {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let overrides: Vec<&str> =
            i["env_overrides"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        println!(
            "{:<28} {:<10} {:>8} {:>5} {:<6} {:<8} {:<24} {}",
            i["instance"].as_str().unwrap_or("?"),
            i["state"].as_str().unwrap_or("?"),
            num(&i["version"]),
            num(&i["lag_epochs"]),
            i["source"].as_str().unwrap_or("-"),
            healthy,
            i["last_seen_ms"].as_u64().map_or_else(|| "-".to_owned(), output::time),
            if overrides.is_empty() { "-".to_owned() } else { overrides.join(",") },
        );
    }
}
