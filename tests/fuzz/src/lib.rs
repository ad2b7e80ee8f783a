//! Fuzz targets: each `pub fn <target>(data: &[u8])` feeds untrusted bytes to one decoder or
//! parser of confstore and must return, never panic, whatever the bytes. Fixtures (keys, the
//! store id, the LKG key) are fixed, built from constant seeds. `fuzz/` runs them under
//! libFuzzer (cargo-fuzz); `tests/corpus.rs` replays the committed corpora and past crash
//! inputs on stable Rust (docs/testing.md, "Fuzzing"; docs/adr/0021-fuzzing.md).

use base64::Engine;
use confstore_core::export;
use confstore_core::jws;
use confstore_core::secret::{self, Envelope};
use confstore_core::stream::{self, SnapshotVersion};
use confstore_core::{ChainVerifier, EventBody, Hash32, KeyId, Sealed, SigningKey, StoreId, VerifyingKey};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// A fuzz target: takes any bytes, never panics.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("event_body", event_body),
    ("export_lines", export_lines),
    ("stream_message", stream_message),
    ("lkg_server", lkg_server),
    ("lkg_client", lkg_client),
    ("secret_open", secret_open),
    ("rest_json", rest_json),
];

/// The documented store id (docs/format.md, the test vectors).
pub const STORE_ID_HEX: &str = "00112233445566778899aabbccddeeff";
/// The documented first public key (docs/format.md): the anchor of the export target.
pub const ANCHOR_HEX: &str = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
/// The service the stream and client-LKG targets judge messages for.
pub const SERVICE: &str = "api";

/// The store id of every target.
pub fn store_id() -> StoreId {
    StoreId::from_hex(STORE_ID_HEX).unwrap_or_default()
}

/// The fixed Ed25519 key that signs the stream and client-LKG fixtures.
pub fn signing_key() -> SigningKey {
    SigningKey::from_seed(&[7; 32])
}

/// The fixed HMAC key of the server's LKG file.
pub const LKG_KEY: [u8; 32] = [9; 32];
/// The fixed AES-256 master key of the secret target.
pub const MASTER_KEY: [u8; 32] = [5; 32];

/// (1) An event body as stored: postcard decode, JSON rendering, then the body sealed as
/// event 1 (or the bytes as they are, with a made-up hash and signature) through the chain
/// verifier.
pub fn event_body(data: &[u8]) {
    let key = signing_key();
    let mut verifier = ChainVerifier::new(store_id(), Some(key.verifying_key()));
    match EventBody::decode(data) {
        Ok(body) => {
            let _ = body.to_json();
            let _ = (body.changes_config(), body.service(), body.kind.name(), body.kind.variant());
            let sealed = Sealed::new(1, &confstore_core::genesis_hash(&store_id()), body);
            let sig = key.sign_hash(&sealed.verified().hash().clone());
            let ev = sealed.into_stored(key.verifying_key().key_id(), sig);
            if verifier.push(&ev).is_ok() {
                let _ = verifier.take_ready();
                let _ = verifier.finish();
            }
        }
        Err(_) => {
            let ev = confstore_core::StoredEvent {
                seq: 1,
                body: data.to_vec(),
                prev_hash: confstore_core::genesis_hash(&store_id()),
                hash: Hash32::default(),
                key_id: KeyId::default(),
                sig: [0; 64],
            };
            let _ = verifier.push(&ev);
        }
    }
}

/// (2) An export file: the header line, then event lines, each parsed and pushed through a
/// chain verifier anchored at the documented key (what `confstore verify` does).
pub fn export_lines(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.lines();
    let Some(header) = lines.next() else { return };
    let store = export::parse_header(header).unwrap_or_else(|_| store_id());
    let anchor = hex_key(ANCHOR_HEX);
    let mut verifier = ChainVerifier::new(store, anchor);
    for (i, line) in lines.enumerate() {
        let Ok(ev) = export::parse_event(i as u64 + 2, line) else { return };
        if verifier.push(&ev).is_err() {
            return;
        }
        let _ = verifier.take_ready();
    }
    let _ = verifier.finish();
}

fn hex_key(hex_text: &str) -> Option<VerifyingKey> {
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex_text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    VerifyingKey::from_bytes(&bytes).ok()
}

/// The version a client holds before the message under test: epoch 5 of generation 1.
fn held_version() -> SnapshotVersion {
    SnapshotVersion {
        store_id: STORE_ID_HEX.to_owned(),
        service: SERVICE.to_owned(),
        generation: 1,
        epoch: 5,
        changed_epoch: 5,
        prev_epoch: 3,
        changed_seq: 9,
    }
}

/// The configuration a client holds before the message under test.
pub fn held_document() -> Value {
    json!({"store_id": STORE_ID_HEX, "service": SERVICE, "generation": 1, "epoch": 5,
           "changed_epoch": 5, "prev_epoch": 3, "changed_seq": 9,
           "config": {"rate": 100, "burst": 10}, "sources": {"rate": "service", "burst": "service"}})
}

/// One message of `system/config/<service>` as a client takes it: verified against the key,
/// judged against the held version, and (a delta) applied to the held configuration.
fn accept(message: &Value, keys: &[VerifyingKey]) {
    let Ok((kind, doc, version)) = stream::verify_update(message, keys, Some(STORE_ID_HEX), SERVICE) else {
        return;
    };
    let held = held_version();
    let _ = stream::judge(None, &version);
    let _ = stream::judge(Some(&held), &version);
    if kind == stream::UpdateKind::Delta {
        let _ = stream::delta_parts(&doc);
        if let Ok(stream::Verdict::Apply) = stream::judge_delta(Some(&held), &version) {
            let _ = stream::apply_delta(&held_document(), &doc);
        }
    }
    if kind == stream::UpdateKind::Deltas {
        // Each version in turn, as the client takes them.
        let (mut held, mut document) = (held, held_document());
        for (one, next) in stream::deltas_of(&doc).expect("verify_update checked it") {
            if let Ok(stream::Verdict::Apply) = stream::judge_delta(Some(&held), &next) {
                let Ok(applied) = stream::apply_delta(&document, one) else { return };
                (held, document) = (next, applied);
            }
        }
    }
}

/// (3) A stream message as the client receives it: JSON, JWS verification and `judge`. The
/// bytes are also taken as the signed document itself, signed here as a snapshot, a delta
/// and several deltas, so the checks after the signature see fuzzed documents too.
pub fn stream_message(data: &[u8]) {
    let key = signing_key();
    let keys = [key.verifying_key()];
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    accept(&value, &keys);
    for typ in [jws::TYP_SNAPSHOT, jws::TYP_DELTA, jws::TYP_DELTAS] {
        accept(&jws::sign(&value, typ, &key), &keys);
    }
}

/// (4a) The server's LKG file (HMAC-signed flattened JWS, `confstore_lkg::load` after the
/// read): verified as it is, and the bytes also signed here as the payload, so that payload
/// parsing sees fuzzed text.
pub fn lkg_server(data: &[u8]) {
    let _ = confstore_lkg::verify_jws(data, &LKG_KEY);
    if let Ok(content) = confstore_lkg::verify_jws(lkg_server_file(data).as_bytes(), &LKG_KEY) {
        let _ = content.to_jws(&LKG_KEY, confstore_core::state::canonical_json_text);
    }
}

/// A server LKG file whose payload is `payload`, signed with [`LKG_KEY`] as the server signs.
pub fn lkg_server_file(payload: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let protected = b64.encode(json!({"alg": "HS256", "typ": confstore_lkg::TYP}).to_string());
    let payload = b64.encode(payload);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&LKG_KEY).unwrap_or_else(|_| unreachable!("any key length"));
    mac.update(format!("{protected}.{payload}").as_bytes());
    let signature = b64.encode(mac.finalize().into_bytes());
    json!({"protected": protected, "payload": payload, "signature": signature}).to_string()
}

/// (4b) The client's LKG file: the steps of the client's private `lkg::load` after the read
/// (crates/confstore-client/src/lkg.rs), on the core functions it calls: the envelope's
/// fields, the snapshot verified and each delta verified, judged and applied in order. The
/// bytes are taken as the file, and also as the snapshot document, signed here.
pub fn lkg_client(data: &[u8]) {
    let key = signing_key();
    let keys = [key.verifying_key()];
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    client_lkg_load(value.clone(), &keys);
    let mut file = json!({"format": confstore_client_lkg_format(), "service": SERVICE, "store_id": STORE_ID_HEX,
                          "jws": jws::sign(&value, jws::TYP_SNAPSHOT, &key)});
    client_lkg_load(file.clone(), &keys);
    // The held document as the snapshot, the fuzzed one as its one delta.
    file["jws"] = jws::sign(&held_document(), jws::TYP_SNAPSHOT, &key);
    file["deltas"] = json!([jws::sign(&value, jws::TYP_DELTA, &key)]);
    client_lkg_load(file, &keys);
}

/// The client's LKG format (`confstore_client::LKG_FORMAT`; not a dependency here: the client
/// crate brings the HTTP and MQTT stacks).
pub fn confstore_client_lkg_format() -> &'static str {
    "confstore-client-lkg/1"
}

/// The client's `lkg::load` from the parsed file on (its limit: at most 4096 deltas).
fn client_lkg_load(mut envelope: Value, keys: &[VerifyingKey]) -> Option<Value> {
    let field = |envelope: &Value, k: &str| envelope.get(k).and_then(Value::as_str).map(str::to_owned);
    if field(&envelope, "format")? != confstore_client_lkg_format() {
        return None;
    }
    if field(&envelope, "service")? != SERVICE {
        return None;
    }
    let file_store = field(&envelope, "store_id")?;
    let jws_doc = envelope.get_mut("jws").map(Value::take)?;
    let (mut document, mut version) = stream::verify_snapshot(&jws_doc, keys, &file_store, SERVICE).ok()?;
    if version.store_id != file_store {
        return None;
    }
    let deltas = match envelope.get_mut("deltas").map(Value::take) {
        None => Vec::new(),
        Some(Value::Array(d)) if d.len() <= 4096 => d,
        Some(_) => return None,
    };
    for d in &deltas {
        let (kind, doc, next) = stream::verify_update(d, keys, Some(&file_store), SERVICE).ok()?;
        if kind != stream::UpdateKind::Delta {
            return None;
        }
        match stream::judge_delta(Some(&version), &next).ok()? {
            stream::Verdict::Apply => {}
            stream::Verdict::Gap { .. } => return None,
        }
        document = stream::apply_delta(&document, &doc).ok()?;
        version = next;
    }
    Some(document)
}

/// (5) A secret: the marker value as stored (`envelope_of`) opened with the master key, and
/// the bytes taken as an envelope (key version, nonce, ciphertext) opened too.
pub fn secret_open(data: &[u8]) {
    let store = store_id();
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(envelope) = secret::envelope_of(text)
    {
        let _ = secret::open(&MASTER_KEY, &store, SERVICE, "password", &envelope);
        let _ = secret::marker(&envelope);
    }
    if data.len() >= 16 {
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&data[4..16]);
        let envelope = Envelope {
            key_version: u32::from_le_bytes([data[0], data[1], data[2], data[3]]),
            nonce,
            ciphertext: data[16..].to_vec(),
        };
        let _ = secret::open(&MASTER_KEY, &store, SERVICE, "password", &envelope);
    }
}

/// (6) A REST JSON body: the strict parser every edge uses, then what the handlers do with
/// the value: canonical JSON (the stored form of a value) and the event body JSON shape.
pub fn rest_json(data: &[u8]) {
    let Ok(value) = confstore_core::json::parse_exact_slice(data) else { return };
    if let Ok(text) = confstore_core::state::canonical_json(&value) {
        let _ = confstore_core::json::parse_exact(&text);
        let _ = secret::envelope_of(&text);
    }
    let _ = serde_json::from_value::<EventBody>(value);
}
