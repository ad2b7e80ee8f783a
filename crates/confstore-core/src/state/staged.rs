//! Deciding a staged rollout's start, promotion and abort (docs/format.md §21,
//! docs/adr/0030), and the rule that keeps other writes off a service while its rollout is
//! active.

use super::decide::{Decision, alone, known_service, number};
use super::{
    Change, ChangesetDraft, GLOBAL_SCOPE, RejectError, RolloutChange, State, body, check_service_name, invalid,
};
use crate::event::{EventBody, EventKind};
use crate::limits;
use crate::rollout::{CohortMember, Rollout, StagedChange};

/// Refuses a changeset that would change a service under an active rollout: its values,
/// schema or a rollback of it, and, while any rollout is active, `global` (every service
/// inherits it) or a rollback of every service. The staged version is a whole configuration
/// built on one version of the service; letting that version move would either undo the
/// change for the cohort or give it a mix nobody tested.
pub(super) fn check_no_rollout_in_the_way(state: &State, draft: &ChangesetDraft) -> Result<(), RejectError> {
    if state.rollouts.is_empty() {
        return Ok(());
    }
    let in_progress = |r: &Rollout| RejectError::RolloutInProgress { service: r.service.clone(), rollout_seq: r.seq };
    let any = || state.rollouts.values().next().map(in_progress);
    let of = |service: &str| -> Result<(), RejectError> {
        if service == GLOBAL_SCOPE {
            return any().map_or(Ok(()), Err);
        }
        state.rollouts.get(service).map(in_progress).map_or(Ok(()), Err)
    };
    for change in &draft.changes {
        match change {
            Change::Set { service, .. }
            | Change::Unset { service, .. }
            | Change::SetSchema { service, .. }
            | Change::SetSecret { service, .. } => of(service)?,
            Change::RollBack { service: Some(service), .. } => of(service)?,
            Change::RollBack { service: None, .. } => any().map_or(Ok(()), Err)?,
            _ => {}
        }
    }
    Ok(())
}

/// A changeset opened by a rollout change.
pub(super) fn decide_rollout(
    state: &State,
    draft: &ChangesetDraft,
    change: &RolloutChange,
    time_ms: u64,
) -> Result<Vec<EventBody>, RejectError> {
    let mut out = match change {
        RolloutChange::Start { service, cohort, bake_ms, auto } => {
            vec![start(state, draft, service, cohort, *bake_ms, *auto, time_ms)?]
        }
        RolloutChange::Promote { service, rollout_seq, automatic, cohort } => {
            alone(draft)?;
            let r = active(state, service, *rollout_seq)?;
            let evidence = evidence(cohort)?;
            let mut kinds = vec![EventKind::RolloutPromoted {
                service: service.clone(),
                rollout_seq: r.seq,
                automatic: *automatic,
                cohort: evidence,
            }];
            kinds.extend(r.changes.iter().map(|c| as_event(r, c)));
            let epoch = state.epoch + 1;
            kinds.into_iter().map(|kind| body(epoch, time_ms, draft, kind)).collect()
        }
        RolloutChange::Abort { service, rollout_seq, automatic, cohort } => {
            alone(draft)?;
            let r = active(state, service, *rollout_seq)?;
            let kind = EventKind::RolloutAborted {
                service: service.clone(),
                rollout_seq: r.seq,
                automatic: *automatic,
                cohort: evidence(cohort)?,
            };
            vec![body(state.epoch, time_ms, draft, kind)]
        }
    };
    number(&mut out);
    for b in &out {
        let len = b.encode().len();
        if len > limits::EVENT_BODY_BYTES_MAX {
            return Err(RejectError::Limit(format!(
                "the {} event would be {len} bytes; at most {} are allowed: stage fewer or smaller changes",
                b.kind.name(),
                limits::EVENT_BODY_BYTES_MAX
            )));
        }
    }
    Ok(out)
}

fn start(
    state: &State,
    draft: &ChangesetDraft,
    service: &str,
    cohort: &crate::rollout::Cohort,
    bake_ms: u64,
    auto: bool,
    time_ms: u64,
) -> Result<EventBody, RejectError> {
    check_service_name(service)?;
    if service == GLOBAL_SCOPE {
        return Err(RejectError::Rollout(
            "every service inherits the global scope, so it cannot be rolled out to a cohort of one service".into(),
        ));
    }
    known_service(state, &[], service)?;
    if let Some(r) = state.rollouts.get(service) {
        return Err(RejectError::RolloutInProgress { service: service.to_owned(), rollout_seq: r.seq });
    }
    cohort.check().map_err(|why| invalid("cohort", "", why))?;
    if !(limits::ROLLOUT_BAKE_MS_MIN..=limits::ROLLOUT_BAKE_MS_MAX).contains(&bake_ms) {
        return Err(invalid(
            "bake time",
            &format!("{bake_ms} ms"),
            format!(
                "must be from {} s to {} days",
                limits::ROLLOUT_BAKE_MS_MIN / 1000,
                limits::ROLLOUT_BAKE_MS_MAX / 86_400_000
            ),
        ));
    }
    let staged = &draft.changes[1..];
    if staged.is_empty() {
        return Err(RejectError::Rollout(
            "a rollout stages at least one change: values to set, secrets to set or keys to unset".into(),
        ));
    }
    // The staged changes are decided as a write of them would be (names, limits, schema),
    // against the current state, then kept in the one event.
    let mut d = Decision::new(state, draft)?;
    let mut changes = Vec::with_capacity(staged.len());
    for change in staged {
        let kind = match change {
            Change::Set { service: s, key, value } if s == service => d.set_value(s, key, value)?,
            Change::Unset { service: s, key } if s == service => d.unset_value(s, key)?,
            Change::SetSecret { service: s, key, plaintext, envelope } if s == service => {
                d.set_secret(s, key, plaintext, envelope)?
            }
            _ => {
                return Err(RejectError::Rollout(format!(
                    "a rollout of {service:?} stages sets, secret sets and unsets of {service:?} only"
                )));
            }
        };
        changes.push(match kind {
            EventKind::ValueSet { key, value_json, .. } => StagedChange::Set { key, value_json },
            EventKind::ValueUnset { key, .. } => StagedChange::Unset { key },
            EventKind::SecretSet { key, key_version, nonce, ciphertext, .. } => {
                StagedChange::Secret { key, key_version, nonce, ciphertext }
            }
            _ => unreachable!("only value changes are decided here"),
        });
    }
    d.check_schemas()?;
    let kind = EventKind::RolloutStarted {
        service: service.to_owned(),
        cohort: cohort.clone(),
        bake_ms,
        auto,
        base_epoch: state.versions.get(service).map_or(0, |v| v.changed_epoch),
        changes,
        schema_hash: state.schemas.get(service).map(|s| s.hash),
    };
    Ok(body(state.epoch, time_ms, draft, kind))
}

/// The active rollout `seq` of `service`, or why there is none.
fn active<'s>(state: &'s State, service: &str, seq: u64) -> Result<&'s Rollout, RejectError> {
    known_service(state, &[], service)?;
    match state.rollouts.get(service) {
        Some(r) if r.seq == seq => Ok(r),
        Some(r) => Err(RejectError::Rollout(format!(
            "the active rollout of {service:?} is {}, not {seq}; nothing was decided for it",
            r.seq
        ))),
        None => {
            let last = state.rollouts_ended.get(service);
            Err(RejectError::Rollout(match last {
                Some(e) if e.seq == seq => format!("rollout {seq} of {service:?} was {} already", e.outcome.as_str()),
                Some(e) => format!(
                    "service {service:?} has no active rollout (its last one, {}, was {})",
                    e.seq,
                    e.outcome.as_str()
                ),
                None => format!("service {service:?} has no active rollout"),
            }))
        }
    }
}

fn evidence(cohort: &[CohortMember]) -> Result<Vec<CohortMember>, RejectError> {
    if cohort.len() > limits::ROLLOUT_EVIDENCE_MAX {
        return Err(RejectError::Limit(format!(
            "a decision records at most {} cohort members",
            limits::ROLLOUT_EVIDENCE_MAX
        )));
    }
    for m in cohort {
        crate::fleet::check_instance_id(&m.instance).map_err(|why| invalid("cohort member", &m.instance, why))?;
    }
    Ok(cohort.to_vec())
}

/// A staged change as the event a promotion writes for it.
fn as_event(r: &Rollout, change: &StagedChange) -> EventKind {
    let service = r.service.clone();
    match change.clone() {
        StagedChange::Set { key, value_json } => {
            EventKind::ValueSet { service, key, value_json, schema_hash: r.schema_hash }
        }
        StagedChange::Unset { key } => EventKind::ValueUnset { service, key, schema_hash: r.schema_hash },
        StagedChange::Secret { key, key_version, nonce, ciphertext } => {
            EventKind::SecretSet { service, key, key_version, nonce, ciphertext, schema_hash: r.schema_hash }
        }
    }
}
