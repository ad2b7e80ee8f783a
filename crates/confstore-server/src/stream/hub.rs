//! The embedded broker's core (docs/adr/0032): sessions, subscriptions, retained messages and
//! the fan-out of every message to the connections that subscribed to it, in this process.
//!
//! The [`gate`](super::gate) serves MQTT 3.1.1 on the network and calls into the hub; the
//! publisher and the fleet view call it directly ([`Hub::publish`],
//! [`Hub::subscribe_local`]), so a message from the publisher reaches a subscriber's socket
//! with one hand-off (the hub to the connection's task) and no socket or thread in between.
//!
//! What it keeps, all in memory (the publisher puts the retained state back after a
//! restart, as it would on any broker that lost it):
//! - **Retained messages**, one per topic; an empty retained payload deletes. At most
//!   [`RETAINED_TOPICS_MAX`]: past it a client's retained message is forwarded but not kept
//!   (the store's own messages are always kept). The publisher may also leave a retained
//!   message to be made when it is first needed ([`Hub::retain_deferred`]; docs/adr/0034):
//!   a large service's snapshot is kept as the service's state and rendered and signed only
//!   when a subscription asks for it, once, whoever asks.
//! - **Sessions** by client id. A clean session ends with its connection. A persistent one
//!   (clean session off) keeps its subscriptions and the QoS 1 messages it has not
//!   acknowledged or not yet received — at most [`SESSION_QUEUE_MAX`], the oldest dropped
//!   first and counted — while its client is away, for at most [`SESSION_IDLE_MAX`]; at most
//!   [`SESSIONS_MAX`] sessions are kept, the longest-idle offline one forgotten first.
//! - A connection whose queue is full (a client that stopped reading) is closed; its
//!   session keeps what it had not taken, so nothing is lost while the session lives.
//!
//! Subscriptions are indexed by filter (literal filters in one map, those with wildcards in
//! another), so a publish visits only the sessions subscribed to its topic: with 1,000
//! sessions of four filters each, a message nobody subscribed to costs ~65 ns instead of
//! the ~126 µs a walk over every session took (release build, measured once with a
//! throwaway harness when the index was added).
//!
//! Invariants: messages of one topic reach each subscriber in the order they were
//! published; retained messages a SUBSCRIBE brings are delivered before any message
//! published after it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use confstore_core::limits;
use rumqttc::QoS;
use rumqttc::mqttbytes::{has_wildcards, matches};
use tokio::sync::{Notify, mpsc};

/// Most retained topics kept (docs for each bound in `confstore_core::limits`).
pub const RETAINED_TOPICS_MAX: usize = limits::MQTT_RETAINED_TOPICS_MAX;
/// Most messages a connection or an offline session holds for its client.
pub const SESSION_QUEUE_MAX: usize = limits::MQTT_SESSION_QUEUE_MAX;
/// Most sessions (connected or not).
pub const SESSIONS_MAX: usize = limits::MQTT_SESSIONS_MAX;
/// How long an offline persistent session is kept.
pub const SESSION_IDLE_MAX: Duration = Duration::from_secs(3600);
/// Room in an in-process subscriber's channel (the fleet view); past it messages are
/// dropped and counted.
const LOCAL_QUEUE_MAX: usize = limits::MQTT_LOCAL_QUEUE_MAX;

/// One message as the hub holds and forwards it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Payload (empty on a retained topic: delete the retained message).
    pub payload: Bytes,
    /// Whether the broker keeps it for later subscribers.
    pub retain: bool,
    /// QoS it was published with (at most 1).
    pub qos: QoS,
}

/// What the hub hands a connection's task.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message.
    pub msg: Arc<Message>,
    /// QoS to deliver with: the lower of the message's and the subscription's.
    pub qos: QoS,
    /// Set when the message is a retained one a new subscription brought.
    pub retain: bool,
}

/// A connection registered with the hub ([`Hub::connect`]).
#[derive(Debug)]
pub struct Attached {
    /// This connection's id (sessions outlive connections).
    pub id: u64,
    /// The session's ([`Hub::disconnect`] needs it).
    pub session: u64,
    /// What to deliver, in order.
    pub rx: mpsc::Receiver<Delivery>,
    /// Notified when the hub wants the connection closed: another connection took the
    /// client id over, or the client stopped reading.
    pub kick: Arc<Notify>,
    /// Whether a persistent session was there already.
    pub session_present: bool,
}

/// The payload of a retained message made when a subscription first needs it
/// ([`Hub::retain_deferred`]).
pub trait Deferred: Send + Sync {
    /// Makes the payload (CPU only; an empty one: nothing to deliver). Called at most once
    /// per message.
    fn render(&self) -> Bytes;
}

/// A retained message as the hub keeps it.
#[derive(Clone)]
enum Retained {
    Ready(Arc<Message>),
    Deferred(Arc<DeferredMessage>),
}

/// A retained message whose payload is made on first need, then kept.
struct DeferredMessage {
    topic: String,
    qos: QoS,
    payload: Arc<dyn Deferred>,
    made: OnceLock<Option<Arc<Message>>>,
}

impl DeferredMessage {
    /// The message, made now if it was not yet (concurrent callers wait for one render).
    fn message(&self, stats: &HubStats) -> Option<Arc<Message>> {
        self.made
            .get_or_init(|| {
                let payload = self.payload.render();
                stats.deferred_rendered.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = stats.metrics.get() {
                    m.mqtt_deferred_rendered();
                }
                (!payload.is_empty())
                    .then(|| Arc::new(Message { topic: self.topic.clone(), payload, retain: true, qos: self.qos }))
            })
            .clone()
    }
}

impl Retained {
    fn qos(&self) -> QoS {
        match self {
            Self::Ready(m) => m.qos,
            Self::Deferred(d) => d.qos,
        }
    }

    /// Whether taking the message costs a render.
    fn unmade(&self) -> bool {
        matches!(self, Self::Deferred(d) if d.made.get().is_none())
    }

    fn message(&self, stats: &HubStats) -> Option<Arc<Message>> {
        match self {
            Self::Ready(m) => Some(Arc::clone(m)),
            Self::Deferred(d) => d.message(stats),
        }
    }
}

/// Runs `f`, a render of a few milliseconds, telling a multi-threaded runtime to move its
/// other tasks off this thread meanwhile.
fn rendering<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Counters for tests, and the metrics they also feed once set ([`Hub::count_into`]).
#[derive(Debug, Default)]
pub struct HubStats {
    metrics: std::sync::OnceLock<crate::metrics::Metrics>,
    /// Messages dropped from a full offline session queue or a full local subscriber.
    pub dropped: AtomicU64,
    /// Connections closed because their queue was full.
    pub slow_closed: AtomicU64,
    /// Deferred retained messages made for a subscription ([`Hub::retain_deferred`]).
    pub deferred_rendered: AtomicU64,
}

/// The hub. Cheap to clone (one shared state).
#[derive(Clone, Default)]
pub struct Hub {
    state: Arc<Mutex<State>>,
    /// Counters.
    pub stats: Arc<HubStats>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    /// Literal filter → the client ids subscribed with it, and the same for filters with
    /// wildcards: an index, so a publish visits the sessions it may reach rather than all
    /// of them. Each session's own `filters` stay authoritative (a stale entry is skipped).
    exact: HashMap<String, HashSet<Arc<str>>>,
    wild: HashMap<String, HashSet<Arc<str>>>,
    retained: BTreeMap<String, Retained>,
    local: Vec<(String, mpsc::Sender<Arc<Message>>)>,
    next_conn: u64,
}

struct Session {
    /// Which session this is: the id of the connection that started it (a persistent
    /// session continued by a later connection keeps it).
    incarnation: u64,
    filters: Vec<(String, QoS)>,
    persistent: bool,
    conn: Option<Live>,
    /// Held for the client while it is away (or could not take them).
    queue: VecDeque<Delivery>,
    /// When the connection went away.
    offline_since: Option<Instant>,
}

struct Live {
    id: u64,
    tx: mpsc::Sender<Delivery>,
    kick: Arc<Notify>,
}

impl HubStats {
    fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = self.metrics.get() {
            m.mqtt_dropped();
        }
    }
}

impl Hub {
    /// Counts dropped messages into `metrics` too (`confstore_mqtt_dropped`).
    pub fn count_into(&self, metrics: crate::metrics::Metrics) {
        let _ = self.stats.metrics.set(metrics);
    }

    /// A new, empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent maps (no partial updates span
        // an unwind point), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a connection for `client_id`. An existing connection with that id is
    /// kicked (the newer one wins). `clean` discards any earlier session; otherwise the
    /// session's subscriptions stay and what it held is delivered first.
    pub fn connect(&self, client_id: &str, clean: bool) -> Attached {
        let mut st = self.lock();
        st.expire(Instant::now());
        st.next_conn += 1;
        let id = st.next_conn;
        let (tx, rx) = mpsc::channel(SESSION_QUEUE_MAX);
        let kick = Arc::new(Notify::new());
        let old = st.sessions.remove(client_id);
        if let Some(live) = old.as_ref().and_then(|s| s.conn.as_ref()) {
            live.kick.notify_one();
        }
        let (session, session_present) = match old {
            Some(mut s) if !clean && s.persistent => {
                s.conn = None;
                (s, true)
            }
            discarded => {
                if let Some(d) = discarded {
                    st.unindex(client_id, &d.filters);
                }
                (
                    Session {
                        incarnation: id,
                        filters: Vec::new(),
                        persistent: !clean,
                        conn: None,
                        queue: VecDeque::new(),
                        offline_since: None,
                    },
                    false,
                )
            }
        };
        let mut session = session;
        session.offline_since = None;
        // What the session held goes first, into the fresh channel (it has room for a full
        // queue).
        for d in session.queue.drain(..) {
            let _ = tx.try_send(d);
        }
        session.conn = Some(Live { id, tx, kick: Arc::clone(&kick) });
        // (This client's session was taken out above.)
        if st.sessions.len() >= SESSIONS_MAX {
            st.forget_one_offline();
        }
        let incarnation = session.incarnation;
        st.sessions.insert(client_id.to_owned(), session);
        Attached { id, session: incarnation, rx, kick, session_present }
    }

    /// Subscribes connection `conn` of `client_id` to `filters` (valid, allowed ones) and
    /// returns the retained messages they match, to deliver right after the SUBACK. A
    /// deferred one not made yet is made here, after the hub's lock is released (messages
    /// published meanwhile wait in the connection's channel, behind these).
    pub fn subscribe(&self, client_id: &str, conn: u64, filters: &[(String, QoS)]) -> Vec<Delivery> {
        let matched = {
            let mut st = self.lock();
            let State { sessions, retained, exact, wild, .. } = &mut *st;
            let Some(s) = sessions.get_mut(client_id).filter(|s| s.conn.as_ref().is_some_and(|l| l.id == conn)) else {
                return Vec::new();
            };
            let id: Arc<str> = Arc::from(client_id);
            let mut matched = Vec::new();
            for (filter, qos) in filters {
                let qos = min_qos(*qos, QoS::AtLeastOnce);
                match s.filters.iter_mut().find(|(f, _)| f == filter) {
                    Some(existing) => existing.1 = qos,
                    None => s.filters.push((filter.clone(), qos)),
                }
                let index = if has_wildcards(filter) { &mut *wild } else { &mut *exact };
                index.entry(filter.clone()).or_default().insert(Arc::clone(&id));
                matched.extend(retained_matching(retained, filter).into_iter().map(|r| (r.clone(), qos)));
            }
            matched
        };
        let make = || {
            matched
                .iter()
                .filter_map(|(r, qos)| {
                    let msg = r.message(&self.stats)?;
                    Some(Delivery { qos: min_qos(r.qos(), *qos), msg, retain: true })
                })
                .collect()
        };
        if matched.iter().any(|(r, _)| r.unmade()) { rendering(make) } else { make() }
    }

    /// Removes `filters` from the session of connection `conn`.
    pub fn unsubscribe(&self, client_id: &str, conn: u64, filters: &[String]) {
        let mut st = self.lock();
        let Some(s) = st.sessions.get_mut(client_id).filter(|s| s.conn.as_ref().is_some_and(|l| l.id == conn)) else {
            return;
        };
        let gone: Vec<(String, QoS)> = s.filters.iter().filter(|(f, _)| filters.contains(f)).cloned().collect();
        s.filters.retain(|(f, _)| !filters.contains(f));
        st.unindex(client_id, &gone);
    }

    /// Connection `att` of `client_id` ended. `unacked` are the deliveries it had not had
    /// acknowledged, oldest first; they and whatever is still queued for it stay with a
    /// persistent session — or go to the connection that took the session over.
    pub fn disconnect(&self, client_id: &str, att: &mut Attached, unacked: Vec<Delivery>) {
        let mut st = self.lock();
        let Some(s) = st.sessions.get_mut(client_id) else { return };
        if s.conn.as_ref().is_none_or(|l| l.id != att.id) {
            // Taken over. If the session goes on, so do its messages.
            if s.incarnation == att.session && s.persistent {
                let rest = std::iter::from_fn(|| att.rx.try_recv().ok()).collect::<Vec<_>>();
                for d in unacked.into_iter().chain(rest) {
                    s.offer(d, &self.stats);
                }
            }
            return;
        }
        s.conn = None;
        if !s.persistent {
            if let Some(gone) = st.sessions.remove(client_id) {
                st.unindex(client_id, &gone.filters);
            }
            return;
        }
        s.offline_since = Some(Instant::now());
        let mut held: VecDeque<Delivery> = unacked.into_iter().collect();
        while let Ok(d) = att.rx.try_recv() {
            held.push_back(d);
        }
        // Overflow queued while the connection was being closed comes after.
        held.extend(s.queue.drain(..));
        while held.len() > SESSION_QUEUE_MAX {
            held.pop_front();
            self.stats.drop_one();
        }
        s.queue = held;
    }

    /// Publishes `msg`: keeps it if retained (an empty payload deletes; `trusted` messages
    /// are kept even past [`RETAINED_TOPICS_MAX`]) and hands it to every matching session.
    pub fn publish(&self, msg: Message, trusted: bool) {
        let mut st = self.lock();
        let msg = Arc::new(msg);
        if msg.retain {
            if msg.payload.is_empty() {
                st.retained.remove(&msg.topic);
            } else if trusted || st.retained.len() < RETAINED_TOPICS_MAX || st.retained.contains_key(&msg.topic) {
                st.retained.insert(msg.topic.clone(), Retained::Ready(Arc::clone(&msg)));
            }
        }
        let State { sessions, local, exact, wild, .. } = &mut *st;
        let mut targets: Vec<Arc<str>> =
            exact.get(&msg.topic).map(|ids| ids.iter().cloned().collect()).unwrap_or_default();
        let mut sources = usize::from(!targets.is_empty());
        for (_, ids) in wild.iter().filter(|(f, _)| matches(&msg.topic, f)) {
            targets.extend(ids.iter().cloned());
            sources += 1;
        }
        if sources > 1 {
            targets.sort_unstable();
            targets.dedup();
        }
        for id in &targets {
            let Some(s) = sessions.get_mut(&**id) else { continue };
            let Some(qos) =
                s.filters.iter().filter(|(f, _)| matches(&msg.topic, f)).map(|(_, q)| *q).max_by_key(|q| *q as u8)
            else {
                continue;
            };
            s.offer(Delivery { msg: Arc::clone(&msg), qos: min_qos(msg.qos, qos), retain: false }, &self.stats);
        }
        local.retain(|(_, tx)| !tx.is_closed());
        for (filter, tx) in local.iter() {
            if matches(&msg.topic, filter) && tx.try_send(Arc::clone(&msg)).is_err() {
                self.stats.drop_one();
            }
        }
    }

    /// Keeps, as `topic`'s retained message, one whose payload is made when a subscription
    /// first needs it (the store's own: always kept). It is not sent to the current
    /// subscribers: they get what is published on the topic (docs/adr/0034).
    pub fn retain_deferred(&self, topic: String, qos: QoS, payload: Arc<dyn Deferred>) {
        let d = DeferredMessage { topic: topic.clone(), qos, payload, made: OnceLock::new() };
        self.lock().retained.insert(topic, Retained::Deferred(Arc::new(d)));
    }

    /// An in-process subscriber to `filter`: the retained messages it matches first, then
    /// every message published to it. Ends when the receiver is dropped. (A deferred
    /// retained message it matches is made under the hub's lock: the one local subscriber,
    /// the fleet view, reads reports, never snapshots.)
    pub fn subscribe_local(&self, filter: &str) -> mpsc::Receiver<Arc<Message>> {
        let mut st = self.lock();
        let (tx, rx) = mpsc::channel(LOCAL_QUEUE_MAX);
        for msg in retained_matching(&st.retained, filter).into_iter().filter_map(|r| r.message(&self.stats)) {
            if tx.try_send(msg).is_err() {
                self.stats.drop_one();
            }
        }
        st.local.push((filter.to_owned(), tx));
        rx
    }

    /// Whether connection `conn` is the one `client_id`'s session is attached to.
    pub fn is_current(&self, client_id: &str, conn: u64) -> bool {
        self.lock().sessions.get(client_id).is_some_and(|s| s.conn.as_ref().is_some_and(|l| l.id == conn))
    }

    /// The retained message on `topic`, if any (a deferred one is made now).
    pub fn retained(&self, topic: &str) -> Option<Arc<Message>> {
        let r = self.lock().retained.get(topic).cloned()?;
        rendering(|| r.message(&self.stats))
    }

    /// How many sessions are kept (connected or not).
    pub fn sessions(&self) -> usize {
        self.lock().sessions.len()
    }
}

impl Session {
    /// Hands `d` to the session's connection, or keeps it for the client while it is away
    /// (persistent sessions, QoS 1). A full connection queue (a client that stopped
    /// reading) kicks the connection; from then on messages queue behind the overflow, so
    /// each client gets them in order.
    fn offer(&mut self, d: Delivery, stats: &HubStats) {
        match &self.conn {
            Some(live) => {
                let d = if self.queue.is_empty() {
                    match live.tx.try_send(d) {
                        Ok(()) => return,
                        Err(mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d)) => {
                            live.kick.notify_one();
                            stats.slow_closed.fetch_add(1, Ordering::Relaxed);
                            d
                        }
                    }
                } else {
                    d
                };
                if self.persistent {
                    push_bounded(&mut self.queue, d, stats);
                }
            }
            None if self.persistent && d.qos != QoS::AtMostOnce => push_bounded(&mut self.queue, d, stats),
            None => {}
        }
    }
}

impl State {
    /// Forgets offline sessions idle longer than [`SESSION_IDLE_MAX`].
    fn expire(&mut self, now: Instant) {
        let old: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.offline_since.is_some_and(|t| now.duration_since(t) >= SESSION_IDLE_MAX))
            .map(|(id, _)| id.clone())
            .collect();
        for id in old {
            self.forget(&id);
        }
    }

    /// Removes a session and its entries in the index.
    fn forget(&mut self, id: &str) {
        if let Some(s) = self.sessions.remove(id) {
            self.unindex(id, &s.filters);
        }
    }

    /// Takes `id`'s subscriptions to `filters` out of the index.
    fn unindex(&mut self, id: &str, filters: &[(String, QoS)]) {
        for (f, _) in filters {
            let index = if has_wildcards(f) { &mut self.wild } else { &mut self.exact };
            if let Some(ids) = index.get_mut(f) {
                ids.remove(id);
                if ids.is_empty() {
                    index.remove(f);
                }
            }
        }
    }

    /// Forgets the offline session that has been away longest.
    fn forget_one_offline(&mut self) {
        let oldest =
            self.sessions.iter().filter_map(|(id, s)| s.offline_since.map(|t| (t, id.clone()))).min().map(|(_, id)| id);
        if let Some(id) = oldest {
            self.forget(&id);
        }
    }
}

fn push_bounded(queue: &mut VecDeque<Delivery>, d: Delivery, stats: &HubStats) {
    if queue.len() >= SESSION_QUEUE_MAX {
        queue.pop_front();
        stats.drop_one();
    }
    queue.push_back(d);
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

/// The retained messages `filter` matches: a literal filter is one map lookup; a filter
/// with wildcards walks the topics under its literal prefix.
fn retained_matching<'a>(retained: &'a BTreeMap<String, Retained>, filter: &str) -> Vec<&'a Retained> {
    let prefix = filter.find(['+', '#']).map_or(filter, |i| &filter[..i]);
    if prefix.len() == filter.len() {
        return retained.get(filter).into_iter().collect();
    }
    retained
        .range(prefix.to_owned()..)
        .take_while(|(t, _)| t.starts_with(prefix))
        .filter(|(t, _)| matches(t, filter))
        .map(|(_, m)| m)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, payload: &str, retain: bool) -> Message {
        Message { topic: topic.into(), payload: Bytes::from(payload.to_owned()), retain, qos: QoS::AtLeastOnce }
    }

    fn drain(rx: &mut mpsc::Receiver<Delivery>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(d) = rx.try_recv() {
            out.push(format!("{}={}", d.msg.topic, String::from_utf8_lossy(&d.msg.payload)));
        }
        out
    }

    #[test]
    fn retained_messages_come_with_a_subscription_and_an_empty_payload_deletes() {
        let hub = Hub::new();
        hub.publish(msg("system/config/a", "1", true), true);
        hub.publish(msg("system/config/b", "2", true), true);
        hub.publish(msg("system/config-head", "h", true), true);
        let mut c = hub.connect("c", true);
        let got = hub.subscribe("c", c.id, &[("system/config/+".into(), QoS::AtLeastOnce)]);
        let topics: Vec<_> = got.iter().map(|d| (d.msg.topic.as_str(), d.retain)).collect();
        assert_eq!(topics, [("system/config/a", true), ("system/config/b", true)]);
        hub.publish(msg("system/config/a", "", true), true);
        assert!(hub.retained("system/config/a").is_none());
        hub.publish(msg("system/config/a", "3", true), true);
        assert_eq!(drain(&mut c.rx), ["system/config/a=", "system/config/a=3"]);
        let literal = hub.subscribe("c", c.id, &[("system/config-head".into(), QoS::AtMostOnce)]);
        assert_eq!(literal.len(), 1);
        assert_eq!(literal[0].qos, QoS::AtMostOnce, "the lower of the message's and the subscription's QoS");
    }

    #[test]
    fn messages_reach_matching_subscribers_in_order_and_no_one_else() {
        let hub = Hub::new();
        let mut a = hub.connect("a", true);
        let mut b = hub.connect("b", true);
        hub.subscribe("a", a.id, &[("system/config/x".into(), QoS::AtLeastOnce)]);
        hub.subscribe("b", b.id, &[("system/config/y".into(), QoS::AtLeastOnce)]);
        for i in 0..5 {
            hub.publish(msg("system/config/x", &i.to_string(), false), true);
        }
        assert_eq!(drain(&mut a.rx), (0..5).map(|i| format!("system/config/x={i}")).collect::<Vec<_>>());
        assert!(drain(&mut b.rx).is_empty());
        hub.unsubscribe("a", a.id, &["system/config/x".into()]);
        hub.publish(msg("system/config/x", "late", false), true);
        assert!(drain(&mut a.rx).is_empty());
    }

    #[test]
    fn a_persistent_session_keeps_what_its_client_missed_and_a_clean_one_does_not() {
        let hub = Hub::new();
        let mut c = hub.connect("p", false);
        assert!(!c.session_present);
        hub.subscribe("p", c.id, &[("t/+".into(), QoS::AtLeastOnce)]);
        hub.publish(msg("t/1", "sent-not-acked", false), true);
        let unacked: Vec<_> = std::iter::from_fn(|| c.rx.try_recv().ok()).collect();
        hub.publish(msg("t/1", "queued", false), true);
        hub.disconnect("p", &mut c, unacked);
        hub.publish(msg("t/1", "while-away", false), true);
        let mut back = hub.connect("p", false);
        assert!(back.session_present);
        assert_eq!(drain(&mut back.rx), ["t/1=sent-not-acked", "t/1=queued", "t/1=while-away"]);
        hub.publish(msg("t/1", "live", false), true);
        assert_eq!(drain(&mut back.rx), ["t/1=live"], "the subscription stayed");
        let clean = hub.connect("p", true);
        assert!(!clean.session_present);
        hub.publish(msg("t/1", "after-clean", false), true);
        let mut clean = clean;
        assert!(drain(&mut clean.rx).is_empty(), "a clean session starts with no subscription");
    }

    #[test]
    fn a_takeover_kicks_the_old_connection_and_the_session_goes_on_with_what_it_held() {
        let hub = Hub::new();
        let mut old = hub.connect("dup", false);
        hub.subscribe("dup", old.id, &[("t".into(), QoS::AtLeastOnce)]);
        hub.publish(msg("t", "before", false), true);
        let new = hub.connect("dup", false);
        assert!(new.session_present);
        // The old connection's kick was notified: a waiter gets it at once.
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), old.kick.notified()).await.expect("kicked");
        });
        hub.disconnect("dup", &mut old, Vec::new());
        hub.publish(msg("t", "x", false), true);
        let mut new = new;
        assert_eq!(drain(&mut new.rx), ["t=before", "t=x"], "what the old connection held goes on with the session");
        assert!(hub.subscribe("dup", old.id, &[("u".into(), QoS::AtLeastOnce)]).is_empty());
    }

    #[test]
    fn a_client_that_stops_reading_is_kicked_and_its_persistent_session_keeps_the_newest() {
        let hub = Hub::new();
        let mut c = hub.connect("slow", false);
        hub.subscribe("slow", c.id, &[("t".into(), QoS::AtLeastOnce)]);
        for i in 0..SESSION_QUEUE_MAX + 10 {
            hub.publish(msg("t", &i.to_string(), false), true);
        }
        assert_eq!(hub.stats.slow_closed.load(Ordering::Relaxed), 1);
        hub.disconnect("slow", &mut c, Vec::new());
        let mut back = hub.connect("slow", false);
        let got = drain(&mut back.rx);
        assert_eq!(got.len(), SESSION_QUEUE_MAX);
        assert_eq!(got.last().map(String::as_str), Some(format!("t={}", SESSION_QUEUE_MAX + 9).as_str()));
        assert_eq!(hub.stats.dropped.load(Ordering::Relaxed), 10, "the oldest ten were dropped, and counted");
    }

    #[test]
    fn retained_topics_are_bounded_for_clients_not_for_the_store() {
        let hub = Hub::new();
        {
            let mut st = hub.lock();
            for i in 0..RETAINED_TOPICS_MAX {
                st.retained.insert(format!("r/{i}"), Retained::Ready(Arc::new(msg("r", "x", true))));
            }
        }
        hub.publish(msg("system/config-status/a/b", "report", true), false);
        assert!(hub.retained("system/config-status/a/b").is_none());
        hub.publish(msg("r/1", "replaced", true), false);
        assert_eq!(hub.retained("r/1").map(|m| m.payload.clone()), Some(Bytes::from("replaced")));
        hub.publish(msg("system/config/a", "snap", true), true);
        assert!(hub.retained("system/config/a").is_some());
    }

    #[test]
    fn a_local_subscriber_gets_the_retained_messages_then_the_live_ones() {
        let hub = Hub::new();
        hub.publish(msg("system/config-status/a/1", "r1", true), false);
        hub.publish(msg("system/config-status/b/2", "r2", true), false);
        let mut rx = hub.subscribe_local("system/config-status/+/+");
        hub.publish(msg("system/config-status/a/3", "live", true), false);
        hub.publish(msg("system/config/a", "other", true), true);
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).map(|m| m.topic.clone()).collect();
        assert_eq!(got, ["system/config-status/a/1", "system/config-status/b/2", "system/config-status/a/3"]);
    }

    #[test]
    fn the_subscription_index_follows_subscriptions_and_sessions() {
        let hub = Hub::new();
        let mut a = hub.connect("a", true);
        let mut b = hub.connect("b", false);
        hub.subscribe("a", a.id, &[("t/x".into(), QoS::AtLeastOnce), ("t/+".into(), QoS::AtLeastOnce)]);
        hub.subscribe("b", b.id, &[("t/x".into(), QoS::AtMostOnce)]);
        hub.publish(msg("t/x", "1", false), true);
        assert_eq!(drain(&mut a.rx), ["t/x=1"], "one delivery although two filters match");
        assert_eq!(drain(&mut b.rx), ["t/x=1"]);
        hub.unsubscribe("a", a.id, &["t/x".into()]);
        hub.publish(msg("t/x", "2", false), true);
        assert_eq!(drain(&mut a.rx), ["t/x=2"], "still through t/+");
        // A clean session ends: out of the index. A persistent one stays in it.
        hub.disconnect("a", &mut a, Vec::new());
        hub.disconnect("b", &mut b, Vec::new());
        {
            let st = hub.lock();
            assert!(st.wild.is_empty(), "a's wildcard subscription left the index");
            assert_eq!(st.exact.get("t/x").map(HashSet::len), Some(1), "b's persistent session is still indexed");
        }
        // Taken over by a clean session: b's subscription goes.
        let mut b2 = hub.connect("b", true);
        hub.publish(msg("t/x", "3", false), true);
        assert!(drain(&mut b2.rx).is_empty());
        hub.disconnect("b", &mut b2, Vec::new());
        let st = hub.lock();
        assert!(st.exact.is_empty() && st.wild.is_empty() && st.sessions.is_empty());
    }

    #[test]
    fn offline_sessions_expire_and_are_bounded() {
        let hub = Hub::new();
        let mut c = hub.connect("gone", false);
        hub.subscribe("gone", c.id, &[("t".into(), QoS::AtLeastOnce)]);
        hub.disconnect("gone", &mut c, Vec::new());
        {
            let mut st = hub.lock();
            st.sessions.get_mut("gone").unwrap().offline_since = Some(Instant::now() - SESSION_IDLE_MAX);
        }
        let _ = hub.connect("other", true);
        assert_eq!(hub.sessions(), 1, "the idle session was forgotten");
        assert!(hub.lock().exact.is_empty());
        for i in 0..SESSIONS_MAX + 5 {
            let id = format!("s{i}");
            let mut c = hub.connect(&id, false);
            hub.disconnect(&id, &mut c, Vec::new());
        }
        assert!(hub.sessions() <= SESSIONS_MAX);
    }

    /// A deferred payload that counts its renders.
    struct Counting(AtomicU64, &'static str);

    impl Deferred for Counting {
        fn render(&self) -> Bytes {
            self.0.fetch_add(1, Ordering::Relaxed);
            Bytes::from_static(self.1.as_bytes())
        }
    }

    #[test]
    fn a_deferred_retained_message_is_made_once_for_new_subscribers_and_not_sent_to_current_ones() {
        let hub = Hub::new();
        let mut current = hub.connect("current", true);
        hub.subscribe("current", current.id, &[("system/config/big".into(), QoS::AtLeastOnce)]);
        let snap = Arc::new(Counting(AtomicU64::new(0), "snapshot"));
        hub.retain_deferred("system/config/big".into(), QoS::AtLeastOnce, Arc::clone(&snap) as Arc<dyn Deferred>);
        assert!(drain(&mut current.rx).is_empty(), "current subscribers follow what is published");
        assert_eq!(snap.0.load(Ordering::Relaxed), 0, "nothing made until a subscription asks");
        let a = hub.connect("a", true);
        let got = hub.subscribe("a", a.id, &[("system/config/+".into(), QoS::AtLeastOnce)]);
        let got: Vec<_> = got.iter().map(|d| (d.msg.topic.as_str(), d.msg.payload.clone(), d.retain)).collect();
        assert_eq!(got, [("system/config/big", Bytes::from("snapshot"), true)]);
        let b = hub.connect("b", true);
        let again = hub.subscribe("b", b.id, &[("system/config/big".into(), QoS::AtMostOnce)]);
        assert_eq!((again.len(), again[0].qos), (1, QoS::AtMostOnce));
        assert_eq!(snap.0.load(Ordering::Relaxed), 1, "made once, whoever asks");
        assert_eq!(hub.stats.deferred_rendered.load(Ordering::Relaxed), 1);
        // A published retained message replaces it; a deferred one replaces that in turn.
        hub.publish(msg("system/config/big", "newer", true), true);
        assert_eq!(hub.retained("system/config/big").map(|m| m.payload.clone()), Some(Bytes::from("newer")));
        let newest = Arc::new(Counting(AtomicU64::new(0), "newest"));
        hub.retain_deferred("system/config/big".into(), QoS::AtLeastOnce, newest);
        assert_eq!(hub.retained("system/config/big").map(|m| m.payload.clone()), Some(Bytes::from("newest")));
        // One whose render comes out empty is delivered to no one.
        hub.retain_deferred("system/config/gone".into(), QoS::AtLeastOnce, Arc::new(Counting(AtomicU64::new(0), "")));
        let c = hub.connect("c", true);
        assert!(hub.subscribe("c", c.id, &[("system/config/gone".into(), QoS::AtLeastOnce)]).is_empty());
    }

    #[test]
    fn a_deferred_retained_message_is_made_on_a_connection_task_of_a_multi_threaded_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        let hub = Hub::new();
        hub.retain_deferred("system/config/big".into(), QoS::AtLeastOnce, Arc::new(Counting(AtomicU64::new(0), "s")));
        let h = hub.clone();
        let got = rt.block_on(async move {
            tokio::spawn(async move {
                let c = h.connect("c", true);
                h.subscribe("c", c.id, &[("system/config/big".into(), QoS::AtLeastOnce)]).len()
            })
            .await
            .unwrap()
        });
        assert_eq!(got, 1);
    }
}
