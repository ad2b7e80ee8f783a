//! Service schemas: JSON Schema 2020-12, checked on every write (ADR 0008).
//!
//! A service's configuration is validated as one JSON object (key -> value) with the
//! schema's top-level property defaults filled in for keys that are not set. Unknown keys
//! are refused unless the schema allows them: a schema that says nothing about
//! `additionalProperties` / `unevaluatedProperties` at the top level is checked as if it said
//! `"additionalProperties": false` (the plan's `extra="forbid"` posture).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// One way the configuration breaks the schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key concerned (`None`: the object as a whole, e.g. a missing required key).
    pub key: Option<String>,
    /// The JSON Schema keyword that failed (`maximum`, `type`, `additionalProperties`, …).
    pub rule: String,
    /// What the validator says, naming the value.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{k} ({}): {}", self.rule, self.message),
            None => write!(f, "({}): {}", self.rule, self.message),
        }
    }
}

/// SHA-256 of a schema's canonical JSON text.
pub fn schema_hash(schema_json: &str) -> [u8; 32] {
    Sha256::digest(schema_json.as_bytes()).into()
}

/// A schema ready to validate with.
pub struct CompiledSchema {
    validator: jsonschema::Validator,
    defaults: Map<String, Value>,
    effective: Value,
}

/// Checks that `schema` is a valid 2020-12 schema for a service (an object schema) and
/// compiles it with confstore's unknown-keys posture.
pub fn compile(schema: &Value) -> Result<CompiledSchema, String> {
    let Value::Object(top) = schema else {
        return Err("a service schema must be a JSON object".into());
    };
    if let Err(e) = jsonschema::meta::validate(schema) {
        return Err(format!("not a valid JSON Schema 2020-12: {e}"));
    }
    if let Some(t) = top.get("type")
        && t != "object"
    {
        return Err(format!("a service schema describes an object of keys; its \"type\" is {t}"));
    }
    let mut effective = top.clone();
    if !effective.contains_key("additionalProperties") && !effective.contains_key("unevaluatedProperties") {
        effective.insert("additionalProperties".into(), Value::Bool(false));
    }
    let effective = Value::Object(effective);
    let validator =
        jsonschema::draft202012::new(&effective).map_err(|e| format!("the schema does not compile: {e}"))?;
    let defaults = top
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| props.iter().filter_map(|(k, p)| p.get("default").map(|d| (k.clone(), d.clone()))).collect())
        .unwrap_or_default();
    Ok(CompiledSchema { validator, defaults, effective })
}

/// Most compiled schemas kept by [`compiled`].
const COMPILED_CACHE_MAX: usize = crate::limits::COMPILED_SCHEMAS_CACHED_MAX;

/// The stored schema `json` (canonical text, SHA-256 `hash`) compiled, from a small cache
/// keyed by its hash: compiling checks the schema against the 2020-12 meta-schema and builds
/// a validator, which a write to a schema-checked service would otherwise pay every time.
pub fn compiled(json: &str, hash: [u8; 32]) -> Result<std::sync::Arc<CompiledSchema>, String> {
    use std::sync::{Arc, Mutex, OnceLock, PoisonError};
    type Cache = Mutex<Vec<([u8; 32], Arc<CompiledSchema>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    if let Some((_, c)) = cache.lock().unwrap_or_else(PoisonError::into_inner).iter().find(|(h, _)| *h == hash) {
        return Ok(Arc::clone(c));
    }
    let parsed: Value = serde_json::from_str(json).map_err(|e| format!("the stored schema is not JSON: {e}"))?;
    let c = Arc::new(compile(&parsed)?);
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= COMPILED_CACHE_MAX {
        cache.remove(0);
    }
    cache.push((hash, Arc::clone(&c)));
    Ok(c)
}

impl CompiledSchema {
    /// Every violation of `values` (key -> canonical JSON), defaults filled in. Secrets
    /// stored encrypted (their plaintext is not at hand) are left out and count as present
    /// for `required`; they were validated when they were set.
    pub fn check(&self, values: &BTreeMap<String, String>) -> Vec<Violation> {
        let mut object: Map<String, Value> = self.defaults.clone();
        let mut sealed: Vec<&str> = Vec::new();
        for (k, v) in values {
            if crate::secret::envelope_of(v).is_some() {
                object.remove(k);
                sealed.push(k);
                continue;
            }
            object.insert(k.clone(), serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone())));
        }
        let instance = Value::Object(object);
        if sealed.is_empty() {
            return violations(&self.validator, &instance);
        }
        let mut schema = self.effective.clone();
        if let Some(Value::Array(required)) = schema.get_mut("required") {
            required.retain(|r| r.as_str().is_none_or(|r| !sealed.contains(&r)));
        }
        match jsonschema::draft202012::new(&schema) {
            Ok(validator) => violations(&validator, &instance),
            Err(e) => vec![Violation { key: None, rule: "schema".into(), message: e.to_string() }],
        }
    }
}

fn violations(validator: &jsonschema::Validator, instance: &Value) -> Vec<Violation> {
    validator
        .iter_errors(instance)
        .map(|e| {
            let path = e.instance_path().to_string();
            let key = path.trim_start_matches('/').split('/').next().filter(|k| !k.is_empty()).map(unescape);
            Violation { key, rule: e.kind().keyword().to_owned(), message: e.to_string() }
        })
        .collect()
}

/// JSON Pointer unescaping of one reference token.
fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn unknown_keys_are_refused_unless_allowed() {
        let strict = compile(&json!({"properties": {"port": {"type": "integer"}}})).unwrap();
        let v = strict.check(&values(&[("port", "80"), ("debug", "true")]));
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].key.as_deref(), v[0].rule.as_str()), (None, "additionalProperties"));
        let open =
            compile(&json!({"properties": {"port": {"type": "integer"}}, "additionalProperties": true})).unwrap();
        assert!(open.check(&values(&[("port", "80"), ("debug", "true")])).is_empty());
    }

    #[test]
    fn every_violation_is_listed_with_key_and_rule() {
        let s = compile(&json!({
            "properties": {"port": {"type": "integer", "maximum": 65535}, "mode": {"enum": ["a", "b"]}},
            "required": ["port"]
        }))
        .unwrap();
        let v = s.check(&values(&[("port", "70000"), ("mode", "\"c\"")]));
        let got: Vec<(Option<&str>, &str)> = v.iter().map(|x| (x.key.as_deref(), x.rule.as_str())).collect();
        assert!(got.contains(&(Some("port"), "maximum")) && got.contains(&(Some("mode"), "enum")), "{v:?}");
        let missing = s.check(&values(&[]));
        assert_eq!(missing[0].rule, "required");
    }

    #[test]
    fn defaults_satisfy_required_keys() {
        let s = compile(&json!({"properties": {"port": {"type": "integer", "default": 80}}, "required": ["port"]}))
            .unwrap();
        assert!(s.check(&values(&[])).is_empty());
    }

    #[test]
    fn invalid_schemas_are_refused() {
        assert!(compile(&json!({"type": 12})).is_err());
        assert!(compile(&json!([1, 2])).is_err());
        assert!(compile(&json!({"type": "string"})).is_err());
    }
}
