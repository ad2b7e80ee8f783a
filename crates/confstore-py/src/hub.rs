//! Live updates for Python: the Rust client's `on_update` turned into [`Update`] objects
//! handed to every subscribed callable.
//!
//! `on_update` runs on the client's runtime thread for every applied version, in order,
//! once each. The hub remembers the resolved map of the version before, so each update
//! carries `old`, `new` and the keys that changed. Callbacks run on that thread with the
//! GIL taken; an exception in one is logged (logger `confstore`) and the next one still
//! runs: a broken callback never stops the client.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use confstore_client::Config;
use pyo3::PyTraverseError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use serde_json::{Map, Value};

use crate::convert;

/// One applied version as a subscriber sees it.
#[pyclass(frozen, module = "confstore")]
pub(crate) struct Update {
    /// The resolved configuration before (env overrides included).
    #[pyo3(get)]
    old: Py<PyDict>,
    /// The resolved configuration now.
    #[pyo3(get)]
    new: Py<PyDict>,
    /// The keys whose value differs between `old` and `new` (added, removed or changed),
    /// sorted.
    #[pyo3(get)]
    changed: Py<PyTuple>,
    /// The store epoch the new version reflects.
    #[pyo3(get)]
    epoch: u64,
    /// The new version of the service's configuration (the epoch that last changed it).
    #[pyo3(get)]
    version: u64,
}

#[pymethods]
impl Update {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!("Update(epoch={}, version={}, changed={})", self.epoch, self.version, self.changed.bind(py))
    }
}

/// The subscribers of one client and the version they last saw.
pub(crate) struct Hub {
    /// Set when the client is closing: no callback is started after that.
    closing: AtomicBool,
    /// The resolved map of the version held, `old` of the next update.
    previous: Mutex<Option<Map<String, Value>>>,
    subscribers: Mutex<Vec<(u64, Py<PyAny>)>>,
    next_id: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves the data consistent (each update
    // replaces it whole), so a poisoned lock is used as is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The resolved key → value map of a version.
fn resolved(config: &Config) -> Map<String, Value> {
    config.iter().map(|(key, value, _)| (key.to_owned(), value.clone())).collect()
}

impl Hub {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            closing: AtomicBool::new(false),
            previous: Mutex::new(None),
            subscribers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        })
    }

    /// Takes `config` as the version subscribers have seen: the one the client started
    /// with. Called on the runtime thread right after start-up, before any live update can
    /// be applied (the runtime has one thread and this runs without yielding to it).
    pub(crate) fn seed(&self, config: &Config) {
        *lock(&self.previous) = Some(resolved(config));
    }

    /// No more callbacks from now on; the subscribers are dropped.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.clear();
    }

    /// Shows the garbage collector the callbacks held, so a client whose callback refers
    /// back to it (a service object subscribing its own method) can be collected.
    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        // The collector must not wait: a list being changed right now is not shown, which
        // only keeps its objects alive this round, never frees one in use.
        if let Ok(subscribers) = self.subscribers.try_lock() {
            for (_, callback) in subscribers.iter() {
                visit.call(callback)?;
            }
        }
        Ok(())
    }

    /// Drops the callbacks (the collector breaking a cycle through them).
    pub(crate) fn clear(&self) {
        let dropped = std::mem::take(&mut *lock(&self.subscribers));
        drop(dropped);
    }

    pub(crate) fn subscribe(&self, callback: Py<PyAny>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.subscribers).push((id, callback));
        id
    }

    /// Whether `id` was subscribed.
    pub(crate) fn unsubscribe(&self, id: u64) -> bool {
        let mut subscribers = lock(&self.subscribers);
        let before = subscribers.len();
        subscribers.retain(|(sid, _)| *sid != id);
        subscribers.len() != before
    }

    /// The client's `on_update`: reports `config` to every subscriber.
    pub(crate) fn on_update(&self, config: &Config) {
        let new = resolved(config);
        // Versions applied during start-up come before `seed`; nobody can have subscribed
        // yet, so they only move `previous` on.
        let Some(old) = lock(&self.previous).replace(new.clone()) else { return };
        if self.closing.load(Ordering::SeqCst) || lock(&self.subscribers).is_empty() {
            return;
        }
        let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        let changed: Vec<&String> = keys.into_iter().filter(|k| old.get(*k) != new.get(*k)).collect();
        let version = config.version();
        // During interpreter shutdown there is no Python to call (the client is being
        // closed by then; see `close_all`).
        Python::try_attach(|py| {
            let update = (|| {
                Py::new(
                    py,
                    Update {
                        old: convert::dict(py, &old)?.unbind(),
                        new: convert::dict(py, &new)?.unbind(),
                        changed: PyTuple::new(py, changed)?.unbind(),
                        epoch: version.epoch,
                        version: version.changed_epoch,
                    },
                )
            })();
            match update {
                Ok(update) => self.deliver(py, &update),
                Err(e) => e.write_unraisable(py, None),
            }
        });
    }

    fn deliver(&self, py: Python<'_>, update: &Py<Update>) {
        // A copy of the list, so a callback may subscribe or unsubscribe.
        let subscribers: Vec<Py<PyAny>> = lock(&self.subscribers).iter().map(|(_, s)| s.clone_ref(py)).collect();
        for callback in subscribers {
            if self.closing.load(Ordering::SeqCst) {
                return;
            }
            if let Err(e) = callback.call1(py, (update.clone_ref(py),)) {
                log_callback_error(py, &callback, update.get().epoch, e);
            }
        }
    }
}

/// Logs a callback's exception with its traceback on the `confstore` logger.
fn log_callback_error(py: Python<'_>, callback: &Py<PyAny>, epoch: u64, e: PyErr) {
    let logged = (|| -> PyResult<()> {
        let logger = py.import("logging")?.call_method1("getLogger", ("confstore",))?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("exc_info", e.value(py))?;
        logger.call_method(
            "error",
            ("confstore: update callback %r failed on the version of epoch %d; the client carries on", callback, epoch),
            Some(&kwargs),
        )?;
        Ok(())
    })();
    if logged.is_err() {
        e.write_unraisable(py, Some(callback.bind(py)));
    }
}
