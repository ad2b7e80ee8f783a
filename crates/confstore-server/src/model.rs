//! The server's read model: the configuration state at the head, kept in memory by the
//! store's commit listener (so it shows every acknowledged write before the writer is
//! answered), plus a cache of signed service snapshots.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use confstore_core::{Hash32, SigningKey, State};
use confstore_lkg::LkgContent;
use confstore_log::Committed;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// One service's snapshot, ready to send.
#[derive(Debug)]
pub struct Snap {
    /// Epoch it reflects.
    pub epoch: u64,
    /// The plain JSON document.
    pub json: Value,
    /// The flattened JWS (EdDSA), as text.
    pub jws: String,
}

/// The state at the head and what is derived from it in memory.
#[derive(Debug)]
pub struct ReadModel {
    /// State after the last event folded in.
    pub state: State,
    /// Hash of that event.
    pub head_hash: Hash32,
    /// Store id (hex) and generation, for snapshots.
    pub store_id: String,
    /// Store generation.
    pub generation: u64,
}

/// The read model shared by handlers, the listener and the projector.
#[derive(Debug)]
pub struct Live {
    model: RwLock<ReadModel>,
    snapshots: Mutex<HashMap<String, Arc<Snap>>>,
    /// Woken after every commit that folded new events in (the projector waits on it).
    pub changed: Notify,
    /// The head seq, sent after every fold (the MQTT publisher watches it).
    pub head: tokio::sync::watch::Sender<u64>,
    /// Events per commit seen by the listener (for the batch-size histogram).
    pub batches: crate::metrics::Metrics,
}

impl Live {
    /// An empty model for the store `store_id`; the listener fills it.
    pub fn new(store_id: String, generation: u64, metrics: crate::metrics::Metrics) -> Arc<Self> {
        Arc::new(Self {
            model: RwLock::new(ReadModel {
                state: State::default(),
                head_hash: Hash32::default(),
                store_id,
                generation,
            }),
            snapshots: Mutex::new(HashMap::new()),
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
            for (seq, body) in c.events {
                if *seq > m.state.seq {
                    m.state.apply_body(*seq, body);
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
        if new_generation {
            self.snapshots.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        }
        self.changed.notify_one();
        self.head.send_replace(seq);
    }

    /// Runs `f` with the read model (read-locked: keep it short).
    pub fn read<T>(&self, f: impl FnOnce(&ReadModel) -> T) -> T {
        f(&self.model.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The snapshot of `service` at the head, signed with `key`: from the cache when the
    /// epoch has not moved, else projected and signed now. `None`: unknown service.
    pub fn snapshot(&self, service: &str, key: &SigningKey) -> Option<Arc<Snap>> {
        let epoch = self.read(|m| m.state.epoch);
        if let Some(s) = self.cached(service).filter(|s| s.epoch == epoch) {
            return Some(s);
        }
        let snap = self.read(|m| {
            confstore_snapshots::project(&m.state, &m.store_id, m.generation, service).ok().map(|p| Snap {
                epoch: m.state.epoch,
                json: p.to_json(),
                jws: p.to_jws(key).to_string(),
            })
        })?;
        let snap = Arc::new(snap);
        let mut cache = self.snapshots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Keep whichever is newer if another request raced this one.
        if cache.get(service).is_none_or(|old| old.epoch <= snap.epoch) {
            cache.insert(service.to_owned(), Arc::clone(&snap));
        }
        Some(snap)
    }

    fn cached(&self, service: &str) -> Option<Arc<Snap>> {
        self.snapshots.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(service).cloned()
    }
}

/// The LKG content for `state`: every service's snapshot and the live tokens.
pub fn lkg_content(state: &State, store_id: &str, generation: u64, head_hash: &Hash32) -> LkgContent {
    let services = state
        .services
        .keys()
        .filter_map(|s| {
            confstore_snapshots::project(state, store_id, generation, s).ok().map(|p| (s.clone(), p.to_json()))
        })
        .collect();
    let tokens = state
        .tokens
        .iter()
        .filter(|(_, t)| t.revoked_seq.is_none())
        .map(|(id, t)| {
            (
                id.clone(),
                json!({"name": t.name, "role": t.role.as_str(), "service": t.service, "hash": hex::encode(t.hash)}),
            )
        })
        .collect();
    LkgContent {
        store_id: store_id.to_owned(),
        generation,
        epoch: state.epoch,
        seq: state.seq,
        head_hash: head_hash.to_hex(),
        services,
        tokens,
    }
}
