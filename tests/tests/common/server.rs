//! A running `confstore serve` ([`Server`]): started on a free loopback port (again on
//! another one if the port was taken), its log, waits for `/readyz`, `/healthz` and the LKG
//! file, SIGTERM and SIGKILL, clients with and without the first admin token. Also
//! [`free_port`], which the broker and chromedriver helpers use too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::{Http, HttpResponse};
use super::poll::poll_until;
use super::process::{COMMAND_DEADLINE, kill, run_with_deadline};
use super::store::{Store, u64_of};

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
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let (child, spawned, log_offset) = Self::spawn(store, addr, &args, &env, log);
        Self { child, addr, store: store.clone(), spawned, log: log.to_owned(), log_offset, args, env }
    }

    /// SIGKILL, then the same command again on the same address (clients configured with
    /// it find the new process).
    pub fn restart_killed(&mut self) {
        self.kill();
        let (child, spawned, log_offset) = Self::spawn(&self.store, self.addr, &self.args, &self.env, &self.log);
        (self.child, self.spawned, self.log_offset) = (child, spawned, log_offset);
    }

    fn spawn(
        store: &Store,
        addr: std::net::SocketAddr,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> (Child, Instant, usize) {
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
        (child, spawned, log_offset)
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
            self.addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
            (self.child, self.spawned, self.log_offset) =
                Self::spawn(&self.store, self.addr, &self.args, &self.env, &self.log);
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

    /// How the process ended, if it has (does not wait).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("polling the server")
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
