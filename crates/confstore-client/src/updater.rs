//! The one place a snapshot becomes the client's configuration: verify, judge (the shared
//! acceptance rule of `confstore_core::stream`), fill gaps over REST, apply, persist.
//!
//! Every source goes through [`Updater::offer`]: the start-up REST snapshot, the retained
//! MQTT message and each live update. The updater is owned by one task at a time, so
//! snapshots are handled strictly one after another, in arrival order.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use confstore_core::VerifyingKey;
use confstore_core::rollout::{self, Outcome, Staged};
use confstore_core::stream::{self, Rejection, SnapshotVersion, UpdateKind, Verdict};
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::env::EnvOverrides;
use crate::lkg::{self, LkgError};
use crate::rest::Rest;
use crate::stats::Counters;
use crate::tlog::Audit;

/// How many missing versions a gap walk fetches at most before it gives up and resyncs.
pub(crate) const GAP_WALK_VERSIONS_MAX: usize = 64;

/// The callback run for every applied version.
pub(crate) type OnUpdate = Arc<dyn Fn(&Config) + Send + Sync + 'static>;

/// Where applied versions become visible once the client is running.
pub(crate) struct Outlet {
    pub(crate) config: ArcSwap<Config>,
    pub(crate) watch: watch::Sender<Arc<Config>>,
}

/// What became of an offered snapshot.
#[derive(Debug)]
pub(crate) enum Offer {
    /// Applied (after any missing versions before it).
    Applied,
    /// Verified and addressed to this client, but not newer than what it holds.
    Held(Rejection),
    /// Not a verified snapshot of this store and service (or on a foreign topic).
    Invalid { reason: String },
    /// A checkpoint message, handed to the transparency-log checks (crate::tlog).
    Checkpoint,
    /// A staged-rollout message (docs/format.md §21), taken or refused (counted).
    Staged,
}

/// The fixed inputs of an [`Updater`].
pub(crate) struct UpdaterSettings {
    pub(crate) service: String,
    pub(crate) keys: Vec<VerifyingKey>,
    pub(crate) store_id: Option<String>,
    pub(crate) env: EnvOverrides,
    pub(crate) on_update: Option<OnUpdate>,
    pub(crate) lkg_path: Option<PathBuf>,
    pub(crate) rest: Option<Rest>,
    /// Status reports (docs/format.md §20), when the client makes them.
    pub(crate) reporter: Option<Arc<crate::status::Reporter>>,
    /// This instance's id: it places the instance in staged rollouts' cohorts.
    pub(crate) instance: String,
    /// The transparency-log checks, if on (they need `rest`).
    pub(crate) audit: Option<Audit>,
}

/// A verified version with the bytes it came as.
struct Verified {
    jws: Value,
    /// The verified document: a snapshot's, or a delta's.
    document: Value,
    version: SnapshotVersion,
    kind: UpdateKind,
}

/// The client's state machine: what it holds and how it moves on.
pub(crate) struct Updater {
    settings: UpdaterSettings,
    counters: Arc<Counters>,
    current: Option<Arc<Config>>,
    outlet: Option<Arc<Outlet>>,
    /// What the LKG file holds: the last snapshot applied (or received for the held
    /// version) and the deltas applied since.
    lkg_snapshot: Option<(SnapshotVersion, Value)>,
    lkg_deltas: Vec<(SnapshotVersion, Value)>,
    /// Whether the LKG file lags what `lkg_snapshot` and `lkg_deltas` say.
    lkg_dirty: bool,
    /// Inside [`Self::begin_batch`] .. [`Self::end_batch`]: the LKG file is written once,
    /// at the end, not after every version.
    batching: bool,
    /// Where the snapshots being offered come from, for the status report.
    source: confstore_core::fleet::Source,
    /// Staged rollouts as this instance sees them.
    staged: StagedView,
    /// The configuration shown (the held one, or a staged one running in its place).
    shown: Option<Arc<Config>>,
}

/// Staged rollouts as the client sees them (docs/format.md §21.4).
#[derive(Default)]
struct StagedView {
    /// The newest staged message taken: later ones must be newer news.
    seen: Option<Staged>,
    /// The active message of the newest rollout heard active, and its configuration if this
    /// instance is in its cohort.
    active: Option<(Staged, Option<Arc<Config>>)>,
    /// How that rollout ended, once heard.
    ended: Option<Outcome>,
}

impl Updater {
    pub(crate) fn new(settings: UpdaterSettings, counters: Arc<Counters>) -> Self {
        Self {
            settings,
            counters,
            current: None,
            outlet: None,
            lkg_snapshot: None,
            lkg_deltas: Vec::new(),
            lkg_dirty: false,
            batching: false,
            source: confstore_core::fleet::Source::Rest,
            staged: StagedView::default(),
            shown: None,
        }
    }

    /// Starts a batch of messages already waiting: each is applied (and seen by readers) as
    /// before, but the LKG file is written once, by [`Self::end_batch`], before the batch's
    /// messages are acknowledged. Under a burst of updates the client keeps up instead of
    /// writing (and syncing) the whole file for every one.
    pub(crate) fn begin_batch(&mut self) {
        self.batching = true;
    }

    /// Ends the batch: writes the LKG file if anything in it changed the file.
    pub(crate) async fn end_batch(&mut self) {
        self.batching = false;
        self.flush_lkg().await;
    }

    /// The LKG file needs writing: now, or at the end of the batch.
    async fn lkg_changed(&mut self) {
        self.lkg_dirty = true;
        if !self.batching {
            self.flush_lkg().await;
        }
    }

    async fn flush_lkg(&mut self) {
        if std::mem::take(&mut self.lkg_dirty) {
            self.persist().await;
        }
    }

    /// The counters it bumps.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The configuration held, if any.
    pub(crate) fn current(&self) -> Option<&Arc<Config>> {
        self.current.as_ref()
    }

    fn held(&self) -> Option<&SnapshotVersion> {
        self.current.as_deref().map(Config::version)
    }

    /// From now on, applied versions are also stored in the outlet's `ArcSwap` and sent
    /// on its watch channel. `None` if nothing is held yet.
    pub(crate) fn open_outlet(&mut self) -> Option<Arc<Outlet>> {
        let current = self.effective()?;
        self.shown = Some(Arc::clone(&current));
        let outlet =
            Arc::new(Outlet { config: ArcSwap::new(Arc::clone(&current)), watch: watch::Sender::new(current) });
        self.outlet = Some(Arc::clone(&outlet));
        Some(outlet)
    }

    /// Takes up the version in the LKG file as the one held (without `on_update`: an
    /// earlier run applied it). `Ok(false)` if there is no file yet.
    pub(crate) fn resume_lkg(&mut self) -> Result<bool, LkgError> {
        let Some(path) = &self.settings.lkg_path else { return Ok(false) };
        let s = &self.settings;
        let Some(loaded) = lkg::load(path, &s.keys, s.store_id.as_deref(), &s.service)? else { return Ok(false) };
        info!(
            service = %s.service, epoch = loaded.version.changed_epoch, path = %path.display(),
            "resumed the version in the lkg file"
        );
        let config = Config::new(loaded.document, loaded.version, &s.env);
        if let (Some(audit), Some(cp)) = (&s.audit, loaded.checkpoint) {
            audit.shared.set(Some(cp));
        }
        self.settings.store_id.get_or_insert_with(|| config.version().store_id.clone());
        let config = Arc::new(config);
        if let Some(r) = &self.settings.reporter {
            r.applied(&config, confstore_core::fleet::Source::Lkg);
        }
        self.current = Some(config);
        self.lkg_snapshot = Some((loaded.jws_version, loaded.jws));
        self.lkg_deltas = loaded.deltas;
        Ok(true)
    }

    /// Handles one MQTT message: it must be on this service's snapshot topic and be a
    /// snapshot or a delta for this service.
    pub(crate) async fn on_message(&mut self, topic: &str, payload: &[u8]) -> Offer {
        if topic == stream::CHECKPOINT_TOPIC
            && let Some(audit) = &self.settings.audit
        {
            audit.checkpoint(payload);
            return Offer::Checkpoint;
        }
        self.source = confstore_core::fleet::Source::Live;
        if rollout::service_of_staged_topic(topic) == Some(self.settings.service.as_str()) {
            self.on_staged(payload).await;
            return Offer::Staged;
        }
        if stream::service_of_snapshot_topic(topic) != Some(self.settings.service.as_str()) {
            self.counters.reject("wrong_topic");
            debug!(topic, "ignored a message on a foreign topic");
            return Offer::Invalid { reason: format!("message on topic {topic:?}") };
        }
        match serde_json::from_slice::<Value>(payload) {
            Ok(jws) => self.offer(jws).await,
            Err(e) => self.invalid(Rejection::Malformed(format!("payload is not JSON: {e}"))),
        }
    }

    /// A message of the service's staged topic: verified, judged against the newest one
    /// taken (replays refused), then the configuration shown follows the rule of
    /// `confstore_core::rollout::staged_to_run`.
    async fn on_staged(&mut self, payload: &[u8]) {
        let s = &self.settings;
        let verified = serde_json::from_slice::<Value>(payload)
            .map_err(|e| rollout::StagedRejection::Malformed(format!("payload is not JSON: {e}")))
            .and_then(|jws| rollout::verify_staged(&jws, &s.keys, s.store_id.as_deref(), &s.service));
        let staged = match verified.and_then(|m| rollout::judge_staged(self.staged.seen.as_ref(), &m).map(|()| m)) {
            Ok(m) => m,
            Err(rejection) => {
                self.counters.reject(rejection.kind());
                debug!(service = %s.service, "staged rollout message refused: {rejection}");
                return;
            }
        };
        match &staged.state {
            rollout::StagedState::Active { cohort, snapshot, .. } => {
                let config = if cohort.contains(&s.service, &s.instance) {
                    match stream::snapshot_version(snapshot) {
                        Ok(version) => {
                            Some(Arc::new(Config::new(snapshot.clone(), version, &s.env).staged(staged.rollout)))
                        }
                        Err(rejection) => return drop(self.invalid(rejection)),
                    }
                } else {
                    None
                };
                info!(service = %s.service, rollout = staged.rollout, in_cohort = config.is_some(),
                    "a staged rollout started");
                self.staged.active = Some((staged.clone(), config));
                self.staged.ended = None;
            }
            rollout::StagedState::Ended { outcome, .. } => {
                info!(service = %s.service, rollout = staged.rollout, outcome = outcome.as_str(), "a staged rollout ended");
                if self.staged.active.as_ref().is_some_and(|(a, _)| a.rollout == staged.rollout) {
                    self.staged.ended = Some(*outcome);
                } else {
                    self.staged.active = None;
                    self.staged.ended = None;
                }
            }
        }
        self.staged.seen = Some(staged);
        self.show(false).await;
    }

    /// The configuration to show: the staged one while the rule says so, else the held one.
    fn effective(&self) -> Option<Arc<Config>> {
        let held = self.current.as_ref()?;
        if let Some((active, Some(config))) = &self.staged.active
            && rollout::staged_to_run(Some(active), self.staged.ended, Some(held.version()), &self.settings.instance)
                .is_some()
        {
            return Some(Arc::clone(config));
        }
        Some(Arc::clone(held))
    }

    /// Shows the effective configuration: readers, the status report, `on_update` and the
    /// watch channel. `always`: even if it is the one shown already (a new version held).
    async fn show(&mut self, always: bool) {
        let Some(config) = self.effective() else { return };
        if !always && self.shown.as_ref().is_some_and(|s| Arc::ptr_eq(s, &config)) {
            return;
        }
        if let Some(r) = config.rollout() {
            info!(service = %self.settings.service, rollout = r, "running the staged configuration");
        }
        self.shown = Some(Arc::clone(&config));
        if let Some(outlet) = &self.outlet {
            outlet.config.store(Arc::clone(&config));
        }
        if let Some(r) = &self.settings.reporter {
            r.applied(&config, self.source);
        }
        if let Some(on_update) = &self.settings.on_update {
            on_update(&config);
        }
        if let Some(outlet) = &self.outlet {
            outlet.watch.send_replace(config);
        }
    }

    /// Verifies, judges and (if it is newer) applies a snapshot JWS, first fetching and
    /// applying any versions missing before it.
    pub(crate) async fn offer(&mut self, jws: Value) -> Offer {
        self.take(jws, true).await
    }

    /// Asks REST for the latest snapshot and takes it if it is newer (with any versions
    /// missing before it): what the client does when the broker may have lost messages
    /// meant for it. Nothing to do without a REST URL.
    pub(crate) async fn catch_up(&mut self) -> Result<(), String> {
        let Some(rest) = &self.settings.rest else { return Ok(()) };
        let jws = rest.snapshot(None).await.map_err(|e| e.to_string())?;
        Counters::bump(&self.counters.catch_ups);
        self.source = confstore_core::fleet::Source::Rest;
        let incoming = match self.verify(jws) {
            Ok(v) if v.kind == UpdateKind::Snapshot => v,
            Ok(_) => return Err("REST answered a delta, not a snapshot".into()),
            Err(rejection) => return Err(rejection.to_string()),
        };
        match self.take_snapshot(incoming, false).await {
            Offer::Invalid { reason } => Err(reason),
            Offer::Applied | Offer::Held(_) | Offer::Checkpoint | Offer::Staged => Ok(()),
        }
    }

    /// [`Self::offer`]; `count_held`: whether a verified snapshot that is not newer counts
    /// as a rejection (it does for messages; a catch-up that finds nothing new is no
    /// rejected message).
    async fn take(&mut self, jws: Value, count_held: bool) -> Offer {
        let incoming = match self.verify(jws) {
            Ok(v) => v,
            Err(rejection) => return self.invalid(rejection),
        };
        match incoming.kind {
            UpdateKind::Delta => self.take_delta(incoming, count_held).await,
            UpdateKind::Deltas => self.take_deltas(incoming, count_held).await,
            UpdateKind::Snapshot => self.take_snapshot(incoming, count_held).await,
        }
    }

    /// Several consecutive deltas signed once (docs/adr/0035): each version taken in turn
    /// as a delta (those not newer than the one held are skipped), the LKG file written
    /// once after them. Applied if any version was; otherwise held, and counted once, as
    /// its newest version's rejection (a copy of the message that brought the version held
    /// is a `duplicate`, an older one `stale`).
    async fn take_deltas(&mut self, incoming: Verified, count_held: bool) -> Offer {
        let versions: Vec<(Value, SnapshotVersion)> = match stream::deltas_of(&incoming.document) {
            Ok(list) => list.into_iter().map(|(doc, v)| (doc.clone(), v)).collect(),
            Err(rejection) => return self.invalid(rejection),
        };
        let outer = std::mem::replace(&mut self.batching, true);
        let (mut applied, mut held) = (false, None);
        let mut invalid = None;
        for (document, version) in versions {
            let one = Verified { jws: incoming.jws.clone(), document, version, kind: UpdateKind::Deltas };
            match self.take_delta(one, false).await {
                Offer::Applied => applied = true,
                Offer::Held(rejection) => held = Some(rejection),
                // The versions after it cannot follow: the rest of the message goes too.
                other => {
                    invalid = Some(other);
                    break;
                }
            }
        }
        if !outer {
            self.end_batch().await;
        }
        match (invalid, applied, held) {
            (Some(offer), _, _) => offer,
            (None, true, _) => Offer::Applied,
            (None, false, Some(rejection)) => {
                if count_held {
                    self.count(&rejection);
                }
                Offer::Held(rejection)
            }
            (None, false, None) => Offer::Invalid { reason: "a deltas message without deltas".into() },
        }
    }

    async fn take_snapshot(&mut self, incoming: Verified, count_held: bool) -> Offer {
        match stream::judge(self.held(), &incoming.version) {
            Ok(Verdict::Apply) => {}
            Ok(Verdict::Gap { missing_epoch }) => self.fill_gap(&incoming.version, missing_epoch).await,
            Err(rejection) => {
                let covered = match &rejection {
                    // The retained snapshot of the version held: the LKG file keeps it
                    // instead of the deltas that led there.
                    Rejection::Duplicate(_) => Some(self.lkg_deltas.len()).filter(|n| *n > 0),
                    // A snapshot of a version the file holds as a delta (a large service's
                    // retained snapshot comes after the deltas sent while it was signed:
                    // docs/format.md §17.5): it replaces that delta and those before it.
                    Rejection::Stale { .. } => {
                        self.lkg_deltas.iter().position(|(v, _)| same_version(v, &incoming.version)).map(|i| i + 1)
                    }
                    _ => None,
                };
                if let Some(n) = covered {
                    self.lkg_snapshot = Some((incoming.version.clone(), incoming.jws));
                    self.lkg_deltas.drain(..n);
                    self.lkg_changed().await;
                }
                // A late snapshot of a version the file holds (one it just compacted with, or
                // the file's own snapshot) is the stream working as designed, not a replay:
                // no rejection is counted.
                let late = matches!(rejection, Rejection::Stale { .. })
                    && (covered.is_some()
                        || self.lkg_snapshot.as_ref().is_some_and(|(v, _)| same_version(v, &incoming.version)));
                if late {
                    return Offer::Held(rejection);
                }
                if count_held {
                    self.count(&rejection);
                }
                return Offer::Held(rejection);
            }
        }
        self.apply(incoming).await;
        Offer::Applied
    }

    /// A delta: applied on the held version it follows, after fetching any versions
    /// missing before it; when they cannot be fetched, the current snapshot is taken over
    /// REST instead (a resync).
    async fn take_delta(&mut self, incoming: Verified, count_held: bool) -> Offer {
        match stream::judge_delta(self.held(), &incoming.version) {
            Ok(Verdict::Apply) => {}
            Ok(Verdict::Gap { missing_epoch }) => {
                let filled = missing_epoch > 0 && {
                    self.fill_gap(&incoming.version, missing_epoch).await;
                    self.held().is_some_and(|h| {
                        h.generation == incoming.version.generation && h.changed_epoch == incoming.version.prev_epoch
                    })
                };
                if !filled {
                    Counters::bump(&self.counters.resyncs);
                    warn!(
                        service = %self.settings.service, incoming = incoming.version.changed_epoch,
                        "cannot reach the version before delta {}; taking the current snapshot over REST (resync)",
                        incoming.version.changed_epoch
                    );
                    return match self.catch_up().await {
                        Ok(()) => Offer::Applied,
                        Err(reason) => Offer::Invalid { reason },
                    };
                }
            }
            Err(rejection) => {
                if count_held {
                    self.count(&rejection);
                }
                return Offer::Held(rejection);
            }
        }
        let Some(held) = self.current.as_ref() else { return self.invalid(Rejection::Malformed("no base".into())) };
        match held.with_delta(&incoming.document, incoming.version.clone(), &self.settings.env) {
            Ok(config) => {
                self.apply_config(config, incoming.jws, incoming.kind).await;
                Offer::Applied
            }
            Err(rejection) => self.invalid(rejection),
        }
    }

    fn invalid(&self, rejection: Rejection) -> Offer {
        self.count(&rejection);
        Offer::Invalid { reason: rejection.to_string() }
    }

    fn count(&self, rejection: &Rejection) {
        self.counters.reject(rejection.kind());
        match rejection {
            // A newer version that does not descend from the held one needs a human.
            Rejection::Forked { .. } => warn!(service = %self.settings.service, "snapshot rejected: {rejection}"),
            _ => debug!(service = %self.settings.service, kind = rejection.kind(), "snapshot rejected: {rejection}"),
        }
    }

    /// Checks signature, kind (snapshot or delta), store (pinned or not yet: the first
    /// verified snapshot pins it, see `apply`) and service.
    fn verify(&self, jws: Value) -> Result<Verified, Rejection> {
        let s = &self.settings;
        let (kind, document, version) = stream::verify_update(&jws, &s.keys, s.store_id.as_deref(), &s.service)?;
        Ok(Verified { jws, document, version, kind })
    }

    /// Fetches the versions between the held one and `incoming` and applies them oldest
    /// first; if that is impossible, counts a resync (the caller applies `incoming` anyway,
    /// so the client converges).
    async fn fill_gap(&mut self, incoming: &SnapshotVersion, missing_epoch: u64) {
        match self.walk(incoming, missing_epoch).await {
            Ok(chain) => {
                for version in chain.into_iter().rev() {
                    self.apply(version).await;
                    Counters::bump(&self.counters.gaps_filled);
                }
            }
            Err(why) => {
                Counters::bump(&self.counters.resyncs);
                warn!(
                    service = %self.settings.service, held = ?self.held().map(|v| v.changed_epoch),
                    incoming = incoming.changed_epoch, "cannot fill the gap before version {}: {why}; \
                    applying it directly (resync)", incoming.changed_epoch
                );
            }
        }
    }

    /// Walks the version chain back from `missing_epoch` over REST until it meets the held
    /// version. Returns the fetched versions, newest first.
    async fn walk(&self, incoming: &SnapshotVersion, missing_epoch: u64) -> Result<Vec<Verified>, String> {
        let rest = self.settings.rest.as_ref().ok_or("no rest_url to fetch missing versions from")?;
        let mut chain = Vec::new();
        let mut want = missing_epoch;
        loop {
            if chain.len() == GAP_WALK_VERSIONS_MAX {
                return Err(format!("more than {GAP_WALK_VERSIONS_MAX} versions missing"));
            }
            let jws = rest.snapshot(Some(want)).await.map_err(|e| e.to_string())?;
            let fetched = self.verify(jws).map_err(|r| format!("version {want} from REST: {r}"))?;
            if fetched.kind != UpdateKind::Snapshot {
                return Err(format!("version {want} from REST is not a snapshot"));
            }
            let v = &fetched.version;
            if v.changed_epoch != want || v.generation != incoming.generation {
                return Err(format!(
                    "asked REST for version {want} of generation {}, got version {} of generation {}",
                    incoming.generation, v.changed_epoch, v.generation
                ));
            }
            let verdict = stream::judge(self.held(), v).map_err(|r| format!("version {want} from REST: {r}"))?;
            chain.push(fetched);
            match verdict {
                Verdict::Apply => return Ok(chain),
                Verdict::Gap { missing_epoch } => want = missing_epoch,
            }
        }
    }

    /// Makes the snapshot `v` the configuration.
    async fn apply(&mut self, v: Verified) {
        let config = Config::new(v.document, v.version, &self.settings.env);
        self.apply_config(config, v.jws, v.kind).await;
    }

    /// Makes `config` (from a verified `jws` of `kind`) the configuration: swap,
    /// `on_update`, watch, then the LKG file.
    async fn apply_config(&mut self, config: Config, jws: Value, kind: UpdateKind) {
        let config = Arc::new(config);
        let version = config.version();
        self.settings.store_id.get_or_insert_with(|| version.store_id.clone());
        info!(
            service = %self.settings.service, generation = version.generation, epoch = version.changed_epoch,
            prev_epoch = version.prev_epoch, "applied a configuration version"
        );
        self.current = Some(Arc::clone(&config));
        self.show(true).await;
        Counters::bump(&self.counters.applied);
        if let Some(audit) = &self.settings.audit {
            audit.applied(&version.store_id, version.generation, version.changed_seq);
        }
        match kind {
            UpdateKind::Snapshot => {
                self.lkg_snapshot = Some((version.clone(), jws));
                self.lkg_deltas.clear();
            }
            // The versions of one deltas message are one entry of the file, at the newest
            // version applied from it.
            UpdateKind::Deltas
                if self.lkg_deltas.last().is_some_and(|(_, last)| last.get("signature") == jws.get("signature")) =>
            {
                if let Some(last) = self.lkg_deltas.last_mut() {
                    last.0 = version.clone();
                }
            }
            UpdateKind::Delta | UpdateKind::Deltas if self.lkg_deltas.len() < lkg::DELTAS_MAX => {
                self.lkg_deltas.push((version.clone(), jws))
            }
            // Too many deltas since the last snapshot: the file waits for the next one.
            UpdateKind::Delta | UpdateKind::Deltas => return,
        }
        self.lkg_changed().await;
    }

    /// Saves the applied version (its snapshot and the deltas since) as the high-water mark.
    async fn persist(&self) {
        let Some(path) = self.settings.lkg_path.clone() else { return };
        let Some(jws) = self.lkg_snapshot.as_ref().map(|(_, j)| j.clone()) else { return };
        let deltas: Vec<Value> = self.lkg_deltas.iter().map(|(_, d)| d.clone()).collect();
        let service = self.settings.service.clone();
        let store_id = self.settings.store_id.clone().unwrap_or_default();
        let shown = path.display().to_string();
        // The accepted checkpoint, if it is of the generation held.
        let generation = self.held().map(|v| v.generation);
        let checkpoint = self
            .settings
            .audit
            .as_ref()
            .and_then(|a| a.shared.accepted())
            .filter(|cp| Some(cp.generation) == generation)
            .map(|cp| cp.note);
        let result = tokio::task::spawn_blocking(move || {
            lkg::store_with(&path, &service, &store_id, &jws, &deltas, checkpoint.as_deref())
        })
        .await;
        let error = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        Counters::bump(&self.counters.lkg_write_errors);
        warn!(path = %shown, "cannot write the lkg file: {error}; a restart without the store may start from an older version");
    }
}

/// Whether `a` and `b` are the same version of the same service (a delta's and a snapshot's
/// `epoch` may differ: a snapshot made later is at a later store epoch).
fn same_version(a: &SnapshotVersion, b: &SnapshotVersion) -> bool {
    (&a.store_id, &a.service, a.generation, a.changed_epoch, a.prev_epoch, a.changed_seq)
        == (&b.store_id, &b.service, b.generation, b.changed_epoch, b.prev_epoch, b.changed_seq)
}

#[cfg(test)]
mod tests;
