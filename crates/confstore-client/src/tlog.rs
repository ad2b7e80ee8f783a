//! The client's transparency-log checks (docs/format.md §19, ADR 0027): the signed
//! checkpoints of the log's Merkle tree it sees only grow, and the event behind each version
//! it applied is in the tree of the checkpoint it accepted.
//!
//! Off the hot path: the updater only hands over what it applied (and the checkpoint notes
//! MQTT brings) through a bounded channel with `try_send`; an [`Auditor`] task does the
//! checking and its REST requests afterwards. Applying a verified snapshot never waits for
//! it, and nothing it finds un-applies a version: the snapshot's own signature is what
//! makes it the configuration. What it finds is counted in [`crate::Stats`] and logged.
//!
//! - A checkpoint (retained on `system/config-checkpoint`, or `GET /api/v1/checkpoint`) is
//!   accepted only if it is a checkpoint of the client's store signed by a trusted key and,
//!   when one is held, a consistency proof (`GET /api/v1/proof/consistency`) shows the
//!   smaller of the two to be a prefix of the larger. A larger consistent one replaces the
//!   one held; a smaller consistent one is `stale`; an inconsistent one (or one of the same
//!   size with another root) is `forked`, logged as an error, and never accepted. The first
//!   checkpoint is taken on trust (nothing to compare it with), as is the first after the
//!   client moves to a new store generation (an announced rewind, ADR 0017).
//! - For every applied version, the inclusion proof of its `changed_seq` in the accepted
//!   checkpoint (`GET /api/v1/proof/inclusion`) must lead to that checkpoint's root; one
//!   that does not is an error (`inclusions_failed`). A version newer than the accepted
//!   checkpoint waits for the next one (checkpoints come every 100 events or 10 s, on MQTT;
//!   `GET /api/v1/checkpoint` is asked at most once per 0.5 s for such versions,
//!   since under continuous writes nearly every version applied is newer than the last
//!   checkpoint: asking for each was one more request to the server per write).
//!
//! The proof only says the log the store signed has, at `changed_seq`, the event whose hash
//! the server names: the snapshot does not carry that hash. What it adds to the snapshot's
//! signature is that every client holding a checkpoint sees one growing history.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use confstore_core::tlog::{self, Checkpoint, WitnessKey};
use confstore_core::{Hash32, StoreId, VerifyingKey};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::rest::Rest;
use crate::stats::Counters;

/// Inputs queued for the auditor at most; past that they are dropped (and the next
/// checkpoint or version catches up).
const QUEUE: usize = 256;
/// Versions waiting for a checkpoint that covers them, at most (the oldest are dropped;
/// limits.rs).
const PENDING: usize = confstore_core::limits::CLIENT_TLOG_PENDING_MAX;
/// First wait before asking REST again for a checkpoint (doubling up to [`RETRY_MAX`]).
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// A checkpoint the client accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedCheckpoint {
    /// Tree size: the seq of the newest event it covers.
    pub size: u64,
    /// The tree's root.
    pub root: [u8; 32],
    /// The signed note as received (C2SP `tlog-checkpoint`).
    pub note: String,
    /// The store generation the client held when it accepted it.
    pub generation: u64,
}

/// What the updater and the auditor share: the accepted checkpoint (read for
/// [`crate::Client::checkpoint`] and written into the LKG file with the next version).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    accepted: Mutex<Option<AcceptedCheckpoint>>,
}

impl Shared {
    pub(crate) fn accepted(&self) -> Option<AcceptedCheckpoint> {
        self.accepted.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set(&self, cp: Option<AcceptedCheckpoint>) {
        *self.accepted.lock().unwrap_or_else(|e| e.into_inner()) = cp;
    }
}

/// What the auditor is told.
#[derive(Debug)]
enum Input {
    /// A checkpoint note (from MQTT).
    Checkpoint(Vec<u8>),
    /// A version was applied.
    Applied { store_id: String, generation: u64, seq: u64 },
}

/// The updater's side: hands things over without waiting.
#[derive(Clone, Debug)]
pub(crate) struct Audit {
    tx: mpsc::Sender<Input>,
    pub(crate) shared: Arc<Shared>,
}

impl Audit {
    /// A handle and the auditor it feeds (to be run with [`Auditor::run`] once the client
    /// starts; until then inputs wait in the queue).
    pub(crate) fn new(
        rest: Rest,
        keys: Vec<VerifyingKey>,
        witnesses: Witnesses,
        counters: Arc<Counters>,
    ) -> (Self, Auditor) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared::default());
        let auditor = Auditor {
            rest,
            keys,
            witnesses,
            counters,
            shared: Arc::clone(&shared),
            rx,
            store: None,
            pending: BTreeSet::new(),
            unjudged: None,
            unwitnessed: None,
            retry: RETRY_MIN,
            last_fetch: None,
        };
        (Self { tx, shared }, auditor)
    }

    /// A checkpoint note arrived (MQTT).
    pub(crate) fn checkpoint(&self, note: &[u8]) {
        if self.tx.try_send(Input::Checkpoint(note.to_vec())).is_err() {
            debug!("transparency-log queue full; a checkpoint message was dropped");
        }
    }

    /// A version was applied.
    pub(crate) fn applied(&self, store_id: &str, generation: u64, seq: u64) {
        let input = Input::Applied { store_id: store_id.to_owned(), generation, seq };
        if self.tx.try_send(input).is_err() {
            debug!(seq, "transparency-log queue full; the inclusion check of an applied version was dropped");
        }
    }
}

/// The witness policy: a checkpoint is accepted only with valid cosignatures by at least
/// `required` of `keys` (c2sp.org/tlog-cosignature).
#[derive(Clone, Debug, Default)]
pub(crate) struct Witnesses {
    pub(crate) keys: Vec<WitnessKey>,
    pub(crate) required: usize,
}

/// The checking task's state.
pub(crate) struct Auditor {
    rest: Rest,
    keys: Vec<VerifyingKey>,
    witnesses: Witnesses,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Input>,
    /// The store (its origin) and generation of the versions applied.
    store: Option<(StoreId, u64)>,
    /// Applied versions' seqs not yet shown in an accepted checkpoint.
    pending: BTreeSet<u64>,
    /// A checkpoint that came before the store was known, or whose consistency proof could
    /// not be fetched: judged again later.
    unjudged: Option<Vec<u8>>,
    /// The size of the last checkpoint seen without enough witness cosignatures.
    unwitnessed: Option<u64>,
    retry: Duration,
    /// When `GET /api/v1/checkpoint` was last asked: an applied version the held checkpoint
    /// does not cover asks again only [`RETRY_MIN`] after it (newer checkpoints also come
    /// on MQTT), so the requests follow the checkpoint rate, not the write rate.
    last_fetch: Option<tokio::time::Instant>,
}

/// How a checkpoint compares with the one held.
enum Judged {
    Accepted,
    Refused,
    /// Not decided (REST failed): try again later.
    Later,
}

impl Auditor {
    /// Runs until `stop` changes or is dropped. (A client without MQTT drops its updater,
    /// and with it the queue's sender, after start: what is pending is still checked.)
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut due: Option<tokio::time::Instant> = None;
        let mut open = true;
        loop {
            let input = tokio::select! {
                biased;
                _ = stop.changed() => return,
                input = self.rx.recv(), if open => match input {
                    Some(input) => Some(input),
                    None => {
                        open = false;
                        continue;
                    }
                },
                () = wait(due) => None,
            };
            let progress = match input {
                Some(Input::Checkpoint(note)) => {
                    let judged = self.judge(&note).await;
                    if matches!(judged, Judged::Later) {
                        self.unjudged = Some(note);
                    }
                    self.check_pending().await;
                    !matches!(judged, Judged::Later)
                }
                Some(Input::Applied { store_id, generation, seq }) => self.on_applied(&store_id, generation, seq).await,
                None => self.retry_now().await,
            };
            let waiting = !self.pending.is_empty() || self.unjudged.is_some();
            if progress {
                self.retry = RETRY_MIN;
            }
            due = waiting.then(|| tokio::time::Instant::now() + self.retry);
            if waiting && !progress {
                self.retry = (self.retry * 2).min(RETRY_MAX);
            }
        }
    }

    /// A version was applied: note its store and generation, queue its inclusion check, and
    /// fetch a newer checkpoint if the one held does not cover it.
    async fn on_applied(&mut self, store_id: &str, generation: u64, seq: u64) -> bool {
        let Ok(store) = StoreId::from_hex(store_id) else { return false };
        match self.store {
            Some((s, g)) if s == store && g == generation => {}
            Some((s, g)) if s == store && generation < g => return false,
            previous => {
                if previous.is_some() {
                    info!(
                        generation,
                        "new store generation: the checkpoint held is dropped, the next one is taken anew"
                    );
                    self.shared.set(None);
                    self.pending.clear();
                }
                if self.shared.accepted().is_some_and(|cp| cp.generation != generation) {
                    self.shared.set(None);
                }
                self.store = Some((store, generation));
            }
        }
        if seq > 0 {
            self.pending.insert(seq);
            while self.pending.len() > PENDING {
                self.pending.pop_first();
            }
        }
        if let Some(note) = self.unjudged.take()
            && matches!(self.judge(&note).await, Judged::Later)
        {
            self.unjudged = Some(note);
        }
        let uncovered = self.shared.accepted().is_none_or(|cp| cp.size < seq);
        if uncovered && self.last_fetch.is_none_or(|at| at.elapsed() >= RETRY_MIN) {
            self.fetch_checkpoint().await;
        }
        self.check_pending().await
    }

    /// The retry timer: a checkpoint not judged yet, versions not covered yet.
    async fn retry_now(&mut self) -> bool {
        let mut progress = false;
        if let Some(note) = self.unjudged.take() {
            match self.judge(&note).await {
                Judged::Later => self.unjudged = Some(note),
                _ => progress = true,
            }
        }
        if self.pending.last().is_some_and(|&seq| self.shared.accepted().is_none_or(|cp| cp.size < seq)) {
            progress |= self.fetch_checkpoint().await;
        }
        self.check_pending().await || progress
    }

    /// `GET /api/v1/checkpoint`, judged. True if one was accepted.
    async fn fetch_checkpoint(&mut self) -> bool {
        self.last_fetch = Some(tokio::time::Instant::now());
        match self.rest.checkpoint().await {
            Ok(note) => matches!(self.judge(&note).await, Judged::Accepted),
            Err(e) => {
                Counters::bump(&self.counters.tlog_fetch_errors);
                debug!("cannot fetch the latest checkpoint: {e}");
                false
            }
        }
    }

    /// Judges a checkpoint against the one held (see the module docs).
    async fn judge(&mut self, note: &[u8]) -> Judged {
        let Some((store, generation)) = self.store else {
            // Which store it must be of is known once a version is applied.
            return Judged::Later;
        };
        let origin = tlog::origin(&store);
        let cp = match Checkpoint::open(note, &origin, &self.keys) {
            Ok(cp) => cp,
            Err(e) => {
                self.counters.refuse_checkpoint("signature");
                warn!("checkpoint refused: {e}");
                return Judged::Refused;
            }
        };
        if self.witnesses.required > 0 {
            match tlog::cosigned_by(note, &self.witnesses.keys) {
                Ok(by) if by.len() >= self.witnesses.required => {}
                Ok(_) if self.unwitnessed != Some(cp.size) => {
                    // The server publishes each checkpoint before its witnesses answer, then
                    // again with their cosignatures: refused without a count the first time
                    // (the next fetch or message brings the cosigned note).
                    debug!(size = cp.size, "a checkpoint without the witnesses' cosignatures yet");
                    self.unwitnessed = Some(cp.size);
                    return Judged::Refused;
                }
                Ok(by) => {
                    self.counters.refuse_checkpoint("unwitnessed");
                    warn!(
                        size = cp.size, cosigned_by = ?by.iter().map(|(name, _)| name).collect::<Vec<_>>(),
                        "checkpoint refused: cosigned by {} of the {} witnesses required (a witness refuses a \
                         checkpoint inconsistent with one it cosigned: a split view?)",
                        by.len(), self.witnesses.required
                    );
                    return Judged::Refused;
                }
                Err(e) => {
                    self.counters.refuse_checkpoint("signature");
                    warn!("checkpoint refused: a witness's cosignature: {e}");
                    return Judged::Refused;
                }
            }
        }
        let Some(held) = self.shared.accepted() else {
            return self.accept(cp, note, generation);
        };
        if cp.size == held.size {
            if cp.root == held.root {
                return Judged::Refused; // the one held again: nothing new, nothing wrong
            }
            return self.forked(&cp, note, &held, "the same size with another root");
        }
        let (old, old_root, new, new_root) = if cp.size < held.size {
            (cp.size, cp.root, held.size, held.root)
        } else {
            (held.size, held.root, cp.size, cp.root)
        };
        let proof = match self.rest.consistency_proof(old, new).await {
            Ok(answer) => match proof_hashes(&answer, &[("from", old), ("to", new)]) {
                Ok(p) => p,
                Err(why) => {
                    self.counters.refuse_checkpoint("unproven");
                    warn!("checkpoint of size {} not accepted: the consistency proof is malformed: {why}", cp.size);
                    return Judged::Later;
                }
            },
            Err(e) => {
                Counters::bump(&self.counters.tlog_fetch_errors);
                self.counters.refuse_checkpoint("unproven");
                debug!("checkpoint of size {} not accepted yet: no consistency proof: {e}", cp.size);
                return Judged::Later;
            }
        };
        if let Err(e) = tlog::verify_consistency(&proof, new, &new_root, old, &old_root) {
            return self.forked(&cp, note, &held, &format!("no consistency between sizes {old} and {new} ({e})"));
        }
        if cp.size < held.size {
            self.counters.refuse_checkpoint("stale");
            debug!(size = cp.size, held = held.size, "an older checkpoint (a prefix of the one held) ignored");
            return Judged::Refused;
        }
        self.accept(cp, note, generation)
    }

    fn accept(&self, cp: Checkpoint, note: &[u8], generation: u64) -> Judged {
        let note = String::from_utf8_lossy(note).into_owned();
        debug!(size = cp.size, "checkpoint accepted");
        self.shared.set(Some(AcceptedCheckpoint { size: cp.size, root: cp.root, note, generation }));
        Counters::bump(&self.counters.checkpoints_accepted);
        Judged::Accepted
    }

    fn forked(&self, cp: &Checkpoint, note: &[u8], held: &AcceptedCheckpoint, why: &str) -> Judged {
        self.counters.refuse_checkpoint("forked");
        error!(
            alert = "checkpoint_fork", size = cp.size, root = %hex::encode(cp.root), held_size = held.size,
            held_root = %hex::encode(held.root),
            "the store signed a checkpoint inconsistent with the one this client accepted ({why}): \
             two histories under one key; refused (keep both notes as evidence):\n{}\n{}",
            held.note,
            String::from_utf8_lossy(note)
        );
        Judged::Refused
    }

    /// Checks the newest pending version the accepted checkpoint covers; the older ones it
    /// covers are settled with it, so the client asks for at most one inclusion proof per
    /// accepted checkpoint (≤ 10 a second), however fast versions arrive. True if any was
    /// decided.
    async fn check_pending(&mut self) -> bool {
        let Some(held) = self.shared.accepted() else { return false };
        let covered: Vec<u64> = self.pending.range(..=held.size).copied().collect();
        let Some((&newest, older)) = covered.split_last() else { return false };
        for seq in older {
            self.pending.remove(seq);
        }
        let mut progress = !older.is_empty();
        for seq in [newest] {
            let answer = match self.rest.inclusion_proof(seq, held.size).await {
                Ok(answer) => answer,
                Err(e) => {
                    Counters::bump(&self.counters.tlog_fetch_errors);
                    debug!(seq, size = held.size, "cannot fetch an inclusion proof: {e}");
                    return progress;
                }
            };
            self.pending.remove(&seq);
            progress = true;
            let checked = proof_hashes(&answer, &[("seq", seq), ("size", held.size)]).and_then(|p| {
                let hash = answer
                    .get("event_hash")
                    .and_then(Value::as_str)
                    .and_then(|h| Hash32::from_hex(h).ok())
                    .ok_or("no event_hash of 64 hex digits")?;
                tlog::verify_inclusion(&p, held.size, &held.root, seq, &hash).map_err(|e| e.to_string())
            });
            match checked {
                Ok(()) => Counters::bump(&self.counters.inclusions_verified),
                Err(why) => {
                    Counters::bump(&self.counters.inclusions_failed);
                    error!(
                        alert = "inclusion_failed",
                        seq,
                        size = held.size,
                        "the event of an applied version is not shown in the accepted checkpoint's tree: {why}"
                    );
                }
            }
        }
        progress
    }
}

async fn wait(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The `hashes` of a proof answer (base64, 32 bytes each), after checking that its numbers
/// are the ones asked for.
fn proof_hashes(answer: &Value, expect: &[(&str, u64)]) -> Result<Vec<[u8; 32]>, String> {
    for (name, value) in expect {
        if answer.get(*name).and_then(Value::as_u64) != Some(*value) {
            return Err(format!("the answer's {name} is not {value}"));
        }
    }
    let hashes = answer.get("hashes").and_then(Value::as_array).ok_or("no hashes array")?;
    if hashes.len() > tlog::PROOF_HASHES_MAX {
        return Err(format!("{} hashes, more than any proof has", hashes.len()));
    }
    hashes
        .iter()
        .map(|h| {
            let bytes = h.as_str().and_then(|s| B64.decode(s).ok()).ok_or("a hash is not base64")?;
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| "a hash is not 32 bytes".to_owned())
        })
        .collect()
}

/// Opens the checkpoint kept in an LKG file (it must be of `store_id`, signed by a trusted
/// key).
pub(crate) fn open_kept(
    note: &str,
    store_id: &str,
    keys: &[VerifyingKey],
    generation: u64,
) -> Result<AcceptedCheckpoint, String> {
    let store = StoreId::from_hex(store_id).map_err(|e| format!("store id: {e}"))?;
    let cp = Checkpoint::open(note.as_bytes(), &tlog::origin(&store), keys).map_err(|e| e.to_string())?;
    Ok(AcceptedCheckpoint { size: cp.size, root: cp.root, note: note.to_owned(), generation })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{FakeRest, STORE, Signer};
    use confstore_core::tlog::{HashReader, RootBuilder, TlogError, TreeHash};

    /// The stored hashes of a tree, in memory.
    struct Mem(Vec<TreeHash>);

    impl HashReader for Mem {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<TreeHash>, TlogError> {
            indexes
                .iter()
                .map(|&i| {
                    usize::try_from(i).ok().and_then(|i| self.0.get(i).copied()).ok_or(TlogError::IndexesNotInTree)
                })
                .collect()
        }
    }

    fn b64(hashes: &[TreeHash]) -> Vec<String> {
        hashes.iter().map(|h| B64.encode(h.0)).collect()
    }

    async fn until(counters: &Counters, what: &str, done: impl Fn(&crate::Stats) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(&counters.snapshot()) {
            assert!(tokio::time::Instant::now() < deadline, "{what}: {:?}", counters.snapshot());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A log of 20 events (their hashes made up) and its tree: the hashes, the tree's
    /// nodes, and the root at each size (index 0: the empty tree).
    fn log20() -> (Vec<Hash32>, Mem, Vec<[u8; 32]>) {
        let events: Vec<Hash32> = (1..=20u64).map(|i| Hash32(tlog::sha256(&i.to_be_bytes()))).collect();
        let (mut builder, mut mem) = (RootBuilder::default(), Mem(Vec::new()));
        let mut roots = vec![[0u8; 32]];
        for h in &events {
            mem.0.extend(builder.push(h).into_iter().map(TreeHash));
            roots.push(builder.root());
        }
        (events, mem, roots)
    }

    /// Serves the proof that the tree of 10 is a prefix of the tree of 20.
    fn route_consistency_10_to_20(rest: &FakeRest, mem: &Mem) {
        let consistency = tlog::prove_consistency(20, 10, mem).unwrap();
        rest.route(
            "/api/v1/proof/consistency?from=10&to=20",
            &serde_json::json!({"from": 10, "to": 20, "hashes": b64(&consistency)}).to_string(),
        );
    }

    /// An auditor asking `rest` and trusting `signer`, running until the sender is dropped.
    fn start_auditor(
        rest: &FakeRest,
        signer: &Signer,
    ) -> (Audit, Arc<Counters>, tokio::task::JoinHandle<()>, watch::Sender<bool>) {
        let counters = Arc::new(Counters::default());
        let rest_client = Rest::new(&rest.url, "web", None).unwrap();
        let (audit, auditor) =
            Audit::new(rest_client, vec![signer.public()], Witnesses::default(), Arc::clone(&counters));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(auditor.run(stop_rx));
        (audit, counters, task, stop)
    }

    #[tokio::test]
    async fn checkpoints_only_grow_and_applied_versions_are_shown_in_them() {
        // A log of 20 events (their hashes made up), its tree, and the server's answers.
        let (events, mem, roots) = log20();
        let signer = Signer::new(1);
        let rest = FakeRest::start().await;
        let note10 = signer.checkpoint(10, roots[10]);
        let note20 = signer.checkpoint(20, roots[20]);
        rest.route("/api/v1/checkpoint", &note10);
        let inclusion = |seq: u64, size: u64, hash: &Hash32| {
            let p = tlog::prove_inclusion(size, seq - 1, &mem).unwrap();
            serde_json::json!({"seq": seq, "size": size, "event_hash": hash.to_hex(), "hashes": b64(&p)}).to_string()
        };
        rest.route("/api/v1/proof/inclusion?seq=7&size=10", &inclusion(7, 10, &events[6]));
        // Event 15's answer names another event's hash: it cannot lead to the root.
        rest.route("/api/v1/proof/inclusion?seq=15&size=20", &inclusion(15, 20, &events[3]));
        route_consistency_10_to_20(&rest, &mem);

        let (audit, counters, task, _stop) = start_auditor(&rest, &signer);

        // A version applied: the checkpoint fetched and taken (the first, on trust), the
        // version's event shown in it.
        audit.applied(STORE, 1, 7);
        until(&counters, "event 7 in the checkpoint of 10", |s| s.inclusions_verified == 1).await;
        assert_eq!(audit.shared.accepted().map(|c| c.size), Some(10));
        // A larger, consistent checkpoint replaces it.
        audit.checkpoint(note20.as_bytes());
        until(&counters, "the checkpoint of 20", |s| s.checkpoints_accepted == 2).await;
        // Refused: the same size with another root, an older one (stale), another key's.
        audit.checkpoint(signer.checkpoint(20, [9; 32]).as_bytes());
        audit.checkpoint(note10.as_bytes());
        audit.checkpoint(Signer::new(2).checkpoint(21, [9; 32]).as_bytes());
        until(&counters, "three refusals", |s| s.checkpoints_refused.values().sum::<u64>() == 3).await;
        let stats = counters.snapshot();
        assert_eq!(
            (
                stats.checkpoints_refused("forked"),
                stats.checkpoints_refused("stale"),
                stats.checkpoints_refused("signature")
            ),
            (1, 1, 1),
            "{stats:?}"
        );
        let held = audit.shared.accepted().unwrap();
        assert_eq!((held.size, held.root), (20, roots[20]));
        // An answer that does not lead to the accepted root.
        audit.applied(STORE, 1, 15);
        until(&counters, "event 15's proof refused", |s| s.inclusions_failed == 1).await;
        assert_eq!(counters.snapshot().checkpoints_accepted, 2);
        task.abort();
    }

    #[tokio::test]
    async fn versions_applied_faster_than_checkpoints_are_made_ask_rest_at_the_retry_rate() {
        // Under continuous writes the checkpoint held lags the versions applied (one is made
        // every 100 events or 10 s). Each applied version used to ask `GET /checkpoint`
        // again: one request to the server per write. Now at most one per RETRY_MIN.
        let (_, mem, roots) = log20();
        let signer = Signer::new(1);
        let rest = FakeRest::start().await;
        rest.route("/api/v1/checkpoint", &signer.checkpoint(10, roots[10]));
        route_consistency_10_to_20(&rest, &mem);
        let (audit, counters, task, _stop) = start_auditor(&rest, &signer);
        let started = tokio::time::Instant::now();
        for seq in 11..=60 {
            audit.applied(STORE, 1, seq);
        }
        // Queued behind those 50 versions: once it is taken, all of them were handled.
        audit.checkpoint(signer.checkpoint(20, roots[20]).as_bytes());
        until(&counters, "the checkpoint of 20", |s| s.checkpoints_accepted == 2).await;
        let asked = rest.requests().iter().filter(|r| r.as_str() == "/api/v1/checkpoint").count();
        // One for the first version; one more per RETRY_MIN the test took (a slow machine).
        let allowed = 1 + usize::try_from(started.elapsed().as_millis() / RETRY_MIN.as_millis()).unwrap();
        assert!(asked >= 1 && asked <= allowed, "{asked} requests for 50 versions in {:?}", started.elapsed());
        task.abort();
    }

    #[test]
    fn proof_answers_are_checked_before_use() {
        let ok = serde_json::json!({"from": 3, "to": 7, "hashes": [B64.encode([1u8; 32])]});
        assert_eq!(proof_hashes(&ok, &[("from", 3), ("to", 7)]), Ok(vec![[1u8; 32]]));
        assert!(proof_hashes(&ok, &[("from", 2), ("to", 7)]).is_err(), "another range");
        for bad in [
            serde_json::json!({"from": 3, "to": 7}),
            serde_json::json!({"from": 3, "to": 7, "hashes": ["!!"]}),
            serde_json::json!({"from": 3, "to": 7, "hashes": [B64.encode([1u8; 31])]}),
            serde_json::json!({"from": 3, "to": 7, "hashes": vec![B64.encode([1u8; 32]); 200]}),
        ] {
            assert!(proof_hashes(&bad, &[("from", 3), ("to", 7)]).is_err(), "{bad}");
        }
    }
}
