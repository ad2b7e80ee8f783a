//! Stream attacks (docs/testing.md row 13): a client applies only fresh, authentic, correctly addressed
//! snapshots, each once and in order, and rejects every replay, forgery and stale message.
//!
//! Real parts: Mosquitto on a free port (anonymous: anyone may publish, the threat model),
//! `confstore serve` as a process, and the real client library, attacked by a raw MQTT
//! client that replays, flips bits, forges and plants retained messages; every rejection is
//! counted by kind.
//!
//! One test, in phases that share the capture (the expensive part):
//!
//! 1. a tap subscribed to `system/#` captures the snapshots of `STREAM_ATTACK_MESSAGES`
//!    (default 1000) real `web` writes (and every tenth write, one to `db`); the client's
//!    `on_update` log must be exactly that chain of versions, none rejected, no gap filled;
//! 2. every captured `web` snapshot replayed on `system/config/web`: stale or duplicate;
//! 3. every captured `db` snapshot replayed on `system/config/web`: `wrong_service`;
//! 4. every single-bit flip of 10 captured snapshots, and of one snapshot that the client
//!    would apply (the next version, signed with the store's own key): all rejected as
//!    `signature` or `malformed`;
//! 5. the next version forged with an unknown key (its own kid, the store's kid, `alg:
//!    none`, a transplanted genuine signature) and genuine head and event messages (signed
//!    by the store, another `typ`) on the snapshot topic: all `signature`;
//! 6. a stale snapshot planted as the retained message: rejected by the running client, by
//!    a client starting from its LKG file with REST down, and by a client with REST;
//! 7. QoS 1 redeliveries of the held version and of a fresh one: applied at most once;
//! 8. one more real write reaches the clients, and their configuration is the server's.
//!
//! Every wait is on a condition (`poll_until`): each published message yields exactly one
//! application or one counted rejection, so "the counter reached the number published" is
//! the signal that the client has seen them all (the broker delivers QoS 1 in order).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::mqtt::{Broker, RawClient};
use common::*;
use confstore_client::{Client, ClientBuilder, SnapshotVersion, Stats};
use confstore_core::stream::{self, Verdict};
use confstore_core::{SigningKey, VerifyingKey, jws};
use serde_json::{Value, json};

/// The topic every attack aims at.
const WEB_TOPIC: &str = "system/config/web";
/// Upper bound of any single wait; a run normally needs a small fraction of it.
const DEADLINE: Duration = Duration::from_secs(120);
/// Retry interval of the waits.
const POLL: Duration = Duration::from_millis(5);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn b64url() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

fn public_key(store: &Store) -> String {
    common::mqtt::store_public_key(store)
}

fn verifying_key(store: &Store) -> VerifyingKey {
    common::mqtt::store_verifying_key(store)
}

/// The store's own signing key: what the server signs with (used only to build a snapshot
/// the client would apply, whose bit-flipped copies must all be rejected).
fn store_signing_key(store: &Store) -> SigningKey {
    let seed = store.env_vars().get(SIGNING_KEY).cloned().expect("the signing key in .env");
    let bytes = base64::engine::general_purpose::STANDARD.decode(seed).unwrap();
    SigningKey::from_seed(&<[u8; 32]>::try_from(bytes.as_slice()).expect("a 32-byte seed"))
}

/// An MQTT client id no other test process uses (a broker disconnects the older of two
/// clients with the same id).
fn unique(name: &str) -> String {
    format!("{name}-{}-{}", std::process::id(), free_port())
}

/// On a failure, prints the ends of the server's and the broker's logs: a timeout names
/// what it waited for, these tell why.
struct LogsOnFailure(Vec<PathBuf>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for path in &self.0 {
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"));
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- the last lines of {} ---", path.display());
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// A store served with the live stream going to the broker at `mqtt_url`; `web` and `db`
/// registered.
fn served(dir: &Path, mqtt_url: &str) -> (Store, Server, Http) {
    let args = ["--mqtt-url", mqtt_url, "--mqtt-username", "confstore", "--mqtt-password", STORE_PASSWORD];
    common::mqtt::serve_with_stream(dir, &args, &["web", "db"])
}

/// The publisher's broker password here (its user may publish but not read, see below).
const STORE_PASSWORD: &str = "store-pw";
/// The attacked service's broker password.
const WEB_PASSWORD: &str = "web-pw";

/// An open broker (anonymous clients publish and read anything: the attacker and the tap)
/// on which the publisher may publish but not read its own retained topics. The publisher
/// puts back a retained message someone replaced only if it can see it
/// (tests/tests/hostile_broker.rs tests that); this test is about the client's acceptance
/// rule alone, so every planted message must stay where the attacker put it.
fn open_broker(dir: &Path) -> Broker {
    std::fs::create_dir_all(dir).unwrap();
    let passwd = dir.join("passwd");
    common::mqtt::password_file(&passwd, &[("confstore", STORE_PASSWORD), ("web", WEB_PASSWORD)]);
    let acl = dir.join("acl");
    std::fs::write(&acl, "topic readwrite #\nuser confstore\ntopic write #\nuser web\ntopic read #\n").unwrap();
    let extra = format!("allow_anonymous true\npassword_file {}\nacl_file {}\n", passwd.display(), acl.display());
    Broker::start_with(dir, true, &extra)
}

/// A real write; the epoch the server acknowledged.
fn put(http: &mut Http, service: &str, key: &str, value: &Value) -> u64 {
    common::mqtt::put_value(http, service, key, value)
}

/// What the server serves as `web`'s current snapshot document.
fn server_snapshot(http: &mut Http) -> Value {
    http.ok("GET", "/api/v1/services/web/snapshot", None).json()
}

/// Every version a client applied, in order (from `on_update`).
type Applied = Arc<Mutex<Vec<SnapshotVersion>>>;

fn recording(b: ClientBuilder) -> (ClientBuilder, Applied) {
    let applied: Applied = Arc::default();
    let a = Arc::clone(&applied);
    (b.on_update(move |c| a.lock().unwrap().push(c.version().clone())), applied)
}

fn epochs(applied: &Applied) -> Vec<u64> {
    applied.lock().unwrap().iter().map(|v| v.changed_epoch).collect()
}

/// A captured snapshot message: the bytes exactly as the broker delivered them, and what
/// they verify to.
#[derive(Clone)]
struct Snap {
    payload: Vec<u8>,
    doc: Value,
    version: SnapshotVersion,
    /// A delta (each version's message), not a whole snapshot (the retained copy).
    delta: bool,
}

/// The versions the tap captured on `topic`, each message verified with the store's key
/// (before any attack: afterwards the tap also holds the attacker's messages). A message of
/// several deltas signed once (docs/adr/0035) gives one entry per version, each with the
/// whole message as its payload.
fn snaps(tap: &RawClient, topic: &str, key: &VerifyingKey) -> Vec<Snap> {
    let typs = [jws::TYP_SNAPSHOT, jws::TYP_DELTA, jws::TYP_DELTAS];
    let mut out = Vec::new();
    for m in tap.on(topic) {
        let message: Value = serde_json::from_slice(&m.payload).unwrap();
        let (typ, doc) = jws::verify_one_of(&message, &typs, &[*key])
            .unwrap_or_else(|e| panic!("a captured message on {topic} does not verify: {e}"));
        if typ == jws::TYP_DELTAS {
            for (one, version) in stream::deltas_of(&doc).unwrap() {
                out.push(Snap { payload: m.payload.clone(), doc: one.clone(), version, delta: true });
            }
        } else {
            let version = stream::snapshot_version(&doc).unwrap();
            out.push(Snap { payload: m.payload, doc, version, delta: typ == jws::TYP_DELTA });
        }
    }
    out
}

/// The distinct messages behind `snaps`' versions, in order (a deltas message once).
fn messages(snaps: &[Snap]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for s in snaps {
        if out.last() != Some(&s.payload) {
            out.push(s.payload.clone());
        }
    }
    out
}

/// The genuine snapshot of `web` version `epoch` among what the tap captured (which by now
/// includes the attacker's messages: anything that does not verify is skipped).
fn genuine_web_snapshot(tap: &RawClient, key: &VerifyingKey, epoch: u64) -> Option<Snap> {
    tap.on(WEB_TOPIC).into_iter().find_map(|m| {
        let jws: Value = serde_json::from_slice(&m.payload).ok()?;
        let doc = jws::verify(&jws, jws::TYP_SNAPSHOT, &[*key]).ok()?;
        let version = stream::snapshot_version(&doc).ok()?;
        (version.changed_epoch == epoch).then_some(Snap { payload: m.payload, doc, version, delta: false })
    })
}

/// Rejections other than duplicates: a retained snapshot that repeats the version a delta
/// brought a moment before is a duplicate by design (docs/adr/0020), never a fresh message.
fn fresh_rejections(s: &Stats) -> BTreeMap<&'static str, u64> {
    s.rejected.iter().filter(|(k, _)| **k != "duplicate").map(|(k, v)| (*k, *v)).collect()
}

/// Kinds and counts of the rejections between two readings of the counters.
fn new_rejections(before: &Stats, after: &Stats) -> BTreeMap<&'static str, u64> {
    after
        .rejected
        .iter()
        .filter_map(|(kind, n)| {
            let d = n - before.rejected(kind);
            (d > 0).then_some((*kind, d))
        })
        .collect()
}

/// The attacker, the client under attack and its applied log.
struct Target<'a> {
    attacker: &'a RawClient,
    client: &'a Client,
    applied: &'a Applied,
}

impl Target<'_> {
    /// Publishes every payload on `WEB_TOPIC` as the attacker (`retain` as given), waits
    /// until the client has counted one rejection per message, checks that nothing was
    /// applied, prints a summary and returns the new rejections by kind.
    fn attack(
        &self,
        label: &str,
        payloads: impl IntoIterator<Item = Vec<u8>>,
        retain: bool,
    ) -> BTreeMap<&'static str, u64> {
        let before = self.client.stats();
        let held = self.client.config().version().clone();
        let applied_before = self.applied.lock().unwrap().len();
        let t = Instant::now();
        let mut published = 0u64;
        for p in payloads {
            self.attacker.publish(WEB_TOPIC, &p, retain);
            published += 1;
        }
        let target = before.rejected_total() + published;
        poll_until(&format!("the client to reject every {label} message"), DEADLINE, POLL, || {
            let s = self.client.stats();
            (s.rejected_total() >= target || s.applied != before.applied).then_some(())
        });
        let took = t.elapsed();
        let after = self.client.stats();
        let kinds = new_rejections(&before, &after);
        let rejected: u64 = kinds.values().sum();
        eprintln!("attack {label}: published {published}, rejected {rejected} {kinds:?} in {took:.2?}");
        assert_eq!(after.applied, before.applied, "{label}: a message was applied: {after:?}");
        assert_eq!(self.applied.lock().unwrap().len(), applied_before, "{label}: on_update ran");
        assert_eq!(*self.client.config().version(), held, "{label}: the held version moved");
        assert_eq!(rejected, published, "{label}: every message is rejected exactly once: {kinds:?}");
        assert_eq!((after.gaps_filled, after.resyncs), (before.gaps_filled, before.resyncs), "{label}");
        kinds
    }
}

/// `held` turned into the next version of the service, as the store would sign it: a new
/// changed epoch, `prev_epoch` = the held one, another config.
fn next_version(held: &Value, config: Value) -> Value {
    let mut doc = held.clone();
    let next = held["epoch"].as_u64().unwrap().max(held["changed_epoch"].as_u64().unwrap()) + 1;
    doc["epoch"] = json!(next);
    doc["prev_epoch"] = held["changed_epoch"].clone();
    doc["changed_epoch"] = json!(next);
    doc["changed_seq"] = json!(held["changed_seq"].as_u64().unwrap() + 1);
    doc["config"] = config;
    doc
}

/// A flattened snapshot JWS built by hand: any header, signed by `key`.
fn hand_built(header: &Value, doc: &Value, key: &SigningKey) -> Vec<u8> {
    let protected = b64url().encode(header.to_string());
    let payload = b64url().encode(confstore_core::state::canonical_json_text(doc));
    let signature = b64url().encode(key.sign(format!("{protected}.{payload}").as_bytes()));
    json!({"protected": protected, "payload": payload, "signature": signature}).to_string().into_bytes()
}

/// Every copy of `payload` with exactly one bit flipped, lazily.
fn bit_flips(payload: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    (0..payload.len() * 8).map(move |bit| {
        let mut copy = payload.to_vec();
        copy[bit / 8] ^= 1 << (bit % 8);
        copy
    })
}

#[test]
fn every_fresh_version_is_applied_once_in_order_and_every_attack_is_rejected() {
    let count = env_count("STREAM_ATTACK_MESSAGES", 1000);
    assert!(count >= 10, "STREAM_ATTACK_MESSAGES must be at least 10 (the bit-flip samples)");
    let test_started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(&dir.path().join("broker"));
    // Declared after `dir`, so dropped (and read) before the directory is removed.
    let _logs = LogsOnFailure(vec![dir.path().join("serve.log"), dir.path().join("broker").join("mosquitto.log")]);
    // Anonymous access is on: anyone may publish anywhere. That is the threat model.
    let tap = RawClient::connect(broker.port, &unique("tap"), None, &["system/#"]);
    let attacker = RawClient::connect(broker.port, &unique("attacker"), None, &[]);
    let (store, server, mut http) = served(dir.path(), &broker.url());
    let key = verifying_key(&store);
    let rest_url = format!("http://{}", server.addr);

    // The registration of `web` is its first version; once the tap has it, the broker holds
    // it retained, so the client's subscription brings a copy of what REST gave it.
    let v0 = u64_of(&server_snapshot(&mut http), "changed_epoch");
    poll_until("the broker to hold web's first version", DEADLINE, POLL, || {
        snaps(&tap, WEB_TOPIC, &key).iter().any(|s| s.version.changed_epoch == v0).then_some(())
    });
    let lkg = dir.path().join("client").join("web.lkg.json");
    std::fs::create_dir_all(lkg.parent().unwrap()).unwrap();
    let builder = |id: &str| {
        Client::builder("web")
            .public_key_base64(&public_key(&store))
            .rest_url(&rest_url)
            .token(&admin_token(&store))
            .mqtt_url(&broker.url())
            .mqtt_credentials("web", WEB_PASSWORD)
            .mqtt_client_id(&unique(id))
            .env(Vec::new())
    };
    let rt = runtime();
    let (b, applied) = recording(builder("attacked-web").lkg_path(&lkg));
    let client = rt.block_on(b.start()).unwrap();
    assert_eq!(client.config().version().changed_epoch, v0);
    poll_until("the retained copy of the first version (a duplicate)", DEADLINE, POLL, || {
        (client.stats().rejected_total() >= 1).then_some(())
    });
    let baseline = client.stats();
    assert_eq!(baseline.rejected, BTreeMap::from([("duplicate", 1)]), "{baseline:?}");
    assert_eq!(epochs(&applied), [v0]);

    // ---- 1. capture: real writes, each applied once, in order ----
    let t = Instant::now();
    let mut web_epochs = vec![v0];
    let mut db_epochs = Vec::new();
    for i in 0..count {
        web_epochs.push(put(&mut http, "web", "k", &json!(i)));
        if i % 10 == 0 {
            db_epochs.push(put(&mut http, "db", "pool", &json!(i)));
        }
    }
    let writes_took = t.elapsed();
    let last = *web_epochs.last().unwrap();
    let last_db = *db_epochs.last().unwrap();
    poll_until("the tap to capture the last retained snapshots of web and db", DEADLINE, POLL, || {
        let is_last = |topic: &str, epoch: u64| {
            snaps(&tap, topic, &key).iter().rev().find(|s| !s.delta).is_some_and(|s| s.version.changed_epoch == epoch)
        };
        (is_last(WEB_TOPIC, last) && is_last("system/config/db", last_db)).then_some(())
    });
    poll_until("the client to apply the last write", DEADLINE, POLL, || {
        (client.config().version().changed_epoch == last).then_some(())
    });
    let applied_took = t.elapsed();
    let web_caps = snaps(&tap, WEB_TOPIC, &key);
    let db_caps: Vec<Snap> = snaps(&tap, "system/config/db", &key);
    // Each version is a delta, in order, linked; the retained snapshots (coalesced per
    // window) are copies of versions the deltas carried.
    let deltas: Vec<&Snap> = web_caps.iter().filter(|s| s.delta).collect();
    let captured: Vec<u64> = deltas.iter().map(|s| s.version.changed_epoch).collect();
    assert_eq!(captured, web_epochs[1..], "the server publishes one delta per web version, in order");
    for pair in deltas.windows(2) {
        assert_eq!(pair[1].version.prev_epoch, pair[0].version.changed_epoch, "the captured chain is linked");
    }
    let retained: Vec<u64> = web_caps.iter().filter(|s| !s.delta).map(|s| s.version.changed_epoch).collect();
    assert!(
        retained.windows(2).all(|w| w[0] < w[1]) && retained.iter().all(|e| web_epochs.contains(e)),
        "{retained:?}"
    );
    assert_eq!(epochs(&applied), web_epochs, "the client applied every captured version once, in order");
    let after_writes = client.stats();
    assert_eq!(after_writes.applied - baseline.applied, u64::try_from(count).unwrap());
    assert_eq!(
        fresh_rejections(&after_writes),
        fresh_rejections(&baseline),
        "a valid fresh message was rejected: {after_writes:?}"
    );
    assert_eq!((after_writes.gaps_filled, after_writes.resyncs), (0, 0), "every version came over MQTT");
    assert!(db_caps.len() > db_epochs.len(), "db's registration and writes captured");
    eprintln!(
        "attack 1 capture: {} web + {} db writes in {writes_took:.2?}; {} web / {} db snapshots captured; \
         client applied {} versions in order, rejected 0 fresh, all applied after {applied_took:.2?}",
        count,
        db_epochs.len(),
        web_caps.len(),
        db_caps.len(),
        epochs(&applied).len(),
    );

    let target = Target { attacker: &attacker, client: &client, applied: &applied };

    // ---- 2. replays after the client moved past them ----
    // Each message once; one of several deltas is rejected as its newest version.
    let replayed = messages(&web_caps);
    let kinds = target.attack("2 replay", replayed.iter().cloned(), false);
    let newest =
        |p: &Vec<u8>| web_caps.iter().filter(|s| s.payload == *p).map(|s| s.version.changed_epoch).max().unwrap();
    let held_copies = replayed.iter().filter(|p| newest(p) == last).count();
    let n = replayed.len();
    let expected = BTreeMap::from([("stale", (n - held_copies) as u64), ("duplicate", held_copies as u64)]);
    assert_eq!(kinds, expected);

    // ---- 3. another service's snapshots on web's topic ----
    let db_messages = messages(&db_caps);
    let kinds = target.attack("3 cross-topic (db on web)", db_messages.iter().cloned(), false);
    assert_eq!(kinds, BTreeMap::from([("wrong_service", u64::try_from(db_messages.len()).unwrap())]));

    // ---- 4. every single-bit flip of 10 captured snapshots, and of one the client would apply ----
    // The retained snapshot of the version the client holds.
    let held = web_caps.iter().rev().find(|s| !s.delta).unwrap().clone();
    assert_eq!(held.version.changed_epoch, last);
    let samples: Vec<&Snap> = (0..10).map(|i| &web_caps[i * (web_caps.len() - 1) / 9]).collect();
    let flips: usize = samples.iter().map(|s| s.payload.len() * 8).sum();
    let kinds = target.attack("4 bit flips (10 captured)", samples.iter().flat_map(|s| bit_flips(&s.payload)), false);
    assert_eq!(kinds.values().sum::<u64>(), u64::try_from(flips).unwrap());
    assert!(kinds.keys().all(|k| ["signature", "malformed"].contains(k)), "{kinds:?}");
    // A message that would be applied (the next version, signed with the store's own key,
    // checked to pass verification and the acceptance rule): none of its flips may be.
    let applicable =
        jws::sign(&next_version(&held.doc, json!({"k": "next"})), jws::TYP_SNAPSHOT, &store_signing_key(&store));
    let (_, version) = stream::verify_snapshot(&applicable, &[key], &held.version.store_id, "web").unwrap();
    assert_eq!(stream::judge(Some(&held.version), &version), Ok(Verdict::Apply));
    let applicable = applicable.to_string().into_bytes();
    let kinds = target.attack("4 bit flips (applicable next version)", bit_flips(&applicable), false);
    assert_eq!(kinds.values().sum::<u64>(), u64::try_from(applicable.len() * 8).unwrap());
    assert!(kinds.keys().all(|k| ["signature", "malformed"].contains(k)), "{kinds:?}");

    // ---- 5. forgeries of the next version, and signed documents of another type ----
    let unknown = SigningKey::from_seed(&[9; 32]);
    let real_kid = key.key_id().to_hex();
    let forged = next_version(&held.doc, json!({"k": "forged"}));
    let header = |alg: &str, kid: &str| json!({"alg": alg, "kid": kid, "typ": jws::TYP_SNAPSHOT});
    let own_kid = jws::sign(&forged, jws::TYP_SNAPSHOT, &unknown).to_string().into_bytes();
    let stolen_kid = hand_built(&header("EdDSA", &real_kid), &forged, &unknown);
    let alg_none = {
        let protected = b64url().encode(header("none", &real_kid).to_string());
        let payload = b64url().encode(confstore_core::state::canonical_json_text(&forged));
        json!({"protected": protected, "payload": payload, "signature": ""}).to_string().into_bytes()
    };
    let transplanted = {
        // The genuine protected header and signature of the held version, on the forged payload.
        let mut jws: Value = serde_json::from_slice(&held.payload).unwrap();
        jws["payload"] = json!(b64url().encode(confstore_core::state::canonical_json_text(&forged)));
        jws.to_string().into_bytes()
    };
    let kinds = target.attack("5 unknown key (its own kid)", [own_kid], false);
    assert_eq!(kinds, BTreeMap::from([("signature", 1)]));
    let kinds = target.attack("5 unknown key (the store's kid)", [stolen_kid], false);
    assert_eq!(kinds, BTreeMap::from([("signature", 1)]));
    let kinds = target.attack("5 alg none, transplanted signature", [alg_none, transplanted], false);
    assert_eq!(kinds, BTreeMap::from([("signature", 2)]));
    // Genuinely signed by the store, but a head and events, not snapshots: the typ check.
    let other_types: Vec<Vec<u8>> = tap
        .messages()
        .into_iter()
        .filter(|m| m.topic == stream::HEAD_TOPIC || m.topic == stream::events_topic("web"))
        .map(|m| m.payload)
        .take(20)
        .collect();
    assert!(other_types.len() >= 2, "the tap captured heads and events");
    let typed = u64::try_from(other_types.len()).unwrap();
    let kinds = target.attack("5 genuine head/event JWS on the snapshot topic", other_types, false);
    assert_eq!(kinds, BTreeMap::from([("signature", typed)]));

    // ---- 7. QoS 1 duplicates: of the held version, and of a fresh one just applied ----
    let kinds = target.attack("7 duplicate of the held version", vec![held.payload.clone(); 3], false);
    assert_eq!(kinds, BTreeMap::from([("duplicate", 3)]));
    let before = client.stats();
    let w = put(&mut http, "web", "k", &json!("after the attacks"));
    poll_until("the client to apply a fresh write", DEADLINE, POLL, || {
        (client.config().version().changed_epoch == w).then_some(())
    });
    let fresh =
        poll_until("the tap to capture the fresh snapshot", DEADLINE, POLL, || genuine_web_snapshot(&tap, &key, w));
    assert_eq!(fresh_rejections(&client.stats()), fresh_rejections(&before), "a valid fresh message was rejected");
    let kinds = target.attack("7 redelivery of the fresh version", vec![fresh.payload.clone(); 2], false);
    assert_eq!(kinds, BTreeMap::from([("duplicate", 2)]));
    assert_eq!(epochs(&applied).iter().filter(|&&e| e == w).count(), 1, "applied at most once");

    // ---- 6. a stale snapshot planted as the retained message ----
    let stale = &web_caps[web_caps.len() / 2];
    let kinds = target.attack("6a stale retained (running client)", [stale.payload.clone()], true);
    assert_eq!(kinds, BTreeMap::from([("stale", 1)]));
    // The plant took: a new subscriber gets the stale snapshot as the retained message.
    let probe = RawClient::connect(broker.port, &unique("probe"), None, &[WEB_TOPIC]);
    let got = poll_until("the retained message", DEADLINE, POLL, || probe.on(WEB_TOPIC).into_iter().next());
    assert!(got.retain && got.payload == stale.payload, "the broker does not hold the planted message");

    // The attacked client is done: its whole applied log and its counters.
    let mut expected = web_epochs.clone();
    expected.push(w);
    assert_eq!(epochs(&applied), expected, "applied: every real version once, in order, nothing else");
    let totals = client.stats();
    rt.block_on(client.shutdown());
    let lkg_bytes = std::fs::read(&lkg).unwrap();
    let lkg_doc: Value = serde_json::from_slice(&lkg_bytes).unwrap();
    // The newest version in the file: its last delta, else its snapshot.
    let newest = lkg_doc["deltas"].as_array().and_then(|d| d.last()).unwrap_or(&lkg_doc["jws"]);
    let lkg_version = stream::verify_update(newest, &[key], None, "web").unwrap().2;
    assert_eq!(lkg_version.changed_epoch, w, "the LKG file holds the newest applied version");

    // (b) REST down, the broker up: the client starts from its verified LKG file and the
    // stale retained message does not take it back.
    let dead_rest = format!("http://127.0.0.1:{}", free_port());
    let (b, lkg_applied) =
        recording(builder("web-from-lkg").rest_url(&dead_rest).startup_timeout(Duration::from_secs(10)).lkg_path(&lkg));
    let t = Instant::now();
    let from_lkg = rt.block_on(b.start()).unwrap();
    let started_in = t.elapsed();
    assert_eq!(from_lkg.config().version().changed_epoch, w, "started from the LKG version");
    let s = from_lkg.stats();
    assert_eq!(s.rejected, BTreeMap::from([("stale", 1)]), "{s:?}");
    assert_eq!(s.applied, 0);
    assert_eq!(std::fs::read(&lkg).unwrap(), lkg_bytes, "the LKG file is untouched");
    eprintln!(
        "attack 6b stale retained (LKG client, REST down): published 1, rejected 1 (stale), started in {started_in:.2?}"
    );

    // (c) A new client with REST: the newest version, the retained one rejected.
    let (b, rest_applied) = recording(builder("web-with-rest"));
    let with_rest = rt.block_on(b.start()).unwrap();
    assert_eq!(with_rest.config().version().changed_epoch, w);
    poll_until("the REST client to judge the retained message", DEADLINE, POLL, || {
        (with_rest.stats().rejected_total() >= 1).then_some(())
    });
    assert_eq!(with_rest.stats().rejected, BTreeMap::from([("stale", 1)]));
    eprintln!("attack 6c stale retained (client with REST): published 1, rejected 1 (stale)");

    // ---- 8. one more real write reaches both clients; they hold the server's snapshot ----
    let (lkg_before, rest_before) = (from_lkg.stats(), with_rest.stats());
    let x = put(&mut http, "web", "k", &json!({"final": true}));
    poll_until("both clients to apply the last write", DEADLINE, POLL, || {
        (from_lkg.config().version().changed_epoch == x && with_rest.config().version().changed_epoch == x)
            .then_some(())
    });
    let server_doc = server_snapshot(&mut http);
    assert_eq!(u64_of(&server_doc, "changed_epoch"), x);
    // The LKG client applied only this write (it resumed `w` without applying it); the REST
    // client `w` at start, then this one.
    for (name, c, before, log, expected) in [
        ("lkg", &from_lkg, &lkg_before, &lkg_applied, vec![x]),
        ("rest", &with_rest, &rest_before, &rest_applied, vec![w, x]),
    ] {
        let s = c.stats();
        assert_eq!(fresh_rejections(&s), fresh_rejections(before), "{name}: a valid fresh message was rejected: {s:?}");
        assert_eq!((s.applied - before.applied, s.gaps_filled, s.resyncs), (1, 0, 0), "{name}: {s:?}");
        assert_eq!(epochs(log), expected, "{name}: applied");
        let cfg = c.config();
        assert_eq!(cfg.document()["config"], server_doc["config"], "{name}: config differs from the server's");
        assert_eq!(*cfg.document(), server_doc, "{name}: snapshot differs from the server's");
        assert_eq!(cfg.value("k"), Some(&json!({"final": true})));
    }
    eprintln!(
        "attack 8 after the attacks: 1 real write applied by both clients, 0 fresh rejected; \
         config = server's (epoch {x})"
    );
    eprintln!("attacked client totals: applied {}, rejected {:?}", totals.applied, totals.rejected);
    rt.block_on(from_lkg.shutdown());
    rt.block_on(with_rest.shutdown());
    drop(server);
    eprintln!("stream_attacks: {count} messages, whole test {:.2?}", test_started.elapsed());
}
