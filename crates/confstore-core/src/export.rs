//! The export format `confstore-export/1` (docs/design.md §6, docs/format.md): JSON Lines, a
//! header line naming the store and its keys, then one line per event carrying the stored
//! columns (hex, body in base64) and the decoded event for humans.
//!
//! Parsing checks that the convenience fields (`epoch`, `time`, `event`) say exactly what
//! the signed body says, so a reader of the JSON cannot be misled by an edited copy.
//!
//! The header may carry the newest signed checkpoint of the log's Merkle tree that the
//! export covers (format.md §11, §19): [`header_line`] writes it as the header's
//! `checkpoint` member, [`parse_header_full`] reads it, and [`check_checkpoint`] is what a
//! verifier checks once the events are verified. Readers that do not know the member ignore
//! it (a header's other members carry no meaning to them), so such exports stay readable.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::event::EventBody;
use crate::ids::{Hash32, KeyId, StoreId};
use crate::keys::{KeyRing, VerifyingKey};
use crate::tlog::{self, Checkpoint};
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

/// The header line (without newline), with the signed checkpoint note the export carries,
/// if any (format.md §11: the `checkpoint` member).
pub fn header_line(store_id: &StoreId, keys: &KeyRing, checkpoint: Option<&str>) -> String {
    let keys: Vec<Value> = keys
        .entries()
        .iter()
        .map(|e| json!({"key_id": e.key.key_id().to_hex(), "public_key": hex::encode(e.key.to_bytes())}))
        .collect();
    let mut header = json!({"format": FORMAT, "store_id": store_id.to_hex(), "keys": keys});
    if let (Some(note), Some(obj)) = (checkpoint, header.as_object_mut()) {
        obj.insert("checkpoint".into(), Value::String(note.to_owned()));
    }
    header.to_string()
}

/// What the header line says: the store, and the signed checkpoint note it carries (not yet
/// checked: see [`check_checkpoint`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The store id.
    pub store_id: StoreId,
    /// The `checkpoint` member: a signed note (format.md §19.2), parsed but unverified.
    pub checkpoint: Option<HeaderCheckpoint>,
}

/// The header's checkpoint: the note as written, and its size (read from the note's text, so
/// a verifier knows before the events at which size to take the root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderCheckpoint {
    /// The signed note.
    pub note: String,
    /// The tree size its text names.
    pub size: u64,
}

impl HeaderCheckpoint {
    /// Reads the size from a note's text (not its signatures: see [`check_checkpoint`]).
    ///
    /// # Errors
    ///
    /// [`ExportError::Header`] when the note has no text part or the text is no checkpoint.
    pub fn parse(note: &str) -> Result<Self, ExportError> {
        let text = signed_note_text(note)
            .ok_or_else(|| ExportError::Header("checkpoint: not a signed note (no blank line)".into()))?;
        let cp =
            Checkpoint::parse_text(text.as_bytes()).map_err(|e| ExportError::Header(format!("checkpoint: {e}")))?;
        Ok(Self { note: note.to_owned(), size: cp.size })
    }
}

/// Why an export's checkpoint does not vouch for its events.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ExportCheckpointError {
    /// The note does not open: malformed, another store, no valid signature by a key of the
    /// chain.
    #[error("the export's checkpoint: {0}")]
    Note(#[from] tlog::CheckpointError),
    /// The checkpoint covers events the export does not have.
    #[error(
        "the export's checkpoint covers {size} events but the export has {events}: events {}..={size} are missing",
        events + 1
    )]
    Truncated {
        /// The checkpoint's size.
        size: u64,
        /// Events in the export.
        events: u64,
    },
    /// The exported events' tree of that size has another root: another history than the
    /// one the store signed.
    #[error(
        "the export's checkpoint does not match its events: the tree of the first {size} events has root {found}, the signed checkpoint says {signed}"
    )]
    Mismatch {
        /// The checkpoint's size.
        size: u64,
        /// Root of the exported events (hex).
        found: String,
        /// Root in the checkpoint (hex).
        signed: String,
    },
}

/// Checks the export's checkpoint `note` against its verified events: it opens as a signed
/// checkpoint of the store's origin with a signature by one of `keys` (the verified key
/// chain), its size is at most `events`, and `root_at_size` (the root of the tree of the
/// first `size` exported events) is its root.
///
/// # Errors
///
/// [`ExportCheckpointError`].
pub fn check_checkpoint(
    note: &str,
    store_id: &StoreId,
    keys: &[VerifyingKey],
    events: u64,
    root_at_size: Option<[u8; 32]>,
) -> Result<Checkpoint, ExportCheckpointError> {
    let cp = Checkpoint::open(note.as_bytes(), &tlog::origin(store_id), keys)?;
    if cp.size > events {
        return Err(ExportCheckpointError::Truncated { size: cp.size, events });
    }
    match root_at_size {
        Some(root) if root == cp.root => Ok(cp),
        found => Err(ExportCheckpointError::Mismatch {
            size: cp.size,
            found: found.map_or_else(|| "(not computed)".into(), hex::encode),
            signed: hex::encode(cp.root),
        }),
    }
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
    parse_header_full(line).map(|h| h.store_id)
}

/// Parses the header line, its `checkpoint` member included (a string holding a note whose
/// text parses as a checkpoint; its signature is checked later, by [`check_checkpoint`]).
///
/// # Errors
///
/// [`ExportError::Header`].
pub fn parse_header_full(line: &str) -> Result<Header, ExportError> {
    let v: Value = serde_json::from_str(line).map_err(|e| ExportError::Header(format!("not JSON: {e}")))?;
    if v.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(ExportError::Header(format!("not a {FORMAT} file (format field missing or different)")));
    }
    let id = v.get("store_id").and_then(Value::as_str).ok_or_else(|| ExportError::Header("no store_id".into()))?;
    let store_id = StoreId::from_hex(id).map_err(|e| ExportError::Header(format!("store_id: {e}")))?;
    let checkpoint = match v.get("checkpoint") {
        None | Some(Value::Null) => None,
        Some(Value::String(note)) => Some(HeaderCheckpoint::parse(note)?),
        Some(_) => return Err(ExportError::Header("checkpoint: not a string".into())),
    };
    Ok(Header { store_id, checkpoint })
}

/// The text of a signed note: everything up to and including the newline before the blank
/// line that separates it from the signatures.
fn signed_note_text(note: &str) -> Option<&str> {
    note.find("\n\n").map(|i| &note[..=i])
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
