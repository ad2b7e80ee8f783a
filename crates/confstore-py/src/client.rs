//! `confstore._native.Client`: a running Rust client on a runtime thread the Python object
//! owns.
//!
//! The thread runs a current-thread tokio runtime: it starts the client, hands it to the
//! constructor (which waits with the GIL released), then waits for the stop signal and
//! shuts the client down cleanly (MQTT DISCONNECT) before it ends. One thread means the
//! client's tasks and the update callbacks run one at a time, in order, and that nothing
//! runs between the end of start-up and [`Hub::seed`].
//!
//! `close()`, the object's collection and the interpreter's exit (an `atexit` hook calls
//! [`close_all`]) all stop the thread and join it, with the GIL released, so a callback
//! waiting for the GIL can finish and the join cannot deadlock.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use confstore_client::{ClientBuilder, ClientError, Config};
use pyo3::PyTraverseError;
use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::sync::oneshot;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::hub::Hub;
use crate::logging::PythonLogging;
use crate::{ClientClosed, ConfstoreError, InvalidSetting, convert};

/// How often a constructor waiting for start-up looks at Python's signals, so Ctrl-C
/// interrupts a slow start.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// A started client and the thread it runs on.
struct Running {
    /// Reads from Python (`config()` is a lock-free load). The runtime thread holds the
    /// other reference and shuts the client down once this one is gone.
    client: Arc<confstore_client::Client>,
    /// Runs what Python asks of the client on demand (`stored_schema`) on its thread.
    runtime: tokio::runtime::Handle,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// A client's state shared with the `atexit` registry.
struct Shared {
    service: String,
    hub: Arc<Hub>,
    running: Mutex<Option<Running>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section only moves an `Option` in or out: a poisoned lock is consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every client not yet closed, for the `atexit` hook.
static LIVE: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

impl Shared {
    /// Stops the client (no more callbacks, runtime thread told to shut down); the thread
    /// to join, if it was still running.
    fn stop(&self) -> Option<JoinHandle<()>> {
        self.hub.close();
        let Running { client, stop, thread, .. } = lock(&self.running).take()?;
        drop(client);
        // The thread may already be gone (it panicked): nothing to tell it then.
        let _ = stop.send(());
        Some(thread)
    }

    /// Stops the client and waits for its thread to end, with the GIL released.
    fn close(&self, py: Python<'_>) {
        let Some(thread) = self.stop() else { return };
        // From a callback (on the runtime thread itself) the thread cannot be joined: it
        // ends by itself once the callback returns.
        if thread.thread().id() == std::thread::current().id() {
            return;
        }
        py.detach(move || {
            // A panic on the runtime thread has been reported on stderr already.
            let _ = thread.join();
        });
    }

    fn config(&self) -> PyResult<Arc<Config>> {
        match &*lock(&self.running) {
            Some(running) => Ok(running.client.config()),
            None => Err(ClientClosed::new_err(format!("the client of service {:?} is closed", self.service))),
        }
    }
}

/// Closes every client still running; registered with `atexit` when the module loads.
#[pyfunction]
#[pyo3(name = "_close_all")]
pub(crate) fn close_all(py: Python<'_>) {
    let live: Vec<Weak<Shared>> = std::mem::take(&mut *lock(&LIVE));
    for shared in live.iter().filter_map(Weak::upgrade) {
        shared.close(py);
    }
}

/// A running confstore client (the compiled part of `confstore.Client`).
#[pyclass(frozen, module = "confstore._native")]
pub(crate) struct Client {
    shared: Arc<Shared>,
}

/// The settings Python passes, before they become a [`ClientBuilder`].
fn builder(service: &str, public_keys: &Bound<'_, PyAny>, settings: Settings) -> PyResult<(ClientBuilder, Duration)> {
    let mut b = ClientBuilder::new(service);
    let not_a_key = || PyTypeError::new_err("public_keys: a str or a list of str (base64 of the 32 key bytes)");
    if let Ok(key) = public_keys.extract::<String>() {
        b = b.public_key_base64(&key);
    } else {
        for key in public_keys.try_iter().map_err(|_| not_a_key())? {
            let key: String = key?.extract().map_err(|_| not_a_key())?;
            b = b.public_key_base64(&key);
        }
    }
    let Settings {
        url,
        token,
        mqtt_url,
        lkg_path,
        store_id,
        startup_timeout,
        mqtt_client_id,
        mqtt_username,
        mqtt_password,
        mqtt_ca_file,
        env,
        report_status,
        instance_id,
    } = settings;
    if let Some(url) = url {
        b = b.rest_url(&url);
    }
    if let Some(token) = token {
        b = b.token(&token);
    }
    if let Some(url) = mqtt_url {
        b = b.mqtt_url(&url);
    }
    if let Some(path) = lkg_path {
        b = b.lkg_path(path);
    }
    if let Some(id) = store_id {
        b = b.store_id(&id);
    }
    if let Some(id) = mqtt_client_id {
        b = b.mqtt_client_id(&id);
    }
    if let Some(user) = mqtt_username {
        b = b.mqtt_credentials(&user, mqtt_password.as_deref().unwrap_or_default());
    }
    if let Some(path) = mqtt_ca_file {
        b = b.mqtt_ca_file(path);
    }
    if let Some(id) = instance_id {
        b = b.instance_id(&id);
    }
    if let Some(on) = report_status {
        b = b.report_status(on);
    }
    b = b.env(env.unwrap_or_else(process_env));
    Ok((b, timeout(startup_timeout)?))
}

/// The optional settings of the constructor.
struct Settings {
    url: Option<String>,
    token: Option<String>,
    mqtt_url: Option<String>,
    lkg_path: Option<PathBuf>,
    store_id: Option<String>,
    startup_timeout: f64,
    mqtt_client_id: Option<String>,
    mqtt_username: Option<String>,
    mqtt_password: Option<String>,
    mqtt_ca_file: Option<PathBuf>,
    env: Option<Vec<(String, String)>>,
    /// `None`: the Rust client's default (on when there is a broker).
    report_status: Option<bool>,
    instance_id: Option<String>,
}

/// The process environment, skipping variables that are not UTF-8 (`std::env::vars`
/// would panic on them, and no override or setting can be spelled that way).
fn process_env() -> Vec<(String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

fn timeout(seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        let err = InvalidSetting::new_err(format!(
            "invalid startup_timeout: {seconds} is not a number of seconds (finite, 0 or more)"
        ));
        Python::attach(|py| {
            let _ = err.value(py).setattr("setting", "startup_timeout");
        });
        err
    })
}

/// Starts the client on a new runtime thread; waits (GIL released, Ctrl-C honoured) until
/// it has its first verified configuration or has failed.
fn start(py: Python<'_>, builder: ClientBuilder, timeout: Duration) -> PyResult<Client> {
    let builder = builder.startup_timeout(timeout);
    let hub = Hub::new();
    let on_update = Arc::clone(&hub);
    let builder = builder.on_update(move |config| on_update.on_update(config));
    // For the message of a start that ended in a panic (no secrets in it).
    let settings = format!("{builder:?}");
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Arc<confstore_client::Client>, ClientError>>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let seed = Arc::clone(&hub);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Its blocking pool (LKG file writes); the runtime's own thread is named below.
        .thread_name("confstore-io")
        .build()
        .map_err(|e| ConfstoreError::new_err(format!("cannot start the client's runtime: {e}")))?;
    let handle = runtime.handle().clone();
    let thread = std::thread::Builder::new()
        .name("confstore-client".into())
        .spawn(move || {
            // The client's warnings reach Python's logging (every task of this client runs
            // on this thread).
            let _logging = tracing::subscriber::set_default(tracing_subscriber::registry().with(PythonLogging));
            runtime.block_on(async move {
                let client = match builder.start().await {
                    Ok(client) => Arc::new(client),
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                seed.seed(&client.config());
                // The constructor gave up waiting (Ctrl-C): nobody will use this client.
                let wanted = ready_tx.send(Ok(Arc::clone(&client))).is_ok();
                if wanted {
                    // Sent by `close` (or dropped with the Python object): stop either way.
                    let _ = stop_rx.await;
                }
                match Arc::try_unwrap(client) {
                    Ok(client) => client.shutdown().await,
                    // Python still reads it (cannot happen: `stop` drops its reference
                    // first); dropping ours stops the tasks without the DISCONNECT.
                    Err(client) => drop(client),
                }
            });
        })
        .map_err(|e| ConfstoreError::new_err(format!("cannot start the client's thread: {e}")))?;
    // In a mutex only to be shareable with the closure that waits without the GIL.
    let ready_rx = Mutex::new(ready_rx);
    let started = loop {
        match py.detach(|| lock(&ready_rx).recv_timeout(SIGNAL_CHECK_INTERVAL)) {
            Ok(result) => break result,
            Err(mpsc::RecvTimeoutError::Timeout) => py.check_signals()?,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = py.detach(|| thread.join());
                return Err(ConfstoreError::new_err(format!(
                    "the client thread ended before start-up finished (a panic, reported on stderr): {settings}"
                )));
            }
        }
    };
    let client = match started {
        Ok(client) => client,
        Err(e) => {
            py.detach(|| {
                let _ = thread.join();
            });
            return Err(convert::error(py, e));
        }
    };
    let service = client.service().to_owned();
    let shared = Arc::new(Shared {
        service,
        hub,
        running: Mutex::new(Some(Running { client, runtime: handle, stop: stop_tx, thread })),
    });
    let mut live = lock(&LIVE);
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(&shared));
    Ok(Client { shared })
}

#[pymethods]
impl Client {
    /// Starts a client for `service`: REST, else the retained MQTT message, else the LKG
    /// file; returns once it holds a verified configuration.
    #[new]
    #[pyo3(signature = (
        service, *, public_keys, url=None, token=None, mqtt_url=None, lkg_path=None, store_id=None,
        startup_timeout=3.0, mqtt_client_id=None, mqtt_username=None, mqtt_password=None,
        mqtt_ca_file=None, env=None, report_status=None, instance_id=None
    ))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments, each optional.
    fn new(
        py: Python<'_>,
        service: &str,
        public_keys: &Bound<'_, PyAny>,
        url: Option<String>,
        token: Option<String>,
        mqtt_url: Option<String>,
        lkg_path: Option<PathBuf>,
        store_id: Option<String>,
        startup_timeout: f64,
        mqtt_client_id: Option<String>,
        mqtt_username: Option<String>,
        mqtt_password: Option<String>,
        mqtt_ca_file: Option<PathBuf>,
        env: Option<Vec<(String, String)>>,
        report_status: Option<bool>,
        instance_id: Option<String>,
    ) -> PyResult<Self> {
        let settings = Settings {
            url,
            token,
            mqtt_url,
            lkg_path,
            store_id,
            startup_timeout,
            mqtt_client_id,
            mqtt_username,
            mqtt_password,
            mqtt_ca_file,
            env,
            report_status,
            instance_id,
        };
        let (builder, timeout) = builder(service, public_keys, settings)?;
        start(py, builder, timeout)
    }

    /// A client configured from the variables `vars` (`CONFSTORE_SERVICE`,
    /// `CONFIG_SIGNATURE_PUBLIC_KEY`, `CONFSTORE_URL`, …), which are also the environment
    /// the `<SERVICE>__<KEY>` overrides come from.
    #[staticmethod]
    #[pyo3(signature = (vars, startup_timeout=3.0))]
    fn from_vars(py: Python<'_>, vars: Vec<(String, String)>, startup_timeout: f64) -> PyResult<Self> {
        let builder = ClientBuilder::from_vars(vars).map_err(|e| convert::error(py, e))?;
        start(py, builder, timeout(startup_timeout)?)
    }

    /// The service this client is for.
    #[getter]
    fn service(&self) -> &str {
        &self.shared.service
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.shared.running).is_none()
    }

    /// The store epoch the current configuration reflects.
    #[getter]
    fn epoch(&self) -> PyResult<u64> {
        Ok(self.shared.config()?.version().epoch)
    }

    /// The version of the service's configuration: the epoch that last changed it.
    #[getter]
    fn version(&self) -> PyResult<u64> {
        Ok(self.shared.config()?.version().changed_epoch)
    }

    /// The store's generation.
    #[getter]
    fn generation(&self) -> PyResult<u64> {
        Ok(self.shared.config()?.version().generation)
    }

    /// The staged rollout whose configuration this instance runs (docs/format.md §21), or
    /// None for the service's current version.
    #[getter]
    fn rollout(&self) -> PyResult<Option<u64>> {
        Ok(self.shared.config()?.rollout())
    }

    /// The instance id status reports name, None when the client makes none.
    #[getter]
    fn instance_id(&self) -> PyResult<Option<String>> {
        match &*lock(&self.shared.running) {
            Some(r) => Ok(r.client.instance_id().map(str::to_owned)),
            None => Err(ClientClosed::new_err("the client is closed")),
        }
    }

    /// Sets the health this instance reports (True, False, or None to withdraw it).
    fn set_healthy(&self, healthy: Option<bool>) -> PyResult<()> {
        match &*lock(&self.shared.running) {
            Some(r) => {
                r.client.set_healthy(healthy);
                Ok(())
            }
            None => Err(ClientClosed::new_err("the client is closed")),
        }
    }

    /// The store's id (hex).
    #[getter]
    fn store_id(&self) -> PyResult<String> {
        Ok(self.shared.config()?.version().store_id.clone())
    }

    /// The SHA-256 (hex) of the JSON Schema of the version held, None without one.
    #[getter]
    fn schema_hash(&self) -> PyResult<Option<String>> {
        Ok(self.shared.config()?.document().get("schema_hash").and_then(|h| h.as_str()).map(str::to_owned))
    }

    /// The service's stored JSON Schema for the version held (None without one), fetched
    /// over REST and checked against the verified snapshot's `schema_hash`. Waits with the
    /// GIL released; not from an update callback (it would wait for its own thread).
    fn stored_schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (client, runtime, thread) = match &*lock(&self.shared.running) {
            Some(r) => (Arc::clone(&r.client), r.runtime.clone(), r.thread.thread().id()),
            None => return Err(ClientClosed::new_err("the client is closed")),
        };
        if thread == std::thread::current().id() {
            return Err(ConfstoreError::new_err(
                "stored_schema() cannot be called from an update callback (it runs on the client's own thread)",
            ));
        }
        let (tx, rx) = mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(client.stored_schema().await);
        });
        let rx = Mutex::new(rx);
        let answer = loop {
            match py.detach(|| lock(&rx).recv_timeout(SIGNAL_CHECK_INTERVAL)) {
                Ok(answer) => break answer,
                Err(mpsc::RecvTimeoutError::Timeout) => py.check_signals()?,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(ClientClosed::new_err("the client closed while fetching the stored schema"));
                }
            }
        };
        match answer {
            Ok(Some(schema)) => convert::to_py(py, &schema),
            Ok(None) => Ok(py.None().into_bound(py)),
            Err(e) => Err(convert::error(py, e)),
        }
    }

    /// The resolved value of `key` (env → store → schema default), or `default`.
    #[pyo3(signature = (key, default=None))]
    fn get<'py>(&self, py: Python<'py>, key: &str, default: Option<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
        match self.shared.config()?.value(key) {
            Some(value) => convert::to_py(py, value),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    fn __getitem__<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        match self.shared.config()?.value(key) {
            Some(value) => convert::to_py(py, value),
            None => Err(PyKeyError::new_err(key.to_owned())),
        }
    }

    fn __contains__(&self, key: &str) -> PyResult<bool> {
        Ok(self.shared.config()?.value(key).is_some())
    }

    /// Every resolved key and value of one version, as a new dict.
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let config = self.shared.config()?;
        let dict = PyDict::new(py);
        for (key, value, _) in config.iter() {
            dict.set_item(key, convert::to_py(py, value)?)?;
        }
        Ok(dict)
    }

    /// Where the value of `key` comes from: "env", "service", "global" or "default";
    /// None if there is no such key.
    fn source(&self, key: &str) -> PyResult<Option<&'static str>> {
        Ok(self.shared.config()?.source(key).map(confstore_client::Source::name))
    }

    /// The client's counters: applied versions, rejections by kind, gaps filled, …
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = match &*lock(&self.shared.running) {
            Some(running) => running.client.stats(),
            None => return Err(ClientClosed::new_err("the client is closed")),
        };
        let dict = PyDict::new(py);
        dict.set_item("applied", stats.applied)?;
        dict.set_item("rejected", stats.rejected.into_pyobject(py)?)?;
        dict.set_item("gaps_filled", stats.gaps_filled)?;
        dict.set_item("resyncs", stats.resyncs)?;
        dict.set_item("reconnects", stats.reconnects)?;
        dict.set_item("catch_ups", stats.catch_ups)?;
        dict.set_item("lkg_rejected", stats.lkg_rejected)?;
        dict.set_item("lkg_write_errors", stats.lkg_write_errors)?;
        dict.set_item("checkpoints_accepted", stats.checkpoints_accepted)?;
        dict.set_item("checkpoints_refused", stats.checkpoints_refused.into_pyobject(py)?)?;
        dict.set_item("inclusions_verified", stats.inclusions_verified)?;
        dict.set_item("inclusions_failed", stats.inclusions_failed)?;
        dict.set_item("tlog_fetch_errors", stats.tlog_fetch_errors)?;
        Ok(dict)
    }

    /// Calls `callback(update)` for every version applied from now on, in order, once
    /// each, on the client's thread; returns an id for `unsubscribe`.
    fn subscribe(&self, callback: Bound<'_, PyAny>) -> PyResult<u64> {
        if !callback.is_callable() {
            return Err(PyTypeError::new_err("subscribe: the callback must be callable"));
        }
        if self.closed() {
            return Err(ClientClosed::new_err("the client is closed"));
        }
        Ok(self.shared.hub.subscribe(callback.unbind()))
    }

    /// Stops calling the callback `subscribe` returned `id` for; whether it was subscribed.
    fn unsubscribe(&self, id: u64) -> bool {
        self.shared.hub.unsubscribe(id)
    }

    /// Disconnects from the broker, stops live updates and ends the client's thread.
    /// Idempotent.
    fn close(&self, py: Python<'_>) {
        self.shared.close(py);
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.shared.hub.traverse(&visit)
    }

    fn __clear__(&self) {
        self.shared.hub.clear();
    }

    fn __repr__(&self) -> String {
        match &*lock(&self.shared.running) {
            Some(running) => {
                let config = running.client.config();
                let v = config.version();
                format!(
                    "<confstore.Client service={:?} epoch={} version={}>",
                    self.shared.service, v.epoch, v.changed_epoch
                )
            }
            None => format!("<confstore.Client service={:?} closed>", self.shared.service),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Collected without `close()`: the same shutdown. Collection happens with the
        // thread attached, so attaching again is free.
        Python::attach(|py| self.shared.close(py));
    }
}
