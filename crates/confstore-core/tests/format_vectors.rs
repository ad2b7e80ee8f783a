//! Checks `docs/format.md` against the code, so the specification cannot drift from it.
//!
//! - rebuilds the documented test vectors with the core API (`store_created`, `decide`,
//!   `rotate_signing_key`, `seal`, `EventBody::encode`, `genesis_hash`, key ids) and compares
//!   them with the document byte for byte;
//! - verifies the documented log, read from the document alone, with [`ChainVerifier`] and with
//!   a small independent decoder and verifier written from the document (not from the code);
//! - checks the annotated body dumps and the example export of the document;
//! - pins every decoder behaviour the document states (varints, strings, limits, trailing bytes)
//!   and shows that any one flipped byte of the documented log is detected at its seq.
//!
//! After a deliberate format change, regenerate the generated blocks of the document with
//! `CONFSTORE_REGENERATE_VECTORS=1 cargo test -p confstore-core --test format_vectors -- --nocapture`
//! and paste them over the old ones.

use confstore_core::chain::{EVENT_DOMAIN, GENESIS_DOMAIN};
use confstore_core::keys::{ROTATION_DOMAIN, key_id_of, rotation_statement};
use confstore_core::rollout::{Cohort, CohortMember, StagedChange};
use confstore_core::state::{decide, rotate_signing_key, seal, start_generation, store_created};
use confstore_core::{
    ChainVerifier, Change, ChangesetDraft, EventBody, EventKind, Hash32, KeyId, SigningKey, State, StoreId,
    StoredEvent, VerifyError, VerifyingKey, event::DecodeError, event::DenialCount, genesis_hash, limits,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/format.md");
const STORE_ID_HEX: &str = "00112233445566778899aabbccddeeff";
const T0_MS: u64 = 1_700_000_000_000;
const KEY_SEEDS: [[u8; 32]; 2] = [[0x01; 32], [0x02; 32]];
/// Bytes per line in the annotated dumps.
const DUMP_BYTES_PER_LINE: usize = 16;

// ---------------------------------------------------------------------------------------------
// The vector log, built with the core API.

struct VectorLog {
    store_id: StoreId,
    keys: Vec<SigningKey>,
    events: Vec<StoredEvent>,
    bodies: Vec<EventBody>,
}

struct Builder {
    store_id: StoreId,
    state: State,
    events: Vec<StoredEvent>,
    bodies: Vec<EventBody>,
}

impl Builder {
    fn append(&mut self, body: EventBody, key: &SigningKey) {
        let seq = self.state.seq + 1;
        let prev = self.events.last().map_or_else(|| genesis_hash(&self.store_id), |e| e.hash);
        self.events.push(seal(seq, &prev, &body, key));
        self.state.apply_body(seq, &body);
        self.bodies.push(body);
    }

    fn changeset(&mut self, key: &SigningKey, draft: &ChangesetDraft, now_ms: u64) {
        let bodies = decide(&self.state, draft, now_ms).expect("the vector changesets are valid");
        for body in bodies {
            self.append(body, key);
        }
    }
}

fn draft(actor: &str, reason: &str, request_id: &str, changes: Vec<Change>) -> ChangesetDraft {
    ChangesetDraft {
        actor: actor.into(),
        reason: reason.into(),
        request_id: request_id.into(),
        expected_epoch: None,
        changes,
    }
}

fn set(service: &str, key: &str, value: Value) -> Change {
    Change::Set { service: service.into(), key: key.into(), value }
}

/// The documented log: 16 events in 14 changesets, one key rotation, a second generation.
fn build_vector_log() -> VectorLog {
    let store_id = StoreId::from_hex(STORE_ID_HEX).expect("store id hex");
    let keys: Vec<SigningKey> = KEY_SEEDS.iter().map(SigningKey::from_seed).collect();
    let mut b = Builder { store_id, state: State::default(), events: Vec::new(), bodies: Vec::new() };

    b.append(store_created(store_id, &keys[0], "admin", "req-0001", T0_MS), &keys[0]);
    let register = Change::RegisterService { service: "billing".into() };
    b.changeset(&keys[0], &draft("alice", "new service", "req-0002", vec![register]), T0_MS + 1_000);
    let timeout = set("billing", "timeout_ms", json!(500));
    b.changeset(&keys[0], &draft("alice", "", "req-0003", vec![timeout]), T0_MS + 2_000);
    let endpoints = json!({
        "primary": "https://billing-1.internal.example:8443/v1",
        "fallbacks": ["https://billing-2.internal.example:8443/v1", "https://billing-3.internal.example:8443/v1"],
        "retries": 3,
        "backoff_s": 0.25,
        "tls": true,
        "note": "Grüße, \"quoted\"",
    });
    let changes = vec![
        set("billing", "endpoints", endpoints),
        Change::Unset { service: "billing".into(), key: "timeout_ms".into() },
    ];
    b.changeset(&keys[0], &draft("bob", "move to endpoint list — see CHG-42", "req-0004", changes), T0_MS + 3_000);
    let rotation = rotate_signing_key(
        &b.state,
        &store_id,
        &keys[0],
        &keys[1],
        &draft("admin", "scheduled key rotation", "req-0005", Vec::new()),
        T0_MS + 4_000,
    )
    .expect("rotation to a new key");
    b.append(rotation, &keys[0]);
    let timeout = set("billing", "timeout_ms", json!(750));
    b.changeset(&keys[1], &draft("alice", "raise timeout", "req-0006", vec![timeout]), T0_MS + 5_000);
    let schema = json!({
        "type": "object",
        "properties": {"timeout_ms": {"type": "integer", "minimum": 1}, "endpoints": {"type": "object"}},
        "additionalProperties": false,
    });
    let set_schema = Change::SetSchema { service: "billing".into(), schema };
    b.changeset(&keys[1], &draft("carol", "first schema", "req-0007", vec![set_schema]), T0_MS + 6_000);
    let timeout = set("billing", "timeout_ms", json!(900));
    b.changeset(&keys[1], &draft("alice", "validated", "req-0008", vec![timeout]), T0_MS + 7_000);
    let rollback = vec![
        Change::RollBack { to_epoch: 5, service: Some("billing".into()) },
        set("billing", "timeout_ms", json!(750)),
    ];
    b.changeset(&keys[1], &draft("bob", "back to epoch 5", "req-0009", rollback), T0_MS + 8_000);
    // An API token (only its SHA-256 recorded), a refused request, and the revocation.
    let token = confstore_core::auth::new_token(&[0x03; 40]);
    let issue = Change::IssueToken {
        token_id: token.id.clone(),
        name: "deployer".into(),
        role: confstore_core::auth::Role::ConfigWrite,
        service: Some("billing".into()),
        token_hash: confstore_core::auth::token_hash(&token.text),
    };
    b.changeset(&keys[1], &draft("admin", "ci deploys", "req-0010", vec![issue]), T0_MS + 9_000);
    let denied = Change::DenyAccess {
        token_id: token.id.clone(),
        method: "GET".into(),
        route: "/api/v1/audit".into(),
        required_role: confstore_core::auth::Role::AuditRead,
        service: None,
    };
    b.changeset(&keys[1], &draft("token:deployer", "", "req-0011", vec![denied]), T0_MS + 10_000);
    let revoke = Change::RevokeToken { token_id: token.id.clone() };
    b.changeset(&keys[1], &draft("admin", "rotated", "req-0012", vec![revoke]), T0_MS + 11_000);
    // A restore to a point in time, continued deliberately: generation 2 abandons a head
    // (seq 20) that this log never had.
    let generation = start_generation(
        &b.state,
        &draft("admin", "restored from the 02:00 backup after disk loss", "req-0013", Vec::new()),
        20,
        [0xab; 32],
        T0_MS + 12_000,
    )
    .expect("a new generation");
    b.append(generation, &keys[1]);
    // The token's refusals after its first one on each route, summed over a window.
    let summary = Change::SummarizeDenials {
        token_id: token.id.clone(),
        window_start_ms: T0_MS + 10_000,
        window_end_ms: T0_MS + 10_900,
        counts: vec![
            DenialCount { method: "GET".into(), route: "/api/v1/audit".into(), count: 41 },
            DenialCount { method: "DELETE".into(), route: "/api/v1/tokens/{id}".into(), count: 2 },
        ],
        dropped: 0,
    };
    b.changeset(&keys[1], &draft("token:deployer", "", "req-0014", vec![summary]), T0_MS + 13_000);
    VectorLog { store_id, keys, events: b.events, bodies: b.bodies }
}

// ---------------------------------------------------------------------------------------------
// Rendering the generated blocks of the document.

fn event_hash_input(ev: &StoredEvent) -> Vec<u8> {
    let mut m = EVENT_DOMAIN.to_vec();
    m.extend_from_slice(&ev.seq.to_be_bytes());
    m.extend_from_slice(&ev.prev_hash.0);
    m.extend_from_slice(&ev.body);
    m
}

/// The `name: value` pairs of the ```vectors block, in document order.
fn vector_pairs(log: &VectorLog) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |name: String, value: String| out.push((name, value));
    put("limit.event_body_bytes_max".into(), limits::EVENT_BODY_BYTES_MAX.to_string());
    put("limit.events_per_changeset_max".into(), limits::EVENTS_PER_CHANGESET_MAX.to_string());
    put("store_id".into(), log.store_id.to_hex());
    let mut genesis_input = GENESIS_DOMAIN.to_vec();
    genesis_input.extend_from_slice(&log.store_id.0);
    put("genesis_input".into(), hex::encode(&genesis_input));
    put("genesis_hash".into(), genesis_hash(&log.store_id).to_hex());
    for (i, key) in log.keys.iter().enumerate() {
        let n = i + 1;
        put(format!("key.{n}.seed"), hex::encode(key.seed()));
        put(format!("key.{n}.public_key"), hex::encode(key.verifying_key().to_bytes()));
        put(format!("key.{n}.key_id"), key.verifying_key().key_id().to_hex());
    }
    for (ev, body) in log.events.iter().zip(&log.bodies) {
        let n = ev.seq;
        put(format!("event.{n}.seq"), n.to_string());
        put(format!("event.{n}.body"), hex::encode(&ev.body));
        put(format!("event.{n}.prev_hash"), ev.prev_hash.to_hex());
        if n == 1 {
            put(format!("event.{n}.hash_input"), hex::encode(event_hash_input(ev)));
        }
        put(format!("event.{n}.hash"), ev.hash.to_hex());
        put(format!("event.{n}.key_id"), ev.key_id.to_hex());
        put(format!("event.{n}.sig"), hex::encode(ev.sig));
        if let EventKind::SigningKeyRotated { new_public_key, .. } = &body.kind {
            let old = log.keys[0].verifying_key().to_bytes();
            put(
                format!("event.{n}.rotation_statement"),
                hex::encode(rotation_statement(&log.store_id, &old, new_public_key)),
            );
        }
        put(format!("event.{n}.json"), body.to_json().to_string());
    }
    out
}

fn render_vectors(log: &VectorLog) -> String {
    let mut s = String::from("```vectors\n");
    for (name, value) in vector_pairs(log) {
        s.push_str(&format!("{name}: {value}\n"));
    }
    s.push_str("```\n");
    s
}

fn render_dump(segments: &[Segment]) -> String {
    let width = DUMP_BYTES_PER_LINE * 2;
    let mut s = String::new();
    for seg in segments {
        for (i, chunk) in seg.bytes.chunks(DUMP_BYTES_PER_LINE).enumerate() {
            let hex = hex::encode(chunk);
            if i == 0 {
                s.push_str(&format!("{hex:<width$}  {}\n", seg.note));
            } else {
                s.push_str(&format!("{hex}\n"));
            }
        }
    }
    s
}

fn render_dumps(log: &VectorLog) -> String {
    let mut s = String::new();
    for ev in &log.events {
        let decoded = spec_decode(&ev.body).expect("vector bodies decode");
        s.push_str(&format!("Event {}:\n\n```annotated event.{}.body\n", ev.seq, ev.seq));
        s.push_str(&render_dump(&decoded.segments));
        s.push_str("```\n\n");
    }
    s
}

fn base64_standard(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The export of the vector log, one JSON value per line.
fn export_lines(log: &VectorLog) -> Vec<Value> {
    let keys: Vec<Value> = log
        .keys
        .iter()
        .map(|k| {
            let vk = k.verifying_key();
            json!({"key_id": vk.key_id().to_hex(), "public_key": hex::encode(vk.to_bytes())})
        })
        .collect();
    let mut lines = vec![json!({"format": "confstore-export/1", "store_id": log.store_id.to_hex(), "keys": keys})];
    for (ev, body) in log.events.iter().zip(&log.bodies) {
        lines.push(json!({
            "seq": ev.seq,
            "epoch": body.epoch,
            "time": body.time_ms,
            "prev_hash": ev.prev_hash.to_hex(),
            "hash": ev.hash.to_hex(),
            "key_id": ev.key_id.to_hex(),
            "sig": hex::encode(ev.sig),
            "body": base64_standard(&ev.body),
            "event": body.to_json(),
        }));
    }
    lines
}

fn render_export(log: &VectorLog) -> String {
    let mut s = String::from("```jsonl\n");
    for line in export_lines(log) {
        s.push_str(&line.to_string());
        s.push('\n');
    }
    s.push_str("```\n");
    s
}

#[test]
#[allow(clippy::print_stdout, reason = "printing the generated blocks is the point of this mode")]
fn regenerate_vectors_if_asked() {
    if std::env::var_os("CONFSTORE_REGENERATE_VECTORS").is_none_or(|v| v != "1") {
        return;
    }
    let log = build_vector_log();
    println!("{}", render_vectors(&log));
    println!("{}", render_dumps(&log));
    println!("{}", render_export(&log));
}

// ---------------------------------------------------------------------------------------------
// Reading the document.

struct Doc {
    text: String,
}

impl Doc {
    fn load() -> Self {
        let text = std::fs::read_to_string(DOC_PATH).unwrap_or_else(|e| panic!("reading {DOC_PATH}: {e}"));
        Self { text }
    }

    /// Fenced blocks as (info string, content).
    fn blocks(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut open: Option<(String, String)> = None;
        for line in self.text.lines() {
            match (&mut open, line.strip_prefix("```")) {
                (None, Some(info)) => open = Some((info.trim().to_owned(), String::new())),
                (Some(_), Some(rest)) if rest.trim().is_empty() => out.extend(open.take()),
                (Some((_, content)), _) => {
                    content.push_str(line);
                    content.push('\n');
                }
                (None, None) => {}
            }
        }
        assert!(open.is_none(), "{DOC_PATH}: a fenced block is not closed");
        out
    }

    fn block(&self, info: &str) -> String {
        let found: Vec<String> = self.blocks().into_iter().filter(|(i, _)| i == info).map(|(_, c)| c).collect();
        assert_eq!(found.len(), 1, "{DOC_PATH} must hold exactly one ```{info} block");
        found.into_iter().next().unwrap_or_default()
    }

    /// The `name: value` lines of the ```vectors block.
    fn vectors(&self) -> Vectors {
        let pairs = self
            .block("vectors")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (name, value) = l.split_once(": ").unwrap_or_else(|| panic!("vector line without ': ': {l:?}"));
                (name.to_owned(), value.to_owned())
            })
            .collect();
        Vectors { pairs }
    }
}

struct Vectors {
    pairs: Vec<(String, String)>,
}

impl Vectors {
    fn get(&self, name: &str) -> &str {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("the vectors block has no {name:?}"))
    }

    fn bytes(&self, name: &str) -> Vec<u8> {
        hex::decode(self.get(name)).unwrap_or_else(|e| panic!("{name}: not hex: {e}"))
    }

    fn array<const N: usize>(&self, name: &str) -> [u8; N] {
        self.bytes(name).try_into().unwrap_or_else(|b: Vec<u8>| panic!("{name}: {} bytes, expected {N}", b.len()))
    }

    fn event_count(&self) -> u64 {
        self.pairs.iter().filter(|(n, _)| n.starts_with("event.") && n.ends_with(".seq")).count() as u64
    }

    /// The stored events, from the document alone.
    fn events(&self) -> Vec<StoredEvent> {
        (1..=self.event_count())
            .map(|n| StoredEvent {
                seq: self.get(&format!("event.{n}.seq")).parse().expect("seq is decimal"),
                body: self.bytes(&format!("event.{n}.body")),
                prev_hash: Hash32(self.array(&format!("event.{n}.prev_hash"))),
                hash: Hash32(self.array(&format!("event.{n}.hash"))),
                key_id: KeyId(self.array(&format!("event.{n}.key_id"))),
                sig: self.array(&format!("event.{n}.sig")),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// An independent decoder, written from docs/format.md §7 (not from the code).

/// One field of a body: its bytes and what they mean.
struct Segment {
    bytes: Vec<u8>,
    note: String,
}

struct Decoded {
    json: Value,
    segments: Vec<Segment>,
}

struct SpecReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    segments: Vec<Segment>,
}

impl SpecReader<'_> {
    fn take(&mut self, n: usize, note: String) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or("unexpected end of body")?;
        let taken = &self.bytes[self.pos..end];
        self.segments.push(Segment { bytes: taken.to_vec(), note });
        self.pos = end;
        Ok(taken)
    }

    /// Unsigned LEB128 of at most `max_len` bytes whose last byte is at most `last_max`.
    fn varint(&mut self, max_len: usize, last_max: u8, what: &str, ty: &str) -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..max_len {
            let b = *self.bytes.get(self.pos + i).ok_or("unexpected end of body in a varint")?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i == max_len - 1 && b > last_max {
                    return Err(format!("{what}: varint too large for {ty}"));
                }
                self.take(i + 1, format!("{what} = {value} (varint {ty})"))?;
                return Ok(value);
            }
        }
        Err(format!("{what}: varint longer than {max_len} bytes"))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        self.varint(10, 0x01, what, "u64")
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let v = self.varint(5, 0x0f, what, "u32")?;
        u32::try_from(v).map_err(|_| format!("{what}: over u32"))
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let len = self.varint(10, 0x01, &format!("{what} length"), "u64")?;
        let len = usize::try_from(len).map_err(|_| format!("{what}: length over usize"))?;
        let pos = self.pos;
        let raw = self.bytes.get(pos..).ok_or("unexpected end")?;
        let text = std::str::from_utf8(raw.get(..len).ok_or("unexpected end of body in a string")?)
            .map_err(|_| format!("{what}: not UTF-8"))?
            .to_owned();
        let shown: String =
            text.chars().flat_map(|c| if c.is_control() { c.escape_debug().collect() } else { vec![c] }).collect();
        self.take(len, format!("{what} (UTF-8): {shown}"))?;
        Ok(text)
    }

    fn fixed(&mut self, n: usize, what: &str) -> Result<Vec<u8>, String> {
        Ok(self.take(n, format!("{what} ({n} raw bytes)"))?.to_vec())
    }

    /// §7.1 Bool: `00` or `01`.
    fn bool(&mut self, what: &str) -> Result<bool, String> {
        match self.take(1, format!("{what}: bool"))?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("{what}: bool byte {b:#04x}")),
        }
    }

    /// §7.1 Option: `00` none, `01` then the value.
    fn option<T>(&mut self, what: &str, f: impl FnOnce(&mut Self) -> Result<T, String>) -> Result<Option<T>, String> {
        match self.take(1, format!("{what}: option tag"))?[0] {
            0 => {
                if let Some(seg) = self.segments.last_mut() {
                    seg.note = format!("{what}: none (option tag 00)");
                }
                Ok(None)
            }
            1 => {
                if let Some(seg) = self.segments.last_mut() {
                    seg.note = format!("{what}: some (option tag 01)");
                }
                f(self).map(Some)
            }
            t => Err(format!("{what}: option tag {t:#04x}")),
        }
    }
}

fn spec_decode(bytes: &[u8]) -> Result<Decoded, String> {
    if bytes.len() > limits::EVENT_BODY_BYTES_MAX {
        return Err("body over the limit".into());
    }
    let mut r = SpecReader { bytes, pos: 0, segments: Vec::new() };
    let mut json = json!({
        "epoch": r.u64("epoch")?,
        "time_ms": r.u64("time_ms")?,
        "changeset_index": r.u32("changeset_index")?,
        "changeset_len": r.u32("changeset_len")?,
        "actor": r.string("actor")?,
        "reason": r.string("reason")?,
        "request_id": r.string("request_id")?,
    });
    let variant = r.varint(5, 0x0f, "kind", "u32")?;
    let names = [
        "store_created",
        "service_registered",
        "value_set",
        "value_unset",
        "signing_key_rotated",
        "rolled_back",
        "schema_set",
        "secret_set",
        "secret_revealed",
        "token_issued",
        "token_revoked",
        "access_denied",
        "generation_started",
        "access_denied_summary",
        "rollout_started",
        "rollout_promoted",
        "rollout_aborted",
    ];
    let name = *usize::try_from(variant).ok().and_then(|v| names.get(v)).ok_or("unknown kind")?;
    if let Some(seg) = r.segments.last_mut() {
        seg.note = format!("kind = {variant} {name} (varint u32)");
    }
    let kind = match variant {
        0 => json!({"type": name, "store_id": hex::encode(r.fixed(16, "store_id")?),
                    "public_key": hex::encode(r.fixed(32, "public_key")?)}),
        1 => json!({"type": name, "service": r.string("service")?}),
        2 => {
            let (service, key, text) = (r.string("service")?, r.string("key")?, r.string("value_json")?);
            let schema_hash = r.option("schema_hash", |r| r.fixed(32, "schema_hash"))?.map(hex::encode);
            let value = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
            json!({"type": name, "service": service, "key": key, "value": value, "schema_hash": schema_hash})
        }
        3 => {
            let (service, key) = (r.string("service")?, r.string("key")?);
            let schema_hash = r.option("schema_hash", |r| r.fixed(32, "schema_hash"))?.map(hex::encode);
            json!({"type": name, "service": service, "key": key, "schema_hash": schema_hash})
        }
        4 => json!({"type": name, "new_public_key": hex::encode(r.fixed(32, "new_public_key")?),
                    "new_key_sig": hex::encode(r.fixed(64, "new_key_sig")?)}),
        5 => {
            let (from_epoch, to_epoch) = (r.u64("from_epoch")?, r.u64("to_epoch")?);
            let service = r.option("service", |r| r.string("service"))?;
            json!({"type": name, "from_epoch": from_epoch, "to_epoch": to_epoch, "service": service})
        }
        7 => {
            let (service, key) = (r.string("service")?, r.string("key")?);
            let key_version = r.u32("key_version")?;
            let _nonce = r.fixed(12, "nonce")?;
            let len = r.varint(10, 0x01, "ciphertext length", "u64")?;
            let _ciphertext = r.fixed(usize::try_from(len).map_err(|_| "length")?, "ciphertext")?;
            let schema_hash = r.option("schema_hash", |r| r.fixed(32, "schema_hash"))?.map(hex::encode);
            json!({"type": name, "service": service, "key": key, "key_version": key_version, "schema_hash": schema_hash})
        }
        8 => json!({"type": name, "service": r.string("service")?, "key": r.string("key")?}),
        9 => {
            let (token_id, tname, role) = (r.string("token_id")?, r.string("name")?, r.string("role")?);
            let service = r.option("service", |r| r.string("service"))?;
            let hash = hex::encode(r.fixed(32, "token_hash")?);
            json!({"type": name, "token_id": token_id, "name": tname, "role": role, "service": service, "token_hash": hash})
        }
        10 => json!({"type": name, "token_id": r.string("token_id")?}),
        11 => {
            let (token_id, method, route) = (r.string("token_id")?, r.string("method")?, r.string("route")?);
            let required_role = r.string("required_role")?;
            let service = r.option("service", |r| r.string("service"))?;
            json!({"type": name, "token_id": token_id, "method": method, "route": route,
                   "required_role": required_role, "service": service})
        }
        12 => {
            let (generation, abandoned_seq) = (r.u64("generation")?, r.u64("abandoned_seq")?);
            let hash = hex::encode(r.fixed(32, "abandoned_hash")?);
            json!({"type": name, "generation": generation, "abandoned_seq": abandoned_seq, "abandoned_hash": hash})
        }
        13 => {
            let token_id = r.string("token_id")?;
            let (start, end) = (r.u64("window_start_ms")?, r.u64("window_end_ms")?);
            // §7.1 list: varint(len), then each element as a struct.
            let len = r.varint(10, 0x01, "counts length", "u64")?;
            let mut counts = Vec::new();
            for _ in 0..len {
                let (method, route) = (r.string("method")?, r.string("route")?);
                counts.push(json!({"method": method, "route": route, "count": r.u64("count")?}));
            }
            json!({"type": name, "token_id": token_id, "window_start_ms": start, "window_end_ms": end,
                   "counts": counts, "dropped": r.u64("dropped")?})
        }
        14 => {
            let service = r.string("service")?;
            // enum Cohort: 0 = list of instance ids, 1 = basis points.
            let cohort = match r.u32("cohort variant")? {
                0 => {
                    let len = r.u64("instances length")?;
                    let ids = (0..len).map(|_| r.string("instance")).collect::<Result<Vec<_>, _>>()?;
                    json!({"instances": ids})
                }
                1 => json!({"percent": f64::from(r.u32("basis_points")?) / 100.0}),
                v => return Err(format!("cohort variant {v}")),
            };
            let (bake_ms, auto, base_epoch) = (r.u64("bake_ms")?, r.bool("auto")?, r.u64("base_epoch")?);
            let len = r.u64("changes length")?;
            let mut changes = Vec::new();
            for _ in 0..len {
                changes.push(match r.u32("staged change variant")? {
                    0 => {
                        let (key, text) = (r.string("key")?, r.string("value_json")?);
                        let value = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
                        json!({"op": "set", "key": key, "value": value})
                    }
                    1 => json!({"op": "unset", "key": r.string("key")?}),
                    2 => {
                        let (key, key_version) = (r.string("key")?, r.u32("key_version")?);
                        let _nonce = r.fixed(12, "nonce")?;
                        let len = r.u64("ciphertext length")?;
                        let _ciphertext = r.fixed(usize::try_from(len).map_err(|_| "length")?, "ciphertext")?;
                        json!({"op": "secret", "key": key, "key_version": key_version})
                    }
                    v => return Err(format!("staged change variant {v}")),
                });
            }
            let schema_hash = r.option("schema_hash", |r| r.fixed(32, "schema_hash"))?.map(hex::encode);
            json!({"type": name, "service": service, "cohort": cohort, "bake_ms": bake_ms, "auto": auto,
                   "base_epoch": base_epoch, "changes": changes, "schema_hash": schema_hash})
        }
        15 | 16 => {
            let (service, rollout_seq, automatic) = (r.string("service")?, r.u64("rollout_seq")?, r.bool("automatic")?);
            let len = r.u64("cohort length")?;
            let mut cohort = Vec::new();
            for _ in 0..len {
                let (instance, applied) = (r.string("instance")?, r.bool("applied")?);
                let healthy = r.option("healthy", |r| r.bool("healthy"))?;
                cohort.push(
                    json!({"instance": instance, "applied": applied, "healthy": healthy, "online": r.bool("online")?}),
                );
            }
            json!({"type": name, "service": service, "rollout_seq": rollout_seq, "automatic": automatic, "cohort": cohort})
        }
        6 => {
            let (service, text) = (r.string("service")?, r.string("schema_json")?);
            let hash = hex::encode(r.fixed(32, "schema_hash")?);
            let schema = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
            json!({"type": name, "service": service, "schema": schema, "schema_hash": hash})
        }
        _ => return Err(format!("unknown kind {variant}")),
    };
    if r.pos != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - r.pos));
    }
    json["kind"] = kind;
    Ok(Decoded { json, segments: r.segments })
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn documented_vectors_match_the_code() {
    let doc = Doc::load().vectors();
    let built = vector_pairs(&build_vector_log());
    let doc_names: Vec<&str> = doc.pairs.iter().map(|(n, _)| n.as_str()).collect();
    let built_names: Vec<&str> = built.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(doc_names, built_names, "the vectors block lists other names than the code generates");
    for (name, value) in &built {
        assert_eq!(doc.get(name), value, "docs/format.md vector {name} differs from the code");
    }
}

#[test]
fn documented_log_verifies_with_chain_verifier() {
    let doc = Doc::load().vectors();
    let store_id = StoreId::from_hex(doc.get("store_id")).expect("store id");
    let events = doc.events();
    assert_eq!(events.len(), 16);
    for anchor in ["key.1.public_key", "key.2.public_key"] {
        let anchor = VerifyingKey::from_bytes(&doc.bytes(anchor)).expect("documented key");
        let mut v = ChainVerifier::new(store_id, Some(anchor));
        let mut verified = Vec::new();
        for ev in &events {
            v.push(ev).unwrap_or_else(|e| panic!("documented event {} does not verify: {e}", ev.seq));
            verified.extend(v.take_ready());
        }
        verified.extend(v.flush_ready().expect("signatures"));
        let head = v.finish().expect("the documented log verifies");
        assert_eq!((head.seq, head.epoch, head.hash, head.generation), (16, 7, events[15].hash, 2));
        let keys: Vec<(KeyId, u64)> = head.keys.entries().iter().map(|e| (e.key.key_id(), e.from_seq)).collect();
        let key_ids = [KeyId(doc.array("key.1.key_id")), KeyId(doc.array("key.2.key_id"))];
        assert_eq!(keys, vec![(key_ids[0], 1), (key_ids[1], 7)]);
        for (ev, ver) in events.iter().zip(&verified) {
            let documented: Value = serde_json::from_str(doc.get(&format!("event.{}.json", ev.seq))).expect("json");
            assert_eq!(ver.body().to_json(), documented, "decoded event {} differs from its documented JSON", ev.seq);
        }
    }
}

#[test]
fn documented_bodies_decode_to_the_documented_fields() {
    let doc = Doc::load().vectors();
    for ev in doc.events() {
        let body = EventBody::decode(&ev.body).unwrap_or_else(|e| panic!("event {}: {e}", ev.seq));
        assert_eq!(body.encode(), ev.body, "event {}: the documented body is not the canonical encoding", ev.seq);
        let documented: Value = serde_json::from_str(doc.get(&format!("event.{}.json", ev.seq))).expect("json");
        assert_eq!(body.to_json(), documented, "event {}", ev.seq);
        let independent = spec_decode(&ev.body).unwrap_or_else(|e| panic!("event {}: spec decoder: {e}", ev.seq));
        assert_eq!(independent.json, documented, "event {}: the document's decoding rules disagree", ev.seq);
    }
}

/// An independent verifier written from the document: hashes, key ids, key chain, signatures.
#[test]
fn documented_log_verifies_independently() {
    let doc = Doc::load().vectors();
    let store_id = doc.bytes("store_id");
    let genesis_input = [GENESIS_DOMAIN, &store_id].concat();
    assert_eq!(doc.bytes("genesis_input"), genesis_input);
    assert_eq!(hex::encode(sha256(&[b"confstore/genesis/v1\0", &store_id])), doc.get("genesis_hash"));
    for n in 1..=2 {
        let pk = doc.bytes(&format!("key.{n}.public_key"));
        assert_eq!(sha256(&[&pk])[..8], doc.bytes(&format!("key.{n}.key_id"))[..], "key id of key {n}");
        let derived = ed25519_dalek::SigningKey::from_bytes(&doc.array(&format!("key.{n}.seed"))).verifying_key();
        assert_eq!(derived.to_bytes().as_slice(), pk.as_slice(), "public key {n} from its seed");
    }
    let mut signer: Option<ed25519_dalek::VerifyingKey> = None;
    let mut prev = doc.bytes("genesis_hash");
    for ev in doc.events() {
        let seq = ev.seq;
        assert_eq!(ev.prev_hash.0.as_slice(), prev.as_slice(), "link of event {seq}");
        let hash = sha256(&[b"confstore/event/v1\0", &seq.to_be_bytes(), &ev.prev_hash.0, &ev.body]);
        assert_eq!(hash, ev.hash.0, "hash of event {seq}");
        if seq == 1 {
            assert_eq!(doc.bytes("event.1.hash_input"), event_hash_input(&ev));
        }
        let json = spec_decode(&ev.body).expect("decodes").json;
        let kind = &json["kind"];
        if seq == 1 {
            assert_eq!(kind["type"], "store_created");
            assert_eq!(kind["store_id"], doc.get("store_id"));
            let pk: [u8; 32] = hex::decode(kind["public_key"].as_str().unwrap_or_default())
                .ok()
                .and_then(|b| b.try_into().ok())
                .expect("public key");
            signer = ed25519_dalek::VerifyingKey::from_bytes(&pk).ok();
        }
        let key = signer.expect("a signer is known");
        assert_eq!(sha256(&[key.as_bytes()])[..8], ev.key_id.0, "key id of event {seq}");
        let sig = ed25519_dalek::Signature::from_bytes(&ev.sig);
        assert!(key.verify_strict(&hash, &sig).is_ok(), "signature of event {seq}");
        if kind["type"] == "signing_key_rotated" {
            let new: [u8; 32] = hex::decode(kind["new_public_key"].as_str().unwrap_or_default())
                .ok()
                .and_then(|b| b.try_into().ok())
                .expect("new key");
            let statement = [ROTATION_DOMAIN, &store_id, key.as_bytes(), &new].concat();
            assert_eq!(doc.bytes(&format!("event.{seq}.rotation_statement")), statement);
            let new_key = ed25519_dalek::VerifyingKey::from_bytes(&new).expect("new key is a point");
            let countersig: [u8; 64] = hex::decode(kind["new_key_sig"].as_str().unwrap_or_default())
                .ok()
                .and_then(|b| b.try_into().ok())
                .expect("countersignature");
            let countersig = ed25519_dalek::Signature::from_bytes(&countersig);
            assert!(new_key.verify_strict(&statement, &countersig).is_ok(), "rotation countersignature");
            signer = Some(new_key);
        }
        prev = hash.to_vec();
    }
}

#[test]
fn documented_dumps_match_the_bodies() {
    let doc = Doc::load();
    let vectors = doc.vectors();
    let blocks = doc.blocks();
    let log = build_vector_log();
    for ev in &log.events {
        let info = format!("annotated event.{}.body", ev.seq);
        let dumps: Vec<&String> = blocks.iter().filter(|(i, _)| *i == info).map(|(_, c)| c).collect();
        assert_eq!(dumps.len(), 1, "docs/format.md must hold one ```{info} block");
        let hex_text: String = dumps[0].lines().filter_map(|l| l.split_whitespace().next()).collect();
        assert_eq!(hex_text, vectors.get(&format!("event.{}.body", ev.seq)), "{info}: bytes differ from the vector");
        let expected = render_dump(&spec_decode(&ev.body).expect("decodes").segments);
        assert_eq!(dumps[0], &expected, "{info}: annotations differ from the generated ones");
    }
}

#[test]
fn documented_export_example_matches() {
    let doc = Doc::load();
    let documented: Vec<Value> = doc
        .block("jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("export line is not JSON: {e}: {l}")))
        .collect();
    assert_eq!(documented, export_lines(&build_vector_log()));
    let store_id = StoreId::from_hex(documented[0]["store_id"].as_str().unwrap_or_default()).expect("store id");
    let keys = documented[0]["keys"].as_array().expect("keys");
    let anchor =
        VerifyingKey::from_bytes(&hex::decode(keys[0]["public_key"].as_str().unwrap_or_default()).expect("hex"))
            .expect("public key in the header is hex");
    let vectors = doc.vectors();
    let mut v = ChainVerifier::new(store_id, Some(anchor));
    for (line, ev) in documented[1..].iter().zip(vectors.events()) {
        assert_eq!(line["body"], base64_standard(&ev.body));
        v.push(&ev).expect("verifies");
    }
    v.finish().expect("the exported log verifies");
}

/// Flips every byte of every stored field of the documented log (two masks each): every one is
/// detected, and named at its seq.
#[test]
fn every_flipped_byte_of_the_documented_log_is_detected() {
    let doc = Doc::load().vectors();
    let store_id = StoreId::from_hex(doc.get("store_id")).expect("store id");
    let anchor = VerifyingKey::from_bytes(&doc.bytes("key.1.public_key")).expect("key");
    let clean = doc.events();
    let verify = |events: &[StoredEvent]| -> Result<(), VerifyError> {
        let mut v = ChainVerifier::new(store_id, Some(anchor)).discard_events();
        for ev in events {
            v.push(ev)?;
        }
        v.finish().map(|_| ())
    };
    verify(&clean).expect("the clean log verifies");
    let mut mutations = 0;
    for k in 0..clean.len() {
        let seq = clean[k].seq;
        for field in 0..6 {
            let len = if field == 0 { 8 } else { field_bytes(&mut clean[k].clone(), field).len() };
            for i in 0..len {
                for mask in [0x01u8, 0x80] {
                    let mut events = clean.clone();
                    let mut ev_seq = events[k].seq.to_be_bytes();
                    let bytes = match field {
                        0 => &mut ev_seq[..],
                        _ => field_bytes(&mut events[k], field),
                    };
                    bytes[i] ^= mask;
                    events[k].seq = u64::from_be_bytes(ev_seq);
                    let err = verify(&events).expect_err("a flipped byte must not verify");
                    assert_eq!(err.seq(), seq, "field {field} byte {i} mask {mask:#04x} of event {seq}: {err}");
                    mutations += 1;
                }
            }
        }
    }
    assert!(mutations > 2_000, "only {mutations} mutations");
}

/// The bytes of stored field `field` (1 body, 2 prev_hash, 3 hash, 4 key_id, 5 sig).
fn field_bytes(ev: &mut StoredEvent, field: usize) -> &mut [u8] {
    match field {
        1 => &mut ev.body,
        2 => &mut ev.prev_hash.0,
        3 => &mut ev.hash.0,
        4 => &mut ev.key_id.0,
        5 => &mut ev.sig,
        _ => &mut [],
    }
}

/// S + L is the same signature to a loose verifier; strict verification refuses it.
#[test]
fn non_canonical_signature_scalar_is_refused() {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let log = build_vector_log();
    let mut events = log.events.clone();
    let mut carry = 0u16;
    for (s, l) in events[1].sig[32..].iter_mut().zip(L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum.to_le_bytes()[0];
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    let mut v = ChainVerifier::new(log.store_id, Some(log.keys[0].verifying_key()));
    let result = events.iter().try_for_each(|ev| v.push(ev)).and_then(|()| v.finish().map(|_| ()));
    assert!(matches!(result, Err(VerifyError::BadSignature { seq: 2, .. })), "{result:?}");
}

// ---------------------------------------------------------------------------------------------
// Decoder behaviour stated in docs/format.md §7.

fn plain_body() -> EventBody {
    EventBody {
        epoch: 1,
        time_ms: 2,
        changeset_index: 0,
        changeset_len: 1,
        actor: "a".into(),
        reason: String::new(),
        request_id: String::new(),
        kind: EventKind::ServiceRegistered { service: "s".into() },
    }
}

/// `01 02 00 01 01 61 00 00 01 01 73`: the bytes of [`plain_body`].
const PLAIN: [u8; 11] = [0x01, 0x02, 0x00, 0x01, 0x01, 0x61, 0x00, 0x00, 0x01, 0x01, 0x73];

fn with_epoch_bytes(epoch: &[u8]) -> Vec<u8> {
    [epoch, &PLAIN[1..]].concat()
}

#[test]
fn plain_body_bytes_are_as_documented() {
    assert_eq!(plain_body().encode(), PLAIN);
    assert_eq!(spec_decode(&PLAIN).expect("decodes").json, plain_body().to_json());
}

#[test]
fn varints_are_leb128_and_the_encoder_writes_the_shortest_form() {
    let cases: [(u64, &[u8]); 6] = [
        (0, &[0x00]),
        (127, &[0x7f]),
        (128, &[0x80, 0x01]),
        (300, &[0xac, 0x02]),
        (T0_MS, &[0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31]),
        (u64::MAX, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
    ];
    for (value, bytes) in cases {
        let body = EventBody { epoch: value, ..plain_body() };
        assert_eq!(body.encode(), with_epoch_bytes(bytes), "epoch {value}");
        assert_eq!(EventBody::decode(&with_epoch_bytes(bytes)), Ok(body));
    }
}

/// postcard 1.x decodes overlong varints; confstore refuses them, so every accepted body has
/// exactly one encoding (§7.1, §7.4).
#[test]
fn overlong_varints_are_refused() {
    for overlong in
        [&[0x81, 0x00][..], &[0x81, 0x80, 0x80, 0x00], &[0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]]
    {
        assert_eq!(EventBody::decode(&with_epoch_bytes(overlong)), Err(DecodeError::NotCanonical));
    }
    // A u32 field (changeset_len = 1) written in 5 bytes.
    let mut long_len = PLAIN[..3].to_vec();
    long_len.extend_from_slice(&[0x81, 0x80, 0x80, 0x80, 0x00]);
    long_len.extend_from_slice(&PLAIN[4..]);
    assert_eq!(EventBody::decode(&long_len), Err(DecodeError::NotCanonical));
}

#[test]
fn varints_longer_than_their_type_are_refused() {
    let malformed = |bytes: &[u8]| matches!(EventBody::decode(bytes), Err(DecodeError::Malformed(_)));
    // u64: 11 bytes, or a 10th byte over 0x01.
    assert!(malformed(&with_epoch_bytes(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00])));
    assert!(malformed(&with_epoch_bytes(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])));
    // u32: 6 bytes, or a 5th byte over 0x0f.
    for len in [&[0x81, 0x80, 0x80, 0x80, 0x80, 0x00][..], &[0xff, 0xff, 0xff, 0xff, 0x10]] {
        let bytes = [&PLAIN[..3], len, &PLAIN[4..]].concat();
        assert!(malformed(&bytes), "{}", hex::encode(len));
    }
    let max_u32 = [&PLAIN[..3], &[0xff, 0xff, 0xff, 0xff, 0x0f], &PLAIN[4..]].concat();
    assert_eq!(EventBody::decode(&max_u32).map(|b| b.changeset_len), Ok(u32::MAX));
}

#[test]
fn strings_must_be_utf8_and_within_the_body() {
    let malformed = |bytes: &[u8]| matches!(EventBody::decode(bytes), Err(DecodeError::Malformed(_)));
    let mut bad_utf8 = PLAIN;
    bad_utf8[5] = 0xff; // actor = [ff]
    assert!(malformed(&bad_utf8));
    let mut overlong_utf8 = PLAIN.to_vec();
    overlong_utf8.splice(4..6, [0x02, 0xc1, 0xa1]); // actor = overlong "a"
    assert!(malformed(&overlong_utf8));
    let mut too_long = PLAIN;
    too_long[4] = 0x7f; // actor length 127, past the end of the body
    assert!(malformed(&too_long));
    assert!(malformed(&PLAIN[..10]), "truncated body");
}

#[test]
fn unknown_kinds_and_trailing_bytes_are_refused() {
    for variant in [5u8, 0x7f] {
        let mut bytes = PLAIN;
        bytes[8] = variant;
        assert!(matches!(EventBody::decode(&bytes), Err(DecodeError::Malformed(_))), "kind {variant}");
    }
    assert_eq!(EventBody::decode(&[&PLAIN[..], &[0]].concat()), Err(DecodeError::Trailing(1)));
    assert!(EventBody::decode(&[]).is_err());
}

#[test]
fn fixed_arrays_are_raw_bytes_in_order() {
    let store_id = StoreId::from_hex(STORE_ID_HEX).expect("hex");
    let body = EventBody { kind: EventKind::StoreCreated { store_id, public_key: [0xab; 32] }, ..plain_body() };
    let bytes = body.encode();
    assert_eq!(bytes[8], 0x00, "kind store_created");
    assert_eq!(bytes[9..25], store_id.0);
    assert_eq!(bytes[25..], [0xab; 32]);
    let sig: [u8; 64] = std::array::from_fn(|i| u8::try_from(i).unwrap_or(0));
    let body = EventBody {
        kind: EventKind::SigningKeyRotated { new_public_key: [0xcd; 32], new_key_sig: sig },
        ..plain_body()
    };
    let bytes = body.encode();
    assert_eq!((bytes[8], &bytes[9..41], &bytes[41..]), (0x04, &[0xcd; 32][..], &sig[..]));
}

#[test]
fn the_body_size_limit_is_inclusive() {
    let fixed = EventBody {
        kind: EventKind::ValueSet {
            service: "s".into(),
            key: "k".into(),
            value_json: String::new(),
            schema_hash: None,
        },
        ..plain_body()
    }
    .encode()
    .len();
    // The value's length varint grows from 1 to 3 bytes.
    let value_len = limits::EVENT_BODY_BYTES_MAX - (fixed - 1) - 3;
    let body = |len: usize| EventBody {
        kind: EventKind::ValueSet {
            service: "s".into(),
            key: "k".into(),
            value_json: "7".repeat(len),
            schema_hash: None,
        },
        ..plain_body()
    };
    let at_limit = body(value_len).encode();
    assert_eq!(at_limit.len(), limits::EVENT_BODY_BYTES_MAX);
    assert!(EventBody::decode(&at_limit).is_ok());
    let over = body(value_len + 1).encode();
    assert!(matches!(EventBody::decode(&over), Err(DecodeError::TooLarge { .. })));
}

#[test]
fn key_id_is_the_first_8_bytes_of_sha256() {
    let pk = SigningKey::from_seed(&KEY_SEEDS[0]).verifying_key().to_bytes();
    assert_eq!(key_id_of(&pk).0[..], sha256(&[&pk])[..8]);
}

// ---------------------------------------------------------------------------------------------
// Verification rules stated in docs/format.md §10 and the limits of its appendix.

/// Event 1 is `store_created` at index 0 of a 1-event changeset in epoch 0 (§10.2 rule 2).
#[test]
fn event_1_must_be_alone_in_epoch_0() {
    let log = build_vector_log();
    let key = &log.keys[0];
    let genesis = genesis_hash(&log.store_id);
    let variants: [fn(&mut EventBody); 4] = [
        |b| b.changeset_index = 1,
        |b| b.changeset_len = 2,
        |b| b.epoch = 1,
        |b| b.kind = EventKind::ServiceRegistered { service: "billing".into() },
    ];
    for (i, change) in variants.iter().enumerate() {
        let mut body = log.bodies[0].clone();
        change(&mut body);
        let mut v = ChainVerifier::new(log.store_id, Some(key.verifying_key()));
        let result = v.push(&seal(1, &genesis, &body, key));
        assert!(matches!(result, Err(VerifyError::Structure { seq: 1, .. })), "variant {i}: {result:?}");
    }
}

#[test]
fn documented_limits_match_limits_rs() {
    let doc = Doc::load();
    let appendix = doc.text.split("## Appendix: limits").nth(1).expect("the appendix");
    let expected = [
        ("EVENT_BODY_BYTES_MAX", limits::EVENT_BODY_BYTES_MAX),
        ("EVENTS_PER_CHANGESET_MAX", limits::EVENTS_PER_CHANGESET_MAX),
        ("VALUE_JSON_BYTES_MAX", limits::VALUE_JSON_BYTES_MAX),
        ("VALUE_JSON_DEPTH_MAX", limits::VALUE_JSON_DEPTH_MAX),
        ("SERVICE_NAME_BYTES_MAX", limits::SERVICE_NAME_BYTES_MAX),
        ("KEY_NAME_BYTES_MAX", limits::KEY_NAME_BYTES_MAX),
        ("ACTOR_BYTES_MAX", limits::ACTOR_BYTES_MAX),
        ("REASON_BYTES_MAX", limits::REASON_BYTES_MAX),
        ("REQUEST_ID_BYTES_MAX", limits::REQUEST_ID_BYTES_MAX),
        ("ROLLOUT_INSTANCES_MAX", limits::ROLLOUT_INSTANCES_MAX),
        ("ROLLOUT_EVIDENCE_MAX", limits::ROLLOUT_EVIDENCE_MAX),
    ];
    for (name, value) in expected {
        let row = appendix
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}`")))
            .unwrap_or_else(|| panic!("the appendix has no row for {name}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells.get(2).copied(), Some(value.to_string().as_str()), "{name}");
    }
}

/// The export module writes and reads exactly the documented example (§11, §12.2).
#[test]
fn export_module_agrees_with_the_documented_example() {
    use confstore_core::export::{event_line, header_line, parse_event, parse_header};
    let doc = Doc::load();
    let block = doc.block("jsonl");
    let documented: Vec<&str> = block.lines().collect();
    let log = build_vector_log();
    let mut v = ChainVerifier::new(log.store_id, Some(log.keys[0].verifying_key()));
    log.events.iter().try_for_each(|ev| v.push(ev)).expect("verifies");
    let head = v.finish().expect("verifies");
    let as_json = |s: &str| serde_json::from_str::<Value>(s).expect("JSON");
    assert_eq!(as_json(&header_line(&log.store_id, &head.keys, None)), as_json(documented[0]));
    assert_eq!(parse_header(documented[0]), Ok(log.store_id));
    for (i, (ev, body)) in log.events.iter().zip(&log.bodies).enumerate() {
        let line = documented[i + 1];
        assert_eq!(as_json(&event_line(ev, Some(body))), as_json(line), "event {}", ev.seq);
        assert_eq!(parse_event(i as u64 + 2, line).as_ref(), Ok(ev), "event {}", ev.seq);
    }
}

// ---------------------------------------------------------------------------------------------
// §19: the Merkle tree and checkpoints. An independent implementation of RFC 6962 §2.1 (MTH,
// PATH, PROOF, SUBPROOF as the RFC writes them, recursive, over leaf hashes) computes the
// documented vectors from the documented events; the code (confstore_core::tlog, the stored
// hashes of the log) must give the same.

fn rfc_leaf(event_hash: &[u8; 32]) -> [u8; 32] {
    sha256(&[&[0x00], event_hash])
}

fn rfc_node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    sha256(&[&[0x01], l, r])
}

/// The largest power of two smaller than `n` (n > 1).
fn rfc_k(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn rfc_mth(d: &[[u8; 32]]) -> [u8; 32] {
    match d.len() {
        0 => sha256(&[]),
        1 => d[0],
        n => rfc_node(&rfc_mth(&d[..rfc_k(n)]), &rfc_mth(&d[rfc_k(n)..])),
    }
}

fn rfc_path(m: usize, d: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let n = d.len();
    if n == 1 {
        return Vec::new();
    }
    let k = rfc_k(n);
    let (mut p, other) =
        if m < k { (rfc_path(m, &d[..k]), rfc_mth(&d[k..])) } else { (rfc_path(m - k, &d[k..]), rfc_mth(&d[..k])) };
    p.push(other);
    p
}

fn rfc_subproof(m: usize, d: &[[u8; 32]], b: bool) -> Vec<[u8; 32]> {
    let n = d.len();
    if m == n {
        return if b { Vec::new() } else { vec![rfc_mth(d)] };
    }
    let k = rfc_k(n);
    let (mut p, other) = if m <= k {
        (rfc_subproof(m, &d[..k], b), rfc_mth(&d[k..]))
    } else {
        (rfc_subproof(m - k, &d[k..], false), rfc_mth(&d[..k]))
    };
    p.push(other);
    p
}

/// Comma-separated hex; `-` for an empty proof.
fn hex_list(hashes: &[[u8; 32]]) -> String {
    if hashes.is_empty() {
        return "-".into();
    }
    hashes.iter().map(hex::encode).collect::<Vec<_>>().join(",")
}

/// Sizes whose roots are documented, and the proofs (inclusion: seq in size; consistency:
/// from, to).
const TREE_ROOTS: [usize; 6] = [1, 2, 3, 7, 8, 16];
const TREE_INCLUSIONS: [(usize, usize); 4] = [(1, 1), (5, 16), (16, 16), (3, 7)];
const TREE_CONSISTENCIES: [(usize, usize); 3] = [(3, 7), (7, 16), (8, 16)];

#[test]
fn documented_tree_vectors_match_rfc6962_and_the_code() {
    use confstore_core::tlog;
    let doc = Doc::load();
    let events = doc.vectors().events();
    let leaves: Vec<[u8; 32]> = events.iter().map(|e| rfc_leaf(&e.hash.0)).collect();
    let mut expected = Vec::new();
    expected.push(format!("tree.leaf.1: {}", hex::encode(leaves[0])));
    for n in TREE_ROOTS {
        expected.push(format!("tree.root.{n}: {}", hex::encode(rfc_mth(&leaves[..n]))));
    }
    for (seq, size) in TREE_INCLUSIONS {
        expected.push(format!("tree.inclusion.{seq}.{size}: {}", hex_list(&rfc_path(seq - 1, &leaves[..size]))));
    }
    for (from, to) in TREE_CONSISTENCIES {
        expected.push(format!("tree.consistency.{from}.{to}: {}", hex_list(&rfc_subproof(from, &leaves[..to], true))));
    }
    let store_id = StoreId::from_hex(STORE_ID_HEX).expect("store id");
    let origin = tlog::origin(&store_id);
    let key2 = SigningKey::from_seed(&KEY_SEEDS[1]);
    expected.push(format!("checkpoint.origin: {origin}"));
    expected.push(format!("checkpoint.key_id: {:08x}", tlog::note_key_id(&origin, &key2.verifying_key())));
    expected.push(format!("checkpoint.verifier_key: {}", tlog::note_verifier_key(&origin, &key2.verifying_key())));
    let expected = expected.join("\n") + "\n";
    let documented = doc.block("tree-vectors");
    assert_eq!(documented, expected, "docs/format.md ```tree-vectors differs; expected:\n{expected}");

    // The code gives the same: roots, and proofs from the stored hashes that verify.
    let hashes: Vec<Hash32> = events.iter().map(|e| e.hash).collect();
    let mut builder = tlog::RootBuilder::default();
    let mut stored = Vec::new();
    for h in &hashes {
        stored.extend(builder.push(h).into_iter().map(tlog::TreeHash));
    }
    assert_eq!(tlog::leaf_hash(&hashes[0]).0, leaves[0]);
    for n in TREE_ROOTS {
        assert_eq!(tlog::root_of(&hashes[..n]), rfc_mth(&leaves[..n]), "root {n}");
    }
    struct Mem(Vec<tlog::TreeHash>);
    impl tlog::HashReader for Mem {
        fn read_hashes(&self, idx: &[u64]) -> Result<Vec<tlog::TreeHash>, tlog::TlogError> {
            idx.iter()
                .map(|&i| {
                    usize::try_from(i)
                        .ok()
                        .and_then(|i| self.0.get(i).copied())
                        .ok_or(tlog::TlogError::IndexesNotInTree)
                })
                .collect()
        }
    }
    let mem = Mem(stored);
    for (seq, size) in TREE_INCLUSIONS {
        let p: Vec<[u8; 32]> =
            tlog::prove_inclusion(size as u64, seq as u64 - 1, &mem).expect("prove").iter().map(|h| h.0).collect();
        assert_eq!(p, rfc_path(seq - 1, &leaves[..size]), "inclusion {seq} in {size}");
    }
    for (from, to) in TREE_CONSISTENCIES {
        let p: Vec<[u8; 32]> =
            tlog::prove_consistency(to as u64, from as u64, &mem).expect("prove").iter().map(|h| h.0).collect();
        assert_eq!(p, rfc_subproof(from, &leaves[..to], true), "consistency {from} -> {to}");
    }

    // The documented checkpoint note: the tree of 16 events signed by key 2, byte for byte.
    let cp = tlog::Checkpoint { origin: origin.clone(), size: 16, root: rfc_mth(&leaves) };
    let note = cp.sign(&key2);
    assert_eq!(doc.block("checkpoint-note"), note, "docs/format.md ```checkpoint-note differs; expected:\n{note}");
    assert_eq!(tlog::Checkpoint::open(note.as_bytes(), &origin, &[key2.verifying_key()]), Ok(cp));
}

/// §11's header with a checkpoint: the documented line is the §12.2 header carrying the
/// checkpoint note of §19.3, and what a verifier checks of it (its signature by a key of the
/// chain, its size against the exported events, its root against theirs) refuses every edit.
#[test]
fn an_export_header_with_the_documented_checkpoint_is_checked() {
    use confstore_core::export::{
        ExportCheckpointError, ExportError, HeaderCheckpoint, check_checkpoint, header_line, parse_header_full,
    };
    use confstore_core::tlog;
    let doc = Doc::load();
    let log = build_vector_log();
    let mut v = ChainVerifier::new(log.store_id, Some(log.keys[0].verifying_key()));
    log.events.iter().try_for_each(|ev| v.push(ev)).expect("verifies");
    let head = v.finish().expect("verifies");
    let chain: Vec<_> = head.keys.entries().iter().map(|e| e.key).collect();
    let hashes: Vec<_> = log.events.iter().map(|ev| ev.hash).collect();
    let note = doc.block("checkpoint-note");
    let as_json = |s: &str| serde_json::from_str::<Value>(s).expect("JSON");

    let line = header_line(&log.store_id, &head.keys, Some(&note));
    let documented = doc.block("export-checkpoint-header");
    assert_eq!(
        as_json(&line),
        as_json(documented.trim_end()),
        "docs/format.md ```export-checkpoint-header; expected:\n{line}"
    );
    let header = parse_header_full(&line).expect("header");
    assert_eq!(header.store_id, log.store_id);
    assert_eq!(header.checkpoint, Some(HeaderCheckpoint { note: note.clone(), size: 16 }));
    let root = tlog::root_of(&hashes);
    let cp = check_checkpoint(&note, &log.store_id, &chain, 16, Some(root)).expect("the documented checkpoint");
    assert_eq!((cp.size, cp.root), (16, root));
    // Signed by key 2: the first key alone does not vouch for it.
    assert!(matches!(
        check_checkpoint(&note, &log.store_id, &chain[..1], 16, Some(root)),
        Err(ExportCheckpointError::Note(tlog::CheckpointError::Unsigned { .. }))
    ));
    // An export that lost its last event.
    assert_eq!(
        check_checkpoint(&note, &log.store_id, &chain, 15, Some(tlog::root_of(&hashes[..15]))),
        Err(ExportCheckpointError::Truncated { size: 16, events: 15 })
    );
    // Other events under the signed size.
    let mut other = hashes.clone();
    other[4].0[0] ^= 1;
    assert!(matches!(
        check_checkpoint(&note, &log.store_id, &chain, 16, Some(tlog::root_of(&other))),
        Err(ExportCheckpointError::Mismatch { size: 16, .. })
    ));
    // An edited note: the size or root changed after signing, the signature changed.
    let edits =
        [note.replacen("\n16\n", "\n15\n", 1), note.replacen("3TfR", "3TfS", 1), note.replacen("vRDm", "vRDn", 1)];
    for edited in &edits {
        assert_ne!(edited, &note);
        let at = HeaderCheckpoint::parse(edited).map(|c| c.size).unwrap_or(16);
        let root = tlog::root_of(&hashes[..usize::try_from(at).expect("size")]);
        assert!(check_checkpoint(edited, &log.store_id, &chain, 16, Some(root)).is_err(), "{edited}");
    }
    // Another store's checkpoint, a member that is no note.
    let other_store = StoreId([9; 16]);
    assert!(matches!(
        check_checkpoint(&note, &other_store, &chain, 16, Some(root)),
        Err(ExportCheckpointError::Note(tlog::CheckpointError::WrongOrigin { .. }))
    ));
    for bad in [json!(5), json!("no note"), json!("a\n1\n\n"), json!(note.replacen("\n16\n", "\nsixteen\n", 1))] {
        let mut edited = as_json(&line);
        edited["checkpoint"] = bad;
        assert!(matches!(parse_header_full(&edited.to_string()), Err(ExportError::Header(_))), "{edited}");
    }
    // A header without the member (every export before it) has none.
    let plain = header_line(&log.store_id, &head.keys, None);
    assert_eq!(parse_header_full(&plain).expect("header").checkpoint, None);
}

/// §19.4: the checkpoint of §19.3 as an independent witness (aics-witness, ADR 0028) cosigned
/// it; its cosignature verifies here with the witness's verifier key, the store's signature
/// is untouched by the extra line, and the line does not pass for another witness or
/// another checkpoint.
#[test]
fn the_documented_cosignature_of_an_independent_witness_verifies() {
    use confstore_core::tlog;
    let doc = Doc::load();
    let note = doc.block("cosigned-checkpoint-note");
    let witness = tlog::WitnessKey::parse("witness.test/w1+0483b5b8+BCalxNTbwNQMFU5BM9hOYRtqdWEPfD7vdtzpDn/PQ/ps")
        .expect("the documented witness key");
    assert_eq!(witness.verifier_key(), "witness.test/w1+0483b5b8+BCalxNTbwNQMFU5BM9hOYRtqdWEPfD7vdtzpDn/PQ/ps");
    assert_eq!(
        tlog::cosigned_by(note.as_bytes(), std::slice::from_ref(&witness)),
        Ok(vec![("witness.test/w1".to_owned(), 1_796_610_981)])
    );
    let origin = tlog::origin(&StoreId::from_hex(STORE_ID_HEX).expect("store id"));
    let key2 = SigningKey::from_seed(&KEY_SEEDS[1]);
    let cp = tlog::Checkpoint::open(note.as_bytes(), &origin, &[key2.verifying_key()]).expect("the store's signature");
    assert_eq!(cp.size, 16);
    // The same line on the checkpoint of 15 events (signed by the store) does not verify.
    let line = note.lines().last().expect("the cosignature line").to_owned() + "\n";
    let other = tlog::Checkpoint { size: 15, ..cp }.sign(&key2) + &line;
    assert!(tlog::cosigned_by(other.as_bytes(), std::slice::from_ref(&witness)).is_err());
    // Another witness's key: the line is not counted.
    let stranger = tlog::WitnessKey { name: "witness.test/w1".into(), key: key2.verifying_key() };
    assert_eq!(tlog::cosigned_by(note.as_bytes(), &[stranger]), Ok(vec![]));
}

// ---------------------------------------------------------------------------------------------
// The rollout kinds (§7.3, kinds 14-16): documented bodies, decoded by the spec decoder.

/// The documented rollout bodies: a start for two listed canaries with a set, an unset and
/// a sealed secret; an automatic abort with its evidence; a start for 12.5 %; a promotion.
fn rollout_bodies() -> Vec<(&'static str, EventBody)> {
    let body = |actor: &str, reason: &str, request_id: &str, kind| EventBody {
        epoch: 7,
        time_ms: T0_MS + 14_000,
        changeset_index: 0,
        changeset_len: 1,
        actor: actor.into(),
        reason: reason.into(),
        request_id: request_id.into(),
        kind,
    };
    let started = EventKind::RolloutStarted {
        service: "billing".into(),
        cohort: Cohort::Instances(vec!["billing-7f9c".into(), "billing-a01e".into()]),
        bake_ms: 600_000,
        auto: true,
        base_epoch: 7,
        changes: vec![
            StagedChange::Set { key: "timeout_ms".into(), value_json: "800".into() },
            StagedChange::Unset { key: "endpoints".into() },
            StagedChange::Secret {
                key: "api_key".into(),
                key_version: 1,
                nonce: [0x11; 12],
                ciphertext: vec![0xc0; 20],
            },
        ],
        schema_hash: None,
    };
    let aborted = EventKind::RolloutAborted {
        service: "billing".into(),
        rollout_seq: 17,
        automatic: true,
        cohort: vec![
            CohortMember { instance: "billing-7f9c".into(), applied: true, healthy: Some(false), online: true },
            CohortMember { instance: "billing-a01e".into(), applied: false, healthy: None, online: false },
        ],
    };
    let percent = EventKind::RolloutStarted {
        service: "billing".into(),
        cohort: Cohort::Percent { basis_points: 1_250 },
        bake_ms: 60_000,
        auto: false,
        base_epoch: 7,
        changes: vec![StagedChange::Set { key: "timeout_ms".into(), value_json: "850".into() }],
        schema_hash: Some([0x36; 32]),
    };
    let promoted =
        EventKind::RolloutPromoted { service: "billing".into(), rollout_seq: 19, automatic: false, cohort: vec![] };
    let why = "automatic abort: billing-7f9c reported unhealthy on the staged version";
    vec![
        ("rollout.started", body("alice", "canary", "req-0015", started)),
        ("rollout.aborted", body("confstore-rollout", why, "rollout-17", aborted)),
        ("rollout.started_percent", body("alice", "", "req-0017", percent)),
        ("rollout.promoted", EventBody { changeset_len: 2, ..body("alice", "fine", "req-0018", promoted) }),
    ]
}

#[test]
#[allow(clippy::print_stdout, reason = "printing the generated lines is the point of the regeneration mode")]
fn documented_rollout_bodies_match_the_code_and_the_spec_decoder() {
    let doc = Doc::load();
    let block = doc
        .blocks()
        .into_iter()
        .find(|(info, _)| info == "rollout-vectors")
        .map(|(_, content)| content)
        .expect("docs/format.md has a ```rollout-vectors block");
    let documented: std::collections::BTreeMap<&str, &str> =
        block.lines().filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.trim(), v.trim())).collect();
    let bodies = rollout_bodies();
    if std::env::var_os("CONFSTORE_REGENERATE_VECTORS").is_some_and(|v| v == "1") {
        for (name, body) in &bodies {
            println!("{name}: {}", hex::encode(body.encode()));
        }
    }
    assert_eq!(documented.len(), bodies.len(), "one line per documented body");
    for (name, body) in bodies {
        let bytes = body.encode();
        assert_eq!(documented.get(name).copied(), Some(hex::encode(&bytes).as_str()), "{name}");
        assert_eq!(EventBody::decode(&bytes).as_ref(), Ok(&body), "{name}");
        let decoded = spec_decode(&bytes).unwrap_or_else(|e| panic!("{name}: the spec decoder refuses it: {e}"));
        assert_eq!(decoded.json, body.to_json(), "{name}: the spec decoder and the code disagree");
    }
}
