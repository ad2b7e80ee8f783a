//! Signed checkpoints of the log's Merkle tree (docs/format.md §19, ADR 0027).
//!
//! [`run`] makes a checkpoint once [`EVERY_EVENTS`] events were appended since the last one,
//! or [`EVERY`] after it if any event was: the tree's size and root read in one snapshot,
//! signed as a C2SP note with the store's signing key. Each one is first checked to extend
//! the last one this data directory published (a consistency proof from the stored tree), so
//! the server never signs two histories: a log found rewound or rewritten stops the
//! checkpoints (logged as an alert, shown by `/readyz`) instead of signing a fork.
//!
//! A published checkpoint goes to `<data-dir>/tree.checkpoint` (and beside the signed head
//! file, if one is configured, as `<head file>.checkpoint`), to `GET /api/v1/checkpoint`,
//! and to the publisher, which keeps it retained on `system/config-checkpoint`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confstore_core::tlog::{self, Checkpoint};
use confstore_core::{StoreId, VerifyingKey};
use tokio::sync::watch;

use crate::app::{App, LiveMode, Mode};

/// File name of the last published checkpoint in the data directory.
pub const FILE_NAME: &str = confstore_lkg::TREE_CHECKPOINT_FILE_NAME;
/// Events after which a new checkpoint is made (limits.rs).
pub const EVERY_EVENTS: u64 = confstore_core::limits::TLOG_CHECKPOINT_EVENTS;
/// Time after which a new checkpoint is made if any event was appended (limits.rs).
pub const EVERY: Duration = Duration::from_secs(confstore_core::limits::TLOG_CHECKPOINT_SECS);

/// Least time between two checkpoints (limits.rs).
const MIN_GAP: Duration = Duration::from_millis(confstore_core::limits::TLOG_CHECKPOINT_GAP_MS);

/// A checkpoint as published: parsed, and the signed note's text.
#[derive(Clone, Debug)]
pub struct Published {
    /// Origin, size and root.
    pub checkpoint: Checkpoint,
    /// The signed note (C2SP `tlog-checkpoint`).
    pub note: Arc<str>,
}

/// The latest published checkpoint, for the API and the publisher.
#[derive(Debug)]
pub struct Checkpoints {
    latest: watch::Sender<Option<Arc<Published>>>,
    halted: Mutex<Option<String>>,
}

impl Default for Checkpoints {
    fn default() -> Self {
        Self { latest: watch::Sender::new(None), halted: Mutex::new(None) }
    }
}

impl Checkpoints {
    /// The latest published checkpoint, if any.
    pub fn latest(&self) -> Option<Arc<Published>> {
        self.latest.borrow().clone()
    }

    /// Hears every newly published checkpoint.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Published>>> {
        self.latest.subscribe()
    }

    /// Why no checkpoint is made any more, if that is so.
    pub fn halted(&self) -> Option<String> {
        self.halted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn halt(&self, why: String) {
        let mut h = self.halted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if h.as_deref() != Some(why.as_str()) {
            tracing::error!(alert = "checkpoint_fork", why = %why, "no more Merkle-tree checkpoints are signed");
            *h = Some(why);
        }
    }

    /// Checkpoints may be made again (nothing published before stands in the way).
    fn resume(&self) {
        *self.halted.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn publish(&self, p: Published) {
        self.resume();
        self.latest.send_replace(Some(Arc::new(p)));
    }

    /// The latest checkpoint, if it is still of `size`, is published again as `note`: the
    /// same signed note with witnesses' cosignature lines appended (crate::witnesses).
    pub fn cosigned(&self, size: u64, note: Arc<str>) {
        self.latest.send_if_modified(|latest| match latest {
            Some(p) if p.checkpoint.size == size => {
                *latest = Some(Arc::new(Published { checkpoint: p.checkpoint.clone(), note }));
                true
            }
            _ => false,
        });
    }
}

/// Path of the checkpoint kept beside the signed head file `head_file`.
pub fn beside_head_file(head_file: &Path) -> PathBuf {
    let mut p = head_file.as_os_str().to_owned();
    p.push(".checkpoint");
    PathBuf::from(p)
}

/// Reads and verifies the checkpoint file at `path` (of `store_id`, signed by one of `keys`).
/// `Ok(None)` when there is none.
///
/// # Errors
///
/// A file that cannot be read or does not verify, with the reason.
pub fn read_file(path: &Path, store_id: &StoreId, keys: &[VerifyingKey]) -> Result<Option<Published>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let checkpoint = Checkpoint::open(&bytes, &tlog::origin(store_id), keys)
        .map_err(|e| format!("{} does not verify: {e}", path.display()))?;
    let note = String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8", path.display()))?;
    Ok(Some(Published { checkpoint, note: note.into() }))
}

/// Runs until the server stops: loads the last published checkpoint, then makes new ones as
/// the log grows.
pub async fn run(app: App) {
    let mut loaded = false;
    let mut last_made: Option<Instant> = None;
    loop {
        let mode = app.mode();
        let Mode::Live(live) = &*mode else {
            tokio::time::sleep(app.config.recover_interval).await;
            continue;
        };
        if !loaded {
            let a = app.clone();
            let m = Arc::clone(&mode);
            match tokio::task::spawn_blocking(move || load(&a, &m)).await {
                Ok(Ok(Some(p))) => app.checkpoints.publish(p),
                Ok(Ok(None)) => {}
                Ok(Err(why)) => app.checkpoints.halt(why),
                Err(_) => {}
            }
            loaded = true;
        }
        let mut head = live.model.head.subscribe();
        let seq = *head.borrow_and_update();
        let published = app.checkpoints.latest().map_or(0, |p| p.checkpoint.size);
        let due = if seq <= published {
            None
        } else if seq - published >= EVERY_EVENTS || last_made.is_none() {
            Some(Duration::ZERO)
        } else {
            Some(EVERY.saturating_sub(last_made.map_or(EVERY, |t| t.elapsed())))
        };
        match due {
            Some(wait) if wait.is_zero() => {
                let a = app.clone();
                let m = Arc::clone(&mode);
                if let Ok(Err(why)) = tokio::task::spawn_blocking(move || make(&a, &m)).await {
                    tracing::warn!(error = %why, "no Merkle-tree checkpoint this time; retrying");
                }
                last_made = Some(Instant::now());
                // At most ten checkpoints a second, whatever the write rate.
                tokio::time::sleep(MIN_GAP).await;
            }
            Some(wait) => {
                tokio::select! {
                    _ = head.changed() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
            None => {
                // Nothing new: wait for a commit (or look at the mode again now and then).
                let _ = tokio::time::timeout(EVERY, head.changed()).await;
            }
        }
    }
}

/// Brings the stored Merkle tree to the read model's head, anchored on the head's hash as the
/// writer verified it (so no row edited since can enter a signed root). Returns its size.
///
/// # Errors
///
/// The log's error (a tampered row is `Tampered`, and nothing is written).
pub fn extend_to_head(live: &LiveMode) -> Result<u64, confstore_log::LogError> {
    let (seq, hash) = live.model.read(|m| (m.state.seq, m.head_hash));
    live.readers.with(|r| r.extend_tree(Some((seq, hash))))
}

/// The store's signing keys, for checking our own earlier checkpoints.
fn store_keys(app: &App, mode: &Mode) -> Vec<VerifyingKey> {
    let Mode::Live(live) = mode else { return vec![app.keys.signing.verifying_key()] };
    live.readers
        .with(|r| r.keys())
        .map(|ring| ring.entries().iter().map(|e| e.key).collect())
        .unwrap_or_else(|_| vec![app.keys.signing.verifying_key()])
}

/// The last checkpoint this data directory published, checked against the log now.
fn load(app: &App, mode: &Mode) -> Result<Option<Published>, String> {
    let Mode::Live(live) = mode else { return Ok(None) };
    let store_id = live.store.store_id();
    let path = app.config.data_dir.join(FILE_NAME);
    let Some(p) = read_file(&path, &store_id, &store_keys(app, mode))? else { return Ok(None) };
    let tree = tree_at_head(live, p.checkpoint.size)?;
    extends(&p.checkpoint, &tree)?;
    Ok(Some(p))
}

/// The stored tree brought to the head: its size and root, and the consistency proof from the
/// tree of `old_size` events if that is not larger — read in one snapshot.
struct Tree {
    size: u64,
    root: [u8; 32],
    proof: Option<Vec<[u8; 32]>>,
}

fn tree_at_head(live: &LiveMode, old_size: u64) -> Result<Tree, String> {
    extend_to_head(live).map_err(|e| format!("cannot extend the Merkle tree: {e}"))?;
    live.readers
        .with(|r| {
            r.snapshot(|r| {
                let size = r.tree_size()?;
                let root = r.tree_root(size)?;
                let proof = if old_size <= size { Some(r.consistency_proof(old_size, size)?) } else { None };
                Ok(Tree { size, root, proof })
            })
        })
        .map_err(|e| format!("cannot read the Merkle tree: {e}"))
}

/// Whether `tree` extends `old` (its consistency proof verifies).
fn extends(old: &Checkpoint, tree: &Tree) -> Result<(), String> {
    let size = tree.size;
    let Some(proof) = &tree.proof else {
        return Err(format!(
            "the log has {size} events but a checkpoint of {} was published: events {}..{} are missing \
             (the database was rewound; see `confstore restore-check`)",
            old.size,
            size + 1,
            old.size
        ));
    };
    tlog::verify_consistency(proof, size, &tree.root, old.size, &old.root).map_err(|e| {
        format!(
            "the log's first {} events are not those of the checkpoint published before ({e}): \
             the history was rewritten; see `confstore restore-check`",
            old.size
        )
    })
}

/// Makes, checks and publishes a checkpoint of the tree as it stands.
fn make(app: &App, mode: &Mode) -> Result<(), String> {
    let Mode::Live(live) = mode else { return Ok(()) };
    if app.checkpoints.halted().is_some() {
        // Halted: check again (a deliberate new generation moves the old file away).
        match load(app, mode) {
            Ok(p) => {
                if let Some(p) = p {
                    app.checkpoints.publish(p);
                } else {
                    app.checkpoints.resume();
                }
            }
            Err(why) => {
                app.checkpoints.halt(why);
                return Ok(());
            }
        }
    }
    let old = app.checkpoints.latest();
    let old_size = old.as_ref().map_or(0, |p| p.checkpoint.size);
    let tree = tree_at_head(live, old_size)?;
    let (size, root) = (tree.size, tree.root);
    if let Some(old) = &old {
        if let Err(why) = extends(&old.checkpoint, &tree) {
            app.checkpoints.halt(why);
            return Ok(());
        }
        if size == old.checkpoint.size {
            return Ok(());
        }
    }
    let checkpoint = Checkpoint { origin: tlog::origin(&live.store.store_id()), size, root };
    let note = checkpoint.sign(&app.keys.signing);
    confstore_lkg::replace_file(&app.config.data_dir.join(FILE_NAME), note.as_bytes())
        .map_err(|e| format!("cannot write the checkpoint file: {e}"))?;
    if let Some(head_file) = &app.config.head_file {
        confstore_lkg::replace_file(&beside_head_file(head_file), note.as_bytes())
            .map_err(|e| format!("cannot write the checkpoint beside the head file: {e}"))?;
    }
    app.metrics.checkpoint(size);
    app.checkpoints.publish(Published { checkpoint, note: note.into() });
    Ok(())
}
