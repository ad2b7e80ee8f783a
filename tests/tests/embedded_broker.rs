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

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::mqtt::{put_value, serve_with_stream, store_verifying_key};
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

/// Whether `p` is a snapshot or delta of `svc`, signed by the store, that names `key`.
fn mentions(key_of_store: &confstore_core::VerifyingKey, p: &Publish, key: &str) -> bool {
    let Ok(jws) = serde_json::from_slice::<Value>(&p.payload) else { return false };
    [confstore_core::jws::TYP_SNAPSHOT, confstore_core::jws::TYP_DELTA].into_iter().any(|typ| {
        confstore_core::jws::verify(&jws, typ, std::slice::from_ref(key_of_store))
            .is_ok_and(|doc| doc["service"] == json!("svc") && doc.to_string().contains(key))
    })
}

#[test]
fn sessions_wills_takeover_and_keep_alive_on_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (store, server, mut http) = serve_with_stream(dir.path(), &["--mqtt-listen", &listen], &["svc"]);
    let token = {
        let args = ["token", "create", "--role", "config.read", "--service", "svc", "--name", "svc", "--json"];
        str_of(&store.json(&args), "token").to_owned()
    };
    let store_key = store_verifying_key(&store);
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
