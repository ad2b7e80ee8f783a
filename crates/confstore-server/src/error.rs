//! API errors: every failure is a JSON `{error, message}` with a fitting status, never a
//! stack trace or an internal detail (docs/design.md §10).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use confstore_core::RejectError;
use confstore_log::LogError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code: `bad_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `payload_too_large`, `unprocessable`, `read_only`,
    /// `unavailable`, `internal`.
    pub error: &'static str,
    /// What went wrong and what to do, for people.
    pub message: String,
    /// For `conflict`: the store's current epoch (retry with `If-Match` set to it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_epoch: Option<u64>,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self { status, body: ErrorBody { error, message: message.into(), current_epoch: None } }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 with the current epoch.
    pub fn conflict(message: impl Into<String>, current_epoch: u64) -> Self {
        let mut e = Self::new(StatusCode::CONFLICT, "conflict", message);
        e.body.current_epoch = Some(current_epoch);
        e
    }

    /// 409 about something other than the store's epoch (no `current_epoch`).
    pub fn conflict_with(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 415: a body in a form the API does not read (a charset other than UTF-8).
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
    }

    /// 422.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
    }

    /// 503 in the read-only fallback.
    pub fn read_only(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "read_only", message)
    }

    /// 503: the database refused or failed; nothing was changed.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500, with a fixed message (the detail goes to the log, not the client).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to answer; the request id in the X-Request-Id header finds the cause in its log",
        )
    }
}

impl From<RejectError> for ApiError {
    fn from(e: RejectError) -> Self {
        let message = format!("{e}; nothing was changed");
        match e {
            RejectError::Conflict { current, .. } => ApiError::conflict(message, current),
            RejectError::UnknownService(_) => ApiError::not_found(message),
            RejectError::ServiceExists(_) => {
                let mut err = ApiError::conflict(message, 0);
                err.body.current_epoch = None;
                err
            }
            RejectError::TooManyChanges(_) => ApiError::too_large(message),
            RejectError::Limit(_) => ApiError::unprocessable(message),
            // docs/adr/0030: a write that would move a service under rollout waits for it.
            RejectError::RolloutInProgress { .. } => {
                ApiError::new(StatusCode::CONFLICT, "rollout_in_progress", message)
            }
            RejectError::Rollout(_) => ApiError::conflict_with(message),
            _ => ApiError::unprocessable(message),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Rejected(r) => r.into(),
            LogError::OutOfRange(_) => ApiError::not_found(e.to_string()),
            LogError::ReadOnly | LogError::Tampered(_) | LogError::KeyMismatch { .. } => {
                ApiError::unavailable(format!("{e}; nothing was changed"))
            }
            LogError::NotCommitted(_) => ApiError::unavailable(e.to_string()),
            other => {
                tracing::error!(error = %other, "database error");
                ApiError::unavailable("the database failed to answer; nothing was changed, retry")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"confstore\""));
        }
        resp
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
