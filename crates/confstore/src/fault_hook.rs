//! Test-only (feature `failpoints`): the fault VFS inside the binary, driven from a control
//! file (docs/adr/0023-fault-vfs.md "Through serve", docs/testing.md rows 3 and 4).
//!
//! `CONFSTORE_FAULT_VFS=<path>` makes the process register the fault VFS
//! (`confstore_faultvfs::install`) as SQLite's default before it opens any database, and
//! start a thread that polls `<path>` every few milliseconds. The file holds one line,
//! `<id> <command>`; each new `<id>` is applied once, in the order seen (a test replaces the
//! file atomically, by rename). Commands:
//!
//! - `error <at> <write|fsync|full> <once|persistent>`: `confstore_faultvfs::arm_error`,
//!   counting SQLite's write, truncate and sync operations of every file of the process;
//! - `off`: `confstore_faultvfs::reset` (disarm);
//! - `powerloss <at> <drop-all|keep-all|tear-last|random-sectors|drop-all-zero-last> <seed>`:
//!   `confstore_faultvfs::arm_power_loss`; once the cut happened (operation `at + 1`, after
//!   which every operation of the process fails), the thread rewrites the unsynced bytes as
//!   the damage leaves them (`apply_power_loss_staying_down`: the power stays cut, nothing
//!   else can write) and aborts the process. So the disk a restarted server finds is the one
//!   a power cut after operation `at` would leave (files outside SQLite aside; ADR 0023).
//!
//! Once applied (or refused), the thread writes `<path>.ack` (by rename): `<id> ok ops=<n>`,
//! where `n` is the number of operations counted since the previous arm or reset, or
//! `<id> error <why>`. A test waits for that line, not for time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use confstore_faultvfs::{self as fault, Damage, Fault};

/// The environment variable naming the control file.
pub const ENV: &str = "CONFSTORE_FAULT_VFS";

/// How often the control file is read.
const POLL: Duration = Duration::from_millis(5);

/// Installs the fault VFS and starts the watcher if `CONFSTORE_FAULT_VFS` is set.
pub fn start() -> Result<(), String> {
    let Some(path) = std::env::var_os(ENV) else { return Ok(()) };
    let path = PathBuf::from(path);
    if path.as_os_str().is_empty() {
        return Err(format!("{ENV} is set but empty; it names the control file"));
    }
    fault::install();
    std::thread::Builder::new()
        .name("fault-vfs-hook".into())
        .spawn(move || watch(&path))
        .map_err(|e| format!("cannot start the fault VFS watcher: {e}"))?;
    Ok(())
}

fn watch(path: &Path) {
    let mut ack = path.as_os_str().to_owned();
    ack.push(".ack");
    let ack = PathBuf::from(ack);
    let mut last: Option<String> = None;
    // The damage and seed of an armed power cut.
    let mut cut: Option<(Damage, u64)> = None;
    loop {
        if let Some((damage, seed)) = cut
            && fault::crashed()
        {
            let rewritten = fault::apply_power_loss_staying_down(damage, seed);
            eprintln!(
                "fault VFS: the power was cut; unsynced writes rewritten as {damage:?} ({rewritten:?}); aborting"
            );
            std::process::abort();
        }
        if let Ok(text) = std::fs::read_to_string(path)
            && let Some((id, command)) = text.trim().split_once(' ')
            && last.as_deref() != Some(id)
        {
            let answer = match parse(command) {
                Ok(apply) => {
                    let ops = fault::ops();
                    cut = apply();
                    format!("{id} ok ops={ops}")
                }
                Err(why) => format!("{id} error {why}"),
            };
            tracing::warn!(command = %command, answer = %answer, "fault VFS command");
            write_ack(&ack, &answer);
            last = Some(id.to_owned());
        }
        std::thread::sleep(POLL);
    }
}

/// What applying a command leaves to the watcher: the damage and seed of an armed cut.
type Armed = Option<(Damage, u64)>;

/// A command, checked, as the action that applies it.
fn parse(command: &str) -> Result<Box<dyn FnOnce() -> Armed>, String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        ["off"] => Ok(Box::new(|| {
            fault::reset();
            None
        })),
        ["powerloss", at, damage, seed] => {
            let at: u64 = at.parse().map_err(|_| format!("bad operation number {at:?}"))?;
            let seed: u64 = seed.parse().map_err(|_| format!("bad seed {seed:?}"))?;
            let damage = match *damage {
                "drop-all" => Damage::DropAll,
                "keep-all" => Damage::KeepAll,
                "tear-last" => Damage::TearLast,
                "random-sectors" => Damage::RandomSectors,
                "drop-all-zero-last" => Damage::DropAllZeroLast,
                other => return Err(format!("unknown damage {other:?}")),
            };
            Ok(Box::new(move || {
                fault::arm_power_loss(at);
                Some((damage, seed))
            }))
        }
        ["error", at, kind, persistence] => {
            let at: u64 = at.parse().map_err(|_| format!("bad operation number {at:?}"))?;
            let fault = match *kind {
                "write" => Fault::IoErrWrite,
                "fsync" => Fault::IoErrFsync,
                "full" => Fault::Full,
                other => return Err(format!("unknown fault {other:?} (write, fsync, full)")),
            };
            let persistent = match *persistence {
                "once" => false,
                "persistent" => true,
                other => return Err(format!("{other:?} is neither once nor persistent")),
            };
            Ok(Box::new(move || {
                fault::arm_error(at, fault, persistent);
                None
            }))
        }
        _ => Err(format!("unknown command {command:?}")),
    }
}

fn write_ack(ack: &Path, answer: &str) {
    let mut tmp = ack.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = std::fs::write(&tmp, format!("{answer}\n")).and_then(|()| std::fs::rename(&tmp, ack));
    if let Err(e) = written {
        tracing::error!(error = %e, ack = %ack.display(), "cannot write the fault VFS acknowledgement");
    }
}
