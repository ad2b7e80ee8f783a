//! Instance status (docs/format.md §20): what each running client reports it applied, so
//! operators see which instance runs which version. Shared by the client that reports and
//! the server that keeps the fleet view, so the two cannot drift.
//!
//! A status is advice about the fleet, not configuration: it is not signed and never enters
//! the log. Who may report for a service is decided where it arrives: the broker's rules
//! (the embedded broker's gate, `ops/mosquitto/confstore.acl`) for MQTT, the token's role
//! and scope for REST.
//!
//! No I/O.

use serde::{Deserialize, Serialize};

use crate::limits;
use crate::state::check_service_name;

/// Prefix of the status topics: `system/config-status/<service>/<instance>` (QoS 1,
/// retained; the client's last will says `offline`).
pub const STATUS_TOPIC_PREFIX: &str = "system/config-status/";
/// The `format` member of every status document.
pub const STATUS_FORMAT: &str = "confstore-status/1";

/// `system/config-status/<service>/<instance>`.
pub fn status_topic(service: &str, instance: &str) -> String {
    format!("{STATUS_TOPIC_PREFIX}{service}/{instance}")
}

/// The service and instance a status topic names (both checked), if it is one.
pub fn parse_status_topic(topic: &str) -> Option<(&str, &str)> {
    let (service, instance) = topic.strip_prefix(STATUS_TOPIC_PREFIX)?.split_once('/')?;
    (check_service_name(service).is_ok() && check_instance_id(instance).is_ok()).then_some((service, instance))
}

/// Checks an instance id: 1..=64 bytes of `A-Z a-z 0-9 . _ -`, starting with a letter or
/// digit (a single MQTT topic level, no wildcard, safe in a URL path).
pub fn check_instance_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > limits::INSTANCE_ID_BYTES_MAX {
        return Err(format!("an instance id has 1 to {} bytes", limits::INSTANCE_ID_BYTES_MAX));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("an instance id starts with a letter or digit".into());
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("{c:?} is not allowed in an instance id (A-Z a-z 0-9 . _ -)"));
    }
    Ok(())
}

/// An instance id made from a host name (or anything else): the allowed characters kept,
/// others replaced by `-`, cut to the limit; `None` if nothing usable is left.
pub fn instance_id_from(text: &str) -> Option<String> {
    let mapped: String = text
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .collect();
    let trimmed = mapped.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let cut: String = trimmed.chars().take(limits::INSTANCE_ID_BYTES_MAX).collect();
    check_instance_id(&cut).is_ok().then_some(cut)
}

/// Whether the instance is connected (its last will, or a clean shutdown, says `offline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Running and connected.
    Online,
    /// Gone: disconnected or stopped.
    Offline,
}

/// Where the version an instance holds came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The live stream (MQTT).
    Live,
    /// A REST fetch (start-up, a gap filled, a catch-up).
    Rest,
    /// The client's own LKG file (the store was unreachable at start).
    Lkg,
}

/// One status report (docs/format.md §20). `Online` reports carry what the instance holds;
/// an `Offline` one (the last will) may carry only the names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// Always [`STATUS_FORMAT`].
    pub format: String,
    /// The service.
    pub service: String,
    /// The instance (its id).
    pub instance: String,
    /// Online or offline.
    pub state: Presence,
    /// The store the instance's configuration is from (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    /// The store generation of the version held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The store epoch the version held reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The version held: the epoch that last changed the service (`changed_epoch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Where that version came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Names of the configuration keys an environment variable overrides (never values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_overrides: Vec<String>,
    /// When the instance applied the version held (unix ms, its clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_ms: Option<u64>,
    /// The health the service itself last set, if it ever did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// The staged rollout whose configuration the instance runs instead of `version`'s
    /// (its id, docs/format.md §21), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<u64>,
    /// When the report was made (unix ms, the instance's clock).
    pub time_ms: u64,
    /// Which run of the client made it (its start, unix ms): the last will is made when
    /// the client connects, so it is older than the reports that follow it; the view takes
    /// an `offline` of the run it holds whatever its time, and nothing of an older run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
}

/// Why a status report is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// Larger than [`limits::STATUS_BYTES_MAX`].
    #[error("status report is {0} bytes; at most {max} are accepted", max = limits::STATUS_BYTES_MAX)]
    TooLarge(usize),
    /// Not a status document.
    #[error("status report: {0}")]
    Invalid(String),
}

impl Status {
    /// An online report of what an instance holds.
    pub fn online(service: &str, instance: &str, time_ms: u64) -> Self {
        Self {
            format: STATUS_FORMAT.to_owned(),
            service: service.to_owned(),
            instance: instance.to_owned(),
            state: Presence::Online,
            store_id: None,
            generation: None,
            epoch: None,
            version: None,
            source: None,
            env_overrides: Vec::new(),
            applied_ms: None,
            healthy: None,
            rollout: None,
            time_ms,
            session: None,
        }
    }

    /// The offline report (an instance's last will, or its clean shutdown).
    pub fn offline(service: &str, instance: &str, time_ms: u64) -> Self {
        Self { state: Presence::Offline, ..Self::online(service, instance, time_ms) }
    }

    /// Parses and checks a report: size, shape, names, an online report's version members,
    /// the overrides' count and names.
    pub fn parse(bytes: &[u8]) -> Result<Self, StatusError> {
        if bytes.len() > limits::STATUS_BYTES_MAX {
            return Err(StatusError::TooLarge(bytes.len()));
        }
        let status: Self = serde_json::from_slice(bytes).map_err(|e| StatusError::Invalid(e.to_string()))?;
        status.check()?;
        Ok(status)
    }

    /// The checks of [`Self::parse`] on a report already decoded.
    pub fn check(&self) -> Result<(), StatusError> {
        let invalid = |why: String| Err(StatusError::Invalid(why));
        if self.format != STATUS_FORMAT {
            return invalid(format!("format {:?}, expected {STATUS_FORMAT:?}", self.format));
        }
        if let Err(e) = check_service_name(&self.service) {
            return invalid(e.to_string());
        }
        if let Err(e) = check_instance_id(&self.instance) {
            return invalid(e);
        }
        if self.state == Presence::Online
            && (self.store_id.is_none() || self.generation.is_none() || self.epoch.is_none() || self.version.is_none())
        {
            return invalid("an online report names store_id, generation, epoch and version".into());
        }
        if let Some(id) = &self.store_id
            && (id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return invalid(format!("store_id {id:?} is not 32 hex digits"));
        }
        if self.env_overrides.len() > limits::STATUS_ENV_OVERRIDES_MAX {
            return invalid(format!("more than {} env overrides", limits::STATUS_ENV_OVERRIDES_MAX));
        }
        if let Some(bad) = self.env_overrides.iter().find(|k| crate::state::check_key_name(k).is_err()) {
            return invalid(format!("env override {bad:?} is not a key name"));
        }
        Ok(())
    }

    /// The report as the JSON text that is published.
    pub fn to_json(&self) -> String {
        // A struct of strings, numbers and lists: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online() -> Status {
        Status {
            store_id: Some("00112233445566778899aabbccddeeff".into()),
            generation: Some(1),
            epoch: Some(7),
            version: Some(5),
            source: Some(Source::Live),
            env_overrides: vec!["port".into()],
            applied_ms: Some(1_700_000_000_000),
            healthy: Some(true),
            ..Status::online("web", "web-1", 1_700_000_000_001)
        }
    }

    #[test]
    fn a_report_round_trips_and_bad_ones_are_refused_with_the_reason() {
        let s = online();
        assert_eq!(Status::parse(s.to_json().as_bytes()), Ok(s.clone()));
        let off = Status::offline("web", "web-1", 1);
        assert_eq!(Status::parse(off.to_json().as_bytes()), Ok(off));
        let bad = |f: &dyn Fn(&mut Status)| {
            let mut s = online();
            f(&mut s);
            Status::parse(s.to_json().as_bytes()).unwrap_err().to_string()
        };
        assert!(bad(&|s| s.format = "x".into()).contains("format"));
        assert!(bad(&|s| s.service = "Web".into()).contains("service"));
        assert!(bad(&|s| s.instance = "a/b".into()).contains("instance id"));
        assert!(bad(&|s| s.version = None).contains("online report"));
        assert!(bad(&|s| s.store_id = Some("zz".into())).contains("store_id"));
        assert!(bad(&|s| s.env_overrides = vec!["a b".into()]).contains("env override"));
        let unknown =
            br#"{"format":"confstore-status/1","service":"web","instance":"a","state":"offline","time_ms":1,"x":1}"#;
        assert!(Status::parse(unknown).unwrap_err().to_string().contains("unknown field"));
        let big = vec![b' '; limits::STATUS_BYTES_MAX + 1];
        assert_eq!(Status::parse(&big), Err(StatusError::TooLarge(limits::STATUS_BYTES_MAX + 1)));
        assert!(Status::parse(b"not json").is_err());
    }

    #[test]
    fn topics_and_instance_ids() {
        assert_eq!(status_topic("web", "h-1"), "system/config-status/web/h-1");
        assert_eq!(parse_status_topic("system/config-status/web/h-1"), Some(("web", "h-1")));
        for bad in [
            "system/config-status/web",
            "system/config-status/web/a/b",
            "system/config-status/Web/a",
            "system/config/web/a",
            "system/config-status/web/+",
        ] {
            assert_eq!(parse_status_topic(bad), None, "{bad}");
        }
        assert!(check_instance_id("pod-7f9.eu_1").is_ok());
        for bad in ["", "-a", "a b", "a#", &"a".repeat(65)] {
            assert!(check_instance_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(instance_id_from(" host name.local\n").as_deref(), Some("host-name.local"));
        assert_eq!(instance_id_from("--x").as_deref(), Some("x"));
        assert_eq!(instance_id_from("///"), None);
    }
}
