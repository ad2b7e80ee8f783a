//! The start-up sequence: REST, else the retained MQTT message, else the LKG file — which
//! is read first anyway, so that no source can take the client backwards.

use std::sync::Arc;
use std::time::Duration;

use confstore_core::stream::{self, Rejection};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::builder::Plan;
use crate::error::ClientError;
use crate::lkg::LkgError;
use crate::mqtt::{self, Connection, Inbound};
use crate::stats::Counters;
use crate::tlog::Audit;
use crate::updater::{Offer, Updater};
use crate::{AuditRuntime, Client, MqttRuntime};

/// Why each failed source failed, in start-up order.
type Reasons = Vec<(&'static str, String)>;

pub(crate) async fn start(mut plan: Plan) -> Result<Client, ClientError> {
    let counters = Arc::new(Counters::default());
    let service = plan.updater.service.clone();
    let rest = plan.updater.rest.clone();
    let reporter = plan.updater.reporter.clone();
    let lkg_path = plan.updater.lkg_path.clone();
    // The transparency-log checks need REST (proofs); they run in their own task.
    let auditor = match (&rest, plan.tlog_checks) {
        (Some(rest), true) => {
            let (audit, auditor) =
                Audit::new(rest.clone(), plan.updater.keys.clone(), plan.witnesses.clone(), Arc::clone(&counters));
            plan.updater.audit = Some(audit);
            Some(auditor)
        }
        (None, true) => {
            debug!(%service, "no rest_url: the transparency-log checks are off");
            None
        }
        (_, false) => None,
    };
    let shared = plan.updater.audit.as_ref().map(|a| Arc::clone(&a.shared));
    let mut updater = Updater::new(plan.updater, Arc::clone(&counters));
    let mut reasons = Reasons::new();
    let lkg = updater.resume_lkg();

    let mut fresh = match &rest {
        Some(rest) => from_rest(&mut updater, rest, &mut reasons).await,
        None => false,
    };
    let (stop, stop_rx) = watch::channel(false);
    let mut topics = vec![stream::snapshot_topic(&service), confstore_core::rollout::staged_topic(&service)];
    if auditor.is_some() {
        topics.push(stream::CHECKPOINT_TOPIC.to_owned());
    }
    let mut connection =
        plan.mqtt.map(|m| Connection::start(m, topics, Arc::clone(&counters), stop_rx.clone(), reporter.clone()));
    let mut session_lost = false;
    if let (Some(conn), false) = (&mut connection, fresh) {
        match wait_retained(&mut updater, conn, plan.startup_timeout, &mut session_lost).await {
            Ok(()) => fresh = true,
            Err(why) => reasons.push(("mqtt", why)),
        }
    }
    if let Some(path) = &lkg_path {
        let only_source = rest.is_none() && connection.is_none();
        settle_lkg(&updater, path, lkg, only_source, &mut reasons)?;
    }

    let Some(outlet) = updater.open_outlet() else {
        if let Some(conn) = connection {
            conn.task.abort();
        }
        return Err(ClientError::NoVerifiedConfig { service, reasons });
    };
    let audit = auditor.map(|auditor| AuditRuntime { task: tokio::spawn(auditor.run(stop_rx.clone())) });
    // Without a broker, status reports go over REST (crate::status).
    let rest_reports = match (&connection, &reporter, &rest) {
        (None, Some(r), Some(rest)) => Some(tokio::spawn(Arc::clone(r).run_rest(rest.clone(), stop_rx.clone()))),
        _ => None,
    };
    if !fresh {
        warn!(%service, "no fresh snapshot ({}); starting from the lkg file", list(&reasons));
    } else if !reasons.is_empty() {
        warn!(%service, "started, but a source failed: {}", list(&reasons));
    }
    // Started from the LKG file alone, or the broker had no session: REST will tell what
    // was missed once it answers.
    let catch_up_now = (!fresh || session_lost) && rest.is_some();
    let mqtt = connection.map(|conn| {
        let updates =
            mqtt::run_updates(updater, conn.client.clone(), conn.inbound, stop_rx, catch_up_now, reporter.clone());
        let processor = tokio::spawn(updates);
        MqttRuntime { client: conn.client, connection: conn.task, processor }
    });
    Ok(Client { service, outlet, counters, mqtt, audit, tlog: shared, stop, rest, reporter, rest_reports })
}

/// Offers the REST snapshot; true if REST gave a verified snapshot of this service.
async fn from_rest(updater: &mut Updater, rest: &crate::rest::Rest, reasons: &mut Reasons) -> bool {
    let jws = match rest.snapshot(None).await {
        Ok(jws) => jws,
        Err(e) => {
            reasons.push(("rest", e.to_string()));
            return false;
        }
    };
    match updater.offer(jws).await {
        Offer::Applied => true,
        Offer::Held(why) => {
            warn_if_older("REST", &why);
            true
        }
        Offer::Invalid { reason } => {
            reasons.push(("rest", reason));
            false
        }
        Offer::Checkpoint | Offer::Staged => false,
    }
}

/// Waits for the retained snapshot: done when one verified snapshot of this service was
/// judged (applied, or older than the LKG version); foreign or forged messages are
/// counted and waited past. Notes whether the broker had no session for the client.
async fn wait_retained(
    updater: &mut Updater,
    conn: &mut Connection,
    timeout: Duration,
    session_lost: &mut bool,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_rejected = None;
    loop {
        match tokio::time::timeout_at(deadline, conn.inbound.recv()).await {
            Ok(Some(Inbound::SessionLost)) => *session_lost = true,
            Ok(Some(Inbound::Publish(publish))) => match mqtt::process(updater, &conn.client, publish).await {
                Offer::Applied => return Ok(()),
                Offer::Held(why) => {
                    warn_if_older("the retained MQTT message", &why);
                    return Ok(());
                }
                Offer::Invalid { reason } => last_rejected = Some(reason),
                Offer::Checkpoint | Offer::Staged => {}
            },
            Ok(None) => return Err("the connection task ended".into()),
            Err(_) => {
                return Err(match (last_rejected, conn.last_error()) {
                    (Some(why), _) => {
                        format!("no valid retained snapshot within {timeout:?} (last one rejected: {why})")
                    }
                    (None, Some(e)) => format!("no retained snapshot within {timeout:?}; broker: {e}"),
                    (None, None) => format!("no retained snapshot within {timeout:?}"),
                });
            }
        }
    }
}

/// What the LKG file's state means now that the other sources were tried: nothing if it
/// loaded; if it is unusable, ignored (and counted) beside a configuration from another
/// source, an error naming it when it is the only source, else one reason among others.
fn settle_lkg(
    updater: &Updater,
    path: &std::path::Path,
    lkg: Result<bool, LkgError>,
    only_source: bool,
    reasons: &mut Reasons,
) -> Result<(), ClientError> {
    match lkg {
        Ok(true) => {}
        Ok(false) if updater.current().is_none() => {
            reasons.push(("lkg", format!("file {} does not exist yet", path.display())));
        }
        Ok(false) => {}
        Err(e) if updater.current().is_some() => {
            Counters::bump(&updater.counters().lkg_rejected);
            warn!(path = %path.display(), "ignored the lkg file: {e}");
        }
        Err(e) if only_source => return Err(ClientError::Lkg { path: path.to_owned(), reason: e.to_string() }),
        Err(e) => reasons.push(("lkg", format!("file {}: {e}", path.display()))),
    }
    Ok(())
}

/// A source that serves an older version than the LKG file holds: the client keeps the
/// newer one (it never goes backwards), but someone should look at the source.
fn warn_if_older(source: &str, why: &Rejection) {
    if !matches!(why, Rejection::Duplicate(_)) {
        warn!("{source} has an older snapshot than the lkg file ({why}); keeping the lkg version");
    }
}

fn list(reasons: &[(&'static str, String)]) -> String {
    reasons.iter().map(|(source, why)| format!("{source}: {why}")).collect::<Vec<_>>().join("; ")
}
