//! Test helpers shared by the unit tests and the integration tests (which include this
//! file by path): snapshots signed like the server signs them, and a fake REST server.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use confstore_core::{SigningKey, VerifyingKey, jws};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The store id of test snapshots.
pub const STORE: &str = "00000000000000000000000000000000";

/// A signing key and the snapshots it signs.
pub struct Signer {
    key: SigningKey,
    store: String,
}

impl Signer {
    /// A key from a one-byte seed, signing for [`STORE`].
    pub fn new(seed: u8) -> Self {
        Self { key: SigningKey::from_seed(&[seed; 32]), store: STORE.to_owned() }
    }

    /// The same key, signing for another store.
    pub fn for_store(mut self, store: &str) -> Self {
        self.store = store.to_owned();
        self
    }

    /// A signed checkpoint note of this signer's store (docs/format.md §19.2).
    pub fn checkpoint(&self, size: u64, root: [u8; 32]) -> String {
        let store = confstore_core::StoreId::from_hex(&self.store).unwrap();
        confstore_core::tlog::Checkpoint { origin: confstore_core::tlog::origin(&store), size, root }.sign(&self.key)
    }

    /// The public key.
    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public key as `CONFIG_SIGNATURE_PUBLIC_KEY` holds it.
    pub fn public_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.public().to_bytes())
    }

    /// The snapshot document the server would build (see confstore-snapshots `to_json`):
    /// version `changed` following `prev`, every value from the service.
    pub fn document(&self, service: &str, generation: u64, changed: u64, prev: u64, config: Value) -> Value {
        let sources: serde_json::Map<String, Value> =
            config.as_object().into_iter().flatten().map(|(k, _)| (k.clone(), json!("service"))).collect();
        json!({
            "service": service,
            "store_id": self.store,
            "generation": generation,
            "epoch": changed,
            "changed_epoch": changed,
            "changed_seq": changed * 2,
            "prev_epoch": prev,
            "schema_hash": "75afad7a9b3a4b90388e799da5919b8cf1f40d9f8c049dbfa34091b5496d37a6",
            "config": config,
            "sources": sources,
        })
    }

    /// The signed snapshot JWS of [`Self::document`].
    pub fn snapshot(&self, service: &str, generation: u64, changed: u64, prev: u64, config: Value) -> Value {
        self.sign(&self.document(service, generation, changed, prev, config))
    }

    /// Signs any document as a snapshot.
    pub fn sign(&self, doc: &Value) -> Value {
        jws::sign(doc, jws::TYP_SNAPSHOT, &self.key)
    }

    /// A staged-rollout message (docs/format.md §21.2): rollout `rollout` of `service` for
    /// `instances`, staged on version `base` (generation 1) with `config`.
    pub fn staged(&self, service: &str, rollout: u64, instances: &[&str], base: u64, config: Value) -> Value {
        let snapshot = self.document(service, 1, base, base.saturating_sub(1), config);
        let doc = json!({
            "store_id": self.store, "service": service, "generation": 1, "rollout": rollout, "state": "active",
            "cohort": {"instances": instances}, "bake_ms": 60_000, "started_ms": 1, "auto": true,
            "base_epoch": base, "snapshot": snapshot,
        });
        jws::sign(&doc, jws::TYP_STAGED, &self.key)
    }

    /// The message that ends rollout `rollout`: `aborted`, or `promoted` into `promoted_epoch`.
    pub fn staged_end(&self, service: &str, rollout: u64, outcome: &str, promoted_epoch: u64) -> Value {
        let doc = json!({
            "store_id": self.store, "service": service, "generation": 1, "rollout": rollout, "state": outcome,
            "ended_ms": 2, "promoted_epoch": promoted_epoch,
        });
        jws::sign(&doc, jws::TYP_STAGED, &self.key)
    }

    /// Several deltas of `service` signed once (docs/adr/0035): each (changed, prev, set,
    /// removed) as [`Self::delta`]'s document.
    pub fn deltas(&self, service: &str, versions: &[(u64, u64, Value, &[&str])]) -> Value {
        let docs: Vec<Value> = versions
            .iter()
            .map(|(changed, prev, set, removed)| {
                let mut doc = self.document(service, 1, *changed, *prev, set.clone());
                doc["removed"] = json!(removed);
                doc
            })
            .collect();
        jws::sign(&json!({ "deltas": docs }), jws::TYP_DELTAS, &self.key)
    }

    /// Signs any document as a delta.
    pub fn sign_delta(&self, doc: &Value) -> Value {
        jws::sign(doc, jws::TYP_DELTA, &self.key)
    }

    /// The delta the server would send for version `changed` following `prev`: `set` keys
    /// from the service, `removed` keys gone.
    pub fn delta(&self, service: &str, changed: u64, prev: u64, set: Value, removed: &[&str]) -> Value {
        let mut doc = self.document(service, 1, changed, prev, set);
        doc["removed"] = json!(removed);
        jws::sign(&doc, jws::TYP_DELTA, &self.key)
    }
}

/// The version chain `1 ← 2 ← … ← n` of `service`, each with `{"v": epoch}`.
pub fn chain(signer: &Signer, service: &str, n: u64) -> Vec<Value> {
    (1..=n).map(|e| signer.snapshot(service, 1, e, e - 1, json!({ "v": e }))).collect()
}

#[derive(Default)]
struct RestState {
    latest: Option<Value>,
    by_epoch: BTreeMap<u64, Value>,
    status: Option<u16>,
    token: Option<String>,
    requests: Vec<String>,
    /// Other targets (path and query, exactly) and the body each answers with 200.
    routes: BTreeMap<String, String>,
}

/// A tiny HTTP/1.1 server answering `GET /api/v1/services/<service>/snapshot[?epoch=N]`
/// with canned JWS (one request per connection).
pub struct FakeRest {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    state: Arc<Mutex<RestState>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeRest {
    /// Listens on a free port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(RestState::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let (status, body) = respond(&state, &String::from_utf8_lossy(&head));
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/jose+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { url, state, task }
    }

    fn with<R>(&self, f: impl FnOnce(&mut RestState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Serves `jws` as the latest snapshot and as the one at its changed epoch.
    pub fn publish(&self, jws: &Value) {
        let epoch = changed_epoch(jws);
        self.with(|s| {
            s.latest = Some(jws.clone());
            s.by_epoch.insert(epoch, jws.clone());
        });
    }

    /// Serves `jws` at its changed epoch only (history).
    pub fn keep(&self, jws: &Value) {
        let epoch = changed_epoch(jws);
        self.with(|s| s.by_epoch.insert(epoch, jws.clone()));
    }

    /// Serves `jws` at `epoch`, whatever it is (a wrong answer).
    pub fn with_epoch(&self, epoch: u64, jws: &Value) {
        self.with(|s| s.by_epoch.insert(epoch, jws.clone()));
    }

    /// Answers every request with this status (`None`: serve normally).
    pub fn fail_with(&self, status: Option<u16>) {
        self.with(|s| s.status = status);
    }

    /// Requires `Authorization: Bearer <token>`.
    pub fn require_token(&self, token: &str) {
        self.with(|s| s.token = Some(token.to_owned()));
    }

    /// Answers `target` (path and query, exactly) with 200 and `body`.
    pub fn route(&self, target: &str, body: &str) {
        self.with(|s| s.routes.insert(target.to_owned(), body.to_owned()));
    }

    /// The request targets seen so far.
    pub fn requests(&self) -> Vec<String> {
        self.with(|s| s.requests.clone())
    }
}

impl Drop for FakeRest {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `changed_epoch` inside a snapshot JWS (read without verifying).
pub fn changed_epoch(jws: &Value) -> u64 {
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(jws["payload"].as_str().unwrap()).unwrap();
    serde_json::from_slice::<Value>(&payload).unwrap()["changed_epoch"].as_u64().unwrap()
}

fn respond(state: &Mutex<RestState>, head: &str) -> (u16, String) {
    let mut state = state.lock().unwrap();
    let target = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
    state.requests.push(target.clone());
    let error = |status: u16, code: &str| (status, json!({"error": code, "message": code}).to_string());
    if let Some(status) = state.status {
        return error(status, "unavailable");
    }
    if let Some(token) = &state.token {
        let wanted = format!("authorization: bearer {}", token.to_ascii_lowercase());
        if !head.lines().any(|l| l.to_ascii_lowercase() == wanted) {
            return error(401, "unauthorized");
        }
    }
    if let Some(body) = state.routes.get(&target) {
        return (200, body.clone());
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if !(path.starts_with("/api/v1/services/") && path.ends_with("/snapshot")) {
        return error(404, "not_found");
    }
    let found = match query.strip_prefix("epoch=") {
        Some(n) => n.parse::<u64>().ok().and_then(|n| state.by_epoch.get(&n)),
        None => state.latest.as_ref(),
    };
    match found {
        Some(jws) => (200, jws.to_string()),
        None => error(404, "not_found"),
    }
}
