//! Read commands: `service list`, `get`, `history`, `head`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Result, bail};
use confstore_core::EventKind;
use confstore_log::Until;
use serde_json::{Value, json};

use super::Ctx;
use crate::cli::{GetArgs, HistoryArgs, SnapshotArgs};
use crate::output;

pub fn service_list(ctx: &Ctx, as_json: bool) -> Result<ExitCode> {
    let services = ctx.reader()?.services()?;
    if as_json {
        output::json(&json!({ "services": services }));
    } else {
        for s in services {
            println!("{s}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse(value_json: &str) -> Value {
    output::shown(value_json)
}

pub fn get(ctx: &Ctx, args: &GetArgs) -> Result<ExitCode> {
    let reader = ctx.reader()?;
    let until = match (&args.epoch, &args.at) {
        (Some(e), _) => Until::Epoch(*e),
        (None, Some(t)) => Until::Time(output::parse_time(t)?),
        (None, None) => Until::Head,
    };
    // Now: the write model kept at the head (no replay). Past: a verified replay.
    // Now: the write model plus the few events after its checkpoint. Past: a verified replay.
    let state = if until == Until::Head { reader.current_state()? } else { reader.replay(until)? };
    let (epoch, mut services): (u64, BTreeMap<String, confstore_core::state::Values>) = (state.epoch, state.services);
    if let Some(only) = &args.service {
        services.retain(|name, _| name == only);
    }
    if let Some(service) = &args.service
        && !services.contains_key(service)
    {
        bail!("unknown service {service:?} at epoch {epoch}; `confstore service list` shows the registered ones");
    }
    if let (Some(service), Some(key)) = (&args.service, &args.key) {
        let Some(v) = services.get(service).and_then(|vals| vals.get(key)) else {
            bail!("{service}.{key} is not set at epoch {epoch}");
        };
        if args.json {
            output::json(&json!({"service": service, "key": key, "epoch": epoch, "value": parse(v)}));
        } else {
            println!("{}", parse(v));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        let services: serde_json::Map<String, Value> = services
            .iter()
            .map(|(s, vals)| (s.clone(), Value::Object(vals.iter().map(|(k, v)| (k.clone(), parse(v))).collect())))
            .collect();
        output::json(&json!({"epoch": epoch, "services": services}));
    } else {
        println!("# epoch {epoch}");
        for (service, vals) in &services {
            if args.service.is_none() {
                println!("[{service}]");
            }
            for (k, v) in vals.iter() {
                println!("{k} = {}", parse(v));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn history(ctx: &Ctx, args: &HistoryArgs) -> Result<ExitCode> {
    let reader = ctx.reader()?;
    if let Some(s) = &args.service
        && reader.current(s)?.is_none()
    {
        bail!("unknown service {s:?}; `confstore service list` shows the registered ones");
    }
    let mut lines: Vec<Value> = Vec::new();
    reader.replay_with(Until::Head, |ev| {
        let b = ev.body();
        let service = b.service();
        let key = match &b.kind {
            EventKind::ValueSet { key, .. } | EventKind::ValueUnset { key, .. } => Some(key.as_str()),
            _ => None,
        };
        if args.service.as_deref().is_some_and(|s| service != Some(s)) {
            return;
        }
        if args.key.as_deref().is_some_and(|k| key != Some(k)) {
            return;
        }
        let mut v = b.to_json();
        v["seq"] = json!(ev.seq());
        v["time"] = json!(output::time(b.time_ms));
        lines.push(v);
    })?;
    let skip = args.limit.map_or(0, |n| lines.len().saturating_sub(n));
    for v in &lines[skip..] {
        if args.json {
            output::json(v);
        } else {
            println!("{}", history_text(v));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn history_text(v: &Value) -> String {
    let k = &v["kind"];
    let what = match k["type"].as_str().unwrap_or("") {
        "value_set" => format!("set {}.{} = {}", str_of(&k["service"]), str_of(&k["key"]), k["value"]),
        "value_unset" => format!("unset {}.{}", str_of(&k["service"]), str_of(&k["key"])),
        "service_registered" => format!("register {}", str_of(&k["service"])),
        "store_created" => format!("store created {}", str_of(&k["store_id"])),
        "signing_key_rotated" => "signing key rotated".to_owned(),
        "secret_set" => format!("set secret {}.{} (encrypted)", str_of(&k["service"]), str_of(&k["key"])),
        "secret_revealed" => format!("revealed secret {}.{}", str_of(&k["service"]), str_of(&k["key"])),
        "schema_set" => format!(
            "schema of {} set ({})",
            str_of(&k["service"]),
            &str_of(&k["schema_hash"])[..16.min(str_of(&k["schema_hash"]).len())]
        ),
        "rolled_back" => format!(
            "rollback{} to epoch {} (from epoch {})",
            k["service"].as_str().map(|s| format!(" of {s}")).unwrap_or_default(),
            k["to_epoch"],
            k["from_epoch"]
        ),
        "rollout_started" => {
            let cohort = &k["cohort"];
            let who = match cohort["percent"].as_f64() {
                Some(p) => format!("{p} % of the instances"),
                None => cohort["instances"]
                    .as_array()
                    .map(|ids| ids.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
            };
            let changes: Vec<String> = k["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| match c["op"].as_str() {
                    Some("set") => format!("{}={}", str_of(&c["key"]), c["value"]),
                    Some("unset") => format!("unset {}", str_of(&c["key"])),
                    _ => format!("{}=<secret>", str_of(&c["key"])),
                })
                .collect();
            format!(
                "rollout #{} of {} staged for {who}, bake {} s: {}",
                v["seq"],
                str_of(&k["service"]),
                k["bake_ms"].as_u64().unwrap_or(0) / 1000,
                changes.join(", ")
            )
        }
        kind @ ("rollout_promoted" | "rollout_aborted") => format!(
            "rollout #{} of {} {}{}",
            k["rollout_seq"],
            str_of(&k["service"]),
            if kind == "rollout_promoted" { "promoted" } else { "aborted" },
            if k["automatic"] == true { " automatically" } else { "" }
        ),
        other => other.to_owned(),
    };
    let reason = str_of(&v["reason"]);
    let reason = if reason.is_empty() { String::new() } else { format!("  ({reason})") };
    format!(
        "{:>6}  epoch {:<5} {}  {:<12} {what}{reason}",
        v["seq"],
        v["epoch"],
        str_of(&v["time"]),
        str_of(&v["actor"])
    )
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub fn head(ctx: &Ctx, as_json: bool) -> Result<ExitCode> {
    let h = ctx.reader()?.head()?;
    if as_json {
        output::json(&json!({
            "store_id": h.store_id.to_hex(), "generation": h.generation, "seq": h.seq, "epoch": h.epoch,
            "hash": h.hash.to_hex(), "time": output::time(h.time_ms), "verified_seq": h.verified_seq,
        }));
    } else {
        println!("store    {}", h.store_id);
        println!("seq      {}", h.seq);
        println!("epoch    {}", h.epoch);
        println!("hash     {}", h.hash);
        println!("time     {}", output::time(h.time_ms));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn snapshot(ctx: &Ctx, args: &SnapshotArgs) -> Result<ExitCode> {
    let reader = ctx.reader()?;
    let head = reader.head()?;
    let state = match args.epoch {
        Some(e) => reader.replay(Until::Epoch(e))?,
        None => reader.current_state()?,
    };
    let snap = confstore_snapshots::project(&state, &head.store_id.to_hex(), head.generation, &args.service)
        .map_err(|e| anyhow::anyhow!("{e}; `confstore service list` shows the registered ones"))?;
    if args.jws {
        output::json(&snap.to_jws(&ctx.keys()?.signing_key()?));
    } else if args.json {
        output::json(&snap.to_json());
    } else {
        println!(
            "# {} at epoch {}{}",
            snap.service,
            snap.epoch,
            snap.schema_hash.as_ref().map(|h| format!(", schema {}", &h[..16])).unwrap_or_default()
        );
        for (k, r) in &snap.values {
            let shown =
                if r.value.get("$secret").is_some() { Value::String("<secret>".into()) } else { r.value.clone() };
            println!("{k} = {shown}  ({})", r.source.name());
        }
    }
    Ok(ExitCode::SUCCESS)
}
