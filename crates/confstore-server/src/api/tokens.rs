//! Issuing, listing and revoking API tokens (admin only). Issuing and revoking are events;
//! the log keeps only each token's SHA-256. A new token is shown once, in the answer.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use confstore_core::auth::{NewToken, Role, token_hash};
use confstore_core::state::Change;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ReceiptOut, commit};
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, LiveView, RequestId, Unscoped};

/// One token as listed (never the token itself).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    /// Public id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Service scope, if any.
    pub service: Option<String>,
    /// Seq of its `token_issued` event.
    pub issued_seq: u64,
    /// Seq of its `token_revoked` event, if revoked.
    pub revoked_seq: Option<u64>,
}

/// Every token.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    /// Tokens by id.
    pub tokens: Vec<TokenInfo>,
}

/// `GET /api/v1/tokens`: every token issued (ids, names, roles; never the secrets).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    security(("bearer" = ["admin"])),
    responses((status = 200, body = TokenList)))]
pub async fn list_tokens(_: Unscoped, l: LiveView) -> ApiResult<Json<TokenList>> {
    let tokens = l.model.read(|m| {
        m.state
            .tokens
            .iter()
            .map(|(id, t)| TokenInfo {
                id: id.clone(),
                name: t.name.clone(),
                role: t.role.as_str().to_owned(),
                service: t.service.clone(),
                issued_seq: t.issued_seq,
                revoked_seq: t.revoked_seq,
            })
            .collect()
    });
    Ok(Json(TokenList { tokens }))
}

/// A request for a new token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A name for people (1-64 bytes).
    pub name: String,
    /// One of config.read, config.write, secrets.reveal, audit.read, admin.
    pub role: String,
    /// Limit the token to one service.
    pub service: Option<String>,
}

/// A new token: `token` is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// Public id.
    pub id: String,
    /// The token: `Authorization: Bearer <token>`. Not retrievable later.
    pub token: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Service scope.
    pub service: Option<String>,
    /// The receipt of the `token_issued` event.
    pub receipt: ReceiptOut,
}

/// `POST /api/v1/tokens`: issues a token.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateToken,
    security(("bearer" = ["admin"])),
    responses((status = 201, body = CreatedToken), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_token(
    State(app): State<App>,
    Unscoped(who): Unscoped,
    rid: RequestId,
    ApiJson(req): ApiJson<CreateToken>,
) -> ApiResult<Response> {
    let role = Role::parse(&req.role).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "unknown role {:?}; one of: {}",
            req.role,
            Role::ALL.map(Role::as_str).join(", ")
        ))
    })?;
    LiveView::of(&app)?;
    let token = NewToken::draw().map_err(|e| {
        tracing::error!(error = %e, "the operating system's random source failed");
        ApiError::internal()
    })?;
    let change = Change::IssueToken {
        token_id: token.id.clone(),
        name: req.name.clone(),
        role,
        service: req.service.clone(),
        token_hash: token_hash(&token.text),
    };
    let receipt = commit(&app, &who, rid, None, None, vec![change]).await?;
    let out = CreatedToken {
        id: token.id,
        token: token.text.to_string(),
        name: req.name,
        role: role.as_str().to_owned(),
        service: req.service,
        receipt,
    };
    let mut resp = (StatusCode::CREATED, Json(out)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Path: one token.
#[derive(Debug, Deserialize, IntoParams)]
pub struct TokenPath {
    /// Token id (16 hex digits).
    pub id: String,
}

/// `DELETE /api/v1/tokens/{id}`: revokes a token at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(TokenPath),
    security(("bearer" = ["admin"])),
    responses((status = 200, body = ReceiptOut), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn revoke_token(
    State(app): State<App>,
    ApiPath(p): ApiPath<TokenPath>,
    Unscoped(who): Unscoped,
    rid: RequestId,
    l: LiveView,
) -> ApiResult<Response> {
    if !l.model.read(|m| m.state.tokens.contains_key(&p.id)) {
        return Err(ApiError::not_found(format!("no token with id {:?}", p.id)));
    }
    let r = commit(&app, &who, rid, None, None, vec![Change::RevokeToken { token_id: p.id }]).await?;
    Ok(super::config::receipt_response(StatusCode::OK, r))
}
