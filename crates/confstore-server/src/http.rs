//! The outermost middleware of every route: a request id (kept from `X-Request-Id` when
//! well-formed), a tracing span carrying it and the epoch (so every log line of the request
//! has both), one access-log line, and the request metric.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::app::{App, Mode};
use crate::error::ApiError;
use crate::extract::RequestId;

/// The request-id header.
pub const REQUEST_ID: &str = "x-request-id";

/// A new request id: 16 hex digits.
pub fn new_request_id() -> String {
    let mut b = [0u8; 8];
    // A request id only correlates logs; an all-zero id if the OS source fails is harmless.
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

fn valid_request_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= confstore_core::limits::REQUEST_ID_BYTES_MAX
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// See the module doc.
pub async fn observe(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let rid = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| valid_request_id(s))
        .map_or_else(new_request_id, str::to_owned);
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = req.method().clone();
    let epoch = match &*app.mode() {
        Mode::Live(live) => live.model.read(|m| m.state.epoch),
        Mode::Fallback(fb) => fb.lkg.as_ref().map_or(0, |c| c.epoch),
    };
    req.extensions_mut().insert(RequestId(rid.clone()));
    let span = tracing::info_span!("request", request_id = %rid, method = %method, route = %route, epoch);
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    span.in_scope(|| {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::warn!(status, ms, "answered");
        } else {
            tracing::info!(status, ms, "answered");
        }
    });
    app.metrics.request(method.as_str(), &route, status);
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

/// The answer to a path no route matches.
pub async fn not_found(req: Request) -> Response {
    tracing::info!(method = %req.method(), "no such route");
    ApiError::not_found(
        "no such route; GET /api/v1/openapi.json lists them (the API is under /api/v1, health at /healthz)",
    )
    .into_response()
}

/// The answer to a known path with a method it does not support.
pub async fn method_not_allowed() -> Response {
    let mut e = ApiError::bad_request("this route does not support that method; see GET /api/v1/openapi.json");
    e.status = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    e.body.error = "method_not_allowed";
    e.into_response()
}
