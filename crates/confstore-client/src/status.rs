//! Reporting what this instance applied (docs/format.md §20): a retained status report on
//! `system/config-status/<service>/<instance>` after start-up, after every applied version
//! and whenever the service sets its health; the same topic's last will says `offline`, and
//! a clean shutdown says so before it disconnects (a clean DISCONNECT suppresses the will).
//!
//! On by default ([`crate::ClientBuilder::report_status`], `CONFSTORE_REPORT_STATUS=0` turns it
//! off): the broker must let the client publish its own status topic (the embedded broker does
//! for a token that reads the service; `ops/mosquitto/confstore.acl` does for a user named
//! after the service). A client without MQTT reports over REST instead
//! (`PUT /api/v1/fleet/{service}/{instance}`, [`Reporter::run_rest`]): after start-up, after
//! `set_healthy`, every [`REST_REFRESH`] so the view's `last_seen` stays fresh, and `offline`
//! at shutdown (there is no last will over REST: a crashed REST-only instance keeps its last
//! report, with its `last_seen`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use confstore_core::fleet::{Source, Status, status_topic};
use rumqttc::{AsyncClient, LastWill, QoS};
use tracing::debug;

use crate::config::{Config, Source as KeySource};

/// What the instance holds and says, shared by the update task and the [`crate::Client`].
#[derive(Debug)]
pub(crate) struct Reporter {
    service: String,
    instance: String,
    topic: String,
    state: Mutex<State>,
    /// Set when the state changed since the last report.
    dirty: AtomicBool,
    /// This run of the client (its start, unix ms): the `session` of its reports.
    session: u64,
    /// Set when the broker refused the reports' last will: no reports from then on.
    disabled: AtomicBool,
    /// Woken when the state changed (the REST reporting task waits on it).
    changed: tokio::sync::Notify,
}

/// How often a client without MQTT reports again although nothing changed.
pub(crate) const REST_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Default)]
struct State {
    config: Option<Arc<Config>>,
    source: Option<Source>,
    applied_ms: Option<u64>,
    healthy: Option<bool>,
}

impl Reporter {
    pub(crate) fn new(service: &str, instance: &str) -> Self {
        Self {
            service: service.to_owned(),
            instance: instance.to_owned(),
            topic: status_topic(service, instance),
            state: Mutex::new(State::default()),
            dirty: AtomicBool::new(true),
            session: now_ms(),
            disabled: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The instance id.
    pub(crate) fn instance(&self) -> &str {
        &self.instance
    }

    /// `config` was applied (or taken up at start) from `source`.
    pub(crate) fn applied(&self, config: &Arc<Config>, source: Source) {
        let mut s = self.lock();
        s.config = Some(Arc::clone(config));
        s.source = Some(source);
        s.applied_ms = Some(now_ms());
        self.dirty.store(true, Ordering::Release);
        drop(s);
        self.changed.notify_one();
    }

    /// No reports from now on (the broker refused the will: it would refuse them too).
    pub(crate) fn disable(&self) {
        self.disabled.store(true, Ordering::Release);
    }

    /// Whether a report is waiting to be published.
    pub(crate) fn pending(&self) -> bool {
        self.dirty.load(Ordering::Acquire) && !self.disabled.load(Ordering::Acquire)
    }

    /// The next [`Self::publish_if_changed`] reports even if nothing changed.
    pub(crate) fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// The service's own word on its health.
    pub(crate) fn set_healthy(&self, healthy: Option<bool>) {
        self.lock().healthy = healthy;
        self.dirty.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    /// The reporting of a client without MQTT: the report over REST whenever it changed (and
    /// every [`REST_REFRESH`]) until `stop`, then `offline`. A failure is retried at the next
    /// change or refresh; it is logged once until a report gets through again.
    pub(crate) async fn run_rest(
        self: std::sync::Arc<Self>,
        rest: crate::rest::Rest,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut failing = false;
        loop {
            if self.dirty.swap(false, Ordering::AcqRel) {
                match self.report() {
                    Some(report) => match rest.report(&self.instance, report.to_json()).await {
                        Ok(()) => failing = false,
                        Err(e) => {
                            if !failing {
                                tracing::warn!(
                                    "cannot report this instance's status over REST: {e}; trying again later"
                                );
                            }
                            failing = true;
                        }
                    },
                    None => self.dirty.store(true, Ordering::Release),
                }
            }
            tokio::select! {
                () = self.changed.notified() => {}
                () = tokio::time::sleep(REST_REFRESH) => self.mark_dirty(),
                _ = stop.changed() => {
                    if let Err(e) = rest.report(&self.instance, self.offline().to_json()).await {
                        debug!("cannot report offline over REST: {e}");
                    }
                    return;
                }
            }
        }
    }

    /// The online report of what is held now (None before anything is held).
    pub(crate) fn report(&self) -> Option<Status> {
        let s = self.lock();
        let config = s.config.as_ref()?;
        let v = config.version();
        Some(Status {
            store_id: Some(v.store_id.clone()),
            generation: Some(v.generation),
            epoch: Some(v.epoch),
            version: Some(v.changed_epoch),
            source: s.source,
            env_overrides: config
                .iter()
                .filter(|(_, _, source)| *source == KeySource::Env)
                .map(|(k, _, _)| k.to_owned())
                .take(confstore_core::limits::STATUS_ENV_OVERRIDES_MAX)
                .collect(),
            applied_ms: s.applied_ms,
            healthy: s.healthy,
            rollout: config.rollout(),
            session: Some(self.session),
            ..Status::online(&self.service, &self.instance, now_ms())
        })
    }

    /// The last will: `offline`, retained.
    pub(crate) fn will(&self) -> LastWill {
        let payload = self.offline().to_json();
        LastWill::new(self.topic.clone(), payload, QoS::AtLeastOnce, true)
    }

    fn offline(&self) -> Status {
        Status { session: Some(self.session), ..Status::offline(&self.service, &self.instance, now_ms()) }
    }

    /// Queues the current report (retained, QoS 1) if it changed since the last one.
    pub(crate) fn publish_if_changed(&self, client: &AsyncClient) {
        if self.disabled.load(Ordering::Acquire) || !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let Some(report) = self.report() else {
            self.dirty.store(true, Ordering::Release);
            return;
        };
        if let Err(e) = client.try_publish(self.topic.clone(), QoS::AtLeastOnce, true, report.to_json()) {
            debug!("cannot queue the status report: {e}");
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Says `offline` before a clean disconnect.
    pub(crate) async fn publish_offline(&self, client: &AsyncClient) {
        if self.disabled.load(Ordering::Acquire) {
            return;
        }
        let payload = self.offline().to_json();
        if let Err(e) = client.publish(self.topic.clone(), QoS::AtLeastOnce, true, payload).await {
            debug!("cannot queue the offline status report: {e}");
        }
    }
}

/// The default instance id: the host name (made a valid id), else `pid-<process id>`.
pub(crate) fn default_instance_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .and_then(|h| confstore_core::fleet::instance_id_from(&h))
        .unwrap_or_else(|| format!("pid-{}", std::process::id()))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_what_is_held_and_the_env_overrides_by_name_only() {
        let signer = crate::testutil::Signer::new(3);
        let jws = signer.snapshot("web", 1, 7, 5, serde_json::json!({"port": 80, "host": "a"}));
        let doc = confstore_core::jws::verify(&jws, confstore_core::jws::TYP_SNAPSHOT, &[signer.public()]).unwrap();
        let version = confstore_core::stream::snapshot_version(&doc).unwrap();
        let env = crate::env::EnvOverrides::from_vars("web", vec![("WEB__PORT".to_owned(), "8080".to_owned())]);
        let config = Arc::new(Config::new(doc, version, &env));
        let r = Reporter::new("web", "pod-1");
        assert!(r.report().is_none(), "nothing held yet");
        r.applied(&config, Source::Live);
        r.set_healthy(Some(false));
        let s = r.report().unwrap();
        assert_eq!((s.version, s.generation, s.source, s.healthy), (Some(7), Some(1), Some(Source::Live), Some(false)));
        assert_eq!(s.env_overrides, vec!["port".to_owned()]);
        assert!(!s.to_json().contains("8080"), "never a value");
        Status::parse(s.to_json().as_bytes()).unwrap();
        let will = r.will();
        assert_eq!(will.topic, "system/config-status/web/pod-1");
        assert!(will.retain);
        assert!(confstore_core::fleet::check_instance_id(&default_instance_id()).is_ok());
    }
}
