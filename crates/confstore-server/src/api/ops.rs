//! Health, readiness, metrics and the OpenAPI document: open (no token) on loopback; put a
//! proxy with access control in front when listening elsewhere (docs/operations.md).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::app::{App, Mode};

/// `GET /healthz`: the process is alive; says which mode it is in.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "alive: {status, mode}", body = Object)))]
pub async fn healthz(State(app): State<App>) -> Json<Value> {
    let mode = app.mode();
    let mut out = json!({"status": "ok", "mode": mode.name()});
    if let Mode::Fallback(fb) = &*mode {
        out["reason"] = json!(fb.why);
        out["lkg"] = match &fb.lkg {
            Ok(c) => json!({"usable": true, "seq": c.seq, "epoch": c.epoch, "stale": fb.stale}),
            Err(why) => json!({"usable": false, "error": why}),
        };
    }
    Json(out)
}

/// `GET /readyz`: 200 when requests can be served — live with the projections' lag, or in
/// the fallback with a verified LKG file — else 503 with the reason. While appends fail in
/// the store (a full disk, an I/O error) it stays 200 — reads are served — and `writes` is
/// `{"failing": {"error", "at"}}`, the last failure, until an append commits again.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "ready", body = Object), (status = 503, description = "not ready", body = Object)))]
pub async fn readyz(State(app): State<App>) -> Response {
    let mode = app.mode();
    let key_id = app.keys.signing.verifying_key().key_id().to_hex();
    let schema_version = confstore_log::db::schema_version();
    let (status, body) = match &*mode {
        Mode::Live(l) => {
            let (seq, epoch) = l.model.read(|m| (m.state.seq, m.state.epoch));
            let search = app.projections.search_seq.load(Ordering::Relaxed);
            let lkg = app.projections.lkg_seq.load(Ordering::Relaxed);
            let refusal = l.store.current_refusal();
            let mqtt = app.projections.mqtt_seq.load(Ordering::Relaxed);
            // Advice only: a dead broker never makes the server unready (writes go on).
            let live_stream = if app.projections.mqtt_enabled.load(Ordering::Relaxed) {
                json!({"connected": app.projections.mqtt_connected.load(Ordering::Relaxed),
                       "seq": mqtt, "lag": seq.saturating_sub(mqtt)})
            } else {
                json!("off")
            };
            // A refusal is the store's decision (it says why); a failure is the disk's.
            let failing = app.appends.failing();
            let writes = match (&refusal, &failing) {
                (Some(why), _) => json!({"refused": why}),
                (None, Some(f)) => json!({"failing": {"error": f.error, "at": f.at}}),
                (None, None) => json!("accepted"),
            };
            // Failing appends do not take the server out of rotation: reads are served, and
            // the next write (through a balancer that still sends it) tells whether the
            // store recovered.
            let ready = refusal.is_none();
            let body = json!({
                "ready": ready,
                "mode": mode.name(),
                "writes": writes,
                "seq": seq,
                "epoch": epoch,
                "schema_version": schema_version,
                "signing_key_id": key_id,
                "projections": {
                    "read_model": {"seq": seq, "lag": 0},
                    "search": {"seq": search, "lag": seq.saturating_sub(search)},
                    "lkg": {"seq": lkg, "lag": seq.saturating_sub(lkg)},
                },
                "live_stream": live_stream,
            });
            (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
        }
        Mode::Fallback(fb) => {
            let usable = fb.lkg.is_ok();
            let body = json!({
                "ready": usable,
                "mode": mode.name(),
                "writes": {"refused": fb.why},
                "lkg": match &fb.lkg {
                    Ok(c) => json!({"seq": c.seq, "epoch": c.epoch, "stale": fb.stale}),
                    Err(why) => json!({"error": why}),
                },
                "schema_version": schema_version,
                "signing_key_id": key_id,
            });
            (if usable { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
        }
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(app): State<App>) -> Response {
    let mut resp = app.metrics.render().into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// `GET /api/v1/openapi.json`: this API's OpenAPI 3.1 document, generated from the code.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "ops",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi(Extension(doc): Extension<Arc<Value>>) -> Json<Value> {
    Json((*doc).clone())
}

/// `GET /api/v1/stream`: where services find the live stream — the broker URL and how to log
/// in — so a client needs only the server's URL and its token (any valid token).
#[utoipa::path(get, path = "/api/v1/stream", tag = "ops",
    security(("bearer" = [])),
    responses((status = 200, description = "the live stream's broker", body = crate::app::StreamAdvert),
              (status = 401, description = "no valid token", body = crate::error::ErrorBody)))]
pub async fn stream(
    State(app): State<App>,
    headers: axum::http::HeaderMap,
) -> crate::error::ApiResult<Json<crate::app::StreamAdvert>> {
    crate::auth::principal_of(&app, &headers).await?;
    let off = crate::app::StreamAdvert { mqtt_url: None, embedded: false, login: "broker".into() };
    Ok(Json(app.stream.get().cloned().unwrap_or(off)))
}
