//! Repository conventions checked as ordinary tests (after rust-analyzer's `tidy.rs`):
//! the crate dependency direction of docs/ARCHITECTURE.md, the sans-I/O core, `//!` at the
//! top of every Rust file, and every migration embedded in the binary.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}

/// Normal (non-dev) dependencies of every crate under crates/ and projections/, by name.
fn dependencies() -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for dir in ["crates", "projections"] {
        let Ok(entries) = fs::read_dir(root().join(dir)) else { continue };
        for entry in entries.flatten() {
            let manifest = entry.path().join("Cargo.toml");
            let Ok(text) = fs::read_to_string(&manifest) else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            out.insert(name, section_keys(&text, "dependencies"));
        }
    }
    out
}

/// The keys of one `[section]` of a manifest (enough TOML for our manifests).
fn section_keys(text: &str, section: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{section}]");
            continue;
        }
        if inside && let Some((key, _)) = line.split_once('=') {
            let key = key.trim().trim_end_matches(".workspace").trim_matches('"');
            if !key.is_empty() && !key.starts_with('#') {
                keys.push(key.to_owned());
            }
        }
    }
    keys
}

#[test]
fn crate_dependencies_point_one_way() {
    let deps = dependencies();
    let forbidden: &[(&str, &[&str])] = &[
        // The core is sans-I/O: no database, runtime, network, or other confstore crate.
        (
            "confstore-core",
            &["confstore-log", "confstore", "confstore-client", "rusqlite", "tokio", "axum", "rumqttc", "reqwest"],
        ),
        // The log knows SQLite and the core, nothing of the binary, HTTP or MQTT.
        ("confstore-log", &["confstore", "confstore-client", "tokio", "axum", "rumqttc", "tower-http"]),
        // The server library knows HTTP and the log, never the binary, its CLI or env files.
        ("confstore-server", &["confstore", "clap", "dotenvy", "confstore-client"]),
        // The client never links SQLite or axum.
        ("confstore-client", &["rusqlite", "confstore-log", "axum", "confstore"]),
        // The Python package binds the client and writes no rule of its own: no core (its
        // verification and acceptance rule), no signature crate, nothing of the server.
        (
            "confstore-py",
            &["confstore-core", "ed25519-dalek", "rusqlite", "confstore-log", "confstore-server", "confstore"],
        ),
    ];
    for (krate, banned) in forbidden {
        let Some(have) = deps.get(*krate) else { continue };
        for b in *banned {
            assert!(!have.iter().any(|d| d == b), "{krate} must not depend on {b} (docs/ARCHITECTURE.md)");
        }
    }
    assert!(deps.contains_key("confstore-core") && deps.contains_key("confstore-log"), "crates are where expected");
    // Projections never import each other.
    let projections: Vec<&String> =
        deps.keys().filter(|k| root().join("projections").join(k.as_str()).exists()).collect();
    for p in &projections {
        for q in &projections {
            assert!(p == q || !deps[p.as_str()].contains(q), "projection {p} must not depend on projection {q}");
        }
    }
}

/// The server library exposes what the binary needs and nothing else (docs/ARCHITECTURE.md):
/// no public module, and exactly these names re-exported beside `serve`.
#[test]
fn the_server_exposes_only_what_the_binary_needs() {
    let lib = fs::read_to_string(root().join("crates/confstore-server/src/lib.rs")).unwrap();
    let mut exported = Vec::new();
    for line in lib.lines().map(str::trim) {
        assert!(!line.starts_with("pub mod ") && !line.starts_with("pub(crate) mod "), "{line}: modules stay private");
        if let Some(rest) = line.strip_prefix("pub use ") {
            let (path, names) = rest.trim_end_matches(';').rsplit_once("::").unwrap();
            let names = names.trim_matches(|c| c == '{' || c == '}');
            exported.extend(names.split(',').map(|n| format!("{path}::{}", n.trim())));
        }
        if line.starts_with("pub fn ") || line.starts_with("pub async fn ") {
            exported.push(line.split('(').next().unwrap().rsplit(' ').next().unwrap().to_owned());
        }
    }
    exported.sort();
    assert_eq!(
        exported,
        [
            "app::App",
            "app::Config",
            "app::Keys",
            "app::StreamAdvert",
            "listener::HttpLimits",
            "serve",
            "stream::MqttSettings",
            "stream::broker::BrokerError",
            "stream::broker::Embedded",
        ],
        "confstore-server's public surface changed: what the CLI also needs belongs in a crate below it"
    );
}

/// Everything that folds the log goes through `State::apply(&Verified)`; the unverified
/// `apply_body` is for the core's `decide`, tests and the benchmark's workloads
/// (docs/ARCHITECTURE.md).
#[test]
fn production_code_folds_only_verified_events() {
    let mut files = Vec::new();
    for dir in ["crates", "projections"] {
        rust_files(&root().join(dir), &mut files);
    }
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| {
            let rel = f.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
            rel.contains("/src/")
                && !rel.starts_with("crates/confstore-core/")
                && !rel.starts_with("crates/confstore-bench/")
                && !rel.ends_with("/tests.rs")
        })
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap();
            let production = text.split("#[cfg(test)]").next().unwrap_or_default().to_owned();
            production.contains(".apply_body(")
        })
        .map(|f| f.strip_prefix(root()).unwrap_or(f).display().to_string())
        .collect();
    assert!(offenders.is_empty(), "fold verified events with State::apply, not apply_body: {offenders:?}");
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_does_no_io_and_reads_no_clock() {
    let mut files = Vec::new();
    rust_files(&root().join("crates/confstore-core/src"), &mut files);
    assert!(!files.is_empty());
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        for banned in ["std::fs", "std::net", "std::process", "SystemTime", "Instant::now", "std::env", "std::thread"] {
            assert!(
                !text.contains(banned),
                "{} uses {banned}; confstore-core does no I/O and reads no clock",
                f.display()
            );
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    for dir in ["crates", "projections", "tests"] {
        rust_files(&root().join(dir), &mut files);
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !fs::read_to_string(f).unwrap().trim_start().starts_with("//!"))
        .map(|f| f.strip_prefix(root()).unwrap_or(f).display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a leading //! doc comment: {missing:?}");
}

#[test]
fn every_migration_is_embedded_and_well_named() {
    migrations_are_embedded("migrations", "crates/confstore-log/src/db.rs", "confstore-log's MIGRATIONS");
    // The search index's own database (ADR 0037), embedded by confstore-search.
    migrations_are_embedded(
        "migrations/search",
        "projections/confstore-search/src/lib.rs",
        "confstore-search's MIGRATIONS",
    );
}

/// Every `.sql` file of `dir` is named NNNN_verb_noun.sql, numbered without gaps from 0001,
/// and embedded (by its path) in the source file `embedder`.
fn migrations_are_embedded(dir: &str, embedder: &str, what: &str) {
    let source = fs::read_to_string(root().join(embedder)).unwrap();
    let mut names: Vec<String> = fs::read_dir(root().join(dir))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "{dir}: no migrations");
    for (i, name) in names.iter().enumerate() {
        let stem = name.trim_end_matches(".sql");
        let (num, rest) = stem.split_at(4);
        assert_eq!(
            num.parse::<usize>().ok(),
            Some(i + 1),
            "{dir}/{name}: migrations are numbered 0001, 0002, ... without gaps"
        );
        assert!(rest.starts_with('_') && rest.len() > 1, "{dir}/{name}: name migrations NNNN_verb_noun.sql");
        assert!(source.contains(&format!("{dir}/{name}")), "{dir}/{name} is not embedded in {what}");
    }
}

/// ops/.env.example documents every variable confstore and its client library read: each
/// `env = "..."` of the CLI, each key variable, `CONFSTORE_LOG`, and each variable of
/// `ClientBuilder::from_env` appears there as `NAME=`.
#[test]
fn every_environment_variable_is_in_the_env_example() {
    let example = fs::read_to_string(root().join("ops/.env.example")).expect("ops/.env.example");
    let documented: Vec<&str> = example.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k.trim())).collect();
    let mut read: Vec<String> = vec!["CONFSTORE_LOG".to_owned()];
    let quoted = |text: &str, prefix: &str| -> Vec<String> {
        text.match_indices(prefix)
            .filter_map(|(i, _)| text[i + prefix.len()..].split('"').next().map(str::to_owned))
            .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect()
    };
    let cli = fs::read_to_string(root().join("crates/confstore/src/cli.rs")).unwrap();
    read.extend(quoted(&cli, "env = \""));
    for file in ["crates/confstore/src/env_keys.rs", "crates/confstore-client/src/builder.rs"] {
        let text = fs::read_to_string(root().join(file)).unwrap();
        read.extend(quoted(&text, ": &str = \""));
    }
    assert!(read.len() > 20, "found too few variables to be believed: {read:?}");
    let missing: Vec<&String> = read.iter().filter(|v| !documented.contains(&v.as_str())).collect();
    assert!(missing.is_empty(), "not documented in ops/.env.example: {missing:?}");
}

/// Every file of the repository (not `target/`, not `.git/`), for text checks.
fn repository_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == ".git" || name == "screenshots" {
            continue;
        }
        if path.is_dir() {
            repository_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The repository stands on its own: what the code and docs rely on is written in docs/
/// (design.md, testing.md, format.md, …), so nothing cites a document that does not ship
/// with it.
#[test]
fn nothing_cites_a_document_outside_the_repository() {
    // Spelled in pieces, so this file does not cite them either.
    let outside = [
        ["DESIGN", ".md"].concat(),
        ["TEST", "PLAN"].concat(),
        ["STYLE", ".md"].concat(),
        ["../", "shared"].concat(),
        ["seed/", "plan.md"].concat(),
    ];
    let mut files = Vec::new();
    repository_files(&root(), &mut files);
    let mut found = Vec::new();
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else { continue };
        for (n, line) in text.lines().enumerate() {
            if let Some(what) = outside.iter().find(|o| line.contains(o.as_str())) {
                found.push(format!("{}:{}: cites {what}", f.strip_prefix(root()).unwrap_or(&f).display(), n + 1));
            }
        }
    }
    assert!(found.is_empty(), "cite docs/ instead (docs/design.md, docs/testing.md):\n{}", found.join("\n"));
}

/// Every bound is named in `crates/confstore-core/src/limits.rs`, with a doc comment saying
/// why that number (docs/ARCHITECTURE.md, cross-cutting rules). A constant named like a
/// bound (`…_MAX…`, `…_MIN…`, `…ATTEMPTS…`, `…RETRIES…`) and given a number literal
/// anywhere else fails this, unless it is one of the exceptions listed here, each with why.
#[test]
fn every_bound_is_named_in_limits_rs() {
    // (file, constant): why it is not in limits.rs.
    let exceptions: &[(&str, &str)] = &[
        // A version number, not a bound.
        ("crates/confstore-log/src/db.rs", "SQLITE_VERSION_NUMBER_MIN"),
        // How many characters of a refused value an error message quotes: presentation.
        ("crates/confstore-core/src/json.rs", "SHOWN_CHARS_MAX"),
        // AES-GCM's nonce budget per key: cryptography, next to the cipher it bounds.
        ("crates/confstore-core/src/secret.rs", "ENCRYPTIONS_PER_KEY_MAX"),
        // The client's own bounds (it links only confstore-core); not yet moved.
        ("crates/confstore-client/src/updater.rs", "GAP_WALK_VERSIONS_MAX"),
        ("crates/confstore-client/src/lkg.rs", "FILE_BYTES_MAX"),
        ("crates/confstore-client/src/lkg.rs", "DELTAS_MAX"),
        ("crates/confstore-client/src/lib.rs", "SNAPSHOT_BYTES_MAX"),
        ("crates/confstore-client/src/mqtt.rs", "OUTGOING_PACKET_BYTES_MAX"),
        // The publisher's echo memory; not yet moved.
        ("crates/confstore-server/src/stream/publisher.rs", "ECHO_PER_TOPIC_MAX"),
        ("crates/confstore-server/src/stream/publisher.rs", "ECHO_DELTAS_PER_TOPIC_MAX"),
        // The LKG file's size bound; not yet moved.
        ("projections/confstore-lkg/src/lib.rs", "FILE_BYTES_MAX"),
    ];
    let mut files = Vec::new();
    for dir in ["crates", "projections"] {
        rust_files(&root().join(dir), &mut files);
    }
    let limits = root().join("crates/confstore-core/src/limits.rs");
    let mut found = Vec::new();
    for f in files.iter().filter(|f| **f != limits && !f.starts_with(root().join("crates/confstore-bench"))) {
        let rel = f.strip_prefix(root()).unwrap_or(f).display().to_string();
        for line in fs::read_to_string(f).unwrap().lines() {
            let Some((_, rest)) = line.split_once("const ") else { continue };
            let Some((name, rest)) = rest.split_once(':') else { continue };
            let Some((_, value)) = rest.split_once('=') else { continue };
            let bound_like = ["_MAX", "_MIN", "ATTEMPTS", "RETRIES"].iter().any(|w| name.contains(w));
            let literal = value.trim_start().starts_with(|c: char| c.is_ascii_digit());
            if bound_like && literal && !exceptions.contains(&(rel.as_str(), name.trim())) {
                found.push(format!("{rel}: {}", line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "bounds written outside limits.rs (name them there, with why): {found:#?}");
    // And every limit says why: a doc comment above each constant.
    let text = fs::read_to_string(&limits).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| l.starts_with("pub const ")) {
        assert!(i > 0 && lines[i - 1].starts_with("///"), "limits.rs: `{line}` has no doc comment");
    }
}
