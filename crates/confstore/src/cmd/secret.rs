//! Secrets on the command line: sealing values for `set --secret` (the plaintext never
//! leaves this process unencrypted) and `secret reveal` (audited before it prints).

use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use confstore_core::StoreId;
use confstore_core::secret;
use confstore_core::state::{Change, ChangesetDraft};
use serde_json::Value;
use zeroize::Zeroizing;

use super::{Ctx, default_actor, new_request_id};
use crate::cli::WriteMeta;

/// Encrypts values for one store with the configured master key.
pub struct Sealer {
    key: Zeroizing<[u8; 32]>,
    version: u32,
    store_id: StoreId,
}

impl Sealer {
    pub fn new(ctx: &Ctx) -> Result<Self> {
        let reader = ctx.reader()?;
        let keys = ctx.keys()?;
        let version = keys.master_key_version()?;
        let used = reader.current_state()?.secret_encryptions.get(&version).copied().unwrap_or(0);
        if used >= secret::ENCRYPTIONS_PER_KEY_WARN {
            eprintln!(
                "warning: master key version {version} has encrypted {used} secrets; writes of secrets stop at {}: \
                 plan a master-key rotation",
                secret::ENCRYPTIONS_PER_KEY_MAX
            );
        }
        Ok(Self { key: keys.master_key()?, version, store_id: reader.store_id() })
    }

    /// The change that sets `service`.`key` to the secret `value`.
    pub fn change(&self, service: &str, key: String, value: &Value) -> Result<Change> {
        Ok(secret::Sealer::new(&self.key, self.version, self.store_id).change(service, key, value)?)
    }
}

pub fn reveal(ctx: &Ctx, service: &str, key: &str, meta: &WriteMeta) -> Result<ExitCode> {
    let reader = ctx.reader()?;
    let state = reader.current_state()?;
    let Some(stored) = state.services.get(service).and_then(|v| v.get(key)) else {
        bail!("{service}.{key} is not set");
    };
    let Some(envelope) = secret::envelope_of(stored) else {
        bail!("{service}.{key} is not a secret; `confstore get {service} {key}` shows it");
    };
    let master = key_for(&ctx.keys()?, envelope.key_version)?;
    let plaintext = secret::open(&master, &reader.store_id(), service, key, &envelope)?;
    // The reveal is recorded before anything is shown; if it cannot be, nothing is shown.
    let store = ctx.store()?;
    let draft = ChangesetDraft {
        actor: meta.actor.clone().unwrap_or_else(default_actor),
        reason: meta.reason.clone(),
        request_id: meta.request_id.clone().unwrap_or_else(new_request_id),
        expected_epoch: None,
        changes: vec![Change::RevealSecret { service: service.to_owned(), key: key.to_owned() }],
    };
    store
        .append(draft)
        .map_err(|e| anyhow!("{e}; the secret was not shown because the reveal could not be recorded"))?;
    println!("{}", plaintext.0.as_str());
    Ok(ExitCode::SUCCESS)
}

/// The master key of `version`: the current one, or the previous one during a rotation.
pub fn key_for(keys: &crate::env_keys::Keys, version: u32) -> Result<Zeroizing<[u8; 32]>> {
    let current = keys.master_key_version()?;
    if version == current {
        return keys.master_key();
    }
    if version + 1 == current
        && let Some(previous) = keys.previous_master_key()?
    {
        return Ok(previous);
    }
    bail!(
        "the secret is encrypted with master key version {version}, which is retired (the current version is \
         {current}); was a master-key rotation interrupted? run `confstore keys rotate --master` again"
    )
}
