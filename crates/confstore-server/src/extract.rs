//! Extractors whose rejections are JSON [`ApiError`]s (axum's own answer in plain text),
//! and the per-request values the middleware leaves for handlers.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{Extensions, Method, StatusCode};
use axum::response::Response;
use confstore_core::auth::Role;
use confstore_lkg::LkgContent;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};

use crate::app::{App, FallbackMode, LiveMode, Mode};
use crate::error::{ApiError, ApiResult};

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

/// The `If-Match` epoch of a compare-and-set write, if given (`12`, `"12"` or `W/"12"`): the
/// one type every handler taking `If-Match` extracts, and the one place its OpenAPI
/// parameter is described (`params(IfMatch)`).
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

impl IntoParams for IfMatch {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        // An absent header is "no compare-and-set"; a present one is an epoch (the whole u64
        // range: `api::document_u64` replaces `format: int64` with the real maximum).
        let epoch = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
            .minimum(Some(0));
        vec![
            ParameterBuilder::new()
                .name("If-Match")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "the epoch the change is based on (compare-and-set): 12, \"12\" or W/\"12\"; absent: no compare-and-set",
                ))
                .schema(Some(epoch))
                .build(),
        ]
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

/// The method and route template (`/api/v1/services/{service}`) a request was routed to, as
/// the audit trail records a refusal; read from the request, never passed by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `GET`, `POST`, ...
    pub method: Method,
    /// The matched route template; empty for a request no route matched.
    pub route: String,
}

impl Endpoint {
    /// The endpoint of a request from its method and extensions (where axum leaves the
    /// [`MatchedPath`]).
    pub fn of(method: &Method, extensions: &Extensions) -> Self {
        let route = extensions.get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_default();
        Self { method: method.clone(), route }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Endpoint {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.method, &parts.extensions))
    }
}

/// A principal allowed on a store-wide route (audit, export, verify, tokens, whole-store
/// rollback): a token limited to a service is refused with 403, recorded as
/// [`crate::auth::deny`] records every refusal.
#[derive(Debug, Clone)]
pub struct Unscoped(pub Principal);

impl Unscoped {
    /// `who`, if it is not limited to a service; else the recorded 403 for `endpoint`.
    pub async fn check(app: &App, who: Principal, endpoint: &Endpoint, rid: RequestId) -> ApiResult<Self> {
        let Some(scope) = who.service.clone() else { return Ok(Self(who)) };
        let why = format!(
            "this token is limited to service {scope:?}; {} {} covers the whole store",
            endpoint.method, endpoint.route
        );
        Err(crate::auth::deny(app, &who, endpoint, who.role, None, Some(rid), why).await)
    }
}

impl FromRequestParts<App> for Unscoped {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let who = Principal::from_request_parts(parts, app).await?;
        let rid = RequestId::from_request_parts(parts, app).await?;
        Self::check(app, who, &Endpoint::of(&parts.method, &parts.extensions), rid).await
    }
}

/// The store in its live mode, for a handler whose answer needs the database (writes,
/// history, replays, search, tokens): in the read-only fallback the request is refused with
/// 503 `read_only` ([`LiveView::of`]) before the handler runs. Cheap to clone into blocking
/// work; it holds the mode it was made from, so a switch of mode meanwhile does not change
/// it under the handler.
#[derive(Debug, Clone)]
pub struct LiveView(Arc<Mode>);

impl LiveView {
    /// The live mode of `app` now, or 503 saying why writes (or this read) cannot be served.
    pub fn of(app: &App) -> ApiResult<Self> {
        let mode = app.mode();
        match &*mode {
            Mode::Live(_) => Ok(Self(mode)),
            Mode::Fallback(fb) => Err(ApiError::read_only(format!(
                "the server is in read-only fallback ({}); only current snapshots and values are served until the \
                 database is back; nothing was changed",
                fb.why
            ))),
        }
    }
}

impl std::ops::Deref for LiveView {
    type Target = LiveMode;

    fn deref(&self) -> &LiveMode {
        match &*self.0 {
            Mode::Live(l) => l,
            // `of` is the only maker and keeps only a live mode; a mode never changes.
            Mode::Fallback(_) => unreachable!("a LiveView is only made from a live mode"),
        }
    }
}

impl FromRequestParts<App> for LiveView {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, app: &App) -> Result<Self, ApiError> {
        Self::of(app)
    }
}

/// The read-only fallback with its verified LKG content (see [`ReadView`]).
#[derive(Debug, Clone)]
pub struct FallbackView(Arc<Mode>);

impl FallbackView {
    /// The fallback mode.
    pub fn mode(&self) -> &FallbackMode {
        match &*self.0 {
            Mode::Fallback(fb) => fb,
            // `ReadView::of` is the only maker and keeps only a fallback mode here.
            Mode::Live(_) => unreachable!("a FallbackView is only made from the fallback"),
        }
    }

    /// The verified LKG content served.
    pub fn content(&self) -> &LkgContent {
        match &self.mode().lkg {
            Ok(c) => c,
            // `ReadView::of` refuses a fallback whose LKG file was refused.
            Err(_) => unreachable!("a FallbackView is only made with a verified LKG file"),
        }
    }

    /// Marks an answer served from the LKG file: `Confstore-Mode: read_only_fallback`, and
    /// `Confstore-Stale` when the file is older than its high-water mark.
    pub fn mark(&self, resp: &mut Response) {
        let headers = resp.headers_mut();
        headers.insert("confstore-mode", axum::http::HeaderValue::from_static("read_only_fallback"));
        if let Some(stale) = &self.mode().stale
            && let Ok(v) = axum::http::HeaderValue::from_str(&stale.replace(['\r', '\n'], " "))
        {
            headers.insert("confstore-stale", v);
        }
    }
}

/// What a current read is served from: the read model (live mode), or in the read-only fallback
/// the verified LKG file (503 `unavailable` when that file was refused too). For the routes
/// that stay up in the fallback: services, snapshots, values, keys, head.
#[derive(Debug, Clone)]
pub enum ReadView {
    /// The database is open.
    Live(LiveView),
    /// Served from the LKG file; answers carry [`FallbackView::mark`]'s headers.
    Fallback(FallbackView),
}

impl ReadView {
    /// The current read view of `app`.
    pub fn of(app: &App) -> ApiResult<Self> {
        let mode = app.mode();
        match &*mode {
            Mode::Live(_) => Ok(Self::Live(LiveView(mode))),
            Mode::Fallback(fb) => match &fb.lkg {
                Ok(_) => Ok(Self::Fallback(FallbackView(mode))),
                Err(why) => Err(ApiError::unavailable(format!(
                    "the database is unavailable ({}) and the LKG file was refused: {why}",
                    fb.why
                ))),
            },
        }
    }

    /// `resp`, marked as served from the LKG file when it is.
    pub fn answer(&self, resp: impl axum::response::IntoResponse) -> Response {
        let mut resp = resp.into_response();
        if let Self::Fallback(fb) = self {
            fb.mark(&mut resp);
        }
        resp
    }
}

impl FromRequestParts<App> for ReadView {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, app: &App) -> Result<Self, ApiError> {
        Self::of(app)
    }
}
