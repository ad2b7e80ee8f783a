//! Child processes the benchmark starts (the confstore server, etcd, Mosquitto): free loopback ports,
//! a guard that stops the child when dropped (also on panic or error), and waiting on a
//! condition with a deadline.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a stopped child may take to exit after SIGTERM before it is killed.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between two polls of a condition (not a synchronisation: every poll checks).
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// `n` distinct free TCP ports on 127.0.0.1. The listeners are held until all are chosen so
/// the ports differ; another process could still take one before the child binds it.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .context("finding a free port")?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// A running child process, stopped (SIGTERM, then SIGKILL after [`STOP_DEADLINE`]) and
/// reaped when dropped. Its stdout and stderr go to a log file.
pub struct Guard {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Guard {
    /// Spawns `cmd` with its output sent to `log`.
    pub fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Self { name, child, log: log.to_owned() })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if the child has exited, with the end of its log.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}); the end of its log {}:\n{}", self.name, self.log.display(), self.log_tail());
        }
        Ok(())
    }

    /// The last lines of the child's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Stops the child: SIGTERM, then SIGKILL if it has not exited within the deadline.
    /// Returns how it exited.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        // ESRCH means it exited since try_wait: wait reaps it below.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + STOP_DEADLINE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        eprintln!("server-bench: {} did not exit within {STOP_DEADLINE:?} of SIGTERM; killing it", self.name);
        self.child.kill()?;
        Ok(self.child.wait()?)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("server-bench: stopping {}: {e:#}", self.name);
        }
    }
}

/// Runs `cmd` to completion with a deadline and returns its stdout; a failure or a timeout
/// is an error that shows its stderr.
pub fn output(what: &str, mut cmd: Command, deadline: Duration) -> Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {what}"))?;
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().context("stdout of the child")?;
    let mut stderr = child.stderr.take().context("stderr of the child")?;
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut b).map(|_| b)
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut b).map(|_| b)
    });
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {deadline:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let out = out.join().map_err(|_| anyhow::anyhow!("reading {what}'s stdout panicked"))??;
    let err = err.join().map_err(|_| anyhow::anyhow!("reading {what}'s stderr panicked"))??;
    if !status.success() {
        bail!("{what} failed ({status}): {}", String::from_utf8_lossy(&err).trim());
    }
    Ok(out)
}

/// Debian's `mosquitto` (sbin or bin), else whatever `mosquitto` is on the PATH.
pub fn mosquitto_bin() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| "mosquitto".into())
}

/// Starts a Mosquitto in `dir` on a free loopback port, anonymous, without persistence (the
/// measure is the network path), with `extra` configuration lines; waits until it listens.
/// Returns its guard, its port and its version line.
pub fn start_mosquitto(dir: &Path, extra: &str) -> Result<(Guard, u16, String)> {
    let port = free_ports(1)?[0];
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}"))?;
    let version = Command::new(mosquitto_bin())
        .arg("-h")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("mosquitto").trim().to_owned())
        .unwrap_or_else(|_| "mosquitto".into());
    let mut cmd = Command::new(mosquitto_bin());
    cmd.arg("-c").arg(&conf);
    let guard = Guard::spawn("mosquitto", cmd, &dir.join("mosquitto.log"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("mosquitto did not listen on {port}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Ok((guard, port, version))
}
