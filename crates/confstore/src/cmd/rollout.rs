//! `confstore rollout start|status|promote|abort SERVICE`: staged rollouts through a running
//! `serve` (the cohort's state lives in its fleet view: `GET/POST
//! /api/v1/services/{service}/rollout[/promote|/abort]`; docs/format.md §21, ADR 0030).

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::fleet::num;
use super::{Ctx, remote};
use crate::cli::{Remote, RolloutCommand, RolloutDecideArgs, RolloutStartArgs};
use crate::output;

pub fn run(ctx: &Ctx, command: RolloutCommand) -> Result<ExitCode> {
    match command {
        RolloutCommand::Start(args) => start(ctx, args),
        RolloutCommand::Status { service, remote } => status(ctx, &service, remote),
        RolloutCommand::Promote(args) => decide(ctx, args, "promote"),
        RolloutCommand::Abort(args) => decide(ctx, args, "abort"),
    }
}

fn url(remote: &Remote, service: &str, tail: &str) -> Result<String> {
    confstore_core::state::check_service_name(service).map_err(|e| anyhow!("{e}"))?;
    Ok(format!("{}/api/v1/services/{service}/rollout{tail}", remote.url.trim_end_matches('/')))
}

/// `KEY=VALUE` arguments as a JSON object (VALUE is JSON, as for `set`).
fn assignments(items: &[String]) -> Result<Map<String, Value>> {
    items
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').ok_or_else(|| anyhow!("{kv:?} is not KEY=VALUE; nothing was changed"))?;
            Ok((k.to_owned(), super::write::value(v, false, k)?))
        })
        .collect()
}

fn start(ctx: &Ctx, args: RolloutStartArgs) -> Result<ExitCode> {
    let bake: jiff::SignedDuration =
        args.bake.parse().with_context(|| format!("--bake {:?}: give a duration such as 90s, 10m or 2h", args.bake))?;
    let bake_seconds = u64::try_from(bake.as_secs()).map_err(|_| anyhow!("--bake must be positive"))?;
    let cohort = match args.percent {
        Some(p) => json!({"percent": p}),
        None => json!({"instances": args.instances}),
    };
    let mut body = json!({
        "set": assignments(&args.set)?,
        "secrets": assignments(&args.secrets)?,
        "unset": args.unset,
        "cohort": cohort,
        "bake_seconds": bake_seconds,
        "auto": !args.manual,
    });
    if let Some(r) = args.reason {
        body["reason"] = json!(r);
    }
    let token = remote::token(args.remote.token.clone(), &ctx.data_dir)?;
    let answer = remote::request(Method::POST, &url(&args.remote, &args.service, "")?, &token, Some(&body))?;
    if args.remote.json {
        output::json(&answer);
    } else {
        let how = if args.manual { "promote or abort it by hand" } else { "promoted or aborted automatically" };
        println!(
            "rollout {} of {} started (epoch {}); bake time {bake_seconds} s, {how}",
            num(&answer["first_seq"]),
            args.service,
            num(&answer["epoch"])
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn decide(ctx: &Ctx, args: RolloutDecideArgs, what: &str) -> Result<ExitCode> {
    let mut body = json!({});
    if let Some(r) = args.rollout {
        body["rollout"] = json!(r);
    }
    if let Some(r) = args.reason {
        body["reason"] = json!(r);
    }
    let token = remote::token(args.remote.token.clone(), &ctx.data_dir)?;
    let answer =
        remote::request(Method::POST, &url(&args.remote, &args.service, &format!("/{what}"))?, &token, Some(&body))?;
    if args.remote.json {
        output::json(&answer);
    } else {
        let done = if what == "promote" { "promoted" } else { "aborted" };
        println!(
            "the rollout of {} is {done} (epoch {}, seq {})",
            args.service,
            num(&answer["epoch"]),
            num(&answer["last_seq"])
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn status(ctx: &Ctx, service: &str, remote: Remote) -> Result<ExitCode> {
    let token = remote::token(remote.token.clone(), &ctx.data_dir)?;
    let answer = remote::request(Method::GET, &url(&remote, service, "")?, &token, None)?;
    if remote.json {
        output::json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    println!("service {service} at version {}", num(&answer["version"]));
    match answer["active"].as_object() {
        None => println!("no active rollout"),
        Some(a) => {
            let cohort = &a["cohort"];
            let who = match cohort["percent"].as_f64() {
                Some(p) => format!("{p} % of the instances"),
                None => format!("instances {}", cohort["instances"]),
            };
            let ends = a["bake_ends_ms"].as_u64().map_or_else(|| "-".to_owned(), output::time);
            let how = if a["auto"].as_bool() == Some(true) { "automatic" } else { "manual" };
            println!("rollout {} by {}: {who}; bake time ends {ends} ({how})", num(&a["rollout"]), a["actor"]);
            for c in a["changes"].as_array().into_iter().flatten() {
                let shown = c.get("value").map_or_else(|| "<secret>".to_owned(), Value::to_string);
                match c["op"].as_str() {
                    Some("unset") => println!("  unset {}", c["key"].as_str().unwrap_or("?")),
                    _ => println!("  set   {} = {shown}", c["key"].as_str().unwrap_or("?")),
                }
            }
            println!("{:<28} {:<8} {:<8} {:<7}", "INSTANCE", "APPLIED", "HEALTHY", "ONLINE");
            for m in a["members"].as_array().into_iter().flatten() {
                let yes_no = |v: &Value| match v.as_bool() {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                };
                println!(
                    "{:<28} {:<8} {:<8} {:<7}",
                    m["instance"].as_str().unwrap_or("?"),
                    yes_no(&m["applied"]),
                    yes_no(&m["healthy"]),
                    yes_no(&m["online"])
                );
            }
        }
    }
    if let Some(last) = answer["last"].as_object() {
        println!(
            "last rollout {}: {} {}",
            num(&last["rollout"]),
            last["outcome"].as_str().unwrap_or("?"),
            last["ended"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}
