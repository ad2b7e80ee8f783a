//! How the API shows a secret's value: never its plaintext or ciphertext, but the typed
//! marker `{"$secret": true}` in the value's place (docs/format.md §18). Every route that
//! shows stored values (state, diff, changesets, keys, values) masks through this module, so
//! there is one shape and one place that makes it.
//!
//! The shape cannot be mistaken for a stored value: objects with a `$secret` member are
//! reserved for secrets and refused as plain values (format.md §15). A plain string such as
//! `"<secret>"` is therefore just a string.

use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

/// The member that marks a secret, in the log's envelopes and in the masked marker alike.
pub const SECRET_MEMBER: &str = "$secret";

/// A secret's value as the API shows it: `{"$secret": true}`, nothing else. Reveal the
/// plaintext with `POST /api/v1/services/{service}/secrets/{key}/reveal` (`secrets.reveal`,
/// audited). No plain value can have this shape: objects with a `$secret` member are
/// reserved for secrets.
#[derive(Debug, Serialize, ToSchema)]
pub struct MaskedSecret {
    /// Always `true`.
    #[serde(rename = "$secret")]
    pub secret: bool,
}

/// The marker: `{"$secret": true}`.
pub fn marker() -> Value {
    json!({ SECRET_MEMBER: true })
}

/// Whether a stored value (canonical JSON text, as in the log and the state) is a secret's
/// envelope.
pub fn is_secret_text(json: &str) -> bool {
    confstore_core::secret::envelope_of(json).is_some()
}

/// A stored value (canonical JSON text) as shown: the marker for a secret, else the value.
pub fn stored(json: &str) -> Value {
    if is_secret_text(json) {
        return marker();
    }
    // Stored values are canonical JSON written by `decide`; a verified but hand-made event
    // could hold other text: show it as a string rather than lose it.
    serde_json::from_str(json).unwrap_or_else(|_| Value::String(json.to_owned()))
}

/// Whether a resolved value (a snapshot's `config` entry) is a secret: an object with a
/// `$secret` member, which only secrets' envelopes are.
pub fn is_secret_value(value: &Value) -> bool {
    value.as_object().is_some_and(|o| o.contains_key(SECRET_MEMBER))
}

/// A resolved value as shown: the marker for a secret, else the value.
pub fn resolved(value: &Value) -> Value {
    if is_secret_value(value) { marker() } else { value.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_the_marker_and_a_plain_lookalike_is_itself() {
        let envelope = r#"{"$secret":{"ciphertext":"00","key_version":1,"nonce":"000000000000000000000000"}}"#;
        assert_eq!(stored(envelope), json!({"$secret": true}));
        assert_eq!(stored(r#""<secret>""#), json!("<secret>"));
        assert_eq!(stored("8080"), json!(8080));
        let parsed: Value = serde_json::from_str(envelope).unwrap();
        assert_eq!(resolved(&parsed), marker());
        assert_eq!(resolved(&json!("<secret>")), json!("<secret>"));
        assert_eq!(serde_json::to_value(MaskedSecret { secret: true }).unwrap(), marker(), "the documented shape");
    }
}
