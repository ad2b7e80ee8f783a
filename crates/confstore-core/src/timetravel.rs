//! Comparing states at two points of the log, and the changes that roll one back to the
//! other. Pure functions over [`State`]s that callers obtain by replaying the log.

use crate::state::{Change, State};

/// One key whose value differs between two states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChange {
    /// Service name.
    pub service: String,
    /// Key name.
    pub key: String,
    /// Canonical JSON before (`None`: not set).
    pub before: Option<String>,
    /// Canonical JSON after (`None`: not set).
    pub after: Option<String>,
}

impl KeyChange {
    /// "added", "removed" or "changed".
    pub fn what(&self) -> &'static str {
        match (&self.before, &self.after) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            _ => "changed",
        }
    }
}

/// Every key that differs between `from` and `to` (of `service` only, when given), sorted
/// by service and key. Services that exist on one side only show their keys as added or
/// removed.
pub fn diff(from: &State, to: &State, service: Option<&str>) -> Vec<KeyChange> {
    let mut names: Vec<&String> = from.services.keys().chain(to.services.keys()).collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names.into_iter().filter(|n| service.is_none_or(|s| s == n.as_str())) {
        let empty = Default::default();
        let a = from.services.get(name).unwrap_or(&empty);
        let b = to.services.get(name).unwrap_or(&empty);
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let (before, after) = (a.get(key), b.get(key));
            if before != after {
                out.push(KeyChange {
                    service: name.clone(),
                    key: key.clone(),
                    before: before.cloned(),
                    after: after.cloned(),
                });
            }
        }
    }
    out
}

/// The changeset that makes `current` equal to `target` (for `service` only, when given),
/// led by the rollback marker. Empty when there is nothing to roll back. Services
/// registered after `target` stay registered, with their keys unset.
///
/// A secret comes back as a `Set` of its stored envelope: pass the changes through
/// [`restore_secrets`] before committing them.
pub fn rollback_changes(current: &State, target: &State, to_epoch: u64, service: Option<&str>) -> Vec<Change> {
    let changes: Vec<Change> = diff(current, target, service)
        .into_iter()
        .filter(|c| current.services.contains_key(&c.service))
        .map(|c| match c.after {
            Some(json) => Change::Set {
                service: c.service,
                key: c.key,
                // Stored values are canonical JSON written by `decide`; a value that does not
                // parse could only come from a verified but hand-made event: keep its text.
                value: serde_json::from_str(&json).unwrap_or(serde_json::Value::String(json)),
            },
            None => Change::Unset { service: c.service, key: c.key },
        })
        .collect();
    if changes.is_empty() {
        return changes;
    }
    let marker = Change::RollBack { to_epoch, service: service.map(str::to_owned) };
    std::iter::once(marker).chain(changes).collect()
}

/// Makes the changes of [`rollback_changes`] that bring a secret back (a `Set` of its stored
/// envelope, which `decide` refuses as a plain value) into secret sets of that same
/// envelope, with the plaintext `open` decrypts — used only to check it against the
/// service's schema, as for every secret set; the envelope is stored as it was, so the log
/// never holds more than ciphertext. The first error of `open` is returned.
pub fn restore_secrets<E>(
    changes: Vec<Change>,
    mut open: impl FnMut(&str, &str, &crate::secret::Envelope) -> Result<crate::secret::Plaintext, E>,
) -> Result<Vec<Change>, E> {
    changes
        .into_iter()
        .map(|change| match change {
            Change::Set { service, key, value } => {
                match crate::secret::envelope_of(&crate::state::canonical_json_text(&value)) {
                    Some(envelope) => {
                        let plaintext = open(&service, &key, &envelope)?;
                        Ok(Change::SetSecret { service, key, plaintext, envelope })
                    }
                    None => Ok(Change::Set { service, key, value }),
                }
            }
            other => Ok(other),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(entries: &[(&str, &str, &str)]) -> State {
        let mut s = State::default();
        for (svc, k, v) in entries {
            let values = std::sync::Arc::make_mut(s.services.entry((*svc).to_owned()).or_default());
            if !k.is_empty() {
                values.insert((*k).to_owned(), (*v).to_owned());
            }
        }
        s
    }

    #[test]
    fn diff_names_added_removed_and_changed() {
        let a = state(&[("web", "port", "80"), ("web", "tls", "false"), ("db", "", "")]);
        let b = state(&[("web", "port", "8080"), ("web", "motd", "\"hi\""), ("db", "pool", "4")]);
        let d = diff(&a, &b, None);
        let shown: Vec<(&str, &str, &str)> = d.iter().map(|c| (c.service.as_str(), c.key.as_str(), c.what())).collect();
        assert_eq!(
            shown,
            [("db", "pool", "added"), ("web", "motd", "added"), ("web", "port", "changed"), ("web", "tls", "removed")]
        );
        assert_eq!(diff(&a, &b, Some("db")).len(), 1);
        assert!(diff(&a, &a, None).is_empty());
    }

    #[test]
    fn rollback_changes_restore_the_target_and_lead_with_the_marker() {
        let now = state(&[("web", "port", "8080"), ("web", "motd", "\"hi\""), ("new", "k", "1")]);
        let then = state(&[("web", "port", "80")]);
        let changes = rollback_changes(&now, &then, 3, None);
        assert_eq!(changes[0], Change::RollBack { to_epoch: 3, service: None });
        assert_eq!(changes.len(), 4, "{changes:?}");
        assert!(rollback_changes(&now, &now, 3, None).is_empty());
        let only_web = rollback_changes(&now, &then, 3, Some("web"));
        assert_eq!(only_web.len(), 3);
    }
}
