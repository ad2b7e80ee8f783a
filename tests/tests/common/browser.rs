//! A real Chromium for the UI tests: Debian's `chromium` driven through `chromedriver`
//! (package chromium-driver) with the `fantoccini` WebDriver client. Each [`Browser`] starts
//! its own chromedriver on a free port with a fresh profile, and stops both when dropped.
//!
//! The methods are synchronous (the browser owns a small tokio runtime), so a test reads as
//! a sequence of steps, and panic with a precise message: every wait polls a condition with
//! a deadline, and a wait that times out saves a screenshot (`FAILED-<what>.png`) and says
//! what the page showed, where it was, and what the browser's console logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::wd::{Capabilities, TimeoutConfiguration, WindowHandle};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::{Http, Scratch, free_port, run_with_deadline};

/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver (package chromium-driver), the same version as [`CHROMIUM`].
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long one wait for the page may take: generous, the machine has 2 shared cores and
/// Chromium competes with the server and the other test.
pub const UI_DEADLINE: Duration = Duration::from_secs(20);
/// How long chromedriver and Chromium may take to start.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// Pause between two polls of a condition (the condition is the synchronisation).
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// The window size every browser starts with.
const WINDOW: (u32, u32) = (1280, 800);

/// `target/ui-screenshots/`, beside this test executable's profile directory
/// (`target/<profile>/deps/<test>`), so `CARGO_TARGET_DIR` is respected; created.
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let target = exe.ancestors().nth(3).expect("the test executable lives in target/<profile>/deps/");
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// `docs/screenshots/` of the repository, where `UPDATE_SCREENSHOTS=1` copies each named
/// screenshot for the documentation.
fn docs_screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").join("docs/screenshots")
}

/// Whether `UPDATE_SCREENSHOTS=1` is set.
pub fn updating_screenshots() -> bool {
    std::env::var("UPDATE_SCREENSHOTS").is_ok_and(|v| v.trim() == "1")
}

/// A headless Chromium session; chromedriver and every Chromium process of its profile are
/// stopped when it is dropped.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    driver_addr: SocketAddr,
    session: String,
    /// The profile (`profile/`) and chromedriver's log; kept if the test panics.
    dir: Scratch,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session with a fresh
    /// profile and a 1280×800 window.
    pub fn start() -> Self {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).is_file(),
                "{path} does not exist: install it with `apt-get install --no-install-recommends {package}` (ops/test.sh does)"
            );
        }
        let dir = Scratch::new("chromium");
        let profile = dir.path().join("profile");
        std::fs::create_dir_all(&profile).expect("creating the Chromium profile directory");
        let log = dir.path().join("chromedriver.log");
        let (driver, driver_addr) = start_driver(&log);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime for the WebDriver client");
        let mut caps = Capabilities::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                ],
            }),
        );
        // The console (errors, failed requests) is read back when a wait fails.
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let url = format!("http://{driver_addr}");
        let connected = rt.block_on(async {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            tokio::time::timeout(START_DEADLINE, ClientBuilder::new(connector).capabilities(caps).connect(&url)).await
        });
        let client = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!(
                "chromedriver could not start Chromium ({e}); its log {}:\n{}",
                log.display(),
                tail(&std::fs::read_to_string(&log).unwrap_or_default(), 30)
            ),
            Err(_) => panic!("Chromium did not start within {START_DEADLINE:?}; chromedriver's log: {}", log.display()),
        };
        let session =
            rt.block_on(client.session_id()).expect("the WebDriver session id").expect("a WebDriver session has an id");
        let browser = Self { rt, client: Some(client), driver, driver_addr, session, dir };
        // Scripts of the tests wait on the page themselves, with their own deadline.
        browser.block(browser.c().update_timeouts(TimeoutConfiguration::new(
            Some(UI_DEADLINE),
            Some(Duration::from_secs(60)),
            Some(Duration::ZERO),
        )));
        browser
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("the session is open until drop")
    }

    /// Runs one WebDriver command to completion, panicking with `what` on an error.
    #[track_caller]
    fn block<T, E: std::fmt::Display>(&self, f: impl Future<Output = Result<T, E>>) -> T {
        self.rt.block_on(f).unwrap_or_else(|e| panic!("WebDriver command failed: {e}"))
    }

    /// Opens `url` and waits for the document to load.
    #[track_caller]
    pub fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.block(self.c().current_url()).to_string()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; its result.
    #[track_caller]
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.rt.block_on(self.c().execute(script, args)).unwrap_or_else(|e| panic!("running a script: {e}\n{script}"))
    }

    /// Runs an asynchronous `script` whose last argument is the callback to call with the
    /// result; waits for it (at most [`UI_DEADLINE`], the session's script timeout).
    #[track_caller]
    pub fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.rt
            .block_on(self.c().execute_async(script, args))
            .unwrap_or_else(|e| panic!("running an asynchronous script: {e}\n{script}"))
    }

    /// Elements matching `css` now (possibly none).
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        self.rt.block_on(self.c().find_all(Locator::Css(css))).unwrap_or_default()
    }

    /// Whether an element matches `css` now.
    pub fn exists(&self, css: &str) -> bool {
        !self.find_all(css).is_empty()
    }

    /// Whether an element matches `css` now and is displayed.
    pub fn visible(&self, css: &str) -> bool {
        self.find_all(css).iter().any(|e| self.rt.block_on(e.is_displayed()).unwrap_or(false))
    }

    /// Polls `attempt` until it returns `Some`, or fails the test naming `what` after
    /// `deadline`, with a screenshot and what the page showed.
    #[track_caller]
    pub fn poll<T>(&self, what: &str, deadline: Duration, mut attempt: impl FnMut(&Self) -> Option<T>) -> T {
        let until = Instant::now() + deadline;
        loop {
            if let Some(v) = attempt(self) {
                return v;
            }
            if Instant::now() >= until {
                self.fail(&format!("timed out after {deadline:?} waiting for {what}"));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits for an element matching `css` that is displayed; returns it.
    #[track_caller]
    pub fn wait_for(&self, css: &str, deadline: Duration) -> Element {
        self.poll(&format!("`{css}` to be displayed"), deadline, |b| {
            b.find_all(css).into_iter().find(|e| b.rt.block_on(e.is_displayed()).unwrap_or(false))
        })
    }

    /// Waits for an element matching `css` to exist, displayed or not; returns it.
    #[track_caller]
    pub fn wait_present(&self, css: &str) -> Element {
        self.poll(&format!("`{css}` to exist"), UI_DEADLINE, |b| b.find_all(css).into_iter().next())
    }

    /// Waits until no element matches `css`.
    #[track_caller]
    pub fn wait_gone(&self, css: &str) {
        self.poll(&format!("`{css}` to go away"), UI_DEADLINE, |b| (!b.exists(css)).then_some(()));
    }

    /// Waits for an element matching `css` whose text contains `contains`; returns its text.
    #[track_caller]
    pub fn wait_text(&self, css: &str, contains: &str) -> String {
        self.poll(&format!("`{css}` to show text containing {contains:?}"), UI_DEADLINE, |b| {
            b.find_all(css).iter().filter_map(|e| b.rt.block_on(e.text()).ok()).find(|t| t.contains(contains))
        })
    }

    /// Waits for an element matching `css` with non-blank text; returns the text.
    #[track_caller]
    pub fn wait_nonempty_text(&self, css: &str) -> String {
        self.poll(&format!("`{css}` to show some text"), UI_DEADLINE, |b| {
            b.find_all(css).iter().filter_map(|e| b.rt.block_on(e.text()).ok()).find(|t| !t.trim().is_empty())
        })
    }

    /// Waits until the JavaScript expression `expr` is truthy in the page; returns its value.
    #[track_caller]
    pub fn wait_js(&self, what: &str, expr: &str) -> Value {
        let script = format!("try {{ return ({expr}); }} catch (e) {{ return null; }}");
        self.poll(what, UI_DEADLINE, |b| {
            let v = b.rt.block_on(b.c().execute(&script, vec![])).ok()?;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(x) => *x,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            truthy.then_some(v)
        })
    }

    /// The text of the first element matching `css` (waits for it to exist).
    #[track_caller]
    pub fn text(&self, css: &str) -> String {
        let e = self.wait_present(css);
        self.block(e.text())
    }

    /// An attribute of the first element matching `css` (waits for it to exist).
    #[track_caller]
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let e = self.wait_present(css);
        self.block(e.attr(name))
    }

    /// Whether the first element matching `css` is enabled (waits for it to exist).
    #[track_caller]
    pub fn enabled(&self, css: &str) -> bool {
        let e = self.wait_present(css);
        self.block(e.is_enabled())
    }

    /// Waits for `css` to be displayed, then clicks it.
    #[track_caller]
    pub fn click(&self, css: &str) {
        let e = self.wait_for(css, UI_DEADLINE);
        if let Err(err) = self.rt.block_on(e.click()) {
            self.fail(&format!("clicking `{css}`: {err}"));
        }
    }

    /// Waits for the input `css` to be displayed, clears it and types `text` (real key
    /// events, so the page sees `input` events as from a person).
    #[track_caller]
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.wait_for(css, UI_DEADLINE);
        // Element Clear empties the field; the keys then arrive one by one, each with its
        // `input` event, so the page sees the final text last.
        let clear = self.rt.block_on(e.clear());
        let typed = clear.and(self.rt.block_on(e.send_keys(text)));
        if let Err(err) = typed {
            self.fail(&format!("typing {text:?} into `{css}`: {err}"));
        }
    }

    /// Sets the form control `css` to `value`: a `<select>` by option value, anything else
    /// by typing.
    #[track_caller]
    pub fn fill(&self, css: &str, value: &str) {
        let e = self.wait_for(css, UI_DEADLINE);
        if self.block(e.tag_name()).eq_ignore_ascii_case("select") {
            let css_owned = css.to_owned();
            self.poll(&format!("`{css}` to offer the option {value:?}"), UI_DEADLINE, |b| {
                let opts = b.find_all(&format!("{css_owned} option"));
                opts.iter()
                    .any(|o| b.rt.block_on(o.attr("value")).ok().flatten().as_deref() == Some(value))
                    .then_some(())
            });
            if let Err(err) = self.rt.block_on(e.select_by_value(value)) {
                self.fail(&format!("selecting {value:?} in `{css}`: {err}"));
            }
        } else {
            self.type_into(css, value);
        }
    }

    /// Saves a PNG of the viewport as `target/ui-screenshots/<name>.png` (and, with
    /// `UPDATE_SCREENSHOTS=1`, as `docs/screenshots/<name>.png`); its path.
    #[track_caller]
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.block(self.c().screenshot());
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        if updating_screenshots() && !name.starts_with("FAILED-") {
            let docs = docs_screenshot_dir();
            std::fs::create_dir_all(&docs).unwrap_or_else(|e| panic!("creating {}: {e}", docs.display()));
            let copy = docs.join(format!("{name}.png"));
            std::fs::write(&copy, &png).unwrap_or_else(|e| panic!("writing {}: {e}", copy.display()));
        }
        path
    }

    /// Resizes the window so the page's viewport is `width`×`height` CSS pixels; returns the
    /// viewport it got (`innerWidth`, `innerHeight`).
    #[track_caller]
    pub fn set_viewport(&self, width: u32, height: u32) -> (u64, u64) {
        let inner = |b: &Self| {
            let v = b.execute("return [window.innerWidth, window.innerHeight];", vec![]);
            (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0))
        };
        self.block(self.c().set_window_size(width, height));
        // The window's frame, if any, takes from the viewport: grow the window by it once.
        let (w, h) = inner(self);
        let grow = |want: u32, got: u64| u32::try_from(u64::from(want).saturating_sub(got)).unwrap_or(0);
        let (dw, dh) = (grow(width, w), grow(height, h));
        if dw > 0 || dh > 0 {
            self.block(self.c().set_window_size(width + dw, height + dh));
        }
        inner(self)
    }

    /// The page's current DOM, serialised.
    pub fn page_source(&self) -> String {
        self.block(self.c().source())
    }

    /// On the sign-in page (loads `base` if it is not showing): types `token`, submits, and
    /// waits for the shell's navigation.
    #[track_caller]
    pub fn sign_in(&self, base: &str, token: &str) {
        if !self.exists("#signin-token") {
            self.goto(&format!("{base}/"));
        }
        self.type_into("#signin-token", token);
        self.click("#signin-submit");
        self.wait_for("#nav", UI_DEADLINE);
    }

    /// Opens a new tab and switches to it; returns the handle of the tab it left.
    #[track_caller]
    pub fn new_tab(&self) -> WindowHandle {
        let old = self.block(self.c().window());
        let new = self.block(self.c().new_window(true));
        self.block(self.c().switch_to_window(new.handle));
        old
    }

    /// The current tab's handle.
    pub fn tab(&self) -> WindowHandle {
        self.block(self.c().window())
    }

    /// Switches to the tab `handle`.
    #[track_caller]
    pub fn switch_to(&self, handle: WindowHandle) {
        self.block(self.c().switch_to_window(handle));
    }

    /// What the browser's console logged since the last call (errors, failed requests,
    /// `console.*`): chromedriver's entries (`level`, `source`, `message`); empty if it
    /// would not say.
    pub fn console_entries(&self) -> Vec<Value> {
        let path = format!("/session/{}/se/log", self.session);
        let answer = Http::new(self.driver_addr).with_timeout(Duration::from_secs(10)).send(
            "POST",
            &path,
            &json!({"type": "browser"}),
        );
        let Ok(resp) = answer else { return Vec::new() };
        let Ok(v) = serde_json::from_slice::<Value>(&resp.body) else { return Vec::new() };
        v["value"].as_array().cloned().unwrap_or_default()
    }

    /// [`Browser::console_entries`], one a line.
    pub fn console_log(&self) -> String {
        self.console_entries()
            .iter()
            .map(|e| format!("{} {}", e["level"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Fails the test if a script of the page threw an uncaught exception since the last
    /// look at the console. Failed requests (a 403 or 409 the page handles) are not errors.
    #[track_caller]
    pub fn assert_no_script_errors(&self) {
        let thrown: Vec<String> = self
            .console_entries()
            .iter()
            .filter(|e| e["source"] == "javascript" || e["message"].as_str().is_some_and(|m| m.contains("Uncaught")))
            .map(|e| e["message"].as_str().unwrap_or("").to_owned())
            .collect();
        assert!(thrown.is_empty(), "the page's scripts threw:\n{}", thrown.join("\n"));
    }

    /// Fails the test with `why`, a screenshot, the URL, what the page showed and the
    /// console's messages.
    #[track_caller]
    pub fn fail(&self, why: &str) -> ! {
        let name: String =
            why.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(80).collect();
        let shot = self
            .rt
            .block_on(self.c().screenshot())
            .ok()
            .and_then(|png| {
                let path = screenshot_dir().join(format!("FAILED-{name}.png"));
                std::fs::write(&path, png).ok().map(|()| path.display().to_string())
            })
            .unwrap_or_else(|| "(no screenshot)".into());
        let url = self.rt.block_on(self.c().current_url()).map(|u| u.to_string()).unwrap_or_default();
        let text = self
            .rt
            .block_on(self.c().execute("return document.body ? document.body.innerText : ''", vec![]))
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let main = self
            .rt
            .block_on(self.c().execute(
                "const m = document.querySelector('#main'); return m ? JSON.stringify(Object.assign({}, m.dataset)) : 'no #main'",
                vec![],
            ))
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        panic!(
            "{why}\n  url: {url}\n  #main data: {main}\n  screenshot: {shot}\n  page text:\n{}\n  console:\n{}",
            indent(&truncate(&text, 3000)),
            indent(&tail(&self.console_log(), 40))
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Ends the session, which quits Chromium; bounded, since a hung browser must
            // not hang the test.
            let _ = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), client.close()).await });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        kill_profile_processes(&self.dir.path().join("profile"));
    }
}

/// Starts chromedriver on a free port and waits until `/status` says it is ready. A port
/// taken meanwhile makes it exit: it is started again on another.
fn start_driver(log: &Path) -> (Child, SocketAddr) {
    let until = Instant::now() + START_DEADLINE;
    'spawn: loop {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}"));
        loop {
            if child.try_wait().expect("polling chromedriver").is_some() {
                assert!(Instant::now() < until, "chromedriver kept exiting; its log: {}", log.display());
                continue 'spawn;
            }
            let status = Http::new(addr).with_timeout(Duration::from_secs(5)).get("/status");
            if let Ok(resp) = status
                && serde_json::from_slice::<Value>(&resp.body).is_ok_and(|v| v["value"]["ready"] == true)
            {
                return (child, addr);
            }
            if Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromedriver was not ready within {START_DEADLINE:?}; its log: {}", log.display());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

/// Kills (SIGKILL) every process whose command line names `profile`: the Chromium
/// processes of this browser only, if the session did not end them.
fn kill_profile_processes(profile: &Path) {
    let needle = format!("--user-data-dir={}", profile.display());
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    let pids: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then(|| pid.to_string())
        })
        .collect();
    if !pids.is_empty() {
        let mut cmd = Command::new("kill");
        cmd.arg("-KILL").args(&pids);
        // Some may have exited since: kill's status does not matter.
        let _ = run_with_deadline(cmd, None, Duration::from_secs(10));
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn truncate(text: &str, chars: usize) -> String {
    let mut out: String = text.chars().take(chars).collect();
    if text.chars().count() > chars {
        out.push_str("\n…");
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}
