//! The server's read model: the configuration state at the head, kept in memory by the
//! store's commit listener (so it shows every acknowledged write before the writer is
//! answered), plus a cache of signed service snapshots.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use confstore_core::Verified;
use confstore_core::{Hash32, SigningKey, State, StoreId};
use confstore_log::Committed;
use serde_json::Value;
use tokio::sync::Notify;

/// One service's snapshot, ready to send.
#[derive(Debug)]
pub struct Snap {
    /// The store's epoch at the head it was projected at (the cache is valid while the
    /// head has this epoch).
    pub head_epoch: u64,
    /// The plain JSON document.
    pub json: Value,
    /// The flattened JWS (EdDSA), as text.
    pub jws: String,
}

/// The state at the head and what is derived from it in memory.
#[derive(Debug)]
pub struct AtHead {
    /// State after the last event folded in.
    pub state: State,
    /// Hash of that event.
    pub head_hash: Hash32,
    /// Store id, for snapshots (hex only where it is written out).
    pub store_id: StoreId,
    /// Store generation.
    pub generation: u64,
}

/// The read model shared by handlers, the listener and the projector.
#[derive(Debug)]
pub struct ReadModel {
    model: RwLock<AtHead>,
    snapshots: Mutex<HashMap<String, Arc<Snap>>>,
    /// The events folded in lately, newest last: the MQTT publisher takes them from here
    /// instead of reading and verifying the log again (bounded by [`RECENT_EVENTS_MAX`] and
    /// [`RECENT_BYTES_MAX`]; a reader that fell behind further reads the log).
    recent: Mutex<Recent>,
    /// Woken after every commit that folded new events in (the projector waits on it).
    pub changed: Notify,
    /// The head seq, sent after every fold (the MQTT publisher watches it).
    pub head: tokio::sync::watch::Sender<u64>,
    /// Events per commit seen by the listener (for the batch-size histogram).
    pub batches: crate::metrics::Metrics,
}

impl ReadModel {
    /// An empty model for the store `store_id`; the listener fills it.
    pub fn new(store_id: StoreId, generation: u64, metrics: crate::metrics::Metrics) -> Arc<Self> {
        Arc::new(Self {
            model: RwLock::new(AtHead { state: State::default(), head_hash: Hash32::default(), store_id, generation }),
            snapshots: Mutex::new(HashMap::new()),
            recent: Mutex::new(Recent::default()),
            changed: Notify::new(),
            head: tokio::sync::watch::Sender::new(0),
            batches: metrics,
        })
    }

    /// The commit listener to give to `Store::set_commit_listener`.
    pub fn listener(self: &Arc<Self>) -> confstore_log::Listener {
        let me = Arc::clone(self);
        Box::new(move |c: &Committed<'_>| me.fold(c))
    }

    fn fold(&self, c: &Committed<'_>) {
        let mut m = self.model.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if c.events.is_empty() {
            m.state = c.state.clone();
        } else {
            self.batches.commit_batch(c.events.len());
            for f in c.events {
                if f.seq() > m.state.seq {
                    m.state.apply(f);
                }
            }
        }
        m.head_hash = c.head_hash;
        self.batches.set_head(m.state.seq, m.state.epoch);
        let seq = m.state.seq;
        let new_generation = m.state.generation > m.generation;
        if new_generation {
            // A generation_started (ADR 0017): snapshots keep their epoch but now carry the
            // new generation, so none of the cached ones may be served again.
            m.generation = m.state.generation;
        }
        drop(m);
        if c.events.is_empty() {
            // The state was replaced (a reload): what came before may not lead here.
            self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        } else {
            self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(c.events);
        }
        if new_generation {
            self.snapshots.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        }
        if !defer_wake() {
            self.wake(seq);
        }
    }

    /// Wakes the tasks that follow the head: the projector and the MQTT publisher.
    fn wake(&self, seq: u64) {
        self.changed.notify_one();
        self.head.send_replace(seq);
    }

    /// [`Self::wake`] for a commit whose wake was deferred: the head now (newer than the
    /// commit's if others followed, so the watch never goes back).
    fn wake_at_head(&self) {
        self.wake(self.read(|m| m.state.seq));
    }

    /// For a commit about to run on a blocking thread: the task that awaits it holds the
    /// first half, the blocking thread runs the commit in the second ([`WakeHand::run`]).
    /// The commit listener's wakes then come from the awaiting task, on a runtime worker,
    /// so the woken tasks are scheduled on that worker instead of waking an idle one
    /// (docs/benchmarks.md: 0.27 fewer context switches per write with the live stream on,
    /// CPU per write ~6 % lower in the median of six pairs). Nothing is lost if either side
    /// is dropped early: whichever side is left does the wake.
    pub fn commit_wakes(self: &Arc<Self>) -> (CommitWakes, WakeHand) {
        let slot = Arc::new(Mutex::new(WakeSlot { waiting: true, due: false }));
        (CommitWakes { model: Arc::clone(self), slot: Arc::clone(&slot) }, WakeHand { model: Arc::clone(self), slot })
    }

    /// Runs `f` with the read model (read-locked: keep it short).
    pub fn read<T>(&self, f: impl FnOnce(&AtHead) -> T) -> T {
        f(&self.model.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The snapshot of `service` at the head, signed with `key`: from the cache when the
    /// epoch has not moved, else projected and signed now. `None`: unknown service.
    pub fn snapshot(&self, service: &str, key: &SigningKey) -> Option<Arc<Snap>> {
        let epoch = self.read(|m| m.state.epoch);
        if let Some(s) = self.cached(service).filter(|s| s.head_epoch == epoch) {
            return Some(s);
        }
        // What the snapshot reads, taken under the lock (the maps are shared, not copied);
        // rendered and signed after it, so the commit listener never waits for a render.
        let (view, store_id, generation) =
            self.read(|m| (confstore_snapshots::service_view(&m.state, service), m.store_id, m.generation));
        let snap = confstore_snapshots::project(&view, &store_id.to_hex(), generation, service).ok().map(|p| Snap {
            head_epoch: view.epoch,
            json: p.to_json(),
            jws: p.to_jws_text(key),
        })?;
        let snap = Arc::new(snap);
        let mut cache = self.snapshots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Keep whichever is newer if another request raced this one.
        if cache.get(service).is_none_or(|old| old.head_epoch <= snap.head_epoch) {
            cache.insert(service.to_owned(), Arc::clone(&snap));
        }
        Some(snap)
    }

    /// The events after `seq` through the head, if every one of them is still held in
    /// memory (`None`: read them from the log).
    pub fn events_after(&self, seq: u64) -> Option<Vec<Arc<Verified>>> {
        self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).after(seq)
    }

    fn cached(&self, service: &str) -> Option<Arc<Snap>> {
        self.snapshots.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(service).cloned()
    }
}

thread_local! {
    /// Whether this thread is running a commit inside [`WakeHand::run`], and whether the
    /// commit listener folded anything in since (a wake is due).
    static DEFERRING: Cell<bool> = const { Cell::new(false) };
    static WAKE_DUE: Cell<bool> = const { Cell::new(false) };
}

/// Called by the commit listener: true if the wake is left to [`WakeHand::run`]'s caller.
fn defer_wake() -> bool {
    let deferring = DEFERRING.with(Cell::get);
    if deferring {
        WAKE_DUE.with(|d| d.set(true));
    }
    deferring
}

/// Shared by the two halves of [`ReadModel::commit_wakes`].
#[derive(Debug)]
struct WakeSlot {
    /// The awaiting task is still there to take the wake.
    waiting: bool,
    /// The commit folded events in and nobody has woken the followers yet.
    due: bool,
}

fn lock_slot(slot: &Mutex<WakeSlot>) -> std::sync::MutexGuard<'_, WakeSlot> {
    slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The awaiting task's half of [`ReadModel::commit_wakes`]: dropping it (after the commit,
/// or when the task is cancelled) wakes the followers if the commit left that to it.
#[derive(Debug)]
pub struct CommitWakes {
    model: Arc<ReadModel>,
    slot: Arc<Mutex<WakeSlot>>,
}

impl Drop for CommitWakes {
    fn drop(&mut self) {
        let due = {
            let mut slot = lock_slot(&self.slot);
            slot.waiting = false;
            std::mem::take(&mut slot.due)
        };
        if due {
            self.model.wake_at_head();
        }
    }
}

/// The blocking thread's half of [`ReadModel::commit_wakes`].
#[derive(Debug)]
pub struct WakeHand {
    model: Arc<ReadModel>,
    slot: Arc<Mutex<WakeSlot>>,
}

impl WakeHand {
    /// Runs `commit` (a `Store::append`) with the listener's wakes handed to the awaiting
    /// task; if that task is gone already, this thread wakes the followers itself. Also on
    /// a panic.
    pub fn run<T>(self, commit: impl FnOnce() -> T) -> T {
        struct Reset(WakeHand);
        impl Drop for Reset {
            fn drop(&mut self) {
                DEFERRING.with(|d| d.set(false));
                if !WAKE_DUE.with(|d| d.replace(false)) {
                    return;
                }
                let mut slot = lock_slot(&self.0.slot);
                if slot.waiting {
                    slot.due = true;
                } else {
                    drop(slot);
                    self.0.model.wake_at_head();
                }
            }
        }
        let _reset = Reset(self);
        WAKE_DUE.with(|d| d.set(false));
        DEFERRING.with(|d| d.set(true));
        commit()
    }
}

/// Most events [`ReadModel`] keeps in memory for the MQTT stream.
pub const RECENT_EVENTS_MAX: usize = confstore_core::limits::RECENT_EVENTS_MAX;
/// Most bytes of values, schemas and ciphertexts those events may hold.
pub const RECENT_BYTES_MAX: usize = confstore_core::limits::RECENT_EVENT_BYTES_MAX;

/// The recent events, contiguous in seq.
#[derive(Debug, Default)]
struct Recent {
    events: VecDeque<Arc<Verified>>,
    bytes: usize,
}

impl Recent {
    fn push(&mut self, new: &[Verified]) {
        for f in new {
            if self.events.back().is_some_and(|last| last.seq() + 1 != f.seq()) {
                // Not contiguous (should not happen: the writer folds in seq order): start over.
                self.clear();
            }
            self.bytes += weight(f.body());
            self.events.push_back(Arc::new(f.clone()));
        }
        while self.events.len() > RECENT_EVENTS_MAX || (self.bytes > RECENT_BYTES_MAX && self.events.len() > 1) {
            if let Some(old) = self.events.pop_front() {
                self.bytes -= weight(old.body());
            }
        }
    }

    fn clear(&mut self) {
        self.events.clear();
        self.bytes = 0;
    }

    fn after(&self, seq: u64) -> Option<Vec<Arc<Verified>>> {
        let first = self.events.front()?.seq();
        let last = self.events.back()?.seq();
        if seq >= last {
            return Some(Vec::new());
        }
        if seq + 1 < first {
            return None;
        }
        let skip = usize::try_from(seq + 1 - first).ok()?;
        Some(self.events.iter().skip(skip).cloned().collect())
    }
}

/// The bytes an event body holds beyond its fixed fields (values, schemas, ciphertexts).
fn weight(body: &confstore_core::event::EventBody) -> usize {
    use confstore_core::event::EventKind as K;
    let variable = match &body.kind {
        K::ValueSet { value_json, .. } => value_json.len(),
        K::SchemaSet { schema_json, .. } => schema_json.len(),
        K::SecretSet { ciphertext, .. } => ciphertext.len(),
        _ => 0,
    };
    256 + variable + body.reason.len() + body.actor.len() + body.request_id.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Arc<ReadModel> {
        ReadModel::new(StoreId([0; 16]), 1, crate::metrics::Metrics::new())
    }

    /// What a reload hands the listener (no events: the state replaced); it wakes the
    /// followers like a commit does.
    fn fold(m: &ReadModel) {
        m.fold(&Committed { events: &[], state: &State::default(), head_hash: Hash32::default() });
    }

    #[test]
    fn a_commit_run_by_the_hand_wakes_when_the_awaiting_half_is_dropped() {
        let m = model();
        let mut rx = m.head.subscribe();
        let (wakes, hand) = m.commit_wakes();
        hand.run(|| fold(&m));
        assert!(!rx.has_changed().unwrap(), "the blocking thread left the wake to the awaiting task");
        drop(wakes);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        // Outside `run`, the listener wakes at once.
        fold(&m);
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn the_hand_wakes_itself_when_the_awaiting_task_is_gone() {
        let m = model();
        let rx = m.head.subscribe();
        let (wakes, hand) = m.commit_wakes();
        drop(wakes); // the request was cancelled while its commit ran
        assert!(!rx.has_changed().unwrap());
        hand.run(|| fold(&m));
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn nothing_folded_nothing_woken_and_a_panic_hands_over_too() {
        let m = model();
        let mut rx = m.head.subscribe();
        let (wakes, hand) = m.commit_wakes();
        hand.run(|| ());
        drop(wakes);
        assert!(!rx.has_changed().unwrap());

        let (wakes, hand) = m.commit_wakes();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            hand.run(|| {
                fold(&m);
                panic!("the commit failed after the listener ran");
            })
        }));
        assert!(r.is_err());
        assert!(!rx.has_changed().unwrap());
        drop(wakes);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        // The thread is not left deferring.
        fold(&m);
        assert!(rx.has_changed().unwrap());
    }
}
