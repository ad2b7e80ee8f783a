//! The export format `confstore-export/1` (docs/design.md §6, docs/format.md): JSON Lines, a
//! header line naming the store and its keys, then one line per event carrying the stored
//! columns (hex, body in base64) and the decoded event for humans.
//!
//! Parsing checks that the convenience fields (`epoch`, `time`, `event`) say exactly what
//! the signed body says, so a reader of the JSON cannot be misled by an edited copy.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::event::EventBody;
use crate::ids::{Hash32, KeyId, StoreId};
use crate::keys::KeyRing;
use crate::verify::StoredEvent;

/// The `format` value of the header line.
pub const FORMAT: &str = "confstore-export/1";

/// Why an export line is unusable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    /// The header line is missing or wrong.
    #[error("line 1: {0}")]
    Header(String),
    /// An event line is malformed.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// An event line's JSON fields disagree with its signed body.
    #[error("event {seq}: the line's {field} does not match its signed body (was the export edited?)")]
    Mismatch {
        /// The event's seq.
        seq: u64,
        /// Which field.
        field: &'static str,
    },
}

/// The header line (without newline).
pub fn header_line(store_id: &StoreId, keys: &KeyRing) -> String {
    let keys: Vec<Value> = keys
        .entries()
        .iter()
        .map(|e| json!({"key_id": e.key.key_id().to_hex(), "public_key": hex::encode(e.key.to_bytes())}))
        .collect();
    json!({"format": FORMAT, "store_id": store_id.to_hex(), "keys": keys}).to_string()
}

/// One event line (without newline). `body` is the decoded body; `None` when the stored
/// bytes do not decode (the line is still written, so the damage can be inspected).
pub fn event_line(ev: &StoredEvent, body: Option<&EventBody>) -> String {
    json!({
        "seq": ev.seq,
        "epoch": body.map(|b| b.epoch),
        "time": body.map(|b| b.time_ms),
        "prev_hash": ev.prev_hash.to_hex(),
        "hash": ev.hash.to_hex(),
        "key_id": ev.key_id.to_hex(),
        "sig": hex::encode(ev.sig),
        "body": B64.encode(&ev.body),
        "event": body.map(EventBody::to_json),
    })
    .to_string()
}

/// Parses the header line; returns the store id. The listed keys are informational: trust
/// comes from the key the verifier is given, never from the file.
pub fn parse_header(line: &str) -> Result<StoreId, ExportError> {
    let v: Value = serde_json::from_str(line).map_err(|e| ExportError::Header(format!("not JSON: {e}")))?;
    if v.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(ExportError::Header(format!("not a {FORMAT} file (format field missing or different)")));
    }
    let id = v.get("store_id").and_then(Value::as_str).ok_or_else(|| ExportError::Header("no store_id".into()))?;
    StoreId::from_hex(id).map_err(|e| ExportError::Header(format!("store_id: {e}")))
}

/// Parses one event line (1-based `line` number for messages) into the stored event, and
/// checks its decoded fields against the body when the body decodes.
pub fn parse_event(line_no: u64, line: &str) -> Result<StoredEvent, ExportError> {
    let bad = |reason: String| ExportError::Line { line: line_no, reason };
    let v: Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
    let text = |name: &str| v.get(name).and_then(Value::as_str).ok_or_else(|| bad(format!("missing field {name}")));
    let seq = v.get("seq").and_then(Value::as_u64).ok_or_else(|| bad("missing field seq".into()))?;
    let hex_field = |name: &str, len: usize| -> Result<Vec<u8>, ExportError> {
        let bytes = hex::decode(text(name)?).map_err(|e| bad(format!("{name}: {e}")))?;
        if bytes.len() != len {
            return Err(bad(format!("{name} is {} bytes, expected {len}", bytes.len())));
        }
        Ok(bytes)
    };
    let body = B64.decode(text("body")?).map_err(|e| bad(format!("body: {e}")))?;
    let ev = StoredEvent {
        seq,
        body,
        prev_hash: Hash32::from_slice(&hex_field("prev_hash", 32)?).unwrap_or_default(),
        hash: Hash32::from_slice(&hex_field("hash", 32)?).unwrap_or_default(),
        key_id: KeyId::from_slice(&hex_field("key_id", 8)?).unwrap_or_default(),
        sig: <[u8; 64]>::try_from(hex_field("sig", 64)?.as_slice()).unwrap_or([0; 64]),
    };
    // A body that does not decode is reported by verification, at its seq.
    if let Ok(decoded) = EventBody::decode(&ev.body) {
        if v.get("epoch").and_then(Value::as_u64) != Some(decoded.epoch) {
            return Err(ExportError::Mismatch { seq, field: "epoch" });
        }
        if v.get("time").and_then(Value::as_u64) != Some(decoded.time_ms) {
            return Err(ExportError::Mismatch { seq, field: "time" });
        }
        if v.get("event") != Some(&decoded.to_json()) {
            return Err(ExportError::Mismatch { seq, field: "event" });
        }
    }
    Ok(ev)
}
