//! `diff`, `rollback` and `replay`: comparing points of the log, restoring an earlier epoch
//! as a new changeset (history is never rewritten), and copying the verified log up to a
//! point into a new database.

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use confstore_core::State;
use confstore_core::state::{ChangesetDraft, RejectError};
use confstore_core::timetravel::{self, KeyChange};
use confstore_log::{LogError, LogReader, Until};
use serde_json::{Value, json};

use super::{Ctx, default_actor, new_request_id};
use crate::cli::{DiffArgs, ReplayArgs, RollbackArgs};
use crate::output;

/// An epoch (digits) or an RFC 3339 time.
fn point(text: &str) -> Result<Until> {
    if let Ok(epoch) = text.parse::<u64>() {
        return Ok(Until::Epoch(epoch));
    }
    output::parse_time(text)
        .map(Until::Time)
        .map_err(|_| anyhow!("{text:?} is neither an epoch number nor an RFC 3339 time such as 2026-11-26T09:30:00Z"))
}

fn state_at(reader: &LogReader, until: Until) -> Result<State> {
    Ok(if until == Until::Head { reader.current_state()? } else { reader.replay(until)? })
}

fn parse(json: Option<&String>) -> Value {
    json.map_or(Value::Null, |j| output::shown(j))
}

fn check_service(state: &State, service: Option<&str>) -> Result<()> {
    if let Some(s) = service
        && !state.services.contains_key(s)
    {
        bail!("unknown service {s:?}; `confstore service list` shows the registered ones");
    }
    Ok(())
}

pub fn diff(ctx: &Ctx, args: &DiffArgs) -> Result<ExitCode> {
    let reader = ctx.reader()?;
    let (from, to) = (point(&args.from)?, args.to.as_deref().map_or(Ok(Until::Head), point)?);
    let (a, b) = (state_at(&reader, from)?, state_at(&reader, to)?);
    if args.service.as_deref().is_some_and(|s| !a.services.contains_key(s) && !b.services.contains_key(s)) {
        check_service(&b, args.service.as_deref())?;
    }
    let changes = timetravel::diff(&a, &b, args.service.as_deref());
    if args.json {
        let items: Vec<Value> = changes.iter().map(change_json).collect();
        output::json(&json!({"from_epoch": a.epoch, "to_epoch": b.epoch, "changes": items}));
    } else {
        println!("# epoch {} -> epoch {}: {} change(s)", a.epoch, b.epoch, changes.len());
        for c in &changes {
            println!("{}", change_text(c));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn change_json(c: &KeyChange) -> Value {
    json!({
        "service": c.service, "key": c.key, "change": c.what(),
        "before": parse(c.before.as_ref()), "after": parse(c.after.as_ref()),
    })
}

fn change_text(c: &KeyChange) -> String {
    let name = format!("{}.{}", c.service, c.key);
    match c.what() {
        "added" => format!("+ {name} = {}", parse(c.after.as_ref())),
        "removed" => format!("- {name} (was {})", parse(c.before.as_ref())),
        _ => format!("~ {name}: {} -> {}", parse(c.before.as_ref()), parse(c.after.as_ref())),
    }
}

/// Attempts before giving up when other writers keep changing the store meanwhile (limits.rs).
const ROLLBACK_ATTEMPTS: usize = confstore_core::limits::ROLLBACK_ATTEMPTS_MAX;

pub fn rollback(ctx: &Ctx, args: &RollbackArgs) -> Result<ExitCode> {
    let store = ctx.store()?;
    let reader = store.reader()?;
    let target = reader.replay(Until::Epoch(args.to_epoch))?;
    let request_id = args.request_id.clone().unwrap_or_else(new_request_id);
    for _ in 0..ROLLBACK_ATTEMPTS {
        let current = reader.current_state()?;
        check_service(&current, args.service.as_deref())?;
        if args.to_epoch >= current.epoch {
            bail!("cannot roll back to epoch {}: the store is at epoch {}", args.to_epoch, current.epoch);
        }
        let changes = timetravel::rollback_changes(&current, &target, args.to_epoch, args.service.as_deref());
        // Secrets come back as their stored ciphertext; decrypted only to check them
        // against the schema, as every secret set is.
        let changes = if changes.iter().any(restores_secret) {
            let keys = ctx.keys()?;
            let store_id = reader.store_id();
            timetravel::restore_secrets(changes, |service, key, envelope| {
                let master = super::secret::key_for(&keys, envelope.key_version)?;
                confstore_core::secret::open(&master, &store_id, service, key, envelope)
                    .with_context(|| format!("cannot decrypt {service}.{key} to roll it back"))
            })?
        } else {
            changes
        };
        if changes.is_empty() {
            bail!(
                "nothing to roll back: the configuration{} at epoch {} equals the current one (epoch {}); nothing was changed",
                args.service.as_deref().map(|s| format!(" of {s:?}")).unwrap_or_default(),
                args.to_epoch,
                current.epoch
            );
        }
        let keys = changes.len() - 1;
        let draft = ChangesetDraft {
            actor: args.actor.clone().unwrap_or_else(default_actor),
            reason: args.reason.clone(),
            request_id: request_id.clone(),
            // The diff was computed at this epoch: commit it only if nothing changed since.
            expected_epoch: Some(current.epoch),
            changes,
        };
        match store.append(draft) {
            Ok(r) => {
                drop(store);
                ctx.refresh_lkg();
                if args.json {
                    output::json(&json!({
                        "epoch": r.epoch, "first_seq": r.first_seq, "last_seq": r.last_seq,
                        "rolled_back_to": args.to_epoch, "keys_changed": keys, "head_hash": r.hash.to_hex(),
                    }));
                } else {
                    println!(
                        "rolled back to epoch {} as epoch {} ({keys} key(s) changed, seq {}..{})",
                        args.to_epoch, r.epoch, r.first_seq, r.last_seq
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            Err(LogError::Rejected(RejectError::Conflict { .. })) => continue,
            Err(e) => bail!("{e}; nothing was changed"),
        }
    }
    bail!("the store kept changing while rolling back ({ROLLBACK_ATTEMPTS} attempts); nothing was changed, try again")
}

pub fn replay(ctx: &Ctx, args: &ReplayArgs) -> Result<ExitCode> {
    let until = match (&args.to_epoch, &args.at) {
        (Some(e), _) => Until::Epoch(*e),
        (None, Some(t)) => Until::Time(output::parse_time(t)?),
        (None, None) => bail!("give --to-epoch N or --at TIME"),
    };
    let db = args.out.join("config.db");
    if db.exists() {
        bail!("{} already holds a store; give an empty or new directory", args.out.display());
    }
    confstore_log::files::create_private_dir(&args.out)
        .map_err(|e| anyhow!("cannot create {}: {e}", args.out.display()))?;
    let reader = ctx.reader()?;
    let now = confstore_log::Clock::now_ms(&confstore_log::SystemClock);
    let head = confstore_log::write_prefix(&reader, until, &db, &ctx.db, now)
        .map_err(|e| anyhow!("{e}; nothing was written"))?;
    if args.json {
        output::json(&json!({
            "out": args.out, "database": db, "seq": head.seq, "epoch": head.epoch,
            "hash": head.hash.to_hex(), "time": output::time(head.time_ms),
        }));
    } else {
        println!(
            "wrote {}: events 1..={} (epoch {}, head {}, {}), verified",
            db.display(),
            head.seq,
            head.epoch,
            head.hash.to_hex(),
            output::time(head.time_ms)
        );
        eprintln!("read it with: confstore --data-dir {} get   (same keys)", args.out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a rollback change sets a key back to a stored secret.
fn restores_secret(change: &confstore_core::Change) -> bool {
    matches!(change, confstore_core::Change::Set { value, .. }
        if confstore_core::secret::envelope_of(&confstore_core::state::canonical_json_text(value)).is_some())
}
