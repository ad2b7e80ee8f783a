//! `confstore-bench`: measures confstore's event log against its baselines in one run, on one
//! disk, and prints each figure next to its baseline and its target (docs/design.md §11):
//!
//! 1. durable appends, one single-event changeset per commit, one appender, against raw
//!    rusqlite single-row commits (same columns, same pragmas), at synchronous=FULL (target:
//!    at least 0.85x raw) and NORMAL (information);
//! 2. group commit with concurrent appenders (target: at least 20,000 events/s);
//! 3. full verification of a 100,000-event log, every signature checked (target: at least
//!    80,000 events/s), next to ed25519-dalek's own single and batch verification rates;
//! 4. bytes on disk per event of typical small values (target: at most 400).
//!
//! Every count has a flag and an environment variable; the defaults finish in well under two
//! minutes on two cores. `--check` exits 1 if a target fails; `--json` prints JSON instead of
//! the table. Progress goes to stderr. See docs/benchmarks.md for results and discussion.

mod append;
mod report;
mod size;
mod verify;
mod workload;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use confstore_core::limits;
use confstore_log::Synchronous;
use serde::Serialize;

use crate::append::Counts;
use crate::report::Report;
use confstore_bench::machine::{self, Disk, Machine};
use confstore_bench::timing;

/// Benchmarks confstore's log against raw SQLite and Ed25519 on this machine and disk.
#[derive(Parser, Debug, Clone, Serialize)]
#[command(name = "confstore-bench", version)]
struct Args {
    /// Directory under which a temporary benchmark directory is made [default: the system
    /// temp dir]. Put it on the disk you want measured.
    #[arg(long, env = "CONFSTORE_BENCH_DIR")]
    dir: Option<PathBuf>,
    /// Timed runs of each measurement; the median is reported.
    #[arg(long, env = "CONFSTORE_BENCH_RUNS", default_value_t = 5)]
    runs: usize,
    /// Untimed operations before each timed append run.
    #[arg(long, env = "CONFSTORE_BENCH_WARMUP", default_value_t = 50)]
    warmup: usize,
    /// Timed single-appender appends per run (section 1), for each variant and level.
    #[arg(long, env = "CONFSTORE_BENCH_APPEND_OPS", default_value_t = 1000)]
    append_ops: usize,
    /// Concurrent appender threads (sections 2 and 4).
    #[arg(long, env = "CONFSTORE_BENCH_THREADS", default_value_t = 16)]
    threads: usize,
    /// Single-event changesets per group-commit run (section 2), all threads together.
    #[arg(long, env = "CONFSTORE_BENCH_GROUP_EVENTS", default_value_t = 16_000)]
    group_events: usize,
    /// Rows per run of the raw concurrent baseline of section 2.
    #[arg(long, env = "CONFSTORE_BENCH_RAW_GROUP_ROWS", default_value_t = 320)]
    raw_group_rows: usize,
    /// Events in the verified log (section 3).
    #[arg(long, env = "CONFSTORE_BENCH_VERIFY_EVENTS", default_value_t = 100_000)]
    verify_events: usize,
    /// Events per changeset when building the verified log.
    #[arg(long, env = "CONFSTORE_BENCH_CHANGESET_EVENTS", default_value_t = 100)]
    changeset_events: usize,
    /// Signatures per run of the Ed25519 baseline.
    #[arg(long, env = "CONFSTORE_BENCH_CRYPTO_SIGS", default_value_t = 8192)]
    crypto_sigs: usize,
    /// Single-event changesets in the size log (section 4).
    #[arg(long, env = "CONFSTORE_BENCH_SIZE_EVENTS", default_value_t = 20_000)]
    size_events: usize,
    /// Exit with status 1 if any target is missed.
    #[arg(long)]
    check: bool,
    /// Print the results as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON results to this file (whatever stdout shows).
    #[arg(long, env = "CONFSTORE_BENCH_JSON_OUT")]
    json_out: Option<PathBuf>,
    /// Keep the temporary directory and its databases (its path is printed).
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            if let Some(path) = &args.json_out {
                let written = serde_json::to_vec_pretty(&report)
                    .map_err(std::io::Error::from)
                    .and_then(|json| std::fs::write(path, json));
                if let Err(e) = written {
                    eprintln!("confstore-bench: writing {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            let mut out = std::io::stdout().lock();
            let written = if args.json {
                serde_json::to_writer_pretty(&mut out, &report)
                    .map_err(std::io::Error::from)
                    .and_then(|()| writeln!(out))
            } else {
                report::write_table(&report, &mut out)
            };
            if let Err(e) = written.and_then(|()| out.flush()) {
                eprintln!("confstore-bench: writing the report: {e}");
                return ExitCode::from(2);
            }
            if args.check && !report.all_pass { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
        Err(e) => {
            eprintln!("confstore-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn check_args(a: &Args) -> Result<()> {
    ensure!(a.runs >= 1, "--runs must be at least 1");
    ensure!(a.append_ops >= 1, "--append-ops must be at least 1");
    ensure!((1..=limits::SERVICES_MAX - 1).contains(&a.threads), "--threads must be 1 to {}", limits::SERVICES_MAX - 1);
    ensure!(a.group_events >= a.threads, "--group-events must be at least --threads");
    ensure!(a.raw_group_rows >= a.threads, "--raw-group-rows must be at least --threads");
    ensure!(a.verify_events >= 3, "--verify-events must be at least 3");
    ensure!(
        (1..=limits::EVENTS_PER_CHANGESET_MAX).contains(&a.changeset_events),
        "--changeset-events must be 1 to {}",
        limits::EVENTS_PER_CHANGESET_MAX
    );
    ensure!(a.crypto_sigs >= 1, "--crypto-sigs must be at least 1");
    ensure!(a.size_events > a.threads + 1, "--size-events must be more than --threads + 1");
    Ok(())
}

fn progress(step: &str) {
    eprintln!("confstore-bench: {step}");
}

fn run(args: &Args) -> Result<Report> {
    check_args(args)?;
    let started = Instant::now();
    let (cpu_start, loadavg_start) = (machine::CpuSnapshot::now(), machine::loadavg());
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("confstore-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("making a temporary directory under {}", base.display()))?;
    let dir = tmp.path().to_owned();
    let machine = Machine::detect();
    let disk = Disk::detect(&dir);
    progress(&format!(
        "{} build; databases in {} ({} on {}, mounted at {})",
        machine.build, disk.path, disk.fs_type, disk.device, disk.mount_point
    ));

    let counts = Counts { runs: args.runs, warmup: args.warmup, ops: args.append_ops };
    progress("1/4 durable appends, one appender, synchronous=FULL");
    let append_full = append::single(&dir, Synchronous::Full, counts)?;
    progress("1/4 durable appends, one appender, synchronous=NORMAL");
    let append_normal = append::single(&dir, Synchronous::Normal, counts)?;
    let cpu = append::cpu_costs(2000, args.runs)?;

    progress(&format!("2/4 group commit, {} appender threads, synchronous=FULL", args.threads));
    let group = append::group(&dir, Synchronous::Full, args.threads, args.group_events, args.raw_group_rows, counts)?;
    progress(&format!("2/4 group commit, {} appender threads, synchronous=NORMAL", args.threads));
    let group_normal = append::group(&dir, Synchronous::Normal, args.threads, args.group_events, 0, counts)?;

    progress(&format!("3/4 building a {}-event log", args.verify_events));
    let verify_path = dir.join("verify.db");
    let build_secs = verify::build_log(&verify_path, args.verify_events, args.changeset_events)?;
    progress("3/4 verifying it");
    let verify = verify::verify(&verify_path, args.runs, args.changeset_events, build_secs)?;
    let events = verify.events;
    progress("3/4 Ed25519 baseline");
    let crypto = verify::crypto(args.crypto_sigs, args.runs)?;

    progress(&format!("4/4 on-disk size of {} single-event changesets", args.size_events));
    let size_path = dir.join("size.db");
    size::build_single_event_log(&size_path, args.size_events, args.threads)?;
    let scratch = dir.join("size-raw.db");
    let sizes = vec![
        size::measure(
            "single_event_log",
            &format!("{} single-event changesets", timing::int(args.size_events as f64)),
            &size_path,
            &scratch,
        )?,
        size::measure(
            "verify_log",
            &format!("{}-event log, {}/changeset", timing::int(events as f64), args.changeset_events),
            &verify_path,
            &scratch,
        )?,
    ];

    let load = machine::Load::between(cpu_start, machine::CpuSnapshot::now(), loadavg_start);
    let targets = report::targets(&append_full, &group, &verify, &sizes);
    let all_pass = targets.iter().all(|t| t.pass);
    let value_json_bytes = (
        (0..args.size_events.max(args.verify_events)).step_by(997).map(workload::value_len).min().unwrap_or(0),
        workload::value_len(args.size_events.max(args.verify_events).max(args.append_ops + args.warmup)),
    );
    let report = Report {
        format: "confstore-bench/1",
        machine,
        disk,
        load,
        params: serde_json::to_value(args)?,
        value_json_bytes,
        append_full,
        append_normal,
        group,
        group_normal,
        verify,
        crypto,
        sizes,
        cpu,
        targets,
        all_pass,
        total_secs: started.elapsed().as_secs_f64(),
    };
    if args.keep {
        let kept = tmp.keep();
        progress(&format!("kept {}", kept.display()));
    }
    Ok(report)
}
