//! Small helpers for what commands print: times, JSON, progress bars.

use std::io::IsTerminal;

use anyhow::{Result, anyhow};
use indicatif::{ProgressBar, ProgressStyle};

/// Unix ms as RFC 3339 in UTC with exactly three fraction digits, so times sort as text.
pub fn time(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| format!("{ms}ms"), |t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// RFC 3339 text to unix ms.
pub fn parse_time(text: &str) -> Result<u64> {
    let t: jiff::Timestamp =
        text.parse().map_err(|e| anyhow!("--at {text:?} is not an RFC 3339 time such as 2026-11-26T09:30:00Z: {e}"))?;
    u64::try_from(t.as_millisecond()).map_err(|_| anyhow!("--at {text:?} is before 1970"))
}

/// Prints one JSON value on its own line.
pub fn json(value: &serde_json::Value) {
    println!("{value}");
}

/// A progress bar on stderr when it is a terminal, hidden otherwise.
pub fn progress(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({per_sec}, {eta} left)")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// A stored value as shown to a person or a script: secrets (stored encrypted) as
/// "<secret>", everything else as its JSON.
pub fn shown(value_json: &str) -> serde_json::Value {
    if confstore_core::secret::envelope_of(value_json).is_some() {
        return serde_json::Value::String("<secret>".into());
    }
    serde_json::from_str(value_json).unwrap_or_else(|_| serde_json::Value::String(value_json.to_owned()))
}
