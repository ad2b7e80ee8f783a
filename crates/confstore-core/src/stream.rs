//! The MQTT stream (docs/design.md §9, docs/format.md §17): MQTT topic names, the documents
//! published on them, and the rule by which a client accepts a snapshot. The publisher
//! (confstore-server) and the client library (confstore-client) share this module, so the
//! two sides cannot drift; the JSON Schemas in docs/schemas/ describe the same documents for
//! clients in other languages.
//!
//! No I/O: callers pass documents in and get verdicts out.

use serde_json::{Value, json};

use crate::event::EventBody;
use crate::jws::{self, JwsError};
use crate::keys::VerifyingKey;

/// Prefix of a service's snapshot topic: `system/config/<service>` (QoS 1, retained).
pub const SNAPSHOT_TOPIC_PREFIX: &str = "system/config/";
/// Prefix of a service's event topic: `system/config-events/<service>` (QoS 1).
pub const EVENTS_TOPIC_PREFIX: &str = "system/config-events/";
/// The signed head (QoS 1, retained; republished every few seconds as a progress message).
pub const HEAD_TOPIC: &str = "system/config-head";
/// The latest signed Merkle-tree checkpoint, a C2SP note (QoS 1, retained; docs/format.md §19).
pub const CHECKPOINT_TOPIC: &str = "system/config-checkpoint";
/// The publisher's health (QoS 1, retained; the last will says `offline`).
pub const HEALTH_TOPIC: &str = "system/health/config-manager";

/// `system/config/<service>`.
pub fn snapshot_topic(service: &str) -> String {
    format!("{SNAPSHOT_TOPIC_PREFIX}{service}")
}

/// `system/config-events/<service>`.
pub fn events_topic(service: &str) -> String {
    format!("{EVENTS_TOPIC_PREFIX}{service}")
}

/// The service a snapshot topic is for.
pub fn service_of_snapshot_topic(topic: &str) -> Option<&str> {
    topic.strip_prefix(SNAPSHOT_TOPIC_PREFIX).filter(|s| !s.is_empty() && !s.contains('/'))
}

/// Where in the log a published document stands: shared by events and heads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position<'a> {
    /// Store id (hex).
    pub store_id: &'a str,
    /// Store generation.
    pub generation: u64,
    /// Seq of the event (or of the head).
    pub seq: u64,
    /// Hash of that event (hex).
    pub hash: &'a str,
}

/// The document of an event message (JWS `typ` [`jws::TYP_EVENT`]): where it stands, its
/// epoch, time and service, and the decoded body as in an export line — which carries no
/// secret material (a `secret_set` shows key and key version only).
pub fn event_document(at: &Position<'_>, body: &EventBody) -> Value {
    json!({
        "store_id": at.store_id,
        "generation": at.generation,
        "seq": at.seq,
        "hash": at.hash,
        "epoch": body.epoch,
        "time_ms": body.time_ms,
        "service": body.service(),
        "event": body.to_json(),
    })
}

/// The document of a signed head (JWS `typ` [`jws::TYP_HEAD`]).
pub fn head_document(at: &Position<'_>, epoch: u64, time_ms: u64) -> Value {
    json!({
        "store_id": at.store_id,
        "generation": at.generation,
        "seq": at.seq,
        "epoch": epoch,
        "hash": at.hash,
        "time_ms": time_ms,
    })
}

/// The publisher's health (plain JSON, not signed: it is advice, not data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health<'a> {
    /// `online` or `offline`.
    pub status: &'a str,
    /// Store id (hex).
    pub store_id: &'a str,
    /// Seq of the newest event in the log.
    pub head_seq: u64,
    /// Seq up to which everything is published and acknowledged by the broker.
    pub published_seq: u64,
    /// When this was said (unix ms).
    pub time_ms: u64,
    /// Why, when offline.
    pub reason: Option<&'a str>,
}

impl Health<'_> {
    /// The JSON document.
    pub fn to_json(&self) -> Value {
        json!({
            "status": self.status,
            "store_id": self.store_id,
            "head_seq": self.head_seq,
            "published_seq": self.published_seq,
            "time_ms": self.time_ms,
            "reason": self.reason,
        })
    }
}

/// The version fields of a verified snapshot document: what a client compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotVersion {
    /// Store id (hex).
    pub store_id: String,
    /// The service.
    pub service: String,
    /// Store generation.
    pub generation: u64,
    /// The epoch the snapshot reflects.
    pub epoch: u64,
    /// The last epoch that changed this service (its version).
    pub changed_epoch: u64,
    /// The version before, 0 for the first.
    pub prev_epoch: u64,
    /// Seq of the last event that changed it.
    pub changed_seq: u64,
}

/// Why a snapshot is not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not a valid JWS of a snapshot signed by a trusted key.
    #[error(transparent)]
    Signature(#[from] JwsError),
    /// The signed document lacks a field or has one of the wrong type.
    #[error("snapshot document: {0}")]
    Malformed(String),
    /// Signed for another store.
    #[error("snapshot is for store {found}, not {expected}")]
    WrongStore {
        /// In the document.
        found: String,
        /// Configured.
        expected: String,
    },
    /// Signed for another service than the topic or the client's.
    #[error("snapshot is for service {found:?}, not {expected:?}")]
    WrongService {
        /// In the document.
        found: String,
        /// Expected.
        expected: String,
    },
    /// A version the client has already moved past (a replay, or a stale retained message).
    #[error("snapshot version {incoming} is older than the held {held}")]
    Stale {
        /// Incoming changed epoch.
        incoming: u64,
        /// Held changed epoch.
        held: u64,
    },
    /// The version the client holds (a QoS 1 redelivery or a replay of it).
    #[error("snapshot version {0} is already held")]
    Duplicate(u64),
    /// From an older generation of the store (a replay across a restore).
    #[error("snapshot is from generation {incoming}, the client holds generation {held}")]
    OldGeneration {
        /// Incoming.
        incoming: u64,
        /// Held.
        held: u64,
    },
    /// Newer, but its chain does not lead back to the held version: a fork.
    #[error("snapshot version {incoming} follows {prev}, which is before the held {held}")]
    Forked {
        /// Incoming changed epoch.
        incoming: u64,
        /// Its prev_epoch.
        prev: u64,
        /// Held changed epoch.
        held: u64,
    },
}

impl Rejection {
    /// A short stable name, for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Signature(_) => "signature",
            Self::Malformed(_) => "malformed",
            Self::WrongStore { .. } => "wrong_store",
            Self::WrongService { .. } => "wrong_service",
            Self::Stale { .. } => "stale",
            Self::Duplicate(_) => "duplicate",
            Self::OldGeneration { .. } => "old_generation",
            Self::Forked { .. } => "forked",
        }
    }
}

/// What to do with a verified, correctly addressed snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Take it: it is the next version (or the first, or a new generation).
    Apply,
    /// Versions are missing between the held one and this: fetch the version at
    /// `missing_epoch` (this one's `prev_epoch`) first, then judge this one again.
    Gap {
        /// The epoch of the newest missing version.
        missing_epoch: u64,
    },
}

/// Verifies a snapshot JWS and reads its version fields, checking store and service.
pub fn verify_snapshot(
    jws_doc: &Value,
    keys: &[VerifyingKey],
    store_id: &str,
    service: &str,
) -> Result<(Value, SnapshotVersion), Rejection> {
    let doc = jws::verify(jws_doc, jws::TYP_SNAPSHOT, keys)?;
    let version = snapshot_version(&doc)?;
    if version.store_id != store_id {
        return Err(Rejection::WrongStore { found: version.store_id, expected: store_id.to_owned() });
    }
    if version.service != service {
        return Err(Rejection::WrongService { found: version.service, expected: service.to_owned() });
    }
    Ok((doc, version))
}

/// The version fields of a snapshot document.
pub fn snapshot_version(doc: &Value) -> Result<SnapshotVersion, Rejection> {
    let text = |k: &str| {
        doc.get(k).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| Rejection::Malformed(format!("no {k:?}")))
    };
    let number = |k: &str| doc.get(k).and_then(Value::as_u64).ok_or_else(|| Rejection::Malformed(format!("no {k:?}")));
    if !doc.get("config").is_some_and(Value::is_object) {
        return Err(Rejection::Malformed("no \"config\" object".into()));
    }
    Ok(SnapshotVersion {
        store_id: text("store_id")?,
        service: text("service")?,
        generation: number("generation")?,
        epoch: number("epoch")?,
        changed_epoch: number("changed_epoch")?,
        prev_epoch: number("prev_epoch")?,
        changed_seq: number("changed_seq")?,
    })
}

/// What a verified message on a service's snapshot topic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateKind {
    /// A whole snapshot (`typ` [`jws::TYP_SNAPSHOT`]; retained, or from REST).
    Snapshot,
    /// A delta (`typ` [`jws::TYP_DELTA`]; not retained): one version as the keys it changed.
    Delta,
    /// Several consecutive deltas signed once (`typ` [`jws::TYP_DELTAS`]; not retained): the
    /// versions the publisher took in together (docs/adr/0035). [`deltas_of`] lists them.
    Deltas,
}

/// Verifies a message of `system/config/<service>` — a snapshot, a delta, or several
/// deltas — and reads its version fields (for several deltas, the first's: [`deltas_of`]
/// lists them all, checked here), checking store (when pinned) and service.
pub fn verify_update(
    jws_doc: &Value,
    keys: &[VerifyingKey],
    store_id: Option<&str>,
    service: &str,
) -> Result<(UpdateKind, Value, SnapshotVersion), Rejection> {
    let (typ, doc) = jws::verify_one_of(jws_doc, &[jws::TYP_SNAPSHOT, jws::TYP_DELTA, jws::TYP_DELTAS], keys)?;
    let (kind, version) = match typ {
        jws::TYP_DELTA => {
            check_delta_shape(&doc)?;
            (UpdateKind::Delta, snapshot_version(&doc)?)
        }
        jws::TYP_DELTAS => {
            let first = deltas_of(&doc)?.swap_remove(0).1;
            (UpdateKind::Deltas, first)
        }
        _ => (UpdateKind::Snapshot, snapshot_version(&doc)?),
    };
    if let Some(store_id) = store_id
        && version.store_id != store_id
    {
        return Err(Rejection::WrongStore { found: version.store_id, expected: store_id.to_owned() });
    }
    if version.service != service {
        return Err(Rejection::WrongService { found: version.service, expected: service.to_owned() });
    }
    Ok((kind, doc, version))
}

/// The versions of a deltas document (`typ` [`jws::TYP_DELTAS`], docs/format.md §17.2):
/// each delta document with its version fields, oldest first. Checked: `{"deltas": [...]}`
/// and nothing else, 2 to [`crate::limits::STREAM_DELTAS_PER_MESSAGE_MAX`] deltas, each well formed,
/// all of one store, service and generation, each following the one before it
/// (`prev_epoch` = the previous one's `changed_epoch`).
pub fn deltas_of(doc: &Value) -> Result<Vec<(&Value, SnapshotVersion)>, Rejection> {
    let malformed = |why: String| Rejection::Malformed(format!("deltas document: {why}"));
    let list = match doc.as_object().map(|o| (o.len(), o.get("deltas"))) {
        Some((1, Some(Value::Array(list)))) => list,
        _ => return Err(malformed("not an object with only a \"deltas\" array".into())),
    };
    let max = crate::limits::STREAM_DELTAS_PER_MESSAGE_MAX;
    if list.len() < 2 || list.len() > max {
        return Err(malformed(format!("{} deltas; 2 to {max} expected", list.len())));
    }
    let mut out: Vec<(&Value, SnapshotVersion)> = Vec::with_capacity(list.len());
    for (i, delta) in list.iter().enumerate() {
        let version = check_delta_shape(delta).and_then(|()| snapshot_version(delta)).map_err(|e| match e {
            Rejection::Malformed(why) => malformed(format!("deltas[{i}]: {why}")),
            other => other,
        })?;
        if let Some((_, before)) = out.last() {
            if (&version.store_id, &version.service, version.generation)
                != (&before.store_id, &before.service, before.generation)
            {
                return Err(malformed(format!("deltas[{i}] is of another store, service or generation")));
            }
            if version.prev_epoch != before.changed_epoch || version.changed_epoch <= before.changed_epoch {
                return Err(malformed(format!(
                    "deltas[{i}] (version {} after {}) does not follow deltas[{}] (version {})",
                    version.changed_epoch,
                    version.prev_epoch,
                    i - 1,
                    before.changed_epoch
                )));
            }
        }
        out.push((delta, version));
    }
    Ok(out)
}

fn check_delta_shape(doc: &Value) -> Result<(), Rejection> {
    let malformed = |why: &str| Rejection::Malformed(format!("delta document: {why}"));
    let config = doc.get("config").and_then(Value::as_object).ok_or_else(|| malformed("no \"config\" object"))?;
    let sources = doc.get("sources").and_then(Value::as_object).ok_or_else(|| malformed("no \"sources\" object"))?;
    if config.keys().any(|k| !sources.get(k).is_some_and(Value::is_string)) || sources.len() != config.len() {
        return Err(malformed("\"sources\" must name the source of exactly the keys in \"config\""));
    }
    let removed = doc.get("removed").and_then(Value::as_array).ok_or_else(|| malformed("no \"removed\" array"))?;
    if removed.iter().any(|k| k.as_str().is_none_or(|k| config.contains_key(k))) {
        return Err(malformed("\"removed\" must list key names not in \"config\""));
    }
    Ok(())
}

/// The members of a snapshot document a delta carries whole: its version fields and schema
/// hash. Everything but `config` and `sources`.
pub const DELTA_VERSION_FIELDS: [&str; 8] =
    ["store_id", "service", "generation", "epoch", "changed_epoch", "changed_seq", "prev_epoch", "schema_hash"];

/// A delta document, checked and taken apart: what [`apply_delta`] (and the client's
/// incremental configuration) apply.
#[derive(Debug)]
pub struct DeltaParts<'a> {
    /// The keys set: key → value.
    pub config: &'a serde_json::Map<String, Value>,
    /// Their sources: key → source name (exactly the keys of `config`).
    pub sources: &'a serde_json::Map<String, Value>,
    /// The keys that no longer resolve to a value (none of them in `config`).
    pub removed: Vec<&'a str>,
    /// [`DELTA_VERSION_FIELDS`] with their values, in that order.
    pub version: Vec<(&'static str, &'a Value)>,
}

/// Checks a delta document's shape and takes it apart.
pub fn delta_parts(delta: &Value) -> Result<DeltaParts<'_>, Rejection> {
    check_delta_shape(delta)?;
    let malformed = |why: String| Rejection::Malformed(format!("delta document: {why}"));
    let (Some(Value::Object(config)), Some(Value::Object(sources)), Some(Value::Array(removed))) =
        (delta.get("config"), delta.get("sources"), delta.get("removed"))
    else {
        return Err(malformed("no \"config\", \"sources\" or \"removed\"".into()));
    };
    let removed = removed.iter().filter_map(Value::as_str).collect();
    let version = DELTA_VERSION_FIELDS
        .iter()
        .map(|&field| delta.get(field).map(|v| (field, v)).ok_or_else(|| malformed(format!("no {field:?}"))))
        .collect::<Result<_, _>>()?;
    Ok(DeltaParts { config, sources, removed, version })
}

/// The snapshot document a delta leads to from `base`, the document of the version it
/// follows (the caller has judged it the next one): `base` with the delta's keys set,
/// its removed keys gone, and the delta's version fields and schema hash.
pub fn apply_delta(base: &Value, delta: &Value) -> Result<Value, Rejection> {
    let parts = delta_parts(delta)?;
    let mut out = base.clone();
    for (member, set) in [("config", parts.config), ("sources", parts.sources)] {
        let Some(Value::Object(target)) = out.get_mut(member) else {
            return Err(Rejection::Malformed(format!("snapshot document: no {member:?} object")));
        };
        for key in &parts.removed {
            target.remove(*key);
        }
        for (k, v) in set {
            target.insert(k.clone(), v.clone());
        }
    }
    for (field, v) in parts.version {
        out[field] = v.clone();
    }
    Ok(out)
}

/// The acceptance rule for a delta: [`judge`]'s, except that a delta only ever follows the
/// version it names in the same generation. With nothing held, or a generation change,
/// the version before it must be fetched first (a gap at its `prev_epoch`).
pub fn judge_delta(held: Option<&SnapshotVersion>, incoming: &SnapshotVersion) -> Result<Verdict, Rejection> {
    match held {
        Some(h) if h.generation == incoming.generation => judge(held, incoming),
        Some(h) if incoming.generation < h.generation => {
            Err(Rejection::OldGeneration { incoming: incoming.generation, held: h.generation })
        }
        _ => Ok(Verdict::Gap { missing_epoch: incoming.prev_epoch }),
    }
}

/// The acceptance rule (docs/format.md §17.3): given the version a client holds (if any),
/// is `incoming` — already verified and addressed to it — the next one to apply?
pub fn judge(held: Option<&SnapshotVersion>, incoming: &SnapshotVersion) -> Result<Verdict, Rejection> {
    let Some(held) = held else { return Ok(Verdict::Apply) };
    if incoming.generation < held.generation {
        return Err(Rejection::OldGeneration { incoming: incoming.generation, held: held.generation });
    }
    if incoming.generation > held.generation {
        return Ok(Verdict::Apply);
    }
    let (inc, have) = (incoming.changed_epoch, held.changed_epoch);
    if inc < have {
        return Err(Rejection::Stale { incoming: inc, held: have });
    }
    if inc == have {
        return Err(Rejection::Duplicate(inc));
    }
    match incoming.prev_epoch.cmp(&have) {
        std::cmp::Ordering::Equal => Ok(Verdict::Apply),
        std::cmp::Ordering::Greater => Ok(Verdict::Gap { missing_epoch: incoming.prev_epoch }),
        std::cmp::Ordering::Less => Err(Rejection::Forked { incoming: inc, prev: incoming.prev_epoch, held: have }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(generation: u64, changed: u64, prev: u64) -> SnapshotVersion {
        SnapshotVersion {
            store_id: "s".into(),
            service: "web".into(),
            generation,
            epoch: changed,
            changed_epoch: changed,
            prev_epoch: prev,
            changed_seq: changed * 2,
        }
    }

    #[test]
    fn judge_orders_versions() {
        assert_eq!(judge(None, &v(1, 5, 3)), Ok(Verdict::Apply));
        let held = v(1, 5, 3);
        assert_eq!(judge(Some(&held), &v(1, 7, 5)), Ok(Verdict::Apply));
        assert_eq!(judge(Some(&held), &v(1, 9, 7)), Ok(Verdict::Gap { missing_epoch: 7 }));
        assert_eq!(judge(Some(&held), &v(1, 5, 3)), Err(Rejection::Duplicate(5)));
        assert_eq!(judge(Some(&held), &v(1, 3, 1)), Err(Rejection::Stale { incoming: 3, held: 5 }));
        assert_eq!(judge(Some(&held), &v(1, 8, 4)), Err(Rejection::Forked { incoming: 8, prev: 4, held: 5 }));
        assert_eq!(judge(Some(&held), &v(2, 1, 0)), Ok(Verdict::Apply));
        assert_eq!(judge(Some(&v(2, 1, 0)), &held), Err(Rejection::OldGeneration { incoming: 1, held: 2 }));
    }

    fn delta_doc(service: &str, generation: u64, changed: u64, prev: u64) -> Value {
        json!({"service": service, "store_id": "s", "generation": generation, "epoch": changed,
            "changed_epoch": changed, "changed_seq": changed * 2, "prev_epoch": prev, "schema_hash": null,
            "config": {"k": changed}, "sources": {"k": "service"}, "removed": []})
    }

    #[test]
    fn a_deltas_message_is_checked_whole_and_lists_its_versions_in_order() {
        let key = crate::keys::SigningKey::from_seed(&[5; 32]);
        let keys = [key.verifying_key()];
        let chain =
            json!({"deltas": [delta_doc("web", 1, 3, 2), delta_doc("web", 1, 5, 3), delta_doc("web", 1, 6, 5)]});
        let jws_doc = jws::sign(&chain, jws::TYP_DELTAS, &key);
        let (kind, doc, first) = verify_update(&jws_doc, &keys, Some("s"), "web").unwrap();
        assert_eq!((kind, first.changed_epoch, first.prev_epoch), (UpdateKind::Deltas, 3, 2));
        let versions: Vec<(u64, u64)> =
            deltas_of(&doc).unwrap().iter().map(|(_, v)| (v.prev_epoch, v.changed_epoch)).collect();
        assert_eq!(versions, [(2, 3), (3, 5), (5, 6)]);
        // Addressed like any update: another service's or store's is refused.
        assert!(matches!(verify_update(&jws_doc, &keys, Some("s"), "db"), Err(Rejection::WrongService { .. })));
        assert!(matches!(verify_update(&jws_doc, &keys, Some("t"), "web"), Err(Rejection::WrongStore { .. })));
        // Whatever is wrong inside, the whole message is refused.
        let many: Vec<Value> = (1..=65).map(|e| delta_doc("web", 1, e, e - 1)).collect();
        let mut not_a_delta = delta_doc("web", 1, 4, 3);
        not_a_delta["removed"] = json!(["k"]);
        for (bad, why) in [
            (json!({"deltas": [delta_doc("web", 1, 3, 2)]}), "1 deltas"),
            (json!({"deltas": []}), "0 deltas"),
            (json!({"deltas": many}), "65 deltas"),
            (json!({"deltas": [delta_doc("web", 1, 3, 2), delta_doc("web", 1, 5, 4)]}), "does not follow"),
            (json!({"deltas": [delta_doc("web", 1, 3, 2), delta_doc("web", 1, 3, 3)]}), "does not follow"),
            (json!({"deltas": [delta_doc("web", 1, 3, 2), delta_doc("db", 1, 5, 3)]}), "another store, service"),
            (json!({"deltas": [delta_doc("web", 1, 3, 2), delta_doc("web", 2, 5, 3)]}), "another store, service"),
            (json!({"deltas": [delta_doc("web", 1, 3, 2), not_a_delta]}), "deltas[1]: delta document"),
            (json!({"deltas": [delta_doc("web", 1, 3, 2), json!(7)]}), "deltas[1]"),
            (json!({"deltas": [delta_doc("web", 1, 3, 2), delta_doc("web", 1, 5, 3)], "extra": 1}), "only"),
            (json!([delta_doc("web", 1, 3, 2), delta_doc("web", 1, 5, 3)]), "only"),
        ] {
            let signed = jws::sign(&bad, jws::TYP_DELTAS, &key);
            match verify_update(&signed, &keys, Some("s"), "web") {
                Err(Rejection::Malformed(m)) => assert!(m.contains(why), "{why}: {m}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        // Signed as one delta, the same document is not a delta.
        assert!(verify_update(&jws::sign(&chain, jws::TYP_DELTA, &key), &keys, None, "web").is_err());
    }

    #[test]
    fn topics() {
        assert_eq!(snapshot_topic("web"), "system/config/web");
        assert_eq!(service_of_snapshot_topic("system/config/web"), Some("web"));
        assert_eq!(service_of_snapshot_topic("system/config/"), None);
        assert_eq!(service_of_snapshot_topic("system/config/a/b"), None);
        assert_eq!(service_of_snapshot_topic("system/config-head"), None);
        assert_eq!(events_topic("db"), "system/config-events/db");
    }
}
