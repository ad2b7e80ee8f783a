//! The embedded MQTT broker `serve` starts when no `--mqtt-url` is given, so the whole flow
//! works out of the box on one machine.
//!
//! Two parts in this process (docs/adr/0032, which replaced rumqttd behind a relaying gate,
//! ADR 0019): the [`hub`](super::hub) holds sessions, subscriptions and retained messages
//! and fans each message out; the [`gate`](super::gate) owns the public address and speaks
//! MQTT 3.1.1 to clients: it authenticates every client (a confstore token as the MQTT
//! password), enforces the topic ACL of `ops/mosquitto/confstore.acl`, reserves the
//! publisher's client id and bounds connections. The publisher and the fleet view use the
//! hub directly, with no socket. Since the gate lets no client publish anything but its
//! own status report, the publisher is the only writer of the stream's topics, so it does
//! not watch its retained topics for forgeries here ([`MqttSettings::watch_retained`] is
//! off). Retained messages live in memory only; the publisher restores them after a
//! restart.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::hub::Hub;
use super::settings::{EventsTopic, MqttSettings};

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
    /// The listener could not be set up.
    #[error("cannot start the embedded MQTT broker: {0}")]
    Setup(String),
}

/// A started embedded broker: the hub, and the public listener bound, waiting for
/// [`Embedded::run`] (the gate) on the server's runtime.
#[derive(Debug)]
pub struct Embedded {
    pub(super) public: TcpListener,
    pub(super) hub: Hub,
    pub(super) publisher_client_id: String,
    /// Set by the gate when a client subscribes to an events topic.
    pub(super) events_subscribed: Arc<AtomicBool>,
}

impl Embedded {
    /// Binds `listen` for the gate and makes an empty hub. `publisher_client_id` is reserved
    /// for the publisher.
    pub fn start(listen: SocketAddr, publisher_client_id: &str) -> Result<Self, BrokerError> {
        let public = TcpListener::bind(listen).map_err(|why| BrokerError::AddressInUse { addr: listen, why })?;
        public.set_nonblocking(true).map_err(|e| BrokerError::Setup(e.to_string()))?;
        Ok(Self {
            public,
            hub: Hub::new(),
            publisher_client_id: publisher_client_id.to_owned(),
            events_subscribed: Arc::default(),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.public.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// How the publisher (and the fleet view) reach this broker: its hub, in process, not
    /// watching the retained topics (the publisher is the only writer here), publishing
    /// events once a client subscribed to them.
    pub fn publisher_settings(&self) -> MqttSettings {
        let mut s = MqttSettings::plain(self.addr(), self.publisher_client_id.clone());
        s.hub = Some(self.hub.clone());
        s.watch_retained = false;
        s.events = EventsTopic::WhenSubscribed(Arc::clone(&self.events_subscribed));
        s
    }
}
