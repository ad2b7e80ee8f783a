//! Services, snapshots, values, schemas and secrets.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use confstore_core::secret::{self, Plaintext};
use confstore_core::state::Change;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{ReceiptOut, blocking, commit};
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Endpoint, IfMatch, LiveView, Principal, ReadView, RequestId};

/// Registered services.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceList {
    /// Names, sorted.
    pub services: Vec<String>,
    /// The epoch they were read at.
    pub epoch: u64,
}

/// `GET /api/v1/services`: the services the token may see.
#[utoipa::path(get, path = "/api/v1/services", tag = "config",
    security(("bearer" = ["config.read"])),
    responses((status = 200, body = ServiceList), (status = 401, body = crate::error::ErrorBody)))]
pub async fn list_services(State(app): State<App>, who: Principal, view: ReadView) -> ApiResult<Response> {
    app.metrics.read();
    let (epoch, services) = match &view {
        ReadView::Live(l) => l.model.read(|m| (m.state.epoch, m.state.services.keys().cloned().collect::<Vec<_>>())),
        ReadView::Fallback(fb) => (fb.content().epoch, fb.content().services.keys().cloned().collect()),
    };
    let services = services.into_iter().filter(|s| who.sees(s)).collect();
    Ok(view.answer(Json(ServiceList { services, epoch })))
}

/// A request to register a service.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Service name: 1-64 of `a-z 0-9 _ -`.
    pub name: String,
    /// Why (recorded in the event).
    pub reason: Option<String>,
}

/// `POST /api/v1/services`: registers a service.
#[utoipa::path(post, path = "/api/v1/services", tag = "config", request_body = RegisterRequest, params(IfMatch),
    security(("bearer" = ["config.write"])),
    responses((status = 201, body = ReceiptOut), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn register_service(
    State(app): State<App>,
    who: Principal,
    rid: RequestId,
    endpoint: Endpoint,
    if_match: IfMatch,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<Response> {
    if !who.sees(&req.name) {
        let why = format!("this token is limited to service {:?}", who.service.as_deref().unwrap_or(""));
        return Err(crate::auth::deny(&app, &who, &endpoint, who.role, Some(req.name), Some(rid), why).await);
    }
    let r =
        commit(&app, &who, rid, req.reason, if_match.0, vec![Change::RegisterService { service: req.name }]).await?;
    Ok(receipt_response(axum::http::StatusCode::CREATED, r))
}

/// A receipt with its epoch as the ETag.
pub fn receipt_response(status: axum::http::StatusCode, r: ReceiptOut) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", r.epoch)).ok();
    let mut resp = (status, Json(r)).into_response();
    if let Some(v) = etag {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// Path: one service.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ServicePath {
    /// Service name.
    pub service: String,
}

/// Path: one key of a service.
#[derive(Debug, Deserialize, IntoParams)]
pub struct KeyPath {
    /// Service name.
    pub service: String,
    /// Key name.
    pub key: String,
}

/// Query of a snapshot.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SnapshotQuery {
    /// A past epoch (replayed and verified); default: the current one.
    pub epoch: Option<u64>,
}

/// `GET /api/v1/services/{service}/snapshot`: the service's configuration, as a flattened
/// JWS (EdDSA) by default or as plain JSON with `Accept: application/json`.
#[utoipa::path(get, path = "/api/v1/services/{service}/snapshot", tag = "config",
    params(ServicePath, SnapshotQuery),
    security(("bearer" = ["config.read"])),
    responses((status = 200, description = "flattened JWS (application/jose+json) or the snapshot document (application/json)",
               content((super::bodies::FlattenedJws = "application/jose+json"), (super::bodies::SnapshotDoc = "application/json"))),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn snapshot(
    State(app): State<App>,
    headers: HeaderMap,
    ApiPath(p): ApiPath<ServicePath>,
    ApiQuery(q): ApiQuery<SnapshotQuery>,
    view: ReadView,
) -> ApiResult<Response> {
    app.metrics.read();
    let plain = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json") && !a.contains("jose"));
    let unknown = || ApiError::not_found(format!("unknown service {:?}", p.service));
    let (epoch, json, jws) = match (&view, q.epoch) {
        (ReadView::Live(l), None) => {
            let s = l.model.snapshot(&p.service, &app.keys.signing).ok_or_else(unknown)?;
            (s.head_epoch, s.json.clone(), s.jws.clone())
        }
        (ReadView::Live(l), Some(epoch)) => {
            let (store_id, generation) = l.model.read(|m| (m.store_id.to_hex(), m.generation));
            let l = l.clone();
            let state = blocking(move || Ok(l.readers.with(|r| r.replay(confstore_log::Until::Epoch(epoch)))?)).await?;
            let snap =
                confstore_snapshots::project(&state, &store_id, generation, &p.service).map_err(|_| unknown())?;
            (snap.epoch, snap.to_json(), snap.to_jws_text(&app.keys.signing))
        }
        (ReadView::Fallback(fb), None) => {
            let (json, jws) = fb.mode().snapshots.get(&p.service).ok_or_else(unknown)?;
            (fb.content().epoch, json.clone(), jws.clone())
        }
        // A past epoch is a replay of the log: only with the database.
        (ReadView::Fallback(_), Some(_)) => return Err(LiveView::of(&app).err().unwrap_or_else(ApiError::internal)),
    };
    let mut resp = if plain {
        Json(json).into_response()
    } else {
        let mut r = jws.into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jose+json"));
        r
    };
    if let Ok(v) = HeaderValue::from_str(&format!("\"{epoch}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(view.answer(resp))
}

/// One value.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValueOut {
    /// Service.
    pub service: String,
    /// Key.
    pub key: String,
    /// Epoch read at.
    pub epoch: u64,
    /// The value; a secret's is the marker `{"$secret": true}` (`MaskedSecret`; reveal it
    /// with the reveal route).
    pub value: Value,
    /// Whether it is a secret.
    pub secret: bool,
}

/// `GET /api/v1/services/{service}/values/{key}`: one value as set on the service (not
/// resolved through `global` or defaults; the snapshot does that).
#[utoipa::path(get, path = "/api/v1/services/{service}/values/{key}", tag = "config", params(KeyPath),
    security(("bearer" = ["config.read"])),
    responses((status = 200, body = ValueOut), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_value(State(app): State<App>, ApiPath(p): ApiPath<KeyPath>, view: ReadView) -> ApiResult<Response> {
    app.metrics.read();
    let (epoch, found) = match &view {
        ReadView::Live(l) => l.model.read(|m| {
            let known = m.state.services.contains_key(&p.service);
            (m.state.epoch, known.then(|| m.state.value(&p.service, &p.key).map(str::to_owned)))
        }),
        ReadView::Fallback(fb) => {
            let c = fb.content();
            let doc = c.services.get(&p.service);
            let v = doc.map(|d| {
                let from_service =
                    d.pointer("/sources").and_then(|s| s.get(&p.key)).and_then(Value::as_str) == Some("service");
                d.pointer("/config").and_then(|c| c.get(&p.key)).filter(|_| from_service).map(Value::to_string)
            });
            (c.epoch, v)
        }
    };
    let Some(found) = found else { return Err(ApiError::not_found(format!("unknown service {:?}", p.service))) };
    let Some(text) = found else {
        return Err(ApiError::not_found(format!("{}.{} is not set at epoch {epoch}", p.service, p.key)));
    };
    let super::masked::Shown { value, secret } = super::masked::Shown::text(&text);
    Ok(view.answer(Json(ValueOut { service: p.service, key: p.key, epoch, value, secret })))
}

/// A request to set one key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutValue {
    /// The new value (any JSON).
    pub value: Value,
    /// Store it encrypted as a secret.
    #[serde(default)]
    pub secret: bool,
    /// Why (recorded in the event).
    pub reason: Option<String>,
}

/// `PUT /api/v1/services/{service}/values/{key}`: sets one key. `If-Match: <epoch>` makes
/// it a compare-and-set (409 with the current epoch when the store moved on).
#[utoipa::path(put, path = "/api/v1/services/{service}/values/{key}", tag = "config", params(KeyPath, IfMatch),
    request_body = PutValue,
    security(("bearer" = ["config.write"])),
    responses((status = 200, body = ReceiptOut), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn put_value(
    State(app): State<App>,
    who: Principal,
    rid: RequestId,
    if_match: IfMatch,
    ApiPath(p): ApiPath<KeyPath>,
    ApiJson(req): ApiJson<PutValue>,
) -> ApiResult<Response> {
    let change = if req.secret {
        seal(&app, &p.service, p.key, &req.value)?
    } else {
        Change::Set { service: p.service, key: p.key, value: req.value }
    };
    let r = commit(&app, &who, rid, req.reason, if_match.0, vec![change]).await?;
    Ok(receipt_response(axum::http::StatusCode::OK, r))
}

/// Query of a delete.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReasonQuery {
    /// Why (recorded in the event).
    pub reason: Option<String>,
}

/// `DELETE /api/v1/services/{service}/values/{key}`: unsets one key (`If-Match` as for PUT).
#[utoipa::path(delete, path = "/api/v1/services/{service}/values/{key}", tag = "config", params(KeyPath, ReasonQuery, IfMatch),
    security(("bearer" = ["config.write"])),
    responses((status = 200, body = ReceiptOut), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn delete_value(
    State(app): State<App>,
    who: Principal,
    rid: RequestId,
    if_match: IfMatch,
    ApiPath(p): ApiPath<KeyPath>,
    ApiQuery(q): ApiQuery<ReasonQuery>,
) -> ApiResult<Response> {
    let r =
        commit(&app, &who, rid, q.reason, if_match.0, vec![Change::Unset { service: p.service, key: p.key }]).await?;
    Ok(receipt_response(axum::http::StatusCode::OK, r))
}

/// Several changes to one service, all or none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchValues {
    /// Keys to set to plain values.
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    /// Keys to set to secret values (encrypted before they reach the log).
    #[serde(default)]
    pub secrets: BTreeMap<String, Value>,
    /// Keys to remove.
    #[serde(default)]
    pub unset: Vec<String>,
    /// Why (recorded in the events).
    pub reason: Option<String>,
}

/// `PATCH /api/v1/services/{service}/values`: one changeset of sets, secret sets and unsets
/// (`If-Match` as for PUT).
#[utoipa::path(patch, path = "/api/v1/services/{service}/values", tag = "config", params(ServicePath, IfMatch),
    request_body = PatchValues,
    security(("bearer" = ["config.write"])),
    responses((status = 200, body = ReceiptOut), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn patch_values(
    State(app): State<App>,
    who: Principal,
    rid: RequestId,
    if_match: IfMatch,
    ApiPath(p): ApiPath<ServicePath>,
    ApiJson(req): ApiJson<PatchValues>,
) -> ApiResult<Response> {
    let changes = value_changes(&app, &p.service, req.set, &req.secrets, req.unset, 0)?;
    let r = commit(&app, &who, rid, req.reason, if_match.0, changes).await?;
    Ok(receipt_response(axum::http::StatusCode::OK, r))
}

/// The changes of a body's `set`, `secrets` (sealed here) and `unset` to `service`, in that
/// order, after `room` changes the caller adds; 413 when they would not fit one changeset.
pub(super) fn value_changes(
    app: &App,
    service: &str,
    set: BTreeMap<String, Value>,
    secrets: &BTreeMap<String, Value>,
    unset: Vec<String>,
    room: usize,
) -> ApiResult<Vec<Change>> {
    let total = set.len() + secrets.len() + unset.len();
    let max = confstore_core::limits::EVENTS_PER_CHANGESET_MAX - room;
    if total > max {
        return Err(ApiError::too_large(format!(
            "the changeset has {total} changes; at most {max} are allowed; nothing was changed"
        )));
    }
    let mut changes = Vec::with_capacity(total + room);
    for (key, value) in set {
        changes.push(Change::Set { service: service.to_owned(), key, value });
    }
    for (key, value) in secrets {
        changes.push(seal(app, service, key.clone(), value)?);
    }
    for key in unset {
        changes.push(Change::Unset { service: service.to_owned(), key });
    }
    Ok(changes)
}

/// Encrypts `value` for `service`.`key` with the current master key.
fn seal(app: &App, service: &str, key: String, value: &Value) -> ApiResult<Change> {
    let store_id = LiveView::of(app)?.store.store_id();
    secret::Sealer::new(&app.keys.master, app.keys.master_version, store_id).change(service, key, value).map_err(|e| {
        match e {
            e @ secret::SealError::Value(_) => ApiError::unprocessable(e.to_string()),
            secret::SealError::Random(e) => {
                tracing::error!(error = %e, "the operating system's random source failed");
                ApiError::internal()
            }
        }
    })
}

/// Decrypts a stored secret of `service`.`key` with the master key of its version (the
/// current one, or the previous one during a rotation).
pub fn open_secret(
    app: &App,
    store_id: &confstore_core::StoreId,
    service: &str,
    key: &str,
    envelope: &secret::Envelope,
) -> ApiResult<Plaintext> {
    let keys = &app.keys;
    let master = if envelope.key_version == keys.master_version {
        &keys.master
    } else if envelope.key_version + 1 == keys.master_version
        && let Some(prev) = &keys.previous_master
    {
        prev
    } else {
        return Err(ApiError::unavailable(format!(
            "the secret {service}.{key} is encrypted with master key version {}, which this server does not hold \
             (current {})",
            envelope.key_version, keys.master_version
        )));
    };
    secret::open(master, store_id, service, key, envelope).map_err(|e| {
        app.metrics.signature_failure("secret");
        ApiError::unavailable(format!("the secret {service}.{key} cannot be decrypted: {e}"))
    })
}

/// `GET /api/v1/services/{service}/schema`: the service's JSON Schema (404 if none).
#[utoipa::path(get, path = "/api/v1/services/{service}/schema", tag = "config", params(ServicePath),
    security(("bearer" = ["config.read"])),
    responses((status = 200, description = "the schema (JSON Schema 2020-12)", body = super::bodies::JsonSchemaDoc),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_schema(ApiPath(p): ApiPath<ServicePath>, l: LiveView) -> ApiResult<Response> {
    let found = l.model.read(|m| {
        m.state
            .services
            .contains_key(&p.service)
            .then(|| m.state.schemas.get(&p.service).map(|s| (s.json.clone(), s.hash)))
    });
    let Some(schema) = found else { return Err(ApiError::not_found(format!("unknown service {:?}", p.service))) };
    let Some((json, hash)) = schema else {
        return Err(ApiError::not_found(format!("service {:?} has no schema", p.service)));
    };
    let value: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
    let mut resp = Json(value).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", hex::encode(hash))) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

/// `PUT /api/v1/services/{service}/schema`: sets the service's JSON Schema (2020-12); refused
/// (422, every violation listed) if the current values do not satisfy it.
#[utoipa::path(put, path = "/api/v1/services/{service}/schema", tag = "config", params(ServicePath, IfMatch),
    request_body(content = super::bodies::JsonSchemaDoc, description = "a JSON Schema 2020-12 object"),
    security(("bearer" = ["config.write"])),
    responses((status = 200, body = ReceiptOut), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn put_schema(
    State(app): State<App>,
    who: Principal,
    rid: RequestId,
    if_match: IfMatch,
    ApiPath(p): ApiPath<ServicePath>,
    ApiJson(schema): ApiJson<Value>,
) -> ApiResult<Response> {
    let r = commit(&app, &who, rid, None, if_match.0, vec![Change::SetSchema { service: p.service, schema }]).await?;
    Ok(receipt_response(axum::http::StatusCode::OK, r))
}

/// A revealed secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revealed {
    /// Service.
    pub service: String,
    /// Key.
    pub key: String,
    /// The plaintext value.
    pub value: Value,
}

/// `POST /api/v1/services/{service}/secrets/{key}/reveal`: the plaintext of a secret. The
/// reveal is recorded (a `secret_revealed` event) before the answer; if it cannot be, the
/// secret is not shown.
#[utoipa::path(post, path = "/api/v1/services/{service}/secrets/{key}/reveal", tag = "secrets", params(KeyPath),
    security(("bearer" = ["secrets.reveal"])),
    responses((status = 200, body = Revealed), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn reveal_secret(
    State(app): State<App>,
    who: Principal,
    rid: RequestId,
    ApiPath(p): ApiPath<KeyPath>,
    l: LiveView,
) -> ApiResult<Response> {
    let store_id = l.store.store_id();
    let stored = l.model.read(|m| {
        m.state.services.contains_key(&p.service).then(|| m.state.value(&p.service, &p.key).map(str::to_owned))
    });
    let Some(stored) = stored else { return Err(ApiError::not_found(format!("unknown service {:?}", p.service))) };
    let Some(stored) = stored else { return Err(ApiError::not_found(format!("{}.{} is not set", p.service, p.key))) };
    let Some(envelope) = secret::envelope_of(&stored) else {
        return Err(ApiError::unprocessable(format!("{}.{} is not a secret; read it with GET", p.service, p.key)));
    };
    let plaintext = open_secret(&app, &store_id, &p.service, &p.key, &envelope)?;
    commit(&app, &who, rid, None, None, vec![Change::RevealSecret { service: p.service.clone(), key: p.key.clone() }])
        .await
        .map_err(|e| {
            ApiError::unavailable(format!(
                "{}; the secret was not shown because the reveal could not be recorded",
                e.body.message
            ))
        })?;
    let value: Value = serde_json::from_str(&plaintext.0).unwrap_or(Value::Null);
    let mut resp = Json(Revealed { service: p.service, key: p.key, value }).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
