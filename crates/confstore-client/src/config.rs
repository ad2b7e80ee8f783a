//! [`Config`]: one applied version of the service's configuration, env overrides included,
//! immutable once built and shared by `Arc`.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock, RwLock};

use confstore_core::stream::{self, Rejection, SnapshotVersion};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::env::EnvOverrides;
use crate::error::ClientError;

/// Where a resolved value comes from, highest precedence first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// An environment variable `<SERVICE>__<KEY>`.
    Env,
    /// Set on the service in the store.
    Service,
    /// Inherited from the store's `global` scope.
    Global,
    /// The service schema's default.
    Default,
}

impl Source {
    /// Lowercase name: `env`, `service`, `global`, `default`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Env => "env",
            Self::Service => "service",
            Self::Global => "global",
            Self::Default => "default",
        }
    }

    fn from_snapshot(name: Option<&str>) -> Self {
        match name {
            Some("global") => Self::Global,
            Some("default") => Self::Default,
            _ => Self::Service,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One key as the store signed it: its value and its source's name.
#[derive(Debug)]
struct Stored {
    value: Value,
    source: Value,
}

type Typed = Arc<dyn Any + Send + Sync>;

/// One applied version: the verified snapshot, its version, and the resolved key → value
/// map (env → store → schema defaults). Lookups read memory only.
///
/// The store's keys are held in a persistent map, so the version after a delta shares
/// everything but the keys it changed with the version before: applying a delta costs
/// what it changes, not the size of the service (docs/adr/0020).
pub struct Config {
    version: SnapshotVersion,
    /// The signed document's members other than `config` and `sources`.
    header: Map<String, Value>,
    /// `config` and `sources` of the signed document, by key.
    store: imbl::OrdMap<Arc<str>, Arc<Stored>>,
    /// The env overrides in force: key → value (store keys they override, and keys they add).
    env: BTreeMap<String, Value>,
    /// The signed document, built on first request (a version made from a delta has none
    /// until then).
    document: OnceLock<Value>,
    /// Deserialized views of the whole map, one per requested type (see [`Config::get`]).
    typed: RwLock<HashMap<TypeId, Typed>>,
    /// The staged rollout this configuration is (docs/format.md §21), if it is one.
    rollout: Option<u64>,
}

impl Config {
    /// Resolves a verified snapshot document: the store's `config` and `sources`, then the
    /// env overrides on top.
    pub(crate) fn new(document: Value, version: SnapshotVersion, env: &EnvOverrides) -> Self {
        let mut header = document.as_object().cloned().unwrap_or_default();
        let config = header.remove("config");
        let sources = header.remove("sources");
        let store: imbl::OrdMap<Arc<str>, Arc<Stored>> = config
            .as_ref()
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(key, value)| {
                let source = sources.as_ref().and_then(|s| s.get(key)).cloned().unwrap_or(Value::Null);
                (Arc::from(key.as_str()), Arc::new(Stored { value: value.clone(), source }))
            })
            .collect();
        let env = env.resolve(store.keys().map(|k| &**k));
        Self {
            version,
            header,
            store,
            env,
            document: OnceLock::from(document),
            typed: RwLock::default(),
            rollout: None,
        }
    }

    /// The version a verified delta leads to from this one (the caller has judged it the
    /// next): the delta's keys set, its removed keys gone, its version fields, the env
    /// overrides re-applied where the change touches them.
    pub(crate) fn with_delta(
        &self,
        delta: &Value,
        version: SnapshotVersion,
        env: &EnvOverrides,
    ) -> Result<Self, Rejection> {
        let parts = stream::delta_parts(delta)?;
        let mut store = self.store.clone();
        for key in &parts.removed {
            store.remove(*key);
        }
        for (key, value) in parts.config {
            let source = parts.sources.get(key).cloned().unwrap_or(Value::Null);
            store.insert(Arc::from(key.as_str()), Arc::new(Stored { value: value.clone(), source }));
        }
        let mut header = self.header.clone();
        for (field, value) in parts.version {
            header.insert(field.to_owned(), value.clone());
        }
        // Which keys an override applies to depends on which keys the store has: only a
        // change to a key an override names can change that.
        let touched = parts.removed.iter().copied().chain(parts.config.keys().map(String::as_str));
        let env = if env.names_any(touched) { env.resolve(store.keys().map(|k| &**k)) } else { self.env.clone() };
        Ok(Self { version, header, store, env, document: OnceLock::new(), typed: RwLock::default(), rollout: None })
    }

    /// Store id, generation, epoch and version chain of this snapshot.
    pub fn version(&self) -> &SnapshotVersion {
        &self.version
    }

    /// The staged rollout whose configuration this is (its id), or `None` for the
    /// service's current version. A staged configuration carries the version fields of the
    /// version it was staged on (docs/format.md §21).
    pub fn rollout(&self) -> Option<u64> {
        self.rollout
    }

    /// This configuration marked as the staged one of rollout `seq`.
    pub(crate) fn staged(mut self, seq: u64) -> Self {
        self.rollout = Some(seq);
        self
    }

    /// The resolved value of `key`.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.env.get(key).or_else(|| self.store.get(key).map(|s| &s.value))
    }

    /// Where the resolved value of `key` comes from.
    pub fn source(&self, key: &str) -> Option<Source> {
        if self.env.contains_key(key) {
            return Some(Source::Env);
        }
        self.store.get(key).map(|s| Source::from_snapshot(s.source.as_str()))
    }

    /// The resolved value of `key` as a `T`.
    pub fn get_key<T: DeserializeOwned>(&self, key: &str) -> Result<T, ClientError> {
        let value = self.value(key).ok_or_else(|| ClientError::MissingKey(key.to_owned()))?;
        T::deserialize(value).map_err(|source| ClientError::KeyType { key: key.to_owned(), source })
    }

    /// Every resolved key, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        let mut keys: Vec<&str> = self.store.keys().map(|k| &**k).chain(self.env.keys().map(String::as_str)).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
    }

    /// Every resolved `(key, value, source)`, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value, Source)> + '_ {
        self.keys().filter_map(|k| Some((k, self.value(k)?, self.source(k)?)))
    }

    /// The verified snapshot document as signed by the store (no env overrides).
    pub fn document(&self) -> &Value {
        self.document.get_or_init(|| {
            let mut doc = self.header.clone();
            let config = self.store.iter().map(|(k, s)| (k.to_string(), s.value.clone())).collect::<Map<_, _>>();
            let sources = self.store.iter().map(|(k, s)| (k.to_string(), s.source.clone())).collect::<Map<_, _>>();
            doc.insert("config".into(), Value::Object(config));
            doc.insert("sources".into(), Value::Object(sources));
            Value::Object(doc)
        })
    }

    /// The resolved map as one JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(self.iter().map(|(k, v, _)| (k.to_owned(), v.clone())).collect::<Map<_, _>>())
    }

    /// The whole resolved map deserialized into `T`; done once per type and version, later
    /// calls return the same `Arc`.
    pub fn get<T: DeserializeOwned + Send + Sync + 'static>(&self) -> Result<Arc<T>, ClientError> {
        let id = TypeId::of::<T>();
        if let Some(hit) = self.typed.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(downcast(hit));
        }
        let fresh: Arc<T> = Arc::new(
            T::deserialize(self.to_json())
                .map_err(|source| ClientError::Deserialize { type_name: std::any::type_name::<T>(), source })?,
        );
        let mut cache = self.typed.write().unwrap_or_else(|e| e.into_inner());
        // Another thread may have won the race: keep its value so every caller shares one.
        Ok(downcast(cache.entry(id).or_insert(fresh)))
    }
}

fn downcast<T: Send + Sync + 'static>(typed: &Typed) -> Arc<T> {
    // The cache is keyed by TypeId, so the entry for T always holds a T.
    Arc::clone(typed).downcast::<T>().unwrap_or_else(|_| unreachable!("typed cache entry of the wrong type"))
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries: Vec<_> = self.iter().collect();
        f.debug_struct("Config").field("version", &self.version).field("entries", &entries).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(env: &[(&str, &str)]) -> Config {
        let doc = json!({
            "service": "web", "store_id": "00", "generation": 1, "epoch": 5, "changed_epoch": 4,
            "changed_seq": 9, "prev_epoch": 3, "schema_hash": "",
            "config": {"log_level": "debug", "port": 8080, "region": "eu-west", "tls": true},
            "sources": {"log_level": "service", "port": "default", "region": "global", "tls": "default"},
        });
        let version = confstore_core::stream::snapshot_version(&doc).unwrap();
        let vars = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Config::new(doc, version, &EnvOverrides::from_vars("web", vars))
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Web {
        port: u16,
        tls: bool,
        region: String,
    }

    #[test]
    fn values_sources_and_env_precedence() {
        let c = config(&[("WEB__PORT", "9090"), ("WEB__EXTRA", "hello")]);
        assert_eq!(c.value("port"), Some(&json!(9090)));
        assert_eq!(c.source("port"), Some(Source::Env));
        assert_eq!(c.source("region"), Some(Source::Global));
        assert_eq!(c.source("tls"), Some(Source::Default));
        assert_eq!(c.source("log_level"), Some(Source::Service));
        assert_eq!(c.value("extra"), Some(&json!("hello")));
        assert_eq!(c.source("extra"), Some(Source::Env));
        assert_eq!(c.keys().collect::<Vec<_>>(), ["extra", "log_level", "port", "region", "tls"]);
        assert_eq!(c.document()["config"]["port"], json!(8080), "the signed document stays as signed");
        assert_eq!(c.version().changed_epoch, 4);
    }

    /// Everything a caller can see of a configuration.
    fn seen(c: &Config) -> (Vec<(String, Value, Source)>, Value, Value) {
        let entries = c.iter().map(|(k, v, s)| (k.to_owned(), v.clone(), s)).collect();
        (entries, c.document().clone(), c.to_json())
    }

    #[test]
    fn a_version_made_from_a_delta_equals_the_one_made_from_the_whole_snapshot() {
        let base = json!({
            "service": "web", "store_id": "00", "generation": 1, "epoch": 5, "changed_epoch": 4,
            "changed_seq": 9, "prev_epoch": 3, "schema_hash": "",
            "config": {"log_level": "debug", "port": 8080, "region": "eu-west", "tls": true},
            "sources": {"log_level": "service", "port": "default", "region": "global", "tls": "default"},
        });
        let delta = |config: Value, sources: Value, removed: Value| {
            json!({
                "service": "web", "store_id": "00", "generation": 1, "epoch": 6, "changed_epoch": 6,
                "changed_seq": 10, "prev_epoch": 4, "schema_hash": "h2",
                "config": config, "sources": sources, "removed": removed,
            })
        };
        let deltas = [
            delta(json!({"port": 9000}), json!({"port": "service"}), json!([])),
            delta(
                json!({"max.conns": 7, "new": "x"}),
                json!({"max.conns": "service", "new": "global"}),
                json!(["tls"]),
            ),
            delta(json!({}), json!({}), json!(["log_level", "region"])),
        ];
        let envs: [&[(&str, &str)]; 4] = [
            &[],
            &[("WEB__PORT", "1")],
            // Names a key the delta adds: before it, the override adds `max_conns`; after
            // it, the override applies to `max.conns` instead.
            &[("WEB__MAX_CONNS", "64"), ("WEB__EXTRA", "e")],
            &[("WEB__TLS", "false"), ("WEB__LOG_LEVEL", "\"warn\"")],
        ];
        for vars in envs {
            let env = EnvOverrides::from_vars("web", vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
            for d in &deltas {
                let held = Config::new(base.clone(), confstore_core::stream::snapshot_version(&base).unwrap(), &env);
                let whole = stream::apply_delta(&base, d).unwrap();
                let version = confstore_core::stream::snapshot_version(&whole).unwrap();
                let from_delta = held.with_delta(d, version.clone(), &env).unwrap();
                let from_whole = Config::new(whole, version, &env);
                assert_eq!(seen(&from_delta), seen(&from_whole), "env {vars:?}, delta {d}");
                assert_eq!(
                    seen(&held),
                    seen(&Config::new(base.clone(), held.version().clone(), &env)),
                    "held unchanged"
                );
            }
        }
        let bad = json!({"config": {"a": 1}, "sources": {}, "removed": []});
        let held = config(&[]);
        assert!(matches!(
            held.with_delta(&bad, held.version().clone(), &EnvOverrides::default()),
            Err(Rejection::Malformed(_))
        ));
    }

    #[test]
    fn typed_access() {
        let c = config(&[]);
        assert_eq!(c.get_key::<u16>("port").unwrap(), 8080);
        assert!(matches!(c.get_key::<u16>("region"), Err(ClientError::KeyType { .. })));
        assert!(matches!(c.get_key::<u16>("nope"), Err(ClientError::MissingKey(k)) if k == "nope"));
        let first = c.get::<Web>().unwrap();
        assert_eq!(*first, Web { port: 8080, tls: true, region: "eu-west".into() });
        assert!(Arc::ptr_eq(&first, &c.get::<Web>().unwrap()), "cached per type");
        assert!(matches!(c.get::<Vec<u8>>(), Err(ClientError::Deserialize { .. })));
    }
}
