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
    let header = json!({"alg": "EdDSA", "kid": key.verifying_key().key_id().to_hex(), "typ": typ});
    let protected = b64().encode(header.to_string().as_bytes());
    let payload = b64().encode(crate::state::canonical_json_text(doc).as_bytes());
    let signature = key.sign(format!("{protected}.{payload}").as_bytes());
    json!({"protected": protected, "payload": payload, "signature": b64().encode(signature)})
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
}
