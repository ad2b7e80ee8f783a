//! Extractors whose rejections are JSON [`ApiError`]s (axum's own answer in plain text),
//! and the per-request values the middleware leaves for handlers.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use confstore_core::auth::Role;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body, read exactly: `Content-Type` must be JSON (`application/json` or
/// `application/*+json`) in UTF-8 (any other `charset` is 415); the text is parsed with
/// [`confstore_core::json::parse_exact`], so a number that would not be kept exactly, a
/// negative zero or a repeated key is 422 naming it and where it is (docs/format.md §8);
/// then `T` is read from the parsed value. Nothing is changed by a refused body.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        json_content_type(req.headers())?;
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| body_rejection(&e))?;
        let value = confstore_core::json::parse_exact_slice(&bytes).map_err(|e| {
            if e.is_syntax() {
                ApiError::bad_request(format!(
                    "the request body is not JSON ({e}); send a JSON body with Content-Type: application/json"
                ))
            } else {
                ApiError::unprocessable(format!("{e}; nothing was changed"))
            }
        })?;
        serde_json::from_value::<T>(value).map(ApiJson).map_err(|e| {
            ApiError::unprocessable(format!(
                "failed to deserialize the JSON body into the target type: {e}; nothing was changed"
            ))
        })
    }
}

/// Checks that `Content-Type` names JSON, and UTF-8 if it names a charset at all (RFC 8259
/// §8.1: JSON exchanged between systems is UTF-8).
fn json_content_type(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let wrong = || ApiError::bad_request("send a JSON body with Content-Type: application/json");
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE) else { return Err(wrong()) };
    let text = value.to_str().map_err(|_| wrong())?;
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let is_json = essence
        .split_once('/')
        .is_some_and(|(ty, sub)| ty == "application" && (sub == "json" || sub.ends_with("+json")));
    if !is_json {
        return Err(wrong());
    }
    for param in parts {
        let Some((name, value)) = param.split_once('=') else { continue };
        if !name.trim().eq_ignore_ascii_case("charset") {
            continue;
        }
        let charset = value.trim().trim_matches('"');
        if !charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("utf8") {
            let shown: String = charset.chars().take(40).collect();
            return Err(ApiError::unsupported_media_type(format!(
                "the body's charset {shown:?} is not supported: send JSON in UTF-8 (Content-Type: application/json, \
                 or application/json; charset=utf-8); nothing was changed"
            )));
        }
    }
    Ok(())
}

fn body_rejection(e: &axum::extract::rejection::BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(format!(
            "the request body is larger than {} bytes; nothing was changed",
            confstore_core::limits::REQUEST_BYTES_MAX
        ))
    } else {
        ApiError::bad_request(format!("{}; send the request body again", e.body_text()))
    }
}

/// Path parameters.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| ApiError::bad_request(e.body_text()))
    }
}

/// Query parameters.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request(e.body_text()))
    }
}

/// The `If-Match` epoch of a compare-and-set write, if given (`12` or `"12"`).
#[derive(Debug, Clone, Copy)]
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get(axum::http::header::IF_MATCH) else { return Ok(IfMatch(None)) };
        let text = v.to_str().unwrap_or("").trim();
        let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
        text.parse::<u64>().map(|e| IfMatch(Some(e))).map_err(|_| {
            ApiError::bad_request("If-Match must be the epoch the change is based on, e.g. If-Match: 12 (or \"12\")")
        })
    }
}

/// Who is asking: set by the auth middleware on routes that need a role.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Token id.
    pub token_id: String,
    /// Token name (the actor recorded in events: `token:<name>`).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its service scope, if any.
    pub service: Option<String>,
}

impl Principal {
    /// The actor written into events.
    pub fn actor(&self) -> String {
        format!("token:{}", self.name)
    }

    /// Whether the token may see `service`.
    pub fn sees(&self, service: &str) -> bool {
        self.service.as_deref().is_none_or(|s| s == service)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            tracing::error!("a handler needing a principal ran without the auth middleware");
            ApiError::internal()
        })
    }
}

/// The request id (from `X-Request-Id` if well-formed, else a new one).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(parts.extensions.get::<RequestId>().cloned().unwrap_or_else(|| RequestId(crate::http::new_request_id())))
    }
}
