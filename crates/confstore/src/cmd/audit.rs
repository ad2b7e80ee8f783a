//! Audit commands: `export` (JSON Lines, confstore-export/1) and `verify` (the store's
//! database or an export file, against a trusted public key).

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use confstore_core::export::{self, ExportError};
use confstore_core::tlog::Checkpoint;
use confstore_core::verify::ChainHead;
use confstore_core::{ChainVerifier, EventBody, State, VerifyError, VerifyingKey};
use confstore_log::parallel::ParallelVerifier;
use confstore_log::{LogReader, Until};
use serde_json::json;

use super::Ctx;
use crate::cli::{ExportArgs, VerifyArgs};
use crate::env_keys::{self, PUBLIC_KEY};
use crate::output;

pub fn export(ctx: &Ctx, args: &ExportArgs) -> Result<ExitCode> {
    let reader = ctx.reader()?;
    let total = reader.count()?;
    let bar = output::progress(total, "exporting");
    let (mut out, partial): (Box<dyn Write>, Option<PathBuf>) = match &args.out {
        Some(path) => {
            let partial = partial_path(path);
            // The export is the whole log (token hashes, secret ciphertexts): private, like
            // the database it comes from.
            let f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(confstore_log::files::PRIVATE_FILE_MODE)
                .open(&partial)
                .with_context(|| format!("cannot write {}", partial.display()))?;
            (Box::new(BufWriter::new(f)), Some(partial))
        }
        None => (Box::new(BufWriter::new(std::io::stdout().lock())), None),
    };
    let checkpoint_file = ctx.data_dir.join(confstore_lkg::TREE_CHECKPOINT_FILE_NAME);
    let written = write_export(&reader, &checkpoint_file, &mut out, &bar);
    bar.finish_and_clear();
    let result = written.and_then(|n| out.flush().map(|()| n).context("cannot write the export"));
    drop(out);
    let count = match (result, &partial) {
        (Ok(n), _) => n,
        (Err(e), Some(p)) => {
            let _ = fs::remove_file(p);
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    if let (Some(path), Some(partial)) = (&args.out, &partial) {
        File::open(partial).and_then(|f| f.sync_all()).context("cannot sync the export")?;
        fs::rename(partial, path).with_context(|| format!("cannot move the export to {}", path.display()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).context("cannot sync the export's directory")?;
        }
        eprintln!("exported {count} events to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

/// Writes the log up to its last event now. The header's keys and that seq come from one
/// snapshot; the events are then read in chunks, each in a short read transaction, so a slow
/// pipe (`confstore export | ssh …`) never keeps the server's WAL from being checkpointed.
/// The header carries the last published checkpoint (`checkpoint_file`) when it covers no
/// more than the exported events and matches them (docs/format.md §11).
fn write_export(
    reader: &LogReader,
    checkpoint_file: &Path,
    out: &mut dyn Write,
    bar: &indicatif::ProgressBar,
) -> Result<u64> {
    // Read before the snapshot: a checkpoint is published only after the events it covers
    // were committed, so the snapshot's log has all of them.
    let note = match fs::read_to_string(checkpoint_file) {
        Ok(note) => Some(note),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(anyhow!(e).context(format!("cannot read {}", checkpoint_file.display()))),
    };
    let (keys, end_seq, checkpoint) = reader.snapshot(|r| {
        let keys = r.keys()?;
        let end_seq = r.last_seq()?;
        let checkpoint = note.map(|note| {
            let chain: Vec<VerifyingKey> = keys.entries().iter().map(|e| e.key).collect();
            let size = export::HeaderCheckpoint::parse(&note).ok().map(|c| c.size);
            // The stored tree covers every signed checkpoint (the checkpointer extends it before
            // signing); `confstore verify` recomputes it from the events.
            let root = size.filter(|s| *s <= end_seq).and_then(|s| r.tree_root(s).ok());
            export::check_checkpoint(&note, &reader.store_id(), &chain, end_seq, root).map(|_| note)
        });
        Ok((keys, end_seq, checkpoint))
    })?;
    let checkpoint = match checkpoint {
        Some(Ok(note)) => Some(note),
        Some(Err(e)) => {
            eprintln!(
                "warning: {} is not included in the export: {e} (docs/operations.md, \"Checkpoints and proofs\")",
                checkpoint_file.display()
            );
            None
        }
        None => None,
    };
    writeln!(out, "{}", export::header_line(&reader.store_id(), &keys, checkpoint.as_deref()))
        .context("cannot write the export")?;
    let mut n = 0u64;
    let mut io_error = None;
    reader.for_each_event_through(1, end_seq, |ev| {
        let body = EventBody::decode(&ev.body).ok();
        if let Err(e) = writeln!(out, "{}", export::event_line(&ev, body.as_ref())) {
            io_error = Some(e);
            return Ok(false);
        }
        n += 1;
        if n.is_multiple_of(1024) {
            bar.set_position(n);
        }
        Ok(true)
    })?;
    if let Some(e) = io_error {
        return Err(anyhow!(e).context("cannot write the export"));
    }
    Ok(n)
}

/// The trusted key: `--public-key`, else CONFIG_SIGNATURE_PUBLIC_KEY (environment, then env
/// file), else the public half of CONFIG_SIGNATURE_PRIVATE_KEY.
fn trusted_key(ctx: &Ctx, args: &VerifyArgs) -> Result<VerifyingKey> {
    trusted_key_from(ctx, args.public_key.as_deref())
}

/// [`trusted_key`] from an optional `--public-key`.
pub(super) fn trusted_key_from(ctx: &Ctx, public_key: Option<&str>) -> Result<VerifyingKey> {
    if let Some(text) = public_key {
        return env_keys::parse_public_key(text);
    }
    ctx.keys()?.public_key()?.ok_or_else(|| {
        anyhow!("no trusted public key: pass --public-key BASE64, or set {PUBLIC_KEY} (environment or --env-file)")
    })
}

/// The first problem found: its seq and why.
pub(super) struct Failure {
    pub(super) seq: u64,
    pub(super) reason: String,
}

impl From<VerifyError> for Failure {
    fn from(e: VerifyError) -> Self {
        Self { seq: e.seq(), reason: e.to_string() }
    }
}

pub fn verify(ctx: &Ctx, args: &VerifyArgs) -> Result<ExitCode> {
    let anchor = trusted_key(ctx, args)?;
    let mut root = confstore_core::tlog::RootBuilder::default();
    let mut checkpoint = None;
    let (source, outcome) = match &args.export {
        Some(path) => {
            let outcome = verify_export(path, anchor, args.strict, &mut root)?;
            let outcome = outcome.map(|(head, cp)| {
                checkpoint = cp;
                (head, None)
            });
            (path.display().to_string(), outcome)
        }
        None => {
            let reader = ctx.reader()?;
            let outcome = verify_database_with_root(&reader, anchor, args.strict)?;
            (ctx.db_path().display().to_string(), outcome.map(|(head, root)| (head, Some(root))))
        }
    };
    match outcome {
        Ok((head, stored)) => {
            let merkle_root = stored.or_else(|| (root.size() == head.seq && head.seq > 0).then(|| root.root()));
            report_ok(&source, &head, merkle_root, checkpoint.as_ref(), &anchor, args.json);
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            if args.json {
                output::json(&json!({"ok": false, "source": source, "first_bad_seq": f.seq, "reason": f.reason}));
            } else {
                eprintln!("verification FAILED for {source}: first bad event is seq {}: {}", f.seq, f.reason);
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn report_ok(
    source: &str,
    head: &ChainHead,
    merkle_root: Option<[u8; 32]>,
    checkpoint: Option<&Checkpoint>,
    anchor: &VerifyingKey,
    as_json: bool,
) {
    let root_hex = merkle_root.map(hex::encode);
    if as_json {
        output::json(&json!({
            "ok": true, "source": source, "store_id": head.store_id.to_hex(), "events": head.seq,
            "epoch": head.epoch, "head_hash": head.hash.to_hex(), "keys": head.keys.entries().len(),
            "trusted_key_id": anchor.key_id().to_hex(), "merkle_root": root_hex,
            "checkpoint_size": checkpoint.map(|c| c.size),
        }));
    } else {
        if let Some(root) = &root_hex {
            println!("ok: Merkle tree of {} events, root {root} (docs/format.md §19)", head.seq);
        }
        if let Some(cp) = checkpoint {
            println!("ok: the export's signed checkpoint (size {}) matches its first {} events", cp.size, cp.size);
        }
        println!(
            "ok: {source}: {} events verified (every link and signature), epoch {}, head {}",
            head.seq, head.epoch, head.hash
        );
        println!(
            "    store {}, {} signing key(s), trusted key {}",
            head.store_id,
            head.keys.entries().len(),
            anchor.key_id()
        );
    }
}

/// A verifier from event 1 against `anchor`, batched unless `strict`.
fn verifier(store_id: confstore_core::StoreId, anchor: VerifyingKey, strict: bool) -> ChainVerifier {
    let v = ChainVerifier::new(store_id, Some(anchor)).discard_events();
    if strict { v.strict() } else { v }
}

pub(super) fn verify_database(
    reader: &LogReader,
    anchor: VerifyingKey,
    strict: bool,
) -> Result<Result<ChainHead, Failure>> {
    Ok(verify_database_with_root(reader, anchor, strict)?.map(|(head, _)| head))
}

/// [`verify_database`], and the Merkle root of the whole log (docs/format.md §19).
fn verify_database_with_root(
    reader: &LogReader,
    anchor: VerifyingKey,
    strict: bool,
) -> Result<Result<(ChainHead, [u8; 32]), Failure>> {
    let check: String = reader
        .connection()
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .context("cannot run sqlite's quick_check")?;
    if check != "ok" {
        return Ok(Err(Failure { seq: 0, reason: format!("sqlite quick_check: {check}") }));
    }
    let bar = output::progress(reader.count()?, "verifying");
    let result = reader.verify_with(verifier(reader.store_id(), anchor, strict), &mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    let head = match result {
        Ok(head) => head,
        Err(e) => return Ok(Err(e.into())),
    };
    if let Some(failure) = verified_head_difference(reader, &head)? {
        return Ok(Err(failure));
    }
    if let Some(reason) = write_model_difference(reader)? {
        return Ok(Err(Failure { seq: head.seq, reason }));
    }
    // The Merkle tree (docs/format.md §19): every stored hash recomputed from the events (the
    // stored tree may trail the log: it is extended in batches), and the whole log's root.
    let bar = output::progress(head.seq, "checking the Merkle tree");
    let tree = reader.check_tree(&mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    match tree {
        Err((seq, reason)) => Ok(Err(Failure { seq, reason })),
        Ok(tree) => Ok(Ok((head, tree.root))),
    }
}

/// The database records the last head it verified; a log that ends before it, or whose
/// event there has another hash, lost or changed events that once verified.
fn verified_head_difference(reader: &LogReader, head: &ChainHead) -> Result<Option<Failure>> {
    let Some((seq, hash)) = reader.verified_head()? else { return Ok(None) };
    if seq > head.seq {
        return Ok(Some(Failure {
            seq: head.seq + 1,
            reason: format!(
                "events {}..{seq} are missing: the log ends at event {} but event {seq} was verified before (truncated)",
                head.seq + 1,
                head.seq
            ),
        }));
    }
    let mut recorded_matches = false;
    reader.for_each_event(seq, |ev| {
        recorded_matches = ev.seq == seq && ev.hash == hash;
        Ok(false)
    })?;
    if !recorded_matches {
        return Ok(Some(Failure {
            seq,
            reason: format!("event {seq} differs from the event recorded as verified (the log was rewritten)"),
        }));
    }
    Ok(None)
}

/// Compares the write model (the tables kept beside the log, at their checkpoint) with a
/// replay of the log to the same point.
fn write_model_difference(reader: &LogReader) -> Result<Option<String>> {
    let (checkpoint, stored) = reader.write_model()?;
    let replayed: State = reader.replay(Until::Seq(checkpoint.seq))?;
    if stored.services.keys().ne(replayed.services.keys()) {
        return Ok(Some(format!(
            "the registered-services table differs from a replay of the log to its checkpoint (event {})",
            checkpoint.seq
        )));
    }
    if stored.secret_encryptions != replayed.secret_encryptions {
        return Ok(Some(format!(
            "the stored secret-encryption counts differ from a replay of the log to its checkpoint (event {})",
            checkpoint.seq
        )));
    }
    if stored.schemas != replayed.schemas {
        return Ok(Some(format!(
            "the stored schemas differ from a replay of the log to its checkpoint (event {})",
            checkpoint.seq
        )));
    }
    for (service, values) in &replayed.services {
        if stored.services.get(service) != Some(values) {
            return Ok(Some(format!(
                "the stored values of {service:?} differ from a replay of the log to its checkpoint (event {})",
                checkpoint.seq
            )));
        }
    }
    Ok(None)
}

fn verify_export(
    path: &Path,
    anchor: VerifyingKey,
    strict: bool,
    root: &mut confstore_core::tlog::RootBuilder,
) -> Result<Result<(ChainHead, Option<Checkpoint>), Failure>> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut lines = BufReader::new(file).lines();
    let header = match lines.next() {
        Some(line) => line.with_context(|| format!("cannot read {}", path.display()))?,
        None => return Ok(Err(Failure { seq: 0, reason: "the file is empty: no header line".into() })),
    };
    let header_fields = match export::parse_header_full(&header) {
        Ok(h) => h,
        Err(e) => return Ok(Err(Failure { seq: 0, reason: e.to_string() })),
    };
    let store_id = header_fields.store_id;
    let bar = output::progress(size, "verifying");
    let mut verifier = ParallelVerifier::new(verifier(store_id, anchor, strict));
    let mut at = header_fields
        .checkpoint
        .as_ref()
        .map(|c| CheckpointRoot { size: c.size, root: (c.size == 0).then_some(confstore_core::tlog::EMPTY_HASH.0) });
    let outcome = push_export_lines(&mut verifier, lines, header.len() as u64 + 1, &bar, path, root, at.as_mut());
    bar.finish_and_clear();
    let head = match outcome? {
        // The line's own problem, unless an event before it already failed.
        Some(failure) => return Ok(Err(verifier.abandon().map_or(failure, Failure::from))),
        None => match verifier.finish() {
            Ok(head) => head,
            Err(e) => return Ok(Err(Failure::from(e))),
        },
    };
    // The header's checkpoint (docs/format.md §11): signed by a key of the verified chain,
    // covering no more than the exported events, and with their root at its size.
    let Some(cp) = &header_fields.checkpoint else { return Ok(Ok((head, None))) };
    let keys: Vec<VerifyingKey> = head.keys.entries().iter().map(|e| e.key).collect();
    let root_at = at.and_then(|a| a.root);
    match export::check_checkpoint(&cp.note, &store_id, &keys, head.seq, root_at) {
        Ok(cp) => Ok(Ok((head, Some(cp)))),
        Err(e) => {
            let seq = match e {
                export::ExportCheckpointError::Truncated { events, .. } => events + 1,
                _ => 0,
            };
            Ok(Err(Failure { seq, reason: e.to_string() }))
        }
    }
}

/// The root of the exported events' tree at the size of the header's checkpoint, once the
/// events up to it are read.
struct CheckpointRoot {
    size: u64,
    root: Option<[u8; 32]>,
}

/// Feeds every event line to the verifier; stops at the first line that cannot be used
/// (returned) or the first event that fails (left in the verifier).
fn push_export_lines(
    verifier: &mut ParallelVerifier,
    lines: impl Iterator<Item = std::io::Result<String>>,
    mut read: u64,
    bar: &indicatif::ProgressBar,
    path: &Path,
    root: &mut confstore_core::tlog::RootBuilder,
    mut at: Option<&mut CheckpointRoot>,
) -> Result<Option<Failure>> {
    for (i, line) in (2u64..).zip(lines) {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        read += line.len() as u64 + 1;
        if i % 1024 == 0 {
            bar.set_position(read);
        }
        let ev = match export::parse_event(i, &line) {
            Ok(ev) => ev,
            Err(e) => {
                let seq = match e {
                    ExportError::Mismatch { seq, .. } => seq,
                    _ => verifier.head().seq + 1,
                };
                return Ok(Some(Failure { seq, reason: e.to_string() }));
            }
        };
        root.push(&ev.hash);
        if let Some(at) = at.as_deref_mut().filter(|a| a.size == root.size()) {
            at.root = Some(root.root());
        }
        if !verifier.push(&ev) {
            return Ok(None);
        }
    }
    Ok(None)
}
