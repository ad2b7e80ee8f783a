//! One module per group of commands; [`run`] dispatches.

mod audit;
mod fleet;
mod generation;
mod init;
mod keys;
mod lkg;
mod proof;
mod read;
mod remote;
mod restore;
mod rollout;
mod schema;
mod search;
mod secret;
mod serve;
mod timetravel;
mod write;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use confstore_log::{DbOptions, LogReader, Refusal, Store, Synchronous, SystemClock};

use crate::cli::{
    Cli, Command, GenerationCommand, KeysCommand, LkgCommand, SchemaCommand, SecretCommand, ServiceCommand, SyncMode,
    TokenCommand,
};
use crate::env_keys::Keys;

/// Runs one command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let synchronous = match cli.synchronous {
        SyncMode::Full => Synchronous::Full,
        SyncMode::Normal => Synchronous::Normal,
    };
    let ctx =
        Ctx { data_dir: cli.data_dir, env_file: cli.env_file, db: DbOptions { synchronous, ..DbOptions::default() } };
    match cli.command {
        Command::Init(a) => init::init(&ctx, &a),
        Command::Service(ServiceCommand::Add { names, meta }) => write::service_add(&ctx, names, &meta),
        Command::Service(ServiceCommand::List(a)) => read::service_list(&ctx, a.json),
        Command::Set(a) => write::set(&ctx, &a),
        Command::Unset(a) => write::unset(&ctx, &a),
        Command::Apply(a) => write::apply(&ctx, &a),
        Command::ImportEnv(a) => write::import_env(&ctx, &a),
        Command::Get(a) => read::get(&ctx, &a),
        Command::History(a) => read::history(&ctx, &a),
        Command::Snapshot(a) => read::snapshot(&ctx, &a),
        Command::Search(a) => search::search(&ctx, &a),
        Command::Rebuild(a) => search::rebuild(&ctx, a.json),
        Command::Lkg(LkgCommand::Verify { file, json }) => lkg::verify(&ctx, file.as_deref(), json),
        Command::Lkg(LkgCommand::Write { json }) => lkg::write(&ctx, json),
        Command::Diff(a) => timetravel::diff(&ctx, &a),
        Command::Rollback(a) => timetravel::rollback(&ctx, &a),
        Command::Replay(a) => timetravel::replay(&ctx, &a),
        Command::RestoreCheck(a) => restore::check(&ctx, &a),
        Command::Generation(GenerationCommand::Start(a)) => generation::start(&ctx, &a),
        Command::Keys(KeysCommand::Rotate(a)) => keys::rotate(&ctx, &a),
        Command::Schema(SchemaCommand::Set { service, file, meta }) => schema::set(&ctx, &service, &file, &meta),
        Command::Schema(SchemaCommand::Get { service, json }) => schema::get(&ctx, &service, json),
        Command::Secret(SecretCommand::Reveal { service, key, meta }) => secret::reveal(&ctx, &service, &key, &meta),
        Command::Head(a) => read::head(&ctx, a.json),
        Command::Export(a) => audit::export(&ctx, &a),
        Command::Verify(a) => audit::verify(&ctx, &a),
        Command::Proof(p) => proof::run(&ctx, p),
        Command::Fleet(a) => fleet::run(&ctx, a),
        Command::Rollout(c) => rollout::run(&ctx, c),
        Command::Serve(a) => serve::serve(&ctx, &a),
        Command::Token(TokenCommand::Create { role, service, name, json }) => {
            serve::token_create(&ctx, &role, service, &name, json)
        }
        Command::Token(TokenCommand::List(a)) => serve::token_list(&ctx, a.json),
        Command::Token(TokenCommand::Revoke { id, json }) => serve::token_revoke(&ctx, &id, json),
    }
}

/// What every command knows: where the data and the keys are.
pub struct Ctx {
    data_dir: PathBuf,
    env_file: PathBuf,
    db: DbOptions,
}

impl Ctx {
    fn db_path(&self) -> PathBuf {
        self.data_dir.join("config.db")
    }

    fn keys(&self) -> Result<Keys> {
        Keys::load(&self.env_file)
    }

    /// Opens the store for appending with the configured signing key, after checking that
    /// the database is not behind a head the data directory recorded before (a rewound copy
    /// must not be written to; `generation start` is the way forward).
    fn store(&self) -> Result<Store> {
        let store = self.store_unchecked()?;
        if store.refusal().is_some() {
            // A tampered or truncated log, or the wrong key: the append reports that, the
            // more precise reason.
            return Ok(store);
        }
        let problems = restore::local_problems(self, &self.reader()?)?;
        if !problems.is_empty() {
            anyhow::bail!(
                "refusing to write: {}; if this copy is what you mean to continue from, run `confstore generation \
                 start --reason TEXT` (docs/operations.md, Generations); nothing was changed",
                problems.join("; ")
            );
        }
        Ok(store)
    }

    /// [`Self::store`] without the check against recorded heads (for `generation start`).
    fn store_unchecked(&self) -> Result<Store> {
        let keys = self.keys()?;
        let key = keys.signing_key()?;
        let path = self.db_path();
        let store = Store::open(&path, Some(key), Arc::new(SystemClock), &self.db)
            .with_context(|| format!("cannot open the store at {}", path.display()))?;
        if let Some(why @ Refusal::KeyMismatch { .. }) = store.refusal()
            && keys.previous_signing_key()?.is_some()
        {
            anyhow::bail!(
                "{why}; a signing-key rotation was interrupted: run `confstore keys rotate --signing` to finish it; \
                 nothing was changed"
            );
        }
        Ok(store)
    }

    /// Opens the store for reading.
    fn reader(&self) -> Result<LogReader> {
        let path = self.db_path();
        LogReader::open(&path).with_context(|| format!("cannot open the store at {}", path.display()))
    }
}

/// `$USER`, else "cli".
fn default_actor() -> String {
    std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "cli".to_owned())
}

/// A random request id: 16 hex digits.
fn new_request_id() -> String {
    let mut b = [0u8; 8];
    // A request id only correlates logs; an all-zero id if the OS source fails is harmless.
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}
