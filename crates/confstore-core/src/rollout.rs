//! Staged rollouts (docs/format.md §21, docs/adr/0030): a change of one service given first
//! to a cohort of its instances, then promoted to all or aborted. Shared by the server
//! (which records the decisions in the log and publishes the staged version) and the client
//! (which decides whether it is in the cohort and whether to apply it), so the two cannot
//! drift.
//!
//! The log records three kinds of event (crate::event): `rollout_started` (the cohort, the
//! bake time and the staged changes, secrets sealed as in `secret_set`), then one of
//! `rollout_promoted` (followed in its changeset by the staged changes as ordinary
//! `value_set` / `value_unset` / `secret_set` events) or `rollout_aborted`. A rollout's id
//! is the seq of its `rollout_started` event.
//!
//! No I/O.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::jws::{self, JwsError};
use crate::keys::VerifyingKey;
use crate::stream::SnapshotVersion;

/// Prefix of a service's staged-version topic: `system/config-staged/<service>` (QoS 1,
/// retained): the active rollout's signed staged snapshot, or the signed end of the last one.
pub const STAGED_TOPIC_PREFIX: &str = "system/config-staged/";

/// `system/config-staged/<service>`.
pub fn staged_topic(service: &str) -> String {
    format!("{STAGED_TOPIC_PREFIX}{service}")
}

/// The service a staged topic is for.
pub fn service_of_staged_topic(topic: &str) -> Option<&str> {
    topic.strip_prefix(STAGED_TOPIC_PREFIX).filter(|s| !s.is_empty() && !s.contains('/'))
}

/// Which instances of the service get the staged version. Variant numbers are frozen (they
/// are part of the `rollout_started` event's bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cohort {
    /// 0: these instance ids (sorted, no duplicates).
    Instances(Vec<String>),
    /// 1: the instances whose [`cohort_point`] is below `basis_points` (1 to 10,000:
    /// hundredths of a percent).
    Percent {
        /// Share of the instances, in hundredths of a percent.
        basis_points: u32,
    },
}

/// Whole-percent basis points.
pub const BASIS_POINTS_ALL: u32 = 10_000;

impl Cohort {
    /// Whether `instance` of `service` is in the cohort.
    pub fn contains(&self, service: &str, instance: &str) -> bool {
        match self {
            Self::Instances(ids) => ids.binary_search_by(|i| i.as_str().cmp(instance)).is_ok(),
            Self::Percent { basis_points } => cohort_point(service, instance) < *basis_points,
        }
    }

    /// The JSON form: `{"instances": [...]}` or `{"percent": 12.5}`.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Instances(ids) => json!({ "instances": ids }),
            Self::Percent { basis_points } => json!({ "percent": f64::from(*basis_points) / 100.0 }),
        }
    }

    /// Reads the JSON form back (as [`Self::to_json`] writes it).
    pub fn from_json(v: &Value) -> Option<Self> {
        if let Some(ids) = v.get("instances").and_then(Value::as_array) {
            return ids.iter().map(|i| i.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>().map(Self::Instances);
        }
        let percent = v.get("percent")?.as_f64()?;
        percent_to_basis_points(percent).map(|basis_points| Self::Percent { basis_points })
    }

    /// Checks the cohort: 1 to [`crate::limits::ROLLOUT_INSTANCES_MAX`] valid, sorted,
    /// distinct ids, or a share from 0.01 % to 100 %.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Self::Instances(ids) => {
                if ids.is_empty() || ids.len() > crate::limits::ROLLOUT_INSTANCES_MAX {
                    return Err(format!("a cohort lists 1 to {} instance ids", crate::limits::ROLLOUT_INSTANCES_MAX));
                }
                for id in ids {
                    crate::fleet::check_instance_id(id).map_err(|e| format!("cohort instance {id:?}: {e}"))?;
                }
                if ids.windows(2).any(|w| w[0] >= w[1]) {
                    return Err("a cohort's instance ids are sorted and distinct".into());
                }
                Ok(())
            }
            Self::Percent { basis_points } => {
                if (1..=BASIS_POINTS_ALL).contains(basis_points) {
                    Ok(())
                } else {
                    Err("a cohort's share is from 0.01 % to 100 %".into())
                }
            }
        }
    }
}

/// A share in percent (0.01 to 100, at most two decimals) as basis points.
pub fn percent_to_basis_points(percent: f64) -> Option<u32> {
    let bp = (percent * 100.0).round();
    if !percent.is_finite() || (percent * 100.0 - bp).abs() > 1e-6 || !(1.0..=f64::from(BASIS_POINTS_ALL)).contains(&bp)
    {
        return None;
    }
    // In 1..=10000, so the cast is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(bp as u32)
}

/// Where an instance falls in a service's percentage cohorts: the first 8 bytes of
/// SHA-256(`"confstore-cohort/1\n" || service || "\n" || instance`), big-endian, modulo
/// 10,000. An instance is in a `p` basis-point cohort when its point is below `p`, so the
/// same instances make up the first 5 % of every rollout of the service (stable canaries),
/// and a 20 % cohort holds the 5 % one.
pub fn cohort_point(service: &str, instance: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(b"confstore-cohort/1\n");
    h.update(service.as_bytes());
    h.update(b"\n");
    h.update(instance.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // Below 10,000, so the cast is exact.
    #[allow(clippy::cast_possible_truncation)]
    let point = (u64::from_be_bytes(first) % u64::from(BASIS_POINTS_ALL)) as u32;
    point
}

/// One staged change (in a `rollout_started` event). Variant numbers are frozen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StagedChange {
    /// 0: set a key to a value (canonical JSON text).
    Set {
        /// Key.
        key: String,
        /// Canonical JSON text.
        value_json: String,
    },
    /// 1: remove a key.
    Unset {
        /// Key.
        key: String,
    },
    /// 2: set a key to a secret, sealed as in `secret_set` (the plaintext never reaches
    /// the log, the stream or the staged snapshot).
    Secret {
        /// Key.
        key: String,
        /// Master-key version.
        key_version: u32,
        /// AES-GCM nonce.
        nonce: [u8; 12],
        /// Ciphertext with tag.
        ciphertext: Vec<u8>,
    },
}

impl StagedChange {
    /// The key it changes.
    pub fn key(&self) -> &str {
        match self {
            Self::Set { key, .. } | Self::Unset { key } | Self::Secret { key, .. } => key,
        }
    }

    /// The JSON form (a secret shows only its key and key version).
    pub fn to_json(&self) -> Value {
        match self {
            Self::Set { key, value_json } => {
                let value: Value =
                    serde_json::from_str(value_json).unwrap_or_else(|_| Value::String(value_json.clone()));
                json!({"op": "set", "key": key, "value": value})
            }
            Self::Unset { key } => json!({"op": "unset", "key": key}),
            Self::Secret { key, key_version, .. } => json!({"op": "secret", "key": key, "key_version": key_version}),
        }
    }

    /// The value it gives the key, as stored in the state (a secret's marker), or `None`
    /// for an unset.
    pub fn stored_value(&self) -> Option<String> {
        match self {
            Self::Set { value_json, .. } => Some(value_json.clone()),
            Self::Unset { .. } => None,
            Self::Secret { key_version, nonce, ciphertext, .. } => {
                let envelope = crate::secret::Envelope {
                    key_version: *key_version,
                    nonce: *nonce,
                    ciphertext: ciphertext.clone(),
                };
                Some(crate::state::canonical_json_text(&crate::secret::marker(&envelope)))
            }
        }
    }
}

/// What one cohort instance reported when an automatic decision was made (kept in the
/// decision's event, so a replay shows why).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CohortMember {
    /// Instance id.
    pub instance: String,
    /// Whether it reported running the staged version.
    pub applied: bool,
    /// The health it reported, if any.
    pub healthy: Option<bool>,
    /// Whether it was online.
    pub online: bool,
}

impl CohortMember {
    /// The JSON form.
    pub fn to_json(&self) -> Value {
        json!({"instance": self.instance, "applied": self.applied, "healthy": self.healthy, "online": self.online})
    }
}

/// The active rollout of a service, as the state holds it (from its `rollout_started`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// Its id: the seq of its `rollout_started` event.
    pub seq: u64,
    /// The service.
    pub service: String,
    /// When it started (unix ms, the event's time).
    pub started_ms: u64,
    /// Who started it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Who gets it.
    pub cohort: Cohort,
    /// How long the cohort runs it before automatic promotion (ms).
    pub bake_ms: u64,
    /// Whether the server promotes and aborts it by itself.
    pub auto: bool,
    /// The service version (changed_epoch) it was staged on.
    pub base_epoch: u64,
    /// The changes.
    pub changes: Vec<StagedChange>,
    /// The schema hash the changes were checked against.
    pub schema_hash: Option<[u8; 32]>,
}

impl Rollout {
    /// When the bake time ends (unix ms).
    pub fn bake_ends_ms(&self) -> u64 {
        self.started_ms.saturating_add(self.bake_ms)
    }
}

/// How a rollout ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Given to every instance.
    Promoted,
    /// Withdrawn; the cohort went back to the current version.
    Aborted,
}

impl Outcome {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promoted => "promoted",
            Self::Aborted => "aborted",
        }
    }
}

/// The last rollout of a service that ended, as the state holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// Its id.
    pub seq: u64,
    /// How.
    pub outcome: Outcome,
    /// Seq of the event that ended it.
    pub ended_seq: u64,
    /// When (unix ms).
    pub ended_ms: u64,
    /// The service version that carries the promoted changes (0 when aborted).
    pub promoted_epoch: u64,
}

/// The document of a staged-topic message (JWS `typ` [`jws::TYP_STAGED`]): the rollout and,
/// while it is active, the staged snapshot (a snapshot document whose version fields are the
/// base version's: it is not a version of the log).
pub fn staged_document(store_id: &str, generation: u64, rollout: &Rollout, snapshot: &Value) -> Value {
    json!({
        "store_id": store_id,
        "service": rollout.service,
        "generation": generation,
        "rollout": rollout.seq,
        "state": "active",
        "cohort": rollout.cohort.to_json(),
        "bake_ms": rollout.bake_ms,
        "started_ms": rollout.started_ms,
        "auto": rollout.auto,
        "base_epoch": rollout.base_epoch,
        "snapshot": snapshot,
    })
}

/// The document that ends a rollout on the staged topic.
pub fn ended_document(store_id: &str, service: &str, generation: u64, ended: &Ended) -> Value {
    json!({
        "store_id": store_id,
        "service": service,
        "generation": generation,
        "rollout": ended.seq,
        "state": ended.outcome.as_str(),
        "ended_ms": ended.ended_ms,
        "promoted_epoch": ended.promoted_epoch,
    })
}

/// A verified staged-topic message, taken apart.
#[derive(Clone, Debug, PartialEq)]
pub struct Staged {
    /// Store id (hex).
    pub store_id: String,
    /// Service.
    pub service: String,
    /// Generation.
    pub generation: u64,
    /// The rollout's id.
    pub rollout: u64,
    /// Active, or how it ended.
    pub state: StagedState,
}

/// The state a staged message announces.
#[derive(Clone, Debug, PartialEq)]
pub enum StagedState {
    /// Active: who gets what, on which base version.
    Active {
        /// The cohort.
        cohort: Cohort,
        /// The service version it was staged on.
        base_epoch: u64,
        /// The staged snapshot document (`config`, `sources`, version fields of the base).
        snapshot: Value,
    },
    /// Ended.
    Ended {
        /// How.
        outcome: Outcome,
        /// The version carrying the promoted changes (0 when aborted).
        promoted_epoch: u64,
    },
}

/// Why a staged message is not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StagedRejection {
    /// Not a valid JWS of a staged document signed by a trusted key.
    #[error(transparent)]
    Signature(#[from] JwsError),
    /// A member missing or of the wrong type.
    #[error("staged document: {0}")]
    Malformed(String),
    /// For another store or service.
    #[error("staged document for {found}, not {expected}")]
    Misaddressed {
        /// In the document.
        found: String,
        /// Expected.
        expected: String,
    },
    /// An older rollout than one already seen, or an active one after its end (a replay).
    #[error("staged document of rollout {incoming} ({state}) after rollout {held} ({held_state}): a replay")]
    Replayed {
        /// Incoming rollout.
        incoming: u64,
        /// Its state.
        state: &'static str,
        /// The newest seen.
        held: u64,
        /// Its state.
        held_state: &'static str,
    },
}

impl StagedRejection {
    /// A short stable name, for counters (beside the snapshot rejections' names).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Signature(_) => "staged_signature",
            Self::Malformed(_) => "staged_malformed",
            Self::Misaddressed { .. } => "staged_misaddressed",
            Self::Replayed { .. } => "staged_replayed",
        }
    }
}

/// Verifies a staged-topic message and takes it apart, checking store (when pinned) and
/// service. The staged snapshot's own store and service must be the document's.
pub fn verify_staged(
    jws_doc: &Value,
    keys: &[VerifyingKey],
    store_id: Option<&str>,
    service: &str,
) -> Result<Staged, StagedRejection> {
    let doc = jws::verify(jws_doc, jws::TYP_STAGED, keys)?;
    let malformed = |why: &str| StagedRejection::Malformed(why.to_owned());
    let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| malformed(k));
    let number = |k: &str| doc.get(k).and_then(Value::as_u64).ok_or_else(|| malformed(k));
    let staged_store = text("store_id")?;
    let staged_service = text("service")?;
    if store_id.is_some_and(|s| s != staged_store) || staged_service != service {
        return Err(StagedRejection::Misaddressed {
            found: format!("{staged_store}/{staged_service}"),
            expected: format!("{}/{service}", store_id.unwrap_or(&staged_store)),
        });
    }
    let generation = number("generation")?;
    let rollout = number("rollout")?;
    let state = match text("state")?.as_str() {
        "active" => {
            let cohort = doc.get("cohort").and_then(Cohort::from_json).ok_or_else(|| malformed("cohort"))?;
            cohort.check().map_err(StagedRejection::Malformed)?;
            let base_epoch = number("base_epoch")?;
            let snapshot = doc.get("snapshot").cloned().ok_or_else(|| malformed("snapshot"))?;
            let v =
                crate::stream::snapshot_version(&snapshot).map_err(|e| StagedRejection::Malformed(e.to_string()))?;
            if v.store_id != staged_store
                || v.service != staged_service
                || v.generation != generation
                || v.changed_epoch != base_epoch
            {
                return Err(malformed("the staged snapshot's version fields are not the base version's"));
            }
            StagedState::Active { cohort, base_epoch, snapshot }
        }
        "promoted" => StagedState::Ended { outcome: Outcome::Promoted, promoted_epoch: number("promoted_epoch")? },
        "aborted" => StagedState::Ended { outcome: Outcome::Aborted, promoted_epoch: 0 },
        _ => return Err(malformed("state")),
    };
    Ok(Staged { store_id: staged_store, service: staged_service, generation, rollout, state })
}

impl StagedState {
    /// `active`, `promoted` or `aborted`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Active { .. } => "active",
            Self::Ended { outcome, .. } => outcome.as_str(),
        }
    }
}

/// The staged-version acceptance rule (docs/format.md §21.4), part 1: is `incoming` newer
/// news than the newest staged message the client took (`seen`), in the same generation?
/// A later rollout always is; the same rollout only moves from active to ended; anything
/// else is a replay (or a QoS 1 redelivery, for an equal message) and changes nothing.
pub fn judge_staged(seen: Option<&Staged>, incoming: &Staged) -> Result<(), StagedRejection> {
    let Some(seen) = seen.filter(|s| s.generation == incoming.generation) else { return Ok(()) };
    let newer = incoming.rollout > seen.rollout
        || (incoming.rollout == seen.rollout
            && matches!(seen.state, StagedState::Active { .. })
            && matches!(incoming.state, StagedState::Ended { .. }));
    if newer {
        Ok(())
    } else {
        Err(StagedRejection::Replayed {
            incoming: incoming.rollout,
            state: incoming.state.name(),
            held: seen.rollout,
            held_state: seen.state.name(),
        })
    }
}

/// Part 2: given the active rollout's staged message the client took (`active`), how that
/// rollout ended if the client has heard (`ended`), and the current version it holds, which
/// configuration runs: the staged snapshot (`Some`) or the current one (`None`). The staged
/// one runs only for a cohort instance, on the very version it was staged on. An abort
/// sends the cohort back at once; after a promotion it runs on until the promoting version
/// arrives (that version carries the same configuration, so the instance never steps back
/// to the old one in between).
pub fn staged_to_run<'s>(
    active: Option<&'s Staged>,
    ended: Option<Outcome>,
    held: Option<&SnapshotVersion>,
    instance: &str,
) -> Option<&'s Value> {
    let (staged, held) = (active?, held?);
    if staged.generation != held.generation || ended == Some(Outcome::Aborted) {
        return None;
    }
    match &staged.state {
        StagedState::Active { cohort, base_epoch, snapshot } => {
            (cohort.contains(&staged.service, instance) && held.changed_epoch == *base_epoch).then_some(snapshot)
        }
        StagedState::Ended { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentage_cohorts_are_stable_nested_and_near_their_share() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("i-{i}")).collect();
        let twenty = Cohort::Percent { basis_points: 2_000 };
        let five = Cohort::Percent { basis_points: 500 };
        let in20 = ids.iter().filter(|i| twenty.contains("web", i)).count();
        assert!((1_850..=2_150).contains(&in20), "{in20}");
        assert!(ids.iter().filter(|i| five.contains("web", i)).all(|i| twenty.contains("web", i)), "nested");
        assert!(ids.iter().all(|i| Cohort::Percent { basis_points: 10_000 }.contains("web", i)));
        // Another service draws other instances.
        let same = ids.iter().filter(|i| twenty.contains("web", i) == twenty.contains("db", i)).count();
        assert!(same < 9_000, "{same}");
        // The vector of docs/format.md §21.1.
        assert_eq!(cohort_point("web", "web-1"), 6_055);
        assert_eq!(cohort_point("web", "web-2"), 1_185);
        assert_eq!(cohort_point("api", "pod-7f9"), 4_013);
    }

    #[test]
    fn cohorts_are_checked_and_read_back() {
        let listed = Cohort::Instances(vec!["a".into(), "b".into()]);
        assert!(listed.check().is_ok() && listed.contains("s", "b") && !listed.contains("s", "c"));
        assert_eq!(Cohort::from_json(&listed.to_json()), Some(listed));
        assert!(Cohort::Instances(vec!["b".into(), "a".into()]).check().is_err());
        assert!(Cohort::Instances(vec![]).check().is_err());
        assert!(Cohort::Instances(vec!["a/b".into()]).check().is_err());
        let p = Cohort::Percent { basis_points: 1_250 };
        assert_eq!(Cohort::from_json(&p.to_json()), Some(p));
        assert_eq!(percent_to_basis_points(20.0), Some(2_000));
        assert_eq!(percent_to_basis_points(0.01), Some(1));
        for bad in [0.0, 100.01, -1.0, 0.001, f64::NAN, 12.345] {
            assert_eq!(percent_to_basis_points(bad), None, "{bad}");
        }
        assert!(Cohort::Percent { basis_points: 0 }.check().is_err());
    }

    fn staged(rollout: u64, state: StagedState) -> Staged {
        Staged { store_id: "s".into(), service: "web".into(), generation: 1, rollout, state }
    }

    fn active() -> StagedState {
        StagedState::Active {
            cohort: Cohort::Instances(vec!["a".into()]),
            base_epoch: 5,
            snapshot: json!({"config": {"k": 2}}),
        }
    }

    #[test]
    fn the_acceptance_rule_takes_news_and_refuses_replays() {
        let aborted = StagedState::Ended { outcome: Outcome::Aborted, promoted_epoch: 0 };
        assert!(judge_staged(None, &staged(10, active())).is_ok());
        assert!(judge_staged(Some(&staged(10, active())), &staged(10, aborted.clone())).is_ok());
        assert!(judge_staged(Some(&staged(10, aborted.clone())), &staged(11, active())).is_ok());
        let replay = judge_staged(Some(&staged(10, aborted.clone())), &staged(10, active())).unwrap_err();
        assert_eq!(replay.kind(), "staged_replayed");
        assert!(judge_staged(Some(&staged(11, active())), &staged(10, active())).is_err());
        assert!(judge_staged(Some(&staged(10, active())), &staged(10, active())).is_err(), "a redelivery");
        // Another generation starts over.
        let mut g2 = staged(3, active());
        g2.generation = 2;
        assert!(judge_staged(Some(&staged(10, aborted)), &g2).is_ok());
    }

    #[test]
    fn the_staged_snapshot_runs_only_in_the_cohort_on_its_base_version() {
        let held = |changed_epoch: u64| SnapshotVersion {
            store_id: "s".into(),
            service: "web".into(),
            generation: 1,
            epoch: changed_epoch,
            changed_epoch,
            prev_epoch: 0,
            changed_seq: 1,
        };
        let s = staged(10, active());
        assert!(staged_to_run(Some(&s), None, Some(&held(5)), "a").is_some());
        assert!(staged_to_run(Some(&s), None, Some(&held(5)), "b").is_none(), "not in the cohort");
        assert!(staged_to_run(Some(&s), None, Some(&held(6)), "a").is_none(), "another base");
        assert!(staged_to_run(Some(&s), None, None, "a").is_none());
        assert!(staged_to_run(Some(&s), Some(Outcome::Aborted), Some(&held(5)), "a").is_none(), "aborted");
        // Promoted: runs on until the promoting version (epoch 6) is held.
        assert!(staged_to_run(Some(&s), Some(Outcome::Promoted), Some(&held(5)), "a").is_some());
        assert!(staged_to_run(Some(&s), Some(Outcome::Promoted), Some(&held(6)), "a").is_none());
    }
}
