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
use crate::env_keys::{
    BASE64, LKG_KEY, MASTER_KEY, MASTER_KEY_VERSION, PREVIOUS_MASTER_KEY, PREVIOUS_SIGNING_KEY, PUBLIC_KEY,
    SIGNING_KEY, random32,
};
use crate::output;

fn b64(bytes: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(BASE64.encode(bytes))
}

pub fn rotate(ctx: &Ctx, args: &RotateArgs) -> Result<ExitCode> {
    if args.lkg {
        return rotate_lkg(ctx, args.json);
    }
    if args.master {
        return rotate_master(ctx, args);
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
    fail::fail_point!("keys::mid_rotation_before_event", |_| std::process::abort());
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
    fail::fail_point!("keys::mid_rotation_after_event", |_| std::process::abort());
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

/// `--master`: (1) env file: new key as CONFIG_MASTER_KEY_BASE64 with version + 1, the old
/// one kept as CONFIG_MASTER_KEY_PREVIOUS_BASE64; (2) one changeset re-encrypting every secret
/// of the old version under the new one (compare-and-set on the epoch, retried); (3) the
/// previous key removed: the old version is retired. Interrupted after (1) or (2), running
/// the command again finishes the same rotation.
fn rotate_master(ctx: &Ctx, args: &RotateArgs) -> Result<ExitCode> {
    for name in [MASTER_KEY, MASTER_KEY_VERSION, PREVIOUS_MASTER_KEY] {
        if crate::env_keys::Keys::from_environment(name) {
            bail!("{name} is set in the environment, which overrides {}; nothing was changed", ctx.env_file.display());
        }
    }
    let mut keys = ctx.keys()?;
    let version = keys.master_key_version()?;
    if keys.previous_master_key()?.is_none() {
        let old = keys.master_key()?;
        keys.rewrite(&[
            (MASTER_KEY, Some(b64(&*random32()?))),
            (MASTER_KEY_VERSION, Some(Zeroizing::new((version + 1).to_string()))),
            (PREVIOUS_MASTER_KEY, Some(b64(&*old))),
        ])?;
    }
    let keys = ctx.keys()?;
    let new_version = keys.master_key_version()?;
    let old_key =
        keys.previous_master_key()?.ok_or_else(|| anyhow!("the previous master key vanished from the env file"))?;
    let store = ctx.store()?;
    let reader = store.reader()?;
    let mut rewrapped = 0usize;
    for attempt in 0..5 {
        let state = reader.current_state()?;
        let sealer = super::secret::Sealer::new(ctx)?;
        let mut changes = Vec::new();
        for (service, values) in &state.services {
            for (key, stored) in values.iter() {
                let Some(envelope) = confstore_core::secret::envelope_of(stored) else { continue };
                if envelope.key_version == new_version {
                    continue;
                }
                if envelope.key_version + 1 != new_version {
                    bail!(
                        "{service}.{key} is encrypted with master key version {}, which is already retired",
                        envelope.key_version
                    );
                }
                let plain = confstore_core::secret::open(&old_key, &reader.store_id(), service, key, &envelope)?;
                let value: serde_json::Value =
                    serde_json::from_str(&plain.0).map_err(|_| anyhow!("{service}.{key}: not JSON"))?;
                changes.push(sealer.change(service, key.clone(), &value)?);
            }
        }
        rewrapped = changes.len();
        if changes.is_empty() {
            break;
        }
        let draft = ChangesetDraft {
            actor: args.actor.clone().unwrap_or_else(default_actor),
            reason: format!("master key rotation to version {new_version}"),
            request_id: new_request_id(),
            expected_epoch: Some(state.epoch),
            changes,
        };
        match store.append(draft) {
            Ok(_) => break,
            Err(confstore_log::LogError::Rejected(confstore_core::state::RejectError::Conflict { .. }))
                if attempt < 4 =>
            {
                continue;
            }
            Err(e) => bail!("{e}; the new master key is in the env file, the old one kept: run the command again"),
        }
    }
    drop(store);
    keys_clear_previous(ctx)?;
    ctx.refresh_lkg();
    if args.json {
        output::json(&json!({"rotated": MASTER_KEY, "key_version": new_version, "secrets_rewrapped": rewrapped}));
    } else {
        println!(
            "master key rotated to version {new_version}; {rewrapped} secret(s) re-encrypted; version {} retired",
            new_version - 1
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn keys_clear_previous(ctx: &Ctx) -> Result<()> {
    ctx.keys()?.rewrite(&[(PREVIOUS_MASTER_KEY, None)])
}
