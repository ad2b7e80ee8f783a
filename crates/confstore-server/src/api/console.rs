//! The views the web UI is built on (plain REST; any client may use them): who the token
//! is, a service's keys with where each value comes from and when it last changed, the
//! timeline of changesets newest first, "verify now", and the head-events stream (the head as server-sent
//! events, at `/api/v1/live`).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use confstore_core::auth::Role;
use confstore_core::state::GLOBAL_SCOPE;
use confstore_core::{EventBody, EventKind};
use confstore_log::LogError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::history::is_audit;
use super::{blocking, masked, time_text};
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery, LiveView, Principal, ReadView, Unscoped};

/// What a token may do, by the server's own rules: its role ([`Role::grants`]) and, for the
/// store-wide abilities, its scope (a token limited to a service is refused the store-wide
/// routes, [`crate::extract::Unscoped`]). The web UI offers exactly these; it keeps no role
/// table of its own.
#[derive(Debug, Serialize, ToSchema)]
pub struct Abilities {
    /// Read configuration, history, search.
    pub read: bool,
    /// Change configuration, roll back.
    pub write: bool,
    /// Reveal secrets.
    pub reveal: bool,
    /// Read the audit trail, export, verify (store-wide: false for a token limited to a
    /// service, whatever its role).
    pub audit: bool,
    /// Manage tokens (and everything above; store-wide: false for a token limited to a
    /// service).
    pub admin: bool,
}

impl Abilities {
    /// What a token of `role`, limited to `service` if any, may do.
    pub fn of(role: Role, service: Option<&str>) -> Self {
        let store_wide = service.is_none();
        Self {
            read: role.grants(Role::ConfigRead),
            write: role.grants(Role::ConfigWrite),
            reveal: role.grants(Role::SecretsReveal),
            audit: role.grants(Role::AuditRead) && store_wide,
            admin: role.grants(Role::Admin) && store_wide,
        }
    }
}

/// The token making the request.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// Public id.
    pub token_id: String,
    /// Name (the actor `token:<name>` in events).
    pub name: String,
    /// Role.
    pub role: String,
    /// The one service it is limited to, if any.
    pub service: Option<String>,
    /// What it may do (the web UI shows only these controls; the server checks every request
    /// anyway).
    pub can: Abilities,
}

/// `GET /api/v1/whoami`: the token's name, role, scope and what it may do (any valid token).
#[utoipa::path(get, path = "/api/v1/whoami", tag = "tokens",
    security(("bearer" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = crate::error::ErrorBody)))]
pub async fn whoami(State(app): State<App>, headers: HeaderMap) -> ApiResult<Json<WhoAmI>> {
    let who = crate::auth::principal_of(&app, &headers).await?;
    Ok(Json(WhoAmI {
        can: Abilities::of(who.role, who.service.as_deref()),
        token_id: who.token_id,
        name: who.name,
        role: who.role.to_string(),
        service: who.service,
    }))
}

/// Path: one service.
#[derive(Debug, Deserialize, IntoParams)]
pub struct KeysPath {
    /// Service name.
    pub service: String,
}

/// One key of a service as it resolves.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    /// Key.
    pub key: String,
    /// The value, any JSON; a secret's is the marker `{"$secret": true}` (`MaskedSecret`;
    /// reveal it with the reveal route).
    pub value: Value,
    /// Whether it is a secret.
    pub secret: bool,
    /// Where it comes from: `service`, `global` or `default` (the schema's).
    pub source: String,
    /// The schema's `type` (or `enum`), else the JSON type of the value.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The schema's description.
    pub description: Option<String>,
    /// The epoch it last changed in its source (absent for defaults, and in the read-only
    /// fallback).
    #[serde(rename = "epoch")]
    pub changed_epoch: Option<u64>,
}

/// A service's keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeysOut {
    /// Service.
    pub service: String,
    /// The store's epoch they were read at (send it as `If-Match` with a change).
    pub epoch: u64,
    /// The service's JSON Schema, if it has one.
    #[schema(value_type = Option<super::bodies::JsonSchemaDoc>)]
    pub schema: Option<Value>,
    /// Every key, sorted.
    pub keys: Vec<KeyView>,
}

/// `GET /api/v1/services/{service}/keys`: every key of the service as it resolves, with
/// its source, schema type and description, and the epoch it last changed.
#[utoipa::path(get, path = "/api/v1/services/{service}/keys", tag = "config", params(KeysPath),
    security(("bearer" = ["config.read"])),
    responses((status = 200, body = KeysOut), (status = 404, body = crate::error::ErrorBody)))]
pub async fn keys(State(app): State<App>, ApiPath(p): ApiPath<KeysPath>, view: ReadView) -> ApiResult<Response> {
    app.metrics.read();
    let unknown = || ApiError::not_found(format!("unknown service {:?}", p.service));
    let l = match &view {
        ReadView::Live(l) => l,
        ReadView::Fallback(fb) => {
            let (doc, _) = fb.mode().snapshots.get(&p.service).ok_or_else(unknown)?;
            return Ok(view.answer(Json(keys_of_snapshot(&p.service, doc))));
        }
    };
    // Everything from one read of the model, so values, sources and schema agree.
    // (The service's part of the state is taken under the read model's lock, its maps shared,
    // and rendered after it: the commit listener never waits for a render.)
    let (view, store_id, generation) =
        l.model.read(|m| (confstore_snapshots::service_view(&m.state, &p.service), m.store_id, m.generation));
    let snap = confstore_snapshots::project(&view, &store_id.to_hex(), generation, &p.service);
    let raw = |scope: &str| view.services.get(scope).cloned().unwrap_or_default();
    let schema = view.schemas.get(&p.service).and_then(|s| serde_json::from_str::<Value>(&s.json).ok());
    let (epoch, seq, raw) = (view.epoch, view.seq, (raw(&p.service), raw(GLOBAL_SCOPE)));
    let snap = snap.map_err(|_| unknown())?;
    let service = p.service.clone();
    let l = l.clone();
    let (own_epochs, global_epochs) = blocking(move || {
        let _one = l.search_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(l.readers.with(|r| {
            confstore_search::catch_up(r, seq)?;
            let epochs = |s: &str| confstore_search::key_epochs(r.connection(), s).map_err(LogError::search);
            Ok((epochs(&service)?, epochs(GLOBAL_SCOPE)?))
        })?)
    })
    .await?;
    let props = schema.as_ref().and_then(|s| s.get("properties")).and_then(Value::as_object);
    let keys = snap
        .values
        .iter()
        .map(|(key, resolved)| {
            let source = resolved.source.name();
            let (stored, epochs) = match source {
                "service" => (raw.0.get(key), Some(&own_epochs)),
                "global" => (raw.1.get(key), Some(&global_epochs)),
                _ => (None, None),
            };
            // The stored text says whether it is a secret (a default or an env value never is).
            let masked::Shown { value, secret } = match stored {
                Some(text) => masked::Shown::text(text),
                None => masked::Shown { value: resolved.value.clone(), secret: false },
            };
            let prop = props.and_then(|p| p.get(key));
            KeyView {
                key: key.clone(),
                value,
                secret,
                source: source.to_owned(),
                kind: schema_type(prop).or_else(|| (!secret).then(|| json_type(&resolved.value).to_owned())),
                description: prop.and_then(|p| p.get("description")).and_then(Value::as_str).map(str::to_owned),
                changed_epoch: epochs.and_then(|e| e.get(key).copied()),
            }
        })
        .collect();
    Ok(Json(KeysOut { service: p.service, epoch, schema, keys }).into_response())
}

/// The keys of a snapshot document from the LKG file (the read-only fallback): values and
/// sources only.
fn keys_of_snapshot(service: &str, doc: &Value) -> KeysOut {
    let config = doc.get("config").and_then(Value::as_object);
    let sources = doc.get("sources").and_then(Value::as_object);
    let keys = config
        .into_iter()
        .flatten()
        .map(|(key, value)| {
            let masked::Shown { value: shown, secret } = masked::Shown::value(value.clone());
            KeyView {
                key: key.clone(),
                value: shown,
                secret,
                source: sources.and_then(|s| s.get(key)).and_then(Value::as_str).unwrap_or("service").to_owned(),
                kind: (!secret).then(|| json_type(value).to_owned()),
                description: None,
                changed_epoch: None,
            }
        })
        .collect();
    KeysOut {
        service: service.to_owned(),
        epoch: doc.get("epoch").and_then(Value::as_u64).unwrap_or(0),
        schema: None,
        keys,
    }
}

fn schema_type(prop: Option<&Value>) -> Option<String> {
    let prop = prop?;
    if prop.get("enum").is_some() {
        return Some("enum".into());
    }
    match prop.get("type")? {
        Value::String(t) => Some(t.clone()),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("|")),
        _ => None,
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Query of the changeset timeline.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChangesetsQuery {
    /// Only changesets that touch this service.
    pub service: Option<String>,
    /// Only changesets before this epoch (paging: pass the previous page's `next_before`).
    pub before: Option<u64>,
    /// Most changesets (default 50, at most 200).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
}

/// Changesets, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangesetPage {
    /// `{epoch, time, actor, reason, request_id, changes: [{type, service, key, value?, ...}]}`;
    /// a `secret_set` change's `value` is the marker `{"$secret": true}` (`MaskedSecret`).
    /// For a token limited to a service, only that service's changes (and a whole-store
    /// rollback's marker) are listed.
    #[schema(value_type = Vec<super::bodies::ChangesetOut>)]
    pub changesets: Vec<Value>,
    /// Pass as `before` for the next (older) page; absent when the log's start was reached.
    pub next_before: Option<u64>,
}

/// Most changesets per page (limits.rs).
const CHANGESETS_MAX: usize = confstore_core::limits::CHANGESETS_PAGE_MAX;
/// Most events one page request reads (limits.rs).
const CHANGESET_SCAN_EVENTS_MAX: usize = confstore_core::limits::CHANGESETS_SCAN_EVENTS_MAX;

/// `GET /api/v1/changesets`: the configuration changesets, newest first (audit events
/// excluded), for the whole store or one service, paged by epoch. Read backwards from the
/// head in short chunks; the events shown are the ones the server's verified read model
/// folded.
#[utoipa::path(get, path = "/api/v1/changesets", tag = "history", params(ChangesetsQuery),
    security(("bearer" = ["config.read"])),
    responses((status = 200, body = ChangesetPage), (status = 422, body = crate::error::ErrorBody)))]
pub async fn changesets(
    who: Principal,
    ApiQuery(q): ApiQuery<ChangesetsQuery>,
    l: LiveView,
) -> ApiResult<Json<ChangesetPage>> {
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > CHANGESETS_MAX {
        return Err(ApiError::unprocessable(format!("limit must be 1 to {CHANGESETS_MAX}")));
    }
    let head_seq = l.model.read(|m| m.state.seq);
    let scope = q.service.clone().or(who.service.clone());
    let only = who.service.clone();
    let before = q.before.unwrap_or(u64::MAX);
    blocking(move || {
        let mut page = Timeline::new(scope, only, before, limit);
        let mut cursor = head_seq.saturating_add(1);
        let mut scanned = 0usize;
        l.readers.with(|r| {
            loop {
                let chunk = r.events_before(cursor, 1000)?;
                let Some(last) = chunk.last() else { return Ok(()) };
                cursor = last.seq;
                for ev in &chunk {
                    let body = EventBody::decode(&ev.body).map_err(|_| {
                        LogError::Tampered(confstore_core::VerifyError::BadBody {
                            seq: ev.seq,
                            reason: "does not decode".into(),
                        })
                    })?;
                    scanned += 1;
                    if page.push(body) {
                        return Ok(());
                    }
                    // A filter that rarely matches: stop at a changeset boundary and say
                    // where to continue, even when nothing on this page matched.
                    if scanned >= CHANGESET_SCAN_EVENTS_MAX && page.current.is_empty() {
                        page.next_before = page.scanned_to;
                        return Ok(());
                    }
                }
            }
        })?;
        Ok(Json(ChangesetPage { changesets: page.out, next_before: page.next_before }))
    })
    .await
}

/// Groups events read newest first into changesets.
struct Timeline {
    /// Only changesets that touch this service (the query's, else the token's scope).
    scope: Option<String>,
    /// The token's service scope: of a changeset that also touched other services (one
    /// written by `confstore apply`, a whole-store rollback) only this service's changes are
    /// shown; the others are left out, not redacted.
    only: Option<String>,
    before: u64,
    limit: usize,
    out: Vec<Value>,
    /// The changeset being read, newest event first.
    current: Vec<EventBody>,
    next_before: Option<u64>,
    /// The epoch of the oldest changeset read so far, shown or not.
    scanned_to: Option<u64>,
}

impl Timeline {
    fn new(scope: Option<String>, only: Option<String>, before: u64, limit: usize) -> Self {
        Self { scope, only, before, limit, out: Vec::new(), current: Vec::new(), next_before: None, scanned_to: None }
    }

    /// Takes the next (older) event; true when the page is full.
    fn push(&mut self, body: EventBody) -> bool {
        if body.epoch >= self.before {
            return false;
        }
        let first_of_changeset = body.changeset_index == 0;
        self.current.push(body);
        if !first_of_changeset {
            return false;
        }
        let events: Vec<EventBody> = self.current.drain(..).rev().collect();
        self.scanned_to = events.first().map(|b| b.epoch);
        if let Some(cs) = self.changeset(&events) {
            self.out.push(cs);
            if self.out.len() == self.limit {
                self.next_before = events.first().map(|b| b.epoch);
                return true;
            }
        }
        false
    }

    /// The changeset as shown, if it is a configuration change in scope.
    fn changeset(&self, events: &[EventBody]) -> Option<Value> {
        let first = events.first()?;
        if events.iter().all(|b| is_audit(&b.kind)) {
            return None;
        }
        if let Some(s) = &self.scope
            && !events.iter().any(|b| b.service() == Some(s.as_str()))
        {
            return None;
        }
        let changes: Vec<Value> = events
            .iter()
            .filter(|b| self.only.as_deref().is_none_or(|only| in_scope(b, only)))
            .map(change_json)
            .collect();
        Some(json!({
            "epoch": first.epoch,
            "time": time_text(first.time_ms),
            "actor": first.actor,
            "reason": first.reason,
            "request_id": first.request_id,
            "changes": changes,
        }))
    }
}

/// Whether a service-scoped token sees `event`: it is about `service`, or it is the marker
/// of a whole-store rollback (which names no service, only the epochs, and says why the
/// service's values changed). Events about `global` are not shown: what a service takes
/// from `global` shows, resolved, in its snapshot and keys.
pub(super) fn in_scope(event: &EventBody, service: &str) -> bool {
    event.service() == Some(service) || matches!(event.kind, EventKind::RolledBack { service: None, .. })
}

/// One change of a changeset: the event's own fields (type, service, key, value, ...; the
/// changeset's are on the changeset), a secret's value as the masked marker.
fn change_json(event: &EventBody) -> Value {
    let mut kind = event.to_json().get("kind").cloned().unwrap_or(Value::Null);
    if matches!(event.kind, EventKind::SecretSet { .. }) {
        kind["value"] = masked::marker();
    }
    kind
}

/// The outcome of "verify now".
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyOut {
    /// Whether every event verified.
    pub ok: bool,
    /// Events checked.
    pub events: u64,
    /// The first problem, when not ok.
    pub problem: Option<String>,
    /// Seq of the verified head.
    pub seq: u64,
    /// Its epoch.
    pub epoch: u64,
    /// The store's generation there.
    pub generation: u64,
    /// Its hash (hex).
    pub head_hash: String,
    /// Store id (hex).
    pub store_id: String,
    /// The head document signed by this server (flattened JWS, `typ` confstore-head).
    #[schema(value_type = Option<super::bodies::FlattenedJws>)]
    pub signed_head: Option<Value>,
    /// How long the verification took.
    pub elapsed_ms: u64,
}

/// `POST /api/v1/verify`: verifies the whole chain now — every link, hash and signature
/// from event 1, and that the key chain ends in the key this server signs with — and
/// returns the head signed. Store-wide: refused (403) to a token limited to a service, as
/// the audit trail and the export are.
#[utoipa::path(post, path = "/api/v1/verify", tag = "audit",
    security(("bearer" = ["audit.read"])),
    responses((status = 200, body = VerifyOut), (status = 503, body = crate::error::ErrorBody)))]
pub async fn verify(State(app): State<App>, _: Unscoped, l: LiveView) -> ApiResult<Json<VerifyOut>> {
    let (store_id, store_hex) = (l.store.store_id(), l.model.read(|m| m.store_id.to_hex()));
    let app2 = app.clone();
    blocking(move || {
        let started = Instant::now();
        let verifier = confstore_core::verify::ChainVerifier::new(store_id, None).discard_events();
        let result = l.readers.with(|r| r.verify_with(verifier, &mut |_| {}))?;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let ours = app2.keys.signing.verifying_key();
        let out = match result {
            Ok(head) if head.keys.current() == Some(&ours) => {
                let hash = head.hash.to_hex();
                let at = confstore_core::stream::Position {
                    store_id: &store_hex,
                    generation: head.generation,
                    seq: head.seq,
                    hash: &hash,
                };
                let doc = confstore_core::stream::head_document(&at, head.epoch, head.time_ms);
                let signed = confstore_core::jws::sign(&doc, confstore_core::jws::TYP_HEAD, &app2.keys.signing);
                VerifyOut {
                    ok: true,
                    events: head.seq,
                    problem: None,
                    seq: head.seq,
                    epoch: head.epoch,
                    generation: head.generation,
                    head_hash: hash,
                    store_id: store_hex,
                    signed_head: Some(signed),
                    elapsed_ms,
                }
            }
            Ok(head) => VerifyOut {
                ok: false,
                events: head.seq,
                problem: Some(format!(
                    "the chain verifies, but its current signing key is {}, not this server's key {}",
                    head.keys.current().map_or_else(|| "none".into(), |k| k.key_id().to_hex()),
                    ours.key_id().to_hex()
                )),
                seq: head.seq,
                epoch: head.epoch,
                generation: head.generation,
                head_hash: head.hash.to_hex(),
                store_id: store_hex,
                signed_head: None,
                elapsed_ms,
            },
            Err(e) => {
                app2.metrics.signature_failure("verify");
                VerifyOut {
                    ok: false,
                    events: e.seq().saturating_sub(1),
                    problem: Some(format!("first bad event is seq {}: {e}", e.seq())),
                    seq: 0,
                    epoch: 0,
                    generation: 0,
                    head_hash: String::new(),
                    store_id: store_hex,
                    signed_head: None,
                    elapsed_ms,
                }
            }
        };
        Ok(Json(out))
    })
    .await
}

/// How often an idle head-events stream sends a keep-alive comment (proxies close idle
/// streams).
const HEAD_EVENTS_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /api/v1/live`: a `text/event-stream` of the head — an event `head` with data
/// `{"seq","epoch","generation"}` at once and after every commit (from this server or
/// folded in from another process). Consecutive commits may arrive as one event. Ends when
/// the server stops or leaves the live mode; clients reconnect. Read it with a client that
/// can send the Authorization header (the browser's `fetch`, not `EventSource`).
// The head-events stream. Its operation id stays `live_stream`, the handler's old name:
// the OpenAPI document is a contract.
#[utoipa::path(get, path = "/api/v1/live", tag = "history", operation_id = "live_stream",
    security(("bearer" = ["config.read"])),
    responses((status = 200, description = "server-sent events", content_type = "text/event-stream", body = String),
              (status = 503, body = crate::error::ErrorBody)))]
pub async fn head_events(State(app): State<App>, l: LiveView) -> ApiResult<Response> {
    let model = std::sync::Arc::clone(&l.model);
    let heads = model.head.subscribe();
    let stopping = app.stopping.subscribe();
    // The stream holds the read model only, not the mode (which a recovery replaces).
    drop(l);
    let state = (model, heads, stopping, true);
    let stream = futures_util::stream::unfold(state, |(model, mut heads, mut stopping, first)| async move {
        if !first {
            tokio::select! {
                changed = heads.changed() => changed.ok()?,
                _ = stopping.wait_for(|s| *s) => return None,
            }
        }
        if *stopping.borrow() {
            return None;
        }
        heads.borrow_and_update();
        let data = model.read(|m| json!({"seq": m.state.seq, "epoch": m.state.epoch, "generation": m.generation}));
        let event = Event::default().event("head").data(data.to_string());
        Some((Ok::<_, Infallible>(event), (model, heads, stopping, false)))
    });
    let mut resp = Sse::new(stream).keep_alive(KeepAlive::new().interval(HEAD_EVENTS_KEEP_ALIVE)).into_response();
    // Not buffered by proxies (nginx), not cached.
    resp.headers_mut().insert("x-accel-buffering", axum::http::HeaderValue::from_static("no"));
    resp.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A changeset of `keys` set on `service` at `epoch`, its events newest first (as read).
    fn changeset(epoch: u64, service: &str, keys: &[&str]) -> Vec<EventBody> {
        let len = u32::try_from(keys.len()).unwrap();
        let mut events: Vec<EventBody> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| EventBody {
                epoch,
                time_ms: epoch * 1000,
                changeset_index: u32::try_from(i).unwrap(),
                changeset_len: len,
                actor: "a".into(),
                reason: format!("r{epoch}"),
                request_id: "q".into(),
                kind: EventKind::ValueSet {
                    service: service.into(),
                    key: (*key).into(),
                    value_json: "1".into(),
                    schema_hash: None,
                },
            })
            .collect();
        events.reverse();
        events
    }

    fn timeline(scope: Option<&str>, before: u64, limit: usize) -> Timeline {
        Timeline::new(scope.map(str::to_owned), None, before, limit)
    }

    #[test]
    fn groups_newest_first_filters_by_scope_and_pages_by_epoch() {
        let log: Vec<EventBody> =
            [changeset(5, "web", &["a", "b"]), changeset(4, "db", &["x"]), changeset(3, "web", &["c"])].concat();
        let mut t = timeline(Some("web"), u64::MAX, 1);
        let full = log.iter().cloned().map(|b| t.push(b)).position(|full| full);
        assert_eq!(full, Some(1), "the page is full after the two events of epoch 5");
        assert_eq!((t.out.len(), t.out[0]["epoch"].as_u64(), t.next_before), (1, Some(5), Some(5)));
        assert_eq!(t.out[0]["changes"].as_array().map(Vec::len), Some(2));
        assert_eq!(t.out[0]["changes"][0]["key"], "a", "events of a changeset in order");

        // The next page (before 5): epoch 4 is another service's, so only epoch 3.
        let mut t = timeline(Some("web"), 5, 10);
        assert!(!log.into_iter().any(|b| t.push(b)));
        let epochs: Vec<_> = t.out.iter().map(|c| c["epoch"].as_u64()).collect();
        assert_eq!(epochs, [Some(3)]);
        assert_eq!(t.scanned_to, Some(3), "the oldest changeset read, shown or not");
    }

    #[test]
    fn a_scoped_timeline_shows_only_its_own_changes_of_a_changeset_over_several_services() {
        // Epoch 7 sets web.a and db.x in one changeset (read newest first: db.x, then web.a).
        let mut multi = changeset(7, "web", &["a", "x"]);
        if let EventKind::ValueSet { service, .. } = &mut multi[0].kind {
            *service = "db".into();
        }
        let mut t = Timeline::new(Some("web".into()), Some("web".into()), u64::MAX, 10);
        assert!(!multi.iter().cloned().any(|b| t.push(b)));
        assert_eq!(t.out.len(), 1);
        let changes = t.out[0]["changes"].as_array().unwrap();
        assert_eq!((changes.len(), changes[0]["key"].as_str()), (1, Some("a")), "{changes:?}");
        assert!(!t.out[0].to_string().contains("db"), "{}", t.out[0]);

        // The same changeset unscoped: both changes.
        let mut t = Timeline::new(Some("web".into()), None, u64::MAX, 10);
        assert!(!multi.into_iter().any(|b| t.push(b)));
        assert_eq!(t.out[0]["changes"].as_array().map(Vec::len), Some(2));
    }
}
