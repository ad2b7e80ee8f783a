//! `generation start`: continue deliberately from a rewound history (ADR 0017).
//!
//! After a restore to a point in time, the database is behind heads that were seen before
//! (the LKG file, the publisher's checkpoint, a signed head file, the broker's retained
//! head), and `serve` and the write commands refuse it. When the operator means to go on
//! from this copy, this command appends a signed `generation_started` event naming the
//! newest abandoned head, records the step in `<data-dir>/rebuild.info`, and re-bases the
//! data directory's records on the new generation. Clients then accept the new
//! generation's lower epochs, and still refuse replays of the old generation.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use confstore_core::{ChangesetDraft, Hash32};
use confstore_lkg::heads::{KnownHead, Standing};
use serde_json::json;

use super::restore::{gather_known_heads, judge_all};
use super::{Ctx, default_actor, new_request_id};
use crate::cli::GenerationStartArgs;
use crate::output;

/// The tombstone file in the data directory (the plan's name): one JSON line per
/// generation started.
pub const REBUILD_INFO: &str = "rebuild.info";

pub fn start(ctx: &Ctx, args: &GenerationStartArgs) -> Result<ExitCode> {
    if args.reason.trim().is_empty() {
        bail!("--reason must say why this history is continued (it is recorded in the signed event)");
    }
    let store = ctx.store_unchecked()?;
    if let Some(why) = store.refusal() {
        bail!("the store refuses writes: {why}; nothing was changed");
    }
    let reader = ctx.reader()?;
    let head = reader.head()?;
    let trusted = super::audit::trusted_key_from(ctx, None).ok();
    let (known, warnings) = gather_known_heads(ctx, &reader, trusted, &args.heads)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let judged = judge_all(&reader, &known)?;
    if let Some((k, v)) =
        judged.iter().find(|(_, v)| matches!(v, Standing::AnotherStore | Standing::OlderGeneration { .. }))
    {
        bail!(
            "{}; a new generation cannot fix that; nothing was changed",
            v.describe(k, &db_head(&head)).unwrap_or_default()
        );
    }
    // The newest head of the abandoned history: the furthest one this log does not have.
    let abandoned: Option<&KnownHead> =
        judged.iter().filter(|(_, v)| v.is_rewind()).map(|(k, _)| k).max_by_key(|k| (k.seq, k.hash.is_some()));
    let Some(abandoned) = abandoned else {
        bail!(
            "this database (generation {}, event {}) is not behind any head seen before ({} compared); a new \
             generation is only for continuing from a rewound history; nothing was changed",
            head.generation,
            head.seq,
            known.len()
        );
    };
    let abandoned_hash = match &abandoned.hash {
        Some(h) => Hash32::from_hex(h).map_err(|e| anyhow!("{}: hash {h}: {e}", abandoned.source))?,
        // The high-water mark records only a seq: the abandoned event's hash is unknown.
        None => Hash32::default(),
    };
    let draft = ChangesetDraft {
        actor: args.actor.clone().unwrap_or_else(default_actor),
        reason: args.reason.clone(),
        request_id: new_request_id(),
        expected_epoch: None,
        changes: Vec::new(),
    };
    let receipt = store.start_generation(abandoned.seq, abandoned_hash, draft.clone())?;
    let generation = store.generation();
    drop(store);
    fail::fail_point!("generation::mid_start", |_| std::process::abort());

    let missing = (head.seq < abandoned.seq).then(|| json!({"from_seq": head.seq + 1, "to_seq": abandoned.seq}));
    let record = json!({
        "format": "confstore-rebuild/1",
        "generation": generation,
        "event_seq": receipt.last_seq,
        "time_ms": receipt.time_ms,
        "actor": draft.actor,
        "reason": draft.reason,
        "continued_from": {"seq": head.seq, "hash": head.hash.to_hex(), "epoch": head.epoch, "generation": head.generation},
        "abandoned": {"seq": abandoned.seq, "hash": abandoned.hash, "source": abandoned.source},
        "missing": missing,
    });
    append_rebuild_info(ctx, &record)?;
    // The high-water mark belongs to the abandoned history; the new one starts here.
    let hwm = ctx.data_dir.join(confstore_lkg::HWM_FILE_NAME);
    confstore_lkg::set_high_water_mark(&hwm, receipt.last_seq)
        .with_context(|| format!("cannot reset the LKG high-water mark {}", hwm.display()))?;
    // So does the last signed Merkle-tree checkpoint: `serve` would otherwise refuse to sign
    // a tree that does not extend it. It is kept, renamed, as evidence of what was published.
    let tree_cp = ctx.data_dir.join(confstore_lkg::TREE_CHECKPOINT_FILE_NAME);
    if tree_cp.exists() {
        let kept =
            ctx.data_dir.join(format!("{}.generation-{}", confstore_lkg::TREE_CHECKPOINT_FILE_NAME, head.generation));
        std::fs::rename(&tree_cp, &kept)
            .with_context(|| format!("cannot move {} aside to {}", tree_cp.display(), kept.display()))?;
    }
    ctx.refresh_lkg();

    if args.json {
        output::json(&record);
    } else {
        println!(
            "generation {generation} started at event {} (epoch {}), continuing from event {} and abandoning event {} \
             ({})",
            receipt.last_seq, receipt.epoch, head.seq, abandoned.seq, abandoned.source
        );
        if let Some(m) = &missing {
            println!("events {}..={} of generation {} are given up", m["from_seq"], m["to_seq"], head.generation);
        }
        println!("recorded in {}", ctx.data_dir.join(REBUILD_INFO).display());
    }
    Ok(ExitCode::SUCCESS)
}

fn db_head(head: &confstore_log::Head) -> confstore_lkg::heads::DbHead {
    confstore_lkg::heads::DbHead { store_id: head.store_id, generation: head.generation, seq: head.seq }
}

/// Appends one JSON line to `rebuild.info` (0600, fsynced).
fn append_rebuild_info(ctx: &Ctx, record: &serde_json::Value) -> Result<()> {
    let path = ctx.data_dir.join(REBUILD_INFO);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("the generation is started, but {} cannot be opened", path.display()))?;
    writeln!(f, "{record}")
        .and_then(|()| f.sync_all())
        .with_context(|| format!("the generation is started, but {} cannot be written", path.display()))
}
