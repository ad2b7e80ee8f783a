//! Ed25519 keys, key ids, rotation statements and the store's key chain.
//!
//! Signatures are checked with `verify_strict` (no small-order keys or points, canonical
//! scalars) one at a time, or in batches by [`crate::verify`]; see docs/adr/0003.

use ed25519_dalek::{Signature, Signer};
use sha2::{Digest, Sha256};

use crate::ids::{Hash32, KeyId, StoreId};

/// Domain separator of the statement a new signing key signs when it is rotated in.
pub const ROTATION_DOMAIN: &[u8] = b"confstore/key-rotation/v1\0";

/// An Ed25519 public key in the prime-order subgroup (neither small-order nor mixed-order).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

/// Why bytes are not a usable public key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not 32 bytes.
    #[error("an Ed25519 public key is 32 bytes, got {0}")]
    BadLength(usize),
    /// Not a valid curve point.
    #[error("not a valid Ed25519 public key")]
    NotAPoint,
    /// A small-order point: every signature would be forgeable.
    #[error("weak (small-order) Ed25519 public key refused")]
    Weak,
    /// A point with a small-order component: single and batch verification could disagree.
    #[error("Ed25519 public key with a small-order component refused (not in the prime-order subgroup)")]
    NotTorsionFree,
}

impl VerifyingKey {
    /// Parses 32 bytes, refusing invalid points and points with any small-order component.
    pub fn from_bytes(b: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; 32] = b.try_into().map_err(|_| KeyError::BadLength(b.len()))?;
        let k = ed25519_dalek::VerifyingKey::from_bytes(&arr).map_err(|_| KeyError::NotAPoint)?;
        if k.is_weak() {
            return Err(KeyError::Weak);
        }
        if !k.to_edwards().is_torsion_free() {
            return Err(KeyError::NotTorsionFree);
        }
        Ok(Self(k))
    }

    /// The 32 public key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// First 8 bytes of SHA-256 of the public key.
    pub fn key_id(&self) -> KeyId {
        key_id_of(&self.0.to_bytes())
    }

    /// Strict single verification of `sig` over `msg`.
    pub fn verify_strict(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        self.0.verify_strict(msg, &Signature::from_bytes(sig)).is_ok()
    }

    /// The dalek key, for batch verification.
    pub(crate) fn inner(&self) -> &ed25519_dalek::VerifyingKey {
        &self.0
    }
}

/// The key id of raw public key bytes.
pub fn key_id_of(public_key: &[u8; 32]) -> KeyId {
    let d = Sha256::digest(public_key);
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    KeyId(id)
}

/// An Ed25519 signing key. Its secret is zeroed on drop and never printed.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// From a 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed (for writing the key file; handle with care).
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    /// Signs an event hash.
    pub fn sign_hash(&self, hash: &Hash32) -> [u8; 64] {
        self.0.sign(&hash.0).to_bytes()
    }

    /// Signs arbitrary bytes (rotation statements).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(key_id {}, secret redacted)", self.verifying_key().key_id())
    }
}

/// The bytes a new key signs when it is rotated in:
/// `"confstore/key-rotation/v1\0" || store_id (16) || old public key (32) || new public key (32)`.
pub fn rotation_statement(store_id: &StoreId, old: &[u8; 32], new: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(ROTATION_DOMAIN.len() + 16 + 64);
    m.extend_from_slice(ROTATION_DOMAIN);
    m.extend_from_slice(&store_id.0);
    m.extend_from_slice(old);
    m.extend_from_slice(new);
    m
}

/// One key of the chain and the first seq it signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// The public key.
    pub key: VerifyingKey,
    /// The first event this key signs (1 for the genesis key, rotation seq + 1 after).
    pub from_seq: u64,
}

/// The store's signing keys in order: the genesis key, then each rotated-in key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRing {
    entries: Vec<KeyEntry>,
}

impl KeyRing {
    /// An empty ring (before event 1 is read).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next key of the chain.
    pub fn push(&mut self, key: VerifyingKey, from_seq: u64) {
        self.entries.push(KeyEntry { key, from_seq });
    }

    /// The key that signs new events.
    pub fn current(&self) -> Option<&VerifyingKey> {
        self.entries.last().map(|e| &e.key)
    }

    /// Every key, oldest first.
    pub fn entries(&self) -> &[KeyEntry] {
        &self.entries
    }

    /// Whether `key` is one of the store's keys.
    pub fn contains(&self, key: &VerifyingKey) -> bool {
        self.entries.iter().any(|e| &e.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_order_keys_are_refused() {
        // The identity point (0, 1) encodes as 01 00 .. 00 and has order 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(VerifyingKey::from_bytes(&identity), Err(KeyError::Weak));
        assert_eq!(VerifyingKey::from_bytes(&[0u8; 31]), Err(KeyError::BadLength(31)));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let k = SigningKey::from_seed(&[9; 32]);
        let shown = format!("{k:?}");
        assert!(!shown.contains(&hex::encode([9u8; 32])));
        assert!(shown.contains("redacted"));
    }
}
