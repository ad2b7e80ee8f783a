//! The Python package `confstore`: the Rust client (`confstore-client`) bound with PyO3.
//!
//! There is one implementation of the client's rules — JWS verification, the acceptance
//! rule, gap filling, the LKG file, env overrides — and it is the Rust one: this crate only
//! runs a [`confstore_client::Client`] for a Python object and converts what it reads into
//! Python values. The pure-Python part of the package (`python/confstore/`) adds what is
//! Python-specific: the asyncio iterator of updates and Pydantic models (ADR 0026).
//!
//! Each client runs on a tokio runtime of its own, on one thread the Python object owns
//! ([`client`]): Python waits for start-up and for shutdown with the GIL released, update
//! callbacks take the GIL on that thread ([`hub`]), and `close()` — or the interpreter's
//! exit, or the object's collection — shuts the client down and joins the thread.

mod client;
mod convert;
mod hub;
mod logging;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(confstore, ConfstoreError, PyException, "Base class of every error the confstore client raises.");
create_exception!(
    confstore,
    InvalidSetting,
    ConfstoreError,
    "A client setting (argument or environment variable) is unusable; `setting` names it."
);
create_exception!(
    confstore,
    NoVerifiedConfig,
    ConfstoreError,
    "No source gave a verified configuration; `reasons` lists (source, why) per source."
);
create_exception!(
    confstore,
    LkgError,
    ConfstoreError,
    "The LKG file, the only configured source, is unusable (corrupt, tampered, another store's)."
);
create_exception!(
    confstore,
    ClientClosed,
    ConfstoreError,
    "The client was closed; it holds no configuration any more."
);

/// `confstore._native`: the compiled part of the package.
#[pymodule]
#[pyo3(name = "_native")]
fn confstore_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<client::Client>()?;
    m.add_class::<hub::Update>()?;
    m.add("ConfstoreError", py.get_type::<ConfstoreError>())?;
    m.add("InvalidSetting", py.get_type::<InvalidSetting>())?;
    m.add("NoVerifiedConfig", py.get_type::<NoVerifiedConfig>())?;
    m.add("LkgError", py.get_type::<LkgError>())?;
    m.add("ClientClosed", py.get_type::<ClientClosed>())?;
    m.add_function(wrap_pyfunction!(env_var_name, m)?)?;
    m.add_function(wrap_pyfunction!(client::close_all, m)?)?;
    // Every client is shut down before the interpreter finalizes: a runtime thread that
    // took the GIL for a callback after that point would be stopped by CPython in the
    // middle of Rust code, and an exit would wait for nothing.
    py.import("atexit")?.call_method1("register", (m.getattr("_close_all")?,))?;
    Ok(())
}

/// The environment variable that overrides `key` of `service` (`web-api`, `max.conns` →
/// `WEB_API__MAX_CONNS`).
#[pyfunction]
fn env_var_name(service: &str, key: &str) -> String {
    confstore_client::env_var_name(service, key)
}
