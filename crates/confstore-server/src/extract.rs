//! Extractors whose rejections are JSON [`ApiError`]s (axum's own answer in plain text),
//! and the per-request values the middleware leaves for handlers.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use confstore_core::auth::Role;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(json_rejection(&e)),
        }
    }
}

fn json_rejection(e: &JsonRejection) -> ApiError {
    let text = e.body_text();
    match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(format!(
            "the request body is larger than {} bytes; nothing was changed",
            confstore_core::limits::REQUEST_BYTES_MAX
        )),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::unprocessable(format!("{text}; nothing was changed")),
        _ => ApiError::bad_request(format!("{text}; send a JSON body with Content-Type: application/json")),
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
