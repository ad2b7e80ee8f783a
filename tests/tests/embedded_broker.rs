//! The embedded broker's MQTT behaviour on the wire (docs/adr/0032): `confstore serve` as a
//! process, and a client written here from MQTT 3.1.1 packets (rumqttc's codec, no client
//! logic), so the test sees exactly what the broker sends and when it closes.
//!
//! - A persistent session (clean session off) that went away gets, when it comes back, what
//!   was published to its subscriptions meanwhile, without subscribing again.
//! - A connection that ends without DISCONNECT publishes its last will (the fleet view shows
//!   the instance offline); one whose client id is taken over is closed without it.
//! - A client silent past 1.5 times its keep-alive is closed, and its will published.
//! - PINGREQ is answered; QoS 2 is not served.
//! - A large service's retained snapshots are signed when a subscription needs them
//!   (docs/adr/0034): a new subscriber gets a signed version, the current ones a rendered
//!   snapshot at most once a second and one of the newest version after the writes stop.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::mqtt::{RawClient, put_value, serve_with_stream, store_verifying_key};
use common::*;
use confstore_core::fleet::Status;
use rumqttc::mqttbytes::{self, QoS};
use rumqttc::{Connect, LastWill, Login, Packet, PubAck, Publish, Subscribe, SubscribeFilter};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);
const MAX: usize = 16 << 20;

/// One MQTT connection, packet by packet.
struct Wire {
    s: TcpStream,
    buf: BytesMut,
}

impl Wire {
    fn connect(port: u16, id: &str, token: &str, clean: bool, keep_alive: u16, will: Option<LastWill>) -> (Self, bool) {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut w = Self { s, buf: BytesMut::new() };
        let mut c = Connect::new(id);
        c.keep_alive = keep_alive;
        c.clean_session = clean;
        c.last_will = will;
        c.login = Some(Login::new("svc", token));
        w.send(Packet::Connect(c));
        match w.next() {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success, "{id}");
                (w, ack.session_present)
            }
            other => panic!("{id}: expected a CONNACK, got {other:?}"),
        }
    }

    fn send(&mut self, p: Packet) {
        let mut out = BytesMut::new();
        p.write(&mut out, MAX).unwrap();
        self.s.write_all(&out).unwrap();
    }

    /// The next packet, or `None` when the broker closed the connection.
    fn next(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.buf, MAX) {
                Ok(p) => return Some(p),
                Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("malformed packet from the broker: {e:?}"),
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next PUBLISH (acknowledged if QoS 1), skipping other packets.
    fn next_publish(&mut self) -> Publish {
        loop {
            match self.next() {
                Some(Packet::Publish(p)) => {
                    if p.qos == QoS::AtLeastOnce {
                        self.send(Packet::PubAck(PubAck::new(p.pkid)));
                    }
                    return p;
                }
                Some(_) => {}
                None => panic!("the broker closed the connection while a message was expected"),
            }
        }
    }

    fn subscribe(&mut self, filter: &str) {
        let mut sub = Subscribe::new_many([SubscribeFilter::new(filter.into(), QoS::AtLeastOnce)]);
        sub.pkid = 1;
        self.send(Packet::Subscribe(sub));
    }

    /// Waits until the broker closes the connection (other packets are skipped).
    fn closed_within(&mut self, deadline: Duration) -> Duration {
        let start = Instant::now();
        while self.next().is_some() {
            assert!(start.elapsed() < deadline, "the broker did not close the connection within {deadline:?}");
        }
        start.elapsed()
    }
}

fn will_of(instance: &str) -> LastWill {
    LastWill::new(
        format!("system/config-status/svc/{instance}"),
        Status::offline("svc", instance, 1).to_json(),
        QoS::AtLeastOnce,
        true,
    )
}

/// An instance's state in the fleet view, if it is there.
fn fleet_state(http: &mut Http, instance: &str) -> Option<String> {
    let v: Value = http.ok("GET", "/api/v1/fleet/svc", None).json();
    v["instances"].as_array()?.iter().find(|i| i["instance"] == json!(instance)).map(|i| str_of(i, "state").to_owned())
}

/// Whether `p` is a snapshot or delta(s) of `svc`, signed by the store, that names `key`.
fn mentions(key_of_store: &confstore_core::VerifyingKey, p: &Publish, key: &str) -> bool {
    use confstore_core::jws;
    let Ok(message) = serde_json::from_slice::<Value>(&p.payload) else { return false };
    let typs = [jws::TYP_SNAPSHOT, jws::TYP_DELTA, jws::TYP_DELTAS];
    let Ok((_, doc)) = jws::verify_one_of(&message, &typs, std::slice::from_ref(key_of_store)) else { return false };
    // Several deltas signed once: each names its service.
    let docs = doc["deltas"].as_array().cloned().unwrap_or_else(|| vec![doc]);
    docs.iter().any(|d| d["service"] == json!("svc") && d.to_string().contains(key))
}

/// `confstore serve` with the embedded broker on a free port, service `svc` registered.
struct Served {
    port: u16,
    server: Server,
    http: Http,
    /// A `config.read` token of `svc` (its MQTT password).
    token: String,
    store_key: confstore_core::VerifyingKey,
}

fn served(dir: &std::path::Path) -> Served {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (store, server, http) = serve_with_stream(dir, &["--mqtt-listen", &listen], &["svc"]);
    let args = ["token", "create", "--role", "config.read", "--service", "svc", "--name", "svc", "--json"];
    let token = str_of(&store.json(&args), "token").to_owned();
    Served { port, server, http, token, store_key: store_verifying_key(&store) }
}

#[test]
fn sessions_wills_takeover_and_keep_alive_on_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let Served { port, server, mut http, token, store_key } = served(dir.path());
    put_value(&mut http, "svc", "first", &json!(1));

    // A persistent session subscribes, takes the retained snapshot, and goes away without
    // a DISCONNECT.
    let (mut a, present) = Wire::connect(port, "keeper", &token, false, 30, None);
    assert!(!present, "a new session");
    a.subscribe("system/config/svc");
    let retained = a.next_publish();
    // (The retained snapshot may be of the version before that write: it is coalesced.)
    assert!(retained.retain && mentions(&store_key, &retained, ""), "the retained snapshot first: {retained:?}");
    drop(a);
    // Written while it is away.
    for key in ["away_1", "away_2", "away_3"] {
        put_value(&mut http, "svc", key, &json!(true));
    }
    // Back with the same id: the session is there, and so is what it missed, without a
    // new SUBSCRIBE.
    let (mut back, present) = Wire::connect(port, "keeper", &token, false, 30, None);
    assert!(present, "the persistent session was kept");
    let mut missed = Vec::new();
    while !["away_1", "away_2", "away_3"].iter().all(|k| missed.iter().any(|p: &Publish| mentions(&store_key, p, k))) {
        missed.push(back.next_publish());
    }
    // PINGREQ is answered.
    back.send(Packet::PingReq);
    while !matches!(back.next(), Some(Packet::PingResp)) {}

    // A connection that ends without DISCONNECT: its will goes out.
    let (c, _) = Wire::connect(port, "crashing", &token, true, 30, Some(will_of("crashing")));
    drop(c);
    poll_until("the will of a dropped connection", DEADLINE, Duration::from_millis(10), || {
        (fleet_state(&mut http, "crashing").as_deref() == Some("offline")).then_some(())
    });

    // A takeover: the older connection is closed, without its will.
    let (mut old, _) = Wire::connect(port, "twin", &token, false, 30, Some(will_of("twin")));
    let (mut new, present) = Wire::connect(port, "twin", &token, false, 30, Some(will_of("twin")));
    assert!(present);
    old.closed_within(DEADLINE);
    // Anything the old connection's end published went into the fleet view's queue before
    // this report, which the new connection sends after seeing the old one closed.
    let marker = Status::offline("svc", "marker", 2).to_json();
    let mut report = Publish::new("system/config-status/svc/marker", QoS::AtLeastOnce, marker);
    report.pkid = 7;
    new.send(Packet::Publish(report));
    poll_until("the marker report", DEADLINE, Duration::from_millis(10), || fleet_state(&mut http, "marker"));
    assert_eq!(fleet_state(&mut http, "twin"), None, "a taken-over connection's will was published");

    // Silent past 1.5 × its keep-alive of 1 s: closed, and its will published.
    let (mut silent, _) = Wire::connect(port, "silent", &token, true, 1, Some(will_of("silent")));
    let after = silent.closed_within(Duration::from_secs(10));
    assert!(after >= Duration::from_millis(1400), "closed after {after:?}, before 1.5 × the keep-alive");
    poll_until("the silent client's will", DEADLINE, Duration::from_millis(10), || {
        (fleet_state(&mut http, "silent").as_deref() == Some("offline")).then_some(())
    });

    // QoS 2 is not served: the connection is closed.
    let report = Status::offline("svc", "q2", 3).to_json();
    let (mut q2, _) = Wire::connect(port, "q2", &token, true, 30, None);
    let mut report = Publish::new("system/config-status/svc/q2", QoS::ExactlyOnce, report);
    report.pkid = 7;
    q2.send(Packet::Publish(report));
    q2.closed_within(DEADLINE);
    assert_eq!(fleet_state(&mut http, "q2"), None);
    drop(server);
}

/// A counter's value on `/metrics`.
fn counter(http: &mut Http, name: &str) -> u64 {
    let text = http.ok("GET", "/metrics", None).text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse().expect("a whole number"))
}

/// The snapshot document in `payload`, if it is one signed by the store.
fn snapshot_in(key: &confstore_core::VerifyingKey, payload: &[u8]) -> Option<Value> {
    let jws = serde_json::from_slice::<Value>(payload).ok()?;
    confstore_core::jws::verify(&jws, confstore_core::jws::TYP_SNAPSHOT, std::slice::from_ref(key)).ok()
}

#[test]
fn a_large_service_s_retained_snapshots_are_signed_when_a_subscription_needs_them() {
    let dir = tempfile::tempdir().unwrap();
    let Served { port, server, mut http, token, store_key } = served(dir.path());
    // Large enough to be rendered off the publisher's task, and so deferred.
    let keys = confstore_core::limits::STREAM_RENDER_ELSEWHERE_KEYS_MIN + 50;
    let set: serde_json::Map<String, Value> = (0..keys).map(|i| (format!("k{i:04}"), json!(-1))).collect();
    let first =
        http.ok("PATCH", "/api/v1/services/svc/values", Some(&json!({ "set": set }))).json()["epoch"].as_u64().unwrap();
    let current = RawClient::connect(port, "current", Some(("svc", &token)), &["system/config/svc"]);
    let received_snapshot_of = |epoch: u64| {
        current
            .messages()
            .iter()
            .filter_map(|m| snapshot_in(&store_key, &m.payload))
            .any(|d| d["changed_epoch"].as_u64() == Some(epoch))
            .then_some(())
    };
    poll_until("the snapshot of the first version", DEADLINE, Duration::from_millis(5), || received_snapshot_of(first));
    // The value of k0000 at each version written.
    let mut written = BTreeMap::from([(first, json!(-1))]);
    let deferred_rendered = "confstore_mqtt_deferred_rendered_total";
    let start = Instant::now();
    let mut i = 0_i64;
    // Written continuously for several windows, with a new subscriber every ten writes,
    // until one of them got a snapshot rendered for it.
    while start.elapsed() < Duration::from_millis(400) || counter(&mut http, deferred_rendered) == 0 {
        assert!(start.elapsed() < DEADLINE, "no retained snapshot was rendered for a new subscriber");
        written.insert(put_value(&mut http, "svc", "k0000", &json!(i)), json!(i));
        i += 1;
        if i % 10 == 0 {
            let (mut w, _) = Wire::connect(port, &format!("new-{i}"), &token, true, 30, None);
            w.subscribe("system/config/svc");
            let p = w.next_publish();
            let doc = snapshot_in(&store_key, &p.payload).expect("a signed snapshot");
            assert!(p.retain);
            // A real version of the service: the whole of it as it was at that epoch.
            let at = doc["changed_epoch"].as_u64().unwrap();
            assert_eq!(Some(&doc["config"]["k0000"]), written.get(&at), "the snapshot of version {at}");
            assert_eq!(doc["config"].as_object().map(serde_json::Map::len), Some(keys));
        }
    }
    let elapsed = start.elapsed();
    let last = *written.keys().last().unwrap();
    // The current subscriber followed the deltas; rendered snapshots reached it at most once
    // a second (one per 50 ms window without deferring: eight or more here), the first
    // possibly within a second of the start.
    let rendered =
        current.messages().iter().filter(|m| !m.retain && snapshot_in(&store_key, &m.payload).is_some()).count();
    let bound = usize::try_from(elapsed.as_secs()).unwrap() + 2;
    assert!(rendered <= bound, "{rendered} rendered snapshots in {elapsed:?} of writes (at most {bound})");
    // Once the writes stop, a rendered snapshot of the newest version reaches it (what
    // compacts a client's LKG file), and it is the retained one a new subscriber gets.
    poll_until("a rendered snapshot of the newest version", DEADLINE, Duration::from_millis(10), || {
        received_snapshot_of(last)
    });
    let (mut w, _) = Wire::connect(port, "after", &token, true, 30, None);
    w.subscribe("system/config/svc");
    let doc = snapshot_in(&store_key, &w.next_publish().payload).expect("a signed snapshot");
    assert_eq!(doc["changed_epoch"].as_u64(), Some(last));
    assert_eq!(doc["config"]["k0000"], json!(i - 1));
    drop(server);
}
