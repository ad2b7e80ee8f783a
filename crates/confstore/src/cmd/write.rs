//! Commands that append: `service add`, `set`, `unset`, `apply`.

use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use confstore_core::state::{Change, ChangesetDraft};
use confstore_log::{Receipt, Store};
use serde::Deserialize;
use serde_json::json;

use super::{Ctx, default_actor, new_request_id};
use crate::cli::{ApplyArgs, ImportEnvArgs, SetArgs, UnsetArgs, WriteMeta};
use crate::output;

fn draft(meta: &WriteMeta, changes: Vec<Change>) -> ChangesetDraft {
    ChangesetDraft {
        actor: meta.actor.clone().unwrap_or_else(default_actor),
        reason: meta.reason.clone(),
        request_id: meta.request_id.clone().unwrap_or_else(new_request_id),
        expected_epoch: meta.expect_epoch,
        changes,
    }
}

fn receipt_json(r: &Receipt) -> serde_json::Value {
    json!({
        "epoch": r.epoch, "first_seq": r.first_seq, "last_seq": r.last_seq,
        "head_hash": r.hash.to_hex(), "time": output::time(r.time_ms),
    })
}

pub(super) fn commit(ctx: &Ctx, meta: &WriteMeta, changes: Vec<Change>) -> Result<ExitCode> {
    let store = ctx.store()?;
    let receipt = store.append(draft(meta, changes)).map_err(|e| anyhow!("{e}; nothing was changed"))?;
    drop(store);
    ctx.refresh_lkg();
    if meta.json {
        output::json(&receipt_json(&receipt));
    } else {
        let events = receipt.last_seq - receipt.first_seq + 1;
        println!(
            "committed epoch {} ({events} event{}, seq {}..{}, head {})",
            receipt.epoch,
            if events == 1 { "" } else { "s" },
            receipt.first_seq,
            receipt.last_seq,
            &receipt.hash.to_hex()[..16]
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn service_add(ctx: &Ctx, names: Vec<String>, meta: &WriteMeta) -> Result<ExitCode> {
    let changes = names.into_iter().map(|service| Change::RegisterService { service }).collect();
    commit(ctx, meta, changes)
}

/// Parses VALUE as exact JSON (docs/format.md §8), or takes it as a string with `--string`.
pub(super) fn value(text: &str, as_string: bool, key: &str) -> Result<serde_json::Value> {
    if as_string {
        return Ok(serde_json::Value::String(text.to_owned()));
    }
    confstore_core::json::parse_exact(text).map_err(|e| {
        if e.is_syntax() {
            anyhow!(
                "the value of {key} is not JSON ({e}); quote strings as '\"text\"' or pass --string; nothing was changed"
            )
        } else {
            anyhow!("the value of {key} is refused: {e}; nothing was changed")
        }
    })
}

pub fn set(ctx: &Ctx, args: &SetArgs) -> Result<ExitCode> {
    let a = &args.assignments;
    let pairs: Vec<(String, String)> = if a.len() == 2 && !a[0].contains('=') {
        vec![(a[0].clone(), a[1].clone())]
    } else {
        a.iter()
            .map(|kv| {
                kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| {
                    anyhow!("{kv:?} is not KEY=VALUE; use `set SERVICE KEY VALUE` or `set SERVICE K=V ...`")
                })
            })
            .collect::<Result<_>>()?
    };
    let sealer = if args.secret { Some(super::secret::Sealer::new(ctx)?) } else { None };
    let changes = pairs
        .into_iter()
        .map(|(key, text)| {
            let value = value(&text, args.string, &key)?;
            Ok(match &sealer {
                Some(s) => s.change(&args.service, key, &value)?,
                None => Change::Set { service: args.service.clone(), key, value },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let changes = registering(ctx, &args.service, args.create, changes)?;
    commit(ctx, &args.meta, changes)
}

/// `changes` to `service`, with its registration first when it does not exist yet and
/// `--create` asks for it (one changeset: all or nothing); without `--create` an unknown
/// service is an error that says how to go on.
fn registering(ctx: &Ctx, service: &str, create: bool, mut changes: Vec<Change>) -> Result<Vec<Change>> {
    if ctx.reader()?.current_state()?.services.contains_key(service) {
        return Ok(changes);
    }
    if !create {
        bail!(
            "unknown service {service:?}; register it first with `confstore service add {service}`, or pass \
             --create to register it in the same changeset"
        );
    }
    changes.insert(0, Change::RegisterService { service: service.to_owned() });
    Ok(changes)
}

pub fn unset(ctx: &Ctx, args: &UnsetArgs) -> Result<ExitCode> {
    let changes =
        args.keys.iter().map(|key| Change::Unset { service: args.service.clone(), key: key.clone() }).collect();
    commit(ctx, &args.meta, changes)
}

/// One line of `apply` input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyLine {
    changes: Vec<ApplyChange>,
    #[serde(default)]
    reason: String,
    actor: Option<String>,
    request_id: Option<String>,
    expect_epoch: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum ApplyChange {
    Register { service: String },
    Set { service: String, key: String, value: serde_json::Value },
    Unset { service: String, key: String },
}

impl From<ApplyChange> for Change {
    fn from(c: ApplyChange) -> Self {
        match c {
            ApplyChange::Register { service } => Change::RegisterService { service },
            ApplyChange::Set { service, key, value } => Change::Set { service, key, value },
            ApplyChange::Unset { service, key } => Change::Unset { service, key },
        }
    }
}

/// Appends each line as one changeset, printing one JSON result per line as soon as it is
/// durable (so a caller can treat a printed `"ok": true` as an acknowledgement).
pub fn apply(ctx: &Ctx, args: &ApplyArgs) -> Result<ExitCode> {
    let input: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(&args.input).with_context(|| format!("cannot read {}", args.input.display()))?;
        Box::new(BufReader::new(f))
    };
    let store = ctx.store()?;
    if let Some(why) = store.refusal() {
        bail!("{why}");
    }
    let actor = args.actor.clone().unwrap_or_else(default_actor);
    let mut stdout = std::io::stdout().lock();
    let mut failed = 0u64;
    let mut committed = false;
    for (n, line) in input.lines().enumerate() {
        let line_no = n + 1;
        let line = line.context("cannot read input")?;
        if line.trim().is_empty() {
            continue;
        }
        let result = apply_line(&store, &line, &actor);
        let out = match result {
            Ok(r) => {
                let mut v = receipt_json(&r);
                v["line"] = json!(line_no);
                v["ok"] = json!(true);
                v
            }
            Err(e) => {
                failed += 1;
                json!({"line": line_no, "ok": false, "error": format!("{e:#}")})
            }
        };
        writeln!(stdout, "{out}").and_then(|()| stdout.flush()).context("cannot write the result")?;
        committed |= out["ok"] == json!(true);
    }
    drop(store);
    if committed {
        ctx.refresh_lkg();
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn apply_line(store: &Store, line: &str, actor: &str) -> Result<Receipt> {
    let value = confstore_core::json::parse_exact(line).map_err(|e| anyhow!("not a changeset line: {e}"))?;
    let parsed: ApplyLine = serde_json::from_value(value).map_err(|e| anyhow!("not a changeset line: {e}"))?;
    let draft = ChangesetDraft {
        actor: parsed.actor.unwrap_or_else(|| actor.to_owned()),
        reason: parsed.reason,
        request_id: parsed.request_id.unwrap_or_else(new_request_id),
        expected_epoch: parsed.expect_epoch,
        changes: parsed.changes.into_iter().map(Change::from).collect(),
    };
    Ok(store.append(draft)?)
}

/// Names that make an imported key a secret (case-insensitive substrings).
const SECRET_NAME_PARTS: [&str; 4] = ["KEY", "SECRET", "PASSWORD", "TOKEN"];

/// The JSON value for an imported text: parsed as JSON when the schema says the key is not
/// a string (a number, boolean, object, array), the text itself otherwise.
fn typed(text: &str, schema: Option<&serde_json::Value>, key: &str) -> Result<serde_json::Value> {
    let ty = schema.and_then(|s| s.pointer(&format!("/properties/{key}/type"))).and_then(serde_json::Value::as_str);
    match ty {
        Some("string") | None => Ok(serde_json::Value::String(text.to_owned())),
        Some(other) => confstore_core::json::parse_exact(text)
            .map_err(|e| anyhow!("{key}={text:?} is not a valid {other} for the schema ({e}); nothing was changed")),
    }
}

pub fn import_env(ctx: &Ctx, args: &ImportEnvArgs) -> Result<ExitCode> {
    let iter = dotenvy::from_path_iter(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let state = ctx.reader()?.current_state()?;
    let schema: Option<serde_json::Value> =
        state.schemas.get(&args.service).and_then(|s| serde_json::from_str(&s.json).ok());
    let sealer = super::secret::Sealer::new(ctx)?;
    let mut changes = Vec::new();
    let mut secrets = Vec::new();
    for item in iter {
        let (key, text) = item.with_context(|| format!("cannot parse {}", args.file.display()))?;
        let value = typed(&text, schema.as_ref(), &key)?;
        let upper = key.to_uppercase();
        let secret = SECRET_NAME_PARTS.iter().any(|p| upper.contains(p)) && !args.plain.contains(&key);
        if secret {
            secrets.push(key.clone());
            changes.push(sealer.change(&args.service, key, &value)?);
        } else {
            changes.push(Change::Set { service: args.service.clone(), key, value });
        }
    }
    if changes.is_empty() {
        bail!("{} holds no variables; nothing was changed", args.file.display());
    }
    let changes = registering(ctx, &args.service, args.create, changes)?;
    if !args.meta.json && !secrets.is_empty() {
        eprintln!("importing as secrets: {}", secrets.join(", "));
    }
    commit(ctx, &args.meta, changes)
}
