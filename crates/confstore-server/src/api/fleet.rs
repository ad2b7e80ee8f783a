//! The fleet routes (crate::fleet; docs/format.md §20): what each client instance reports it
//! applied, per service, judged against the service's current version; and the REST way to
//! report, for clients without MQTT.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use confstore_core::fleet::{Presence, Source};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, LiveView, Principal};
use crate::fleet::{Entry, InstanceState, NotTaken, Via, now_ms, state_of};

/// Path: one instance of a service.
#[derive(Debug, Deserialize, IntoParams)]
pub struct InstancePath {
    /// Service name.
    pub service: String,
    /// Instance id: 1-64 of `A-Z a-z 0-9 . _ -`.
    pub instance: String,
}

/// Path: one service.
#[derive(Debug, Deserialize, IntoParams)]
pub struct FleetServicePath {
    /// Service name.
    pub service: String,
}

/// One service's instances, counted by state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceFleet {
    /// The service.
    pub service: String,
    /// Its current version (the epoch that last changed it); 0 if it is not registered.
    pub version: u64,
    /// Instances known.
    pub instances: usize,
    /// Online on the current version.
    pub current: usize,
    /// Online on an older version.
    pub behind: usize,
    /// Online and unhealthy by their own report.
    pub unhealthy: usize,
    /// Offline (kept for a day).
    pub offline: usize,
    /// The oldest version an online instance holds, if any is online.
    pub oldest_version: Option<u64>,
}

/// Every service with instances.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetOut {
    /// Per service, sorted by name.
    pub services: Vec<ServiceFleet>,
    /// When this was read (unix ms).
    pub time_ms: u64,
}

/// One instance.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceOut {
    /// Its id.
    pub instance: String,
    /// Judged against the service's current version.
    pub state: InstanceState,
    /// The version it holds.
    pub version: Option<u64>,
    /// The store epoch that version reflects.
    pub epoch: Option<u64>,
    /// The generation.
    pub generation: Option<u64>,
    /// Versions behind: the current version's epoch minus the held one's (0 when current).
    pub lag_epochs: Option<u64>,
    /// Where its version came from.
    #[schema(value_type = Option<String>)]
    pub source: Option<Source>,
    /// Keys overridden by its environment (names only).
    pub env_overrides: Vec<String>,
    /// When it applied that version (unix ms, its clock).
    pub applied_ms: Option<u64>,
    /// What it last said about its health.
    pub healthy: Option<bool>,
    /// The staged rollout it runs (docs/format.md §21), if any.
    pub rollout: Option<u64>,
    /// When the server last heard from it (unix ms).
    pub last_seen_ms: u64,
    /// How it reports.
    pub via: Via,
}

/// One service's instances.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstancesOut {
    /// The service.
    pub service: String,
    /// Its current version.
    pub version: u64,
    /// The instances, by id.
    pub instances: Vec<InstanceOut>,
    /// When this was read (unix ms).
    pub time_ms: u64,
}

/// The current version of `service` (0 unregistered) and the store's generation.
fn current(l: &LiveView, service: &str) -> (u64, u64) {
    l.model.read(|m| (m.state.versions.get(service).map_or(0, |v| v.changed_epoch), m.generation))
}

fn summary(service: &str, entries: &[Entry], version: u64, generation: u64) -> ServiceFleet {
    let mut out = ServiceFleet {
        service: service.to_owned(),
        version,
        instances: entries.len(),
        current: 0,
        behind: 0,
        unhealthy: 0,
        offline: 0,
        oldest_version: None,
    };
    for e in entries {
        match state_of(e, version, generation) {
            InstanceState::Current => out.current += 1,
            InstanceState::Behind => out.behind += 1,
            InstanceState::Unhealthy => out.unhealthy += 1,
            InstanceState::Offline => out.offline += 1,
        }
        if e.status.state == Presence::Online {
            let v = e.status.version.unwrap_or(0);
            out.oldest_version = Some(out.oldest_version.map_or(v, |o| o.min(v)));
        }
    }
    out
}

/// `GET /api/v1/fleet`: every service with reporting instances, counted by state (a token
/// scoped to a service sees that service only).
#[utoipa::path(get, path = "/api/v1/fleet", tag = "fleet",
    security(("bearer" = ["config.read"])),
    responses((status = 200, body = FleetOut), (status = 503, body = crate::error::ErrorBody)))]
pub async fn fleet(State(app): State<App>, who: Principal, l: LiveView) -> ApiResult<Json<FleetOut>> {
    let now = now_ms();
    let services = app
        .fleet
        .all(now)
        .into_iter()
        .filter(|(s, _)| who.sees(s))
        .map(|(s, entries)| {
            let (version, generation) = current(&l, &s);
            summary(&s, &entries, version, generation)
        })
        .collect();
    Ok(Json(FleetOut { services, time_ms: now }))
}

/// `GET /api/v1/fleet/{service}`: the instances of one service and what each applied.
#[utoipa::path(get, path = "/api/v1/fleet/{service}", tag = "fleet", params(FleetServicePath),
    security(("bearer" = ["config.read"])),
    responses((status = 200, body = InstancesOut), (status = 404, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)))]
pub async fn instances(
    State(app): State<App>,
    ApiPath(p): ApiPath<FleetServicePath>,
    l: LiveView,
) -> ApiResult<Json<InstancesOut>> {
    let registered = l.model.read(|m| m.state.services.contains_key(&p.service));
    let now = now_ms();
    let entries = app.fleet.instances(&p.service, now);
    if !registered && entries.is_empty() {
        return Err(ApiError::not_found(format!("unknown service {:?}", p.service)));
    }
    let (version, generation) = current(&l, &p.service);
    let instances = entries
        .into_iter()
        .map(|e| {
            let state = state_of(&e, version, generation);
            let s = e.status;
            InstanceOut {
                instance: s.instance,
                state,
                version: s.version,
                epoch: s.epoch,
                generation: s.generation,
                lag_epochs: s.version.map(|v| version.saturating_sub(v)),
                source: s.source,
                env_overrides: s.env_overrides,
                applied_ms: s.applied_ms,
                healthy: s.healthy,
                rollout: s.rollout,
                last_seen_ms: e.last_seen_ms,
                via: e.via,
            }
        })
        .collect();
    Ok(Json(InstancesOut { service: p.service, version, instances, time_ms: now }))
}

/// `PUT /api/v1/fleet/{service}/{instance}`: an instance reports what it applied (the same
/// document as on `system/config-status/<service>/<instance>`); its `service` and
/// `instance` must be the path's. 204 when taken; 409 when older than the report held; 503
/// when the fleet view is full, and `read_only` in the read-only fallback (like the fleet's
/// reads, which judge instances against the current versions).
#[utoipa::path(put, path = "/api/v1/fleet/{service}/{instance}", tag = "fleet", params(InstancePath),
    request_body(content = super::bodies::StatusReportBody, description = "a confstore-status/1 document (docs/format.md §20)"),
    security(("bearer" = ["config.read"])),
    responses((status = 204, description = "taken"), (status = 409, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub async fn report(
    State(app): State<App>,
    _live: LiveView,
    ApiPath(p): ApiPath<InstancePath>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> ApiResult<Response> {
    let text = serde_json::to_vec(&body).unwrap_or_default();
    let taken = app.fleet.take(&text, &p.service, &p.instance, now_ms(), Via::Rest);
    app.metrics.fleet_report(taken.is_ok());
    match taken {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(NotTaken::Invalid(why)) => Err(ApiError::unprocessable(why)),
        Err(NotTaken::Refused(e @ crate::fleet::Refused::Older { .. })) => Err(ApiError::conflict_with(e.to_string())),
        Err(NotTaken::Refused(e @ crate::fleet::Refused::Full)) => Err(ApiError::unavailable(e.to_string())),
    }
}

/// Sets the fleet gauges from the view (at each scrape of `/metrics`): instances by state,
/// and the oldest version an online instance holds. Left as they are in the read-only
/// fallback, where the current versions are not known.
pub fn refresh_metrics(app: &App) {
    let crate::app::Mode::Live(l) = &*app.mode() else { return };
    app.metrics.rollouts_active(l.model.read(|m| m.state.rollouts.len()));
    let mut counts = [("current", 0u64), ("behind", 0), ("unhealthy", 0), ("offline", 0)];
    let mut oldest: Option<u64> = None;
    for (service, entries) in app.fleet.all(now_ms()) {
        let (version, generation) =
            l.model.read(|m| (m.state.versions.get(&service).map_or(0, |v| v.changed_epoch), m.generation));
        let s = summary(&service, &entries, version, generation);
        for (slot, n) in counts.iter_mut().zip([s.current, s.behind, s.unhealthy, s.offline]) {
            slot.1 += n as u64;
        }
        if let Some(v) = s.oldest_version {
            oldest = Some(oldest.map_or(v, |o| o.min(v)));
        }
    }
    app.metrics.fleet(&counts, oldest.unwrap_or(0));
}
