//! Bearer-token authentication and role/scope authorization, as one middleware on every
//! route. The role a route needs is read from the OpenAPI document generated from the
//! handlers' `#[utoipa::path(security(("bearer" = ["<role>"])))]` attributes, so the
//! document and the enforcement cannot disagree ([`RouteRoles`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use confstore_core::auth::{Role, TokenRecord, token_id};
use confstore_core::state::{Change, ChangesetDraft};

use crate::app::{App, Mode};
use crate::error::ApiError;
use crate::extract::{Endpoint, Principal, RequestId};

/// (method, route template) -> the role it needs. Routes absent from it are open.
#[derive(Debug, Default, Clone)]
pub struct RouteRoles(HashMap<(String, String), Role>);

impl RouteRoles {
    /// Reads every operation's `security` requirement from the OpenAPI document.
    pub fn from_openapi(doc: &serde_json::Value) -> Self {
        let mut map = HashMap::new();
        for (path, item) in doc.get("paths").and_then(serde_json::Value::as_object).into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let role = op.pointer("/security/0/bearer/0").and_then(serde_json::Value::as_str).and_then(Role::parse);
                if let Some(role) = role {
                    map.insert((method.to_uppercase(), path.clone()), role);
                }
            }
        }
        Self(map)
    }

    /// The role `method` on `route` needs, if any.
    pub fn get(&self, method: &str, route: &str) -> Option<Role> {
        self.0.get(&(method.to_owned(), route.to_owned())).copied()
    }
}

/// The middleware: 401 without a valid token, 403 without the role or scope (recorded in
/// the audit log by [`deny`]), else the request goes on with a [`Principal`].
pub async fn authorize(State((app, roles)): State<(App, Arc<RouteRoles>)>, mut req: Request, next: Next) -> Response {
    let endpoint = Endpoint::of(req.method(), req.extensions());
    let (method, route) = (endpoint.method.as_str(), endpoint.route.as_str());
    let Some(needed) = roles.get(method, route) else {
        return next.run(req).await;
    };
    let header = req.headers().get(axum::http::header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("\u{0}"));
    let token = match authenticate(&app, header).await {
        Ok(t) => t,
        Err(e) => {
            app.metrics.auth_denial("unauthorized");
            tracing::info!(route, method, reason = %e.body.message, "unauthenticated request refused");
            return e.into_response();
        }
    };
    let named_service = named_service(&mut req).await;
    let (token_id, record) = token;
    let why = if !record.role.grants(needed) {
        Some(format!("this token has role {}, and {method} {route} needs {needed}", record.role))
    } else if let (Some(scope), Some(asked)) = (&record.service, &named_service)
        && scope != asked
    {
        Some(format!("this token is limited to service {scope:?}, not {asked:?}"))
    } else {
        None
    };
    let principal = principal(token_id, &record);
    if let Some(why) = why {
        let rid = req.extensions().get::<RequestId>().cloned();
        return deny(&app, &principal, &endpoint, needed, named_service, rid, why).await.into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Records a 403 (ADR 0013) and returns the error: the token's first refusal on this
/// (method, route) — the request's own [`Endpoint`] — as an `access_denied` event, appended
/// before the answer; later ones counted for the token's next `access_denied_summary`
/// ([`crate::denials`]). Every refusal is logged and counted in metrics. Best effort: in
/// the fallback, or if the database fails, only the log line and the metrics remain.
pub async fn deny(
    app: &App,
    who: &Principal,
    endpoint: &Endpoint,
    needed: Role,
    service: Option<String>,
    request_id: Option<RequestId>,
    why: String,
) -> ApiError {
    let (method, route) = (endpoint.method.as_str(), endpoint.route.as_str());
    // Handlers refusing for scope pass the token's own role as `needed`.
    let reason = if who.role.grants(needed) { "scope" } else { "role" };
    app.metrics.auth_denial("forbidden");
    app.metrics.access_denied(reason, method, route);
    let mode = app.mode();
    let verdict = match &*mode {
        Mode::Live(_) => app.denials.note(&who.token_id, &who.actor(), method, route, crate::denials::wall_ms()),
        Mode::Fallback(_) => crate::denials::Verdict::Untracked,
    };
    let audit = verdict.audit();
    tracing::warn!(token_id = %who.token_id, route, method, reason, audit, %why, "request refused");
    match verdict {
        crate::denials::Verdict::First => {
            if let Mode::Live(live) = &*mode {
                let store = Arc::clone(&live.store);
                let draft = ChangesetDraft {
                    actor: who.actor(),
                    reason: String::new(),
                    request_id: request_id.map_or_else(crate::http::new_request_id, |r| r.0),
                    expected_epoch: None,
                    changes: vec![Change::DenyAccess {
                        token_id: who.token_id.clone(),
                        method: method.to_owned(),
                        route: route.to_owned(),
                        required_role: needed,
                        service: service.filter(|s| confstore_core::state::check_service_name(s).is_ok()),
                    }],
                };
                let recorded = match tokio::task::spawn_blocking(move || store.append(draft)).await {
                    Ok(r) => {
                        app.note_append(&r);
                        r.inspect_err(|e| tracing::error!(error = %e, "could not record an access denial in the log"))
                            .is_ok()
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the task recording an access denial failed");
                        false
                    }
                };
                if !recorded {
                    // The next refusal on this route tries again.
                    app.denials.unsee(&who.token_id, method, route);
                }
            }
        }
        crate::denials::Verdict::Counted => {}
        crate::denials::Verdict::Untracked => {
            app.metrics.access_denied_unrecorded();
            return ApiError::forbidden(format!("{why}; this refusal is logged"));
        }
    }
    ApiError::forbidden(format!("{why}; this refusal is recorded in the audit log"))
}

/// The service a request names: the `{service}` path parameter, else a `service` query
/// parameter.
async fn named_service(req: &mut Request) -> Option<String> {
    let (mut parts, body) = std::mem::take(req).into_parts();
    let from_path = <RawPathParams as axum::extract::FromRequestParts<()>>::from_request_parts(&mut parts, &())
        .await
        .ok()
        .and_then(|p| p.iter().find(|(k, _)| *k == "service").map(|(_, v)| v.to_owned()));
    let from_query = || {
        axum::extract::Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|q| q.0.get("service").cloned())
    };
    let service = from_path.or_else(from_query);
    *req = Request::from_parts(parts, body);
    service
}

/// Checks the `Authorization` header: the token must be well-formed, known, not revoked,
/// and its SHA-256 equal (constant time) to the recorded one.
/// The principal of a request's bearer token, for routes open to every valid token
/// (`/api/v1/whoami`): 401 without a valid one.
pub async fn principal_of(app: &App, headers: &axum::http::HeaderMap) -> Result<Principal, ApiError> {
    let header = headers.get(axum::http::header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("\u{0}"));
    let (token_id, record) =
        authenticate(app, header).await.inspect_err(|_| app.metrics.auth_denial("unauthorized"))?;
    Ok(principal(token_id, &record))
}

/// The principal of a bare token (the embedded MQTT broker's password): an error if it is
/// malformed, unknown or revoked.
pub async fn principal_of_token(app: &App, token: &str) -> Result<Principal, ApiError> {
    let (token_id, record) = check_token(app, token).await?;
    Ok(principal(token_id, &record))
}

fn principal(token_id: String, record: &TokenRecord) -> Principal {
    Principal { token_id, name: record.name.clone(), role: record.role, service: record.service.clone() }
}

async fn authenticate(app: &App, header: Option<&str>) -> Result<(String, TokenRecord), ApiError> {
    let Some(header) = header else {
        return Err(ApiError::unauthorized("this route needs a bearer token: Authorization: Bearer cst_…"));
    };
    let text = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?;
    check_token(app, text).await
}

/// The token's id and record if `text` is a well-formed, known, unrevoked token whose
/// SHA-256 equals (constant time) the recorded one.
async fn check_token(app: &App, text: &str) -> Result<(String, TokenRecord), ApiError> {
    let id = token_id(text).map_err(|e| ApiError::unauthorized(e.to_string()))?.to_owned();
    let mode = app.mode();
    if let Mode::Fallback(fb) = &*mode
        && let Err(why) = &fb.lkg
    {
        // No verified LKG file, so no token list either: say so, not "unknown token".
        return Err(ApiError::unavailable(format!(
            "the database is unavailable ({}) and the LKG file was refused: {why}",
            fb.why
        )));
    }
    let mut found = lookup(&mode, &id);
    if found.is_none()
        && let Mode::Live(live) = &*mode
    {
        // Issued by another process (the CLI) since the last refresh? Fold its events in.
        let store = Arc::clone(&live.store);
        let _ = tokio::task::spawn_blocking(move || store.refresh()).await;
        found = lookup(&mode, &id);
    }
    let unknown = || ApiError::unauthorized("unknown or revoked token");
    let record = found.ok_or_else(unknown)?;
    if !record.matches(text) || record.revoked_seq.is_some() {
        return Err(unknown());
    }
    Ok((id, record))
}

fn lookup(mode: &Mode, id: &str) -> Option<TokenRecord> {
    match mode {
        Mode::Live(live) => live.model.read(|m| m.state.tokens.get(id).cloned()),
        Mode::Fallback(fb) => fb.tokens.get(id).cloned(),
    }
}
