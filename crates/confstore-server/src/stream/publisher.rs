//! The MQTT publisher: the log is the outbox.
//!
//! [`super::outbox::Outbox`] decides what goes out and when (events at once, snapshots and
//! the head coalesced per window: docs/adr/0020); this module is the thin loop around it
//! that takes in the events this process folded in (from the read model's memory, or from
//! the log when it fell behind), hands batches to one MQTT connection (QoS 1, in order, so
//! the broker keeps them in order per topic) and counts acknowledgements.
//!
//! Invariants:
//! - The write path never waits for this task: commits only bump a watch channel. A dead
//!   broker stops the publisher, never a request.
//! - The checkpoint (`mqtt.checkpoint`) advances only past events whose every message —
//!   their own and the snapshots and head they make due — the broker acknowledged (PUBACK).
//!   Unacknowledged batches stay in memory (bounded by [`WINDOW_MESSAGES`]: nothing new is
//!   taken in while the window is full) and are sent again on the next connection; after a
//!   restart the task resumes from the checkpoint.
//! - rumqttc drops queued and in-flight messages when the broker has lost the session
//!   (`session_present = false`). So this task never relies on rumqttc's own retransmission:
//!   after any connection error it drops the client, makes a new one, and sends every
//!   unacknowledged batch itself. Duplicates are possible; loss is not.
//! - Retained state heals itself on an external broker (whose ACL is not ours; on the
//!   embedded one the gate lets no one else publish): the publisher subscribes to its own retained topics, and a
//!   retained snapshot or head that someone deleted or replaced on the broker (anything but
//!   an echo of what this connection sent in the last [`ECHO_WINDOW`]) is put back as soon
//!   as the publisher has caught up with the log, without waiting for a write. A retained
//!   snapshot of a service the store does not have is deleted.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use confstore_core::Hash32;
use confstore_core::stream::{self, Health};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, watch};

use super::hub::{Hub, Message};
use super::outbox::{DeferredSnapshot, Kind, Msg, Outbox, Rendered};
use super::settings::MqttSettings;
use crate::app::{App, LiveMode, Mode};
use crate::model::ReadModel;
use confstore_lkg::publisher_checkpoint::{self as checkpoint, Checkpoint};

/// Most messages handed to the client and not yet acknowledged. While the broker is away
/// the backlog stays in the log, not in memory.
pub const WINDOW_MESSAGES: usize = confstore_core::limits::MQTT_PUBLISH_WINDOW_MESSAGES;
/// How often the head and health are republished when nothing happens (the progress
/// message a client or auditor can watch for).
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// Least time between two checkpoint file writes.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long to wait for the broker's CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a retained message this connection sent is expected back as an echo of its
/// own subscription (the broker delivers it within milliseconds).
pub const ECHO_WINDOW: Duration = Duration::from_secs(5);
/// Least time between two rounds of putting retained messages back: a burst of forged
/// messages costs a few republishes, not one each.
pub const HEAL_INTERVAL: Duration = Duration::from_millis(250);
/// Most recent retained payloads remembered per topic for echo matching.
const ECHO_PER_TOPIC_MAX: usize = 32;
/// Most recent deltas remembered per topic for echo matching (they are small, and many may
/// be on their way back under continuous writes).
const ECHO_DELTAS_PER_TOPIC_MAX: usize = 1024;

/// What a sent message counts towards.
#[derive(Clone, Copy, Debug)]
enum Tag {
    /// A message of the batch with this id.
    Batch(u64, Kind),
    /// A progress, health or healing message: acknowledged or not, nothing waits for it.
    Loose(Kind),
}

/// What the event-loop task reports.
#[derive(Debug)]
enum Report {
    Connected {
        session_present: bool,
    },
    Sent(u16),
    Acked(u16),
    /// A message on one of the retained topics the publisher watches.
    Retained {
        topic: String,
        payload: bytes::Bytes,
    },
    Down(String),
}

/// A retained payload a connection sent, and when.
type SentRetained = (tokio::time::Instant, Arc<Vec<u8>>);

/// How a connection hands messages to the broker.
enum Sender {
    /// rumqttc over a socket: an external broker.
    Tcp(AsyncClient),
    /// The embedded broker's hub, in process (docs/adr/0032): a message is the broker's
    /// (retained, and queued for every subscriber) when `publish` returns, so it counts as
    /// acknowledged at once. The sender keeps the (unused) report channel open.
    Hub { hub: Hub, _reports: mpsc::UnboundedSender<Report> },
}

/// A payload shared with the outbox, handed to the hub without a copy.
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// The hub renders a deferred snapshot when a subscription first needs it.
impl super::hub::Deferred for DeferredSnapshot {
    fn render(&self) -> bytes::Bytes {
        bytes::Bytes::from_owner(Shared(self.payload()))
    }
}

/// A live connection: the client, and the reports of its event loop.
struct Conn {
    client: Sender,
    reports: mpsc::UnboundedReceiver<Report>,
    /// rumqttc's event loop (none for the hub).
    task: Option<tokio::task::JoinHandle<()>>,
    /// Messages the hub took, to count as acknowledged once the loop is done sending.
    acked_now: Vec<Tag>,
    /// Tags of messages handed to the client, not yet written (rumqttc reports them in order).
    unsent: VecDeque<Tag>,
    /// Written, awaiting PUBACK, by packet id.
    inflight: HashMap<u16, Tag>,
    /// Id of the first pending batch not yet handed to this connection.
    next_batch: u64,
    /// Whether the broker still had this client's session (and so, presumably, its
    /// retained messages).
    session_present: bool,
    /// Retained payloads this connection sent lately, per topic, to tell echoes of its own
    /// subscription from someone else's message.
    sent_retained: HashMap<String, VecDeque<SentRetained>>,
    /// The same for the deltas (not retained, but on the watched snapshot topics).
    sent_deltas: HashMap<String, VecDeque<SentRetained>>,
    /// Whether this connection watches the retained topics (so echoes come back).
    watching: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Where the publisher stands.
struct Publisher {
    app: App,
    settings: MqttSettings,
    /// The model this state follows (replaced when the server recovers from the fallback).
    model: Option<Arc<ReadModel>>,
    /// What to send.
    outbox: Outbox,
    checkpoint_written: Option<u64>,
    last_checkpoint_write: tokio::time::Instant,
    /// Republish every service's snapshot and the head once the read position is known
    /// (the broker lost its session, and with it perhaps the retained messages).
    full_sync_wanted: bool,
    /// Retained topics whose message on the broker is not one this publisher sent: topic ->
    /// the payload seen there. Checked, and put right, once the publisher has caught up.
    suspect: HashMap<String, bytes::Bytes>,
    /// When retained messages were last put back.
    last_heal: Option<tokio::time::Instant>,
    /// The outbox's render job on a blocking thread (large services' retained snapshots),
    /// with its id.
    render: Option<(u64, tokio::task::JoinHandle<Rendered>)>,
}

/// Runs the publisher until `stop` turns true; then says `offline` on the health topic and
/// disconnects.
pub async fn run(app: App, settings: MqttSettings, mut stop: watch::Receiver<bool>) {
    app.projections.mqtt_enabled.store(true, Ordering::Relaxed);
    let (store_id, generation) = identity(&app);
    let signing = Arc::new(confstore_core::SigningKey::from_seed(&app.keys.signing.seed()));
    let mut p = Publisher {
        outbox: Outbox::new(signing, store_id, generation),
        app,
        settings,
        model: None,
        checkpoint_written: None,
        last_checkpoint_write: tokio::time::Instant::now(),
        full_sync_wanted: false,
        suspect: HashMap::new(),
        last_heal: None,
        render: None,
    };
    // The embedded broker keeps large services' retained snapshots unsigned until a
    // subscription needs one (docs/adr/0034); an external broker gets each one rendered.
    p.outbox.defer_large_snapshots(p.settings.hub.is_some());
    let mut backoff = BACKOFF_MIN;
    loop {
        if *stop.borrow() {
            return;
        }
        let conn = tokio::select! {
            c = p.connect() => c,
            _ = stop.changed() => return,
        };
        let mut conn = match conn {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(broker = %p.settings.url(), error = %why, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                    "MQTT broker unreachable; writes go on, the stream catches up when it is back");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        p.connected(true);
        let why = p.serve(&mut conn, &mut stop).await;
        p.connected(false);
        match why {
            Ended::Stopped => {
                p.say_offline(&mut conn, "shutdown").await;
                p.write_checkpoint(true);
                return;
            }
            Ended::Lost(why) => {
                tracing::warn!(broker = %p.settings.url(), error = %why, "lost the MQTT broker; reconnecting");
                p.write_checkpoint(true);
            }
        }
    }
}

fn identity(app: &App) -> (String, u64) {
    match &*app.mode() {
        Mode::Live(l) => l.model.read(|m| (m.store_id.to_hex(), m.generation)),
        Mode::Fallback(f) => f.lkg.as_ref().map_or((String::new(), 0), |c| (c.store_id.clone(), c.generation)),
    }
}

enum Ended {
    Stopped,
    Lost(String),
}

impl Publisher {
    /// Connects: to the embedded broker's hub, or with a fresh client, waiting for the
    /// CONNACK.
    async fn connect(&mut self) -> Result<Conn, String> {
        if let Some(hub) = &self.settings.hub {
            tracing::info!("publishing to the embedded broker in process");
            // Nothing is ever reported: the hub takes each message at once.
            let (tx, reports) = mpsc::unbounded_channel();
            return Ok(Conn {
                client: Sender::Hub { hub: hub.clone(), _reports: tx },
                reports,
                task: None,
                acked_now: Vec::new(),
                unsent: VecDeque::new(),
                inflight: HashMap::new(),
                next_batch: 0,
                // A hub that lived through the publisher's restart is impossible (same
                // process): every start is a full sync.
                session_present: false,
                sent_retained: HashMap::new(),
                sent_deltas: HashMap::new(),
                watching: false,
            });
        }
        let will = self.health("offline", Some("connection lost")).payload;
        let opts = self.settings.options(Some((stream::HEALTH_TOPIC, will.to_vec()))).map_err(|e| e.to_string())?;
        // Room for the whole window plus progress messages: try_publish never finds it full.
        let (client, eventloop) = AsyncClient::new(opts, WINDOW_MESSAGES + 64);
        let (tx, mut reports) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(eventloop, tx));
        let first = tokio::time::timeout(CONNECT_TIMEOUT, reports.recv()).await;
        match first {
            Ok(Some(Report::Connected { session_present })) => {
                tracing::info!(broker = %self.settings.url(), session_present, "connected to the MQTT broker");
                Ok(Conn {
                    client: Sender::Tcp(client),
                    reports,
                    task: Some(task),
                    acked_now: Vec::new(),
                    unsent: VecDeque::new(),
                    inflight: HashMap::new(),
                    next_batch: 0,
                    session_present,
                    sent_retained: HashMap::new(),
                    sent_deltas: HashMap::new(),
                    watching: self.settings.watch_retained,
                })
            }
            Ok(Some(Report::Down(why))) => {
                task.abort();
                Err(why)
            }
            Ok(Some(other)) => {
                task.abort();
                Err(format!("unexpected {other:?} before CONNACK"))
            }
            Ok(None) => Err("the MQTT event loop ended".into()),
            Err(_) => {
                task.abort();
                Err(format!("no CONNACK within {CONNECT_TIMEOUT:?}"))
            }
        }
    }

    /// Publishes while connected: resends what is unacknowledged, then follows the log.
    async fn serve(&mut self, conn: &mut Conn, stop: &mut watch::Receiver<bool>) -> Ended {
        let online = self.health("online", None);
        send(conn, &online, Tag::Loose(Kind::Health)).await;
        // Watch our own retained topics (QoS 0: a missed notice is caught at the next one,
        // and the broker sends every retained message again on each new subscription) —
        // unless no one else can publish on this broker (the embedded one).
        let watched = [format!("{}+", stream::SNAPSHOT_TOPIC_PREFIX), stream::HEAD_TOPIC.to_owned()];
        for topic in watched.into_iter().filter(|_| conn.watching) {
            let Sender::Tcp(client) = &conn.client else { break };
            if let Err(e) = client.subscribe(topic, QoS::AtMostOnce).await {
                tracing::debug!(error = %e, "cannot watch the retained topics (connection failing)");
            }
        }
        if !conn.session_present {
            // A broker without our session may be one that lost everything (restarted
            // without persistence): its retained snapshots and head too. Put them back.
            self.full_sync_wanted = true;
        }
        let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recover = tokio::time::interval(self.app.config.recover_interval);
        // The latest signed Merkle-tree checkpoint, retained (checkpoints.rs): sent on each
        // connection and whenever a new one is published.
        let mut checkpoints = self.app.checkpoints.subscribe();
        checkpoints.mark_changed();
        loop {
            let head_rx = self.follow();
            if self.full_sync_wanted && self.model.is_some() {
                self.full_sync_wanted = false;
                self.outbox.queue_full_sync();
            }
            if let Some(rx) = &head_rx {
                let head = *rx.borrow();
                if head > self.outbox.read_seq() && self.window_free() {
                    match self.take_in(head).await {
                        Ok(()) => {}
                        Err(e) => tracing::error!(error = %e, "the publisher cannot read the log; retrying"),
                    }
                }
            }
            self.outbox.cut(std::time::Instant::now());
            if let Some(job) = self.outbox.take_render_job() {
                let id = job.id();
                self.render = Some((id, tokio::task::spawn_blocking(move || job.run())));
            }
            self.progress_metrics();
            // Everything pending that this connection has not carried yet: all of it on a new
            // connection, a full sync after (re)initialising, each new batch.
            self.flush(conn).await;
            self.heal(conn).await;
            if !conn.acked_now.is_empty() {
                // Taken by the hub: acknowledged. The window may have room again, so look
                // at the log once more before waiting.
                for tag in std::mem::take(&mut conn.acked_now) {
                    self.acked_one(tag);
                }
                continue;
            }
            let due = self.outbox.next_due().map(tokio::time::Instant::from_std);
            let (heal_waits, next_heal) = (self.heal_waits_on_interval(), self.next_heal());
            let mut head_rx = head_rx;
            tokio::select! {
                r = conn.reports.recv() => match r {
                    Some(Report::Sent(pkid)) => {
                        if let Some(tag) = conn.unsent.pop_front() {
                            conn.inflight.insert(pkid, tag);
                        }
                    }
                    Some(Report::Acked(pkid)) => {
                        if let Some(tag) = conn.inflight.remove(&pkid) {
                            self.acked_one(tag);
                        }
                    }
                    Some(Report::Connected { .. }) => {}
                    Some(Report::Retained { topic, payload }) => self.observed(conn, topic, payload),
                    Some(Report::Down(why)) => return Ended::Lost(why),
                    None => return Ended::Lost("the MQTT event loop ended".into()),
                },
                _ = async { head_rx.as_mut().expect("guarded").changed().await }, if head_rx.is_some() => {}
                () = async { tokio::time::sleep_until(due.expect("guarded")).await }, if due.is_some() => {}
                _ = recover.tick(), if head_rx.is_none() => {}
                _ = progress.tick() => {
                    if let Some(h) = self.outbox.head_msg().cloned() {
                        send(conn, &h, Tag::Loose(Kind::Head)).await;
                    }
                    let online = self.health("online", None);
                    send(conn, &online, Tag::Loose(Kind::Health)).await;
                    self.write_checkpoint(false);
                }
                // Healing waits only on its interval here; otherwise acknowledgements and the
                // log's progress wake the loop.
                () = tokio::time::sleep_until(next_heal), if heal_waits => {}
                // A render job is done: its snapshots are cut as a batch of their own (sent
                // at the top of the loop).
                done = async { (&mut self.render.as_mut().expect("guarded").1).await }, if self.render.is_some() => {
                    if let Some((id, _)) = self.render.take() {
                        match done {
                            Ok(rendered) => {
                                self.outbox.rendered(rendered);
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "rendering retained snapshots failed; they are due again");
                                self.outbox.render_lost(id);
                            }
                        }
                    }
                }
                changed = checkpoints.changed() => {
                    let latest = checkpoints.borrow_and_update().clone();
                    if let (Ok(()), Some(p)) = (changed, latest) {
                        let m = Msg {
                            topic: stream::CHECKPOINT_TOPIC.to_owned(),
                            payload: Arc::new(p.note.as_bytes().to_vec()),
                            retain: true,
                            kind: Kind::Checkpoint,
                            deferred: None,
                        };
                        send(conn, &m, Tag::Loose(Kind::Checkpoint)).await;
                    }
                }
                _ = stop.changed() => return Ended::Stopped,
            }
        }
    }

    fn heal_waits_on_interval(&self) -> bool {
        !self.suspect.is_empty() && !self.outbox.has_pending() && !self.heal_allowed()
    }

    /// When the next round of healing may run.
    fn next_heal(&self) -> tokio::time::Instant {
        self.last_heal.map_or_else(tokio::time::Instant::now, |at| at + HEAL_INTERVAL)
    }

    fn heal_allowed(&self) -> bool {
        self.last_heal.is_none_or(|at| at.elapsed() >= HEAL_INTERVAL)
    }

    /// Notes a message seen on a watched retained topic: an echo of what this connection
    /// sent lately is fine; anything else is suspect.
    fn observed(&mut self, conn: &mut Conn, topic: String, payload: bytes::Bytes) {
        let now = tokio::time::Instant::now();
        for sent in [&mut conn.sent_retained, &mut conn.sent_deltas] {
            if let Some(recent) = sent.get_mut(&topic) {
                recent.retain(|(at, _)| now.duration_since(*at) < ECHO_WINDOW);
                // Echoes come back in the order they were sent: the match is almost always
                // the oldest, and what was sent before it will not come back any more.
                if let Some(i) = recent.iter().position(|(_, p)| p.as_slice() == payload.as_ref()) {
                    recent.drain(..=i);
                    return;
                }
            }
        }
        self.suspect.insert(topic, payload);
    }

    /// Puts back retained messages someone deleted or replaced on the broker, once the
    /// publisher has caught up with the log and published everything due (so what it would
    /// send is the current state).
    async fn heal(&mut self, conn: &mut Conn) {
        if self.suspect.is_empty() || self.outbox.has_pending() || !self.heal_allowed() {
            return;
        }
        let caught_up = self.model.as_ref().is_some_and(|m| m.read(|r| r.state.seq) == self.outbox.read_seq());
        if !caught_up || self.outbox.next_due().is_some() {
            return;
        }
        self.last_heal = Some(tokio::time::Instant::now());
        for (topic, seen) in std::mem::take(&mut self.suspect) {
            let expected = if topic == stream::HEAD_TOPIC {
                Some(self.outbox.head_message())
            } else {
                match stream::service_of_snapshot_topic(&topic) {
                    Some(service) if self.outbox.state().services.contains_key(service) => {
                        self.outbox.snapshot_message(service)
                    }
                    // Not a service of this store: nothing of ours belongs there.
                    Some(_) => Some(Msg {
                        topic: topic.clone(),
                        payload: Arc::new(Vec::new()),
                        retain: true,
                        kind: Kind::Heal,
                        deferred: None,
                    }),
                    None => None,
                }
            };
            let Some(mut msg) = expected else { continue };
            if msg.payload.as_slice() == seen.as_ref() {
                continue;
            }
            tracing::warn!(topic = %topic, seen_bytes = seen.len(), "a retained message on the broker was deleted or replaced; putting the signed one back");
            msg.kind = Kind::Heal;
            send(conn, &msg, Tag::Loose(Kind::Heal)).await;
        }
    }

    /// Hands every pending batch this connection has not carried yet to the client.
    async fn flush(&self, conn: &mut Conn) {
        for (id, batch) in self.outbox.pending() {
            if id >= conn.next_batch {
                for m in &batch.msgs {
                    send(conn, m, Tag::Batch(id, m.kind)).await;
                }
            }
        }
        conn.next_batch = self.outbox.next_id();
    }

    fn window_free(&self) -> bool {
        self.outbox.unacked() < WINDOW_MESSAGES
    }

    /// The head watch of the live model, (re)initialising the read position when the model
    /// is new (first call, or after recovering from the fallback). `None` in the fallback.
    fn follow(&mut self) -> Option<watch::Receiver<u64>> {
        let mode = self.app.mode();
        let Mode::Live(live) = &*mode else { return None };
        if !self.model.as_ref().is_some_and(|m| Arc::ptr_eq(m, &live.model)) {
            self.start_from_checkpoint(live);
            self.model = Some(Arc::clone(&live.model));
        }
        Some(live.model.head.subscribe())
    }

    /// Sets the read position: after the checkpoint when it is an event of this log (the
    /// state there replayed), else at the head with a full sync (every service's snapshot
    /// and the head) queued first.
    fn start_from_checkpoint(&mut self, live: &LiveMode) {
        let path = self.app.config.data_dir.join(checkpoint::FILE_NAME);
        let (head_seq, head_hash, head_state) = live.model.read(|m| (m.state.seq, m.head_hash, m.state.clone()));
        // The database's generation (the server may have started in the fallback, from an
        // LKG file of another generation, and recovered after a new generation started).
        let (store_id, generation) = live.model.read(|m| (m.store_id.to_hex(), m.generation));
        let resumed = checkpoint::read(&path)
            .filter(|c| c.store_id == store_id && c.generation == generation && c.seq <= head_seq)
            .and_then(|c| {
                let hash = Hash32::from_hex(&c.hash).ok()?;
                let state = live
                    .readers
                    .with(|r| {
                        // The checkpoint must be an event of this log (not of a restored or
                        // replaced database) before the state there is rebuilt.
                        r.verified_after_anchor(c.seq, &hash, head_seq)?;
                        r.replay(confstore_log::Until::Seq(c.seq))
                    })
                    .map_err(
                        |e| tracing::warn!(error = %e, "the MQTT checkpoint is not usable; publishing a full sync"),
                    )
                    .ok()?;
                Some((c.seq, hash, state))
            });
        match resumed {
            Some((seq, hash, state)) => {
                tracing::info!(from_seq = seq, head_seq, "MQTT publisher resumes from its checkpoint");
                self.outbox.reset(store_id, generation, state, (seq, hash), true);
                self.checkpoint_written = Some(seq);
            }
            None => {
                tracing::info!(head_seq, "MQTT publisher starts with a full sync of every service");
                self.outbox.reset(store_id, generation, head_state, (head_seq, head_hash), false);
                self.full_sync_wanted = false;
            }
        }
        self.progress_metrics();
    }

    /// Takes in the events after the read position through `head` (complete changesets the
    /// read model has folded in): from the read model's memory, or read from the log
    /// (links and hashes verified; signatures this process has checked already trusted)
    /// when they are no longer held there.
    async fn take_in(&mut self, head: u64) -> Result<(), String> {
        let mode = self.app.mode();
        let Mode::Live(live) = &*mode else { return Ok(()) };
        let from = self.outbox.read_seq();
        let events = match live.model.events_after(from) {
            Some(events) => events,
            None => {
                let anchor = self.outbox.read_hash();
                let m = Arc::clone(&mode);
                let verified = tokio::task::spawn_blocking(move || {
                    let Mode::Live(live) = &*m else { return Ok(Vec::new()) };
                    live.readers.with(|r| r.verified_after_anchor(from, &anchor, head))
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
                verified.into_iter().map(Arc::new).collect()
            }
        };
        // Only what the read model has folded in: complete changesets.
        let end = events.iter().position(|e| e.seq() > head).unwrap_or(events.len());
        self.outbox.publish_events(self.settings.events.wanted());
        self.outbox.take_in(&events[..end], std::time::Instant::now());
        Ok(())
    }

    fn health(&self, status: &str, reason: Option<&str>) -> Msg {
        let head_seq = self.model.as_ref().map_or(self.outbox.read_seq(), |m| m.read(|r| r.state.seq));
        let (store_id, _) = self.outbox.identity();
        let doc = Health {
            status,
            store_id,
            head_seq,
            published_seq: self.outbox.acked().map_or(0, |a| a.0),
            time_ms: now_ms(),
            reason,
        }
        .to_json();
        Msg {
            topic: stream::HEALTH_TOPIC.to_owned(),
            payload: Arc::new(doc.to_string().into_bytes()),
            retain: true,
            kind: Kind::Health,
            deferred: None,
        }
    }

    fn acked_one(&mut self, tag: Tag) {
        match tag {
            Tag::Loose(kind) => self.app.metrics.mqtt_acked(kind.as_str()),
            Tag::Batch(id, kind) => {
                self.app.metrics.mqtt_acked(kind.as_str());
                if self.outbox.ack(id) {
                    self.progress_metrics();
                    self.write_checkpoint(false);
                }
            }
        }
    }

    fn progress_metrics(&self) {
        let seq = self.outbox.acked().map_or(0, |a| a.0);
        self.app.metrics.mqtt_progress(seq, self.outbox.unacked());
        self.app.projections.mqtt_seq.store(seq, Ordering::Relaxed);
    }

    fn connected(&self, up: bool) {
        self.app.metrics.mqtt_connected(up);
        self.app.projections.mqtt_connected.store(up, Ordering::Relaxed);
    }

    /// Writes the checkpoint file if it moved (at most every CHECKPOINT_INTERVAL unless `now`).
    fn write_checkpoint(&mut self, now: bool) {
        let Some((seq, hash)) = self.outbox.acked() else { return };
        if self.checkpoint_written == Some(seq) {
            return;
        }
        if !now && self.last_checkpoint_write.elapsed() < CHECKPOINT_INTERVAL {
            return;
        }
        let (store_id, generation) = self.outbox.identity();
        let c = Checkpoint { store_id: store_id.to_owned(), generation, seq, hash: hash.to_hex() };
        let path = self.app.config.data_dir.join(checkpoint::FILE_NAME);
        match checkpoint::write(&path, &c) {
            Ok(()) => self.checkpoint_written = Some(seq),
            Err(e) => tracing::warn!(error = %e, path = %path.display(), "cannot write the MQTT checkpoint"),
        }
        self.last_checkpoint_write = tokio::time::Instant::now();
    }

    /// Publishes `offline` (retained) and disconnects, waiting briefly for both to go out.
    async fn say_offline(&self, conn: &mut Conn, reason: &str) {
        let m = self.health("offline", Some(reason));
        send(conn, &m, Tag::Loose(Kind::Health)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while !conn.unsent.is_empty() || conn.inflight.values().any(|t| matches!(t, Tag::Loose(Kind::Health))) {
            match tokio::time::timeout_at(deadline, conn.reports.recv()).await {
                Ok(Some(Report::Sent(pkid))) => {
                    if let Some(tag) = conn.unsent.pop_front() {
                        conn.inflight.insert(pkid, tag);
                    }
                }
                Ok(Some(Report::Acked(pkid))) => {
                    conn.inflight.remove(&pkid);
                }
                Ok(Some(Report::Connected { .. })) => {}
                _ => break,
            }
        }
        if let Sender::Tcp(client) = &conn.client {
            let _ = tokio::time::timeout(Duration::from_millis(500), client.disconnect()).await;
        }
    }
}

/// Hands a message to the client. Waits only while rumqttc's request channel is full: the
/// event loop runs on its own task (so it drains the channel), and if the connection fails
/// the channel closes and this returns at once. A message that was not handed over stays in
/// its pending batch and goes out on the next connection.
async fn send(conn: &mut Conn, m: &Msg, tag: Tag) {
    let client = match &conn.client {
        Sender::Tcp(client) => client,
        Sender::Hub { hub, .. } => {
            if let Some(d) = &m.deferred {
                hub.retain_deferred(m.topic.clone(), QoS::AtLeastOnce, Arc::clone(d) as Arc<dyn super::hub::Deferred>);
            } else {
                let payload = bytes::Bytes::from_owner(Shared(Arc::clone(&m.payload)));
                hub.publish(Message { topic: m.topic.clone(), payload, retain: m.retain, qos: QoS::AtLeastOnce }, true);
            }
            fail::fail_point!("stream::mid_publish", |_| std::process::abort());
            conn.acked_now.push(tag);
            return;
        }
    };
    // (A deferred snapshot is rendered here: only the hub defers.)
    let payload = m.bytes();
    match client.publish(m.topic.clone(), QoS::AtLeastOnce, m.retain, payload.as_slice()).await {
        Ok(()) => {
            fail::fail_point!("stream::mid_publish", |_| std::process::abort());
            conn.unsent.push_back(tag);
            if !conn.watching {
                return;
            }
            let (sent, max) = match m.kind {
                Kind::Delta | Kind::Deltas => (&mut conn.sent_deltas, ECHO_DELTAS_PER_TOPIC_MAX),
                _ if m.retain => (&mut conn.sent_retained, ECHO_PER_TOPIC_MAX),
                _ => return,
            };
            let recent = sent.entry(m.topic.clone()).or_default();
            if recent.len() >= max {
                recent.pop_front();
            }
            recent.push_back((tokio::time::Instant::now(), payload));
        }
        Err(e) => tracing::debug!(error = %e, "the MQTT client refused a message (connection failing)"),
    }
}

/// Drives rumqttc's event loop and reports what the publisher needs. Ends at the first
/// error: the publisher makes a new client rather than trusting rumqttc's retransmission.
async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Report>) {
    loop {
        let report = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => Report::Connected { session_present: ack.session_present },
            Ok(Event::Incoming(Packet::PubAck(ack))) => Report::Acked(ack.pkid),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Report::Sent(pkid),
            Ok(Event::Incoming(Packet::Publish(p))) => Report::Retained { topic: p.topic, payload: p.payload },
            Ok(_) => continue,
            Err(e) => {
                let _ = tx.send(Report::Down(describe(&e)));
                return;
            }
        };
        if tx.send(report).is_err() {
            return;
        }
    }
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!("the broker refused the connection: {code:?}"),
        other => other.to_string(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
