//! The embedded MQTT broker `serve` starts when no `--mqtt-url` is given, so the whole flow
//! works out of the box on one machine.
//!
//! Two parts (ADR 0019): rumqttd does the MQTT work (sessions, retained messages, QoS 1) on
//! an internal loopback port that accepts only two random credentials drawn at start, the
//! gate's and the publisher's; the [`gate`](super::gate) owns the public address: it
//! authenticates every client (a confstore token as the MQTT password), enforces the topic
//! ACL of `ops/mosquitto/confstore.acl`, reserves the publisher's client id and bounds
//! connections. rumqttd has connection authentication but no topic ACL, hence the gate.
//!
//! The publisher, in this process, connects to rumqttd's internal port itself, not through
//! the gate (docs/adr/0020, "the embedded broker's share"): relaying its messages cost two
//! more socket hops per message. Since the gate lets no client publish, the publisher is
//! the only writer of the embedded broker, so it does not watch its retained topics for
//! forgeries there ([`MqttSettings::watch_retained`] is off). Retained messages live in
//! memory only; the publisher restores them after a restart.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::settings::{EventsTopic, MAX_PACKET_BYTES, MqttSettings};

/// The user name the publisher uses at rumqttd.
pub const PUBLISHER_USER: &str = "confstore-publisher";
/// The user name the gate uses at rumqttd.
const GATE_USER: &str = "confstore-gate";

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Something else listens there.
    #[error(
        "cannot start the embedded MQTT broker on {addr}: {why}. Another broker probably runs there: \
         use it with --mqtt-url mqtt://{addr}, or give the embedded one another address with \
         --mqtt-listen, or run without the live stream with --no-mqtt"
    )]
    AddressInUse {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        why: std::io::Error,
    },
    /// The internal broker did not come up.
    #[error("the embedded MQTT broker did not start on {0} within 5 s")]
    NotListening(SocketAddr),
    /// No randomness for the internal credentials, or no thread.
    #[error("cannot start the embedded MQTT broker: {0}")]
    Setup(String),
}

/// A started embedded broker: rumqttd running on its internal port, and the public
/// listener bound, waiting for [`Embedded::run`] (the gate) on the server's runtime.
#[derive(Debug)]
pub struct Embedded {
    pub(super) public: TcpListener,
    pub(super) upstream: SocketAddr,
    pub(super) gate_login: (String, Zeroizing<String>),
    publisher_login: (String, Zeroizing<String>),
    pub(super) publisher_client_id: String,
    /// Set by the gate when a client subscribes to an events topic.
    pub(super) events_subscribed: Arc<AtomicBool>,
}

impl Embedded {
    /// Starts rumqttd on a free loopback port, binds `listen` for the gate, and draws the
    /// publisher's credentials. `publisher_client_id` is reserved for the publisher.
    pub fn start(listen: SocketAddr, publisher_client_id: &str) -> Result<Self, BrokerError> {
        let public = TcpListener::bind(listen).map_err(|why| BrokerError::AddressInUse { addr: listen, why })?;
        public.set_nonblocking(true).map_err(|e| BrokerError::Setup(e.to_string()))?;
        let gate_login = (GATE_USER.to_owned(), random_secret()?);
        let publisher_login = (PUBLISHER_USER.to_owned(), random_secret()?);
        let upstream = start_rumqttd(&[&gate_login, &publisher_login])?;
        Ok(Self {
            public,
            upstream,
            gate_login,
            publisher_login,
            publisher_client_id: publisher_client_id.to_owned(),
            events_subscribed: Arc::default(),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.public.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// How the publisher reaches this broker: rumqttd's internal port with its own
    /// credentials and the reserved client id, not watching its retained topics (it is the
    /// only writer here), publishing events once a client subscribed to them.
    pub fn publisher_settings(&self) -> MqttSettings {
        let mut s = MqttSettings::plain(self.upstream, self.publisher_client_id.clone());
        s.credentials = Some(self.publisher_login.clone());
        s.watch_retained = false;
        s.events = EventsTopic::WhenSubscribed(Arc::clone(&self.events_subscribed));
        s
    }
}

fn random_secret() -> Result<Zeroizing<String>, BrokerError> {
    let mut b = Zeroizing::new([0u8; 32]);
    getrandom::fill(b.as_mut()).map_err(|e| BrokerError::Setup(format!("the random source failed: {e}")))?;
    Ok(Zeroizing::new(hex::encode(b.as_ref())))
}

/// Runs rumqttd on a free loopback port that accepts only `logins`, in its own threads
/// until the process ends, and waits until it accepts connections.
fn start_rumqttd(logins: &[&(String, Zeroizing<String>)]) -> Result<SocketAddr, BrokerError> {
    // A free port: bind, note, release. Another process could take it in between; then
    // rumqttd fails and the wait below says so.
    let addr = TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| BrokerError::Setup(format!("no free loopback port: {e}")))?;
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 5000,
        max_payload_size: MAX_PACKET_BYTES,
        max_inflight_count: 1000,
        // Only the gate and the publisher may connect: a local user who finds this port
        // cannot log in.
        auth: Some(
            logins.iter().map(|(user, pass)| (user.clone(), pass.as_str().to_owned())).collect::<HashMap<_, _>>(),
        ),
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "confstore-embedded".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            // Above the gate's cap (limits::MQTT_CONNECTIONS_MAX): the gate refuses first,
            // with a clear CONNACK.
            max_connections: confstore_core::limits::MQTT_CONNECTIONS_MAX + 16,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "the embedded MQTT broker stopped");
            }
        })
        .map_err(|e| BrokerError::Setup(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(addr);
        }
        // Polling a port rumqttd binds on its own thread, with a deadline: it offers no
        // readiness signal.
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotListening(addr))
}
