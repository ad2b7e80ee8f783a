//! The routes: one module per group, each handler annotated for the OpenAPI document
//! (`#[utoipa::path]`), the router and the document built together by [`router`] so they
//! always list the same routes.

pub mod bodies;
pub mod config;
pub mod console;
pub mod fleet;
pub mod history;
pub mod masked;
pub mod ops;
pub mod rollout;
pub mod tlog;
pub mod tokens;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use confstore_core::state::{Change, ChangesetDraft};
use confstore_log::Receipt;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::auth::RouteRoles;
use crate::error::{ApiError, ApiResult};
use crate::extract::{LiveView, Principal, RequestId};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "confstore",
        description = "Event-sourced configuration store: every change an Ed25519-signed, hash-chained event. \
                       Bearer tokens carry one role: config.read, config.write, secrets.reveal, audit.read or admin \
                       (each operation's `security` names the role it needs).",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerScheme),
    components(schemas(crate::error::ErrorBody, masked::MaskedSecret))
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The whole HTTP surface: routes, auth, request ids, limits, and the OpenAPI document
/// (also served at `/api/v1/openapi.json`). Tests call this in-process.
pub fn router(app: App) -> (Router, serde_json::Value) {
    let (routes, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(config::list_services, config::register_service))
        .routes(routes!(config::snapshot))
        .routes(routes!(config::patch_values))
        .routes(routes!(config::get_value, config::put_value, config::delete_value))
        .routes(routes!(config::get_schema, config::put_schema))
        .routes(routes!(config::reveal_secret))
        .routes(routes!(console::keys))
        .routes(routes!(console::whoami))
        .routes(routes!(console::changesets))
        .routes(routes!(console::verify))
        .routes(routes!(console::head_events))
        .routes(routes!(history::history))
        .routes(routes!(history::events))
        .routes(routes!(history::state))
        .routes(routes!(history::diff))
        .routes(routes!(history::rollback))
        .routes(routes!(history::search))
        .routes(routes!(history::audit))
        .routes(routes!(history::head))
        .routes(routes!(history::export))
        .routes(routes!(tlog::checkpoint))
        .routes(routes!(tlog::inclusion))
        .routes(routes!(tlog::consistency))
        .routes(routes!(fleet::fleet))
        .routes(routes!(fleet::instances))
        .routes(routes!(fleet::report))
        .routes(routes!(rollout::rollout, rollout::start))
        .routes(routes!(rollout::promote))
        .routes(routes!(rollout::abort))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::stream))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .split_for_parts();
    let mut doc = serde_json::to_value(&doc).unwrap_or_default();
    document_common_errors(&mut doc);
    document_u64(&mut doc);
    let roles = Arc::new(RouteRoles::from_openapi(&doc));
    let router = crate::web::routes(routes)
        .route_layer(axum::middleware::from_fn_with_state((app.clone(), Arc::clone(&roles)), crate::auth::authorize))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), crate::http::observe))
        .fallback(crate::http::not_found)
        .method_not_allowed_fallback(crate::http::method_not_allowed)
        .layer(DefaultBodyLimit::max(confstore_core::limits::REQUEST_BYTES_MAX))
        // A declared length over the limit is refused before any of the body is read.
        .layer(axum::middleware::from_fn(refuse_declared_oversize))
        // A body trickled in byte by byte must not hold its connection for ever.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(std::time::Duration::from_secs(
            confstore_core::limits::HTTP_BODY_TIMEOUT_SECS,
        )))
        .layer(axum::Extension(Arc::new(doc.clone())))
        .layer(axum::Extension(roles))
        .layer(axum::middleware::map_response(nosniff))
        .with_state(app);
    (router, doc)
}

/// 413 at once for a request whose `Content-Length` is over
/// [`REQUEST_BYTES_MAX`](confstore_core::limits::REQUEST_BYTES_MAX): without it a client
/// could hold a connection while trickling megabytes that will be refused anyway.
async fn refuse_declared_oversize(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let max = confstore_core::limits::REQUEST_BYTES_MAX;
    if declared.is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX)) {
        let e = ApiError::too_large(format!("the request body is larger than {max} bytes; nothing was changed"));
        let mut resp = axum::response::IntoResponse::into_response(e);
        // The body is not read: the connection cannot carry another request.
        resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        return resp;
    }
    next.run(req).await
}

/// `X-Content-Type-Options: nosniff` on every answer — JSON, errors, the fallback's 404,
/// the UI's files — so no browser ever runs an answer as something other than its declared
/// type (an error echoing request text, say, sniffed as HTML).
async fn nosniff(mut resp: axum::response::Response) -> axum::response::Response {
    resp.headers_mut()
        .insert(axum::http::header::X_CONTENT_TYPE_OPTIONS, axum::http::HeaderValue::from_static("nosniff"));
    resp
}

/// What an acknowledged write returns (and its epoch as the `ETag`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptOut {
    /// The new epoch.
    pub epoch: u64,
    /// Seq of the changeset's first event.
    pub first_seq: u64,
    /// Seq of its last event.
    pub last_seq: u64,
    /// Hash of the last event: the new head (hex).
    pub head_hash: String,
    /// When it was committed (RFC 3339).
    pub time: String,
}

impl From<Receipt> for ReceiptOut {
    fn from(r: Receipt) -> Self {
        ReceiptOut {
            epoch: r.epoch,
            first_seq: r.first_seq,
            last_seq: r.last_seq,
            head_hash: r.hash.to_hex(),
            time: time_text(r.time_ms),
        }
    }
}

/// Unix milliseconds as RFC 3339 UTC.
pub fn time_text(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX))
        .map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// Runs blocking database work off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> ApiResult<T> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "a blocking task failed");
        ApiError::internal()
    })?
}

/// Appends one changeset for `who`, measuring it; the answer once it is durable.
pub async fn commit(
    app: &App,
    who: &Principal,
    rid: RequestId,
    reason: Option<String>,
    expected_epoch: Option<u64>,
    changes: Vec<Change>,
) -> ApiResult<ReceiptOut> {
    let live = LiveView::of(app)?;
    // The publisher and projector are woken from this task, not from the append thread.
    let (wakes, hand) = live.model.commit_wakes();
    let draft = ChangesetDraft {
        actor: who.actor(),
        reason: reason.unwrap_or_default(),
        request_id: rid.0,
        expected_epoch,
        changes,
    };
    let started = Instant::now();
    let answer = live.appender.submit(app.clone(), Arc::clone(&live.store), draft, hand);
    drop(live);
    let result = match answer {
        Some(answer) => match answer.await {
            Ok(r) => r.map_err(ApiError::from),
            Err(_) => {
                tracing::error!("the append thread dropped a write unanswered");
                Err(ApiError::internal())
            }
        },
        None => {
            tracing::error!("the append thread is gone");
            Err(ApiError::internal())
        }
    };
    drop(wakes);
    let outcome = match &result {
        Ok(_) => "committed",
        Err(e) if e.status.is_client_error() => "rejected",
        Err(_) => "failed",
    };
    app.metrics.write(outcome, started.elapsed().as_secs_f64());
    if let Ok(r) = &result {
        tracing::info!(epoch = r.epoch, first_seq = r.first_seq, last_seq = r.last_seq, "committed");
    }
    result.map(ReceiptOut::from)
}

/// Checks a `limit` query parameter.
pub fn page_size(limit: Option<usize>) -> ApiResult<usize> {
    match limit {
        None => Ok(confstore_core::limits::PAGE_SIZE_DEFAULT),
        Some(0) => Err(ApiError::unprocessable("limit must be at least 1")),
        Some(n) if n > confstore_core::limits::PAGE_SIZE_MAX => Err(ApiError::unprocessable(format!(
            "limit {n} is over the page size limit {}; page with `after`",
            confstore_core::limits::PAGE_SIZE_MAX
        ))),
        Some(n) => Ok(n),
    }
}

/// Adds the answers every operation can give to the document: 400 (a malformed request:
/// body, query, path or header), 401 and 403 on the operations that need a token, 413 on
/// those with a body, 503 (read-only fallback, database failure) on the API's.
fn document_common_errors(doc: &mut serde_json::Value) {
    let error = |description: &str| {
        serde_json::json!({"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
    };
    let Some(paths) = doc.get_mut("paths").and_then(serde_json::Value::as_object_mut) else { return };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for op in item.values_mut() {
            let secured = op.get("security").is_some();
            let mut compare_and_set = false;
            for p in op.get("parameters").and_then(serde_json::Value::as_array).into_iter().flatten() {
                // The parameter of `extract::IfMatch`.
                compare_and_set |= p["in"] == "header" && p["name"] == "If-Match";
            }
            let has_body = op.get("requestBody").is_some();
            let Some(responses) = op.get_mut("responses").and_then(serde_json::Value::as_object_mut) else { continue };
            let mut add = |code: &str, description: &str| {
                responses.entry(code.to_owned()).or_insert_with(|| error(description));
            };
            if path.starts_with("/api/v1/") && path != "/api/v1/openapi.json" {
                add("400", "malformed request");
                add("503", "read-only fallback or database unavailable; nothing was changed");
            }
            if secured {
                add("401", "no, malformed, unknown or revoked bearer token");
                add("403", "the token lacks the role or the service scope; recorded in the audit trail");
            }
            if compare_and_set {
                add("409", "the store is not at the If-Match epoch; current_epoch says where it is");
            }
            if has_body {
                add("413", "request body too large");
            }
        }
    }
}

/// utoipa documents `u64` as `format: int64` (at most 2^63 - 1), but the server parses the
/// whole u64 range: say so, so that clients and fuzzers agree with the parser.
fn document_u64(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if map.get("format").and_then(serde_json::Value::as_str) == Some("int64")
                && map.get("minimum").and_then(serde_json::Value::as_u64) == Some(0)
            {
                map.remove("format");
                map.insert("maximum".into(), serde_json::Value::from(u64::MAX));
            }
            map.values_mut().for_each(document_u64);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(document_u64),
        _ => {}
    }
}
