//! Health, readiness, metrics and the OpenAPI document: open (no token) on loopback; put a
//! proxy with access control in front when listening elsewhere (docs/operations.md).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::bodies::{
    AppendFailing, HealthLkg, HealthOut, LiveStream, LiveStreamOff, OpenApiDoc, Progress, Projections, ReadyLkg,
    ReadyOut, Writes, WritesAccepted,
};
use crate::app::{App, Mode};

/// `GET /healthz`: the process is alive; says which mode it is in.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "alive: {status, mode}", body = HealthOut)))]
pub async fn healthz(State(app): State<App>) -> Json<HealthOut> {
    let mode = app.mode();
    let mut out = HealthOut { status: "ok".into(), mode: mode.name().into(), reason: None, lkg: None };
    if let Mode::Fallback(fb) = &*mode {
        out.reason = Some(fb.why.clone());
        out.lkg = Some(match &fb.lkg {
            Ok(c) => HealthLkg::Usable { usable: true, seq: c.seq, epoch: c.epoch, stale: fb.stale.clone() },
            Err(why) => HealthLkg::Refused { usable: false, error: why.clone() },
        });
    }
    Json(out)
}

/// `GET /readyz`: 200 when requests can be served — live with the projections' lag, or in
/// the fallback with a verified LKG file — else 503 with the reason. While appends fail in
/// the store (a full disk, an I/O error) it stays 200 — reads are served — and `writes` is
/// `{"failing": {"error", "at"}}`, the last failure, until an append commits again.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "ready", body = ReadyOut), (status = 503, description = "not ready", body = ReadyOut)))]
pub async fn readyz(State(app): State<App>) -> Response {
    let mode = app.mode();
    let signing_key_id = app.keys.signing.verifying_key().key_id().to_hex();
    let schema_version = confstore_log::db::schema_version();
    let body = match &*mode {
        Mode::Live(l) => {
            let (seq, epoch) = l.model.read(|m| (m.state.seq, m.state.epoch));
            let progress = |at: u64| Progress { seq: at, lag: seq.saturating_sub(at) };
            let search = app.projections.search_seq.load(Ordering::Relaxed);
            let lkg = app.projections.lkg_seq.load(Ordering::Relaxed);
            let refusal = l.store.current_refusal();
            let mqtt = app.projections.mqtt_seq.load(Ordering::Relaxed);
            // Advice only: a dead broker never makes the server unready (writes go on).
            let live_stream = if app.projections.mqtt_enabled.load(Ordering::Relaxed) {
                LiveStream::On {
                    connected: app.projections.mqtt_connected.load(Ordering::Relaxed),
                    seq: mqtt,
                    lag: seq.saturating_sub(mqtt),
                }
            } else {
                LiveStream::Off(LiveStreamOff::Off)
            };
            // A refusal is the store's decision (it says why); a failure is the disk's.
            let failing = app.appends.failing();
            let writes = match (&refusal, &failing) {
                (Some(why), _) => Writes::Refused { refused: why.clone() },
                (None, Some(f)) => {
                    Writes::Failing { failing: AppendFailing { error: f.error.clone(), at: f.at.clone() } }
                }
                (None, None) => Writes::Accepted(WritesAccepted::Accepted),
            };
            // Failing appends do not take the server out of rotation: reads are served, and
            // the next write (through a balancer that still sends it) tells whether the
            // store recovered.
            ReadyOut {
                ready: refusal.is_none(),
                mode: mode.name().into(),
                writes,
                seq: Some(seq),
                epoch: Some(epoch),
                schema_version,
                signing_key_id,
                projections: Some(Projections {
                    read_model: progress(seq),
                    search: progress(search),
                    lkg: progress(lkg),
                }),
                live_stream: Some(live_stream),
                lkg: None,
            }
        }
        Mode::Fallback(fb) => ReadyOut {
            ready: fb.lkg.is_ok(),
            mode: mode.name().into(),
            writes: Writes::Refused { refused: fb.why.clone() },
            seq: None,
            epoch: None,
            schema_version,
            signing_key_id,
            projections: None,
            live_stream: None,
            lkg: Some(match &fb.lkg {
                Ok(c) => ReadyLkg::Served { seq: c.seq, epoch: c.epoch, stale: fb.stale.clone() },
                Err(why) => ReadyLkg::Refused { error: why.clone() },
            }),
        },
    };
    let status = if body.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(app): State<App>) -> Response {
    super::fleet::refresh_metrics(&app);
    let mut resp = app.metrics.render().into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// `GET /api/v1/openapi.json`: this API's OpenAPI 3.1 document, generated from the code.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "ops",
    responses((status = 200, description = "OpenAPI 3.1 document", body = OpenApiDoc)))]
pub async fn openapi(Extension(doc): Extension<Arc<Value>>) -> Json<Value> {
    Json((*doc).clone())
}

/// `GET /api/v1/stream`: where services find the MQTT stream — the broker URL and how to log
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
