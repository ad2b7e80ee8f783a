//! JSON values of the configuration as Python objects, and the client's errors as Python
//! exceptions.

use confstore_client::ClientError;
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString};
use serde_json::{Map, Value};

use crate::{ConfstoreError, InvalidSetting, LkgError, NoVerifiedConfig};

/// `value` as the object `json.loads` would give: `None`, `bool`, `int`, `float`, `str`,
/// `list`, `dict`.
pub(crate) fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                // Neither integer form: serde_json holds it as an f64.
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => dict(py, map)?.into_any(),
    })
}

/// A JSON object as a `dict`.
pub(crate) fn dict<'py>(py: Python<'py>, map: &Map<String, Value>) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in map {
        dict.set_item(key, to_py(py, value)?)?;
    }
    Ok(dict)
}

/// The exception for a client error: `InvalidSetting` (with `setting`), `NoVerifiedConfig`
/// (with `service` and `reasons`), `LkgError` (with `path`), `KeyError` for a missing key.
pub(crate) fn error(py: Python<'_>, e: ClientError) -> PyErr {
    let message = e.to_string();
    let (err, attributes): (PyErr, Vec<(&str, Bound<'_, PyAny>)>) = match e {
        ClientError::InvalidSetting { setting, .. } => {
            (InvalidSetting::new_err(message), vec![("setting", PyString::new(py, setting).into_any())])
        }
        ClientError::NoVerifiedConfig { service, reasons } => {
            let reasons = match reasons.into_pyobject(py) {
                Ok(list) => list.into_any(),
                Err(e) => return e,
            };
            (
                NoVerifiedConfig::new_err(message),
                vec![("service", PyString::new(py, &service).into_any()), ("reasons", reasons)],
            )
        }
        ClientError::Lkg { path, .. } => {
            (LkgError::new_err(message), vec![("path", PyString::new(py, &path.to_string_lossy()).into_any())])
        }
        ClientError::MissingKey(key) => return PyKeyError::new_err(key),
        _ => (ConfstoreError::new_err(message), Vec::new()),
    };
    for (name, value) in attributes {
        // The message says it all; an attribute that cannot be set is no reason to lose it.
        let _ = err.value(py).setattr(name, value);
    }
    err
}
