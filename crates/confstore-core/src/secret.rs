//! Secret values: AES-256-GCM envelopes (docs/design.md §7). The plaintext never reaches the
//! log: [`Sealer`] encrypts with the master key and a random 96-bit nonce drawn from the
//! operating system ([`seal`] itself takes the nonce as an argument), and the AAD binds the ciphertext to the
//! store, service, key and key version, so a ciphertext copied anywhere else fails to
//! decrypt.
//!
//! AAD = "confstore/secret/v1\0" || store_id (16) || u32_be(len(service)) || service
//!       || u32_be(len(key)) || key || u32_be(key_version)

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::ids::StoreId;

/// Domain separator at the start of the AAD.
pub const AAD_DOMAIN: &[u8] = b"confstore/secret/v1\0";
/// Encryptions under one key version after which writes of secrets are refused: random
/// 96-bit nonces stay safe for 2^32 messages per key; stop well before.
pub const ENCRYPTIONS_PER_KEY_MAX: u64 = 1 << 31;
/// Encryptions under one key version from which an operator should rotate.
pub const ENCRYPTIONS_PER_KEY_WARN: u64 = 1 << 30;

/// An encrypted value as stored in the log.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Version of the master key that encrypted it.
    pub key_version: u32,
    /// The 96-bit nonce.
    pub nonce: [u8; 12],
    /// Ciphertext with the 16-byte GCM tag appended.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Envelope(key version {}, {} bytes)", self.key_version, self.ciphertext.len())
    }
}

/// A secret's plaintext (canonical JSON) on its way to being encrypted: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Plaintext(pub Zeroizing<String>);

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Plaintext(redacted)")
    }
}

/// Why a secret could not be decrypted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// Wrong key, wrong place (AAD), or modified ciphertext.
    #[error("the secret does not decrypt: wrong master key, moved to another service or key, or modified")]
    Undecryptable,
    /// The plaintext is not UTF-8 JSON.
    #[error("the decrypted secret is not JSON text")]
    NotJson,
}

fn aad(store_id: &StoreId, service: &str, key: &str, key_version: u32) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_DOMAIN.len() + 16 + 12 + service.len() + key.len());
    a.extend_from_slice(AAD_DOMAIN);
    a.extend_from_slice(&store_id.0);
    for part in [service, key] {
        a.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        a.extend_from_slice(part.as_bytes());
    }
    a.extend_from_slice(&key_version.to_be_bytes());
    a
}

/// Encrypts `plaintext` for `service`.`key` of `store_id`.
pub fn seal(
    master_key: &[u8; 32],
    key_version: u32,
    nonce: [u8; 12],
    store_id: &StoreId,
    service: &str,
    key: &str,
    plaintext: &Plaintext,
) -> Envelope {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(master_key));
    let aad = aad(store_id, service, key, key_version);
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext.0.as_bytes(), aad: &aad })
        .unwrap_or_else(|_| unreachable!("AES-GCM encryption of a bounded message cannot fail"));
    Envelope { key_version, nonce, ciphertext }
}

/// Seals values for one store with one master key: the change that sets a secret, its
/// nonce drawn from the operating system's random source. The server's `PUT` and the CLI's
/// `set --secret` both seal through it.
pub struct Sealer<'k> {
    master_key: &'k [u8; 32],
    key_version: u32,
    store_id: StoreId,
}

/// Why a value could not be sealed; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The value is not storable (depth or size limits).
    #[error("{0}; nothing was changed")]
    Value(#[from] crate::state::RejectError),
    /// The operating system's random source failed (no nonce).
    #[error("the operating system's random source failed: {0}")]
    Random(getrandom::Error),
}

impl<'k> Sealer<'k> {
    /// A sealer with master key `master_key` of version `key_version`, for `store_id`.
    pub fn new(master_key: &'k [u8; 32], key_version: u32, store_id: StoreId) -> Self {
        Self { master_key, key_version, store_id }
    }

    /// The change that sets `service`.`key` to the secret `value` (canonical JSON, sealed
    /// under a fresh random nonce).
    pub fn change(&self, service: &str, key: String, value: &Value) -> Result<crate::state::Change, SealError> {
        let plaintext = Plaintext(Zeroizing::new(crate::state::canonical_json(value)?));
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(SealError::Random)?;
        let envelope = seal(self.master_key, self.key_version, nonce, &self.store_id, service, &key, &plaintext);
        Ok(crate::state::Change::SetSecret { service: service.to_owned(), key, plaintext, envelope })
    }
}

/// Decrypts an envelope found at `service`.`key` of `store_id`.
pub fn open(
    master_key: &[u8; 32],
    store_id: &StoreId,
    service: &str,
    key: &str,
    envelope: &Envelope,
) -> Result<Plaintext, SecretError> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(master_key));
    let aad = aad(store_id, service, key, envelope.key_version);
    let bytes = Zeroizing::new(
        cipher
            .decrypt(Nonce::from_slice(&envelope.nonce), Payload { msg: &envelope.ciphertext, aad: &aad })
            .map_err(|_| SecretError::Undecryptable)?,
    );
    let text = std::str::from_utf8(&bytes).map_err(|_| SecretError::NotJson)?;
    Ok(Plaintext(Zeroizing::new(text.to_owned())))
}

/// The value a secret has in the configuration state, snapshots and the LKG cache: the
/// envelope, never the plaintext.
pub fn marker(envelope: &Envelope) -> Value {
    json!({"$secret": {
        "key_version": envelope.key_version,
        "nonce": hex::encode(envelope.nonce),
        "ciphertext": hex::encode(&envelope.ciphertext),
    }})
}

/// The envelope inside a [`marker`] value, if `value_json` is one.
pub fn envelope_of(value_json: &str) -> Option<Envelope> {
    if !value_json.starts_with("{\"$secret\":") {
        return None;
    }
    let v: Value = serde_json::from_str(value_json).ok()?;
    let m = v.get("$secret")?;
    Some(Envelope {
        key_version: u32::try_from(m.get("key_version")?.as_u64()?).ok()?,
        nonce: hex::decode(m.get("nonce")?.as_str()?).ok()?.try_into().ok()?,
        ciphertext: hex::decode(m.get("ciphertext")?.as_str()?).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORE: StoreId = StoreId([1; 16]);

    fn plain(s: &str) -> Plaintext {
        Plaintext(Zeroizing::new(s.to_owned()))
    }

    #[test]
    fn round_trip_and_binding() {
        let key = [3u8; 32];
        let env = seal(&key, 1, [9; 12], &STORE, "db", "password", &plain("\"hunter2\""));
        assert_eq!(open(&key, &STORE, "db", "password", &env).unwrap().0.as_str(), "\"hunter2\"");
        // Moved to another key, service or store, or another key version: refused.
        assert_eq!(open(&key, &STORE, "db", "token", &env), Err(SecretError::Undecryptable));
        assert_eq!(open(&key, &STORE, "web", "password", &env), Err(SecretError::Undecryptable));
        assert_eq!(open(&key, &StoreId([2; 16]), "db", "password", &env), Err(SecretError::Undecryptable));
        let mut other_version = env.clone();
        other_version.key_version = 2;
        assert_eq!(open(&key, &STORE, "db", "password", &other_version), Err(SecretError::Undecryptable));
        assert_eq!(open(&[4; 32], &STORE, "db", "password", &env), Err(SecretError::Undecryptable));
        // "db" + "password" must not collide with "dbp" + "assword".
        assert_eq!(open(&key, &STORE, "dbp", "assword", &env), Err(SecretError::Undecryptable));
        for i in 0..env.ciphertext.len() {
            let mut bad = env.clone();
            bad.ciphertext[i] ^= 1;
            assert_eq!(open(&key, &STORE, "db", "password", &bad), Err(SecretError::Undecryptable));
        }
    }

    #[test]
    fn markers_carry_the_envelope_and_never_the_plaintext() {
        let env = seal(&[3; 32], 1, [9; 12], &STORE, "db", "password", &plain("\"canary-XYZ\""));
        let text = crate::state::canonical_json(&marker(&env)).unwrap();
        assert!(!text.contains("canary"));
        assert_eq!(envelope_of(&text), Some(env));
        assert_eq!(envelope_of("\"plain\""), None);
        assert!(!format!("{:?}", plain("\"canary\"")).contains("canary"));
    }
}
