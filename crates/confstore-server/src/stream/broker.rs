//! The embedded MQTT broker (rumqttd) `serve` starts when no `--mqtt-url` is given, so the
//! whole flow works out of the box on one machine. It listens on loopback by default,
//! keeps retained messages in memory only, and accepts anonymous clients: for production
//! use an external broker with the ACL in `ops/mosquitto.conf` (docs/operations.md).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::settings::MAX_PACKET_BYTES;

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
    /// The broker did not come up.
    #[error("the embedded MQTT broker did not start on {0} within 5 s")]
    NotListening(SocketAddr),
}

/// Starts the broker on `addr` in its own threads and waits until it accepts connections.
/// It runs until the process ends.
pub fn start(addr: SocketAddr) -> Result<(), BrokerError> {
    // rumqttd reports a failed bind only in its log, from another thread: check first.
    TcpListener::bind(addr).map_err(|why| BrokerError::AddressInUse { addr, why })?;
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 5000,
        max_payload_size: MAX_PACKET_BYTES,
        max_inflight_count: 1000,
        auth: None,
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
            max_connections: 10_000,
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
        .map_err(|why| BrokerError::AddressInUse { addr, why })?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            tracing::info!(%addr, "embedded MQTT broker listening");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotListening(addr))
}
