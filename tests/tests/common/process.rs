//! Running commands: the `confstore` binary under test (with a warning when it is older
//! than its sources), a clean environment, a command run to completion with a deadline and
//! its output ([`Run`]), and killing a child.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::store::KEY_VARS;

/// How long one ordinary command may take before the test calls it hung.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// The `confstore` binary: `$CONFSTORE_BIN`, else `target/<profile>/confstore` next to the
/// directory of this test executable (`target/<profile>/deps/<test>`).
pub fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let path = match std::env::var_os("CONFSTORE_BIN") {
            Some(p) => PathBuf::from(p),
            None => {
                let exe = std::env::current_exe().expect("the test executable's path");
                let profile_dir =
                    exe.parent().and_then(Path::parent).expect("the test executable lives in target/<profile>/deps/");
                profile_dir.join(format!("confstore{}", std::env::consts::EXE_SUFFIX))
            }
        };
        assert!(path.is_file(), "{} does not exist: build it first: cargo build -p confstore", path.display());
        warn_if_stale(&path);
        path
    })
}

/// Cargo does not rebuild the binary for this package's tests: say so when a source file it
/// is built from is newer than the binary under test (a warning, not a failure, since
/// CONFSTORE_BIN may point at another build on purpose).
fn warn_if_stale(bin: &Path) {
    fn newest(dir: &Path, best: &mut Option<(std::time::SystemTime, PathBuf)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                newest(&path, best);
            } else if path.extension().is_some_and(|e| e == "rs" || e == "sql")
                && let Ok(modified) = entry.metadata().and_then(|m| m.modified())
                && best.as_ref().is_none_or(|(t, _)| modified > *t)
            {
                *best = Some((modified, path));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
    let mut best = None;
    for dir in
        ["crates/confstore/src", "crates/confstore-core/src", "crates/confstore-log/src", "migrations", "projections"]
    {
        newest(&root.join(dir), &mut best);
    }
    let built = std::fs::metadata(bin).and_then(|m| m.modified());
    if let (Ok(built), Some((changed, path))) = (built, best)
        && changed > built
    {
        eprintln!(
            "warning: {} is older than {}; these tests run the binary as built: cargo build -p confstore",
            bin.display(),
            path.display()
        );
    }
}

/// Removes every variable that could point the child at another store or other keys.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str()
            && (name.starts_with("CONFSTORE_") || name.starts_with("CONFIG_") || name.starts_with("LKG_"))
        {
            cmd.env_remove(name);
        }
    }
    for name in KEY_VARS.into_iter().chain(["CONFSTORE_DATA_DIR", "CONFSTORE_ENV_FILE"]) {
        cmd.env_remove(name);
    }
    cmd
}

/// What a finished command did.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub what: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Run {
    fn from_output(what: String, out: Output) -> Self {
        Self {
            what,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics (with everything the command printed) unless it succeeded.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.status.success(), "expected success:\n{self}");
        self
    }

    /// Panics unless the command failed and printed exactly one line on stderr, starting
    /// with `error:`. Returns that line.
    #[track_caller]
    pub fn assert_one_error_line(&self) -> &str {
        assert!(!self.status.success(), "expected a failure:\n{self}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected exactly one line on stderr:\n{self}");
        assert!(lines[0].starts_with("error: "), "expected the stderr line to start with `error: `:\n{self}");
        lines[0]
    }

    /// Stdout parsed as one JSON value.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{self}"))
    }

    /// Stdout parsed as JSON Lines.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{self}")))
            .collect()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  command: {}\n  status:  {}\n  stdout:\n{}\n  stderr:\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion, feeding it `stdin`, and panics if it is still running after
/// `deadline` (it is killed first). Output pipes are drained by threads; completion is
/// detected by both pipes reaching end of file, so there is no polling.
pub fn run_with_deadline(mut cmd: Command, stdin: Option<Vec<u8>>, deadline: Duration) -> Run {
    let what = format!("{cmd:?}");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // The child may exit without reading everything; a broken pipe is its business.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let (tx, rx) = mpsc::channel::<(usize, Vec<u8>)>();
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    for (i, pipe) in pipes.into_iter().enumerate() {
        let tx = tx.clone();
        let mut pipe = pipe.expect("piped");
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send((i, buf));
        });
    }
    drop(tx);
    let until = Instant::now() + deadline;
    let mut outputs: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok((i, buf)) => outputs[i] = buf,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {deadline:?}");
            }
        }
    }
    let status = child.wait().unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
    let [stdout, stderr] = outputs;
    Run::from_output(what, Output { status, stdout, stderr })
}

/// Kills `child` (SIGKILL on Unix) and reaps it.
pub fn kill(child: &mut Child) -> ExitStatus {
    // An error means it already exited, which `wait` reports.
    let _ = child.kill();
    child.wait().expect("reaping a killed child")
}
