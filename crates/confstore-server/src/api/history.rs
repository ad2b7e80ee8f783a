//! The log and time travel: history, events after a seq, state at a point, diff, rollback,
//! search, audit trail, head and export.
//!
//! History, events and audit pages read stored events up to the read model's head, which
//! the server verified (at open, and as it folded each event in); replays verify again.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use confstore_core::state::{Change, RejectError};
use confstore_core::{EventBody, EventKind, StoredEvent};
use confstore_log::{LogError, Until};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::config::receipt_response;
use super::console::in_scope;
use super::{ReceiptOut, blocking, commit, masked, page_size, time_text};
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Endpoint, IfMatch, LiveView, Principal, ReadView, RequestId, Unscoped};

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// The events, oldest first: `seq`, `time` and the decoded event fields (as in the
    /// export's `event`), plus `hash`, `prev_hash`, `key_id`, `sig` and `body` (base64) for
    /// `/events`.
    #[schema(value_type = Vec<super::bodies::PageEvent>)]
    pub events: Vec<Value>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<u64>,
    /// Seq of the head when read.
    pub head_seq: u64,
}

/// Which events a page holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Filter {
    History,
    Events,
    Audit,
}

/// Whether an event is an audit record (reveal, denial or denial summary, token issue or
/// revoke), not a configuration change.
pub(super) fn is_audit(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::SecretRevealed { .. }
            | EventKind::AccessDenied { .. }
            | EventKind::AccessDeniedSummary { .. }
            | EventKind::TokenIssued { .. }
            | EventKind::TokenRevoked { .. }
    )
}

fn event_key(kind: &EventKind) -> Option<&str> {
    match kind {
        EventKind::ValueSet { key, .. }
        | EventKind::ValueUnset { key, .. }
        | EventKind::SecretSet { key, .. }
        | EventKind::SecretRevealed { key, .. } => Some(key),
        _ => None,
    }
}

/// Reads up to `limit` events after `after` that pass `keep`.
async fn page(
    l: LiveView,
    after: u64,
    limit: usize,
    filter: Filter,
    keep: impl Fn(&EventBody) -> bool + Send + 'static,
) -> ApiResult<EventPage> {
    let head_seq = l.model.read(|m| m.state.seq);
    blocking(move || {
        let mut events = Vec::new();
        let mut last_seen = after;
        let mut more = false;
        l.readers.with(|r| {
            r.for_each_event(after.saturating_add(1), |ev: StoredEvent| {
                if ev.seq > head_seq {
                    return Ok(false);
                }
                if events.len() == limit {
                    more = true;
                    return Ok(false);
                }
                last_seen = ev.seq;
                let Ok(body) = EventBody::decode(&ev.body) else {
                    return Err(LogError::Tampered(confstore_core::VerifyError::BadBody {
                        seq: ev.seq,
                        reason: "does not decode".into(),
                    }));
                };
                if keep(&body) {
                    let mut v = if filter == Filter::Events {
                        serde_json::from_str(&confstore_core::export::event_line(&ev, Some(&body)))
                            .unwrap_or(Value::Null)
                    } else {
                        body.to_json()
                    };
                    v["seq"] = json!(ev.seq);
                    v["time"] = json!(time_text(body.time_ms));
                    events.push(v);
                }
                Ok(true)
            })
        })?;
        // A filtered scan that stopped at the head has no next page; one cut by the limit
        // continues after the last event it looked at.
        let next_after = more.then_some(last_seen);
        Ok(EventPage { events, next_after, head_seq })
    })
    .await
}

/// Query of the history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only events of this service.
    pub service: Option<String>,
    /// Only events of this key.
    pub key: Option<String>,
    /// Only events after this seq (paging).
    pub after: Option<u64>,
    /// Most events (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// `GET /api/v1/history`: configuration changes, oldest first, paged by seq.
#[utoipa::path(get, path = "/api/v1/history", tag = "history", params(HistoryQuery),
    security(("bearer" = ["config.read"])),
    responses((status = 200, body = EventPage), (status = 422, body = crate::error::ErrorBody)))]
pub async fn history(who: Principal, ApiQuery(q): ApiQuery<HistoryQuery>, l: LiveView) -> ApiResult<Json<EventPage>> {
    let limit = page_size(q.limit)?;
    let scope = q.service.clone().or(who.service.clone());
    let key = q.key;
    let p = page(l, q.after.unwrap_or(0), limit, Filter::History, move |b| {
        !is_audit(&b.kind)
            && scope.as_deref().is_none_or(|s| in_scope(b, s))
            && key.as_deref().is_none_or(|k| event_key(&b.kind) == Some(k))
    })
    .await?;
    Ok(Json(p))
}

/// Query of events after a seq.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Events after this seq (0: from the start).
    pub after: u64,
    /// Only events of this service.
    pub service: Option<String>,
    /// Most events (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// `GET /api/v1/events?after=SEQ`: stored events after a seq with their hashes and
/// signatures (the export line format), for clients catching up.
#[utoipa::path(get, path = "/api/v1/events", tag = "history", params(EventsQuery),
    security(("bearer" = ["config.read"])),
    responses((status = 200, body = EventPage), (status = 422, body = crate::error::ErrorBody)))]
pub async fn events(who: Principal, ApiQuery(q): ApiQuery<EventsQuery>, l: LiveView) -> ApiResult<Json<EventPage>> {
    let limit = page_size(q.limit)?;
    let scope = q.service.clone().or(who.service.clone());
    // Audit records are the audit trail's (store-wide, refused to scoped tokens), even
    // those that name the token's service.
    let audit_too = who.service.is_none();
    let p = page(l, q.after, limit, Filter::Events, move |b| {
        (audit_too || !is_audit(&b.kind)) && scope.as_deref().is_none_or(|s| in_scope(b, s))
    })
    .await?;
    Ok(Json(p))
}

/// A point of the log: an epoch, or a time.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    /// The state at this epoch.
    pub epoch: Option<u64>,
    /// The state at this time (RFC 3339); when an epoch is given too, the epoch is used.
    #[param(format = DateTime)]
    pub at: Option<String>,
    /// Only this service.
    pub service: Option<String>,
}

/// The configuration at a point.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateOut {
    /// The epoch.
    pub epoch: u64,
    /// service -> key -> value; a secret's value is the marker `{"$secret": true}`
    /// (`MaskedSecret`).
    pub services: BTreeMap<String, BTreeMap<String, Value>>,
}

fn until_of(epoch: Option<u64>, at: Option<&str>) -> ApiResult<Until> {
    // A given `at` is always checked, even beside an epoch: bad input is never ignored.
    let at = at
        .map(|t| {
            t.parse::<jiff::Timestamp>().map_err(|_| {
                ApiError::bad_request(format!("{t:?} is not an RFC 3339 time such as 2026-11-26T09:30:00Z"))
            })
        })
        .transpose()?;
    match (epoch, at) {
        // Both valid: the epoch is the more precise point (as documented on StateQuery).
        (Some(e), _) => Ok(Until::Epoch(e)),
        (None, Some(ts)) => Ok(Until::Time(u64::try_from(ts.as_millisecond()).unwrap_or(0))),
        (None, None) => Ok(Until::Head),
    }
}

async fn state_at(l: &LiveView, until: Until) -> ApiResult<confstore_core::State> {
    if until == Until::Head {
        return Ok(l.model.read(|m| m.state.clone()));
    }
    let l = l.clone();
    blocking(move || Ok(l.readers.with(|r| r.replay(until))?)).await
}

/// `GET /api/v1/state`: every service's values at an epoch or a time (default: now).
#[utoipa::path(get, path = "/api/v1/state", tag = "history", params(StateQuery),
    security(("bearer" = ["config.read"])),
    responses((status = 200, body = StateOut), (status = 404, body = crate::error::ErrorBody)))]
pub async fn state(
    State(app): State<App>,
    who: Principal,
    ApiQuery(q): ApiQuery<StateQuery>,
    l: LiveView,
) -> ApiResult<Json<StateOut>> {
    app.metrics.read();
    let until = until_of(q.epoch, q.at.as_deref())?;
    let st = state_at(&l, until).await?;
    if let Some(s) = &q.service
        && !st.services.contains_key(s)
    {
        return Err(ApiError::not_found(format!("unknown service {s:?} at epoch {}", st.epoch)));
    }
    let services = st
        .services
        .iter()
        .filter(|(s, _)| who.sees(s) && q.service.as_deref().is_none_or(|only| only == s.as_str()))
        .map(|(s, vals)| (s.clone(), vals.iter().map(|(k, v)| (k.clone(), masked::Shown::text(v).value)).collect()))
        .collect();
    Ok(Json(StateOut { epoch: st.epoch, services }))
}

/// Query of a diff.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// From this epoch.
    pub from: u64,
    /// To this epoch (default: now).
    pub to: Option<u64>,
    /// Only this service.
    pub service: Option<String>,
}

/// What changed between two epochs.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiffOut {
    /// The first epoch.
    pub from_epoch: u64,
    /// The second.
    pub to_epoch: u64,
    /// Key-level changes; a secret's `before`/`after` is the marker `{"$secret": true}`.
    pub changes: Vec<DiffChange>,
}

/// One key's change between two epochs.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiffChange {
    /// Service.
    pub service: String,
    /// Key.
    pub key: String,
    /// `added`, `removed` or `changed`.
    pub change: String,
    /// The value at the first epoch (null when added); a secret's is the marker.
    pub before: Value,
    /// The value at the second epoch (null when removed); a secret's is the marker.
    pub after: Value,
}

/// `GET /api/v1/diff?from=E1[&to=E2]`: key-level differences between two epochs.
#[utoipa::path(get, path = "/api/v1/diff", tag = "history", params(DiffQuery),
    security(("bearer" = ["config.read"])),
    responses((status = 200, body = DiffOut), (status = 404, body = crate::error::ErrorBody)))]
pub async fn diff(who: Principal, ApiQuery(q): ApiQuery<DiffQuery>, l: LiveView) -> ApiResult<Json<DiffOut>> {
    let a = state_at(&l, Until::Epoch(q.from)).await?;
    let b = state_at(&l, q.to.map_or(Until::Head, Until::Epoch)).await?;
    if let Some(s) = &q.service
        && !a.services.contains_key(s)
        && !b.services.contains_key(s)
    {
        return Err(ApiError::not_found(format!("unknown service {s:?}")));
    }
    let changes = confstore_core::timetravel::diff(&a, &b, q.service.as_deref())
        .iter()
        .filter(|c| who.sees(&c.service))
        .map(|c| DiffChange {
            service: c.service.clone(),
            key: c.key.clone(),
            change: c.what().to_owned(),
            before: c.before.as_deref().map_or(Value::Null, |v| masked::Shown::text(v).value),
            after: c.after.as_deref().map_or(Value::Null, |v| masked::Shown::text(v).value),
        })
        .collect();
    Ok(Json(DiffOut { from_epoch: a.epoch, to_epoch: b.epoch, changes }))
}

/// A rollback request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The epoch whose configuration to restore.
    pub to_epoch: u64,
    /// Only this service (default: every service).
    pub service: Option<String>,
    /// Why (recorded).
    pub reason: Option<String>,
}

/// Attempts before giving up when other writers keep changing the store meanwhile (limits.rs).
const ROLLBACK_ATTEMPTS: usize = confstore_core::limits::ROLLBACK_ATTEMPTS_MAX;

/// `POST /api/v1/rollback`: restores the configuration of an earlier epoch as a new
/// changeset (history is never rewritten). With `If-Match`, only if the store is still at
/// that epoch; without, retried if other writes land meanwhile.
#[utoipa::path(post, path = "/api/v1/rollback", tag = "history", request_body = RollbackRequest,
    params(IfMatch),
    security(("bearer" = ["config.write"])),
    responses((status = 200, body = ReceiptOut), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn rollback(
    State(app): State<App>,
    who: Principal,
    rid: RequestId,
    endpoint: Endpoint,
    if_match: IfMatch,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> ApiResult<Response> {
    let who = match &req.service {
        None => Unscoped::check(&app, who, &endpoint, rid.clone()).await?.0,
        Some(s) if !who.sees(s) => {
            let why = format!("this token is limited to service {:?}, not {s:?}", who.service.as_deref().unwrap_or(""));
            return Err(crate::auth::deny(&app, &who, &endpoint, who.role, Some(s.clone()), Some(rid), why).await);
        }
        Some(_) => who,
    };
    let l = LiveView::of(&app)?;
    let target = state_at(&l, Until::Epoch(req.to_epoch)).await?;
    for _ in 0..ROLLBACK_ATTEMPTS {
        let current = state_at(&l, Until::Head).await?;
        if let Some(s) = &req.service
            && !current.services.contains_key(s)
        {
            return Err(ApiError::not_found(format!("unknown service {s:?}")));
        }
        if req.to_epoch >= current.epoch {
            return Err(RejectError::RollbackTarget { to: req.to_epoch, current: current.epoch }.into());
        }
        let changes: Vec<Change> =
            confstore_core::timetravel::rollback_changes(&current, &target, req.to_epoch, req.service.as_deref());
        // Secrets come back as their stored ciphertext; decrypted here only to check them
        // against the schema, as every secret set is.
        let store_id = l.store.store_id();
        let changes = confstore_core::timetravel::restore_secrets(changes, |service, key, envelope| {
            super::config::open_secret(&app, &store_id, service, key, envelope)
        })?;
        if changes.len() <= 1 {
            return Err(ApiError::unprocessable(format!(
                "nothing to roll back: the configuration at epoch {} equals the current one (epoch {}); nothing was changed",
                req.to_epoch, current.epoch
            )));
        }
        let expected = if_match.0.unwrap_or(current.epoch);
        match commit(&app, &who, rid.clone(), req.reason.clone(), Some(expected), changes).await {
            Err(e) if e.status == axum::http::StatusCode::CONFLICT && if_match.0.is_none() => continue,
            other => return other.map(|r| receipt_response(axum::http::StatusCode::OK, r)),
        }
    }
    Err(ApiError::unavailable("the store kept changing while rolling back; nothing was changed, try again"))
}

/// Query of a search.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Text to find in service names, keys, values and descriptions (case-insensitive).
    pub q: String,
    /// Only this service.
    pub service: Option<String>,
    /// Only keys changed after this epoch.
    pub since: Option<u64>,
    /// Most hits (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// Search hits.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchOut {
    /// The query.
    pub query: String,
    /// Hits, best first.
    pub hits: Vec<SearchHit>,
}

/// One search hit (secrets are never indexed).
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHit {
    /// Service.
    pub service: String,
    /// Key.
    pub key: String,
    /// The value as text (strings without quotes, anything else as JSON).
    pub value: String,
    /// The schema's description of the key, or empty.
    pub description: String,
    /// The epoch that last changed the key.
    #[serde(rename = "epoch")]
    pub changed_epoch: u64,
}

/// `GET /api/v1/search?q=TEXT`: full-text search over the configuration (never secrets).
#[utoipa::path(get, path = "/api/v1/search", tag = "history", params(SearchQuery),
    security(("bearer" = ["config.read"])),
    responses((status = 200, body = SearchOut), (status = 422, body = crate::error::ErrorBody)))]
pub async fn search(who: Principal, ApiQuery(q): ApiQuery<SearchQuery>, l: LiveView) -> ApiResult<Json<SearchOut>> {
    let limit = page_size(q.limit)?;
    if q.q.len() > confstore_core::limits::SEARCH_QUERY_BYTES_MAX {
        return Err(ApiError::unprocessable(format!(
            "the query is longer than {} bytes",
            confstore_core::limits::SEARCH_QUERY_BYTES_MAX
        )));
    }
    if q.q.chars().any(char::is_control) {
        return Err(ApiError::unprocessable("the query has control characters; search for printable text"));
    }
    let scope = q.service.clone().or(who.service.clone());
    let (text, since) = (q.q.clone(), q.since);
    let hits = blocking(move || {
        let _one = l.search_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let trusted = l.model.read(|m| m.state.seq);
        l.readers
            .with(|r| {
                confstore_search::catch_up(r, trusted)?;
                confstore_search::search(r.connection(), &text, scope.as_deref(), since, limit)
                    .map_err(LogError::search)
            })
            .map_err(ApiError::from)
    })
    .await?;
    let hits = hits
        .into_iter()
        .map(|h| SearchHit {
            service: h.service,
            key: h.key,
            value: h.value_text,
            description: h.description,
            changed_epoch: h.epoch,
        })
        .collect();
    Ok(Json(SearchOut { query: q.q, hits }))
}

/// Query of the audit trail.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only events after this seq (paging).
    pub after: Option<u64>,
    /// Most events (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// `GET /api/v1/audit`: secret reveals, access denials, token issues and revocations.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    security(("bearer" = ["audit.read"])),
    responses((status = 200, body = EventPage), (status = 422, body = crate::error::ErrorBody)))]
pub async fn audit(ApiQuery(q): ApiQuery<AuditQuery>, _: Unscoped, l: LiveView) -> ApiResult<Json<EventPage>> {
    let limit = page_size(q.limit)?;
    Ok(Json(page(l, q.after.unwrap_or(0), limit, Filter::Audit, |b| is_audit(&b.kind)).await?))
}

/// The head of the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeadOut {
    /// Store id (hex).
    pub store_id: String,
    /// Generation.
    pub generation: u64,
    /// Seq of the last event.
    pub seq: u64,
    /// Configuration epoch.
    pub epoch: u64,
    /// Hash of the last event (hex).
    pub hash: String,
    /// Time of the last event.
    pub time: String,
    /// Current signing key id.
    pub signing_key_id: String,
}

/// `GET /api/v1/head`: the newest event's seq, epoch and hash.
#[utoipa::path(get, path = "/api/v1/head", tag = "history",
    security(("bearer" = ["config.read"])),
    responses((status = 200, body = HeadOut)))]
pub async fn head(State(app): State<App>, view: ReadView) -> Response {
    let key_id = app.keys.signing.verifying_key().key_id().to_hex();
    let out = match &view {
        ReadView::Live(l) => l.model.read(|m| HeadOut {
            store_id: m.store_id.to_hex(),
            generation: m.generation,
            seq: m.state.seq,
            epoch: m.state.epoch,
            hash: m.head_hash.to_hex(),
            time: time_text(m.state.time_ms),
            signing_key_id: key_id,
        }),
        ReadView::Fallback(fb) => {
            let c = fb.content();
            HeadOut {
                store_id: c.store_id.clone(),
                generation: c.generation,
                seq: c.seq,
                epoch: c.epoch,
                hash: c.head_hash.clone(),
                time: String::new(),
                signing_key_id: key_id,
            }
        }
    };
    view.answer(Json(out))
}

/// `GET /api/v1/export`: the whole log in the `confstore-export/1` JSON Lines format (a
/// header line, with the latest signed Merkle-tree checkpoint that covers the exported
/// events, then one line per event), streamed; `confstore verify --export` checks it
/// offline with only the public key.
///
/// The export is the log up to the last event when the request arrived: the header's keys
/// and that seq come from one snapshot. The events are then read in chunks, each in its own
/// short read transaction on a pooled connection, and sent between reads: a client that
/// reads slowly, or stops, holds neither a read transaction (which would keep the WAL from
/// being checkpointed, ADR 0016) nor a connection.
#[utoipa::path(get, path = "/api/v1/export", tag = "audit",
    security(("bearer" = ["audit.read"])),
    responses((status = 200, description = "confstore-export/1 JSON Lines", content_type = "application/x-ndjson", body = String)))]
pub async fn export(State(app): State<App>, _: Unscoped, l: LiveView) -> ApiResult<Response> {
    let m = l.clone();
    // The latest published checkpoint, taken before the snapshot (it covers only committed
    // events), goes into the header when its root is the exported events' (format.md §11).
    let published = app.checkpoints.latest();
    let (first_line, end_seq) = blocking(move || {
        Ok(m.readers.with(|r| {
            r.snapshot(|r| {
                let keys = r.keys()?;
                let end_seq = r.last_seq()?;
                let note = published.filter(|p| p.checkpoint.size <= end_seq).and_then(|p| {
                    let root = r.tree_root(p.checkpoint.size).ok()?;
                    (root == p.checkpoint.root).then(|| p.note.to_string())
                });
                Ok((confstore_core::export::header_line(&r.store_id(), &keys, note.as_deref()), end_seq))
            })
        })?)
    })
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(64);
    tokio::task::spawn_blocking(move || {
        if tx.blocking_send(Ok(first_line + "\n")).is_err() {
            return;
        }
        if let Err(e) = send_events(&l, end_seq, &tx) {
            tracing::error!(error = %e, end_seq, "export failed part way; the client gets a truncated body");
            let _ = tx.blocking_send(Err(std::io::Error::other("export failed")));
        }
    });
    let stream = tokio_stream_from(rx);
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(resp)
}

/// Sends the lines of events 1..=`end_seq`, one chunk per read. Returns early, without an
/// error, when the client has gone.
fn send_events(
    l: &crate::app::LiveMode,
    end_seq: u64,
    tx: &tokio::sync::mpsc::Sender<Result<String, std::io::Error>>,
) -> Result<(), LogError> {
    let mut next = 1;
    while next <= end_seq {
        let chunk = l.readers.with(|r| r.events_chunk(next, end_seq))?;
        let Some(last) = chunk.last().map(|ev| ev.seq) else {
            return Err(LogError::OutOfRange(format!(
                "the log ends before event {next}, though it reached event {end_seq} when the export started"
            )));
        };
        for ev in chunk {
            let body = EventBody::decode(&ev.body).ok();
            let line = confstore_core::export::event_line(&ev, body.as_ref()) + "\n";
            if tx.blocking_send(Ok(line)).is_err() {
                return Ok(());
            }
        }
        next = last + 1;
    }
    Ok(())
}

/// A receiver as a stream (without pulling in tokio-stream).
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<String, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
