//! Flattened JWS (RFC 7515 §7.2.2) with `alg: EdDSA` (RFC 8037): how confstore signs the
//! documents it hands to others — service snapshots (REST, MQTT, `snapshot --jws`), stream
//! events and signed heads (docs/format.md §14 and §17). The payload is the document's
//! canonical JSON (§8); the protected header names the key (`kid`) and the document type
//! (`typ`), so a snapshot can never be taken for a head or an event.
//!
//! Verification is strict Ed25519 (ADR 0003) and checks `typ` before anything else is
//! trusted. No I/O.

use base64::Engine;
use serde_json::{Value, json};

use crate::keys::{SigningKey, VerifyingKey};

/// `typ` of a service snapshot.
pub const TYP_SNAPSHOT: &str = "confstore-snapshot+json";
/// `typ` of an event on `system/config-events/<service>`.
pub const TYP_EVENT: &str = "confstore-event+json";
/// `typ` of a signed head on `system/config-head`.
pub const TYP_HEAD: &str = "confstore-head+json";
/// `typ` of a service delta on `system/config/<service>` (not retained): one version of the
/// service as the keys it changed (docs/format.md §17.2).
pub const TYP_DELTA: &str = "confstore-delta+json";
/// `typ` of several consecutive versions of a service on `system/config/<service>` (not
/// retained), signed once: `{"deltas": [<delta document>, …]}`, oldest first (docs/format.md
/// §17.2, docs/adr/0035).
pub const TYP_DELTAS: &str = "confstore-deltas+json";
/// `typ` of a staged-rollout message on `system/config-staged/<service>` (retained; docs/format.md §21).
pub const TYP_STAGED: &str = "confstore-staged+json";

/// Why a JWS is not acceptable.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwsError {
    /// Not a flattened JWS of the expected shape.
    #[error("malformed JWS: {0}")]
    Malformed(String),
    /// A JWS of another document type.
    #[error("JWS has typ {found:?}, expected {expected:?}")]
    WrongType {
        /// `typ` of the JWS.
        found: String,
        /// The type asked for.
        expected: &'static str,
    },
    /// Signed by a key that is not trusted here.
    #[error("JWS is signed by key {found}, not by {expected}")]
    WrongKey {
        /// `kid` of the JWS.
        found: String,
        /// The trusted key id(s).
        expected: String,
    },
    /// The signature does not verify (strictly).
    #[error("JWS signature does not verify")]
    BadSignature,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// Signs `doc` as a flattened JWS of type `typ` with `key`; the payload is `doc`'s canonical
/// JSON text.
pub fn sign(doc: &Value, typ: &str, key: &SigningKey) -> Value {
    let canonical = crate::state::canonical_json_text(doc);
    let (input, protected_len, signature) = signing_input_and_signature(&canonical, typ, key);
    let (protected, payload) = (&input[..protected_len], &input[protected_len + 1..]);
    json!({"protected": protected, "payload": payload, "signature": b64().encode(signature)})
}

/// [`sign`] as the JWS's JSON text, byte for byte what `sign(..).to_string()` gives, without
/// building a `Value` or copying the payload more than once: what the live stream sends
/// (a 1,000-key snapshot's payload is ~590 KB).
pub fn sign_text(doc: &Value, typ: &str, key: &SigningKey) -> String {
    sign_canonical_text(&crate::state::canonical_json_text(doc), typ, key)
}

/// [`sign_text`] for a payload given as its canonical JSON text already (docs/format.md §8):
/// what the stream signs when it puts documents it serialised once together.
pub fn sign_canonical_text(canonical: &str, typ: &str, key: &SigningKey) -> String {
    let (input, protected_len, signature) = signing_input_and_signature(canonical, typ, key);
    let (protected, payload) = (&input[..protected_len], &input[protected_len + 1..]);
    // The members in the order serde_json writes an object (sorted), as `sign` gives them;
    // base64url needs no escaping.
    let mut out = String::with_capacity(input.len() + 140);
    out.push_str(r#"{"payload":""#);
    out.push_str(payload);
    out.push_str(r#"","protected":""#);
    out.push_str(protected);
    out.push_str(r#"","signature":""#);
    b64().encode_string(signature, &mut out);
    out.push_str(r#""}"#);
    out
}

/// The JWS signing input (`<protected>.<payload>`, both base64url) of the canonical JSON
/// text `canonical`, the length of its protected part, and the signature over it.
fn signing_input_and_signature(canonical: &str, typ: &str, key: &SigningKey) -> (String, usize, [u8; 64]) {
    let header = json!({"alg": "EdDSA", "kid": key.verifying_key().key_id().to_hex(), "typ": typ});
    let mut input = String::with_capacity(64 + canonical.len().div_ceil(3) * 4);
    b64().encode_string(header.to_string().as_bytes(), &mut input);
    let protected_len = input.len();
    input.push('.');
    b64().encode_string(canonical.as_bytes(), &mut input);
    let signature = key.sign(input.as_bytes());
    (input, protected_len, signature)
}

/// Verifies a flattened JWS of type `typ` against the trusted `keys` (the one its `kid`
/// names) and returns the payload document.
pub fn verify(jws: &Value, typ: &'static str, keys: &[VerifyingKey]) -> Result<Value, JwsError> {
    verify_one_of(jws, &[typ], keys).map(|(_, doc)| doc)
}

/// [`verify`] for a JWS whose `typ` may be any of `typs` (a topic carrying two kinds of
/// document): returns which one it is, and the payload document.
pub fn verify_one_of(
    jws: &Value,
    typs: &[&'static str],
    keys: &[VerifyingKey],
) -> Result<(&'static str, Value), JwsError> {
    let part = |k: &str| jws.get(k).and_then(Value::as_str).ok_or_else(|| JwsError::Malformed(format!("no {k:?}")));
    let (protected, payload, signature) = (part("protected")?, part("payload")?, part("signature")?);
    let header: Value = b64()
        .decode(protected)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or_else(|| JwsError::Malformed("protected header".into()))?;
    if header.get("alg") != Some(&json!("EdDSA")) {
        return Err(JwsError::Malformed("header must say alg EdDSA".into()));
    }
    let found_typ = header.get("typ").and_then(Value::as_str).unwrap_or_default();
    let Some(typ) = typs.iter().copied().find(|t| *t == found_typ) else {
        return Err(JwsError::WrongType { found: found_typ.to_owned(), expected: typs.first().copied().unwrap_or("") });
    };
    let kid = header.get("kid").and_then(Value::as_str).unwrap_or_default();
    let key = keys.iter().find(|k| k.key_id().to_hex() == kid).ok_or_else(|| JwsError::WrongKey {
        found: kid.to_owned(),
        expected: keys.iter().map(|k| k.key_id().to_hex()).collect::<Vec<_>>().join(", "),
    })?;
    let sig: [u8; 64] = b64().decode(signature).ok().and_then(|s| s.try_into().ok()).ok_or(JwsError::BadSignature)?;
    if !key.verify_strict(format!("{protected}.{payload}").as_bytes(), &sig) {
        return Err(JwsError::BadSignature);
    }
    let bytes = b64().decode(payload).map_err(|e| JwsError::Malformed(format!("payload: {e}")))?;
    let doc = serde_json::from_slice(&bytes).map_err(|e| JwsError::Malformed(format!("payload: {e}")))?;
    Ok((typ, doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_type_key_and_tampering() {
        let key = SigningKey::from_seed(&[1; 32]);
        let doc = json!({"b": 1, "a": [true, null]});
        let jws = sign(&doc, TYP_HEAD, &key);
        assert_eq!(verify(&jws, TYP_HEAD, &[key.verifying_key()]).unwrap(), doc);
        assert!(matches!(verify(&jws, TYP_SNAPSHOT, &[key.verifying_key()]), Err(JwsError::WrongType { .. })));
        let other = SigningKey::from_seed(&[2; 32]).verifying_key();
        assert!(matches!(verify(&jws, TYP_HEAD, &[other]), Err(JwsError::WrongKey { .. })));
        assert_eq!(verify(&jws, TYP_HEAD, &[other, key.verifying_key()]).unwrap(), doc);
        let mut bad = jws.clone();
        bad["payload"] = json!(b64().encode(br#"{"a":[true,null],"b":2}"#));
        assert_eq!(verify(&bad, TYP_HEAD, &[key.verifying_key()]), Err(JwsError::BadSignature));
        assert!(matches!(verify(&json!({}), TYP_HEAD, &[key.verifying_key()]), Err(JwsError::Malformed(_))));
    }

    #[test]
    fn the_text_form_is_byte_for_byte_the_value_form_serialised() {
        let key = SigningKey::from_seed(&[3; 32]);
        let big: serde_json::Map<String, Value> =
            (0..300).map(|i| (format!("k{i}"), json!("\u{e9}\"x\n".repeat(i)))).collect();
        for doc in [json!({}), json!({"b": 1, "a": [true, null], "s": "caf\u{e9} \"q\""}), Value::Object(big)] {
            for typ in [TYP_SNAPSHOT, TYP_DELTA, TYP_HEAD] {
                let text = sign_text(&doc, typ, &key);
                assert_eq!(text, sign(&doc, typ, &key).to_string());
                let parsed: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(verify(&parsed, typ, &[key.verifying_key()]).unwrap(), doc);
            }
        }
    }
}
