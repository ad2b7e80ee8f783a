//! Golden service snapshots: fixture logs in `tests/data/<case>/log.txt` are turned into a
//! real signed log through `decide`, verified, folded, and projected; each service's
//! snapshot must equal `snapshots/<case>/<service>.json` byte for byte. Set
//! `CONFSTORE_UPDATE_SNAPSHOTS=1` to rewrite the golden files, then review the diff.
//!
//! Fixture lines (one changeset each): `register S1 S2`, `set S.K=JSON ...`, `unset S.K ...`,
//! `schema S {JSON}`, `rollback EPOCH`; `#` starts a comment.

use std::path::{Path, PathBuf};

use confstore_core::chain::genesis_hash;
use confstore_core::state::{Change, ChangesetDraft, decide, seal, store_created};
use confstore_core::timetravel::rollback_changes;
use confstore_core::{ChainVerifier, SigningKey, State, StoreId, StoredEvent};
use confstore_snapshots::project;

const STORE: StoreId = StoreId([0; 16]);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn parse_line(line: &str, state: &State, at_epoch: &[State]) -> Vec<Change> {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let split = |pair: &str| -> (String, String) {
        let (sk, _) = pair.split_once('=').unwrap_or((pair, ""));
        let (s, k) = sk.split_once('.').unwrap_or_else(|| panic!("{pair:?}: write SERVICE.KEY"));
        (s.to_owned(), k.to_owned())
    };
    match verb {
        "register" => rest.split_whitespace().map(|s| Change::RegisterService { service: s.to_owned() }).collect(),
        "set" => rest
            .split_whitespace()
            .map(|pair| {
                let (service, key) = split(pair);
                let json = &pair[pair.find('=').expect("KEY=JSON") + 1..];
                let value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{pair:?}: {e}"));
                Change::Set { service, key, value }
            })
            .collect(),
        "unset" => rest
            .split_whitespace()
            .map(|pair| {
                let (service, key) = split(pair);
                Change::Unset { service, key }
            })
            .collect(),
        "schema" => {
            let (service, json) = rest.split_once(' ').expect("schema SERVICE JSON");
            let schema = serde_json::from_str(json).unwrap_or_else(|e| panic!("schema of {service}: {e}"));
            vec![Change::SetSchema { service: service.to_owned(), schema }]
        }
        "rollback" => {
            let epoch: usize = rest.trim().parse().expect("rollback EPOCH");
            rollback_changes(state, &at_epoch[epoch], epoch as u64, None)
        }
        other => panic!("unknown fixture verb {other:?}"),
    }
}

/// Builds, signs and verifies the fixture's log; returns the state at its head.
fn replay_fixture(text: &str) -> State {
    let key = SigningKey::from_seed(&[3; 32]);
    let created = store_created(STORE, &key, "t", "r", 0);
    let mut events: Vec<StoredEvent> = vec![seal(1, &genesis_hash(&STORE), &created, &key)];
    let mut state = State::default();
    state.apply_body(1, &created);
    let mut at_epoch = vec![State::default()];
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let changes = parse_line(line, &state, &at_epoch);
        let draft = ChangesetDraft {
            actor: "fixture".into(),
            reason: format!("line {}", n + 1),
            request_id: format!("l{}", n + 1),
            expected_epoch: None,
            changes,
        };
        let bodies = decide(&state, &draft, n as u64).unwrap_or_else(|e| panic!("line {}: {e}", n + 1));
        for body in bodies {
            let prev = events.last().map(|e| e.hash).unwrap_or_default();
            let ev = seal(events.len() as u64 + 1, &prev, &body, &key);
            state.apply_body(ev.seq, &body);
            events.push(ev);
        }
        at_epoch.push(state.clone());
    }
    // The projection is fed the real way: only verified events.
    let mut verifier = ChainVerifier::new(STORE, Some(key.verifying_key()));
    let mut folded = State::default();
    for ev in &events {
        verifier.push(ev).expect("fixture log verifies");
        verifier.take_ready().iter().for_each(|v| {
            folded.apply(v);
        });
    }
    verifier.flush_ready().expect("verifies").iter().for_each(|v| {
        folded.apply(v);
    });
    verifier.finish().expect("fixture log verifies");
    assert_eq!(folded, state, "the fold of the verified log equals the writer's state");
    folded
}

#[track_caller]
fn check(case: &str) {
    let text = std::fs::read_to_string(root().join("tests/data").join(case).join("log.txt")).expect("fixture");
    let state = replay_fixture(&text);
    let dir = root().join("snapshots").join(case);
    let update = std::env::var("CONFSTORE_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1");
    for service in state.services.keys() {
        let snapshot = project(&state, &STORE.to_hex(), 1, service).expect("registered");
        let canonical: serde_json::Value = serde_json::from_str(&snapshot.to_canonical_json()).expect("json");
        let text = serde_json::to_string_pretty(&canonical).expect("json") + "\n";
        let path = dir.join(format!("{service}.json"));
        if update {
            std::fs::create_dir_all(&dir).expect("snapshots dir");
            std::fs::write(&path, &text).expect("writing a golden snapshot");
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run with CONFSTORE_UPDATE_SNAPSHOTS=1 to create it", path.display()));
        assert_eq!(
            text,
            golden,
            "{} differs from the projection (CONFSTORE_UPDATE_SNAPSHOTS=1 rewrites it)",
            path.display()
        );
    }
}

#[test]
fn later_write_wins() {
    check("later-write-wins");
}

#[test]
fn global_and_defaults() {
    check("global-and-defaults");
}

#[test]
fn rollback() {
    check("rollback");
}
