//! Prometheus metrics (`GET /metrics`, text exposition format), with the
//! `prometheus-client` crate. Labels never carry secrets or tokens: routes are templates,
//! services are names.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Method.
    pub method: String,
    /// Route template (`/api/v1/services/{service}/snapshot`), or `unmatched`.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels of a refused request (403).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    /// `role` (the token's role does not grant the route's) or `scope` (another service).
    pub reason: String,
    /// Method.
    pub method: String,
    /// Route template.
    pub route: String,
}

/// Labels with one `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// What kind.
    pub kind: String,
}

/// Labels with one `listener` (http, mqtt).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    /// Which listener.
    pub listener: String,
}

/// Labels of a connection a listener closed or refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerReasonLabels {
    /// Which listener (http, mqtt).
    pub listener: String,
    /// Why (overloaded, evicted_idle, header_timeout, idle_timeout, not_authorized, acl, ...).
    pub reason: String,
}

/// `confstore_readers_aborted_total`: the reader-age guard's count (ADR 0016), kept by
/// confstore-log for every read of this process (exports, replays, search catch-ups).
#[derive(Debug)]
struct ReadersAborted;

impl Collector for ReadersAborted {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(confstore_log::guard::readers_aborted_total());
        let metric = encoder.encode_descriptor(
            "readers_aborted",
            "Database reads aborted for running longer than --max-read-secs (an open reader stops WAL checkpoints)",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

/// Every metric the server keeps. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Metrics(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    reads: Counter,
    writes: Family<KindLabel, Counter>,
    append_seconds: Histogram,
    commit_batch_events: Histogram,
    projection_lag: Family<KindLabel, Gauge>,
    fallback_events: Counter,
    mode_fallback: Gauge,
    checkpoint_size: Gauge,
    fleet_instances: Family<KindLabel, Gauge>,
    fleet_oldest_version: Gauge,
    fleet_reports: Family<KindLabel, Counter>,
    rollouts_active: Gauge,
    rollout_decisions: Family<KindLabel, Counter>,
    signature_failures: Family<KindLabel, Counter>,
    auth_denials: Family<KindLabel, Counter>,
    access_denied: Family<DenialLabels, Counter>,
    access_denied_unrecorded: Counter,
    head_seq: Gauge,
    epoch: Gauge,
    mqtt_connected: Gauge,
    mqtt_published: Family<KindLabel, Counter>,
    mqtt_published_seq: Gauge,
    mqtt_pending: Gauge,
    mqtt_connects: Counter,
    mqtt_dropped: Counter,
    mqtt_deferred_rendered: Counter,
    connections: Family<ListenerLabel, Gauge>,
    connections_closed: Family<ListenerReasonLabels, Counter>,
    append_failing: Gauge,
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("confstore");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered, by route template and status", requests.clone());
        let reads = Counter::default();
        registry.register("reads", "Configuration reads answered (snapshots, values, state)", reads.clone());
        let writes = Family::<KindLabel, Counter>::default();
        registry.register("writes", "Changesets submitted, by outcome (committed, rejected, failed)", writes.clone());
        let append_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register(
            "append_seconds",
            "Time from submitting a changeset to its durable commit",
            append_seconds.clone(),
        );
        let commit_batch_events = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register(
            "commit_batch_events",
            "Events made durable per group commit (as seen by the read model)",
            commit_batch_events.clone(),
        );
        let projection_lag = Family::<KindLabel, Gauge>::default();
        registry.register(
            "projection_lag_events",
            "Events the projection (search, lkg) is behind the head",
            projection_lag.clone(),
        );
        let fallback_events = Counter::default();
        registry.register(
            "fallback_events",
            "Times the server entered the read-only fallback",
            fallback_events.clone(),
        );
        let mode_fallback = Gauge::default();
        let checkpoint_size = Gauge::default();
        registry.register(
            "read_only_fallback",
            "1 while serving from the LKG file (read-only), else 0",
            mode_fallback.clone(),
        );
        registry.register(
            "checkpoint_size",
            "Events covered by the latest signed Merkle-tree checkpoint (docs/format.md §19)",
            checkpoint_size.clone(),
        );
        let fleet_instances = Family::<KindLabel, Gauge>::default();
        registry.register(
            "fleet_instances",
            "Client instances in the fleet view by state (current, behind, unhealthy, offline)",
            fleet_instances.clone(),
        );
        let fleet_oldest_version = Gauge::default();
        registry.register(
            "fleet_oldest_version",
            "The oldest service version an online instance applied (an epoch; 0 with none online)",
            fleet_oldest_version.clone(),
        );
        let rollouts_active = Gauge::default();
        registry.register(
            "rollouts_active",
            "Staged rollouts in progress (docs/format.md §21)",
            rollouts_active.clone(),
        );
        let rollout_decisions = Family::<KindLabel, Counter>::default();
        registry.register(
            "rollout_decisions",
            "Rollouts ended, by kind: promoted or aborted, manual or automatic",
            rollout_decisions.clone(),
        );
        let fleet_reports = Family::<KindLabel, Counter>::default();
        registry.register(
            "fleet_reports",
            "Instance status reports by outcome (recorded, refused)",
            fleet_reports.clone(),
        );
        let signature_failures = Family::<KindLabel, Counter>::default();
        registry.register(
            "signature_failures",
            "Signatures or MACs that failed to verify, by what (lkg, log)",
            signature_failures.clone(),
        );
        let auth_denials = Family::<KindLabel, Counter>::default();
        registry.register(
            "auth_denials",
            "Requests refused by authentication (401) or authorization (403)",
            auth_denials.clone(),
        );
        let access_denied = Family::<DenialLabels, Counter>::default();
        registry.register(
            "access_denied",
            "Requests refused with 403, by reason (role, scope), method and route template",
            access_denied.clone(),
        );
        let access_denied_unrecorded = Counter::default();
        registry.register(
            "access_denied_unrecorded",
            "Refusals neither appended nor summarised in the log: the denial table was full of tokens with refusals \
             pending, or the server was in the read-only fallback (they are still logged)",
            access_denied_unrecorded.clone(),
        );
        let head_seq = Gauge::default();
        registry.register("head_seq", "Seq of the last event in the read model", head_seq.clone());
        let epoch = Gauge::default();
        registry.register("epoch", "Configuration epoch of the read model", epoch.clone());
        let mqtt_connected = Gauge::default();
        registry.register("mqtt_connected", "1 while the publisher is connected to the broker", mqtt_connected.clone());
        let mqtt_published = Family::<KindLabel, Counter>::default();
        registry.register(
            "mqtt_published",
            "Messages the broker acknowledged, by kind (snapshot, delta, event, head, health, snapshot_deferred: a \
             large service's retained snapshot the embedded broker signs when a subscription first needs it)",
            mqtt_published.clone(),
        );
        let mqtt_published_seq = Gauge::default();
        registry.register(
            "mqtt_published_seq",
            "Seq through which every message is acknowledged by the broker (the publisher's checkpoint)",
            mqtt_published_seq.clone(),
        );
        let mqtt_pending = Gauge::default();
        registry.register(
            "mqtt_pending_messages",
            "Messages handed to the MQTT client and not yet acknowledged",
            mqtt_pending.clone(),
        );
        let mqtt_connects = Counter::default();
        registry.register("mqtt_connects", "Connections the publisher made to the broker", mqtt_connects.clone());
        let mqtt_dropped = Counter::default();
        registry.register(
            "mqtt_dropped",
            "Messages the embedded broker dropped: the oldest of a persistent session's queue past its bound, or a \
             report the fleet view's full queue could not take",
            mqtt_dropped.clone(),
        );
        let mqtt_deferred_rendered = Counter::default();
        registry.register(
            "mqtt_deferred_rendered",
            "Deferred retained snapshots the embedded broker rendered and signed for a new subscription \
             (docs/adr/0034)",
            mqtt_deferred_rendered.clone(),
        );
        let connections = Family::<ListenerLabel, Gauge>::default();
        registry.register("open_connections", "Open client connections, by listener (http, mqtt)", connections.clone());
        let connections_closed = Family::<ListenerReasonLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections a listener refused or closed itself, by listener and reason (overloaded, evicted_idle, \
             header_timeout, idle_timeout, connect_timeout, not_authorized, acl_denied, ...)",
            connections_closed.clone(),
        );
        let append_failing = Gauge::default();
        registry.register(
            "append_failing",
            "1 while the last append failed in the store (disk full, I/O error), until one commits again",
            append_failing.clone(),
        );
        registry.register_collector(Box::new(ReadersAborted));
        Self(Arc::new(Inner {
            registry,
            requests,
            reads,
            writes,
            append_seconds,
            commit_batch_events,
            projection_lag,
            fallback_events,
            mode_fallback,
            checkpoint_size,
            fleet_instances,
            fleet_oldest_version,
            fleet_reports,
            rollouts_active,
            rollout_decisions,
            signature_failures,
            auth_denials,
            access_denied,
            access_denied_unrecorded,
            head_seq,
            epoch,
            mqtt_connected,
            mqtt_published,
            mqtt_published_seq,
            mqtt_pending,
            mqtt_connects,
            mqtt_dropped,
            mqtt_deferred_rendered,
            connections,
            connections_closed,
            append_failing,
        }))
    }

    /// Counts an answered request.
    pub fn request(&self, method: &str, route: &str, status: u16) {
        self.0
            .requests
            .get_or_create(&RequestLabels { method: method.to_owned(), route: route.to_owned(), status })
            .inc();
    }

    /// Counts a read.
    pub fn read(&self) {
        self.0.reads.inc();
    }

    /// Counts a write outcome and, when committed, its latency.
    pub fn write(&self, outcome: &str, seconds: f64) {
        self.0.writes.get_or_create(&KindLabel { kind: outcome.to_owned() }).inc();
        if outcome == "committed" {
            self.0.append_seconds.observe(seconds);
        }
    }

    /// Records the size of one commit.
    pub fn commit_batch(&self, events: usize) {
        self.0.commit_batch_events.observe(f64::from(u32::try_from(events).unwrap_or(u32::MAX)));
    }

    /// Sets a projection's lag.
    pub fn projection_lag(&self, projection: &str, events: u64) {
        self.0.projection_lag.get_or_create(&KindLabel { kind: projection.to_owned() }).set(gauge_value(events));
    }

    /// Records entering (true) or leaving (false) the fallback.
    pub fn fallback(&self, on: bool) {
        if on {
            self.0.fallback_events.inc();
        }
        self.0.mode_fallback.set(i64::from(on));
    }

    /// Records the size of a newly published Merkle-tree checkpoint.
    pub fn checkpoint(&self, size: u64) {
        self.0.checkpoint_size.set(gauge_value(size));
    }

    /// The fleet view's counts by state, and the oldest version an online instance holds.
    pub fn fleet(&self, by_state: &[(&str, u64)], oldest_version: u64) {
        for (state, n) in by_state {
            self.0.fleet_instances.get_or_create(&KindLabel { kind: (*state).to_owned() }).set(gauge_value(*n));
        }
        self.0.fleet_oldest_version.set(gauge_value(oldest_version));
    }

    /// Counts a rollout's end: `outcome` is `promoted` or `aborted`.
    pub fn rollout_decision(&self, outcome: &str, automatic: bool) {
        let how = if automatic { "automatic" } else { "manual" };
        self.0.rollout_decisions.get_or_create(&KindLabel { kind: format!("{outcome}_{how}") }).inc();
    }

    /// Sets the number of active rollouts.
    pub fn rollouts_active(&self, n: usize) {
        self.0.rollouts_active.set(gauge_value(n as u64));
    }

    /// Counts a status report: recorded or refused.
    pub fn fleet_report(&self, recorded: bool) {
        let kind = if recorded { "recorded" } else { "refused" };
        self.0.fleet_reports.get_or_create(&KindLabel { kind: kind.to_owned() }).inc();
    }

    /// Counts a failed signature or MAC check.
    pub fn signature_failure(&self, what: &str) {
        self.0.signature_failures.get_or_create(&KindLabel { kind: what.to_owned() }).inc();
    }

    /// Counts a refused request (`unauthorized` or `forbidden`).
    pub fn auth_denial(&self, kind: &str) {
        self.0.auth_denials.get_or_create(&KindLabel { kind: kind.to_owned() }).inc();
    }

    /// Counts a 403 by reason, method and route template.
    pub fn access_denied(&self, reason: &str, method: &str, route: &str) {
        let labels = DenialLabels { reason: reason.to_owned(), method: method.to_owned(), route: route.to_owned() };
        self.0.access_denied.get_or_create(&labels).inc();
    }

    /// Counts a refusal the log does not hold (the denial table was full, or the fallback).
    pub fn access_denied_unrecorded(&self) {
        self.0.access_denied_unrecorded.inc();
    }

    /// Sets the head gauges.
    pub fn set_head(&self, seq: u64, epoch: u64) {
        self.0.head_seq.set(gauge_value(seq));
        self.0.epoch.set(gauge_value(epoch));
    }

    /// Records the publisher connecting (true) or losing the broker (false).
    pub fn mqtt_connected(&self, up: bool) {
        if up {
            self.0.mqtt_connects.inc();
        }
        self.0.mqtt_connected.set(i64::from(up));
    }

    /// Counts a message the embedded broker dropped.
    pub fn mqtt_dropped(&self) {
        self.0.mqtt_dropped.inc();
    }

    /// Counts a deferred retained snapshot the embedded broker made for a subscription.
    pub fn mqtt_deferred_rendered(&self) {
        self.0.mqtt_deferred_rendered.inc();
    }

    /// Counts a message the broker acknowledged.
    pub fn mqtt_acked(&self, kind: &str) {
        self.0.mqtt_published.get_or_create(&KindLabel { kind: kind.to_owned() }).inc();
    }

    /// Sets the publisher's checkpoint and queue gauges.
    pub fn mqtt_progress(&self, published_seq: u64, pending: usize) {
        self.0.mqtt_published_seq.set(gauge_value(published_seq));
        self.0.mqtt_pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Sets the number of open connections of `listener` (http, mqtt).
    pub fn open_connections(&self, listener: &str, open: usize) {
        let labels = ListenerLabel { listener: listener.to_owned() };
        self.0.connections.get_or_create(&labels).set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    /// Counts a connection `listener` refused or closed itself, and why.
    pub fn connection_closed(&self, listener: &str, reason: &str) {
        let labels = ListenerReasonLabels { listener: listener.to_owned(), reason: reason.to_owned() };
        self.0.connections_closed.get_or_create(&labels).inc();
    }

    /// Records whether appends are failing now (see `App::note_append`).
    pub fn append_failing(&self, failing: bool) {
        self.0.append_failing.set(i64::from(failing));
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }
}
