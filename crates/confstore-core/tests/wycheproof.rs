//! Wycheproof vectors (docs/testing.md rows 16 and 17) through the code confstore runs:
//! Ed25519 through `VerifyingKey::from_bytes` + `verify_strict` (the same path as every
//! strict check), AES-256-GCM with 96-bit nonces through the `aes-gcm` primitive that
//! `secret::seal`/`open` use.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use confstore_core::VerifyingKey;
use wycheproof::TestResult;

#[test]
fn ed25519_vectors_through_strict_verification() {
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519).expect("vectors");
    let (mut checked, mut failures) = (0, Vec::new());
    for group in &set.test_groups {
        let key = VerifyingKey::from_bytes(&group.key.pk);
        for t in &group.tests {
            checked += 1;
            let accepted = match (&key, <[u8; 64]>::try_from(t.sig.as_slice())) {
                (Ok(k), Ok(sig)) => k.verify_strict(&t.msg, &sig),
                _ => false,
            };
            let ok = match t.result {
                TestResult::Valid => accepted,
                TestResult::Invalid => !accepted,
                // Acceptable either way by policy; strict verification may refuse.
                TestResult::Acceptable => true,
            };
            if !ok {
                failures.push((t.tc_id, format!("{:?}", t.result), t.comment.clone()));
            }
        }
    }
    assert!(checked > 100, "only {checked} vectors");
    assert!(failures.is_empty(), "{} of {checked} Ed25519 vectors disagree: {failures:?}", failures.len());
}

#[test]
fn aes_256_gcm_vectors_with_96_bit_nonces() {
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).expect("vectors");
    let (mut checked, mut failures) = (0, Vec::new());
    for group in set.test_groups.iter().filter(|g| g.key_size == 256 && g.nonce_size == 96 && g.tag_size == 128) {
        for t in &group.tests {
            checked += 1;
            let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&t.key));
            let nonce = Nonce::from_slice(&t.nonce);
            let mut sealed = t.ct.to_vec();
            sealed.extend_from_slice(&t.tag);
            let opened = cipher.decrypt(nonce, Payload { msg: &sealed, aad: &t.aad });
            let encrypted = cipher.encrypt(nonce, Payload { msg: &t.pt, aad: &t.aad });
            let ok = match t.result {
                TestResult::Valid => {
                    opened.as_deref().ok() == Some(t.pt.as_slice())
                        && encrypted.as_deref().ok() == Some(sealed.as_slice())
                }
                TestResult::Invalid => opened.is_err(),
                TestResult::Acceptable => true,
            };
            if !ok {
                failures.push((t.tc_id, t.comment.clone()));
            }
        }
    }
    assert!(checked > 50, "only {checked} vectors");
    assert!(failures.is_empty(), "{} of {checked} AES-GCM vectors disagree: {failures:?}", failures.len());
}
