//! The gate of the embedded broker: its public MQTT 3.1.1 listener (ADR 0019), in front of
//! the in-process [`hub`](super::hub) (ADR 0032).
//!
//! Per client connection it reads the CONNECT (within
//! [`limits::MQTT_CONNECT_TIMEOUT_SECS`](confstore_core::limits::MQTT_CONNECT_TIMEOUT_SECS)),
//! decides who it is, attaches it to its session in the hub, then serves it: the client's
//! packets, checked, and the hub's deliveries (QoS 1 with packet ids, at most
//! [`INFLIGHT_MAX`] unacknowledged, queued messages written together). The rules:
//!
//! - **Who**: a client whose MQTT password is a valid confstore token (any user name).
//!   Anonymous clients, unknown or revoked tokens are refused (CONNACK "not authorized"); a
//!   revoked token's open connection is closed within [`RECHECK_INTERVAL`]. (The publisher
//!   does not come through the gate: it calls the hub in process.)
//! - **The publisher's client id** is reserved: nobody else may take over its session.
//! - **Publish**: the publisher is the only writer of the stream. A client publishes only
//!   its own status report (docs/format.md §20) on `system/config-status/<service>/<instance>`
//!   — as its last will too — with a token that reads that service's configuration; the
//!   report must parse and name the topic's service and instance. Any other publish (or
//!   will) disconnects the client (refuses its CONNECT).
//! - **Subscribe**: a client reads the head and the publisher's health; snapshots and events
//!   with a role that reads configuration or the audit trail; a token scoped to a service
//!   only that service's topics (so no wildcard over services). A refused filter gets the
//!   failure code in the SUBACK; the others go through.
//! - **Bounds**: at most [`limits::MQTT_CONNECTIONS_MAX`](confstore_core::limits::MQTT_CONNECTIONS_MAX)
//!   connections (then CONNACK "server unavailable"), client packets up to
//!   [`limits::MQTT_CLIENT_PACKET_BYTES_MAX`](confstore_core::limits::MQTT_CLIENT_PACKET_BYTES_MAX),
//!   silence up to 1.5 keep-alive intervals, writes within [`WRITE_TIMEOUT`]; QoS 2 is
//!   not served (the connection is closed). A client id taken over closes the older
//!   connection without its will; any other end but a DISCONNECT publishes the will.
//!
//! The same rules as `ops/mosquitto/confstore.acl`, for the broker that ships in the binary.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use confstore_core::auth::Role;
use confstore_core::limits;
use confstore_core::stream as topics;
use rumqttc::mqttbytes;
use rumqttc::{ConnAck, ConnectReturnCode, Packet, PubAck, QoS, SubAck, SubscribeReasonCode, UnsubAck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use zeroize::Zeroizing;

use super::broker::Embedded;
use super::hub::{self, Hub};
use super::settings::MAX_PACKET_BYTES;
use crate::app::App;
use crate::extract::Principal;

/// How often a client's token is checked again (revoked → disconnected).
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Who is on a connection: a client with a valid token.
#[derive(Debug, Clone)]
struct Who {
    principal: Principal,
    token: Arc<Zeroizing<String>>,
}

/// Whether `who` may subscribe to `filter`: every topic the filter can match must be one it
/// may read, so a wildcard over services is refused for a scoped token.
fn may_subscribe(who: &Who, filter: &str) -> bool {
    let principal = &who.principal;
    if filter == topics::HEAD_TOPIC || filter == topics::HEALTH_TOPIC || filter == topics::CHECKPOINT_TOPIC {
        return true;
    }
    let reads_config = principal.role.grants(Role::ConfigRead) || principal.role.grants(Role::AuditRead);
    if !reads_config {
        return false;
    }
    let service = filter
        .strip_prefix(topics::SNAPSHOT_TOPIC_PREFIX)
        .or_else(|| filter.strip_prefix(topics::EVENTS_TOPIC_PREFIX))
        .or_else(|| filter.strip_prefix(confstore_core::rollout::STAGED_TOPIC_PREFIX));
    match (&principal.service, service) {
        // Unscoped: any one service, or all of them with `+`.
        (None, Some(s)) => s == "+" || is_literal_level(s),
        (Some(scope), Some(s)) => s == scope,
        (_, None) => false,
    }
}

/// Whether `who` may publish `payload` on `topic`: only a status report of a service whose
/// configuration it reads, naming the topic's service and instance (docs/format.md §20).
fn may_report(who: &Who, topic: &str, payload: &[u8]) -> Result<(), String> {
    let Some((service, instance)) = confstore_core::fleet::parse_status_topic(topic) else {
        return Err("only status reports (system/config-status/<service>/<instance>) may be published".into());
    };
    let p = &who.principal;
    if !p.role.grants(Role::ConfigRead) || !p.sees(service) {
        return Err(format!("the token may not report for service {service:?}"));
    }
    let status = confstore_core::fleet::Status::parse(payload).map_err(|e| e.to_string())?;
    if status.service != service || status.instance != instance {
        return Err(format!(
            "a report for {}/{} on the topic of {service}/{instance}",
            status.service, status.instance
        ));
    }
    Ok(())
}

/// Whether an allowed filter (see [`may_subscribe`]: no wildcard above the service level)
/// names an events topic.
fn names_events(filter: &str) -> bool {
    filter.starts_with(topics::EVENTS_TOPIC_PREFIX)
}

/// One topic level without wildcards.
fn is_literal_level(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '+', '#'])
}

/// Shared by every connection.
struct Ctx {
    app: App,
    hub: Hub,
    publisher_client_id: String,
    events_subscribed: Arc<AtomicBool>,
    open: AtomicUsize,
}

impl Embedded {
    /// Runs the gate until `stop` turns true.
    pub async fn run(self, app: App, mut stop: watch::Receiver<bool>) {
        let listener = match TcpListener::from_std(self.public) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot serve the embedded MQTT broker's address");
                return;
            }
        };
        self.hub.count_into(app.metrics.clone());
        let ctx = Arc::new(Ctx {
            app,
            hub: self.hub,
            publisher_client_id: self.publisher_client_id,
            events_subscribed: self.events_subscribed,
            open: AtomicUsize::new(0),
        });
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.changed() => return,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept an MQTT connection");
                    ctx.app.metrics.connection_closed("mqtt", "accept_error");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            if ctx.open.load(Ordering::Acquire) >= limits::MQTT_CONNECTIONS_MAX {
                ctx.app.metrics.connection_closed("mqtt", "overloaded");
                tokio::spawn(async move {
                    let mut stream = stream;
                    refuse(&mut stream, ConnectReturnCode::ServiceUnavailable).await;
                });
                continue;
            }
            let n = ctx.open.fetch_add(1, Ordering::AcqRel) + 1;
            ctx.app.metrics.open_connections("mqtt", n);
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move {
                if let Err(why) = serve(&ctx, stream).await {
                    tracing::debug!(reason = why.metric(), detail = %why, "MQTT client connection closed by the gate");
                    if !matches!(why, Closed::Gone) {
                        ctx.app.metrics.connection_closed("mqtt", why.metric());
                    }
                }
                let n = ctx.open.fetch_sub(1, Ordering::AcqRel) - 1;
                ctx.app.metrics.open_connections("mqtt", n);
            });
        }
    }
}

/// Why the gate closed a connection.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("no CONNECT within the connect timeout")]
    ConnectTimeout,
    #[error("the first packet was not a CONNECT")]
    NotConnect,
    #[error("refused at CONNECT: {0}")]
    NotAuthorized(&'static str),
    #[error("{0} tried to publish to {1:?}")]
    Publish(String, String),
    #[error("the token of {0} was revoked")]
    Revoked(String),
    #[error("malformed MQTT packet: {0}")]
    Protocol(String),
    #[error("the client closed the connection without a DISCONNECT")]
    Gone,
    #[error("another connection took the client id over")]
    TakenOver,
    #[error("the client stopped reading and its queue filled")]
    SlowConsumer,
    #[error("no packet within one and a half keep-alive intervals")]
    KeepAlive,
    #[error("a write to the client did not finish within the write timeout")]
    WriteTimeout,
    #[error("connection ended: {0}")]
    Io(#[from] std::io::Error),
}

impl Closed {
    fn metric(&self) -> &'static str {
        match self {
            Closed::ConnectTimeout => "connect_timeout",
            Closed::NotConnect | Closed::Protocol(_) => "protocol_error",
            Closed::NotAuthorized(_) => "not_authorized",
            Closed::Publish(..) => "acl_denied",
            Closed::Revoked(_) => "revoked",
            Closed::TakenOver => "taken_over",
            Closed::SlowConsumer => "slow_consumer",
            Closed::KeepAlive => "keep_alive",
            Closed::WriteTimeout => "write_timeout",
            Closed::Io(_) => "io",
            // Logged, not counted in connections_closed: the listener did not close it.
            Closed::Gone => "client_gone",
        }
    }
}

/// Answers a CONNACK refusal and closes.
async fn refuse<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, code: ConnectReturnCode) {
    let mut buf = BytesMut::new();
    if Packet::ConnAck(ConnAck { session_present: false, code }).write(&mut buf, 16).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = w.write_all(&buf).await;
            let _ = w.shutdown().await;
        })
        .await;
    }
}

/// Reads one whole frame (fixed header + rest) of at most `max` bytes.
async fn read_frame(r: &mut OwnedReadHalf, buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, Closed> {
    loop {
        match mqttbytes::check(buf.iter(), max) {
            Ok(header) => return Ok(Some(buf.split_to(header.frame_length()))),
            Err(mqttbytes::Error::InsufficientBytes(n)) => {
                buf.reserve(n.max(1024));
                if r.read_buf(buf).await? == 0 {
                    return if buf.is_empty() { Ok(None) } else { Err(Closed::Protocol("truncated packet".into())) };
                }
            }
            Err(e) => return Err(Closed::Protocol(e.to_string())),
        }
    }
}

fn parse(frame: &BytesMut, max: usize) -> Result<Packet, Closed> {
    Packet::read(&mut frame.clone(), max).map_err(|e| Closed::Protocol(e.to_string()))
}

/// Most QoS 1 messages sent to a client and not yet acknowledged; further deliveries wait
/// in the connection's queue (which, when full, closes the connection: [`hub`]).
pub const INFLIGHT_MAX: usize = limits::MQTT_INFLIGHT_MAX;
/// Longest a write to a client may take (a client that stopped reading).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one client connection: CONNECT, then its packets and the hub's deliveries, until
/// either side ends.
async fn serve(ctx: &Arc<Ctx>, stream: TcpStream) -> Result<(), Closed> {
    let (mut client_r, mut client_w) = stream.into_split();
    let mut buf = BytesMut::with_capacity(4096);
    let connect_timeout = Duration::from_secs(limits::MQTT_CONNECT_TIMEOUT_SECS);
    let frame = tokio::time::timeout(
        connect_timeout,
        read_frame(&mut client_r, &mut buf, limits::MQTT_CLIENT_PACKET_BYTES_MAX),
    )
    .await
    .map_err(|_| Closed::ConnectTimeout)??
    .ok_or(Closed::NotConnect)?;
    let Packet::Connect(connect) =
        parse(&frame, limits::MQTT_CLIENT_PACKET_BYTES_MAX).map_err(|_| Closed::NotConnect)?
    else {
        return Err(Closed::NotConnect);
    };
    let who = match identify(ctx, &connect).await {
        Ok(w) => w,
        Err((code, why)) => {
            refuse(&mut client_w, code).await;
            tracing::warn!(client_id = %connect.client_id, why, "MQTT client refused");
            return Err(Closed::NotAuthorized(why));
        }
    };
    let client_id = match (connect.client_id.is_empty(), connect.clean_session) {
        (false, _) => connect.client_id.clone(),
        // MQTT 3.1.1 §3.1.3.1: an empty client id with a clean session gets one from the
        // server; without a clean session it is refused.
        (true, true) => format!("confstore-anon-{}", random_suffix()),
        (true, false) => {
            refuse(&mut client_w, ConnectReturnCode::BadClientId).await;
            return Err(Closed::NotAuthorized("an empty client id needs a clean session"));
        }
    };
    let mut att = ctx.hub.connect(&client_id, connect.clean_session);
    let mut conn = Conn { w: client_w, out: BytesMut::with_capacity(4096), inflight: VecDeque::new(), next_pkid: 1 };
    conn.packet(Packet::ConnAck(ConnAck { session_present: att.session_present, code: ConnectReturnCode::Success }))?;
    let will = connect.last_will.map(|w| hub::Message {
        topic: w.topic,
        payload: w.message,
        retain: w.retain,
        qos: if w.qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce },
    });
    let result = run_connection(
        ctx,
        &who,
        &client_id,
        connect_keep_alive(connect.keep_alive),
        client_r,
        buf,
        &mut conn,
        &mut att,
    )
    .await;
    let unacked = std::mem::take(&mut conn.inflight).into_iter().map(|(_, d)| d).collect();
    ctx.hub.disconnect(&client_id, &mut att, unacked);
    // The last will goes out when the connection ends without a DISCONNECT, unless another
    // connection took the client id over (the client is still there).
    if let (Some(will), Err(why)) = (will, &result)
        && !matches!(why, Closed::TakenOver)
    {
        ctx.hub.publish(will, false);
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.w.shutdown()).await;
    result
}

/// Who the CONNECT says it is, or the CONNACK code to refuse it with.
async fn identify(ctx: &Ctx, connect: &rumqttc::Connect) -> Result<Who, (ConnectReturnCode, &'static str)> {
    if connect.protocol != mqttbytes::Protocol::V4 {
        return Err((ConnectReturnCode::RefusedProtocolVersion, "only MQTT 3.1.1 is served"));
    }
    let Some(login) = &connect.login else {
        return Err((ConnectReturnCode::NotAuthorized, "no credentials (the password is a confstore token)"));
    };
    let principal = crate::auth::principal_of_token(&ctx.app, &login.password)
        .await
        .map_err(|_| (ConnectReturnCode::BadUserNamePassword, "unknown or revoked token"))?;
    let who = Who { principal, token: Arc::new(Zeroizing::new(login.password.clone())) };
    if connect.client_id == ctx.publisher_client_id {
        return Err((ConnectReturnCode::NotAuthorized, "the publisher's client id is reserved"));
    }
    // A will is a publish: only a status report is allowed.
    if let Some(will) = &connect.last_will
        && may_report(&who, &will.topic, &will.message).is_err()
    {
        return Err((ConnectReturnCode::NotAuthorized, "a last will may only be the client's own status report"));
    }
    Ok(who)
}

/// How long a client may stay silent: one and a half times its keep-alive (MQTT 3.1.1
/// §3.1.2.10); no limit when it asked for none.
fn connect_keep_alive(secs: u16) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_millis(u64::from(secs) * 1500))
}

fn random_suffix() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// The writing side of a client connection.
struct Conn {
    w: OwnedWriteHalf,
    /// Packets encoded, not yet written.
    out: BytesMut,
    /// QoS 1 deliveries written and not yet acknowledged, oldest first.
    inflight: VecDeque<(u16, hub::Delivery)>,
    next_pkid: u16,
}

impl Conn {
    /// Encodes a packet for the next flush.
    fn packet(&mut self, p: Packet) -> Result<(), Closed> {
        p.write(&mut self.out, MAX_PACKET_BYTES + 1024).map(drop).map_err(|e| Closed::Protocol(e.to_string()))
    }

    /// Encodes a delivery (a QoS 1 one gets a packet id and is in flight until its PUBACK).
    fn deliver(&mut self, d: hub::Delivery) -> Result<(), Closed> {
        let pkid = if d.qos == QoS::AtMostOnce { 0 } else { self.pkid() };
        let p = rumqttc::Publish {
            dup: false,
            qos: d.qos,
            retain: d.retain,
            topic: d.msg.topic.clone(),
            pkid,
            payload: d.msg.payload.clone(),
        };
        p.write(&mut self.out).map_err(|e| Closed::Protocol(e.to_string()))?;
        if d.qos != QoS::AtMostOnce {
            self.inflight.push_back((pkid, d));
        }
        Ok(())
    }

    /// The next packet id not in flight.
    fn pkid(&mut self) -> u16 {
        loop {
            let id = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|(p, _)| *p == id) {
                return id;
            }
        }
    }

    fn acked(&mut self, pkid: u16) {
        if let Some(i) = self.inflight.iter().position(|(p, _)| *p == pkid) {
            self.inflight.remove(i);
        }
    }

    /// Writes what is encoded, within [`WRITE_TIMEOUT`].
    async fn flush(&mut self) -> Result<(), Closed> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = self.out.split();
        tokio::time::timeout(WRITE_TIMEOUT, self.w.write_all(&out)).await.map_err(|_| Closed::WriteTimeout)??;
        Ok(())
    }
}

/// The connection's loop: the client's packets (checked), the hub's deliveries, the
/// keep-alive, the token's recheck and the hub's kick.
#[allow(clippy::too_many_arguments)]
async fn run_connection(
    ctx: &Ctx,
    who: &Who,
    client_id: &str,
    keep_alive: Option<Duration>,
    mut client_r: OwnedReadHalf,
    mut buf: BytesMut,
    conn: &mut Conn,
    att: &mut hub::Attached,
) -> Result<(), Closed> {
    let max = limits::MQTT_CLIENT_PACKET_BYTES_MAX;
    let mut recheck = tokio::time::interval(RECHECK_INTERVAL);
    recheck.tick().await;
    let far = Duration::from_secs(86_400 * 365);
    let mut silent_until = tokio::time::Instant::now() + keep_alive.unwrap_or(far);
    loop {
        conn.flush().await?;
        let room = conn.inflight.len() < INFLIGHT_MAX;
        let frame = tokio::select! {
            f = read_frame(&mut client_r, &mut buf, max) => f?,
            d = att.rx.recv(), if room => {
                let Some(d) = d else { return Err(Closed::TakenOver) };
                conn.deliver(d)?;
                // Whatever else is queued goes out in the same write.
                while conn.inflight.len() < INFLIGHT_MAX && conn.out.len() < 256 * 1024 {
                    match att.rx.try_recv() {
                        Ok(d) => conn.deliver(d)?,
                        Err(_) => break,
                    }
                }
                continue;
            }
            () = att.kick.notified() => {
                // Another connection took the client id over, or the client stopped
                // reading while its queue filled.
                return Err(if ctx.hub.is_current(client_id, att.id) { Closed::SlowConsumer } else { Closed::TakenOver });
            }
            () = tokio::time::sleep_until(silent_until) => return Err(Closed::KeepAlive),
            _ = recheck.tick() => {
                if crate::auth::principal_of_token(&ctx.app, &who.token).await.is_err() {
                    return Err(Closed::Revoked(who.principal.name.clone()));
                }
                continue;
            }
        };
        // The client closed the connection without a DISCONNECT: its will goes out.
        let Some(frame) = frame else { return Err(Closed::Gone) };
        silent_until = tokio::time::Instant::now() + keep_alive.unwrap_or(far);
        match parse(&frame, max)? {
            Packet::Publish(p) => {
                // The publisher, the only writer of the stream, does not come through the
                // gate; clients publish their own status report and nothing else.
                if let Err(why) = may_report(who, &p.topic, &p.payload) {
                    let name = format!("token {}", who.principal.name);
                    tracing::warn!(topic = %p.topic, who = %name, reason = %why, "MQTT publish refused; disconnecting the client");
                    return Err(Closed::Publish(name, p.topic));
                }
                let qos = p.qos;
                if qos == QoS::ExactlyOnce {
                    return Err(Closed::Protocol("QoS 2 is not served".into()));
                }
                ctx.hub.publish(hub::Message { topic: p.topic, payload: p.payload, retain: p.retain, qos }, false);
                if qos == QoS::AtLeastOnce {
                    conn.packet(Packet::PubAck(PubAck::new(p.pkid)))?;
                }
            }
            Packet::PubAck(ack) => conn.acked(ack.pkid),
            Packet::Subscribe(sub) => {
                let mut codes = Vec::with_capacity(sub.filters.len());
                let mut granted = Vec::new();
                for f in &sub.filters {
                    if may_subscribe(who, &f.path) && f.qos != QoS::ExactlyOnce {
                        let qos = f.qos;
                        codes.push(SubscribeReasonCode::Success(qos));
                        granted.push((f.path.clone(), qos));
                    } else {
                        tracing::warn!(filter = %f.path, "MQTT subscription refused by the ACL");
                        ctx.app.metrics.connection_closed("mqtt", "subscription_denied");
                        codes.push(SubscribeReasonCode::Failure);
                    }
                }
                // Before the subscription takes effect: from now on the publisher makes the
                // event messages (it skips them while nobody could receive them).
                if granted.iter().any(|(f, _)| names_events(f)) {
                    ctx.events_subscribed.store(true, Ordering::Release);
                }
                let retained = ctx.hub.subscribe(client_id, att.id, &granted);
                conn.packet(Packet::SubAck(SubAck::new(sub.pkid, codes)))?;
                for d in retained {
                    conn.deliver(d)?;
                }
            }
            Packet::Unsubscribe(u) => {
                ctx.hub.unsubscribe(client_id, att.id, &u.topics);
                conn.packet(Packet::UnsubAck(UnsubAck::new(u.pkid)))?;
            }
            Packet::PingReq => conn.packet(Packet::PingResp)?,
            Packet::Disconnect => return Ok(()),
            Packet::Connect(_) => return Err(Closed::Protocol("a second CONNECT".into())),
            other => return Err(Closed::Protocol(format!("unexpected {other:?} from a client"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(role: Role, service: Option<&str>) -> Who {
        Who {
            principal: Principal { token_id: "0".into(), name: "t".into(), role, service: service.map(str::to_owned) },
            token: Arc::new(Zeroizing::new(String::new())),
        }
    }

    #[test]
    fn a_scoped_token_reads_its_own_service_and_the_head_only() {
        let w = client(Role::ConfigRead, Some("stt"));
        for ok in
            ["system/config/stt", "system/config-events/stt", "system/config-head", "system/health/config-manager"]
        {
            assert!(may_subscribe(&w, ok), "{ok}");
        }
        for no in [
            "system/config/web",
            "system/config/+",
            "system/config/#",
            "system/#",
            "#",
            "+/config/stt",
            "system/config-events/+",
            "system/config/stt/#",
            "system/+/stt",
        ] {
            assert!(!may_subscribe(&w, no), "{no}");
        }
    }

    #[test]
    fn an_unscoped_reader_reads_every_service_but_no_wider_wildcard() {
        let w = client(Role::ConfigRead, None);
        for ok in [
            "system/config/web",
            "system/config/+",
            "system/config-events/+",
            "system/config-head",
            "system/config-staged/web",
            "system/config-staged/+",
        ] {
            assert!(may_subscribe(&w, ok), "{ok}");
        }
        for no in ["#", "system/#", "system/config/#", "system/config/a/b", "system/+"] {
            assert!(!may_subscribe(&w, no), "{no}");
        }
        let auditor = client(Role::AuditRead, None);
        assert!(may_subscribe(&auditor, "system/config-events/+"));
    }

    #[test]
    fn roles_without_configuration_read_only_head_and_health() {
        let w = client(Role::SecretsReveal, None);
        assert!(may_subscribe(&w, "system/config-head"));
        assert!(!may_subscribe(&w, "system/config/stt"));
    }

    #[test]
    fn a_client_publishes_only_its_own_services_status_report() {
        use confstore_core::fleet::Status;
        let report = |service: &str, instance: &str| Status::offline(service, instance, 1).to_json().into_bytes();
        let scoped = client(Role::ConfigRead, Some("stt"));
        assert_eq!(may_report(&scoped, "system/config-status/stt/pod-1", &report("stt", "pod-1")), Ok(()));
        for (topic, payload) in [
            ("system/config-status/web/pod-1", report("web", "pod-1")),
            ("system/config-status/stt/pod-1", report("stt", "pod-2")),
            ("system/config-status/stt/pod-1", b"{}".to_vec()),
            ("system/config-status/stt/+", report("stt", "pod-1")),
            ("system/config/stt", report("stt", "pod-1")),
            ("system/config-head", Vec::new()),
        ] {
            assert!(may_report(&scoped, topic, &payload).is_err(), "{topic}");
        }
        let unscoped = client(Role::ConfigRead, None);
        assert!(may_report(&unscoped, "system/config-status/web/a", &report("web", "a")).is_ok());
        assert!(!may_subscribe(&unscoped, "system/config-status/web/a"), "reports are the server's to read");
        let no_read = client(Role::SecretsReveal, Some("stt"));
        assert!(may_report(&no_read, "system/config-status/stt/a", &report("stt", "a")).is_err());
    }
}
