//! Helpers for the integration tests: signed snapshots and a fake REST server (shared with
//! the unit tests), a Mosquitto broker of our own, a publisher, and waiting on conditions.
#![allow(dead_code)]

#[path = "../../src/testutil.rs"]
pub mod testutil;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confstore_client::Config;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::time::Instant;

/// Waits for `cond`, checking every 10 ms, failing after 10 s.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An `on_update` that logs `(generation, changed_epoch)` of each applied version.
pub fn applied_log() -> (Arc<Mutex<Vec<u64>>>, impl Fn(&Config) + Send + Sync + 'static) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&log);
    (log, move |c: &Config| seen.lock().unwrap().push(c.version().changed_epoch))
}

/// A Mosquitto of our own on a free port (never 1883), killed on drop.
pub struct Broker {
    pub port: u16,
    /// With [`Broker::start_tls`]: the TLS port and the CA that signed its certificate.
    pub tls: Option<(u16, PathBuf)>,
    conf: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Broker {
    pub fn start() -> Self {
        Self::with_tls(false)
    }

    /// Also listens with TLS (certificate for `localhost` from a fresh test CA).
    pub fn start_tls() -> Self {
        Self::with_tls(true)
    }

    fn with_tls(tls: bool) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        let mut text = format!("allow_anonymous true\npersistence false\nlog_dest none\nlistener {port} 127.0.0.1\n");
        let tls = tls.then(|| {
            let tls_port = free_port();
            let ca = make_certificates(dir.path());
            let d = dir.path().display();
            text += &format!(
                "listener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n"
            );
            (tls_port, ca)
        });
        std::fs::write(&conf, text).unwrap();
        let child = spawn(&conf, port);
        Self { port, tls, conf, child, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops the broker; it forgets retained messages and sessions (no persistence).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(&self.conf, self.port);
    }
}

fn spawn(conf: &PathBuf, port: u16) -> Child {
    let mut child = Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto is installed at /usr/sbin/mosquitto");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("mosquitto -c {} exited: {status}", conf.display());
        }
        assert!(std::time::Instant::now() < deadline, "mosquitto did not listen on {port}");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An MQTT publisher (what the store, or an attacker with publish rights, does).
pub struct Publisher {
    client: AsyncClient,
    acked: Arc<AtomicU64>,
    sent: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub async fn connect(broker: &Broker, id: &str) -> Self {
        let mut options = MqttOptions::new(id, "127.0.0.1", broker.port);
        options.set_max_packet_size(8 * 1024 * 1024, 8 * 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let acked = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&acked);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Self { client, acked, sent: 0, task }
    }

    /// Publishes QoS 1 and waits for the broker's PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client.publish(topic, QoS::AtLeastOnce, retain, payload).await.unwrap();
        self.sent += 1;
        let (acked, sent) = (Arc::clone(&self.acked), self.sent);
        wait_until("the broker's puback", || acked.load(Ordering::SeqCst) >= sent).await;
    }

    /// Publishes a snapshot JWS on `system/config/<service>`, retained, as the store does.
    pub async fn snapshot(&mut self, service: &str, jws: &serde_json::Value) {
        self.publish(&format!("system/config/{service}"), jws.to_string().into_bytes(), true).await;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// The test CA and server certificate, shared with the workspace's end-to-end tests.
#[path = "certs.rs"]
mod certs;
use certs::make_certificates;
