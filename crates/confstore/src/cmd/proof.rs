//! `confstore proof`: the log's Merkle tree (docs/format.md §19) from the command line —
//! inclusion and consistency proofs read from the local database (each checked against the
//! root before it is printed), and a signed checkpoint checked against this log.

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use confstore_core::tlog::{self, Checkpoint};
use confstore_core::{Hash32, VerifyingKey};
use confstore_log::LogReader;
use serde_json::json;

use super::Ctx;
use super::audit::trusted_key_from;
use crate::cli::ProofCommand;
use crate::output;

pub fn run(ctx: &Ctx, cmd: ProofCommand) -> Result<ExitCode> {
    match cmd {
        ProofCommand::Inclusion { seq, size, json } => inclusion(ctx, seq, size, json),
        ProofCommand::Consistency { from, to, json } => consistency(ctx, from, to, json),
        ProofCommand::Checkpoint { file, public_key, json } => {
            checkpoint(ctx, file.as_deref(), public_key.as_deref(), json)
        }
    }
}

/// The tree size to use: `size`, or every event of the log. The stored tree is brought to the
/// log's end first (it is extended in batches; each event added is checked to link to the
/// chain).
fn size_or_all(reader: &LogReader, size: Option<u64>) -> Result<u64> {
    let all = reader.extend_tree(None).context("cannot extend the Merkle tree to the log's end")?;
    Ok(size.unwrap_or(all))
}

fn inclusion(ctx: &Ctx, seq: u64, size: Option<u64>, as_json: bool) -> Result<ExitCode> {
    let reader = ctx.reader()?;
    let size = size_or_all(&reader, size)?;
    let (root, proof, hash) = reader.snapshot(|r| {
        let proof = r.inclusion_proof(seq, size)?;
        let root = r.tree_root(size)?;
        let mut hash = Hash32([0; 32]);
        r.for_each_event(seq, |ev| {
            hash = ev.hash;
            Ok(false)
        })?;
        Ok((root, proof, hash))
    })?;
    tlog::verify_inclusion(&proof, size, &root, seq, &hash)
        .map_err(|e| anyhow!("the proof from the stored tree does not verify ({e}); run `confstore verify`"))?;
    let hashes: Vec<String> = proof.iter().map(|h| B64.encode(h)).collect();
    if as_json {
        output::json(&json!({
            "seq": seq, "size": size, "event_hash": hash.to_hex(), "root": B64.encode(root), "hashes": hashes,
        }));
    } else {
        println!("event {seq} (hash {}) is in the tree of {size} events, root {}", hash.to_hex(), B64.encode(root));
        for h in &hashes {
            println!("{h}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn consistency(ctx: &Ctx, from: u64, to: Option<u64>, as_json: bool) -> Result<ExitCode> {
    let reader = ctx.reader()?;
    let to = size_or_all(&reader, to)?;
    if from == 0 || from > to {
        return Err(anyhow!("--from must be between 1 and --to ({to})"));
    }
    let (old_root, root, proof) =
        reader.snapshot(|r| Ok((r.tree_root(from)?, r.tree_root(to)?, r.consistency_proof(from, to)?)))?;
    tlog::verify_consistency(&proof, to, &root, from, &old_root)
        .map_err(|e| anyhow!("the proof from the stored tree does not verify ({e}); run `confstore verify`"))?;
    let hashes: Vec<String> = proof.iter().map(|h| B64.encode(h)).collect();
    if as_json {
        output::json(&json!({
            "from": from, "to": to, "from_root": B64.encode(old_root), "to_root": B64.encode(root), "hashes": hashes,
        }));
    } else {
        println!(
            "the tree of {from} events (root {}) is a prefix of the tree of {to} (root {})",
            B64.encode(old_root),
            B64.encode(root)
        );
        for h in &hashes {
            println!("{h}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_note(file: &Path) -> Result<Vec<u8>> {
    if file == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).context("cannot read the checkpoint from stdin")?;
        return Ok(buf);
    }
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

fn checkpoint(ctx: &Ctx, file: Option<&Path>, public_key: Option<&str>, as_json: bool) -> Result<ExitCode> {
    let anchor = trusted_key_from(ctx, public_key)?;
    let default = ctx.data_dir.join(confstore_lkg::TREE_CHECKPOINT_FILE_NAME);
    let file = file.unwrap_or(&default);
    let note = read_note(file)?;
    let reader = ctx.reader()?;
    // The trusted key, and the keys it handed signing to (the rotation events in the log carry
    // both keys' signatures; `confstore verify` checks that chain).
    let mut keys: Vec<VerifyingKey> = vec![anchor];
    keys.extend(reader.keys()?.entries().iter().map(|e| e.key).filter(|k| *k != anchor));
    let origin = tlog::origin(&reader.store_id());
    let cp = Checkpoint::open(&note, &origin, &keys).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let size = size_or_all(&reader, None)?;
    let (verdict, detail) = if cp.size > size {
        (
            "behind",
            format!(
                "the checkpoint covers {} events, this log has {size}: events {}..{} are missing",
                cp.size,
                size + 1,
                cp.size
            ),
        )
    } else {
        let root = reader.tree_root(cp.size)?;
        if root == cp.root {
            ("ok", format!("this log's first {} events are the checkpoint's (of {size} now)", cp.size))
        } else {
            ("forked", format!("this log's first {} events differ from the checkpoint's: another history", cp.size))
        }
    };
    if as_json {
        output::json(&json!({
            "ok": verdict == "ok", "verdict": verdict, "file": file.display().to_string(), "origin": cp.origin,
            "size": cp.size, "root": B64.encode(cp.root), "log_size": size, "detail": detail,
        }));
    } else if verdict == "ok" {
        println!("ok: {}: signed checkpoint of {} at size {}; {detail}", file.display(), cp.origin, cp.size);
    } else {
        eprintln!("{verdict}: {}: {detail}", file.display());
    }
    Ok(if verdict == "ok" { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
