//! The transparency log's routes (docs/format.md §19, ADR 0027): the latest signed
//! checkpoint, and inclusion and consistency proofs from the stored Merkle tree. Proof hashes
//! are base64 (standard alphabet, padded), as in C2SP checkpoints and RFC 6962's JSON API.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::blocking;
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, LiveView};

/// `GET /api/v1/checkpoint`: the latest signed checkpoint of the log's Merkle tree, a C2SP
/// `tlog-checkpoint` signed note (`text/plain`): origin `confstore/<store id>`, tree size,
/// base64 root, a blank line, the store key's signature line. Made every 100 events or 10 s.
/// Like every read that needs the log, 503 `read_only` in the read-only fallback.
#[utoipa::path(get, path = "/api/v1/checkpoint", tag = "audit",
    security(("bearer" = ["config.read"])),
    responses(
        (status = 200, description = "C2SP signed checkpoint note", content_type = "text/plain", body = String),
        (status = 503, body = crate::error::ErrorBody)))]
pub async fn checkpoint(State(app): State<App>, _live: LiveView) -> ApiResult<Response> {
    let Some(p) = app.checkpoints.latest() else {
        let why = app.checkpoints.halted().unwrap_or_else(|| "no checkpoint was published yet; retry shortly".into());
        return Err(ApiError::unavailable(why));
    };
    let mut resp = p.note.to_string().into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Query of an inclusion proof.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    /// The event (its seq; leaf `seq - 1`).
    #[param(minimum = 1)]
    pub seq: u64,
    /// Size of the tree (a checkpoint's size); at least `seq`.
    #[param(minimum = 1)]
    pub size: u64,
}

/// An inclusion proof (RFC 6962 §2.1.1 audit path).
#[derive(Debug, Serialize, ToSchema)]
pub struct InclusionOut {
    /// The event.
    pub seq: u64,
    /// The tree size.
    pub size: u64,
    /// The event's hash (hex, format.md §4): the leaf's data.
    pub event_hash: String,
    /// The audit path, leaf to root, base64.
    pub hashes: Vec<String>,
}

/// `GET /api/v1/proof/inclusion?seq=&size=`: the proof that event `seq` is in the tree of
/// `size` events.
#[utoipa::path(get, path = "/api/v1/proof/inclusion", tag = "audit", params(InclusionQuery),
    security(("bearer" = ["config.read"])),
    responses((status = 200, body = InclusionOut), (status = 404, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub async fn inclusion(ApiQuery(q): ApiQuery<InclusionQuery>, l: LiveView) -> ApiResult<Json<InclusionOut>> {
    if q.seq == 0 || q.seq > q.size {
        return Err(ApiError::unprocessable(format!(
            "seq must be between 1 and size (seq {}, size {})",
            q.seq, q.size
        )));
    }
    blocking(move || {
        crate::checkpoints::extend_to_head(&l)?;
        let (hash, proof) = l.readers.with(|r| {
            r.snapshot(|r| {
                let proof = r.inclusion_proof(q.seq, q.size)?;
                let mut hash = None;
                r.for_each_event(q.seq, |ev| {
                    hash = Some(ev.hash);
                    Ok(false)
                })?;
                Ok((hash, proof))
            })
        })?;
        let hash = hash.ok_or_else(|| ApiError::not_found(format!("there is no event {}", q.seq)))?;
        Ok(Json(InclusionOut {
            seq: q.seq,
            size: q.size,
            event_hash: hash.to_hex(),
            hashes: proof.iter().map(|h| B64.encode(h)).collect(),
        }))
    })
    .await
}

/// Query of a consistency proof.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// The older tree's size.
    #[param(minimum = 1)]
    pub from: u64,
    /// The newer tree's size, at least `from`.
    #[param(minimum = 1)]
    pub to: u64,
}

/// A consistency proof (RFC 6962 §2.1.2).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsistencyOut {
    /// The older tree's size.
    pub from: u64,
    /// The newer tree's size.
    pub to: u64,
    /// The proof, base64.
    pub hashes: Vec<String>,
}

/// `GET /api/v1/proof/consistency?from=&to=`: the proof that the tree of `from` events is a
/// prefix of the tree of `to`.
#[utoipa::path(get, path = "/api/v1/proof/consistency", tag = "audit", params(ConsistencyQuery),
    security(("bearer" = ["config.read"])),
    responses((status = 200, body = ConsistencyOut), (status = 404, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub async fn consistency(ApiQuery(q): ApiQuery<ConsistencyQuery>, l: LiveView) -> ApiResult<Json<ConsistencyOut>> {
    if q.from == 0 || q.from > q.to {
        return Err(ApiError::unprocessable(format!("from must be between 1 and to (from {}, to {})", q.from, q.to)));
    }
    blocking(move || {
        crate::checkpoints::extend_to_head(&l)?;
        let proof = l.readers.with(|r| r.consistency_proof(q.from, q.to))?;
        Ok(Json(ConsistencyOut { from: q.from, to: q.to, hashes: proof.iter().map(|h| B64.encode(h)).collect() }))
    })
    .await
}
