//! Staged rollouts on the server (docs/format.md §21, docs/adr/0030): which instances make
//! up a rollout's cohort in the fleet view, the rules that promote or abort a rollout by
//! themselves, and the task that applies them.
//!
//! The rules ([`judge`]) are pure; the task ([`run`]) reads the active rollouts from the
//! read model and the cohort from the fleet view every [`limits::ROLLOUT_TICK_MS`], and
//! appends the decision as a signed event whose actor is [`ACTOR`] and whose `cohort`
//! records what each member reported. It makes no decision until the fleet view has had
//! [`limits::ROLLOUT_SETTLE_MS`] to fill from the broker's retained reports after a
//! (re)subscription, so a restarted server continues a rollout instead of aborting it for
//! want of reports.

use std::sync::Arc;
use std::time::Duration;

use confstore_core::fleet::Presence;
use confstore_core::limits;
use confstore_core::rollout::{Cohort, CohortMember, Rollout};
use confstore_core::state::{Change, ChangesetDraft, RejectError, RolloutChange};

use crate::app::{App, Mode};
use crate::fleet::{Entry, now_ms};

/// The actor of automatic decisions.
pub const ACTOR: &str = "confstore-rollout";

/// What the rules say about a rollout now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Nothing to decide yet.
    Wait,
    /// Give it to every instance: why, and the evidence.
    Promote(String, Vec<CohortMember>),
    /// Withdraw it: why, and the evidence.
    Abort(String, Vec<CohortMember>),
}

/// The cohort of `rollout` as the fleet view knows it, one member per instance: for listed
/// ids, each id (a silent one is offline and has not applied it); for a share, the
/// instances in it that are online or went offline after the rollout started.
pub fn cohort(rollout: &Rollout, entries: &[Entry], generation: u64) -> Vec<CohortMember> {
    let member = |instance: &str, e: Option<&Entry>| {
        let online = e.is_some_and(|e| e.status.state == Presence::Online);
        let status = e.map(|e| &e.status);
        CohortMember {
            instance: instance.to_owned(),
            applied: online
                && status.is_some_and(|s| s.rollout == Some(rollout.seq) && s.generation == Some(generation)),
            healthy: status.and_then(|s| s.healthy),
            online,
        }
    };
    match &rollout.cohort {
        Cohort::Instances(ids) => {
            ids.iter().map(|id| member(id, entries.iter().find(|e| &e.status.instance == id))).collect()
        }
        Cohort::Percent { .. } => entries
            .iter()
            .filter(|e| rollout.cohort.contains(&rollout.service, &e.status.instance))
            .filter(|e| e.status.state == Presence::Online || e.last_seen_ms >= rollout.started_ms)
            .map(|e| member(&e.status.instance, Some(e)))
            .collect(),
    }
}

/// The rules of an automatic rollout, at `now_ms`, given its cohort:
/// - a member that runs the staged version and reports unhealthy aborts it at once;
/// - before the bake time ends, nothing else is decided;
/// - when it ends, it is promoted if the cohort is not empty and every member runs the
///   staged version (online, and not unhealthy: a service that never reports its health
///   counts as healthy), else aborted, naming the members that have not applied it.
pub fn judge(rollout: &Rollout, members: Vec<CohortMember>, now_ms: u64) -> Judgement {
    let names = |f: &dyn Fn(&CohortMember) -> bool| {
        let picked: Vec<&str> = members.iter().filter(|m| f(m)).map(|m| m.instance.as_str()).take(10).collect();
        picked.join(", ")
    };
    let sick = names(&|m| m.applied && m.healthy == Some(false));
    if !sick.is_empty() {
        return Judgement::Abort(
            format!("automatic abort: {sick} reported unhealthy on the staged version"),
            evidence(members),
        );
    }
    if now_ms < rollout.bake_ends_ms() {
        return Judgement::Wait;
    }
    if members.is_empty() {
        return Judgement::Abort(
            "automatic abort: no instance of the cohort reported during the bake time".into(),
            Vec::new(),
        );
    }
    let missing = names(&|m| !m.applied);
    if !missing.is_empty() {
        return Judgement::Abort(
            format!("automatic abort: not applied within the bake time by {missing}"),
            evidence(members),
        );
    }
    let n = members.len();
    Judgement::Promote(
        format!("automatic promotion: all {n} cohort instance(s) ran the staged version healthy for the bake time"),
        evidence(members),
    )
}

/// The members a decision records: the deciding ones (unhealthy, not applied, offline)
/// first, at most [`limits::ROLLOUT_EVIDENCE_MAX`].
pub fn evidence(mut members: Vec<CohortMember>) -> Vec<CohortMember> {
    members.sort_by_key(|m| (m.healthy != Some(false), m.applied, m.online, m.instance.clone()));
    members.truncate(limits::ROLLOUT_EVIDENCE_MAX);
    members
}

/// Applies the rules to every automatic rollout until the task is aborted.
pub async fn run(app: App) {
    let mut tick = tokio::time::interval(Duration::from_millis(limits::ROLLOUT_TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A decision that cannot be written (a failing disk) is tried again every tick, but
    // said in the log at most once per WARN_EVERY.
    let mut last_warned: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        let now = now_ms();
        if now < app.fleet.synced_ms().saturating_add(limits::ROLLOUT_SETTLE_MS) {
            continue;
        }
        let Mode::Live(live) = &*app.mode() else { continue };
        let (rollouts, generation) = live
            .model
            .read(|m| (m.state.rollouts.values().filter(|r| r.auto).cloned().collect::<Vec<_>>(), m.generation));
        for r in rollouts {
            let members = cohort(&r, &app.fleet.instances(&r.service, now), generation);
            let (reason, change) = match judge(&r, members, now) {
                Judgement::Wait => continue,
                Judgement::Promote(reason, cohort) => (
                    reason,
                    RolloutChange::Promote { service: r.service.clone(), rollout_seq: r.seq, automatic: true, cohort },
                ),
                Judgement::Abort(reason, cohort) => (
                    reason,
                    RolloutChange::Abort { service: r.service.clone(), rollout_seq: r.seq, automatic: true, cohort },
                ),
            };
            decide(&app, &live.store, &r, reason, change, &mut last_warned).await;
        }
    }
}

/// Least time between two warnings that a decision could not be written.
const WARN_EVERY: Duration = Duration::from_secs(30);

async fn decide(
    app: &App,
    store: &Arc<confstore_log::Store>,
    r: &Rollout,
    reason: String,
    change: RolloutChange,
    last_warned: &mut Option<std::time::Instant>,
) {
    let outcome = if matches!(change, RolloutChange::Promote { .. }) { "promoted" } else { "aborted" };
    let draft = ChangesetDraft {
        actor: ACTOR.to_owned(),
        reason: reason.clone(),
        request_id: format!("rollout-{}", r.seq),
        expected_epoch: None,
        changes: vec![Change::Rollout(change)],
    };
    let store = Arc::clone(store);
    let noted = app.clone();
    let result = tokio::task::spawn_blocking(move || {
        let r = store.append(draft);
        noted.note_append(&r);
        r
    })
    .await;
    match result {
        Ok(Ok(receipt)) => {
            *last_warned = None;
            app.metrics.rollout_decision(outcome, true);
            tracing::info!(service = %r.service, rollout = r.seq, outcome, seq = receipt.first_seq, %reason,
                "rollout decided automatically");
        }
        // Decided by someone else meanwhile (a manual promotion or abort): nothing to do.
        Ok(Err(confstore_log::LogError::Rejected(RejectError::Rollout(why)))) => {
            tracing::debug!(service = %r.service, rollout = r.seq, %why, "rollout already decided");
        }
        Ok(Err(e)) => {
            if last_warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                *last_warned = Some(std::time::Instant::now());
                tracing::warn!(service = %r.service, rollout = r.seq, error = %e,
                    "an automatic rollout decision could not be written; trying again every tick");
            }
        }
        Err(e) => tracing::error!(error = %e, "the rollout decision task failed"),
    }
}

#[cfg(test)]
mod tests {
    use confstore_core::fleet::Status;

    use super::*;
    use crate::fleet::Via;

    fn rollout(cohort: Cohort) -> Rollout {
        Rollout {
            seq: 9,
            service: "web".into(),
            started_ms: 1_000,
            actor: "op".into(),
            reason: String::new(),
            cohort,
            bake_ms: 10_000,
            auto: true,
            base_epoch: 4,
            changes: vec![],
            schema_hash: None,
        }
    }

    fn entry(instance: &str, rollout: Option<u64>, healthy: Option<bool>, online: bool) -> Entry {
        let mut status = Status {
            store_id: Some("00".repeat(16)),
            generation: Some(1),
            epoch: Some(4),
            version: Some(4),
            healthy,
            rollout,
            ..Status::online("web", instance, 1)
        };
        if !online {
            status.state = Presence::Offline;
        }
        Entry { status, last_seen_ms: 2_000, via: Via::Mqtt }
    }

    #[test]
    fn listed_cohorts_wait_then_promote_when_all_applied() {
        let r = rollout(Cohort::Instances(vec!["a".into(), "b".into()]));
        let applied =
            [entry("a", Some(9), None, true), entry("b", Some(9), Some(true), true), entry("c", None, None, true)];
        let members = cohort(&r, &applied, 1);
        assert_eq!(members.len(), 2, "only the listed ids");
        assert_eq!(judge(&r, members.clone(), 10_999), Judgement::Wait);
        let Judgement::Promote(why, evidence) = judge(&r, members, 11_000) else { panic!() };
        assert!(why.contains("all 2"), "{why}");
        assert!(evidence.iter().all(|m| m.applied));
    }

    #[test]
    fn an_unhealthy_canary_aborts_at_once_and_a_missing_one_at_the_bake_end() {
        let r = rollout(Cohort::Instances(vec!["a".into(), "b".into()]));
        let sick = [entry("a", Some(9), Some(false), true), entry("b", Some(9), None, true)];
        let Judgement::Abort(why, evidence) = judge(&r, cohort(&r, &sick, 1), 1_500) else { panic!() };
        assert!(why.contains("a reported unhealthy"), "{why}");
        assert_eq!(evidence[0].instance, "a", "the deciding member first");
        // Unhealthy on the current version is not the rollout's doing.
        let before = [entry("a", None, Some(false), true), entry("b", Some(9), None, true)];
        assert_eq!(judge(&r, cohort(&r, &before, 1), 1_500), Judgement::Wait);
        // b never reported, a runs another rollout or generation.
        let partial = [entry("a", Some(8), None, true)];
        let Judgement::Abort(why, _) = judge(&r, cohort(&r, &partial, 1), 11_000) else { panic!() };
        assert!(why.contains("not applied within the bake time by a, b"), "{why}");
        let other_generation = [entry("a", Some(9), None, true), entry("b", Some(9), None, true)];
        assert!(matches!(judge(&r, cohort(&r, &other_generation, 2), 11_000), Judgement::Abort(..)));
        // An offline member has not applied it.
        let gone = [entry("a", Some(9), None, false), entry("b", Some(9), None, true)];
        assert!(matches!(judge(&r, cohort(&r, &gone, 1), 11_000), Judgement::Abort(..)));
    }

    #[test]
    fn a_share_counts_online_instances_and_those_gone_since_the_start() {
        let r = rollout(Cohort::Percent { basis_points: 10_000 });
        let mut long_gone = entry("old", None, None, false);
        long_gone.last_seen_ms = 500;
        let entries = [entry("a", Some(9), None, true), long_gone, entry("left", Some(9), None, false)];
        let members = cohort(&r, &entries, 1);
        let ids: Vec<&str> = members.iter().map(|m| m.instance.as_str()).collect();
        assert_eq!(ids, ["a", "left"]);
        assert!(matches!(judge(&r, members, 11_000), Judgement::Abort(..)), "left went offline during the bake");
        let empty = cohort(&rollout(Cohort::Percent { basis_points: 1 }), &[], 1);
        let Judgement::Abort(why, _) = judge(&r, empty, 11_000) else { panic!() };
        assert!(why.contains("no instance"), "{why}");
    }
}
