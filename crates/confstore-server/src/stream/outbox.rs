//! The publisher's outbox: what the live stream must carry, and when. Pure: no broker, no
//! clock of its own (every call takes `now`), no I/O, so it is unit-tested alone.
//!
//! Events go in (from the read model's recent events, or read from the log after a
//! restart); batches of signed messages come out, in the order they must reach the
//! broker: a changeset's events on `system/config-events/<service>`, then the snapshots of
//! the services due, then the head.
//!
//! A write costs what it changes (docs/adr/0020):
//! - each event's message is made once, when the event comes in (its size is the event's);
//! - each changeset gives every service it changed one version message, at once: a
//!   **delta** of the keys it touched (not retained; its size is the change's), or the
//!   whole snapshot when it registered the service or set its schema. A client applies
//!   every version from these, in order, without gaps. The deltas of a service from the
//!   changesets taken in together (one [`Outbox::take_in`]: a group commit's, under
//!   concurrent writers) are signed once, as one deltas message (docs/adr/0035);
//! - the **retained** snapshot of a changed service (its size is the whole service: what a
//!   new subscriber starts from) is rendered and signed once per [`snapshot_window`] of
//!   that service, covering every change in the window: one window after the first change
//!   not yet covered. The window grows with the service, [`SNAPSHOT_WINDOW_PER_KEY`] per key
//!   from [`SNAPSHOT_WINDOW_MIN`] up to [`SNAPSHOT_WINDOW_MAX`], so the retained snapshots cost a bounded share of a
//!   core whatever the write rate and the service size, and trail the log by at most
//!   [`SNAPSHOT_WINDOW_MAX`];
//!   Those of large services (at least [`RENDER_ELSEWHERE_KEYS`] keys) are rendered and
//!   signed off the publisher's task ([`RenderJob`], one at a time: docs/adr/0033), from a
//!   copy of what they read taken when they fall due, so the deltas behind them do not
//!   wait; such a snapshot reaches the broker after the deltas cut while it was rendered,
//!   so a client may get it after newer versions (it compacts its LKG file with it);
//!   On a broker that can hold a snapshot unsigned until someone needs it (the embedded
//!   one: [`Self::defer_large_snapshots`], docs/adr/0034), a large service's window gives a
//!   [`DeferredSnapshot`] instead: a copy of what the snapshot reads, rendered and signed
//!   only when a new subscription asks for it. Current subscribers follow the deltas; they
//!   get a rendered snapshot (what compacts their LKG files) at most every
//!   [`DEFERRED_RENDER_INTERVAL`] under continuous writes, and one
//!   [`DEFERRED_RENDER_INTERVAL`] after the writes stop;
//! - the signed head goes out at most once per [`HEAD_WINDOW`] (at once after a quiet
//!   spell).
//!
//! The acknowledged position (the checkpoint) only passes an event once every message it
//! needs is acknowledged, the deferred snapshots included: a batch records the position
//! before the oldest change whose snapshot is still to come. After a crash the publisher
//! resumes there and sends those snapshots again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use confstore_core::rollout;
use confstore_core::stream::{self, Position};
use confstore_core::{Hash32, SigningKey, State, Verified, jws};
use confstore_snapshots::Touched;

/// Longest a retained snapshot may trail the events it covers: the coalescing window of
/// the largest services.
pub const SNAPSHOT_WINDOW_MAX: Duration = Duration::from_millis(confstore_core::limits::STREAM_SNAPSHOT_WINDOW_MAX_MS);
/// Window per key of the service: rendering and signing a snapshot costs about 3 µs per key
/// (300-byte values), so a service's snapshots take at most ~6 % of a core however fast it
/// is written.
pub const SNAPSHOT_WINDOW_PER_KEY: Duration =
    Duration::from_micros(confstore_core::limits::STREAM_SNAPSHOT_WINDOW_PER_KEY_US);
/// Shortest window, whatever the service's size (a retained snapshot's signature and
/// broker message cost the same for a small service).
pub const SNAPSHOT_WINDOW_MIN: Duration = Duration::from_millis(confstore_core::limits::STREAM_SNAPSHOT_WINDOW_MIN_MS);
/// Services with at least this many keys have their retained snapshots rendered and signed
/// off the publisher's task (~2.4 ms at 1,000 keys of 300 bytes; a thread hand-off costs
/// more than rendering a small service).
pub const RENDER_ELSEWHERE_KEYS: usize = confstore_core::limits::STREAM_RENDER_ELSEWHERE_KEYS_MIN;
/// Under continuous writes, how often a large service's retained snapshot is rendered
/// and sent when snapshots are deferred ([`Outbox::defer_large_snapshots`]).
pub const DEFERRED_RENDER_INTERVAL: Duration =
    Duration::from_millis(confstore_core::limits::STREAM_DEFERRED_RENDER_INTERVAL_MS);
/// Most versions in one deltas message.
pub const DELTAS_PER_MESSAGE_MAX: usize = confstore_core::limits::STREAM_DELTAS_PER_MESSAGE_MAX;
/// Most bytes of delta documents in one deltas message.
pub const DELTAS_MESSAGE_BYTES_MAX: usize = confstore_core::limits::STREAM_DELTAS_MESSAGE_BYTES_MAX;
/// Least time between two signed heads under continuous writes.
pub const HEAD_WINDOW: Duration = Duration::from_millis(confstore_core::limits::STREAM_HEAD_WINDOW_MS);

/// The coalescing window of a service with `keys` keys.
pub fn snapshot_window(keys: usize) -> Duration {
    SNAPSHOT_WINDOW_PER_KEY
        .saturating_mul(u32::try_from(keys).unwrap_or(u32::MAX))
        .clamp(SNAPSHOT_WINDOW_MIN, SNAPSHOT_WINDOW_MAX)
}

/// What a message is, for metrics and for telling batch messages from loose ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An event on `system/config-events/<service>`.
    Event,
    /// A service's snapshot on `system/config/<service>` (retained).
    Snapshot,
    /// A service's delta on `system/config/<service>` (not retained).
    Delta,
    /// Several consecutive deltas of a service signed once, on `system/config/<service>`
    /// (not retained; docs/adr/0035).
    Deltas,
    /// A service's retained snapshot left to the broker to render when a subscription
    /// first needs it ([`DeferredSnapshot`]).
    Deferred,
    /// The signed head on `system/config-head` (retained).
    Head,
    /// The signed Merkle-tree checkpoint on `system/config-checkpoint` (retained).
    Checkpoint,
    /// The health document (retained, unsigned).
    Health,
    /// A service's staged rollout on `system/config-staged/<service>` (retained).
    Staged,
    /// A retained message put back after someone deleted or replaced it.
    Heal,
}

impl Kind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Snapshot => "snapshot",
            Self::Delta => "delta",
            Self::Deltas => "deltas",
            Self::Deferred => "snapshot_deferred",
            Self::Head => "head",
            Self::Checkpoint => "checkpoint",
            Self::Health => "health",
            Self::Staged => "staged",
            Self::Heal => "heal",
        }
    }
}

/// One message, ready to send (and to send again).
#[derive(Clone, Debug)]
pub struct Msg {
    /// Topic.
    pub topic: String,
    /// Payload bytes (shared between resends); empty for a deferred snapshot.
    pub payload: Arc<Vec<u8>>,
    /// Retained?
    pub retain: bool,
    /// What it is.
    pub kind: Kind,
    /// A retained snapshot the broker renders when first needed ([`Kind::Deferred`]).
    pub deferred: Option<Arc<DeferredSnapshot>>,
}

impl Msg {
    /// The payload; a deferred snapshot's is rendered now.
    pub fn bytes(&self) -> Arc<Vec<u8>> {
        self.deferred.as_ref().map_or_else(|| Arc::clone(&self.payload), |d| d.payload())
    }
}

/// A service's retained snapshot, not rendered yet: a copy of what it reads
/// ([`confstore_snapshots::service_view`]) at the position it was taken, to render and
/// sign elsewhere: on a blocking thread ([`RenderJob`]) or in the broker, when a
/// subscription first needs it (which keeps what it made).
pub struct DeferredSnapshot {
    signing: Arc<SigningKey>,
    store_id: String,
    generation: u64,
    service: String,
    view: State,
}

impl std::fmt::Debug for DeferredSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredSnapshot").field("service", &self.service).finish_non_exhaustive()
    }
}

impl DeferredSnapshot {
    /// Renders and signs it as a retained snapshot message (CPU only: a few milliseconds
    /// for a thousand keys). `None` if the view lacks the service, which cannot happen for
    /// one the outbox made.
    fn message(&self) -> Option<Msg> {
        snapshot_msg(&self.view, &self.store_id, self.generation, &self.service, &self.signing)
    }

    /// Renders and signs it: the JWS text (empty in the case [`Self::message`] is `None`).
    pub fn payload(&self) -> Arc<Vec<u8>> {
        self.message().map_or_else(|| Arc::new(Vec::new()), |m| m.payload)
    }
}

/// Messages to send in order, and the log position acknowledged once all of them are.
#[derive(Debug)]
pub struct Batch {
    /// Once every message is acknowledged, everything through this seq is published.
    pub safe_seq: u64,
    /// Hash of event `safe_seq`.
    pub safe_hash: Hash32,
    /// The messages.
    pub msgs: Vec<Msg>,
    /// How many are not yet acknowledged.
    pub unacked: usize,
}

/// A service whose snapshot is still to be published.
#[derive(Clone, Copy, Debug)]
struct Due {
    /// The position before the first change it has not published.
    before: (u64, Hash32),
    /// When that change was taken in: the snapshot goes out one window later.
    since: Instant,
}

/// Retained snapshots to render and sign off the publisher's task, taken at one position.
/// Hand the result of [`Self::run`] to [`Outbox::rendered`].
pub struct RenderJob {
    id: u64,
    snapshots: Vec<DeferredSnapshot>,
}

impl std::fmt::Debug for RenderJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services: Vec<&str> = self.snapshots.iter().map(|s| s.service.as_str()).collect();
        f.debug_struct("RenderJob").field("id", &self.id).field("services", &services).finish_non_exhaustive()
    }
}

impl RenderJob {
    /// The job's id (for [`Outbox::render_lost`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Renders and signs every snapshot: CPU only, for a blocking thread.
    pub fn run(self) -> Rendered {
        let msgs = self.snapshots.iter().filter_map(DeferredSnapshot::message).collect();
        Rendered { id: self.id, msgs }
    }
}

/// What a [`RenderJob`] made.
#[derive(Debug)]
pub struct Rendered {
    id: u64,
    msgs: Vec<Msg>,
}

/// The render job in flight.
#[derive(Debug)]
struct InFlight {
    id: u64,
    /// Its services and what made each due (put back if the job is lost).
    services: Vec<(String, Due)>,
    /// Services whose whole snapshot went out (newer) while it was rendered: theirs is
    /// dropped, or it would replace the newer retained one.
    superseded: std::collections::BTreeSet<String>,
}

impl InFlight {
    fn before(&self) -> Option<(u64, Hash32)> {
        self.services.iter().map(|(_, d)| d.before).min_by_key(|b| b.0)
    }
}

/// The outbox. See the module documentation.
pub struct Outbox {
    signing: Arc<SigningKey>,
    store_id: String,
    generation: u64,
    /// State after the last event taken in.
    state: State,
    read_seq: u64,
    read_hash: Hash32,
    /// Event, delta and snapshot messages of the changesets taken in since the last batch
    /// was cut.
    open: Vec<Msg>,
    /// What the changeset being taken in did to each service, and where it started.
    changeset: Touched,
    changeset_start: Option<(u64, Hash32)>,
    /// Services whose rollout the changeset being taken in started or ended.
    changeset_rollouts: std::collections::BTreeSet<String>,
    /// The delta documents (canonical JSON text) of the changesets taken in by the current
    /// [`Self::take_in`], per service, oldest first: signed together when it ends.
    deltas: BTreeMap<String, Vec<String>>,
    /// Services whose snapshot is still to come.
    due: BTreeMap<String, Due>,
    /// Whether the head moved since the last signed head, and when that one was made.
    head_due: bool,
    last_head: Option<Instant>,
    /// Batches not yet fully acknowledged, oldest first; the first has id `first_id`.
    pending: VecDeque<Batch>,
    first_id: u64,
    /// Everything through this position is acknowledged.
    acked: Option<(u64, Hash32)>,
    /// The newest signed head, for progress messages.
    head_msg: Option<Msg>,
    /// Whether events get their own message (see [`Self::publish_events`]).
    events: bool,
    /// Services with at least this many keys have their retained snapshot rendered off
    /// the task ([`RENDER_ELSEWHERE_KEYS`]).
    render_elsewhere_keys: usize,
    /// The render job made by the last cut, until the publisher takes it.
    job: Option<RenderJob>,
    /// The job being rendered (at most one).
    rendering: Option<InFlight>,
    next_render_id: u64,
    /// Whether large services' retained snapshots are deferred between renders
    /// ([`Self::defer_large_snapshots`]).
    defer: bool,
    /// When each large service's retained snapshot was last rendered (cut into a job, or
    /// sent whole).
    rendered_at: std::collections::HashMap<String, Instant>,
    /// Large services whose newest retained snapshot is a deferred one, and since when: a
    /// rendered one follows [`DEFERRED_RENDER_INTERVAL`] later.
    unrendered: BTreeMap<String, Instant>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("store_id", &self.store_id)
            .field("generation", &self.generation)
            .field("read_seq", &self.read_seq)
            .field("pending", &self.pending.len())
            .field("due", &self.due.len())
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// An outbox for `store_id`, signing with `signing`; [`Self::reset`] gives it a position.
    pub fn new(signing: Arc<SigningKey>, store_id: String, generation: u64) -> Self {
        Self {
            signing,
            store_id,
            generation,
            state: State::default(),
            read_seq: 0,
            read_hash: Hash32::default(),
            open: Vec::new(),
            changeset: Touched::default(),
            changeset_start: None,
            changeset_rollouts: std::collections::BTreeSet::new(),
            deltas: BTreeMap::new(),
            due: BTreeMap::new(),
            head_due: false,
            last_head: None,
            pending: VecDeque::new(),
            first_id: 0,
            acked: None,
            head_msg: None,
            events: true,
            render_elsewhere_keys: RENDER_ELSEWHERE_KEYS,
            job: None,
            rendering: None,
            next_render_id: 0,
            defer: false,
            rendered_at: std::collections::HashMap::new(),
            unrendered: BTreeMap::new(),
        }
    }

    /// Sets the size from which retained snapshots are rendered off the task.
    #[cfg(test)]
    pub fn render_elsewhere_from(&mut self, keys: usize) {
        self.render_elsewhere_keys = keys;
    }

    /// Whether large services' retained snapshots may be deferred (default: no): kept as a
    /// [`DeferredSnapshot`] for the broker to render when a subscription first needs it,
    /// with a rendered one at most every [`DEFERRED_RENDER_INTERVAL`] for the current
    /// subscribers. Only for a broker that takes [`Kind::Deferred`] messages (the embedded
    /// one); another would get each rendered when sent.
    pub fn defer_large_snapshots(&mut self, on: bool) {
        self.defer = on;
    }

    /// Whether the events taken in from now on get their message on
    /// `system/config-events/<service>` (default: yes). Off while nobody can receive them
    /// (the embedded broker before any client subscribed to an events topic).
    pub fn publish_events(&mut self, on: bool) {
        self.events = on;
    }

    /// Starts over at `(seq, hash)` with `state` (the state there), in `store_id`'s
    /// `generation`. `resumed`: everything through it was published before (a checkpoint);
    /// otherwise a full sync (every service's snapshot and the head) is queued first.
    /// Pending batches are dropped; batch ids keep counting, so acknowledgements of their
    /// messages still in flight match nothing.
    pub fn reset(&mut self, store_id: String, generation: u64, state: State, at: (u64, Hash32), resumed: bool) {
        self.store_id = store_id;
        self.generation = generation;
        self.state = state;
        (self.read_seq, self.read_hash) = at;
        self.first_id += self.pending.len() as u64;
        self.pending.clear();
        self.open.clear();
        self.changeset = Touched::default();
        self.changeset_start = None;
        self.changeset_rollouts.clear();
        self.deltas.clear();
        self.due.clear();
        self.forget_render();
        self.rendered_at.clear();
        self.unrendered.clear();
        if resumed {
            self.acked = Some(at);
            self.head_msg = Some(self.head_message());
        } else {
            self.acked = None;
            self.queue_full_sync();
        }
    }

    /// Queues every service's snapshot and the head, at the read position (the broker may
    /// have lost its retained messages).
    pub fn queue_full_sync(&mut self) {
        self.cut_open();
        let mut msgs: Vec<Msg> = self.state.services.keys().filter_map(|s| self.snapshot_message(s)).collect();
        let rollouts = self.state.rollouts.keys().chain(self.state.rollouts_ended.keys());
        let staged: std::collections::BTreeSet<&String> = rollouts.collect();
        msgs.extend(staged.into_iter().filter_map(|s| self.staged_message(s)));
        self.due.clear();
        // Everything is rendered here, newer than what a job in flight would bring.
        self.forget_render();
        self.unrendered.clear();
        let head = self.head_message();
        self.head_msg = Some(head.clone());
        self.head_due = false;
        msgs.push(head);
        self.push_batch(msgs, (self.read_seq, self.read_hash));
    }

    /// Seq of the last event taken in.
    pub fn read_seq(&self) -> u64 {
        self.read_seq
    }

    /// Hash of that event.
    pub fn read_hash(&self) -> Hash32 {
        self.read_hash
    }

    /// The state after the last event taken in.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Everything through this position is acknowledged.
    pub fn acked(&self) -> Option<(u64, Hash32)> {
        self.acked
    }

    /// The newest signed head.
    pub fn head_msg(&self) -> Option<&Msg> {
        self.head_msg.as_ref()
    }

    /// Takes in the events after the read position (complete changesets, in seq order;
    /// events at or before it are skipped): each event's message, then, as its changeset
    /// ends, one version for every service it changed — a delta of the keys it touched, or
    /// the whole snapshot when it registered the service or set its schema — and which
    /// retained snapshots that makes due. A service's deltas are signed when the call ends,
    /// together when there are several ([`Self::sign_deltas`]). Call [`Self::cut`] to get
    /// them out.
    pub fn take_in(&mut self, events: &[Arc<Verified>], now: Instant) {
        for f in events {
            if f.seq() <= self.read_seq {
                continue;
            }
            let before = (self.read_seq, self.read_hash);
            self.changeset_start.get_or_insert(before);
            let changed = self.state.apply(f);
            (self.read_seq, self.read_hash) = (f.seq(), *f.hash());
            self.head_due = true;
            if self.state.generation > self.generation {
                // generation_started (docs/adr/0017): every service's snapshot is published
                // again in the new generation, which clients accept although its epochs
                // are lower.
                self.generation = self.state.generation;
                self.changeset.all_full(&self.state);
            }
            if let Some(service) = f.body().service().filter(|_| self.events) {
                let hash = f.hash().to_hex();
                let at = Position { store_id: &self.store_id, generation: self.generation, seq: f.seq(), hash: &hash };
                let doc = stream::event_document(&at, f.body());
                self.open.push(self.signed(stream::events_topic(service), &doc, jws::TYP_EVENT, false, Kind::Event));
            }
            self.changeset.record(&self.state, f.body(), changed);
            if let confstore_core::EventKind::RolloutStarted { service, .. }
            | confstore_core::EventKind::RolloutPromoted { service, .. }
            | confstore_core::EventKind::RolloutAborted { service, .. } = &f.body().kind
            {
                self.changeset_rollouts.insert(service.clone());
            }
            if f.body().changeset_index + 1 >= f.body().changeset_len {
                self.end_changeset(now);
            }
        }
        let services: Vec<String> = self.deltas.keys().cloned().collect();
        for service in services {
            self.sign_deltas(&service);
        }
    }

    /// Signs `service`'s delta documents waiting in [`Self::deltas`]: one version as a
    /// delta, several (the changesets taken in together) as deltas messages of up to
    /// [`DELTAS_PER_MESSAGE_MAX`] versions and [`DELTAS_MESSAGE_BYTES_MAX`] bytes each, one
    /// signature for all of them (docs/adr/0035).
    fn sign_deltas(&mut self, service: &str) {
        let Some(docs) = self.deltas.remove(service) else { return };
        let mut rest = docs.as_slice();
        while let Some(first) = rest.first() {
            let mut bytes = first.len();
            let n = 1 + rest[1..]
                .iter()
                .take(DELTAS_PER_MESSAGE_MAX - 1)
                .take_while(|d| {
                    bytes += d.len();
                    bytes <= DELTAS_MESSAGE_BYTES_MAX
                })
                .count();
            let (these, later) = rest.split_at(n);
            rest = later;
            let (payload, kind) = if n == 1 {
                (jws::sign_canonical_text(first, jws::TYP_DELTA, &self.signing), Kind::Delta)
            } else {
                // `{"deltas":[<canonical delta>,…]}` is canonical JSON itself (one member).
                let doc = format!(r#"{{"deltas":[{}]}}"#, these.join(","));
                (jws::sign_canonical_text(&doc, jws::TYP_DELTAS, &self.signing), Kind::Deltas)
            };
            self.open.push(Msg {
                topic: stream::snapshot_topic(service),
                payload: Arc::new(payload.into_bytes()),
                retain: false,
                kind,
                deferred: None,
            });
        }
    }

    /// The version messages of the changeset just taken in.
    fn end_changeset(&mut self, now: Instant) {
        let start = self.changeset_start.take().unwrap_or((self.read_seq, self.read_hash));
        for (service, touch) in std::mem::take(&mut self.changeset.services) {
            if touch.full {
                // The versions before it go first.
                self.sign_deltas(&service);
                if let Some(m) = self.snapshot_message(&service) {
                    self.open.push(m);
                }
                // That snapshot is the retained one too, unless a later change makes
                // another due; one still being rendered is older.
                self.due.remove(&service);
                self.unrendered.remove(&service);
                if self.renders_elsewhere(&service) {
                    self.rendered_at.insert(service.clone(), now);
                }
                if let Some(r) = self.rendering.as_mut().filter(|r| r.services.iter().any(|(s, _)| *s == service)) {
                    r.superseded.insert(service.clone());
                }
                continue;
            }
            let keys = touch.keys.iter().map(String::as_str);
            let Ok(delta) = confstore_snapshots::delta(&self.state, &self.store_id, self.generation, &service, keys)
            else {
                continue;
            };
            let doc = confstore_core::state::canonical_json_text(&delta.to_json());
            self.deltas.entry(service.clone()).or_default().push(doc);
            self.due.entry(service).or_insert(Due { before: start, since: now });
        }
        for service in std::mem::take(&mut self.changeset_rollouts) {
            if let Some(m) = self.staged_message(&service) {
                self.open.push(m);
            }
        }
    }

    /// Cuts a batch of what is ready at `now`: the messages of the changesets taken in,
    /// the retained snapshots whose window has passed, and the head if its window has
    /// passed. Returns whether a batch was made. The retained snapshots of large services
    /// are not in it: they become a [`RenderJob`] ([`Self::take_render_job`]), unless one
    /// is in flight (they wait for it).
    pub fn cut(&mut self, now: Instant) -> bool {
        let mut msgs = std::mem::take(&mut self.open);
        let ready: Vec<String> = self
            .due
            .iter()
            .filter(|(s, d)| self.due_at(s, d) <= now && !self.waits_for_render(s))
            .map(|(s, _)| s.clone())
            .collect();
        let mut elsewhere = Vec::new();
        for service in ready {
            let Some(due) = self.due.remove(&service) else { continue };
            if !self.renders_elsewhere(&service) {
                if let Some(m) = self.snapshot_message(&service) {
                    msgs.push(m);
                }
            } else if self.defers(&service, now) {
                self.unrendered.entry(service.clone()).or_insert(now);
                msgs.push(self.deferred_message(&service));
            } else {
                elsewhere.push((service, due));
            }
        }
        // A deferred snapshot not followed by a rendered one (the writes stopped) gets one
        // now, so the clients' LKG files end compacted.
        let at = (self.read_seq, self.read_hash);
        let settle: Vec<String> = self.settling().filter(|(_, t)| *t <= now).map(|(s, _)| s.clone()).collect();
        elsewhere.extend(settle.into_iter().map(|s| (s, Due { before: at, since: now })));
        if !elsewhere.is_empty() {
            let id = self.next_render_id;
            self.next_render_id += 1;
            let mut services = Vec::with_capacity(elsewhere.len());
            let mut snapshots = Vec::with_capacity(elsewhere.len());
            for (service, due) in elsewhere {
                self.rendered_at.insert(service.clone(), now);
                self.unrendered.remove(&service);
                snapshots.push(self.deferred_snapshot(&service));
                services.push((service, due));
            }
            self.rendering = Some(InFlight { id, services, superseded: std::collections::BTreeSet::new() });
            self.job = Some(RenderJob { id, snapshots });
        }
        if self.head_due && self.last_head.is_none_or(|t| now.saturating_duration_since(t) >= HEAD_WINDOW) {
            self.head_due = false;
            self.last_head = Some(now);
            let head = self.head_message();
            self.head_msg = Some(head.clone());
            msgs.push(head);
        }
        if msgs.is_empty() {
            return false;
        }
        let safe = self.safe();
        self.push_batch(msgs, safe);
        true
    }

    /// Whether `service`'s retained snapshot is rendered off the task.
    fn renders_elsewhere(&self, service: &str) -> bool {
        self.state.services.get(service).is_some_and(|v| v.len() >= self.render_elsewhere_keys)
    }

    /// Whether `service`'s retained snapshot falling due at `now` is deferred rather than
    /// rendered: deferring is on and its last render is more recent than
    /// [`DEFERRED_RENDER_INTERVAL`].
    fn defers(&self, service: &str, now: Instant) -> bool {
        self.defer
            && self
                .rendered_at
                .get(service)
                .is_some_and(|t| now.saturating_duration_since(*t) < DEFERRED_RENDER_INTERVAL)
    }

    /// Large services whose newest retained snapshot is deferred and not due again, with
    /// when their settling render falls due (none while a job is in flight: its end wakes
    /// the publisher).
    fn settling(&self) -> impl Iterator<Item = (&String, Instant)> {
        self.unrendered
            .iter()
            .filter(|(s, _)| self.rendering.is_none() && !self.due.contains_key(*s))
            .map(|(s, t)| (s, *t + DEFERRED_RENDER_INTERVAL))
    }

    /// `service`'s retained snapshot at the read position, not rendered yet.
    fn deferred_snapshot(&self, service: &str) -> DeferredSnapshot {
        DeferredSnapshot {
            signing: Arc::clone(&self.signing),
            store_id: self.store_id.clone(),
            generation: self.generation,
            service: service.to_owned(),
            view: confstore_snapshots::service_view(&self.state, service),
        }
    }

    /// `service`'s retained snapshot at the read position, for the broker to render.
    fn deferred_message(&self, service: &str) -> Msg {
        Msg {
            topic: stream::snapshot_topic(service),
            payload: Arc::new(Vec::new()),
            retain: true,
            kind: Kind::Deferred,
            deferred: Some(Arc::new(self.deferred_snapshot(service))),
        }
    }

    /// Whether `service`'s retained snapshot, due or not, must wait for the job in flight.
    fn waits_for_render(&self, service: &str) -> bool {
        self.rendering.is_some() && self.renders_elsewhere(service)
    }

    /// The render job the last [`Self::cut`] made, to run off the task
    /// ([`RenderJob::run`]) and hand back to [`Self::rendered`].
    pub fn take_render_job(&mut self) -> Option<RenderJob> {
        self.job.take()
    }

    /// Whether a render job is out.
    #[cfg(test)]
    pub fn rendering(&self) -> bool {
        self.rendering.is_some()
    }

    /// A render job is done: its snapshots become a batch of their own, after every batch
    /// cut while it was rendered (so a client may get them after newer deltas). Those
    /// superseded meanwhile by a whole snapshot are dropped; so is a job the outbox no
    /// longer waits for (after a reset or a full sync). Returns whether a batch was made.
    pub fn rendered(&mut self, done: Rendered) -> bool {
        let Some(job) = self.take_rendering(done.id) else { return false };
        let msgs: Vec<Msg> = done
            .msgs
            .into_iter()
            .filter(|m| stream::service_of_snapshot_topic(&m.topic).is_none_or(|s| !job.superseded.contains(s)))
            .collect();
        if msgs.is_empty() {
            return false;
        }
        let safe = self.safe();
        self.push_batch(msgs, safe);
        true
    }

    /// The render job `id` will not come back (its thread panicked): its services are due
    /// again, as before it.
    pub fn render_lost(&mut self, id: u64) {
        let Some(job) = self.take_rendering(id) else { return };
        for (service, due) in job.services {
            if job.superseded.contains(&service) {
                continue;
            }
            self.due
                .entry(service)
                .and_modify(|d| {
                    if due.before.0 < d.before.0 {
                        *d = due;
                    }
                })
                .or_insert(due);
        }
    }

    /// The job in flight, if it is job `id` (a job the outbox no longer waits for is not).
    fn take_rendering(&mut self, id: u64) -> Option<InFlight> {
        self.rendering.take_if(|r| r.id == id)
    }

    fn forget_render(&mut self) {
        self.job = None;
        self.rendering = None;
    }

    /// When `service`'s retained snapshot falls due.
    fn due_at(&self, service: &str, due: &Due) -> Instant {
        let keys = self.state.services.get(service).map_or(0, |v| v.len());
        due.since + snapshot_window(keys)
    }

    /// The position through which everything taken in is covered once what is cut now is
    /// acknowledged: before the oldest change whose retained snapshot is still to come.
    fn safe(&self) -> (u64, Hash32) {
        let rendering = self.rendering.as_ref().and_then(InFlight::before);
        self.due
            .values()
            .map(|d| d.before)
            .chain(rendering)
            .min_by_key(|b| b.0)
            .unwrap_or((self.read_seq, self.read_hash))
    }

    /// When the next deferred snapshot or head falls due (`None`: nothing is waiting).
    /// Snapshots waiting for the render job in flight are not counted: its end wakes the
    /// publisher.
    pub fn next_due(&self) -> Option<Instant> {
        let snapshots = self.due.iter().filter(|(s, _)| !self.waits_for_render(s)).map(|(s, d)| self.due_at(s, d));
        let settle = self.settling().map(|(_, t)| t);
        let head = self.last_head.filter(|_| self.head_due).map(|t| t + HEAD_WINDOW);
        snapshots.chain(settle).chain(head).min()
    }

    fn cut_open(&mut self) {
        if !self.open.is_empty() {
            let msgs = std::mem::take(&mut self.open);
            let safe = self.safe();
            self.push_batch(msgs, safe);
        }
    }

    fn push_batch(&mut self, msgs: Vec<Msg>, safe: (u64, Hash32)) {
        let unacked = msgs.len();
        self.pending.push_back(Batch { safe_seq: safe.0, safe_hash: safe.1, msgs, unacked });
    }

    /// Pending batches with their ids, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = (u64, &Batch)> {
        self.pending.iter().enumerate().map(|(i, b)| (self.first_id + i as u64, b))
    }

    /// Id the next batch will get.
    pub fn next_id(&self) -> u64 {
        self.first_id + self.pending.len() as u64
    }

    /// Messages handed out and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.pending.iter().map(|b| b.unacked).sum()
    }

    /// Whether batches are waiting for acknowledgements, or snapshots for their render.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || self.rendering.is_some()
    }

    /// One message of batch `id` was acknowledged. Returns whether the acknowledged
    /// position moved.
    pub fn ack(&mut self, id: u64) -> bool {
        let Some(i) = id.checked_sub(self.first_id) else { return false };
        let Some(batch) = usize::try_from(i).ok().and_then(|i| self.pending.get_mut(i)) else { return false };
        batch.unacked = batch.unacked.saturating_sub(1);
        let mut moved = false;
        while self.pending.front().is_some_and(|b| b.unacked == 0) {
            if let Some(done) = self.pending.pop_front() {
                self.first_id += 1;
                if self.acked.is_none_or(|(seq, _)| done.safe_seq > seq) {
                    self.acked = Some((done.safe_seq, done.safe_hash));
                    moved = true;
                }
            }
        }
        moved
    }

    fn signed(&self, topic: String, doc: &serde_json::Value, typ: &str, retain: bool, kind: Kind) -> Msg {
        Msg {
            topic,
            payload: Arc::new(jws::sign_text(doc, typ, &self.signing).into_bytes()),
            retain,
            kind,
            deferred: None,
        }
    }

    /// `service`'s snapshot at the read position, signed (`None`: not a service here).
    pub fn snapshot_message(&self, service: &str) -> Option<Msg> {
        snapshot_msg(&self.state, &self.store_id, self.generation, service, &self.signing)
    }

    /// `service`'s staged-topic message at the read position (docs/format.md §21.2): its
    /// active rollout's staged snapshot, or the end of its last rollout (`None`: it never
    /// had one).
    pub fn staged_message(&self, service: &str) -> Option<Msg> {
        let doc = staged_document(&self.state, &self.store_id, self.generation, service)?;
        Some(self.signed(rollout::staged_topic(service), &doc, jws::TYP_STAGED, true, Kind::Staged))
    }

    /// The signed head at the read position.
    pub fn head_message(&self) -> Msg {
        let hash = self.read_hash.to_hex();
        let at = Position { store_id: &self.store_id, generation: self.generation, seq: self.read_seq, hash: &hash };
        let doc = stream::head_document(&at, self.state.epoch, self.state.time_ms);
        self.signed(stream::HEAD_TOPIC.to_owned(), &doc, jws::TYP_HEAD, true, Kind::Head)
    }

    /// Store id and generation it publishes in.
    pub fn identity(&self) -> (&str, u64) {
        (&self.store_id, self.generation)
    }
}

/// `service`'s retained snapshot in `state`, signed (`None`: not a service there).
fn snapshot_msg(state: &State, store_id: &str, generation: u64, service: &str, signing: &SigningKey) -> Option<Msg> {
    let snap = confstore_snapshots::project(state, store_id, generation, service).ok()?;
    Some(Msg {
        topic: stream::snapshot_topic(service),
        payload: Arc::new(snap.to_jws_text(signing).into_bytes()),
        retain: true,
        kind: Kind::Snapshot,
        deferred: None,
    })
}

/// The document of `service`'s staged-topic message in `state`: its active rollout with the
/// staged snapshot, else the end of its last rollout (`None`: it never had one). Shared by
/// the publisher and `GET /api/v1/services/{service}/rollout`.
pub fn staged_document(state: &State, store_id: &str, generation: u64, service: &str) -> Option<serde_json::Value> {
    if let Some(r) = state.rollouts.get(service) {
        let snap = confstore_snapshots::project_staged(state, store_id, generation, r).ok()?;
        return Some(rollout::staged_document(store_id, generation, r, &snap.to_json()));
    }
    let ended = state.rollouts_ended.get(service)?;
    Some(rollout::ended_document(store_id, service, generation, ended))
}

#[cfg(test)]
mod tests;
