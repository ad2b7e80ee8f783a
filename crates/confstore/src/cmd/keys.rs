//! `keys rotate --signing`: hand signing over to a new Ed25519 key without ever leaving the
//! store unable to sign (ADR 0007).
//!
//! Order: (1) write the new key to the env file, keeping the old one as
//! CONFIG_SIGNATURE_PREVIOUS_PRIVATE_KEY; (2) append the rotation event, signed by the old key
//! and countersigned by the new; (3) drop the previous key from the env file. A crash after
//! (1) leaves the store expecting the old key, which is still in the file: running the
//! command again finishes the rotation to the key already written. A crash after (2)
//! leaves only a redundant previous key, removed by the next run.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use confstore_core::SigningKey;
use confstore_core::state::ChangesetDraft;
use confstore_log::{Store, SystemClock};
use serde_json::json;
use zeroize::Zeroizing;

use super::{Ctx, default_actor, new_request_id};
use crate::cli::RotateArgs;
use crate::env_keys::{BASE64, LKG_KEY, PREVIOUS_SIGNING_KEY, PUBLIC_KEY, SIGNING_KEY, random32};
use crate::output;

fn b64(bytes: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(BASE64.encode(bytes))
}

pub fn rotate(ctx: &Ctx, args: &RotateArgs) -> Result<ExitCode> {
    if args.lkg {
        return rotate_lkg(ctx, args.json);
    }
    for name in [SIGNING_KEY, PUBLIC_KEY, PREVIOUS_SIGNING_KEY] {
        if crate::env_keys::Keys::from_environment(name) {
            bail!(
                "{name} is set in the environment, which overrides {}; rotate the key where that environment \
                 is managed, or unset it and keep the keys in the env file; nothing was changed",
                ctx.env_file.display()
            );
        }
    }
    let mut keys = ctx.keys()?;
    let configured = keys.signing_key()?;
    let previous = keys.previous_signing_key()?;
    let path = ctx.db_path();
    let reader = ctx.reader()?;
    let current = reader.keys()?.current().copied().ok_or_else(|| anyhow!("the store has no signing key"))?;
    drop(reader);

    // Which key signs for the store now, and which key it hands over to.
    let (old, new) = if configured.verifying_key() == current {
        if previous.is_some() {
            // An earlier rotation appended its event but did not finish its clean-up.
            keys.rewrite(&[(PREVIOUS_SIGNING_KEY, None)])?;
        }
        let new = SigningKey::from_seed(&*random32()?);
        keys.rewrite(&[
            (SIGNING_KEY, Some(b64(&new.seed()))),
            (PUBLIC_KEY, Some(b64(&new.verifying_key().to_bytes()))),
            (PREVIOUS_SIGNING_KEY, Some(b64(&configured.seed()))),
        ])?;
        (configured, new)
    } else {
        match previous {
            Some(prev) if prev.verifying_key() == current => (prev, configured),
            _ => bail!(
                "{SIGNING_KEY} (key {}) is not the store's current signing key ({}) and no interrupted rotation \
                 explains it; check the env file; nothing was changed",
                configured.verifying_key().key_id(),
                current.key_id()
            ),
        }
    };
    let (old_id, new_id) = (old.verifying_key().key_id(), new.verifying_key().key_id());
    let new_for_store = SigningKey::from_seed(&new.seed());
    let store = Store::open(&path, Some(old), Arc::new(SystemClock), &ctx.db)
        .with_context(|| format!("cannot open the store at {}", path.display()))?;
    let draft = ChangesetDraft {
        actor: args.actor.clone().unwrap_or_else(default_actor),
        reason: args.reason.clone(),
        request_id: new_request_id(),
        expected_epoch: None,
        changes: Vec::new(),
    };
    let receipt = store.rotate_signing_key(new_for_store, draft).map_err(|e| {
        anyhow!(
            "{e}; the new key is in the env file and the old one kept as {PREVIOUS_SIGNING_KEY}: run the command again"
        )
    })?;
    drop(store);
    keys.rewrite(&[(PREVIOUS_SIGNING_KEY, None)])?;
    ctx.refresh_lkg();
    if args.json {
        output::json(&json!({
            "old_key_id": old_id.to_hex(), "new_key_id": new_id.to_hex(), "seq": receipt.last_seq,
            "epoch": receipt.epoch, "env_file": ctx.env_file.display().to_string(),
        }));
    } else {
        println!(
            "signing key rotated: {old_id} -> {new_id} (event {}); the new key is in {}",
            receipt.last_seq,
            ctx.env_file.display()
        );
        println!("verifiers may trust either key; CONFIG_SIGNATURE_PUBLIC_KEY now holds the new one");
    }
    Ok(ExitCode::SUCCESS)
}

/// `--lkg`: a new HMAC key in the env file, then the cache re-signed with it. A crash in
/// between leaves a cache that no longer verifies (it is then never used) until the next
/// write or `confstore lkg write` re-signs it.
fn rotate_lkg(ctx: &Ctx, as_json: bool) -> Result<ExitCode> {
    if crate::env_keys::Keys::from_environment(LKG_KEY) {
        bail!(
            "{LKG_KEY} is set in the environment, which overrides {}; rotate it where that environment is \
             managed; nothing was changed",
            ctx.env_file.display()
        );
    }
    let mut keys = ctx.keys()?;
    keys.lkg_key()?;
    let reader = ctx.reader()?;
    drop(reader);
    keys.rewrite(&[(LKG_KEY, Some(b64(&*random32()?)))])?;
    let content = ctx
        .write_lkg()
        .context("the new LKG key is in the env file, but the cache was not re-signed; run `confstore lkg write`")?;
    if as_json {
        output::json(
            &json!({"rotated": LKG_KEY, "lkg_epoch": content.epoch, "env_file": ctx.env_file.display().to_string()}),
        );
    } else {
        println!("LKG key rotated; {} re-signed at epoch {}", ctx.lkg_path().display(), content.epoch);
    }
    Ok(ExitCode::SUCCESS)
}
