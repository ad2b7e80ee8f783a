//! Helpers shared by the end-to-end tests: finding the `confstore` binary, a store in its own
//! temporary directory, running commands with a clean environment and a deadline, parsing
//! their output, a small seeded RNG (so every random test prints a replayable seed), and a
//! running `confstore serve` with an HTTP client for it ([`http`]).
//!
//! Each test file compiles this module separately and uses a different subset of it.
#![allow(dead_code)]

// --- REST API test helpers (server_auth, server_schemathesis, server_canary), in their own
// file; they use `Server` and `Http` below. ---
pub mod api;
// --- Live-stream helpers (Mosquitto, a cuttable proxy, a raw MQTT client). ---
pub mod mqtt;
// --- Litestream: the binary and the shipped configuration (the backup tests). ---
pub mod litestream;
// --- A real Chromium through chromedriver (the UI tests). ---
pub mod browser;
// --- The HTTP client of the REST API tests (reqwest, blocking). ---
pub mod http;

pub use http::{Http, HttpResponse};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

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

/// A temporary directory that is deleted when the test passes and kept (with its path
/// printed) when the test panics, so a failure leaves a replayable artifact.
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    /// A new directory named after `label`.
    pub fn new(label: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("confstore-e2e-{label}-"))
            .tempdir()
            .expect("creating a temporary directory");
        let path = dir.path().to_owned();
        Self { dir: Some(dir), path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory whatever happens, and returns its path.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.path.clone()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let path = dir.keep();
            eprintln!("test failed: its data is kept at {}", path.display());
        }
    }
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

/// A count from the environment (`name`), else `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|e| panic!("{name}={v:?} is not a count: {e}")),
        Err(_) => default,
    }
}

/// The seed of a random test: `$name` if set, else fresh; printed either way so a failure
/// can be replayed with `name=<seed>`.
pub fn seed(name: &str) -> u64 {
    let seed = match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|e| panic!("{name}={v:?} is not a u64 seed: {e}")),
        Err(_) => {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let mut mix = Rng::new(u64::from(nanos.subsec_nanos()) ^ nanos.as_secs() ^ u64::from(std::process::id()));
            mix.next_u64()
        }
    };
    eprintln!("seed: {name}={seed}");
    seed
}

/// SplitMix64: small, fast, and the same sequence on every platform for a given seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is below 2^-40 for the small `n` used here).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// A uniform index into a slice of length `len`.
    pub fn index(&mut self, len: usize) -> usize {
        let n = u64::try_from(len).expect("a slice length fits in u64");
        usize::try_from(self.below(n)).expect("an index below a usize fits in usize")
    }

    /// A uniform element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// True with probability `num/den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64().to_le_bytes()[0]
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

/// Kills `child` (SIGKILL on Unix) and reaps it.
pub fn kill(child: &mut Child) -> ExitStatus {
    // An error means it already exited, which `wait` reports.
    let _ = child.kill();
    child.wait().expect("reaping a killed child")
}

/// Calls `attempt` every `interval` until it returns `Some`, and panics naming `what` once
/// `deadline` has passed. The wait between attempts is a retry interval, not the
/// synchronisation: the condition is.
#[track_caller]
pub fn poll_until<T>(what: &str, deadline: Duration, interval: Duration, mut attempt: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = attempt() {
            return v;
        }
        assert!(Instant::now() < until, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(interval);
    }
}

/// A loopback port that was free a moment ago and has not been handed out before in this
/// process (the OS may still give it to someone else: [`Server`] retries on a bind failure).
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let port = listener.local_addr().expect("a bound socket's address").port();
        if HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(port) {
            return port;
        }
    }
}

/// A running `confstore serve` on a free loopback port; killed (SIGKILL) when dropped.
/// Its stderr (JSON logs) is appended to a file, so a failing test leaves it behind.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its store.
    pub store: Store,
    /// When the process was started (the last start, if the port had to be changed).
    pub spawned: Instant,
    /// Its stderr.
    pub log: PathBuf,
    /// Length of the log when this process started (earlier starts appended before it).
    log_offset: usize,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// How long a server may take to start answering (it waits up to the database busy timeout,
/// 5 s, for a locked database) or to stop on SIGTERM: generous, the machine is shared.
pub const SERVER_DEADLINE: Duration = Duration::from_secs(60);

impl Server {
    /// Starts `confstore serve` for `store` with `args` after `--listen`; stderr goes to `log`.
    pub fn start(store: &Store, args: &[&str], log: &Path) -> Self {
        Self::start_env(store, args, &[], log)
    }

    /// [`Server::start`] with environment variables (e.g. `CONFSTORE_LOG` for more logging).
    pub fn start_env(store: &Store, args: &[&str], env: &[(&str, &str)], log: &Path) -> Self {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let (child, addr, spawned, log_offset) = Self::spawn(store, &args, &env, log);
        Self { child, addr, store: store.clone(), spawned, log: log.to_owned(), log_offset, args, env }
    }

    fn spawn(
        store: &Store,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> (Child, std::net::SocketAddr, Instant, usize) {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let log_offset = usize::try_from(stderr.metadata().map_or(0, |m| m.len())).unwrap_or(usize::MAX);
        let mut cmd = store.command(&["serve", "--listen", &addr.to_string()]);
        // Port 1883 (the embedded broker's default) is often taken: a test wants the live
        // stream only when it says where (--mqtt-url or --mqtt-listen).
        if !args.iter().any(|a| a.starts_with("--mqtt-") || a == "--no-mqtt") {
            cmd.arg("--no-mqtt");
        }
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let spawned = Instant::now();
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting confstore serve: {e}"));
        (child, addr, spawned, log_offset)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What this process (its last start) has logged so far.
    pub fn log_text(&self) -> String {
        let log = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(log.get(self.log_offset..).unwrap_or_default()).into_owned()
    }

    /// The last lines of its log, for messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// A client without a token.
    pub fn client(&self) -> Http {
        Http::new(self.addr)
    }

    /// A client with the first admin token (`<data-dir>/admin.token`).
    pub fn admin(&self) -> Http {
        Http::new(self.addr).with_token(&admin_token(&self.store))
    }

    /// `GET path` on a new connection (None if nothing answers). Panics if the process has
    /// exited, unless it could not listen, in which case it is started again on another port.
    fn probe(&mut self, path: &str) -> Option<HttpResponse> {
        if let Some(status) = self.child.try_wait().expect("polling the server") {
            assert!(
                self.log_text().contains("cannot listen"),
                "confstore serve exited ({status}) before answering:\n{}",
                self.log_tail()
            );
            // Someone took the port between free_port and the bind: another port.
            (self.child, self.addr, self.spawned, self.log_offset) =
                Self::spawn(&self.store, &self.args, &self.env, &self.log);
            return None;
        }
        Http::new(self.addr).with_timeout(Duration::from_secs(30)).get(path).ok()
    }

    /// Waits until `GET path` answers and `accept` takes the answer; returns it.
    #[track_caller]
    pub fn wait_for(
        &mut self,
        what: &str,
        path: &str,
        deadline: Duration,
        mut accept: impl FnMut(&HttpResponse) -> bool,
    ) -> HttpResponse {
        let until = Instant::now() + deadline;
        loop {
            if let Some(resp) = self.probe(path)
                && accept(&resp)
            {
                return resp;
            }
            assert!(Instant::now() < until, "timed out after {deadline:?} waiting for {what}:\n{}", self.log_tail());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for `/readyz` to answer 200; its body, and the time since the process started.
    #[track_caller]
    pub fn wait_ready(&mut self) -> (Value, Duration) {
        let resp = self.wait_for("/readyz to answer 200", "/readyz", SERVER_DEADLINE, |r| r.status == 200);
        (resp.json(), self.spawned.elapsed())
    }

    /// Waits for `/healthz` to answer at all; its body.
    #[track_caller]
    pub fn wait_answering(&mut self) -> Value {
        self.wait_for("/healthz to answer", "/healthz", SERVER_DEADLINE, |r| r.status == 200).json()
    }

    /// Waits until the LKG file holds the read model's head (`projections.lkg.lag == 0` in
    /// `/readyz`); the seq it holds.
    #[track_caller]
    pub fn wait_lkg_current(&mut self) -> u64 {
        let resp = self.wait_for("the LKG file to catch up (lkg.lag 0)", "/readyz", SERVER_DEADLINE, |r| {
            r.status == 200
                && serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| v["projections"]["lkg"]["lag"] == 0)
        });
        u64_of(&resp.json()["projections"]["lkg"], "seq")
    }

    /// SIGTERM, then waits for the process to exit; its status.
    #[track_caller]
    pub fn terminate(&mut self) -> ExitStatus {
        // std sends only SIGKILL; kill(1) sends the rest.
        let mut cmd = Command::new("kill");
        cmd.args(["-TERM", &self.pid().to_string()]);
        run_with_deadline(cmd, None, COMMAND_DEADLINE).assert_ok();
        poll_until("confstore serve to stop after SIGTERM", SERVER_DEADLINE, Duration::from_millis(10), || {
            self.child.try_wait().expect("polling the server")
        })
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        kill(&mut self.child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The first admin token, which `serve` writes to `<data-dir>/admin.token` on a new store.
#[track_caller]
pub fn admin_token(store: &Store) -> String {
    let path = store.data_dir.join("admin.token");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())).trim().to_owned()
}
