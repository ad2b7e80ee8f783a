//! `schema set` and `schema get`: a service's JSON Schema, recorded in the log (ADR 0008).

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use confstore_core::state::Change;
use serde_json::json;

use super::Ctx;
use super::write::commit;
use crate::cli::WriteMeta;
use crate::output;

pub fn set(ctx: &Ctx, service: &str, file: &Path, meta: &WriteMeta) -> Result<ExitCode> {
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("cannot read the schema from stdin")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read the schema file {}", file.display()))?
    };
    let schema = confstore_core::json::parse_exact(&text).map_err(|e| {
        let what = if e.is_syntax() { "is not JSON" } else { "is refused" };
        anyhow!("{} {what} ({e}); nothing was changed", file.display())
    })?;
    commit(ctx, meta, vec![Change::SetSchema { service: service.to_owned(), schema }])
}

pub fn get(ctx: &Ctx, service: &str, as_json: bool) -> Result<ExitCode> {
    let state = ctx.reader()?.current_state()?;
    if !state.services.contains_key(service) {
        bail!("unknown service {service:?}; `confstore service list` shows the registered ones");
    }
    let Some(schema) = state.schemas.get(service) else {
        bail!("service {service:?} has no schema; set one with `confstore schema set {service} FILE`");
    };
    let parsed: serde_json::Value = serde_json::from_str(&schema.json).unwrap_or_default();
    if as_json {
        output::json(&json!({"service": service, "schema_hash": hex::encode(schema.hash), "schema": parsed}));
    } else {
        println!("{}", serde_json::to_string_pretty(&parsed).unwrap_or_else(|_| schema.json.clone()));
    }
    Ok(ExitCode::SUCCESS)
}
