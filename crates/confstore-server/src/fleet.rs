//! The fleet view (docs/operations.md "Fleet"; docs/format.md §20): the latest status report
//! of every running client instance — which version of its service it applied, from where,
//! when, whether it says it is healthy — kept in memory, outside the signed log.
//!
//! Reports arrive over MQTT (`system/config-status/<service>/<instance>`, read by
//! `stream::fleet`) or REST (`PUT /api/v1/fleet/{service}/{instance}`). The view is bounded
//! ([`limits::FLEET_INSTANCES_MAX`]): a full view forgets the instance offline the longest
//! for a newcomer, and refuses the newcomer if none is offline. Offline instances are
//! forgotten after [`limits::FLEET_OFFLINE_RETENTION_SECS`]. A restarted server starts
//! empty and fills again from the retained reports the broker keeps.

use std::collections::BTreeMap;
use std::sync::Mutex;

use confstore_core::fleet::{Presence, Status};
use confstore_core::limits;
use serde::Serialize;
use utoipa::ToSchema;

/// How a report reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The status topic.
    Mqtt,
    /// `PUT /api/v1/fleet/{service}/{instance}`.
    Rest,
}

/// One instance as the view holds it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its latest report.
    pub status: Status,
    /// When the server received it (unix ms, the server's clock).
    pub last_seen_ms: u64,
    /// How.
    pub via: Via,
}

/// A report the view did not take.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// Full of online instances.
    #[error("the fleet view is full ({max} instances, none offline)", max = limits::FLEET_INSTANCES_MAX)]
    Full,
    /// Older than the report held for the instance: of an earlier run of the client, or an
    /// online report made before the one held (a reordered or replayed message).
    #[error("an older report than the one held ({why})")]
    Older {
        /// How it is older.
        why: String,
    },
}

/// Why a report was not taken: not a valid report for where it arrived, or refused by the view.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotTaken {
    /// Not a status report, or one naming another service or instance than its topic or path.
    #[error("{0}")]
    Invalid(String),
    /// Refused by the view.
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// The view (`App` holds one).
#[derive(Debug, Default)]
pub struct Fleet {
    services: Mutex<BTreeMap<String, BTreeMap<String, Entry>>>,
    /// When the view last began to fill: made, or subscribed to the status topics again
    /// (unix ms). Rollout decisions wait a while after it (crate::rollouts).
    synced_ms: std::sync::atomic::AtomicU64,
}

impl Fleet {
    /// An empty view, filling from `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self { services: Mutex::default(), synced_ms: std::sync::atomic::AtomicU64::new(now_ms) }
    }

    /// The view begins to fill again (a new subscription to the status topics).
    pub fn mark_synced(&self, now_ms: u64) {
        self.synced_ms.store(now_ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// When the view last began to fill.
    pub fn synced_ms(&self) -> u64 {
        self.synced_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeMap<String, Entry>>> {
        self.services.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a report as it arrived (a message of `service`'s `instance` topic, or the body of
    /// its REST path): parsed, checked against the names it arrived under, recorded.
    pub fn take(&self, bytes: &[u8], service: &str, instance: &str, now_ms: u64, via: Via) -> Result<(), NotTaken> {
        let status = Status::parse(bytes).map_err(|e| NotTaken::Invalid(e.to_string()))?;
        if status.service != service || status.instance != instance {
            return Err(NotTaken::Invalid(format!(
                "the report is for {}/{}, not {service}/{instance}",
                status.service, status.instance
            )));
        }
        Ok(self.record(status, now_ms, via)?)
    }

    /// Takes a checked report (see [`Status::parse`]) received at `now_ms`.
    pub fn record(&self, status: Status, now_ms: u64, via: Via) -> Result<(), Refused> {
        let mut services = self.lock();
        if let Some(held) = services.get(&status.service).and_then(|s| s.get(&status.instance)) {
            if let Some(why) = older(&status, &held.status) {
                return Err(Refused::Older { why });
            }
        } else {
            prune(&mut services, now_ms);
            let count: usize = services.values().map(BTreeMap::len).sum();
            if count >= limits::FLEET_INSTANCES_MAX && !forget_longest_offline(&mut services) {
                return Err(Refused::Full);
            }
        }
        let service = status.service.clone();
        let instance = status.instance.clone();
        services.entry(service).or_default().insert(instance, Entry { status, last_seen_ms: now_ms, via });
        Ok(())
    }

    /// The instances of `service` (sorted by id), offline ones past retention left out.
    pub fn instances(&self, service: &str, now_ms: u64) -> Vec<Entry> {
        let mut services = self.lock();
        prune(&mut services, now_ms);
        services.get(service).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Every service with instances, and its instances.
    pub fn all(&self, now_ms: u64) -> BTreeMap<String, Vec<Entry>> {
        let mut services = self.lock();
        prune(&mut services, now_ms);
        services.iter().map(|(s, m)| (s.clone(), m.values().cloned().collect())).collect()
    }
}

/// Why `incoming` is older than `held`, if it is: a report of an earlier run (`session`),
/// or an online report made before the held one in the same run. An `offline` report of the
/// run held is taken whatever its time: it is the run's last will, made when it connected.
fn older(incoming: &Status, held: &Status) -> Option<String> {
    let (i, h) = (incoming.session.unwrap_or(0), held.session.unwrap_or(0));
    if i != h {
        return (i < h).then(|| format!("session {i} < {h}"));
    }
    (incoming.state == Presence::Online && incoming.time_ms < held.time_ms)
        .then(|| format!("time_ms {} < {}", incoming.time_ms, held.time_ms))
}

/// Now, in unix milliseconds (the server's clock: `last_seen_ms`, retention).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Forgets offline instances past retention, and services left without instances.
fn prune(services: &mut BTreeMap<String, BTreeMap<String, Entry>>, now_ms: u64) {
    let keep_ms = limits::FLEET_OFFLINE_RETENTION_SECS * 1000;
    for instances in services.values_mut() {
        instances.retain(|_, e| e.status.state == Presence::Online || now_ms.saturating_sub(e.last_seen_ms) < keep_ms);
    }
    services.retain(|_, m| !m.is_empty());
}

/// Forgets the instance that went offline longest ago; false if none is offline.
fn forget_longest_offline(services: &mut BTreeMap<String, BTreeMap<String, Entry>>) -> bool {
    let oldest = services
        .iter()
        .flat_map(|(s, m)| m.iter().map(move |(i, e)| (s, i, e)))
        .filter(|(_, _, e)| e.status.state == Presence::Offline)
        .min_by_key(|(_, _, e)| e.last_seen_ms)
        .map(|(s, i, _)| (s.clone(), i.clone()));
    let Some((service, instance)) = oldest else { return false };
    if let Some(m) = services.get_mut(&service) {
        m.remove(&instance);
        if m.is_empty() {
            services.remove(&service);
        }
    }
    true
}

/// What an instance's state is, judged against its service's current version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Online, healthy (or silent about it), on the current version.
    Current,
    /// Online on an older version (or another generation).
    Behind,
    /// Online and says it is unhealthy.
    Unhealthy,
    /// Gone (last will, or stopped).
    Offline,
}

/// The state of `e` when the service's current version is `current` in `generation`.
pub fn state_of(e: &Entry, current: u64, generation: u64) -> InstanceState {
    let s = &e.status;
    if s.state == Presence::Offline {
        InstanceState::Offline
    } else if s.healthy == Some(false) {
        InstanceState::Unhealthy
    } else if s.generation != Some(generation) || s.version.unwrap_or(0) < current {
        InstanceState::Behind
    } else {
        InstanceState::Current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(service: &str, instance: &str, version: u64, time_ms: u64) -> Status {
        Status {
            store_id: Some("00112233445566778899aabbccddeeff".into()),
            generation: Some(1),
            epoch: Some(version),
            version: Some(version),
            ..Status::online(service, instance, time_ms)
        }
    }

    #[test]
    fn newer_reports_replace_older_ones_and_states_follow_the_current_version() {
        let f = Fleet::default();
        f.record(report("web", "a", 5, 10), 100, Via::Mqtt).unwrap();
        f.record(report("web", "b", 7, 10), 100, Via::Rest).unwrap();
        assert!(matches!(f.record(report("web", "a", 4, 9), 101, Via::Mqtt), Err(Refused::Older { .. })));
        let e = f.instances("web", 102);
        assert_eq!(e.iter().map(|e| e.status.version).collect::<Vec<_>>(), vec![Some(5), Some(7)]);
        assert_eq!(state_of(&e[0], 7, 1), InstanceState::Behind);
        assert_eq!(state_of(&e[1], 7, 1), InstanceState::Current);
        assert_eq!(state_of(&e[1], 7, 2), InstanceState::Behind, "another generation");
        let mut sick = report("web", "b", 7, 11);
        sick.healthy = Some(false);
        f.record(sick, 103, Via::Mqtt).unwrap();
        // The last will of the run held: made at connect time, older than the reports since,
        // taken all the same.
        f.record(Status::offline("web", "a", 1), 104, Via::Mqtt).unwrap();
        let e = f.instances("web", 105);
        assert_eq!(state_of(&e[0], 7, 1), InstanceState::Offline);
        assert_eq!(state_of(&e[1], 7, 1), InstanceState::Unhealthy);
    }

    #[test]
    fn a_later_run_wins_over_the_last_will_of_an_earlier_one() {
        let f = Fleet::default();
        let run = |session: u64, s: Status| Status { session: Some(session), ..s };
        f.record(run(2, report("web", "a", 5, 20)), 1, Via::Mqtt).unwrap();
        // The will of run 1 fires late (the broker noticed the old connection only now).
        assert!(matches!(f.record(run(1, Status::offline("web", "a", 10)), 2, Via::Mqtt), Err(Refused::Older { .. })));
        assert_eq!(f.instances("web", 3)[0].status.state, Presence::Online);
        f.record(run(2, Status::offline("web", "a", 15)), 4, Via::Mqtt).unwrap();
        assert_eq!(f.instances("web", 5)[0].status.state, Presence::Offline);
        f.record(run(3, report("web", "a", 6, 16)), 6, Via::Mqtt).unwrap();
        assert_eq!(f.instances("web", 7)[0].status.state, Presence::Online);
    }

    #[test]
    fn offline_instances_are_forgotten_after_retention_and_make_room_when_full() {
        let f = Fleet::default();
        f.record(Status::offline("web", "gone", 1), 1_000, Via::Mqtt).unwrap();
        let later = 1_000 + limits::FLEET_OFFLINE_RETENTION_SECS * 1000;
        assert!(f.all(later).is_empty(), "forgotten after retention");
        f.record(Status::offline("web", "gone", 1), 1_000, Via::Mqtt).unwrap();
        for i in 0..limits::FLEET_INSTANCES_MAX - 1 {
            f.record(report("db", &format!("i{i}"), 1, 1), 2_000, Via::Mqtt).unwrap();
        }
        // Full: the offline one makes room; then nothing can.
        f.record(report("db", "new", 1, 1), 3_000, Via::Mqtt).unwrap();
        assert!(f.instances("web", 3_000).is_empty());
        assert_eq!(f.record(report("db", "one-more", 1, 1), 3_000, Via::Mqtt), Err(Refused::Full));
        // A known instance still reports.
        f.record(report("db", "new", 2, 2), 3_001, Via::Mqtt).unwrap();
    }
}
