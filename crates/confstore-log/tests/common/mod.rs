//! Helpers shared by the log's integration tests: temporary stores, drafts, a fixed clock.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use confstore_core::state::{Change, ChangesetDraft};
use confstore_core::{SigningKey, StoreId};
use confstore_log::{Clock, DbOptions, Store};

/// A clock that ticks 1 ms per reading, from a fixed start.
pub struct TickClock(pub AtomicU64);

impl Clock for TickClock {
    fn now_ms(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

pub fn clock() -> Arc<dyn Clock> {
    Arc::new(TickClock(AtomicU64::new(1_700_000_000_000)))
}

pub fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&[n; 32])
}

pub const STORE: StoreId = StoreId([0x5a; 16]);

pub struct TempStore {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn temp_store() -> (TempStore, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.db");
    let store = Store::create(&path, key(1), STORE, "test", clock(), &DbOptions::default()).expect("create");
    (TempStore { dir, path }, store)
}

pub fn draft(changes: Vec<Change>) -> ChangesetDraft {
    ChangesetDraft {
        actor: "test".into(),
        reason: "because".into(),
        request_id: "req".into(),
        expected_epoch: None,
        changes,
    }
}

pub fn register(service: &str) -> Change {
    Change::RegisterService { service: service.into() }
}

pub fn set(service: &str, key: &str, value: serde_json::Value) -> Change {
    Change::Set { service: service.into(), key: key.into(), value }
}

pub fn unset(service: &str, key: &str) -> Change {
    Change::Unset { service: service.into(), key: key.into() }
}

/// The store at `path` after a fault: `integrity_check` ok, the chain verifies, and every
/// acknowledged changeset is there with its hash (`what` names the case in a failure).
pub fn check_acked(path: &std::path::Path, acked: &[confstore_log::Receipt], what: &str) {
    let reader = confstore_log::LogReader::open(path).unwrap_or_else(|e| panic!("{what}: reader: {e}"));
    let ok: String = reader.connection().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok", "{what}: integrity_check");
    let verified = reader.verify(None, &mut |_| ()).unwrap_or_else(|e| panic!("{what}: verify read: {e}"));
    assert!(verified.is_ok(), "{what}: the chain does not verify: {verified:?}");
    for r in acked {
        let ev = reader.events_chunk(r.last_seq, r.last_seq).unwrap();
        assert_eq!(ev.first().map(|e| e.hash), Some(r.hash), "{what}: acknowledged seq {} lost or altered", r.last_seq);
    }
}
