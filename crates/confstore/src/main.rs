//! The `confstore` binary: thin glue from the command line to the library crates.
//!
//! Errors from the libraries are typed; here they get context and are printed as one line
//! (`error: ...`) with a non-zero exit code. Nothing is written when a command fails.

// The binary talks to its user on stdout by design.
#![allow(clippy::print_stdout)]

mod cli;
mod cmd;
mod env_keys;
#[cfg(feature = "failpoints")]
mod fault_hook;
mod output;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc returns freed memory to the system: after a flood of connections ends, the
/// server shrinks back (glibc's allocator kept most of it; docs/adr/0010-dependencies.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The failpoint tests (docs/testing.md row 2) name crash points in FAILPOINTS; a build
    // without the `failpoints` feature must say it cannot honour them, not run without them.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    #[cfg(not(feature = "failpoints"))]
    if std::env::var_os("FAILPOINTS").is_some() {
        eprintln!(
            "error: FAILPOINTS is set but this build has no failpoints; build with `--features confstore/failpoints`"
        );
        return ExitCode::from(2);
    }
    // The I/O-error tests through `serve` (docs/testing.md rows 3 and 4, ADR 0023) drive the
    // fault VFS from a control file named by CONFSTORE_FAULT_VFS: it is registered here,
    // before any database is opened. Only the failpoints build links it.
    #[cfg(feature = "failpoints")]
    if let Err(why) = fault_hook::start() {
        eprintln!("error: {why}");
        return ExitCode::from(2);
    }
    #[cfg(not(feature = "failpoints"))]
    if std::env::var_os("CONFSTORE_FAULT_VFS").is_some() {
        eprintln!(
            "error: CONFSTORE_FAULT_VFS is set but this build has no fault VFS; build with `--features confstore/failpoints`"
        );
        return ExitCode::from(2);
    }
    // `confstore history | head` should stop quietly when head exits, like any Unix tool,
    // not panic on a broken pipe (Rust ignores SIGPIPE by default). Not for `serve`: there
    // a peer closing a socket (a broker restarting, a client hanging up) while it is being
    // written would kill the whole server; ignored, it is an EPIPE error on that socket.
    if !matches!(cli.command, cli::Command::Serve(_)) {
        sigpipe::reset();
    }
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
