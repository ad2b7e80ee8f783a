//! The server's read model: the configuration state at the head, kept in memory by the
//! store's commit listener (so it shows every acknowledged write before the writer is
//! answered), plus a cache of signed service snapshots.

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
        self.changed.notify_one();
        self.head.send_replace(seq);
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
        let snap = self.read(|m| {
            confstore_snapshots::project(&m.state, &m.store_id.to_hex(), m.generation, service).ok().map(|p| Snap {
                head_epoch: m.state.epoch,
                json: p.to_json(),
                jws: p.to_jws(key).to_string(),
            })
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
