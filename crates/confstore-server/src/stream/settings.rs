//! How the publisher reaches its broker: `mqtt://HOST:PORT` or `mqtts://HOST:PORT`, with
//! optional credentials and CA file, turned into rumqttc options with the settings the
//! design facts of docs/testing.md ask for (persistent session, large packets, a last will).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

/// Largest MQTT packet the publisher sends or accepts: snapshots of 1 MiB and more must
/// flow (rumqttc's default is 10 KiB).
pub const MAX_PACKET_BYTES: usize = confstore_core::limits::MQTT_PACKET_BYTES_MAX;

/// Where and how to connect.
#[derive(Clone)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Whether to use TLS (`mqtts://`).
    pub tls: bool,
    /// Username and password.
    pub credentials: Option<(String, zeroize::Zeroizing<String>)>,
    /// CA certificates (PEM) to trust instead of the web PKI roots, for TLS.
    pub ca_file: Option<PathBuf>,
    /// Fixed client id: with clean session off, the broker keeps the session across reconnects.
    pub client_id: String,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Whether the publisher subscribes to its own retained topics to put back a snapshot or
    /// head someone else deleted or replaced. On for an external broker (its ACL is not
    /// ours); off for the embedded one, where the gate lets no one else publish.
    pub watch_retained: bool,
    /// When the events topic (`system/config-events/<service>`) is published.
    pub events: EventsTopic,
    /// The embedded broker's hub, when this is the embedded broker: the publisher and the
    /// fleet view use it in process instead of a connection (docs/adr/0032).
    pub hub: Option<super::hub::Hub>,
}

/// When the publisher publishes each event on `system/config-events/<service>`.
#[derive(Clone, Debug)]
pub enum EventsTopic {
    /// Always: an external broker, whose subscriptions the server cannot see.
    Always,
    /// Once a client has subscribed to an events topic since the server started (the
    /// embedded broker's gate sees every SUBSCRIBE and sets the flag; it stays set, since a
    /// persistent session keeps its subscription while away). Until then nobody could
    /// receive the messages, so they are not made (docs/adr/0020).
    WhenSubscribed(std::sync::Arc<std::sync::atomic::AtomicBool>),
}

impl EventsTopic {
    /// Whether event messages are wanted now.
    pub fn wanted(&self) -> bool {
        match self {
            Self::Always => true,
            Self::WhenSubscribed(flag) => flag.load(std::sync::atomic::Ordering::Acquire),
        }
    }
}

impl std::fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSettings")
            .field("url", &self.url())
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .field("password", &self.credentials.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// A bad `--mqtt-url` or TLS setting.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Not `mqtt://HOST:PORT` or `mqtts://HOST:PORT`.
    #[error("{0:?} is not an MQTT URL: expected mqtt://HOST:PORT or mqtts://HOST:PORT")]
    Url(String),
    /// The CA file cannot be read or holds no certificate.
    #[error("cannot use the MQTT CA file {path}: {why}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

impl MqttSettings {
    /// Parses `mqtt://HOST[:PORT]` (default port 1883) or `mqtts://HOST[:PORT]` (8883).
    pub fn from_url(url: &str, client_id: String) -> Result<Self, SettingsError> {
        let bad = || SettingsError::Url(url.to_owned());
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err(bad());
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains(['/', '@', '?', '#']) {
            return Err(bad());
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port_text) = if let Some(v6) = rest.strip_prefix('[') {
            // An IPv6 literal: [::1] or [::1]:1883
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            (host, after.strip_prefix(':').or(if after.is_empty() { None } else { Some("x") }))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let port = match port_text {
            Some(p) => p.parse::<u16>().map_err(|_| bad())?,
            None => default_port,
        };
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        let mut s = Self::plain(std::net::SocketAddr::from(([127, 0, 0, 1], port)), client_id);
        s.host = host.to_owned();
        s.tls = tls;
        Ok(s)
    }

    /// Plain MQTT to `addr`, no credentials, watching the retained topics.
    pub fn plain(addr: std::net::SocketAddr, client_id: String) -> Self {
        Self {
            host: addr.ip().to_string(),
            port: addr.port(),
            tls: false,
            credentials: None,
            ca_file: None,
            client_id,
            keep_alive: Duration::from_secs(5),
            watch_retained: true,
            events: EventsTopic::Always,
            hub: None,
        }
    }

    /// The URL, without credentials.
    pub fn url(&self) -> String {
        format!("{}://{}:{}", if self.tls { "mqtts" } else { "mqtt" }, self.host, self.port)
    }

    /// rumqttc options: clean session off with the fixed client id, large packets, keep-alive,
    /// credentials, TLS, and `will` as the last will (retained).
    pub fn options(&self, will: Option<(&str, Vec<u8>)>) -> Result<MqttOptions, SettingsError> {
        let mut o = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        o.set_clean_session(false);
        o.set_keep_alive(self.keep_alive);
        o.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        if let Some((user, pass)) = &self.credentials {
            o.set_credentials(user.clone(), pass.as_str());
        }
        if let Some((topic, payload)) = will {
            o.set_last_will(LastWill::new(topic, payload, QoS::AtLeastOnce, true));
        }
        if self.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(self.tls_config()?))));
        }
        Ok(o)
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, SettingsError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let err = |why: String| SettingsError::CaFile { path: path.clone(), why };
                let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
                let mut added = 0;
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    roots.add(cert.map_err(|e| err(e.to_string()))?).map_err(|e| err(e.to_string()))?;
                    added += 1;
                }
                if added == 0 {
                    return Err(err("no PEM certificate in it".into()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| SettingsError::CaFile { path: PathBuf::new(), why: e.to_string() })?;
        Ok(builder.with_root_certificates(roots).with_no_client_auth())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let s = MqttSettings::from_url("mqtt://127.0.0.1:1884", "c".into()).unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls), ("127.0.0.1", 1884, false));
        let s = MqttSettings::from_url("mqtts://broker.example", "c".into()).unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls), ("broker.example", 8883, true));
        assert_eq!(MqttSettings::from_url("mqtt://[::1]:1883", "c".into()).unwrap().host, "::1");
        for bad in ["http://x:1", "mqtt://", "mqtt://h:notaport", "mqtt://u:p@h:1", "mqtt://h:0", "mqtt://h/x"] {
            assert!(MqttSettings::from_url(bad, "c".into()).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_is_not_in_debug_output() {
        let mut s = MqttSettings::from_url("mqtt://h:1", "c".into()).unwrap();
        s.credentials = Some(("confstore".into(), zeroize::Zeroizing::new("hunter2".into())));
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
