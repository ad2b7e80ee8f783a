//! The updater against signed snapshots and a fake REST server: the acceptance rule,
//! forgeries, gap walks and resyncs, the LKG high-water mark.

use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::testutil::{FakeRest, STORE, Signer, chain};

const TOPIC: &str = "system/config/web";

/// An updater for `web` trusting key 1, with an applied-sequence log.
struct Harness {
    updater: Updater,
    counters: Arc<Counters>,
    log: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl Harness {
    fn new(rest: Option<&FakeRest>, lkg_path: Option<PathBuf>, store_id: Option<&str>) -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&log);
        let on_update: OnUpdate = Arc::new(move |c: &Config| {
            seen.lock().unwrap().push((c.version().generation, c.version().changed_epoch));
        });
        let settings = UpdaterSettings {
            reporter: None,
            service: "web".into(),
            keys: vec![Signer::new(1).public()],
            store_id: store_id.map(str::to_owned),
            env: EnvOverrides::default(),
            on_update: Some(on_update),
            lkg_path,
            rest: rest.map(|r| Rest::new(&r.url, "web", None).unwrap()),
            instance: "web-1".into(),
            audit: None,
        };
        let counters = Arc::new(Counters::default());
        Self { updater: Updater::new(settings, Arc::clone(&counters)), counters, log }
    }

    async fn send(&mut self, topic: &str, jws: &Value) -> Offer {
        self.updater.on_message(topic, jws.to_string().as_bytes()).await
    }

    async fn send_all(&mut self, jws: &[Value]) {
        for j in jws {
            assert!(matches!(self.send(TOPIC, j).await, Offer::Applied));
        }
    }

    /// Changed epochs applied so far (generation 1 unless said otherwise).
    fn applied(&self) -> Vec<u64> {
        self.log.lock().unwrap().iter().map(|(_, e)| *e).collect()
    }

    fn stats(&self) -> crate::Stats {
        self.counters.snapshot()
    }
}

#[track_caller]
fn assert_rejected(offer: &Offer, kind: &str) {
    let ok = match offer {
        Offer::Held(r) => r.kind() == kind,
        Offer::Invalid { .. } => kind != "stale" && kind != "duplicate",
        Offer::Applied | Offer::Checkpoint | Offer::Staged => false,
    };
    assert!(ok, "expected a {kind} rejection, got {offer:?}");
}

#[tokio::test]
async fn applies_in_order_and_drops_replays_and_duplicates() {
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 5);
    let mut h = Harness::new(None, None, None);
    h.send_all(&versions[..3]).await;
    assert_rejected(&h.send(TOPIC, &versions[1]).await, "stale");
    assert_rejected(&h.send(TOPIC, &versions[0]).await, "stale");
    assert_rejected(&h.send(TOPIC, &versions[2]).await, "duplicate");
    h.send_all(&versions[3..]).await;
    for v in &versions {
        assert!(!matches!(h.send(TOPIC, v).await, Offer::Applied), "replay applied");
    }
    assert_eq!(h.applied(), [1, 2, 3, 4, 5]);
    let stats = h.stats();
    assert_eq!(stats.applied, 5);
    assert_eq!((stats.rejected("stale"), stats.rejected("duplicate")), (6, 2));
    assert_eq!(h.updater.current().unwrap().value("v"), Some(&json!(5)));
}

#[tokio::test]
async fn every_bit_flip_is_rejected_then_the_original_applies() {
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 2);
    let mut h = Harness::new(None, None, None);
    h.send_all(&versions[..1]).await;
    let bytes = versions[1].to_string().into_bytes();
    let mut flips = 0;
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut bad = bytes.clone();
            bad[i] ^= 1 << bit;
            let offer = h.updater.on_message(TOPIC, &bad).await;
            assert!(!matches!(offer, Offer::Applied), "flip of bit {bit} of byte {i} applied");
            flips += 1;
        }
    }
    let stats = h.stats();
    assert_eq!(stats.rejected_total(), flips);
    assert!(stats.rejected("signature") > 0 && stats.rejected("malformed") > 0, "{stats:?}");
    assert!(matches!(h.send(TOPIC, &versions[1]).await, Offer::Applied));
    assert_eq!(h.applied(), [1, 2]);
}

#[tokio::test]
async fn forgeries_and_misaddressed_snapshots_are_counted_by_kind() {
    let signer = Signer::new(1);
    let mut h = Harness::new(None, None, None);
    h.send_all(&chain(&signer, "web", 1)).await;
    let next = json!({"v": 2});
    let cases = [
        (TOPIC, Signer::new(9).snapshot("web", 1, 2, 1, next.clone()), "signature"),
        (TOPIC, signer.snapshot("api", 1, 2, 1, next.clone()), "wrong_service"),
        ("system/config/api", signer.snapshot("web", 1, 2, 1, next.clone()), "wrong_topic"),
        ("system/config-head", signer.snapshot("web", 1, 2, 1, next.clone()), "wrong_topic"),
        (
            TOPIC,
            Signer::new(1).for_store("11111111111111111111111111111111").snapshot("web", 1, 2, 1, next.clone()),
            "wrong_store",
        ),
        (TOPIC, signer.snapshot("web", 1, 3, 0, next.clone()), "forked"),
        (TOPIC, json!({"protected": "x"}), "signature"),
        (TOPIC, json!("a string"), "signature"),
    ];
    for (topic, jws, kind) in &cases {
        assert_rejected(&h.send(topic, jws).await, kind);
    }
    // A snapshot document signed with another typ (e.g. a head) is no snapshot.
    let head = confstore_core::jws::sign(
        &signer.document("web", 1, 2, 1, next.clone()),
        confstore_core::jws::TYP_HEAD,
        &confstore_core::SigningKey::from_seed(&[1; 32]),
    );
    assert_rejected(&h.send(TOPIC, &head).await, "signature");
    assert_rejected(&h.updater.on_message(TOPIC, b"\xff not json").await, "malformed");
    // A signed document without the version fields.
    assert_rejected(&h.send(TOPIC, &signer.sign(&json!({"service": "web"}))).await, "malformed");
    let stats = h.stats();
    let expected = [
        ("forked", 1),
        ("malformed", 2),
        ("signature", 4),
        ("wrong_service", 1),
        ("wrong_store", 1),
        ("wrong_topic", 2),
    ];
    assert_eq!(stats.rejected, expected.into_iter().collect());
    assert_eq!(h.applied(), [1], "nothing but the first version applied");
}

#[tokio::test]
async fn generations_move_forward_only() {
    let signer = Signer::new(1);
    let mut h = Harness::new(None, None, Some(STORE));
    h.send_all(&chain(&signer, "web", 5)).await;
    let restored = signer.snapshot("web", 2, 3, 2, json!({"v": "restored"}));
    assert!(matches!(h.send(TOPIC, &restored).await, Offer::Applied), "a new generation applies directly");
    assert_rejected(&h.send(TOPIC, &signer.snapshot("web", 1, 6, 5, json!({}))).await, "old_generation");
    assert_eq!(*h.log.lock().unwrap(), [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (2, 3)]);
}

#[tokio::test]
async fn a_gap_is_filled_from_rest_oldest_first() {
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 6);
    let rest = FakeRest::start().await;
    versions.iter().for_each(|v| rest.keep(v));
    let mut h = Harness::new(Some(&rest), None, None);
    h.send_all(&versions[..1]).await;
    assert!(matches!(h.send(TOPIC, &versions[4]).await, Offer::Applied));
    assert_eq!(h.applied(), [1, 2, 3, 4, 5]);
    assert_eq!(
        rest.requests(),
        [
            "/api/v1/services/web/snapshot?epoch=4",
            "/api/v1/services/web/snapshot?epoch=3",
            "/api/v1/services/web/snapshot?epoch=2"
        ]
    );
    // The late arrivals of the skipped versions are stale now; the next one applies.
    for v in &versions[1..4] {
        assert_rejected(&h.send(TOPIC, v).await, "stale");
    }
    assert!(matches!(h.send(TOPIC, &versions[5]).await, Offer::Applied));
    assert_eq!(h.applied(), [1, 2, 3, 4, 5, 6]);
    let stats = h.stats();
    assert_eq!((stats.applied, stats.gaps_filled, stats.resyncs), (6, 3, 0));
}

#[tokio::test]
async fn gaps_that_cannot_be_filled_resync_to_the_newest_version() {
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 71);
    let rest = FakeRest::start().await;
    versions.iter().for_each(|v| rest.keep(v));

    // REST down.
    rest.fail_with(Some(503));
    let mut h = Harness::new(Some(&rest), None, None);
    h.send_all(&versions[..1]).await;
    h.send_all(&versions[4..5]).await;
    assert_eq!(h.applied(), [1, 5]);
    assert_eq!((h.stats().resyncs, h.stats().gaps_filled), (1, 0));
    rest.fail_with(None);

    // More than the walk bound missing (6..=70): 64 fetched, then a resync.
    let before = rest.requests().len();
    h.send_all(&versions[70..]).await;
    assert_eq!(h.applied(), [1, 5, 71]);
    assert_eq!(rest.requests().len() - before, GAP_WALK_VERSIONS_MAX);
    assert_eq!((h.stats().resyncs, h.stats().gaps_filled), (2, 0));

    // No REST configured.
    let mut h = Harness::new(None, None, None);
    h.send_all(&versions[..1]).await;
    h.send_all(&versions[2..3]).await;
    assert_eq!((h.applied(), h.stats().resyncs), (vec![1, 3], 1));
}

#[tokio::test]
async fn a_wrong_or_forged_version_from_rest_is_not_applied() {
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 4);
    let rest = FakeRest::start().await;
    // REST answers ?epoch=3 with version 2: not what was asked for.
    rest.with_epoch(3, &versions[1]);
    let mut h = Harness::new(Some(&rest), None, None);
    h.send_all(&versions[..1]).await;
    h.send_all(&versions[3..]).await;
    assert_eq!((h.applied(), h.stats().resyncs), (vec![1, 4], 1));

    // REST answers with a version signed by an unknown key.
    let forged = chain(&Signer::new(9), "web", 6);
    rest.keep(&forged[4]);
    h.send_all(&[signer.snapshot("web", 1, 6, 5, json!({"v": 6}))]).await;
    assert_eq!((h.applied(), h.stats().resyncs), (vec![1, 4, 6], 2));
}

#[tokio::test]
async fn the_first_store_is_pinned() {
    let signer = Signer::new(1);
    let other = Signer::new(1).for_store("22222222222222222222222222222222");
    let mut h = Harness::new(None, None, None);
    h.send_all(&chain(&signer, "web", 1)).await;
    assert_rejected(&h.send(TOPIC, &other.snapshot("web", 1, 2, 1, json!({}))).await, "wrong_store");
    let mut h = Harness::new(None, None, Some("22222222222222222222222222222222"));
    assert_rejected(&h.send(TOPIC, &signer.snapshot("web", 1, 1, 0, json!({}))).await, "wrong_store");
    assert!(matches!(h.send(TOPIC, &other.snapshot("web", 1, 1, 0, json!({}))).await, Offer::Applied));
}

#[tokio::test]
async fn the_lkg_file_is_the_high_water_mark_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.lkg.json");
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 4);
    let mut h = Harness::new(None, Some(path.clone()), None);
    h.send_all(&versions[..3]).await;
    let saved = lkg::load(&path, &[signer.public()], None, "web").unwrap().unwrap();
    assert_eq!(saved.version.changed_epoch, 3, "written after every applied version");

    let mut restarted = Harness::new(None, Some(path.clone()), None);
    assert!(restarted.updater.resume_lkg().unwrap());
    assert_eq!(restarted.updater.current().unwrap().version().changed_epoch, 3);
    assert!(restarted.applied().is_empty(), "resuming is not applying");
    assert_rejected(&restarted.send(TOPIC, &versions[1]).await, "stale");
    assert_rejected(&restarted.send(TOPIC, &versions[2]).await, "duplicate");
    restarted.send_all(&versions[3..]).await;
    assert_eq!(restarted.applied(), [4]);
    // The pinned store came from the file.
    let other = Signer::new(1).for_store("33333333333333333333333333333333");
    assert_rejected(&restarted.send(TOPIC, &other.snapshot("web", 1, 5, 4, json!({}))).await, "wrong_store");
}

#[tokio::test]
async fn the_outlet_sees_every_applied_version() {
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 3);
    let mut h = Harness::new(None, None, None);
    assert!(h.updater.open_outlet().is_none(), "nothing held yet");
    h.send_all(&versions[..1]).await;
    let outlet = h.updater.open_outlet().unwrap();
    let mut rx = outlet.watch.subscribe();
    h.send_all(&versions[1..]).await;
    assert_eq!(outlet.config.load().version().changed_epoch, 3);
    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().version().changed_epoch, 3);
}

#[tokio::test]
async fn a_catch_up_takes_what_rest_has_and_counts_no_rejection() {
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 4);
    let rest = FakeRest::start().await;
    versions.iter().for_each(|v| rest.keep(v));
    rest.publish(&versions[3]);
    let mut h = Harness::new(Some(&rest), None, None);
    h.send_all(&versions[..1]).await;
    h.updater.catch_up().await.unwrap();
    assert_eq!(h.applied(), [1, 2, 3, 4]);
    h.updater.catch_up().await.unwrap();
    assert_eq!(h.applied(), [1, 2, 3, 4], "nothing new");
    let stats = h.stats();
    assert_eq!((stats.catch_ups, stats.gaps_filled, stats.rejected_total()), (2, 2, 0));

    rest.fail_with(Some(503));
    assert!(h.updater.catch_up().await.unwrap_err().contains("HTTP 503"));
    rest.fail_with(None);
    rest.publish(&Signer::new(9).snapshot("web", 1, 5, 4, json!({})));
    assert!(h.updater.catch_up().await.is_err(), "a forged answer is an error");
    assert!(Harness::new(None, None, None).updater.catch_up().await.is_ok(), "nothing to ask without REST");
}

#[tokio::test]
async fn deltas_apply_in_order_on_the_version_they_follow() {
    let signer = Signer::new(1);
    let mut h = Harness::new(None, None, None);
    h.send_all(&[signer.snapshot("web", 1, 1, 0, json!({"a": 1, "b": 2}))]).await;
    assert!(matches!(h.send(TOPIC, &signer.delta("web", 2, 1, json!({"a": 10}), &[])).await, Offer::Applied));
    assert!(matches!(h.send(TOPIC, &signer.delta("web", 3, 2, json!({"c": 3}), &["b"])).await, Offer::Applied));
    let held = h.updater.current().unwrap();
    assert_eq!(held.document()["config"], json!({"a": 10, "c": 3}));
    assert_eq!(held.document()["sources"], json!({"a": "service", "c": "service"}));
    assert_eq!((held.version().changed_epoch, held.version().prev_epoch), (3, 2));
    assert_eq!(h.applied(), [1, 2, 3]);
    // The same delta again, an older one, and the retained snapshot of the version held.
    assert_rejected(&h.send(TOPIC, &signer.delta("web", 3, 2, json!({"c": 3}), &["b"])).await, "duplicate");
    assert_rejected(&h.send(TOPIC, &signer.delta("web", 2, 1, json!({"a": 10}), &[])).await, "stale");
    assert_rejected(&h.send(TOPIC, &signer.snapshot("web", 1, 3, 2, json!({"a": 10, "c": 3}))).await, "duplicate");
    // A fork: a delta that does not descend from the held version.
    assert_rejected(&h.send(TOPIC, &signer.delta("web", 5, 1, json!({}), &[])).await, "forked");
}

#[tokio::test]
async fn forged_malformed_and_misaddressed_deltas_are_rejected() {
    let signer = Signer::new(1);
    let mut h = Harness::new(None, None, Some(STORE));
    h.send_all(&[signer.snapshot("web", 1, 1, 0, json!({"a": 1}))]).await;
    let forged = Signer::new(9).delta("web", 2, 1, json!({"a": 666}), &[]);
    assert_rejected(&h.send(TOPIC, &forged).await, "signature");
    let other_service = signer.delta("db", 2, 1, json!({"a": 666}), &[]);
    assert_rejected(&h.send(TOPIC, &other_service).await, "wrong_service");
    let other_store = Signer::new(1).for_store("33333333333333333333333333333333").delta("web", 2, 1, json!({}), &[]);
    assert_rejected(&h.send(TOPIC, &other_store).await, "wrong_store");
    // Signed, but "removed" names a key it also sets, or sources do not match config.
    let mut doc = signer.document("web", 1, 2, 1, json!({"a": 2}));
    doc["removed"] = json!(["a"]);
    let bad = signer.sign_delta(&doc);
    assert_rejected(&h.send(TOPIC, &bad).await, "malformed");
    assert_rejected(&h.send("system/config/db", &signer.delta("web", 2, 1, json!({}), &[])).await, "wrong_topic");
    assert_eq!(h.applied(), [1], "nothing forged was applied");
    assert!(matches!(h.send(TOPIC, &signer.delta("web", 2, 1, json!({"a": 2}), &[])).await, Offer::Applied));
}

#[tokio::test]
async fn a_delta_after_a_gap_fetches_the_versions_before_it_over_rest() {
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 3);
    let rest = FakeRest::start().await;
    versions.iter().for_each(|v| rest.keep(v));
    let mut h = Harness::new(Some(&rest), None, None);
    // Nothing held: a delta needs the version it follows first.
    assert!(matches!(h.send(TOPIC, &signer.delta("web", 4, 3, json!({"w": 4}), &[])).await, Offer::Applied));
    assert_eq!(h.applied(), [3, 4]);
    assert_eq!(h.updater.current().unwrap().document()["config"], json!({"v": 3, "w": 4}));
    assert_eq!(rest.requests(), ["/api/v1/services/web/snapshot?epoch=3"]);
}

#[tokio::test]
async fn the_lkg_file_keeps_the_deltas_until_the_retained_snapshot_covers_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.lkg.json");
    let signer = Signer::new(1);
    let mut h = Harness::new(None, Some(path.clone()), None);
    h.send_all(&[signer.snapshot("web", 1, 1, 0, json!({"a": 1}))]).await;
    h.send_all(&[signer.delta("web", 2, 1, json!({"a": 2}), &[]), signer.delta("web", 3, 2, json!({"b": 3}), &[])])
        .await;
    let saved = lkg::load(&path, &[signer.public()], None, "web").unwrap().unwrap();
    assert_eq!((saved.version.changed_epoch, saved.deltas.len()), (3, 2), "written after every applied version");
    assert_eq!(saved.document["config"], json!({"a": 2, "b": 3}));
    let mut restarted = Harness::new(None, Some(path.clone()), None);
    assert!(restarted.updater.resume_lkg().unwrap());
    assert_eq!(restarted.updater.current().unwrap().document()["config"], json!({"a": 2, "b": 3}));
    // The retained snapshot of version 3 replaces the deltas in the file.
    assert_rejected(&h.send(TOPIC, &signer.snapshot("web", 1, 3, 2, json!({"a": 2, "b": 3}))).await, "duplicate");
    let saved = lkg::load(&path, &[signer.public()], None, "web").unwrap().unwrap();
    assert_eq!((saved.version.changed_epoch, saved.deltas.len()), (3, 0));
    // A file whose deltas do not chain is refused.
    let text = std::fs::read_to_string(&path).unwrap();
    let mut file: Value = serde_json::from_str(&text).unwrap();
    file["deltas"] = json!([signer.delta("web", 5, 4, json!({}), &[])]);
    std::fs::write(&path, file.to_string()).unwrap();
    assert!(lkg::load(&path, &[signer.public()], None, "web").is_err());
}

#[tokio::test]
async fn several_deltas_signed_once_apply_version_by_version_and_are_one_entry_of_the_lkg_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.lkg.json");
    let signer = Signer::new(1);
    let mut h = Harness::new(None, Some(path.clone()), None);
    h.send_all(&[signer.snapshot("web", 1, 1, 0, json!({"a": 1}))]).await;
    let none: &[&str] = &[];
    let batch = signer
        .deltas("web", &[(2, 1, json!({"a": 2}), none), (3, 2, json!({"b": 3}), none), (4, 3, json!({}), &["a"])]);
    assert!(matches!(h.send(TOPIC, &batch).await, Offer::Applied));
    assert_eq!(h.applied(), [1, 2, 3, 4], "every version, in order");
    assert_eq!(h.updater.current().unwrap().document()["config"], json!({"b": 3}));
    let saved = lkg::load(&path, &[signer.public()], None, "web").unwrap().unwrap();
    assert_eq!((saved.version.changed_epoch, saved.deltas.len()), (4, 1), "the message is one entry");
    let mut restarted = Harness::new(None, Some(path.clone()), None);
    assert!(restarted.updater.resume_lkg().unwrap());
    assert_eq!(restarted.updater.current().unwrap().document()["config"], json!({"b": 3}));
    // A copy of it (a QoS 1 redelivery) is one rejection, a duplicate: its newest version is held.
    let before = h.stats().rejected_total();
    assert_rejected(&h.send(TOPIC, &batch).await, "duplicate");
    assert_eq!(h.stats().rejected_total(), before + 1);
    // A message whose first versions are held applies the rest; the file skips them on load.
    let overlapping = signer.deltas("web", &[(4, 3, json!({}), &["a"]), (5, 4, json!({"c": 5}), none)]);
    assert!(matches!(h.send(TOPIC, &overlapping).await, Offer::Applied));
    assert_eq!(h.applied(), [1, 2, 3, 4, 5]);
    let saved = lkg::load(&path, &[signer.public()], None, "web").unwrap().unwrap();
    assert_eq!((saved.version.changed_epoch, saved.deltas.len()), (5, 2));
    assert_eq!(saved.document["config"], json!({"b": 3, "c": 5}));
    // One that skips a version inside, or another service's, is refused whole.
    for bad in [
        signer.deltas("web", &[(6, 5, json!({"a": 6}), none), (8, 7, json!({"a": 8}), none)]),
        signer.deltas("db", &[(6, 5, json!({"a": 6}), none), (7, 6, json!({"a": 7}), none)]),
    ] {
        assert!(matches!(h.send(TOPIC, &bad).await, Offer::Invalid { .. }), "{bad}");
    }
    assert_eq!(h.applied(), [1, 2, 3, 4, 5]);
    // The retained snapshot of the message's newest version compacts the file.
    assert_rejected(&h.send(TOPIC, &signer.snapshot("web", 1, 5, 4, json!({"b": 3, "c": 5}))).await, "duplicate");
    let saved = lkg::load(&path, &[signer.public()], None, "web").unwrap().unwrap();
    assert_eq!((saved.version.changed_epoch, saved.deltas.len()), (5, 0));
}

#[tokio::test]
async fn a_snapshot_of_a_version_the_file_holds_as_a_delta_compacts_it_and_is_no_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.lkg.json");
    let signer = Signer::new(1);
    let mut h = Harness::new(None, Some(path.clone()), None);
    h.send_all(&[signer.snapshot("web", 1, 1, 0, json!({"a": 1}))]).await;
    h.send_all(&[
        signer.delta("web", 2, 1, json!({"a": 2}), &[]),
        signer.delta("web", 3, 2, json!({"b": 3}), &[]),
        signer.delta("web", 4, 3, json!({"c": 4}), &[]),
    ])
    .await;
    // The retained snapshot of version 3, signed while version 4's delta went out, comes
    // after it: the file keeps it in place of the first two deltas.
    assert_rejected(&h.send(TOPIC, &signer.snapshot("web", 1, 3, 2, json!({"a": 2, "b": 3}))).await, "stale");
    let saved = lkg::load(&path, &[signer.public()], None, "web").unwrap().unwrap();
    assert_eq!((saved.version.changed_epoch, saved.deltas.len()), (4, 1));
    assert_eq!(saved.document["config"], json!({"a": 2, "b": 3, "c": 4}));
    assert_eq!(h.updater.current().unwrap().version().changed_epoch, 4, "the version held is unchanged");
    assert_eq!(h.stats().rejected("stale"), 0, "a snapshot put to use is no rejection");
    // The same snapshot again (the file's own now): nothing to do, nothing counted.
    assert_rejected(&h.send(TOPIC, &signer.snapshot("web", 1, 3, 2, json!({"a": 2, "b": 3}))).await, "stale");
    assert_eq!(h.stats().rejected("stale"), 0);
    // A snapshot of a version the file does not hold (older than its snapshot, or one that
    // is not in the chain) is stale, counted, and changes nothing.
    assert_rejected(&h.send(TOPIC, &signer.snapshot("web", 1, 1, 0, json!({"a": 1}))).await, "stale");
    assert_rejected(&h.send(TOPIC, &signer.snapshot("web", 1, 2, 0, json!({"a": 2}))).await, "stale");
    assert_eq!(h.stats().rejected("stale"), 2);
    let again = lkg::load(&path, &[signer.public()], None, "web").unwrap().unwrap();
    assert_eq!((again.version.changed_epoch, again.deltas.len()), (4, 1));
    assert_eq!(again.jws, saved.jws);
}

/// The configuration readers see (the staged one while it runs).
fn shown(h: &Harness) -> (Option<Value>, Option<u64>) {
    let c = h.updater.effective().unwrap();
    (c.value("v").cloned(), c.rollout())
}

#[tokio::test]
async fn a_cohort_instance_runs_the_staged_version_until_it_ends_and_replays_change_nothing() {
    const STAGED: &str = "system/config-staged/web";
    let signer = Signer::new(1);
    let versions = chain(&signer, "web", 3);
    let mut h = Harness::new(None, None, None);
    h.send_all(&versions[..2]).await;
    let staged = signer.staged("web", 10, &["web-1"], 2, json!({"v": 99}));
    assert!(matches!(h.send(STAGED, &staged).await, Offer::Staged));
    assert_eq!(shown(&h), (Some(json!(99)), Some(10)), "in the cohort, on its base version");
    assert_eq!(h.applied(), [1, 2, 2], "on_update saw the staged configuration (base version fields)");
    // A redelivery is refused; the held version is unchanged.
    h.send(STAGED, &staged).await;
    assert_eq!(h.stats().rejected("staged_replayed"), 1);
    assert_eq!(h.updater.current().unwrap().value("v"), Some(&json!(2)));
    // Aborted: back to the current version at once; the old start replayed changes nothing.
    h.send(STAGED, &signer.staged_end("web", 10, "aborted", 0)).await;
    assert_eq!(shown(&h), (Some(json!(2)), None));
    h.send(STAGED, &staged).await;
    assert_eq!(shown(&h), (Some(json!(2)), None));
    assert_eq!(h.stats().rejected("staged_replayed"), 2);
    // Another instance's cohort: not applied.
    h.send(STAGED, &signer.staged("web", 11, &["web-2"], 2, json!({"v": 98}))).await;
    assert_eq!(shown(&h), (Some(json!(2)), None));
    // Promoted: the staged configuration runs on until the promoting version arrives.
    h.send(STAGED, &signer.staged("web", 12, &["web-1"], 2, json!({"v": 3}))).await;
    assert_eq!(shown(&h), (Some(json!(3)), Some(12)));
    h.send(STAGED, &signer.staged_end("web", 12, "promoted", 3)).await;
    assert_eq!(shown(&h), (Some(json!(3)), Some(12)));
    h.send_all(&versions[2..]).await;
    assert_eq!(shown(&h), (Some(json!(3)), None), "the promoting version replaces it");
    // Forged, misaddressed or for another base: refused or not run.
    let forged = Signer::new(2).staged("web", 20, &["web-1"], 3, json!({"v": 0}));
    h.send(STAGED, &forged).await;
    assert_eq!(h.stats().rejected("staged_signature"), 1);
    let other = signer.staged("db", 21, &["web-1"], 3, json!({"v": 0}));
    h.send(STAGED, &other).await;
    assert_eq!(h.stats().rejected("staged_misaddressed"), 1);
    h.send(STAGED, &signer.staged("web", 22, &["web-1"], 2, json!({"v": 0}))).await;
    assert_eq!(shown(&h), (Some(json!(3)), None), "staged on an older version: not run");
}
