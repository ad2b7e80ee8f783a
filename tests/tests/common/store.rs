//! A confstore store driven through the CLI: its key variables, [`Store`] (a data
//! directory and env file passed to every command, with helpers for `init`, `head`,
//! `history`, `apply`), env files, copying a database, and reading fields of the JSON the
//! CLI prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::process::{COMMAND_DEADLINE, Run, bin, clean_env, run_with_deadline};

/// The four key variables of docs/design.md §7.
pub const MASTER_KEY: &str = "CONFIG_MASTER_KEY_BASE64";
/// HMAC key of the LKG cache.
pub const LKG_KEY: &str = "LKG_HMAC_KEY_BASE64";
/// Ed25519 seed.
pub const SIGNING_KEY: &str = "CONFIG_SIGNATURE_PRIVATE_KEY";
/// Ed25519 public key.
pub const PUBLIC_KEY: &str = "CONFIG_SIGNATURE_PUBLIC_KEY";
/// All four, in the order `init` writes them.
pub const KEY_VARS: [&str; 4] = [MASTER_KEY, LKG_KEY, SIGNING_KEY, PUBLIC_KEY];

/// A confstore store: a data directory and an env file, passed explicitly to every command.
#[derive(Clone, Debug)]
pub struct Store {
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--env-file`.
    pub env_file: PathBuf,
}

impl Store {
    /// A store at `<dir>/data` with keys in `<dir>/.env`; creates `dir`, nothing else.
    pub fn in_dir(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self { data_dir: dir.join("data"), env_file: dir.join(".env") }
    }

    /// The same keys, another data directory.
    pub fn with_data_dir(&self, data_dir: &Path) -> Self {
        Self { data_dir: data_dir.to_owned(), env_file: self.env_file.clone() }
    }

    /// `config.db`.
    pub fn db(&self) -> PathBuf {
        self.data_dir.join("config.db")
    }

    /// A command with `--data-dir`, `--env-file` and a clean environment.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(bin());
        clean_env(&mut cmd);
        cmd.arg("--data-dir").arg(&self.data_dir).arg("--env-file").arg(&self.env_file).args(args);
        cmd
    }

    /// Runs a command to completion.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Run {
        run_with_deadline(self.command(args), None, COMMAND_DEADLINE)
    }

    /// Runs a command with extra environment variables.
    pub fn run_env<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_with_deadline(cmd, None, COMMAND_DEADLINE)
    }

    /// Runs a command and asserts it succeeded; returns its stdout.
    #[track_caller]
    pub fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> String {
        let run = self.run(args);
        run.assert_ok();
        run.stdout
    }

    /// Runs a command that prints one JSON value and asserts it succeeded.
    #[track_caller]
    pub fn json<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Value {
        let run = self.run(args);
        run.assert_ok();
        run.json()
    }

    /// `confstore init`.
    #[track_caller]
    pub fn init(&self) -> Value {
        self.json(&["init", "--json"])
    }

    /// `confstore head --json`.
    #[track_caller]
    pub fn head(&self) -> Value {
        self.json(&["head", "--json"])
    }

    /// `confstore history --json`, one value per event.
    #[track_caller]
    pub fn history(&self) -> Vec<Value> {
        let run = self.run(&["history", "--json"]);
        run.assert_ok();
        run.json_lines()
    }

    /// Runs `confstore apply -` on `lines` and returns its result lines.
    #[track_caller]
    pub fn apply(&self, lines: &[Value]) -> Vec<Value> {
        let mut input = String::new();
        for l in lines {
            input.push_str(&l.to_string());
            input.push('\n');
        }
        let run = run_with_deadline(self.command(&["apply", "-"]), Some(input.into_bytes()), COMMAND_DEADLINE);
        let results = run.json_lines();
        assert_eq!(results.len(), lines.len(), "one result per input line:\n{run}");
        results
    }

    /// The env file's variables.
    pub fn env_vars(&self) -> BTreeMap<String, String> {
        parse_env_file(&std::fs::read_to_string(&self.env_file).expect("reading the env file"))
    }
}

/// `NAME=value` lines of an env file (comments and blank lines skipped).
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Copies `config.db` (and its `-wal`, if any; never `-shm`, so SQLite must recover the WAL
/// as after a crash) from one data directory to another, which is created.
pub fn copy_db(from_data_dir: &Path, to_data_dir: &Path) {
    std::fs::create_dir_all(to_data_dir).expect("creating the copy's data directory");
    for name in ["config.db", "config.db-wal"] {
        let src = from_data_dir.join(name);
        if src.exists() {
            std::fs::copy(&src, to_data_dir.join(name)).unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
        }
    }
}

/// A u64 field of a JSON value, or a panic naming it.
#[track_caller]
pub fn u64_of(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field} is not a u64 in {v}"))
}

/// A string field of a JSON value, or a panic naming it.
#[track_caller]
pub fn str_of<'v>(v: &'v Value, field: &str) -> &'v str {
    v[field].as_str().unwrap_or_else(|| panic!("{field} is not a string in {v}"))
}

/// `PRAGMA integrity_check` answers ok on `conn`; then the events' seqs in order (the
/// crash tests check them gap-free, each saying where a gap is its own way).
pub fn integrity_ok_seqs(conn: &rusqlite::Connection) -> Result<Vec<u64>, String> {
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| format!("integrity_check: {e}"))?;
    if integrity != ["ok"] {
        return Err(format!("PRAGMA integrity_check: {integrity:?}"));
    }
    let seqs: Vec<i64> = conn
        .prepare("SELECT seq FROM events ORDER BY seq")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| format!("reading seqs: {e}"))?;
    Ok(seqs.into_iter().map(|s| u64::try_from(s).unwrap_or(0)).collect())
}
