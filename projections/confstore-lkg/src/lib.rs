//! The last-known-good (LKG) cache, `<data-dir>/config.lkg.json` (docs/design.md §8): every
//! service snapshot at one epoch, so services and the server can keep running read-only
//! when the database is unavailable.
//!
//! Format: a JWS in flattened JSON serialization (RFC 7515 §7.2.2) with `alg: HS256`, keyed
//! by `LKG_HMAC_KEY_BASE64`: `{"protected": b64url(header), "payload": b64url(payload),
//! "signature": b64url(HMAC-SHA256(key, protected || "." || payload))}`. The payload is the
//! canonical JSON of [`LkgContent`]. Written atomically (temporary file, fsync, rename,
//! directory fsync); a file that fails any check is never used ([`load`]).
//!
//! Architecture invariant: this projection takes snapshots as JSON values from its caller
//! and never imports another projection.
//!
//! Beside the cache, the other records of the head kept outside the database: the
//! publisher's checkpoint ([`publisher_checkpoint`]) and, in [`heads`], every such record
//! compared with a database (whether it fell behind them).

pub mod heads;
pub mod publisher_checkpoint;
mod replace;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use confstore_core::{Hash32, State, StoreId};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// File name in the data directory (kept from the plan).
pub const FILE_NAME: &str = "config.lkg.json";
/// The `typ` of the protected header.
pub const TYP: &str = "confstore-lkg+json";
/// Largest LKG file read (a bound on hostile input: 100 services × 100 keys is ~1 MB).
pub const FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// What the cache holds.
#[derive(Clone, Debug, PartialEq)]
pub struct LkgContent {
    /// Store id (hex).
    pub store_id: String,
    /// Store generation.
    pub generation: u64,
    /// The epoch every snapshot reflects.
    pub epoch: u64,
    /// The last event folded in (the projection's checkpoint) and its hash (hex).
    pub seq: u64,
    /// Hash of event `seq`.
    pub head_hash: String,
    /// Every service's snapshot document, by service name.
    pub services: BTreeMap<String, Value>,
    /// The API tokens that are not revoked, by id: `{"name", "role", "service", "hash"}`
    /// (hash: hex SHA-256 of the token, as in the log), so the read-only fallback can still
    /// authenticate requests. Absent in files written before tokens existed.
    pub tokens: BTreeMap<String, Value>,
}

impl LkgContent {
    /// The content at the head of `state` (event `state.seq`, whose hash is `head_hash`):
    /// `services` are the snapshot documents the caller projected
    /// (`confstore_snapshots::project_all`), the tokens come from the state.
    pub fn at_head(
        state: &State,
        store_id: StoreId,
        generation: u64,
        head_hash: &Hash32,
        services: BTreeMap<String, Value>,
    ) -> LkgContent {
        let tokens = state
            .tokens
            .iter()
            .filter(|(_, t)| t.revoked_seq.is_none())
            .map(|(id, t)| {
                let token =
                    json!({"name": t.name, "role": t.role.as_str(), "service": t.service, "hash": hex::encode(t.hash)});
                (id.clone(), token)
            })
            .collect();
        LkgContent {
            store_id: store_id.to_hex(),
            generation,
            epoch: state.epoch,
            seq: state.seq,
            head_hash: head_hash.to_hex(),
            services,
            tokens,
        }
    }
}

/// Why an LKG file is not usable. Every variant means: do not use it.
#[derive(Debug, thiserror::Error)]
pub enum LkgError {
    /// No file.
    #[error("no LKG file at {0}")]
    Missing(PathBuf),
    /// Reading or writing failed.
    #[error("LKG file {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Larger than [`FILE_BYTES_MAX`].
    #[error("LKG file is {0} bytes, over the limit; refusing to read it")]
    TooLarge(u64),
    /// Not the expected JWS shape.
    #[error("LKG file is malformed: {0}")]
    Malformed(String),
    /// The HMAC does not verify: modified, truncated, or written with another key.
    #[error("LKG file signature does not verify with LKG_HMAC_KEY_BASE64 (modified, or written with another key)")]
    BadSignature,
    /// It belongs to another store.
    #[error("LKG file belongs to store {found}, not {expected}")]
    OtherStore {
        /// The store id in the file.
        found: String,
        /// The store id expected.
        expected: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LkgError + '_ {
    move |error| LkgError::Io { path: path.to_owned(), error }
}

fn mac(key: &[u8; 32], signing_input: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; 32 bytes cannot fail.
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(signing_input);
    m
}

fn header() -> String {
    B64URL.encode(json!({"alg": "HS256", "typ": TYP}).to_string())
}

impl LkgContent {
    fn to_payload(&self) -> Value {
        json!({
            "store_id": self.store_id, "generation": self.generation, "epoch": self.epoch,
            "seq": self.seq, "head_hash": self.head_hash, "services": self.services, "tokens": self.tokens,
        })
    }

    fn from_payload(mut v: Value) -> Result<Self, LkgError> {
        let bad = |what: &str| LkgError::Malformed(format!("payload: {what}"));
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| bad(k));
        let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).ok_or_else(|| bad(k));
        let (store_id, head_hash) = (text(&v, "store_id")?, text(&v, "head_hash")?);
        let (generation, epoch, seq) = (num(&v, "generation")?, num(&v, "epoch")?, num(&v, "seq")?);
        // Moved out, not copied: the services are most of the file.
        let Some(Value::Object(services)) = v.get_mut("services").map(Value::take) else {
            return Err(bad("services"));
        };
        let tokens = match v.get_mut("tokens").map(Value::take) {
            None => BTreeMap::new(),
            Some(Value::Object(t)) => t.into_iter().collect(),
            Some(_) => return Err(bad("tokens")),
        };
        Ok(Self { store_id, generation, epoch, seq, head_hash, services: services.into_iter().collect(), tokens })
    }

    /// The signed file contents (flattened JWS, HS256). `canonical` renders the payload
    /// as canonical JSON (the caller's, from confstore-core).
    pub fn to_jws(&self, key: &[u8; 32], canonical: impl Fn(&Value) -> String) -> String {
        let protected = header();
        let payload = B64URL.encode(canonical(&self.to_payload()));
        let signature = mac(key, format!("{protected}.{payload}").as_bytes()).finalize().into_bytes();
        json!({"protected": protected, "payload": payload, "signature": B64URL.encode(signature)}).to_string()
    }
}

/// Parses and verifies a flattened JWS (constant-time HMAC check), refusing any other
/// algorithm or header.
pub fn verify_jws(text: &[u8], key: &[u8; 32]) -> Result<LkgContent, LkgError> {
    let payload = check_signature(text, key)?;
    let value: Value =
        serde_json::from_slice(&payload).map_err(|e| LkgError::Malformed(format!("payload is not JSON: {e}")))?;
    LkgContent::from_payload(value)
}

/// Checks the header and the MAC only (constant time) and returns the payload's bytes,
/// not yet parsed: the verification step, apart from loading the snapshots.
pub fn check_signature(text: &[u8], key: &[u8; 32]) -> Result<Vec<u8>, LkgError> {
    /// The three members, borrowed from the file's bytes (base64url has no escapes).
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Flattened<'a> {
        protected: &'a str,
        payload: &'a str,
        signature: &'a str,
    }
    let doc: Flattened<'_> =
        serde_json::from_slice(text).map_err(|e| LkgError::Malformed(format!("not a flattened JWS: {e}")))?;
    if doc.protected != header() {
        return Err(LkgError::Malformed("the protected header is not {\"alg\":\"HS256\",\"typ\":…}".into()));
    }
    let sig = B64URL.decode(doc.signature).map_err(|_| LkgError::BadSignature)?;
    let mut m = mac(key, doc.protected.as_bytes());
    m.update(b".");
    m.update(doc.payload.as_bytes());
    // `verify_slice` compares in constant time.
    m.verify_slice(&sig).map_err(|_| LkgError::BadSignature)?;
    B64URL.decode(doc.payload).map_err(|e| LkgError::Malformed(format!("payload encoding: {e}")))
}

/// Writes `jws` to `path` atomically: a temporary file beside it (mode 0600), fsync, rename
/// over the old file, fsync the directory. A crash leaves the old file or the new one.
pub fn write_atomically(path: &Path, jws: &str) -> Result<(), LkgError> {
    replace::replace(path, &path.with_extension("json.tmp"), jws.as_bytes(), || {
        fail::fail_point!("lkg::mid_write", |_| std::process::abort());
    })
    .map_err(io(path))
}

/// Writes `bytes` to `path` the same way (temporary file `<path>.tmp`, mode 0600, fsync,
/// rename, directory fsync): for the other small files a data directory keeps, such as the
/// signed Merkle-tree checkpoint.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), LkgError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    replace::replace(path, Path::new(&tmp), bytes, || {}).map_err(io(path))
}

/// File name of the last signed Merkle-tree checkpoint `serve` published, in the data
/// directory (docs/format.md §19): what the server checks the log against before it signs the
/// next one, and what `confstore generation start` moves aside.
pub const TREE_CHECKPOINT_FILE_NAME: &str = "tree.checkpoint";

/// File name of the high-water mark beside the LKG file: the highest `seq` ever written to
/// it (docs/format.md §13), so an older copy put back is noticed.
pub const HWM_FILE_NAME: &str = "config.lkg.hwm";

/// The high-water mark in `path`, if the file exists and holds a number.
pub fn read_high_water_mark(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Raises the high-water mark in `path` to `seq` (temporary file, fsync, rename). Call it
/// before writing an LKG file of `generation` at `seq` to `lkg_path` (verified with `key`).
///
/// It never lowers the mark, with one exception: a mark above `seq` left by an older
/// generation than the one being written. `generation start` resets the mark after its
/// event is durable; if it was interrupted in between, the next LKG file of the new
/// generation would otherwise sit below the abandoned history's mark, and the data
/// directory would call its own database behind (docs/testing.md row 2 found this). The
/// mark belongs to the LKG file's generation, so the LKG file on disk says whose it is.
pub fn raise_high_water_mark(
    path: &Path,
    seq: u64,
    generation: u64,
    lkg_path: &Path,
    key: &[u8; 32],
) -> Result<(), LkgError> {
    match read_high_water_mark(path) {
        Some(old) if old == seq => Ok(()),
        Some(old) if old > seq => {
            let abandoned = load(lkg_path, key, None).is_ok_and(|c| c.generation < generation);
            if abandoned { set_high_water_mark(path, seq) } else { Ok(()) }
        }
        _ => set_high_water_mark(path, seq),
    }
}

/// Sets the high-water mark in `path` to `seq`, lower or not: only for `confstore
/// generation start`, where the mark of the abandoned history gives way to the new one.
pub fn set_high_water_mark(path: &Path, seq: u64) -> Result<(), LkgError> {
    // As the LKG file, directory fsync included: a mark that a power cut could take back
    // would let an older database pass the start-up check.
    replace::replace(path, &path.with_extension("hwm.tmp"), format!("{seq}\n").as_bytes(), || ()).map_err(io(path))
}

/// Reads and verifies the LKG file; `expected_store` (hex) must match when given.
pub fn load(path: &Path, key: &[u8; 32], expected_store: Option<&str>) -> Result<LkgContent, LkgError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LkgError::Missing(path.to_owned())),
        Err(e) => return Err(io(path)(e)),
    };
    let len = f.metadata().map_err(io(path))?.len();
    if len > FILE_BYTES_MAX {
        return Err(LkgError::TooLarge(len));
    }
    let mut text = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    f.take(FILE_BYTES_MAX).read_to_end(&mut text).map_err(io(path))?;
    let content = verify_jws(&text, key)?;
    if let Some(expected) = expected_store
        && content.store_id != expected
    {
        return Err(LkgError::OtherStore { found: content.store_id, expected: expected.to_owned() });
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn content() -> LkgContent {
        LkgContent {
            store_id: "00112233445566778899aabbccddeeff".into(),
            generation: 1,
            epoch: 4,
            seq: 9,
            head_hash: "ab".repeat(32),
            services: [("web".to_owned(), json!({"config": {"port": 80}, "epoch": 4}))].into(),
            tokens: [(
                "00112233aabbccdd".to_owned(),
                json!({"name": "ci", "role": "config.read", "service": null, "hash": "cd".repeat(32)}),
            )]
            .into(),
        }
    }

    fn jws() -> String {
        content().to_jws(&KEY, |v| v.to_string())
    }

    #[test]
    fn the_mark_only_rises_except_over_an_abandoned_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (hwm, lkg) = (dir.path().join(HWM_FILE_NAME), dir.path().join(FILE_NAME));
        raise_high_water_mark(&hwm, 12, 1, &lkg, &KEY).unwrap();
        raise_high_water_mark(&hwm, 10, 1, &lkg, &KEY).unwrap();
        assert_eq!(read_high_water_mark(&hwm), Some(12), "never lowered without an LKG file saying whose it is");
        // The LKG file is of generation 1 (seq 9, below the mark of 12).
        write_atomically(&lkg, &jws()).unwrap();
        raise_high_water_mark(&hwm, 10, 1, &lkg, &KEY).unwrap();
        assert_eq!(read_high_water_mark(&hwm), Some(12), "same generation: a lower head is not a reason to lower it");
        raise_high_water_mark(&hwm, 10, 2, &lkg, &KEY).unwrap();
        assert_eq!(read_high_water_mark(&hwm), Some(10), "the mark of generation 1 gives way to generation 2's head");
        raise_high_water_mark(&hwm, 11, 2, &lkg, &[9; 32]).unwrap();
        assert_eq!(read_high_water_mark(&hwm), Some(11));
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        write_atomically(&path, &jws()).unwrap();
        assert_eq!(load(&path, &KEY, Some("00112233445566778899aabbccddeeff")).unwrap(), content());
        assert!(matches!(load(&path, &[8; 32], None), Err(LkgError::BadSignature)));
        assert!(matches!(load(&path, &KEY, Some("ff")), Err(LkgError::OtherStore { .. })));
        assert!(matches!(load(&dir.path().join("nope"), &KEY, None), Err(LkgError::Missing(_))));
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let good = jws().into_bytes();
        for i in 0..good.len() {
            for mask in [0x01u8, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= mask;
                assert!(verify_jws(&bad, &KEY).is_err(), "flipping byte {i} with {mask:#x} went unnoticed");
            }
        }
    }

    #[test]
    fn truncated_files_and_other_algorithms_are_refused() {
        let good = jws();
        for n in 0..good.len() {
            assert!(verify_jws(&good.as_bytes()[..n], &KEY).is_err(), "a file cut at {n} bytes was accepted");
        }
        let none = B64URL.encode(json!({"alg": "none", "typ": TYP}).to_string());
        let doc: Value = serde_json::from_str(&good).unwrap();
        let forged = json!({"protected": none, "payload": doc["payload"], "signature": ""}).to_string();
        assert!(matches!(verify_jws(forged.as_bytes(), &KEY), Err(LkgError::Malformed(_))));
    }

    #[test]
    fn a_crash_before_the_rename_leaves_the_old_file_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        write_atomically(&path, &jws()).unwrap();
        // A writer killed mid-write leaves a partial temporary file, never a partial LKG.
        std::fs::write(path.with_extension("json.tmp"), &jws()[..40]).unwrap();
        assert_eq!(load(&path, &KEY, None).unwrap(), content());
        write_atomically(&path, &jws()).unwrap();
        assert_eq!(load(&path, &KEY, None).unwrap(), content());
    }
}
