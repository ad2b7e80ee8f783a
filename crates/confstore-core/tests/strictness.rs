//! Ed25519 strictness at the edges batch verification does not cover (ADR 0003,
//! docs/testing.md row 17): a signature with a small-order R, which only the key holder can make,
//! and public keys with a small-order component.

use confstore_core::chain::genesis_hash;
use confstore_core::keys::KeyError;
use confstore_core::state::{seal, store_created};
use confstore_core::{ChainVerifier, SigningKey, StoreId, VerifyError, VerifyingKey};
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};

const STORE: StoreId = StoreId([3; 16]);

/// The secret scalar of an Ed25519 seed (RFC 8032 §5.1.5).
fn secret_scalar(seed: &[u8; 32]) -> Scalar {
    let h = Sha512::digest(seed);
    let mut a = [0u8; 32];
    a.copy_from_slice(&h[..32]);
    a[0] &= 248;
    a[31] &= 127;
    a[31] |= 64;
    Scalar::from_bytes_mod_order(a)
}

/// A signature of `msg` whose R is the identity (order 1): valid under the cofactorless
/// equation, refused by strict verification.
fn small_order_r_signature(seed: &[u8; 32], msg: &[u8]) -> [u8; 64] {
    let public = SigningKey::from_seed(seed).verifying_key().to_bytes();
    let r = CompressedEdwardsY([
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    let k = Scalar::from_hash(Sha512::new().chain_update(r.0).chain_update(public).chain_update(msg));
    let s = k * secret_scalar(seed);
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r.0);
    sig[32..].copy_from_slice(s.as_bytes());
    sig
}

#[test]
fn strict_mode_refuses_a_small_order_r_that_batches_accept() {
    let seed = [1u8; 32];
    let key = SigningKey::from_seed(&seed);
    let mut ev = seal(1, &genesis_hash(&STORE), &store_created(STORE, &key, "a", "r", 1), &key);
    ev.sig = small_order_r_signature(&seed, &ev.hash.0);
    assert!(!key.verifying_key().verify_strict(&ev.hash.0, &ev.sig));

    let mut batched = ChainVerifier::new(STORE, None);
    batched.push(&ev).unwrap();
    assert!(batched.finish().is_ok(), "batch verification does not apply the small-order R rule (ADR 0003)");

    let mut strict = ChainVerifier::new(STORE, None).strict();
    strict.push(&ev).unwrap();
    assert!(matches!(strict.finish(), Err(VerifyError::BadSignature { seq: 1, .. })));
}

#[test]
fn keys_with_a_small_order_component_are_refused() {
    let honest = SigningKey::from_seed(&[5; 32]).verifying_key().to_bytes();
    let point = CompressedEdwardsY(honest).decompress().unwrap();
    // (0, -1) has order 2.
    let mut minus_one = [0xffu8; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0x7f;
    let torsion = CompressedEdwardsY(minus_one).decompress().unwrap();
    assert!(torsion.is_small_order());
    let mixed = (point + torsion).compress().to_bytes();
    assert_eq!(VerifyingKey::from_bytes(&mixed), Err(KeyError::NotTorsionFree));
    assert_eq!(VerifyingKey::from_bytes(&minus_one), Err(KeyError::Weak));
    assert!(VerifyingKey::from_bytes(&honest).is_ok());
}
