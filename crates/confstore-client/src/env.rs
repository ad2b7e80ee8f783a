//! Environment overrides: `<SERVICE>__<KEY>` beats the store's value.
//!
//! Read once at start, re-applied to every version, so an override stays in force across
//! live updates.

use std::collections::BTreeMap;

use serde_json::Value;

/// The environment variable that overrides `key` of `service`: both uppercased, every
/// character outside `[A-Za-z0-9]` replaced by `_`, joined by a double underscore
/// (`web-api`, `max.conns` → `WEB_API__MAX_CONNS`).
pub fn env_var_name(service: &str, key: &str) -> String {
    format!("{}__{}", normalize(service), normalize(key))
}

/// Uppercase, `[A-Za-z0-9]` kept, anything else `_`.
fn normalize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// The overrides of one service, taken from an environment snapshot.
#[derive(Clone, Debug, Default)]
pub(crate) struct EnvOverrides {
    /// Normalized key name (the variable's suffix) → value.
    by_name: BTreeMap<String, Value>,
}

impl EnvOverrides {
    /// Picks the variables `<SERVICE>__*` out of `vars`. A value is JSON if it parses as
    /// JSON, else a string (`8080` is a number, `"8080"` and `eu-west` are strings).
    pub(crate) fn from_vars(service: &str, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let prefix = format!("{}__", normalize(service));
        let by_name = vars
            .into_iter()
            .filter_map(|(name, raw)| {
                let suffix = normalize(&name).strip_prefix(&prefix)?.to_owned();
                if suffix.is_empty() {
                    return None;
                }
                let value = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
                Some((suffix, value))
            })
            .collect();
        Self { by_name }
    }

    /// The overrides in force over a store with `keys`: key → value. Every store key whose
    /// normalized name matches a variable gets its value; a variable matching no store key
    /// adds the key under its lowercased suffix.
    pub(crate) fn resolve<'a>(&self, keys: impl Iterator<Item = &'a str>) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        if self.by_name.is_empty() {
            return out;
        }
        let mut matched: BTreeMap<&str, bool> = self.by_name.keys().map(|n| (n.as_str(), false)).collect();
        for key in keys {
            if let Some((name, value)) = self.by_name.get_key_value(&normalize(key)) {
                out.insert(key.to_owned(), value.clone());
                matched.insert(name.as_str(), true);
            }
        }
        for (name, value) in &self.by_name {
            if !matched.get(name.as_str()).copied().unwrap_or(false) {
                out.insert(name.to_ascii_lowercase(), value.clone());
            }
        }
        out
    }

    /// Whether a variable names any of `keys` (so a change to them can change which keys
    /// the overrides apply to).
    pub(crate) fn names_any<'a>(&self, mut keys: impl Iterator<Item = &'a str>) -> bool {
        !self.by_name.is_empty() && keys.any(|k| self.by_name.contains_key(&normalize(k)))
    }

    /// Whether there is no override at all.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[track_caller]
    fn check(service: &str, env: &[(&str, &str)], store: &[(&str, Value)], expected: &[(&str, Value, bool)]) {
        let overrides = EnvOverrides::from_vars(service, vars(env));
        let in_force = overrides.resolve(store.iter().map(|(k, _)| *k));
        let mut entries: BTreeMap<String, (Value, bool)> =
            store.iter().map(|(k, v)| ((*k).to_owned(), (v.clone(), false))).collect();
        for (k, v) in in_force {
            entries.insert(k, (v, true));
        }
        let got: Vec<(String, Value, bool)> = entries.into_iter().map(|(k, (v, env))| (k, v, env)).collect();
        let want: Vec<(String, Value, bool)> =
            expected.iter().map(|(k, v, e)| ((*k).to_owned(), v.clone(), *e)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn names() {
        assert_eq!(env_var_name("web-api", "max.conns"), "WEB_API__MAX_CONNS");
        assert_eq!(env_var_name("web", "port"), "WEB__PORT");
        assert_eq!(env_var_name("stt_2", "Log-Level"), "STT_2__LOG_LEVEL");
    }

    #[test]
    fn env_beats_store_and_parses_json() {
        check(
            "web-api",
            &[("WEB_API__MAX_CONNS", "64"), ("WEB_API__REGION", "eu-west"), ("WEB_API__NAME", "\"8080\"")],
            &[("max.conns", json!(10)), ("region", json!("us")), ("name", json!("x")), ("tls", json!(true))],
            &[
                ("max.conns", json!(64), true),
                ("name", json!("8080"), true),
                ("region", json!("eu-west"), true),
                ("tls", json!(true), false),
            ],
        );
    }

    #[test]
    fn unknown_key_is_added_lowercased() {
        check(
            "web",
            &[("WEB__FEATURE_X", "true")],
            &[("port", json!(1))],
            &[("feature_x", json!(true), true), ("port", json!(1), false)],
        );
    }

    #[test]
    fn other_services_and_bare_prefix_are_ignored() {
        check(
            "web",
            &[("WEBX__PORT", "1"), ("API__PORT", "2"), ("WEB__", "3"), ("WEB_PORT", "4")],
            &[("port", json!(9))],
            &[("port", json!(9), false)],
        );
        assert!(EnvOverrides::from_vars("web", vars(&[("PATH", "/bin"), ("WEBX__PORT", "1")])).is_empty());
    }

    #[test]
    fn one_variable_overrides_every_key_with_its_normal_name() {
        check(
            "web",
            &[("WEB__MAX_CONNS", "5")],
            &[("max.conns", json!(1)), ("max-conns", json!(2))],
            &[("max-conns", json!(5), true), ("max.conns", json!(5), true)],
        );
    }
}
