//! The confstore side: a fresh store made with the CLI (`init`, `service add bench`, an
//! admin token), `confstore serve` on a free loopback port, and an HTTP/1.1 keep-alive
//! client (one hyper connection per benchmark client) for its REST API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::harness::Conn;
use crate::process::{self, Guard, POLL_INTERVAL};

/// The service every request of the benchmark goes to.
pub const SERVICE: &str = "bench";
/// How long one CLI command of the set-up may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// The `confstore` binary: `explicit` (`--confstore-bin` / `CONFSTORE_BIN`), else
/// `confstore` next to this executable (target/release), else target/debug's.
pub fn find_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        ensure!(p.is_file(), "{} (CONFSTORE_BIN) does not exist", p.display());
        return Ok(p.to_owned());
    }
    let exe = std::env::current_exe().context("this executable's path")?;
    let profile_dir = exe.parent().context("this executable's directory")?;
    let name = format!("confstore{}", std::env::consts::EXE_SUFFIX);
    let candidates =
        [profile_dir.join(&name), profile_dir.join("../release").join(&name), profile_dir.join("../debug").join(&name)];
    candidates.iter().find(|p| p.is_file()).cloned().with_context(|| {
        format!(
            "no confstore binary at {}: build it first with `cargo build --release -p confstore` (or set CONFSTORE_BIN)",
            candidates[0].display()
        )
    })
}

/// A running `confstore serve` on its own fresh store, stopped when dropped.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// An admin bearer token.
    token: String,
    /// `confstore --version`.
    pub version: String,
    guard: Guard,
}

/// A command of `bin` on the store in `dir`, with no variable of the caller's environment
/// that could point it at another store, other keys or another durability setting.
fn confstore(bin: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str()
            && (name.starts_with("CONFSTORE_") || name.starts_with("CONFIG_") || name.starts_with("LKG_"))
        {
            cmd.env_remove(name);
        }
    }
    cmd.arg("--data-dir").arg(dir.join("data")).arg("--env-file").arg(dir.join("confstore.env"));
    cmd
}

impl Server {
    /// Makes a store in `dir` (which must exist), registers [`SERVICE`], issues an admin
    /// token and starts `confstore serve` on a free port. Call [`Server::wait_ready`] next.
    pub fn start(bin: &Path, dir: &Path) -> Result<Self> {
        Self::start_with(bin, dir, &["--no-mqtt"])
    }

    /// [`Server::start`] with `serve_args` after `serve --listen ADDR` (e.g. `--mqtt-url`).
    pub fn start_with(bin: &Path, dir: &Path, serve_args: &[&str]) -> Result<Self> {
        let version = String::from_utf8_lossy(&process::output(
            "confstore --version",
            {
                let mut c = Command::new(bin);
                c.arg("--version");
                c
            },
            COMMAND_DEADLINE,
        )?)
        .trim()
        .to_owned();
        let mut help = Command::new(bin);
        help.args(["serve", "--help"]);
        process::output("confstore serve --help", help, COMMAND_DEADLINE).with_context(|| {
            format!(
                "{} has no working `serve` command; build the server: cargo build --release -p confstore",
                bin.display()
            )
        })?;
        let run = |what: &str, args: &[&str]| {
            let mut cmd = confstore(bin, dir);
            cmd.args(args);
            process::output(what, cmd, COMMAND_DEADLINE)
        };
        run("confstore init", &["init"])?;
        run("confstore service add", &["service", "add", SERVICE])?;
        let out = run("confstore token create", &["token", "create", "--role", "admin", "--name", "bench", "--json"])?;
        let v: serde_json::Value = serde_json::from_slice(&out)
            .with_context(|| format!("`token create --json` printed no JSON: {}", String::from_utf8_lossy(&out)))?;
        let token = v["token"].as_str().context("`token create --json` printed no \"token\" field")?.to_owned();
        let port = process::free_ports(1)?[0];
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = confstore(bin, dir);
        cmd.args(["serve", "--listen", &addr.to_string()]).args(serve_args);
        let guard = Guard::spawn("confstore serve", cmd, &dir.join("serve.log"))?;
        Ok(Self { addr, token, version, guard })
    }

    /// Polls `GET /readyz` until it answers 200, the server exits, or `deadline` passes.
    pub async fn wait_ready(&mut self, deadline: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            self.guard.check_running()?;
            let answer = async {
                let mut c = HttpConn::connect(self.addr, &self.token).await?;
                c.send(Method::GET, "/readyz", None, None).await
            };
            match answer.await {
                Ok(_) => return Ok(started.elapsed()),
                Err(e) if started.elapsed() > deadline => {
                    bail!("confstore serve not ready after {deadline:?}: {e:#}\nits log:\n{}", self.guard.log_tail())
                }
                Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    /// The admin bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// `n` new connections.
    pub async fn conns(&self, n: usize) -> Result<Vec<HttpConn>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(HttpConn::connect(self.addr, &self.token).await?);
        }
        Ok(v)
    }

    /// Stops the server (SIGTERM, then a deadline) and reports a failed exit.
    pub fn stop(mut self) -> Result<()> {
        let status = self.guard.stop()?;
        ensure!(
            status.success() || status.code().is_none(),
            "confstore serve exited with {status} after SIGTERM; its log:\n{}",
            self.guard.log_tail()
        );
        Ok(())
    }
}

/// One keep-alive HTTP/1.1 connection to the server, with the bearer token.
pub struct HttpConn {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    auth: HeaderValue,
    /// Whether an answer's body was checked for its shape yet (once per connection).
    checked: bool,
}

impl HttpConn {
    /// Connects (TCP_NODELAY, as any HTTP client does) and does the HTTP/1.1 handshake.
    pub async fn connect(addr: SocketAddr, token: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // A broken connection shows up as an error of the next request.
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            host: HeaderValue::from_str(&addr.to_string())?,
            auth: HeaderValue::from_str(&format!("Bearer {token}")).context("the token is not a valid header value")?,
            checked: false,
        })
    }

    /// Sends one request and returns the body of a 2xx answer; any other status is an
    /// error that shows the body.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        json: Option<String>,
        accept: Option<&str>,
    ) -> Result<Bytes> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.auth.clone());
        if json.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(accept) = accept {
            req = req.header(ACCEPT, accept);
        }
        let req = req.body(Full::new(Bytes::from(json.unwrap_or_default())))?;
        self.sender.ready().await.context("the connection to confstore serve closed")?;
        let res = self.sender.send_request(req).await.with_context(|| format!("{method} {path}"))?;
        let status = res.status();
        let body = res.into_body().collect().await.with_context(|| format!("{method} {path}: reading the body"))?;
        let body = body.to_bytes();
        if !status.is_success() {
            bail!("{method} {path} answered {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }
}

/// Checks the shape of the first answer of a kind: a JSON object with `fields`.
fn check_json(what: &str, body: &[u8], fields: &[&str]) -> Result<()> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .with_context(|| format!("{what} answered something not JSON: {}", String::from_utf8_lossy(body)))?;
    for f in fields {
        ensure!(v.get(f).is_some(), "{what} answered without \"{f}\": {v}");
    }
    Ok(())
}

impl Conn for HttpConn {
    async fn put(&mut self, key: &str, value: &str) -> Result<()> {
        let path = format!("/api/v1/services/{SERVICE}/values/{key}");
        let body = serde_json::json!({ "value": value }).to_string();
        let answer = self.send(Method::PUT, &path, Some(body), None).await?;
        if !self.checked {
            check_json("PUT", &answer, &["epoch", "first_seq", "last_seq", "head_hash"])?;
            self.checked = true;
        }
        Ok(())
    }

    async fn read(&mut self) -> Result<usize> {
        let path = format!("/api/v1/services/{SERVICE}/snapshot");
        let answer = self.send(Method::GET, &path, None, None).await?;
        if !self.checked {
            check_json("GET snapshot", &answer, &["payload", "protected", "signature"])?;
            self.checked = true;
        }
        Ok(answer.len())
    }
}

/// The snapshot as plain JSON text (`Accept: application/json`), to check that it holds
/// what was written.
pub async fn snapshot_text(conn: &mut HttpConn) -> Result<String> {
    let path = format!("/api/v1/services/{SERVICE}/snapshot");
    let body = conn.send(Method::GET, &path, None, Some("application/json")).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}
