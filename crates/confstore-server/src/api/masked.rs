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

/// A value as the API shows it: the marker for a secret, else the value itself. The one
/// mask every route goes through; the two constructors only differ in what they start from.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    /// What the answer carries in the value's place.
    pub value: Value,
    /// Whether it is a secret (and `value` the marker).
    pub secret: bool,
}

impl Shown {
    /// A stored value, as canonical JSON text (the log's and the state's form).
    pub fn text(json: &str) -> Self {
        Self::value(parse(json))
    }

    /// A value already parsed (a resolved value, a snapshot's `config` entry).
    pub fn value(value: Value) -> Self {
        if is_secret(&value) { Self { value: marker(), secret: true } } else { Self { value, secret: false } }
    }
}

/// Whether a value is a secret: an object with a `$secret` member. Only secrets' envelopes
/// are (plain values with one are refused), and anything with one is masked, even a
/// malformed envelope, so no part of an envelope is ever shown.
fn is_secret(value: &Value) -> bool {
    value.as_object().is_some_and(|o| o.contains_key(SECRET_MEMBER))
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
        let secret = Shown { value: json!({"$secret": true}), secret: true };
        assert_eq!(Shown::text(envelope), secret);
        assert_eq!(Shown::text(r#""<secret>""#), Shown { value: json!("<secret>"), secret: false });
        assert_eq!(Shown::text(r#""$secret""#), Shown { value: json!("$secret"), secret: false });
        assert_eq!(Shown::text("8080"), Shown { value: json!(8080), secret: false });
        assert_eq!(Shown::text("not json"), Shown { value: json!("not json"), secret: false }, "shown, not lost");
        let parsed: Value = serde_json::from_str(envelope).unwrap();
        assert_eq!(Shown::value(parsed), secret);
        assert_eq!(Shown::value(json!("<secret>")).value, json!("<secret>"));
        assert_eq!(serde_json::to_value(MaskedSecret { secret: true }).unwrap(), marker(), "the documented shape");
        assert_eq!(Shown::text(r#"{"$secret":"not an envelope"}"#), secret, "anything with the member is masked");
    }
}
