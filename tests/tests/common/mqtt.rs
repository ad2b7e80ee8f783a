//! Live-stream test helpers: a real Mosquitto the test starts on a free loopback port (and
//! stops, restarts, with or without persistence), a TCP proxy whose connections a test can
//! cut (a client's connection drop, without touching the broker), and a raw MQTT
//! subscriber/publisher (rumqttc) for capturing and injecting messages.
#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{free_port, poll_until};

/// The test CA and server certificate (openssl), shared with the client library's tests.
#[path = "../../../crates/confstore-client/tests/common/certs.rs"]
pub mod certs;

/// The mosquitto binary (Debian installs it in /usr/sbin, often not on PATH).
pub fn mosquitto_bin() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("mosquitto")
}

/// A Mosquitto broker on 127.0.0.1:`port`, killed when dropped.
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    /// Its port (kept across restarts).
    pub port: u16,
    dir: PathBuf,
    /// Extra configuration lines (ACL, passwords).
    extra: String,
    /// Whether retained messages and sessions survive a restart.
    pub persistence: bool,
}

impl Broker {
    /// Starts a broker with anonymous access and persistence on, its files in `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, true, "allow_anonymous true\n")
    }

    /// Starts a broker with `extra` config lines (must say `allow_anonymous`).
    pub fn start_with(dir: &Path, persistence: bool, extra: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut b = Self { child: None, port: free_port(), dir: dir.to_owned(), extra: extra.to_owned(), persistence };
        b.launch();
        b
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn launch(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        // `user root`: as root, mosquitto would drop to its own user and then fail to save
        // its persistence file in the test's directory (without it, a "persistent" restart
        // silently loses everything). No effect when not run as root.
        let mut text = format!(
            "user root\nlistener {} 127.0.0.1\nmessage_size_limit 16777216\nmax_queued_messages 100000\nmax_inflight_messages 1000\n{}",
            self.port, self.extra
        );
        if self.persistence {
            text.push_str(&format!(
                "persistence true\npersistence_location {}/\nautosave_interval 1\n",
                self.dir.display()
            ));
        } else {
            text.push_str("persistence false\n");
        }
        std::fs::write(&conf, text).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("mosquitto.log")).unwrap();
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting mosquitto (install it: apt-get install mosquitto): {e}"));
        self.child = Some(child);
        let addr = self.addr();
        poll_until("mosquitto to listen", Duration::from_secs(20), Duration::from_millis(20), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        });
    }

    /// Stops the broker: SIGTERM (it saves its persistence file) and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, with persistence on or off this time.
    pub fn restart(&mut self, persistence: bool) {
        self.stop();
        if !persistence {
            let _ = std::fs::remove_file(self.dir.join("mosquitto.db"));
        }
        self.persistence = persistence;
        self.launch();
    }

    /// Starts it again after [`Self::stop`].
    pub fn start_again(&mut self) {
        self.launch();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A TCP proxy from a free local port to `target`. [`Proxy::cut`] closes every connection
/// it carries (the client sees its connection drop; the broker sees a client vanish);
/// [`Proxy::hold`] also refuses new ones until [`Proxy::release`] (a client partitioned
/// from the broker for a while).
#[derive(Debug, Clone)]
pub struct Proxy {
    /// Where clients connect.
    pub port: u16,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    cuts: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
}

impl Proxy {
    /// Starts forwarding (threads; they end with the test process).
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = Self { port, conns: Arc::default(), cuts: Arc::default(), stopped: Arc::default() };
        let conns = Arc::clone(&p.conns);
        let stopped = Arc::clone(&p.stopped);
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                if stopped.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(target) else { continue };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                {
                    let mut c = conns.lock().unwrap();
                    c.push(inbound.try_clone().unwrap());
                    c.push(outbound.try_clone().unwrap());
                }
                let (mut a, mut b) = (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Both);
                });
                let (mut a, mut b) = (outbound, inbound);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        p
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Closes every connection through the proxy; new ones are accepted again at once.
    pub fn cut(&self) {
        let mut c = self.conns.lock().unwrap();
        for s in c.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }

    /// Cuts every connection and refuses new ones until [`Self::release`].
    pub fn hold(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.cut();
    }

    /// Accepts connections again.
    pub fn release(&self) {
        self.stopped.store(false, Ordering::SeqCst);
    }
}

/// One captured message.
#[derive(Clone, Debug)]
pub struct Captured {
    /// Topic.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Whether the broker flagged it retained (a new subscriber's copy).
    pub retain: bool,
}

/// A raw MQTT client on its own thread (rumqttc's sync client): records every message on
/// the topics it subscribes to, and publishes what a test tells it to (an attacker, or a
/// baseline publisher for the latency benchmark).
pub struct RawClient {
    client: rumqttc::Client,
    /// Everything received, in order.
    pub received: Arc<Mutex<Vec<Captured>>>,
    connected: Arc<AtomicBool>,
}

impl RawClient {
    /// Connects (clean session) to 127.0.0.1:`port` with an optional user/password and
    /// subscribes to `filters` with QoS 1.
    pub fn connect(port: u16, id: &str, credentials: Option<(&str, &str)>, filters: &[&str]) -> Self {
        let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        o.set_max_packet_size(16 << 20, 16 << 20);
        o.set_keep_alive(Duration::from_secs(5));
        if let Some((u, p)) = credentials {
            o.set_credentials(u, p);
        }
        let (client, mut connection) = rumqttc::Client::new(o, 10_000);
        let received: Arc<Mutex<Vec<Captured>>> = Arc::default();
        let connected: Arc<AtomicBool> = Arc::default();
        for f in filters {
            client.subscribe(*f, rumqttc::QoS::AtLeastOnce).unwrap();
        }
        let (r, c) = (Arc::clone(&received), Arc::clone(&connected));
        std::thread::spawn(move || {
            for ev in connection.iter() {
                match ev {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => c.store(true, Ordering::SeqCst),
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => r.lock().unwrap().push(Captured {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    }),
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        let me = Self { client, received, connected };
        if !filters.is_empty() {
            let c = Arc::clone(&me.connected);
            poll_until("the raw MQTT client's SUBACK", Duration::from_secs(20), Duration::from_millis(5), || {
                c.load(Ordering::SeqCst).then_some(())
            });
        }
        me
    }

    /// Publishes with QoS 1.
    pub fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        self.client.publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload.to_vec()).unwrap();
    }

    /// A copy of what was received so far.
    pub fn messages(&self) -> Vec<Captured> {
        self.received.lock().unwrap().clone()
    }

    /// Messages received on `topic`.
    pub fn on(&self, topic: &str) -> Vec<Captured> {
        self.received.lock().unwrap().iter().filter(|m| m.topic == topic).cloned().collect()
    }
}

/// Writes a Mosquitto password file with `users` (name, password) using mosquitto_passwd.
pub fn password_file(path: &Path, users: &[(&str, &str)]) {
    let _ = std::fs::remove_file(path);
    std::fs::File::create(path).unwrap().flush().unwrap();
    for (u, p) in users {
        let passwd = ["/usr/bin/mosquitto_passwd", "/usr/sbin/mosquitto_passwd"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .unwrap_or("mosquitto_passwd");
        let st = Command::new(passwd).arg("-b").arg(path).arg(u).arg(p).status().unwrap();
        assert!(st.success(), "mosquitto_passwd failed for {u}");
    }
}

/// The store's public key (base64), from its env file: what services are given.
pub fn store_public_key(store: &super::Store) -> String {
    store.env_vars().get(super::PUBLIC_KEY).map(|v| v.trim_matches('"').to_owned()).expect("the public key in .env")
}

/// The store's public key, parsed.
pub fn store_verifying_key(store: &super::Store) -> confstore_core::VerifyingKey {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(store_public_key(store)).expect("base64 public key");
    confstore_core::VerifyingKey::from_bytes(&bytes).expect("a 32-byte public key")
}

/// A new store in `dir`, served with `serve_args` (the live stream's), ready, with an admin
/// HTTP client and `services` registered.
pub fn serve_with_stream(
    dir: &Path,
    serve_args: &[&str],
    services: &[&str],
) -> (super::Store, super::Server, super::Http) {
    let store = super::Store::in_dir(dir);
    store.init();
    let mut server = super::Server::start(&store, serve_args, &dir.join("serve.log"));
    server.wait_ready();
    let mut http = super::Http::new(server.addr).with_token(&super::admin_token(&store));
    for s in services {
        http.ok("POST", "/api/v1/services", Some(&serde_json::json!({ "name": s })));
    }
    (store, server, http)
}

/// `PUT /api/v1/services/<service>/values/<key>`; the epoch the server acknowledged.
#[track_caller]
pub fn put_value(http: &mut super::Http, service: &str, key: &str, value: &serde_json::Value) -> u64 {
    let resp = http.ok(
        "PUT",
        &format!("/api/v1/services/{service}/values/{key}"),
        Some(&serde_json::json!({ "value": value })),
    );
    resp.json()["epoch"].as_u64().expect("an epoch in the answer")
}
