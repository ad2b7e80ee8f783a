//! The outbox without a broker: what each write produces, coalescing, acknowledgements.

use std::sync::Arc;
use std::time::{Duration, Instant};

use confstore_core::state::{Change, ChangesetDraft, decide};
use confstore_core::{Hash32, Sealed, SigningKey, State, Verified, jws};
use serde_json::{Value, json};

use super::{HEAD_WINDOW, Kind, Outbox, SNAPSHOT_WINDOW_MAX, SNAPSHOT_WINDOW_MIN, snapshot_window};

/// A log being written: the state, and the events made so far.
struct Log {
    state: State,
    events: Vec<Arc<Verified>>,
}

impl Log {
    fn new() -> Self {
        Self { state: State::default(), events: Vec::new() }
    }

    /// Decides `changes` and returns the new events.
    fn write(&mut self, changes: Vec<Change>) -> Vec<Arc<Verified>> {
        let draft = ChangesetDraft {
            actor: "t".into(),
            reason: String::new(),
            request_id: "r".into(),
            expected_epoch: None,
            changes,
        };
        let bodies = decide(&self.state, &draft, 1_000 + self.state.seq).expect("accepted");
        let mut out = Vec::new();
        for body in bodies {
            let seq = self.state.seq + 1;
            let prev = self.events.last().map_or_else(Hash32::default, |e| *e.hash());
            let f = Arc::new(Sealed::new(seq, &prev, body).verified().clone());
            self.state.apply(&f);
            self.events.push(Arc::clone(&f));
            out.push(f);
        }
        out
    }

    fn set(&mut self, service: &str, key: &str, value: Value) -> Vec<Arc<Verified>> {
        self.write(vec![Change::Set { service: service.into(), key: key.into(), value }])
    }
}

fn key() -> Arc<SigningKey> {
    Arc::new(SigningKey::from_seed(&[7; 32]))
}

fn outbox() -> Outbox {
    let mut o = Outbox::new(key(), "00".repeat(16), 1);
    o.reset("00".repeat(16), 1, State::default(), (0, Hash32::default()), true);
    o
}

/// The kinds and topics of batch `i`'s messages.
fn shape(o: &Outbox, i: usize) -> Vec<(Kind, String)> {
    o.pending().nth(i).expect("batch").1.msgs.iter().map(|m| (m.kind, m.topic.clone())).collect()
}

fn payload(o: &Outbox, i: usize, kind: Kind) -> Value {
    let (_, b) = o.pending().nth(i).expect("batch");
    let m = b.msgs.iter().find(|m| m.kind == kind).expect("message of that kind");
    let jws: Value = serde_json::from_slice(&m.payload).unwrap();
    let typ = match kind {
        Kind::Snapshot => jws::TYP_SNAPSHOT,
        Kind::Delta => jws::TYP_DELTA,
        Kind::Head => jws::TYP_HEAD,
        Kind::Staged => jws::TYP_STAGED,
        _ => jws::TYP_EVENT,
    };
    jws::verify(&jws, typ, &[key().verifying_key()]).expect("signed by the store key")
}

fn setup() -> (Log, Outbox, Instant) {
    let mut log = Log::new();
    let mut o = outbox();
    let t0 = Instant::now();
    let first = log.write(vec![Change::RegisterService { service: "web".into() }]);
    o.take_in(&first, t0);
    assert!(o.cut(t0));
    // A registration's version message is the whole snapshot, and it is the retained one.
    assert_eq!(
        shape(&o, 0),
        [
            (Kind::Event, "system/config-events/web".to_owned()),
            (Kind::Snapshot, "system/config/web".to_owned()),
            (Kind::Head, "system/config-head".to_owned()),
        ]
    );
    assert_eq!(o.next_due(), None);
    (log, o, t0)
}

const EVENT: (Kind, &str) = (Kind::Event, "system/config-events/web");
const DELTA: (Kind, &str) = (Kind::Delta, "system/config/web");
const SNAPSHOT: (Kind, &str) = (Kind::Snapshot, "system/config/web");
const HEAD: (Kind, &str) = (Kind::Head, "system/config-head");

fn is(o: &Outbox, i: usize, want: &[(Kind, &str)]) {
    let want: Vec<(Kind, String)> = want.iter().map(|(k, t)| (*k, (*t).to_owned())).collect();
    assert_eq!(shape(o, i), want, "batch {i}");
}

#[test]
fn a_write_sends_its_event_and_delta_at_once_and_the_retained_snapshot_one_window_later() {
    let (mut log, mut o, t0) = setup();
    let t = t0 + Duration::from_secs(1);
    o.take_in(&log.set("web", "port", json!(80)), t);
    assert!(o.cut(t));
    is(&o, 1, &[EVENT, DELTA, HEAD]);
    let delta = payload(&o, 1, Kind::Delta);
    assert_eq!(delta["config"], json!({"port": 80}));
    assert_eq!(delta["sources"], json!({"port": "service"}));
    assert_eq!((delta["changed_epoch"].clone(), delta["prev_epoch"].clone()), (json!(2), json!(1)));
    let (_, b) = o.pending().nth(1).unwrap();
    assert_eq!(b.safe_seq, 1, "event 2 is not covered until its retained snapshot is out");
    let due = o.next_due().expect("the retained snapshot is due");
    assert_eq!(due, t + snapshot_window(1));
    assert!(!o.cut(due - Duration::from_nanos(1)), "nothing before the window ends");
    assert!(o.cut(due));
    is(&o, 2, &[SNAPSHOT]);
    assert_eq!(payload(&o, 2, Kind::Snapshot)["config"], json!({"port": 80}));
    assert_eq!(o.pending().nth(2).unwrap().1.safe_seq, 2);
    assert_eq!(o.next_due(), None);
}

#[test]
fn without_event_messages_a_write_sends_its_delta_alone_and_the_checkpoint_still_moves() {
    let (mut log, mut o, t0) = setup();
    o.publish_events(false);
    let t = t0 + Duration::from_secs(1);
    o.take_in(&log.set("web", "port", json!(80)), t);
    assert!(o.cut(t));
    is(&o, 1, &[DELTA, HEAD]);
    o.publish_events(true);
    let t2 = t + Duration::from_millis(1);
    o.take_in(&log.set("web", "port", json!(81)), t2);
    assert!(o.cut(t2));
    is(&o, 2, &[EVENT, DELTA]);
    let due = o.next_due().unwrap();
    assert!(o.cut(due));
    assert_eq!(o.pending().last().unwrap().1.safe_seq, 3, "the retained snapshot covers both writes");
}

#[test]
fn writes_within_a_window_each_get_a_delta_and_share_one_retained_snapshot_and_head() {
    let (mut log, mut o, t0) = setup();
    let t = t0 + Duration::from_secs(1);
    for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
        let at = t + Duration::from_micros(10 * i as u64);
        o.take_in(&log.set("web", key, json!(i)), at);
        assert!(o.cut(at));
    }
    is(&o, 1, &[EVENT, DELTA, HEAD]);
    is(&o, 2, &[EVENT, DELTA]);
    is(&o, 3, &[EVENT, DELTA]);
    // Each delta follows the one before: a client sees every version.
    let chain: Vec<(Value, Value)> = (1..4)
        .map(|i| payload(&o, i, Kind::Delta))
        .map(|d| (d["prev_epoch"].clone(), d["changed_epoch"].clone()))
        .collect();
    assert_eq!(chain, [(json!(1), json!(2)), (json!(2), json!(3)), (json!(3), json!(4))]);
    assert_eq!(o.pending().nth(3).unwrap().1.safe_seq, 1);
    // The snapshot's window started at the first write; the head's at the first head.
    let due = o.next_due().unwrap();
    assert_eq!(due, t + snapshot_window(3));
    assert!(o.cut(due));
    is(&o, 4, &[SNAPSHOT]);
    assert_eq!(payload(&o, 4, Kind::Snapshot)["config"], json!({"a": 0, "b": 1, "c": 2}), "it covers every write");
    assert_eq!(o.pending().nth(4).unwrap().1.safe_seq, 4);
    assert_eq!(o.next_due(), Some(t + HEAD_WINDOW));
    assert!(o.cut(t + HEAD_WINDOW));
    is(&o, 5, &[HEAD]);
    assert_eq!(payload(&o, 5, Kind::Head)["seq"], json!(4));
    assert_eq!(o.next_due(), None);
}

#[test]
fn the_window_grows_with_the_service_between_a_floor_and_a_cap() {
    assert_eq!(snapshot_window(0), SNAPSHOT_WINDOW_MIN);
    assert_eq!(snapshot_window(20), SNAPSHOT_WINDOW_MIN);
    assert_eq!(snapshot_window(400), Duration::from_millis(20));
    assert_eq!(snapshot_window(1_000), SNAPSHOT_WINDOW_MAX);
    assert_eq!(snapshot_window(usize::MAX), SNAPSHOT_WINDOW_MAX);
    assert!(SNAPSHOT_WINDOW_MAX <= Duration::from_millis(50), "the documented bound");
}

#[test]
fn the_acknowledged_position_waits_for_every_message_and_for_the_retained_snapshot() {
    let (mut log, mut o, t0) = setup();
    let t = t0 + Duration::from_secs(1);
    o.take_in(&log.set("web", "a", json!(1)), t);
    o.cut(t);
    let ids: Vec<u64> = o.pending().map(|(id, _)| id).collect();
    let sizes: Vec<usize> = o.pending().map(|(_, b)| b.msgs.len()).collect();
    assert_eq!(sizes, [3, 3]);
    // The registration batch: two of three messages acknowledged move nothing.
    assert!(!o.ack(ids[0]));
    assert!(!o.ack(ids[0]));
    assert_eq!(o.acked().map(|a| a.0), Some(0));
    // A later batch acknowledged first moves nothing either (in order only).
    for _ in 0..3 {
        assert!(!o.ack(ids[1]));
    }
    assert_eq!(o.acked().map(|a| a.0), Some(0));
    assert!(o.ack(ids[0]));
    assert_eq!(o.acked().map(|a| a.0), Some(1), "event 2's retained snapshot is not out yet");
    assert!(o.cut(t + Duration::from_secs(1)));
    let last = o.pending().last().unwrap().0;
    assert!(o.ack(last));
    assert_eq!(o.acked().map(|a| a.0), Some(2));
    assert_eq!(o.unacked(), 0);
    // Acknowledgements of unknown or finished batches are ignored.
    assert!(!o.ack(ids[0]));
    assert!(!o.ack(999));
}

#[test]
fn a_global_change_gives_every_service_a_delta_of_that_key() {
    let mut log = Log::new();
    let mut o = outbox();
    let t = Instant::now();
    let evs = log.write(vec![
        Change::RegisterService { service: "web".into() },
        Change::RegisterService { service: "db".into() },
        Change::RegisterService { service: "global".into() },
    ]);
    o.take_in(&evs, t);
    o.cut(t);
    o.take_in(&log.set("db", "region", json!("us")), t);
    o.take_in(&log.set("global", "region", json!("eu")), t);
    assert!(o.cut(t + Duration::from_secs(1)));
    let got: Vec<(Kind, String)> = shape(&o, 1);
    let deltas: Vec<&str> = got.iter().filter(|(k, _)| *k == Kind::Delta).map(|(_, t)| t.as_str()).collect();
    assert_eq!(deltas, ["system/config/db", "system/config/db", "system/config/global", "system/config/web"]);
    let (_, b) = o.pending().nth(1).unwrap();
    let docs: Vec<Value> = b
        .msgs
        .iter()
        .filter(|m| m.kind == Kind::Delta)
        .map(|m| {
            jws::verify(&serde_json::from_slice(&m.payload).unwrap(), jws::TYP_DELTA, &[key().verifying_key()]).unwrap()
        })
        .collect();
    // db keeps its own value (no change, but a new version); web inherits the new one.
    assert_eq!(
        (docs[1]["config"].clone(), docs[1]["sources"].clone()),
        (json!({"region": "us"}), json!({"region": "service"}))
    );
    assert_eq!(
        (docs[3]["config"].clone(), docs[3]["sources"].clone()),
        (json!({"region": "eu"}), json!({"region": "global"}))
    );
    assert_eq!(docs[3]["prev_epoch"], json!(1));
}

#[test]
fn an_unset_with_nothing_inherited_is_a_removed_key() {
    let (mut log, mut o, t0) = setup();
    o.take_in(&log.set("web", "a", json!(1)), t0);
    o.take_in(&log.write(vec![Change::Unset { service: "web".into(), key: "a".into() }]), t0);
    o.cut(t0);
    let (_, b) = o.pending().last().unwrap();
    let last_delta = b.msgs.iter().rev().find(|m| m.kind == Kind::Delta).unwrap();
    let doc =
        jws::verify(&serde_json::from_slice(&last_delta.payload).unwrap(), jws::TYP_DELTA, &[key().verifying_key()])
            .unwrap();
    assert_eq!((doc["config"].clone(), doc["removed"].clone()), (json!({}), json!(["a"])));
}

/// The versions of `service` in batch `i`, in order: (kind of the message, delta document).
fn versions_in(o: &Outbox, i: usize, service: &str) -> Vec<(Kind, Value)> {
    let (_, b) = o.pending().nth(i).expect("batch");
    let mut out = Vec::new();
    for m in b.msgs.iter().filter(|m| m.topic == format!("system/config/{service}")) {
        let message: Value = serde_json::from_slice(&m.payload).unwrap();
        let typs = [jws::TYP_DELTA, jws::TYP_DELTAS, jws::TYP_SNAPSHOT];
        let (typ, doc) = jws::verify_one_of(&message, &typs, &[key().verifying_key()]).expect("signed");
        // The payload is canonical JSON, as every signed document's.
        let text = String::from_utf8(
            base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                message["payload"].as_str().unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(text, confstore_core::state::canonical_json_text(&doc));
        match typ {
            jws::TYP_DELTAS => {
                assert_eq!(m.kind, Kind::Deltas);
                let each = confstore_core::stream::deltas_of(&doc).expect("a well-formed deltas message");
                out.extend(each.into_iter().map(|(d, _)| (Kind::Deltas, d.clone())));
            }
            _ => out.push((m.kind, doc)),
        }
    }
    out
}

#[test]
fn changesets_taken_in_together_give_every_version_signed_once_per_service() {
    use confstore_core::stream::apply_delta;
    let (mut log, mut o, t0) = setup();
    let doc_at = |state: &State, service: &str| {
        confstore_snapshots::project(state, &"00".repeat(16), 1, service).unwrap().to_json()
    };
    o.take_in(&log.set("web", "a", json!(1)), t0);
    assert!(o.cut(t0));
    let mut held = doc_at(&log.state, "web");
    // Five changesets committed together (a group commit's): web changed three times, db
    // registered and written.
    let mut evs = log.set("web", "b", json!(2));
    evs.extend(log.write(vec![Change::RegisterService { service: "db".into() }]));
    evs.extend(log.write(vec![
        Change::Set { service: "web".into(), key: "a".into(), value: json!(10) },
        Change::Unset { service: "web".into(), key: "b".into() },
    ]));
    evs.extend(log.set("db", "x", json!(1)));
    evs.extend(log.set("web", "c", json!(3)));
    o.take_in(&evs, t0);
    assert!(o.cut(t0));
    // Every event's message, then web's three versions in one message, signed once; db's
    // registration is its whole snapshot, and its write after it a delta alone.
    assert_eq!(shape(&o, 2).iter().filter(|(k, _)| *k == Kind::Event).count(), evs.len());
    let web = versions_in(&o, 2, "web");
    let chain: Vec<(Kind, Value, Value)> =
        web.iter().map(|(k, d)| (*k, d["prev_epoch"].clone(), d["changed_epoch"].clone())).collect();
    assert_eq!(
        chain,
        [(Kind::Deltas, json!(2), json!(3)), (Kind::Deltas, json!(3), json!(5)), (Kind::Deltas, json!(5), json!(7))]
    );
    let db: Vec<Kind> = versions_in(&o, 2, "db").into_iter().map(|(k, _)| k).collect();
    assert_eq!(db, [Kind::Snapshot, Kind::Delta]);
    // Applied in turn, they lead to the newest version.
    for (_, delta) in &web {
        held = apply_delta(&held, delta).unwrap();
    }
    let mut newest = doc_at(&log.state, "web");
    newest["epoch"] = held["epoch"].clone();
    assert_eq!(held, newest);
    assert_eq!(o.pending().nth(2).unwrap().1.msgs.iter().filter(|m| m.kind == Kind::Deltas).count(), 1);

    // A whole snapshot within the pass comes after the deltas before it.
    let mut evs = log.set("web", "d", json!(4));
    evs.extend(log.write(vec![Change::SetSchema {
        service: "web".into(),
        schema: json!({"type": "object", "properties": {"a": {}, "c": {}, "d": {}, "e": {}, "f": {}, "n": {}}}),
    }]));
    evs.extend(log.set("web", "e", json!(5)));
    evs.extend(log.set("web", "f", json!(6)));
    o.take_in(&evs, t0);
    assert!(o.cut(t0));
    let kinds: Vec<Kind> = versions_in(&o, 3, "web").into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, [Kind::Delta, Kind::Snapshot, Kind::Deltas, Kind::Deltas]);

    // More versions than one message holds: split, each part signed once, still a chain.
    let max = super::DELTAS_PER_MESSAGE_MAX;
    let evs: Vec<Arc<Verified>> = (0..max + 6).flat_map(|i| log.set("web", "n", json!(i))).collect();
    o.take_in(&evs, t0);
    assert!(o.cut(t0));
    let web = versions_in(&o, 4, "web");
    assert_eq!(web.len(), max + 6);
    assert!(web.windows(2).all(|w| w[1].1["prev_epoch"] == w[0].1["changed_epoch"]), "one chain");
    let messages: Vec<Kind> =
        o.pending().nth(4).unwrap().1.msgs.iter().filter(|m| m.kind != Kind::Event).map(|m| m.kind).collect();
    assert_eq!(messages, [Kind::Deltas, Kind::Deltas]);
}

#[test]
fn events_already_taken_in_are_skipped_and_a_reset_without_checkpoint_syncs_everything() {
    let (mut log, mut o, t0) = setup();
    let evs = log.set("web", "a", json!(1));
    o.take_in(&evs, t0);
    o.take_in(&evs, t0);
    o.cut(t0 + Duration::from_secs(1));
    assert_eq!(shape(&o, 1).iter().filter(|(k, _)| *k == Kind::Event).count(), 1);
    let state = log.state.clone();
    o.reset("00".repeat(16), 1, state, (2, Hash32::default()), false);
    assert_eq!(o.pending().count(), 1, "earlier batches are dropped");
    is(&o, 0, &[SNAPSHOT, HEAD]);
    assert_eq!(o.acked(), None);
    assert_eq!(o.next_due(), None);
}

#[test]
fn a_new_generation_republishes_every_service_whole() {
    let (log, mut o, t0) = setup();
    let mut body = log.events[0].body().clone();
    body.kind = confstore_core::event::EventKind::GenerationStarted {
        generation: 2,
        abandoned_seq: 9,
        abandoned_hash: [0; 32],
    };
    o.take_in(&[Arc::new(Sealed::new(2, log.events[0].hash(), body).verified().clone())], t0);
    assert!(o.cut(t0 + Duration::from_secs(1)));
    assert_eq!(o.identity().1, 2);
    is(&o, 1, &[SNAPSHOT, HEAD]);
    assert_eq!(payload(&o, 1, Kind::Snapshot)["generation"], json!(2));
}

const STAGED: (Kind, &str) = (Kind::Staged, "system/config-staged/web");

#[test]
fn a_rollout_publishes_its_staged_snapshot_then_its_end_and_a_full_sync_repeats_them() {
    use confstore_core::rollout::Cohort;
    use confstore_core::state::RolloutChange;
    let (mut log, mut o, t0) = setup();
    let t = t0 + Duration::from_secs(1);
    let start = Change::Rollout(RolloutChange::Start {
        service: "web".into(),
        cohort: Cohort::Instances(vec!["web-1".into()]),
        bake_ms: 60_000,
        auto: true,
    });
    let started = log.write(vec![start, Change::Set { service: "web".into(), key: "port".into(), value: json!(81) }]);
    let rollout_seq = started[0].seq();
    o.take_in(&started, t);
    assert!(o.cut(t));
    is(&o, 1, &[EVENT, STAGED, HEAD]);
    let staged = payload(&o, 1, Kind::Staged);
    assert_eq!(staged["state"], "active");
    assert_eq!(staged["rollout"], rollout_seq);
    assert_eq!(staged["cohort"], json!({"instances": ["web-1"]}));
    assert_eq!(staged["snapshot"]["config"], json!({"port": 81}), "the staged configuration");
    assert_eq!(staged["snapshot"]["changed_epoch"], staged["base_epoch"], "the base version's fields");
    // A full sync (a broker that lost its retained messages) sends it again.
    o.queue_full_sync();
    let last = o.pending().count() - 1;
    assert!(shape(&o, last).contains(&(Kind::Staged, "system/config-staged/web".to_owned())));
    // The abort replaces it with the end.
    let abort =
        Change::Rollout(RolloutChange::Abort { service: "web".into(), rollout_seq, automatic: false, cohort: vec![] });
    let t2 = t + Duration::from_secs(1);
    o.take_in(&log.write(vec![abort]), t2);
    assert!(o.cut(t2));
    let last = o.pending().count() - 1;
    let ended = payload(&o, last, Kind::Staged);
    assert_eq!((ended["state"].clone(), ended["rollout"].clone()), (json!("aborted"), json!(rollout_seq)));
    assert!(ended.get("snapshot").is_none());
}

/// `setup`, with every service's retained snapshot rendered off the task (as for large
/// services), and one write to `web` whose retained snapshot is due at the returned time.
fn setup_elsewhere() -> (Log, Outbox, Instant) {
    let (mut log, mut o, t0) = setup();
    o.render_elsewhere_from(1);
    let t = t0 + Duration::from_secs(1);
    o.take_in(&log.set("web", "a", json!(1)), t);
    assert!(o.cut(t));
    is(&o, 1, &[EVENT, DELTA, HEAD]);
    let due = o.next_due().expect("the retained snapshot is due");
    (log, o, due)
}

#[test]
fn a_large_service_s_retained_snapshot_is_rendered_off_the_task_and_goes_out_after_the_deltas_cut_meanwhile() {
    let (mut log, mut o, due) = setup_elsewhere();
    assert!(!o.cut(due), "the snapshot is not rendered in the cut");
    let job = o.take_render_job().expect("a render job");
    assert!(o.take_render_job().is_none(), "handed out once");
    assert!(o.rendering() && o.has_pending());
    assert_eq!(o.next_due(), None, "the job's end, not a timer, wakes the publisher");
    // Writes go on while it renders; their deltas do not wait, and the position the
    // checkpoint may reach stays before the change the snapshot covers.
    let t = due + Duration::from_millis(1);
    o.take_in(&log.set("web", "b", json!(2)), t);
    assert!(o.cut(t));
    is(&o, 2, &[EVENT, DELTA]);
    assert_eq!(o.pending().nth(2).unwrap().1.safe_seq, 1);
    let head_at = due - SNAPSHOT_WINDOW_MIN + HEAD_WINDOW;
    assert_eq!(o.next_due(), Some(head_at), "only the head: b's snapshot waits for the job in flight");
    let later = t + SNAPSHOT_WINDOW_MAX;
    assert!(o.cut(later));
    is(&o, 3, &[HEAD]);
    assert!(o.take_render_job().is_none(), "one job at a time");
    assert_eq!(o.pending().nth(3).unwrap().1.safe_seq, 1);
    // The job ends: its snapshot (of the state when it fell due) is a batch after them.
    assert!(o.rendered(job.run()));
    assert!(!o.rendering());
    is(&o, 4, &[SNAPSHOT]);
    let snap = payload(&o, 4, Kind::Snapshot);
    assert_eq!(snap["config"], json!({"a": 1}));
    assert_eq!(snap["changed_epoch"], json!(2));
    assert_eq!(o.pending().nth(4).unwrap().1.safe_seq, 2, "covered through a; b's snapshot is still due");
    // b's window has passed: the next cut makes the next job.
    assert_eq!(o.next_due(), Some(t + snapshot_window(2)));
    assert!(!o.cut(later));
    let second = o.take_render_job().expect("b's job");
    assert!(o.rendered(second.run()));
    assert_eq!(payload(&o, 5, Kind::Snapshot)["config"], json!({"a": 1, "b": 2}));
    assert_eq!(o.pending().nth(5).unwrap().1.safe_seq, 3);
    let sent: Vec<(u64, usize)> = o.pending().map(|(id, b)| (id, b.msgs.len())).collect();
    for (id, n) in sent {
        for _ in 0..n {
            o.ack(id);
        }
    }
    assert_eq!(o.acked().map(|a| a.0), Some(3), "everything published");
}

#[test]
fn a_rendered_snapshot_older_than_a_whole_one_sent_meanwhile_or_than_a_full_sync_is_dropped() {
    let (mut log, mut o, due) = setup_elsewhere();
    o.cut(due);
    let job = o.take_render_job().expect("a render job");
    // A schema sends web's whole snapshot at once: newer than the one being rendered.
    let t = due + Duration::from_millis(1);
    o.take_in(
        &log.write(vec![Change::SetSchema {
            service: "web".into(),
            schema: json!({"type": "object", "properties": {"a": {}, "c": {}}}),
        }]),
        t,
    );
    assert!(o.cut(t));
    is(&o, 2, &[EVENT, SNAPSHOT]);
    assert!(!o.rendered(job.run()), "it would replace the newer retained snapshot");
    assert!(!o.rendering());
    assert_eq!(o.pending().count(), 3);
    // A full sync renders everything itself; a job still out is forgotten.
    let t = t + Duration::from_secs(1);
    o.take_in(&log.set("web", "c", json!(3)), t);
    o.cut(t);
    o.cut(o.next_due().expect("c's snapshot"));
    let job = o.take_render_job().expect("c's job");
    o.queue_full_sync();
    assert!(!o.rendering());
    let batches = o.pending().count();
    assert!(!o.rendered(job.run()));
    assert_eq!(o.pending().count(), batches);
}

#[test]
fn a_lost_render_job_makes_its_snapshots_due_again() {
    let (_log, mut o, due) = setup_elsewhere();
    o.cut(due);
    let job = o.take_render_job().expect("a render job");
    o.render_lost(job.id() + 1);
    assert!(o.rendering(), "another job's id changes nothing");
    o.render_lost(job.id());
    assert!(!o.rendering());
    assert_eq!(o.next_due(), Some(due), "due as before");
    let again = {
        o.cut(due);
        o.take_render_job().expect("made again")
    };
    assert!(!o.rendered(job.run()), "the lost job's result, should it come, is not taken");
    assert!(o.rendered(again.run()));
    assert_eq!(payload(&o, 2, Kind::Snapshot)["config"], json!({"a": 1}));
    assert_eq!(o.pending().nth(2).unwrap().1.safe_seq, 2);
}

/// The deferred snapshot in the last batch: a retained message without payload, rendered
/// on demand (verified here).
fn deferred_in_last_batch(o: &Outbox) -> Value {
    let (_, b) = o.pending().last().expect("a batch");
    let m = b.msgs.iter().find(|m| m.kind == Kind::Deferred).expect("a deferred snapshot");
    assert!(m.retain && m.payload.is_empty() && m.topic == "system/config/web");
    let jws: Value = serde_json::from_slice(&m.bytes()).unwrap();
    jws::verify(&jws, jws::TYP_SNAPSHOT, &[key().verifying_key()]).expect("signed by the store key")
}

#[test]
fn deferred_large_snapshots_are_rendered_once_per_interval_and_once_more_when_the_writes_stop() {
    let (mut log, mut o, due) = setup_elsewhere();
    o.defer_large_snapshots(true);
    // The first window since the start is rendered: the current subscribers get it.
    assert!(!o.cut(due));
    let job = o.take_render_job().expect("rendered");
    assert!(o.rendered(job.run()));
    is(&o, 2, &[SNAPSHOT]);
    // Writes go on: each window within the interval leaves a deferred snapshot of the read
    // position, rendered by no one until asked.
    for i in 0..3 {
        let t = due + Duration::from_millis(100 * (i + 1));
        o.take_in(&log.set("web", "b", json!(i)), t);
        assert!(o.cut(t));
        let at = o.next_due().expect("the window");
        assert_eq!(at, t + snapshot_window(2));
        assert!(o.cut(at));
        assert!(o.take_render_job().is_none(), "deferred, not rendered");
        assert_eq!(deferred_in_last_batch(&o)["config"], json!({"a": 1, "b": i}));
    }
    // A window past the interval since the last render is rendered again.
    let t = due + super::DEFERRED_RENDER_INTERVAL + Duration::from_millis(100);
    o.take_in(&log.set("web", "b", json!(3)), t);
    assert!(o.cut(t));
    let at = o.next_due().expect("the window");
    assert_eq!(at, t + snapshot_window(2), "the window, not the settling render, comes first");
    o.cut(at);
    let job = o.take_render_job().expect("rendered again");
    assert!(o.rendered(job.run()));
    assert_eq!(payload(&o, o.pending().count() - 1, Kind::Snapshot)["config"], json!({"a": 1, "b": 3}));
    // The writes stop after a deferred one: a rendered snapshot follows one interval later.
    let t = at + Duration::from_millis(100);
    o.take_in(&log.set("web", "b", json!(4)), t);
    assert!(o.cut(t));
    let deferred_at = o.next_due().expect("the window");
    assert!(o.cut(deferred_at));
    assert!(o.take_render_job().is_none());
    assert_eq!(o.next_due(), Some(deferred_at + super::DEFERRED_RENDER_INTERVAL), "the settling render");
    assert!(!o.cut(deferred_at + super::DEFERRED_RENDER_INTERVAL));
    let job = o.take_render_job().expect("the settling render");
    assert!(o.rendered(job.run()));
    assert_eq!(payload(&o, o.pending().count() - 1, Kind::Snapshot)["config"], json!({"a": 1, "b": 4}));
    assert_eq!(o.next_due(), None, "nothing left to render");
    // Deferred snapshots count towards the checkpoint like any message the broker took.
    let sent: Vec<(u64, usize)> = o.pending().map(|(id, b)| (id, b.msgs.len())).collect();
    for (id, n) in sent {
        for _ in 0..n {
            o.ack(id);
        }
    }
    assert_eq!(o.acked().map(|a| a.0), Some(log.state.seq), "everything published");
}

#[test]
fn without_deferring_every_window_of_a_large_service_is_rendered() {
    let (mut log, mut o, due) = setup_elsewhere();
    o.cut(due);
    let job = o.take_render_job().expect("rendered");
    assert!(o.rendered(job.run()));
    let t = due + Duration::from_millis(100);
    o.take_in(&log.set("web", "b", json!(1)), t);
    o.cut(t);
    o.cut(o.next_due().expect("the window"));
    assert!(o.take_render_job().is_some(), "an external broker gets every window rendered");
}
