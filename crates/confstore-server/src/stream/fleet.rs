//! The fleet's side of the broker: reads every instance's status report
//! (`system/config-status/+/+`, docs/format.md §20) into the fleet view (`crate::fleet`).
//!
//! On the embedded broker it subscribes to the hub in process. On an external one it has
//! its own connection, beside the publisher's (client id `<publisher id>-fleet`, clean
//! session: the retained reports arrive again on each subscription, which is how a restarted
//! server fills its view), so reading reports never delays publishing. A report that does
//! not parse, or names another service or instance than its topic, is dropped and counted;
//! an empty retained message (a report cleared) is ignored.

use std::time::Duration;

use confstore_core::fleet::{STATUS_TOPIC_PREFIX, parse_status_topic};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::sync::watch;

use super::settings::MqttSettings;
use crate::app::App;
use crate::fleet::{NotTaken, Via, now_ms};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Reads status reports until `stop` turns true; reconnects with backoff.
pub async fn run(app: App, settings: MqttSettings, mut stop: watch::Receiver<bool>) {
    let mut settings = settings;
    settings.client_id = format!("{}-fleet", settings.client_id);
    let filter = format!("{STATUS_TOPIC_PREFIX}+/+");
    if let Some(hub) = settings.hub.take() {
        // The embedded broker: subscribe in process. The retained reports come first.
        app.fleet.mark_synced(now_ms());
        let mut rx = hub.subscribe_local(&filter);
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => take(&app, &m.topic, &m.payload),
                    None => return,
                },
                _ = stop.changed() => return,
            }
        }
    }
    let mut backoff = BACKOFF_MIN;
    loop {
        if *stop.borrow() {
            return;
        }
        let mut options = match settings.options(None) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "the fleet view cannot reach the broker: bad MQTT settings");
                return;
            }
        };
        options.set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let ended = loop {
            let event = tokio::select! {
                e = eventloop.poll() => e,
                _ = stop.changed() => {
                    let _ = client.try_disconnect();
                    return;
                }
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = BACKOFF_MIN;
                    // The retained reports arrive again after this subscription.
                    app.fleet.mark_synced(now_ms());
                    if let Err(e) = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce) {
                        break e.to_string();
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => take(&app, &p.topic, &p.payload),
                Ok(_) => {}
                Err(e) => break e.to_string(),
            }
        };
        tracing::debug!(error = %ended, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
            "the fleet view lost the broker; reconnecting");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Puts one report into the view, or counts why not.
fn take(app: &App, topic: &str, payload: &[u8]) {
    if payload.is_empty() {
        return;
    }
    let taken = match parse_status_topic(topic) {
        Some((service, instance)) => app.fleet.take(payload, service, instance, now_ms(), Via::Mqtt),
        None => Err(NotTaken::Invalid("not a status topic".into())),
    };
    app.metrics.fleet_report(taken.is_ok());
    if let Err(why) = taken {
        tracing::debug!(topic, reason = %why, "status report dropped");
    }
}
