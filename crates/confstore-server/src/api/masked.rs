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

/// Whether a stored value (canonical JSON text, as in the log and the state) is a secret.
pub fn is_secret_text(json: &str) -> bool {
    // Most values cannot be one: skip parsing them.
    json.contains("\"$secret\"") && is_secret_value(&parse(json))
}

/// A stored value (canonical JSON text) as shown: the marker for a secret, else the value.
pub fn stored(json: &str) -> Value {
    let value = parse(json);
    if is_secret_value(&value) { marker() } else { value }
}

/// Whether a value (a stored one parsed, or a snapshot's `config` entry) is a secret: an
/// object with a `$secret` member. Only secrets' envelopes are (plain values with one are
/// refused), and anything with one is masked, even a malformed envelope, so no part of an
/// envelope is ever shown.
pub fn is_secret_value(value: &Value) -> bool {
    value.as_object().is_some_and(|o| o.contains_key(SECRET_MEMBER))
}

/// A resolved value as shown: the marker for a secret, else the value.
pub fn resolved(value: &Value) -> Value {
    if is_secret_value(value) { marker() } else { value.clone() }
}

/// Stored values are canonical JSON written by `decide`; a verified but hand-made event
/// could hold other text: it is shown as a string rather than lost.
fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|_| Value::String(json.to_owned()))
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
        assert!(is_secret_text(envelope) && !is_secret_text(r#""$secret""#) && !is_secret_text("1"));
        assert_eq!(stored(r#"{"$secret":"not an envelope"}"#), marker(), "anything with the member is masked");
    }
}
