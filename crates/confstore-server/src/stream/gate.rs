//! The gate of the embedded broker: the public MQTT listener in front of rumqttd (ADR 0019).
//!
//! Per client connection it reads the CONNECT (within
//! [`limits::MQTT_CONNECT_TIMEOUT_SECS`](confstore_core::limits::MQTT_CONNECT_TIMEOUT_SECS)),
//! decides who it is, then relays packets both ways, checking what the client sends:
//!
//! - **Who**: a client whose MQTT password is a valid confstore token (any user name).
//!   Anonymous clients, unknown or revoked tokens are refused (CONNACK "not authorized"); a
//!   revoked token's open connection is closed within [`RECHECK_INTERVAL`]. (The publisher
//!   does not come through the gate: it logs in at rumqttd's internal port itself.)
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
//!   [`limits::MQTT_CLIENT_PACKET_BYTES_MAX`](confstore_core::limits::MQTT_CLIENT_PACKET_BYTES_MAX).
//!
//! The same rules as `ops/mosquitto/confstore.acl`, for the broker that ships in the binary.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use confstore_core::auth::Role;
use confstore_core::limits;
use confstore_core::stream as topics;
use rumqttc::mqttbytes::{self, PacketType};
use rumqttc::{ConnAck, ConnectReturnCode, Login, Packet, SubAck, SubscribeReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use zeroize::Zeroizing;

use super::broker::Embedded;
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
    upstream: SocketAddr,
    gate_login: (String, Zeroizing<String>),
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
        let ctx = Arc::new(Ctx {
            app,
            upstream: self.upstream,
            gate_login: self.gate_login,
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
                tokio::spawn(refuse(stream, ConnectReturnCode::ServiceUnavailable));
                continue;
            }
            let n = ctx.open.fetch_add(1, Ordering::AcqRel) + 1;
            ctx.app.metrics.open_connections("mqtt", n);
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move {
                if let Err(why) = relay(&ctx, stream).await {
                    tracing::debug!(reason = why.metric(), detail = %why, "MQTT client connection closed by the gate");
                    ctx.app.metrics.connection_closed("mqtt", why.metric());
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
    #[error("the internal broker is unreachable: {0}")]
    Upstream(std::io::Error),
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
            Closed::Upstream(_) => "upstream_error",
            Closed::Io(_) => "io",
        }
    }
}

/// Answers a CONNACK refusal and closes.
async fn refuse(mut stream: TcpStream, code: ConnectReturnCode) {
    let mut buf = BytesMut::new();
    if Packet::ConnAck(ConnAck { session_present: false, code }).write(&mut buf, 16).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.write_all(&buf).await;
            let _ = stream.shutdown().await;
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

fn packet_type(frame: &BytesMut) -> Option<PacketType> {
    mqttbytes::check(frame.iter(), usize::MAX).ok().and_then(|h| h.packet_type().ok())
}

/// Serves one client connection: CONNECT, then the relay, until either side ends.
async fn relay(ctx: &Arc<Ctx>, stream: TcpStream) -> Result<(), Closed> {
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
    let Packet::Connect(mut connect) =
        parse(&frame, limits::MQTT_CLIENT_PACKET_BYTES_MAX).map_err(|_| Closed::NotConnect)?
    else {
        return Err(Closed::NotConnect);
    };
    let who = match identify(ctx, &connect).await {
        Ok(w) => w,
        Err((code, why)) => {
            let mut out = BytesMut::new();
            let _ = Packet::ConnAck(ConnAck { session_present: false, code }).write(&mut out, 16);
            let _ = client_w.write_all(&out).await;
            let _ = client_w.shutdown().await;
            tracing::warn!(client_id = %connect.client_id, why, "MQTT client refused");
            return Err(Closed::NotAuthorized(why));
        }
    };
    let upstream = TcpStream::connect(ctx.upstream).await.map_err(Closed::Upstream)?;
    let _ = upstream.set_nodelay(true);
    let (up_r, mut up_w) = upstream.into_split();
    connect.login = Some(Login::new(ctx.gate_login.0.clone(), ctx.gate_login.1.as_str()));
    let mut out = BytesMut::new();
    Packet::Connect(connect).write(&mut out, MAX_PACKET_BYTES).map_err(|e| Closed::Protocol(e.to_string()))?;
    up_w.write_all(&out).await.map_err(Closed::Upstream)?;

    let client_w = Arc::new(tokio::sync::Mutex::new(client_w));
    let rewrites: Arc<Mutex<HashMap<u16, Vec<usize>>>> = Arc::default();
    let mut down = tokio::spawn(downstream(up_r, Arc::clone(&client_w), Arc::clone(&rewrites)));
    // Either side ending ends the relay (rumqttd closes a client on a keep-alive timeout or
    // a client-id takeover; the client may simply go).
    let result = tokio::select! {
        r = upstream_loop(ctx, &who, client_r, buf, up_w, &client_w, &rewrites) => r,
        d = &mut down => d.unwrap_or(Ok(())),
    };
    down.abort();
    let mut w = client_w.lock().await;
    let _ = w.shutdown().await;
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

/// Client → rumqttd: checks each packet, forwards what passes.
#[allow(clippy::too_many_arguments)]
async fn upstream_loop(
    ctx: &Ctx,
    who: &Who,
    mut client_r: OwnedReadHalf,
    mut buf: BytesMut,
    mut up_w: OwnedWriteHalf,
    client_w: &tokio::sync::Mutex<OwnedWriteHalf>,
    rewrites: &Mutex<HashMap<u16, Vec<usize>>>,
) -> Result<(), Closed> {
    let max = limits::MQTT_CLIENT_PACKET_BYTES_MAX;
    let mut recheck = tokio::time::interval(RECHECK_INTERVAL);
    recheck.tick().await;
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut client_r, &mut buf, max) => f?,
            _ = recheck.tick() => {
                if crate::auth::principal_of_token(&ctx.app, &who.token).await.is_err() {
                    return Err(Closed::Revoked(who.principal.name.clone()));
                }
                continue;
            }
        };
        let Some(frame) = frame else { return Ok(()) };
        match packet_type(&frame) {
            Some(PacketType::Publish) => {
                let (topic, payload) = match parse(&frame, max)? {
                    Packet::Publish(p) => (p.topic, p.payload),
                    _ => (String::new(), bytes::Bytes::new()),
                };
                // The publisher, the only writer of the stream, does not come through the
                // gate; clients publish their own status report and nothing else.
                if let Err(why) = may_report(who, &topic, &payload) {
                    let name = format!("token {}", who.principal.name);
                    tracing::warn!(topic = %topic, who = %name, reason = %why, "MQTT publish refused; disconnecting the client");
                    return Err(Closed::Publish(name, topic));
                }
                up_w.write_all(&frame).await?;
            }
            Some(PacketType::Subscribe) => {
                let Packet::Subscribe(mut sub) = parse(&frame, max)? else {
                    return Err(Closed::Protocol("bad SUBSCRIBE".into()));
                };
                let denied: Vec<usize> = sub
                    .filters
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| !may_subscribe(who, &f.path))
                    .map(|(i, _)| i)
                    .collect();
                // Before the SUBSCRIBE reaches rumqttd: from now on the publisher makes the
                // event messages (it skips them while nobody could receive them).
                if sub.filters.iter().enumerate().any(|(i, f)| !denied.contains(&i) && names_events(&f.path)) {
                    ctx.events_subscribed.store(true, Ordering::Release);
                }
                if denied.is_empty() {
                    up_w.write_all(&frame).await?;
                    continue;
                }
                for i in &denied {
                    tracing::warn!(filter = %sub.filters[*i].path, "MQTT subscription refused by the ACL");
                    ctx.app.metrics.connection_closed("mqtt", "subscription_denied");
                }
                if denied.len() == sub.filters.len() {
                    let ack = SubAck::new(sub.pkid, vec![SubscribeReasonCode::Failure; denied.len()]);
                    let mut out = BytesMut::new();
                    Packet::SubAck(ack).write(&mut out, max).map_err(|e| Closed::Protocol(e.to_string()))?;
                    client_w.lock().await.write_all(&out).await?;
                    continue;
                }
                if let Ok(mut r) = rewrites.lock() {
                    r.insert(sub.pkid, denied.clone());
                }
                let mut i = 0;
                sub.filters.retain(|_| {
                    let keep = !denied.contains(&i);
                    i += 1;
                    keep
                });
                let mut out = BytesMut::new();
                Packet::Subscribe(sub).write(&mut out, max).map_err(|e| Closed::Protocol(e.to_string()))?;
                up_w.write_all(&out).await?;
            }
            Some(PacketType::Connect) => return Err(Closed::Protocol("a second CONNECT".into())),
            Some(_) => up_w.write_all(&frame).await?,
            None => return Err(Closed::Protocol("unknown packet type".into())),
        }
    }
}

/// rumqttd → client: forwards every frame, putting the refused filters' failure codes back
/// into a SUBACK whose SUBSCRIBE the gate trimmed.
async fn downstream(
    mut up_r: OwnedReadHalf,
    client_w: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    rewrites: Arc<Mutex<HashMap<u16, Vec<usize>>>>,
) -> Result<(), Closed> {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // rumqttd's own bound on what it sends (the publisher's packets, relayed).
    let max = MAX_PACKET_BYTES + 1024;
    while let Some(frame) = read_frame(&mut up_r, &mut buf, max).await? {
        let pending = rewrites.lock().map(|r| !r.is_empty()).unwrap_or(false);
        if pending
            && packet_type(&frame) == Some(PacketType::SubAck)
            && let Packet::SubAck(mut ack) = parse(&frame, max)?
            && let Some(denied) = rewrites.lock().ok().and_then(|mut r| r.remove(&ack.pkid))
        {
            for i in denied {
                let at = i.min(ack.return_codes.len());
                ack.return_codes.insert(at, SubscribeReasonCode::Failure);
            }
            let mut out = BytesMut::new();
            Packet::SubAck(ack).write(&mut out, max).map_err(|e| Closed::Protocol(e.to_string()))?;
            client_w.lock().await.write_all(&out).await?;
            continue;
        }
        client_w.lock().await.write_all(&frame).await?;
    }
    Ok(())
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
