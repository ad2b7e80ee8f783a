//! Staged rollouts (docs/format.md §21, docs/adr/0030): start one for a cohort of a service's
//! instances, see how its cohort is doing, promote or abort it by hand. Automatic decisions
//! are made by `crate::rollouts`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use confstore_core::rollout::{Cohort, percent_to_basis_points};
use confstore_core::state::{Change, RolloutChange};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::config::{ServicePath, receipt_response, value_changes};
use super::{ReceiptOut, commit, time_text};
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, LiveView, Principal, RequestId};
use crate::fleet::now_ms;

/// Who gets a staged version: listed instance ids, or a share of the instances.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CohortBody {
    /// These instance ids (1 to 1,000; order and repeats do not matter).
    pub instances: Option<Vec<String>>,
    /// This share of the instances, in percent (0.01 to 100, two decimals at most), chosen
    /// by a hash of each instance id (docs/format.md §21.1).
    pub percent: Option<f64>,
}

/// A request to start a staged rollout: the changes (as for `PATCH .../values`), the
/// cohort and the bake time.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRollout {
    /// Keys to set to plain values.
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    /// Keys to set to secret values (sealed before they reach the log).
    #[serde(default)]
    pub secrets: BTreeMap<String, Value>,
    /// Keys to remove.
    #[serde(default)]
    pub unset: Vec<String>,
    /// Who gets the staged version first.
    pub cohort: CohortBody,
    /// How long the cohort runs it before an automatic promotion, in seconds (1 to 604,800).
    pub bake_seconds: u64,
    /// Whether the server promotes and aborts it by itself (default true).
    pub auto: Option<bool>,
    /// Why (recorded in the event).
    pub reason: Option<String>,
}

/// A manual decision about the active rollout.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideRollout {
    /// The rollout meant (its id); refused if another one is active. Default: the active one.
    pub rollout: Option<u64>,
    /// Why (recorded in the event).
    pub reason: Option<String>,
}

/// One instance of the cohort, as the fleet view knows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberOut {
    /// Instance id.
    pub instance: String,
    /// Runs the staged version.
    pub applied: bool,
    /// Its own health report, if any.
    pub healthy: Option<bool>,
    /// Online.
    pub online: bool,
}

/// The active rollout.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveRollout {
    /// Its id: the seq of its `rollout_started` event.
    pub rollout: u64,
    /// Who started it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub started: String,
    /// When (unix ms).
    pub started_ms: u64,
    /// Who gets the staged version.
    #[schema(value_type = super::bodies::CohortDoc)]
    pub cohort: Value,
    /// Bake time (ms).
    pub bake_ms: u64,
    /// When the bake time ends (unix ms).
    pub bake_ends_ms: u64,
    /// Decided automatically.
    pub auto: bool,
    /// The service version it is staged on.
    pub base_epoch: u64,
    /// The staged changes (`op` set, unset or secret; a secret shows only its key).
    #[schema(value_type = Vec<super::bodies::StagedChangeDoc>)]
    pub changes: Vec<Value>,
    /// The cohort's instances now.
    pub members: Vec<MemberOut>,
}

/// The last rollout that ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndedRollout {
    /// Its id.
    pub rollout: u64,
    /// `promoted` or `aborted`.
    pub outcome: String,
    /// Seq of the event that ended it.
    pub ended_seq: u64,
    /// When (RFC 3339).
    pub ended: String,
    /// The version carrying the promoted changes (0 when aborted).
    pub promoted_epoch: u64,
}

/// A service's rollouts.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutOut {
    /// The service.
    pub service: String,
    /// Its current version.
    pub version: u64,
    /// The active rollout, if any.
    pub active: Option<ActiveRollout>,
    /// The last one that ended, if any.
    pub last: Option<EndedRollout>,
    /// The signed message of `system/config-staged/<service>` (a JWS; docs/format.md §21.2),
    /// for clients without MQTT; absent if the service never had a rollout.
    #[schema(value_type = Option<super::bodies::FlattenedJws>)]
    pub message: Option<Value>,
}

/// `GET /api/v1/services/{service}/rollout`: the active rollout with its cohort's state,
/// the last one that ended, and the signed staged message.
#[utoipa::path(get, path = "/api/v1/services/{service}/rollout", tag = "rollout", params(ServicePath),
    security(("bearer" = ["config.read"])),
    responses((status = 200, body = RolloutOut), (status = 404, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)))]
pub async fn rollout(
    State(app): State<App>,
    ApiPath(p): ApiPath<ServicePath>,
    l: LiveView,
) -> ApiResult<Json<RolloutOut>> {
    let now = now_ms();
    let entries = app.fleet.instances(&p.service, now);
    let out = l.model.read(|m| {
        let state = &m.state;
        if !state.services.contains_key(&p.service) {
            return Err(ApiError::not_found(format!("unknown service {:?}", p.service)));
        }
        let store_id = m.store_id.to_hex();
        let active = state.rollouts.get(&p.service).map(|r| ActiveRollout {
            rollout: r.seq,
            actor: r.actor.clone(),
            reason: r.reason.clone(),
            started: time_text(r.started_ms),
            started_ms: r.started_ms,
            cohort: r.cohort.to_json(),
            bake_ms: r.bake_ms,
            bake_ends_ms: r.bake_ends_ms(),
            auto: r.auto,
            base_epoch: r.base_epoch,
            changes: r.changes.iter().map(confstore_core::rollout::StagedChange::to_json).collect(),
            members: crate::rollouts::cohort(r, &entries, m.generation)
                .into_iter()
                .map(|c| MemberOut { instance: c.instance, applied: c.applied, healthy: c.healthy, online: c.online })
                .collect(),
        });
        let last = state.rollouts_ended.get(&p.service).map(|e| EndedRollout {
            rollout: e.seq,
            outcome: e.outcome.as_str().to_owned(),
            ended_seq: e.ended_seq,
            ended: time_text(e.ended_ms),
            promoted_epoch: e.promoted_epoch,
        });
        let message = crate::stream::outbox::staged_document(state, &store_id, m.generation, &p.service)
            .map(|doc| confstore_core::jws::sign(&doc, confstore_core::jws::TYP_STAGED, &app.keys.signing));
        Ok(RolloutOut {
            service: p.service.clone(),
            version: state.versions.get(&p.service).map_or(0, |v| v.changed_epoch),
            active,
            last,
            message,
        })
    })?;
    Ok(Json(out))
}

/// `POST /api/v1/services/{service}/rollout`: stages changes for a cohort. The answer's
/// `first_seq` is the rollout's id. 409 `rollout_in_progress` while another is active.
#[utoipa::path(post, path = "/api/v1/services/{service}/rollout", tag = "rollout", params(ServicePath),
    request_body = StartRollout,
    security(("bearer" = ["config.write"])),
    responses((status = 201, body = ReceiptOut), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn start(
    State(app): State<App>,
    who: Principal,
    rid: RequestId,
    ApiPath(p): ApiPath<ServicePath>,
    ApiJson(req): ApiJson<StartRollout>,
) -> ApiResult<Response> {
    let cohort = match (req.cohort.instances, req.cohort.percent) {
        (Some(mut ids), None) => {
            ids.sort();
            ids.dedup();
            Cohort::Instances(ids)
        }
        (None, Some(percent)) => Cohort::Percent {
            basis_points: percent_to_basis_points(percent).ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "cohort percent {percent} must be from 0.01 to 100 with at most two decimals; nothing was changed"
                ))
            })?,
        },
        _ => {
            return Err(ApiError::unprocessable(
                "give the cohort as either \"instances\" or \"percent\"; nothing was changed",
            ));
        }
    };
    // The rollout's marker opens the changeset; the staged changes follow it.
    let staged = value_changes(&app, &p.service, req.set, &req.secrets, req.unset, 1)?;
    let mut changes = vec![Change::Rollout(RolloutChange::Start {
        service: p.service.clone(),
        cohort,
        bake_ms: req.bake_seconds.saturating_mul(1000),
        auto: req.auto.unwrap_or(true),
    })];
    changes.extend(staged);
    let r = commit(&app, &who, rid, req.reason, None, changes).await?;
    Ok(receipt_response(StatusCode::CREATED, r))
}

/// `POST /api/v1/services/{service}/rollout/promote`: gives the active rollout to every
/// instance (its changes become the service's next version).
#[utoipa::path(post, path = "/api/v1/services/{service}/rollout/promote", tag = "rollout", params(ServicePath),
    request_body = DecideRollout,
    security(("bearer" = ["config.write"])),
    responses((status = 200, body = ReceiptOut), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn promote(
    State(app): State<App>,
    who: Principal,
    rid: RequestId,
    l: LiveView,
    ApiPath(p): ApiPath<ServicePath>,
    ApiJson(req): ApiJson<DecideRollout>,
) -> ApiResult<Response> {
    decide(&app, &who, rid, &l, p.service, req, true).await
}

/// `POST /api/v1/services/{service}/rollout/abort`: withdraws the active rollout; its
/// cohort returns to the current version.
#[utoipa::path(post, path = "/api/v1/services/{service}/rollout/abort", tag = "rollout", params(ServicePath),
    request_body = DecideRollout,
    security(("bearer" = ["config.write"])),
    responses((status = 200, body = ReceiptOut), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn abort(
    State(app): State<App>,
    who: Principal,
    rid: RequestId,
    l: LiveView,
    ApiPath(p): ApiPath<ServicePath>,
    ApiJson(req): ApiJson<DecideRollout>,
) -> ApiResult<Response> {
    decide(&app, &who, rid, &l, p.service, req, false).await
}

async fn decide(
    app: &App,
    who: &Principal,
    rid: RequestId,
    l: &LiveView,
    service: String,
    req: DecideRollout,
    promote: bool,
) -> ApiResult<Response> {
    let entries = app.fleet.instances(&service, now_ms());
    // What the cohort reports now goes into the event, as for an automatic decision.
    let (active, cohort) = l.model.read(|m| match m.state.rollouts.get(&service) {
        Some(r) => (Some(r.seq), crate::rollouts::evidence(crate::rollouts::cohort(r, &entries, m.generation))),
        None => (None, Vec::new()),
    });
    // No active rollout and none named: decide() names what happened to the last one.
    let rollout_seq = req.rollout.or(active).unwrap_or(0);
    let change = if promote {
        RolloutChange::Promote { service, rollout_seq, automatic: false, cohort }
    } else {
        RolloutChange::Abort { service, rollout_seq, automatic: false, cohort }
    };
    let r: ReceiptOut = commit(app, who, rid, req.reason, None, vec![Change::Rollout(change)]).await?;
    app.metrics.rollout_decision(if promote { "promoted" } else { "aborted" }, false);
    Ok(receipt_response(StatusCode::OK, r))
}
