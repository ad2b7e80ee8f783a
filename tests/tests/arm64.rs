//! The server cross-compiled for ARM64 (aarch64-unknown-linux-gnu, the Orange Pi 5 Max of
//! docs/operations.md "Running on ARM64") works: the test builds it with Debian's cross gcc
//! in the lean `cross-smoke` profile (a no-op when the build is fresh, so it never runs a
//! stale binary) and drives it under qemu-user through init, service add, set, get, verify
//! and serve (/healthz and /readyz answer 200, SIGTERM stops it cleanly).
//!
//! A missing cross gcc or qemu-user fails the test: ops/test.sh installs both. Plain `cargo
//! test` leaves this test out (tests/Cargo.toml): ops/test.sh runs it by name, last, once
//! its background ARM64 build is done (`cargo test --test arm64`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Http, Scratch, clean_env, free_port, poll_until, run_with_deadline};
use serde_json::{Value, json};

const TARGET: &str = "aarch64-unknown-linux-gnu";
const PROFILE: &str = "cross-smoke";
/// Debian's ARM64 libraries for qemu-user (libc6-arm64-cross): the dynamic loader and libc.
const SYSROOT: &str = "/usr/aarch64-linux-gnu";
/// A whole build of the dependency tree for the second target on a busy 2-core machine takes
/// about 6 minutes; ops/test.sh builds it before the tests, so here it is normally a no-op.
const BUILD_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// One command under emulation takes about a second; generous for a shared machine.
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// Panics, naming ops/test.sh, unless `program --version` runs.
#[track_caller]
fn require(program: &str, debian_package: &str) {
    let found = Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "{program} is missing: ops/test.sh installs it (Debian: {debian_package}); the ARM64 smoke test needs it"
    );
}

/// Builds the aarch64 `confstore` with cargo (fresh or not) and returns its path, as cargo
/// reports it (so CARGO_TARGET_DIR and the like are honoured).
fn build_arm64_binary() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace).args([
        "build",
        "--locked",
        "--profile",
        PROFILE,
        "--target",
        TARGET,
        "-p",
        "confstore",
        "--bin",
        "confstore",
        "--message-format=json-render-diagnostics",
    ]);
    let started = Instant::now();
    let run = run_with_deadline(cmd, None, BUILD_DEADLINE);
    run.assert_ok();
    eprintln!("cargo build --profile {PROFILE} --target {TARGET}: {:.1?}", started.elapsed());
    run.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "confstore")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no confstore executable:\n{run}"))
}

/// The ARM binary under qemu-user with the store's paths and a clean environment.
struct ArmStore {
    bin: PathBuf,
    data_dir: PathBuf,
    env_file: PathBuf,
}

impl ArmStore {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("qemu-aarch64");
        clean_env(&mut cmd);
        cmd.arg("-L")
            .arg(SYSROOT)
            .arg(&self.bin)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--env-file")
            .arg(&self.env_file)
            .args(args);
        cmd
    }

    /// Runs a command that must succeed; its stdout.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let run = run_with_deadline(self.command(args), None, COMMAND_DEADLINE);
        run.assert_ok();
        run.stdout
    }

    /// Runs a command that must succeed and print one JSON value.
    #[track_caller]
    fn json(&self, args: &[&str]) -> Value {
        let run = run_with_deadline(self.command(args), None, COMMAND_DEADLINE);
        run.assert_ok();
        run.json()
    }
}

/// GET `path`: its JSON body when the server answers 200, else None.
fn get_200(addr: std::net::SocketAddr, path: &str) -> Option<Value> {
    let resp = Http::new(addr).with_timeout(Duration::from_secs(30)).get(path).ok()?;
    (resp.status == 200).then(|| resp.json())
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The server process; killed if the test fails before it stopped it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_arm64_binary_runs_init_set_get_verify_and_serve_under_qemu() {
    require("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu");
    require("qemu-aarch64", "qemu-user");
    assert!(
        Path::new(SYSROOT).join("lib/ld-linux-aarch64.so.1").exists(),
        "{SYSROOT}/lib/ld-linux-aarch64.so.1 is missing: ops/test.sh installs it (Debian: libc6-dev-arm64-cross)"
    );
    let bin = build_arm64_binary();
    let elf = std::fs::read(&bin).unwrap_or_else(|e| panic!("reading {}: {e}", bin.display()));
    // ELF header: e_machine (offset 18, little-endian) 183 is EM_AARCH64.
    assert!(
        elf.starts_with(b"\x7fELF") && elf.get(18..20) == Some(&183u16.to_le_bytes()[..]),
        "{} is not an ARM64 ELF executable",
        bin.display()
    );

    let scratch = Scratch::new("arm64");
    let store = ArmStore { bin, data_dir: scratch.path().join("data"), env_file: scratch.path().join(".env") };
    let started = Instant::now();

    let init = store.json(&["init", "--json"]);
    assert_eq!(init["keys_written"].as_array().map(Vec::len), Some(4), "init wrote the four keys: {init}");
    store.ok(&["service", "add", "web"]);
    store.ok(&["set", "web", "timeout_ms=750", r#"greeting="grüße aus arm64""#]);
    let got = store.json(&["get", "web", "--json"]);
    assert_eq!(got, json!({"epoch": 2, "services": {"web": {"timeout_ms": 750, "greeting": "grüße aus arm64"}}}));
    let verify = store.json(&["verify", "--json"]);
    assert_eq!(verify["ok"], true, "verify: {verify}");
    // genesis, the service, and one event per key of the changeset.
    assert_eq!((&verify["epoch"], &verify["events"]), (&json!(2), &json!(4)), "verify: {verify}");
    eprintln!("init, service add, set, get, verify under qemu: {:.1?}", started.elapsed());

    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = scratch.path().join("serve.log");
    let stderr = std::fs::File::create(&log).expect("creating the server's log");
    let mut cmd = store.command(&["serve", "--listen", &addr.to_string(), "--no-mqtt"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
    let serving = Instant::now();
    let mut server = Running(cmd.spawn().expect("starting qemu-aarch64 confstore serve"));
    let health =
        poll_until("/healthz of the ARM64 server to answer 200", COMMAND_DEADLINE, Duration::from_millis(50), || {
            if let Some(status) = server.0.try_wait().expect("polling the server") {
                panic!("the ARM64 server exited ({status}) before answering:\n{}", log_of(&log));
            }
            get_200(addr, "/healthz")
        });
    eprintln!("serve under qemu answered /healthz after {:.1?}", serving.elapsed());
    assert_eq!(health["mode"], "read_write", "/healthz: {health}");
    let ready = get_200(addr, "/readyz").unwrap_or_else(|| panic!("/readyz is not 200:\n{}", log_of(&log)));
    assert_eq!((&ready["ready"], &ready["epoch"]), (&json!(true), &json!(2)), "/readyz: {ready}");

    let mut kill = Command::new("kill");
    kill.args(["-TERM", &server.0.id().to_string()]);
    run_with_deadline(kill, None, COMMAND_DEADLINE).assert_ok();
    let status =
        poll_until("the ARM64 server to stop after SIGTERM", COMMAND_DEADLINE, Duration::from_millis(20), || {
            server.0.try_wait().expect("polling the server")
        });
    assert!(status.success(), "the ARM64 server exited with {status} after SIGTERM:\n{}", log_of(&log));
    assert!(log_of(&log).contains("stopped"), "no clean stop in the log:\n{}", log_of(&log));
}
