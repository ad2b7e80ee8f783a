//! The Rust client's warnings and errors on Python's `logging`, logger `confstore`.
//!
//! The client says through `tracing` what a service operator must hear: that it started
//! from the LKG file because the store was unreachable, that a snapshot was rejected, that
//! the LKG file could not be written. A Python service has no tracing subscriber, so the
//! runtime thread installs this one: warnings and errors become `logging` records (the
//! message, then the event's fields). Lower levels stay in Rust: an `info` per applied
//! version would take the GIL for nothing most services want.

use std::fmt::Write as _;

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Python's numeric levels (`logging.WARNING`, `logging.ERROR`).
const PY_WARNING: u8 = 30;
const PY_ERROR: u8 = 40;

/// A layer that hands warning and error events to `logging.getLogger("confstore")`.
pub(crate) struct PythonLogging;

#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for PythonLogging {
    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        *metadata.level() <= Level::WARN
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let level = if *event.metadata().level() == Level::ERROR { PY_ERROR } else { PY_WARNING };
        let mut text = Text::default();
        event.record(&mut text);
        let line = if text.fields.is_empty() {
            text.message
        } else {
            format!("{} ({})", text.message, text.fields.trim_start())
        };
        // During interpreter shutdown there is no logging to write to.
        Python::try_attach(|py| {
            let logged = (|| -> PyResult<()> {
                let logger = py.import("logging")?.call_method1("getLogger", ("confstore",))?;
                logger.call_method1("log", (level, "%s", line))?;
                Ok(())
            })();
            if let Err(e) = logged {
                e.write_unraisable(py, None);
            }
        });
    }
}
