//! The shipped systemd unit (`ops/systemd/confstore.service`) is one systemd accepts without
//! a warning (`systemd-analyze verify`, with the two binaries it runs replaced by
//! /bin/true) and is hardened: `systemd-analyze security --offline` rates its exposure at
//! most 2.0 ("OK") on its 0-10 scale.
//!
//! The Docker deployment (`ops/docker/`; no Docker daemon here, so no image is built):
//! `docker compose config` accepts the compose file; its structure is checked (three
//! services, non-root, health check, the ACL and Litestream config mounted, every variable in
//! ops/.env.example); the Dockerfile is multi-stage, non-root, with a health check; and the
//! compose configuration runs with the real programs: Mosquitto with the container's config
//! and ACL, and `confstore serve` with the container's environment (container paths mapped to
//! a temporary directory), checked with the image's own HEALTHCHECK command.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::mqtt::{RawClient, mosquitto_bin, password_file};
use common::{COMMAND_DEADLINE, Http, Scratch, clean_env, free_port, parse_env_file, poll_until, run_with_deadline};
use yaml_rust2::{Yaml, YamlLoader};

fn unit_with_stand_in_binaries(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/systemd/confstore.service"))
        .expect("ops/systemd/confstore.service");
    let path = dir.join("confstore.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/litestream", "/bin/true").replace("/usr/local/bin/confstore", "/bin/true"),
    )
    .unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_stand_in_binaries(dir.path());
    let verify =
        Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze (Debian: systemd)");
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&security.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for confstore.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}\n{}", String::from_utf8_lossy(&security.stderr)));
    eprintln!("systemd exposure level of ops/systemd/confstore.service: {level}");
    assert!(level <= 2.0, "exposure {level} > 2.0:\n{text}");
}

// ---- Docker: ops/docker/{Dockerfile, compose.yaml, mosquitto.conf} --------------------------

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the repository").to_owned()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative)).unwrap_or_else(|e| panic!("reading {relative}: {e}"))
}

fn compose() -> Yaml {
    let text = read("ops/docker/compose.yaml");
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("ops/docker/compose.yaml: {e}"));
    assert_eq!(docs.len(), 1, "one YAML document in ops/docker/compose.yaml");
    docs.remove(0)
}

/// A service of the compose file, or a panic naming it.
#[track_caller]
fn service<'c>(compose: &'c Yaml, name: &str) -> &'c Yaml {
    let s = &compose["services"][name];
    assert!(s.as_hash().is_some(), "no service {name} in ops/docker/compose.yaml");
    s
}

/// A YAML list of strings (a missing key is an empty list).
fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec().map(|v| v.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// A service's `environment:` (written as a map in this file).
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    let env = service["environment"].as_hash().map(|h| h.iter()).into_iter().flatten();
    env.filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned()))).collect()
}

/// Compose's interpolation as this file uses it: `${NAME}`, `${NAME:-default}` and
/// `${NAME:?message}` (an error when NAME is unset or empty).
fn interpolate(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').ok_or_else(|| format!("unclosed ${{ in {text:?}"))? + start;
        let expr = &rest[start + 2..end];
        let name_end = expr.find(':').unwrap_or(expr.len());
        let (name, op, arg) =
            (&expr[..name_end], expr.get(name_end..name_end + 2).unwrap_or(""), expr.get(name_end + 2..).unwrap_or(""));
        let value = vars.get(name).filter(|v| !v.is_empty());
        match (value, op) {
            (Some(v), _) => out.push_str(v),
            (None, ":-") => out.push_str(arg),
            (None, ":?") => return Err(format!("{name}: {arg}")),
            (None, _) => {}
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every `${NAME...}` the compose file uses (outside comments).
fn compose_variables(text: &str) -> Vec<String> {
    let code = text.lines().filter(|l| !l.trim_start().starts_with('#'));
    code.flat_map(|line| {
        line.match_indices("${").filter_map(|(i, _)| {
            let name: String = line[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
    })
    .collect()
}

/// ops/.env.example with the values the compose file requires filled in.
fn example_vars(overrides: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut vars = parse_env_file(&read("ops/.env.example"));
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    vars
}

/// `docker compose` (the plugin) if it runs, else Debian's `docker-compose`.
fn docker_compose() -> Command {
    let plugin = Command::new("docker").args(["compose", "version"]).output();
    if plugin.is_ok_and(|o| o.status.success()) {
        let mut cmd = Command::new("docker");
        cmd.arg("compose");
        return cmd;
    }
    let v1 = Command::new("docker-compose").arg("version").output();
    assert!(
        v1.is_ok_and(|o| o.status.success()),
        "neither `docker compose` nor docker-compose runs: ops/test.sh installs docker-compose (Debian)"
    );
    Command::new("docker-compose")
}

#[test]
fn docker_compose_accepts_the_compose_file_and_refuses_it_without_the_broker_password() {
    let dir = Scratch::new("compose-config");
    let check = |vars: &BTreeMap<String, String>| {
        let env_file = dir.path().join("compose.env");
        let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(&env_file, text).unwrap();
        let mut cmd = docker_compose();
        cmd.arg("--env-file").arg(&env_file).args(["-f", "ops/docker/compose.yaml", "config", "-q"]);
        cmd.current_dir(repo());
        run_with_deadline(cmd, None, COMMAND_DEADLINE)
    };
    check(&example_vars(&[("CONFSTORE_MQTT_PASSWORD", "example")])).assert_ok();
    // ops/.env.example as it is leaves the password empty: compose says which variable.
    let refused = check(&example_vars(&[]));
    assert!(!refused.status.success() && refused.stderr.contains("CONFSTORE_MQTT_PASSWORD"), "{refused}");
}

#[test]
fn the_compose_file_wires_confstore_mosquitto_and_litestream() {
    let c = compose();
    let names: Vec<&str> = c["services"].as_hash().expect("services").keys().filter_map(Yaml::as_str).collect();
    assert_eq!(names, ["confstore", "mosquitto", "litestream"]);
    let (confstore, mosquitto, litestream) =
        (service(&c, "confstore"), service(&c, "mosquitto"), service(&c, "litestream"));

    // Non-root, the same user for the server and for Litestream, which writes the database.
    let user = confstore["user"].as_str().expect("confstore runs as a numeric user");
    let uid: u32 = user.split(':').next().and_then(|u| u.parse().ok()).expect("a numeric uid");
    assert!(uid != 0, "confstore must not run as root: {user}");
    assert_eq!(litestream["user"].as_str(), Some(user), "Litestream runs as the server's user");
    assert!(!strings(&confstore["healthcheck"]["test"]).is_empty(), "confstore has a healthcheck");
    assert_eq!(confstore["build"]["dockerfile"].as_str(), Some("ops/docker/Dockerfile"));
    assert_eq!(strings(&confstore["depends_on"]), ["mosquitto", "litestream"]);

    // The server publishes to the Mosquitto service, which runs with the ACL.
    let env = environment(confstore);
    assert_eq!(env.get("CONFSTORE_MQTT_URL").map(String::as_str), Some("mqtt://mosquitto:1883"));
    let mounts = strings(&mosquitto["volumes"]);
    let conf = read("ops/docker/mosquitto.conf");
    let setting = |name: &str| {
        conf.lines().find_map(|l| l.strip_prefix(name).map(str::trim)).unwrap_or_else(|| panic!("no {name}"))
    };
    for mount in [
        format!("../mosquitto/confstore.acl:{}:ro", setting("acl_file ")),
        "./mosquitto.conf:/mosquitto/config/mosquitto.conf:ro".to_owned(),
    ] {
        assert!(mounts.contains(&mount), "mosquitto mounts {mount}: {mounts:?}");
    }
    assert!(
        mounts.iter().any(|m| m.ends_with(&format!(":{}:ro", setting("password_file ")))),
        "mosquitto mounts its password file: {mounts:?}"
    );

    // Litestream replicates the server's database with ops/litestream.yml: the same volume
    // at the same path, the same data directory, and the replica where the head file goes.
    let lt_env = environment(litestream);
    let lt_mounts = strings(&litestream["volumes"]);
    assert!(lt_mounts.contains(&"../litestream.yml:/etc/litestream.yml:ro".to_owned()), "{lt_mounts:?}");
    assert_eq!(strings(&litestream["command"]), ["replicate", "-config", "/etc/litestream.yml"]);
    assert_eq!(lt_env.get("CONFSTORE_DATA_DIR"), env.get("CONFSTORE_DATA_DIR"));
    let server_mounts = strings(&confstore["volumes"]);
    let data_mount = "data:/var/lib/confstore".to_owned();
    assert!(server_mounts.contains(&data_mount) && lt_mounts.contains(&data_mount), "the shared data volume");
    assert!(env["CONFSTORE_DATA_DIR"].starts_with("/var/lib/confstore/"), "{env:?}");
    let replica = lt_env.get("LITESTREAM_REPLICA_DIR").expect("LITESTREAM_REPLICA_DIR for Litestream");
    let replica_mount = lt_mounts.iter().find(|m| m.ends_with(&format!(":{replica}"))).expect("the replica mount");
    assert!(server_mounts.contains(replica_mount), "the server mounts the replica: {server_mounts:?}");
    assert!(env["CONFSTORE_HEAD_FILE"].starts_with(&format!("{replica}/")), "the head file beside the replica");

    // Each mounted file of the repository exists, and every variable is documented.
    for mount in mounts.iter().chain(&lt_mounts) {
        if let Some(src) = mount.split(':').next().filter(|s| s.starts_with('.')) {
            assert!(repo().join("ops/docker").join(src).is_file(), "{mount}: no such file");
        }
    }
    let example = parse_env_file(&read("ops/.env.example"));
    let missing: Vec<String> =
        compose_variables(&read("ops/docker/compose.yaml")).into_iter().filter(|v| !example.contains_key(v)).collect();
    assert!(missing.is_empty(), "used in ops/docker/compose.yaml, not in ops/.env.example: {missing:?}");
}

/// The Dockerfile's instructions (continuation lines joined), comments dropped.
fn dockerfile_instructions() -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("ops/docker/Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// The HEALTHCHECK's command (its exec-form JSON array).
fn dockerfile_healthcheck() -> Vec<String> {
    let instructions = dockerfile_instructions();
    let check = instructions.iter().find(|i| i.starts_with("HEALTHCHECK ")).expect("a HEALTHCHECK");
    let json = &check[check.find("CMD [").expect("HEALTHCHECK ... CMD [exec form]") + 4..];
    serde_json::from_str(json).unwrap_or_else(|e| panic!("HEALTHCHECK CMD is not a JSON array ({e}): {json}"))
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_and_checks_health() {
    let instructions = dockerfile_instructions();
    let froms: Vec<usize> = (0..instructions.len()).filter(|&i| instructions[i].starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "a builder stage and a runtime stage: {froms:?}");
    let runtime = &instructions[*froms.last().expect("a FROM")..];
    assert!(runtime[0].contains("debian:bookworm-slim"), "{}", runtime[0]);
    let user = runtime.iter().find_map(|i| i.strip_prefix("USER ")).expect("USER in the runtime stage");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(!matches!(uid, "0" | "root") && !uid.is_empty(), "USER {user} is root");
    for wanted in ["HEALTHCHECK ", "VOLUME ", "EXPOSE 8080", "ENTRYPOINT "] {
        assert!(runtime.iter().any(|i| i.starts_with(wanted)), "no {wanted} in the runtime stage");
    }
    // Only copies in the runtime stage: an ARM64 image builds without emulation.
    assert!(!runtime.iter().any(|i| i.starts_with("RUN ")), "the runtime stage runs nothing");
    assert!(instructions.iter().any(|i| i.contains("cargo build --profile dist --locked")), "a locked dist build");
    let ignore = read("ops/docker/Dockerfile.dockerignore");
    for pattern in ["target/", "**/.env", "**/*.db"] {
        assert!(ignore.lines().any(|l| l == pattern), "Dockerfile.dockerignore must exclude {pattern}");
    }
    // compose.yaml repeats the image's check: the same command.
    let compose_check = strings(&service(&compose(), "confstore")["healthcheck"]["test"]);
    assert_eq!(compose_check.first().map(String::as_str), Some("CMD"));
    assert_eq!(compose_check[1..], dockerfile_healthcheck()[..], "compose.yaml and the Dockerfile check alike");
}

/// `name value` settings of a Mosquitto config, comments dropped.
fn mosquitto_settings(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(' ').map_or((l, ""), |(k, v)| (k, v.trim())))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn the_container_mosquitto_conf_keeps_the_shipped_settings() {
    let shipped = mosquitto_settings(&read("ops/mosquitto/mosquitto.conf"));
    let container = mosquitto_settings(&read("ops/docker/mosquitto.conf"));
    assert_eq!(
        shipped.keys().collect::<Vec<_>>(),
        container.keys().collect::<Vec<_>>(),
        "ops/docker/mosquitto.conf has the settings of ops/mosquitto/mosquitto.conf"
    );
    // Paths and the listener's address differ in a container; nothing else may.
    for (name, value) in &shipped {
        if !matches!(name.as_str(), "listener" | "password_file" | "acl_file" | "persistence_location") {
            assert_eq!(Some(value), container.get(name), "{name} differs between the two mosquitto.conf");
        }
    }
    assert_eq!(container["listener"], "1883", "the container's broker listens on all its interfaces");
}

/// Maps a service's container paths to directories of `root` (named volumes) or to the
/// host paths it mounts; longest container path first.
fn mount_map(service: &Yaml, vars: &BTreeMap<String, String>, root: &Path) -> Vec<(String, PathBuf)> {
    let mut map: Vec<(String, PathBuf)> = strings(&service["volumes"])
        .iter()
        .map(|m| {
            let m = interpolate(m, vars).unwrap_or_else(|e| panic!("{m}: {e}"));
            let mut parts = m.split(':');
            let (src, dst) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            let host = if src.starts_with('.') {
                repo().join("ops/docker").join(src)
            } else if src.starts_with('/') {
                PathBuf::from(src)
            } else {
                let dir = root.join("volumes").join(src);
                std::fs::create_dir_all(&dir).unwrap();
                dir
            };
            (dst.to_owned(), host)
        })
        .collect();
    map.sort_by_key(|(dst, _)| std::cmp::Reverse(dst.len()));
    map
}

/// `text` with every container path of `map` replaced by its host path.
fn to_host(text: &str, map: &[(String, PathBuf)]) -> String {
    map.iter()
        .find(|(dst, _)| text.starts_with(dst.as_str()))
        .map_or_else(|| text.to_owned(), |(dst, host)| format!("{}{}", host.display(), &text[dst.len()..]))
}

#[test]
fn the_compose_configuration_runs_with_the_real_server_and_broker() {
    let scratch = Scratch::new("compose-run");
    let root = scratch.path().to_owned();
    let c = compose();
    let passwd = root.join("mosquitto.passwd");
    let replica = root.join("replica");
    std::fs::create_dir_all(&replica).unwrap();
    let vars = example_vars(&[
        ("CONFSTORE_MQTT_PASSWORD", "pw-confstore"),
        ("MOSQUITTO_PASSWORD_FILE", passwd.to_str().unwrap()),
        ("LITESTREAM_REPLICA_DIR", replica.to_str().unwrap()),
    ]);
    password_file(&passwd, &[("confstore", "pw-confstore"), ("web", "pw-web")]);

    // Mosquitto: the container's config and ACL at the paths compose mounts them to.
    let mosquitto = service(&c, "mosquitto");
    let broker_mounts = mount_map(mosquitto, &vars, &root);
    let broker_port = free_port();
    let conf: String = read("ops/docker/mosquitto.conf")
        .lines()
        .map(|l| match l.split_once(' ') {
            Some(("listener", _)) => format!("listener {broker_port} 127.0.0.1"),
            Some((k, v)) if v.starts_with('/') => format!("{k} {}", to_host(v, &broker_mounts)),
            _ => l.to_owned(),
        })
        .map(|l| l + "\n")
        .collect();
    let conf_path = root.join("mosquitto.conf");
    // As root mosquitto would switch to its own user, who cannot read the test's files.
    std::fs::write(&conf_path, format!("user root\n{conf}")).unwrap();
    let broker_log = std::fs::File::create(root.join("mosquitto.log")).unwrap();
    let broker = std::process::Command::new(mosquitto_bin())
        .arg("-c")
        .arg(&conf_path)
        .stdout(broker_log.try_clone().unwrap())
        .stderr(broker_log)
        .spawn()
        .expect("mosquitto (Debian: mosquitto; ops/test.sh installs it)");
    let _broker = KillOnDrop(broker);
    let broker_addr = std::net::SocketAddr::from(([127, 0, 0, 1], broker_port));
    poll_until("mosquitto to listen", COMMAND_DEADLINE, Duration::from_millis(20), || {
        std::net::TcpStream::connect_timeout(&broker_addr, Duration::from_millis(200)).ok()
    });

    // confstore serve with the service's environment, its paths on the host.
    let confstore = service(&c, "confstore");
    let server_mounts = mount_map(confstore, &vars, &root);
    let port = free_port();
    let mut cmd = Command::new(common::bin());
    clean_env(&mut cmd);
    for (name, value) in environment(confstore) {
        let value = interpolate(&value, &vars).unwrap_or_else(|e| panic!("{name}: {e}"));
        let value = match name.as_str() {
            "CONFSTORE_LISTEN" => format!("127.0.0.1:{port}"),
            "CONFSTORE_MQTT_URL" => value.replace("mosquitto:1883", &broker_addr.to_string()),
            _ => to_host(&value, &server_mounts),
        };
        cmd.env(name, value);
    }
    let log = root.join("serve.log");
    cmd.arg("serve").stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    cmd.stderr(std::fs::File::create(&log).unwrap());
    let mut server = KillOnDrop(cmd.spawn().expect("starting confstore serve"));
    let server_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // The image's HEALTHCHECK command says healthy once the server is ready...
    let health = dockerfile_healthcheck();
    let check = |port: u16| {
        let mut cmd = Command::new(&health[0]);
        cmd.args(health[1..].iter().map(|a| a.replace("/8080", &format!("/{port}"))));
        run_with_deadline(cmd, None, COMMAND_DEADLINE)
    };
    poll_until("the HEALTHCHECK command to succeed", COMMAND_DEADLINE, Duration::from_millis(50), || {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("confstore serve exited ({status}) with the compose environment:\n{}", server_log());
        }
        check(port).status.success().then_some(())
    });
    // ...and unhealthy when nothing answers.
    assert!(!check(free_port()).status.success(), "the HEALTHCHECK command passes with no server");

    // The keys were written to the key file in the `keys` volume, mode 0600.
    let key_file = to_host("/etc/confstore/keys.env", &server_mounts);
    let keys = parse_env_file(&std::fs::read_to_string(&key_file).expect("the key file"));
    assert!(common::KEY_VARS.iter().all(|k| keys.contains_key(*k)), "keys.env: {:?}", keys.keys());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the key file is private");

    // Through Mosquitto with the ACL, the service `web` (its broker user) gets the publisher's
    // health and its own snapshot after a write.
    let web = RawClient::connect(broker_port, "web-test", Some(("web", "pw-web")), &["system/#"]);
    let data_dir = to_host("/var/lib/confstore/data", &server_mounts);
    let token = std::fs::read_to_string(Path::new(&data_dir).join("admin.token")).expect("the first admin token");
    let mut http = Http::new(std::net::SocketAddr::from(([127, 0, 0, 1], port))).with_token(token.trim());
    http.ok("POST", "/api/v1/services", Some(&serde_json::json!({"name": "web"})));
    http.ok("PUT", "/api/v1/services/web/values/timeout_ms", Some(&serde_json::json!({"value": 750})));
    poll_until("web's snapshot through the ACL'd broker", COMMAND_DEADLINE, Duration::from_millis(20), || {
        (!web.on("system/config/web").is_empty()).then_some(())
    });
    let health_topic: Vec<serde_json::Value> =
        web.on("system/health/config-manager").iter().filter_map(|m| serde_json::from_slice(&m.payload).ok()).collect();
    assert!(health_topic.iter().any(|h| h["status"] == "online"), "health: {health_topic:?}\n{}", server_log());
    assert!(web.on("system/config-events/web").is_empty(), "the ACL keeps the events from web");

    // The head file lands beside the replica; SIGTERM stops the server cleanly.
    let head_file = to_host(&environment(confstore)["CONFSTORE_HEAD_FILE"], &server_mounts);
    assert!(head_file.starts_with(replica.to_str().unwrap()), "{head_file}");
    poll_until("the head file", COMMAND_DEADLINE, Duration::from_millis(20), || {
        Path::new(&head_file).is_file().then_some(())
    });
    let mut kill = Command::new("kill");
    kill.args(["-TERM", &server.0.id().to_string()]);
    run_with_deadline(kill, None, COMMAND_DEADLINE).assert_ok();
    let status = poll_until("confstore serve to stop", COMMAND_DEADLINE, Duration::from_millis(20), || {
        server.0.try_wait().unwrap()
    });
    assert!(status.success(), "confstore serve exited with {status}:\n{}", server_log());
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
