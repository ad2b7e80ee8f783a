//! The MQTT side: a persistent session on `system/config/<service>` (QoS 1), kept alive
//! across broker restarts, with messages acknowledged only after they were handled.
//!
//! Two tasks: the connection task polls rumqttc's event loop (and does nothing else, so it
//! never blocks on the client's own channels) and forwards each publish, in order, to the
//! processing task, which owns the [`Updater`] and acks each message once it is judged
//! and, if applied, persisted. The forwarding channel is unbounded, but the broker sends at
//! most its in-flight window of unacknowledged QoS 1 messages ahead of the acks.
//!
//! A connection on which the broker has no session for the client means messages may be
//! lost for good (a broker restarted without persistence forgets queued and retained
//! messages alike, and the store will not publish them again; on the first connection,
//! whatever was published since the start-up REST fetch): the processing task then catches
//! up over REST, retrying with backoff until REST answers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::error::ClientError;
use crate::stats::Counters;
use crate::updater::{Offer, Updater};

/// Largest incoming packet: a snapshot plus topic and headers.
const PACKET_BYTES_MAX: usize = crate::SNAPSHOT_BYTES_MAX + 64 * 1024;
/// Largest outgoing packet (the client only subscribes, acks and pings).
const OUTGOING_PACKET_BYTES_MAX: usize = 64 * 1024;
/// Requests (acks, subscribes) queued for the connection task; generous, so that an ack
/// never waits on a full channel.
const REQUEST_CHANNEL_CAPACITY: usize = 4096;
const KEEP_ALIVE: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CATCH_UP_RETRY_MIN: Duration = Duration::from_secs(1);
const CATCH_UP_RETRY_MAX: Duration = Duration::from_secs(30);

/// What the connection task hands to the processing task, in order.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A message on the subscribed topic.
    Publish(Publish),
    /// Connected, and the broker had no session for the client: messages meant for it
    /// may be gone.
    SessionLost,
}

/// A parsed `mqtt://host:port` or `mqtts://host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MqttUrl {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
}

impl MqttUrl {
    /// Accepts `mqtt://` (or `tcp://`, default port 1883) and `mqtts://` (or `ssl://`,
    /// default port 8883); IPv6 hosts in brackets.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or("expected mqtt://host:port or mqtts://host:port")?;
        let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" => (true, 8883),
            other => return Err(format!("unknown scheme {other:?}; use mqtt:// or mqtts://")),
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains(['/', '@', '?']) {
            return Err("expected only host[:port] after the scheme (credentials go to mqtt_credentials)".into());
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or("unclosed [ in IPv6 host")?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?,
            None => default_port,
        };
        Ok(Self { host: host.to_owned(), port, tls })
    }
}

/// The options to connect with, and the same without the status report's last will: a
/// broker whose ACL does not give the client its status topic refuses the CONNECT (`not
/// authorized`), and the client then connects without the will and makes no reports.
pub(crate) struct MqttPlan {
    pub(crate) options: MqttOptions,
    pub(crate) without_will: Option<MqttOptions>,
}

/// How to reach the broker.
pub(crate) struct MqttSettings {
    pub(crate) url: MqttUrl,
    pub(crate) client_id: String,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) ca_file: Option<PathBuf>,
    /// The `offline` status report, when the client reports its status.
    pub(crate) will: Option<rumqttc::LastWill>,
}

impl MqttSettings {
    /// rumqttc options for a persistent session with manual acks and large packets.
    pub(crate) fn options(&self) -> Result<MqttOptions, ClientError> {
        let mut options = MqttOptions::new(&self.client_id, &self.url.host, self.url.port);
        options
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_max_packet_size(PACKET_BYTES_MAX, OUTGOING_PACKET_BYTES_MAX)
            .set_keep_alive(KEEP_ALIVE);
        if let Some((user, pass)) = &self.credentials {
            options.set_credentials(user, pass);
        }
        if let Some(will) = &self.will {
            options.set_last_will(will.clone());
        }
        if self.url.tls {
            let config = tls_config(self.ca_file.as_deref())?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config))));
        }
        Ok(options)
    }
}

/// A ring-backed rustls config trusting `ca_file` (PEM) or else the webpki roots.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad = |why: String| ClientError::setting("mqtt_ca_file", format!("{}: {why}", path.display()));
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("no PEM certificate in it".into()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::setting("mqtt_url", format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A running connection: the client handle, what it forwards, its task.
pub(crate) struct Connection {
    pub(crate) client: AsyncClient,
    pub(crate) inbound: mpsc::UnboundedReceiver<Inbound>,
    pub(crate) task: JoinHandle<()>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Connection {
    /// Starts the connection task; it connects, subscribes to `topics` on every ConnAck and
    /// reconnects with backoff until `stop` changes or is dropped.
    pub(crate) fn start(
        plan: MqttPlan,
        topics: Vec<String>,
        counters: Arc<Counters>,
        stop: watch::Receiver<bool>,
        reporter: Option<Arc<crate::status::Reporter>>,
    ) -> Self {
        let (client, eventloop) = AsyncClient::new(plan.options, REQUEST_CHANNEL_CAPACITY);
        let (tx, inbound) = mpsc::unbounded_channel();
        let last_error = Arc::new(Mutex::new(None));
        let driver = Driver {
            client: client.clone(),
            topics,
            tx,
            counters,
            last_error: Arc::clone(&last_error),
            stop,
            without_will: plan.without_will,
            reporter,
        };
        let task = tokio::spawn(driver.run(eventloop));
        Self { client, inbound, task, last_error }
    }

    /// The last connection error, if the connection is down.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

struct Driver {
    client: AsyncClient,
    /// The service's snapshot topic, and the checkpoint topic when the transparency-log
    /// checks are on.
    topics: Vec<String>,
    tx: mpsc::UnboundedSender<Inbound>,
    counters: Arc<Counters>,
    last_error: Arc<Mutex<Option<String>>>,
    stop: watch::Receiver<bool>,
    /// The options without the will, until the broker has refused the will once.
    without_will: Option<MqttOptions>,
    reporter: Option<Arc<crate::status::Reporter>>,
}

impl Driver {
    async fn run(mut self, mut eventloop: EventLoop) {
        let mut backoff = BACKOFF_MIN;
        let mut connected_before = false;
        loop {
            let event = tokio::select! {
                biased;
                _ = self.stop.changed() => return,
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = BACKOFF_MIN;
                    if connected_before {
                        Counters::bump(&self.counters.reconnects);
                    }
                    connected_before = true;
                    if !ack.session_present && self.tx.send(Inbound::SessionLost).is_err() {
                        return;
                    }
                    *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    debug!(topics = ?self.topics, session_present = ack.session_present, "connected to the broker");
                    // Subscribe on every ConnAck: a broker that lost the session (restart
                    // without persistence) forgot the subscription. try_: never block the
                    // task that drains the request channel on that same channel.
                    for topic in &self.topics {
                        if let Err(e) = self.client.try_subscribe(topic.as_str(), QoS::AtLeastOnce) {
                            warn!(%topic, "cannot subscribe: {e}");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if self.tx.send(Inbound::Publish(publish)).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(rumqttc::ConnectReturnCode::NotAuthorized))
                    if self.without_will.is_some() =>
                {
                    // The broker may refuse the will's topic (Mosquitto checks it at
                    // CONNECT): ask again at once without it, and report nothing.
                    if let Some(options) = self.without_will.take() {
                        eventloop.mqtt_options = options;
                    }
                    if let Some(r) = &self.reporter {
                        r.disable();
                    }
                    warn!(
                        "the broker refused this client (not authorized) with its status report's last will; \
                         connecting without it: this instance makes no status reports (give it write access to \
                         system/config-status/<service>/+, see ops/mosquitto/confstore.acl, or set \
                         CONFSTORE_REPORT_STATUS=0)"
                    );
                }
                Err(e) => {
                    debug!(topics = ?self.topics, "mqtt connection: {e}; retrying in {backoff:?}");
                    *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                    tokio::select! {
                        biased;
                        _ = self.stop.changed() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// Handles one publish and then acknowledges it (after it was judged and, if applied,
/// persisted: a crash before the ack makes the broker send it again).
pub(crate) async fn process(updater: &mut Updater, client: &AsyncClient, publish: Publish) -> Offer {
    let offer = updater.on_message(&publish.topic, &publish.payload).await;
    if let Err(e) = client.ack(&publish).await {
        debug!("cannot ack a message: {e}");
    }
    offer
}

/// The processing task: everything forwarded, in order, until `stop`; catches up over
/// REST at once if `catch_up_now`.
pub(crate) async fn run_updates(
    mut updater: Updater,
    client: AsyncClient,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
    mut stop: watch::Receiver<bool>,
    catch_up_now: bool,
    reporter: Option<Arc<crate::status::Reporter>>,
) {
    let mut catch_up = CatchUp { due: catch_up_now.then(tokio::time::Instant::now), delay: CATCH_UP_RETRY_MIN };
    let mut last_report: Option<tokio::time::Instant> = None;
    loop {
        // What the instance holds now, if it changed (start-up, the last batch, a catch-up),
        // at most one report per REPORT_INTERVAL_MIN: a burst of versions makes one report.
        let mut report_due = None;
        if let Some(r) = reporter.as_ref().filter(|r| r.pending()) {
            let now = tokio::time::Instant::now();
            match last_report.map(|t| t + REPORT_INTERVAL_MIN).filter(|due| *due > now) {
                Some(due) => report_due = Some(due),
                None => {
                    r.publish_if_changed(&client);
                    last_report = Some(now);
                }
            }
        }
        let next = tokio::select! {
            biased;
            _ = stop.changed() => return,
            // A due catch-up first: a steady flow of messages must not put it off.
            () = catch_up.wait() => Some(Inbound::SessionLost),
            () = sleep_until(report_due) => continue,
            next = inbound.recv() => next,
        };
        match next {
            None => return,
            Some(Inbound::Publish(publish)) => {
                // This message and the ones already waiting behind it: each applied in
                // turn, the LKG file written once, then all acknowledged.
                updater.begin_batch();
                let mut batch = Vec::new();
                let mut next = Some(publish);
                while let Some(publish) = next.take() {
                    updater.on_message(&publish.topic, &publish.payload).await;
                    batch.push(publish);
                    if batch.len() < BATCH_MAX {
                        match inbound.try_recv() {
                            Ok(Inbound::Publish(p)) => next = Some(p),
                            // Handled after this batch, by the catch-up below.
                            Ok(Inbound::SessionLost) => catch_up.due = Some(tokio::time::Instant::now()),
                            Err(_) => {}
                        }
                    }
                }
                updater.end_batch().await;
                for publish in &batch {
                    if let Err(e) = client.ack(publish).await {
                        debug!("cannot ack a message: {e}");
                    }
                }
            }
            Some(Inbound::SessionLost) => {
                // A broker without the session may have lost the retained status report
                // too (the embedded broker after a restart of `serve`): report again.
                if let Some(r) = &reporter {
                    r.mark_dirty();
                }
                catch_up.run(&mut updater).await;
            }
        }
    }
}

/// Least time between two status reports of one client.
const REPORT_INTERVAL_MIN: Duration = Duration::from_millis(confstore_core::limits::STATUS_REPORT_INTERVAL_MIN_MS);

/// Sleeps until `at`, or for ever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Most messages applied before the LKG file is written and they are acknowledged.
const BATCH_MAX: usize = confstore_core::limits::CLIENT_UPDATE_BATCH_MAX;

/// A pending REST catch-up, retried with backoff until REST answers.
struct CatchUp {
    due: Option<tokio::time::Instant>,
    delay: Duration,
}

impl CatchUp {
    async fn wait(&self) {
        match self.due {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    async fn run(&mut self, updater: &mut Updater) {
        match updater.catch_up().await {
            Ok(()) => *self = Self { due: None, delay: CATCH_UP_RETRY_MIN },
            Err(e) => {
                warn!(
                    "messages may have been lost, and catching up over REST failed: {e}; retrying in {:?}",
                    self.delay
                );
                self.due = Some(tokio::time::Instant::now() + self.delay);
                self.delay = (self.delay * 2).min(CATCH_UP_RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(url: &str, expected: Result<(&str, u16, bool), &str>) {
        let got = MqttUrl::parse(url);
        match expected {
            Ok((host, port, tls)) => assert_eq!(got, Ok(MqttUrl { host: host.into(), port, tls })),
            Err(part) => assert!(got.as_ref().is_err_and(|e| e.contains(part)), "{url}: {got:?}"),
        }
    }

    #[test]
    fn urls() {
        check("mqtt://127.0.0.1:1884", Ok(("127.0.0.1", 1884, false)));
        check("mqtt://broker", Ok(("broker", 1883, false)));
        check("mqtts://broker.example/", Ok(("broker.example", 8883, true)));
        check("ssl://b:9", Ok(("b", 9, true)));
        check("mqtt://[::1]:1999", Ok(("::1", 1999, false)));
        check("http://b:1", Err("unknown scheme"));
        check("broker:1883", Err("expected mqtt://"));
        check("mqtt://u:p@b:1", Err("credentials"));
        check("mqtt://b:port", Err("bad port"));
        check("mqtt://:1883", Err("no host"));
    }

    #[test]
    fn options_are_a_persistent_session_with_manual_acks_and_big_packets() {
        let settings = MqttSettings {
            url: MqttUrl::parse("mqtt://127.0.0.1:1").unwrap(),
            client_id: "confstore-client-web".into(),
            credentials: Some(("u".into(), "p".into())),
            ca_file: None,
            will: None,
        };
        let o = settings.options().unwrap();
        assert!(!o.clean_session());
        assert!(o.manual_acks());
        assert!(o.max_packet_size() >= 2 * 1024 * 1024);
        assert_eq!(o.client_id(), "confstore-client-web");
        let tls = MqttSettings { url: MqttUrl::parse("mqtts://example.com").unwrap(), ..settings };
        assert!(tls.options().is_ok(), "webpki roots with the ring provider");
        let bad_ca = MqttSettings { ca_file: Some("/nonexistent/ca.pem".into()), ..tls };
        assert!(matches!(bad_ca.options(), Err(ClientError::InvalidSetting { setting: "mqtt_ca_file", .. })));
    }
}
