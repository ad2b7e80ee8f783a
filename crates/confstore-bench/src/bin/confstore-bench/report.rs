//! The report: every figure next to its baseline and target, as a table for people and as
//! JSON (`--json`) for machines.

use std::io::Write;

use serde::Serialize;

use crate::append::{CpuCosts, GroupResult, SingleResult};
use crate::size::SizeResult;
use crate::verify::{CryptoResult, VerifyResult};
use confstore_bench::machine::{Disk, Load, Machine};
use confstore_bench::timing::{Samples, int};

/// Target 1: confstore's durable single-appender rate over raw SQLite's, at synchronous=FULL.
pub const APPEND_RATIO_MIN: f64 = 0.85;
/// Target 2: events per second with concurrent appenders (group commit).
pub const GROUP_EVENTS_PER_SEC_MIN: f64 = 20_000.0;
/// Target 3: events verified per second, every signature checked.
pub const VERIFY_EVENTS_PER_SEC_MIN: f64 = 80_000.0;
/// Target 4: bytes on disk per event of a typical small value.
pub const BYTES_PER_EVENT_MAX: f64 = 400.0;

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Always `confstore-bench/1`.
    pub format: &'static str,
    /// The machine and build.
    pub machine: Machine,
    /// Where the databases were.
    pub disk: Disk,
    /// How busy the machine was during the run.
    pub load: Load,
    /// The parameters of the run.
    pub params: serde_json::Value,
    /// Bytes of the typical value's canonical JSON (min, max over the run).
    pub value_json_bytes: (usize, usize),
    /// Section 1 at synchronous=FULL (the target).
    pub append_full: SingleResult,
    /// Section 1 at synchronous=NORMAL (information).
    pub append_normal: SingleResult,
    /// Section 2 at synchronous=FULL (the target).
    pub group: GroupResult,
    /// Section 2 at synchronous=NORMAL (information: the writer's CPU ceiling).
    pub group_normal: GroupResult,
    /// Section 3.
    pub verify: VerifyResult,
    /// Section 3's baseline.
    pub crypto: CryptoResult,
    /// Section 4.
    pub sizes: Vec<SizeResult>,
    /// The writer's pure per-event steps.
    pub cpu: CpuCosts,
    /// Each target and whether it was met.
    pub targets: Vec<Target>,
    /// Whether every target was met.
    pub all_pass: bool,
    /// Seconds the whole run took.
    pub total_secs: f64,
}

/// One target and its outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// Short id: `append_ratio_full`, `group_events_per_sec`, ...
    pub id: String,
    /// The measured figure the target is about.
    pub value: f64,
    /// `>=` or `<=`.
    pub op: &'static str,
    /// The bound.
    pub bound: f64,
    /// Whether it was met.
    pub pass: bool,
}

fn target(id: impl Into<String>, value: f64, op: &'static str, bound: f64) -> Target {
    let pass = match op {
        ">=" => value >= bound,
        _ => value <= bound,
    };
    Target { id: id.into(), value, op, bound, pass }
}

/// The targets, from the results.
pub fn targets(full: &SingleResult, group: &GroupResult, verify: &VerifyResult, sizes: &[SizeResult]) -> Vec<Target> {
    let mut t = vec![
        target("append_ratio_full", full.ratio(), ">=", APPEND_RATIO_MIN),
        target("group_events_per_sec", group.confstore.median, ">=", GROUP_EVENTS_PER_SEC_MIN),
        target("verify_events_per_sec", verify.verify.median, ">=", VERIFY_EVENTS_PER_SEC_MIN),
    ];
    for s in sizes {
        t.push(target(format!("bytes_per_event:{}", s.id), s.bytes_per_event, "<=", BYTES_PER_EVENT_MAX));
    }
    t
}

fn verdict(r: &Report, id: &str) -> &'static str {
    match r.targets.iter().find(|t| t.id == id) {
        Some(t) if t.pass => "PASS",
        Some(_) => "FAIL",
        None => "-",
    }
}

/// A rate with its spread over the runs: `12,345 ops/s` and `(range 12,000-12,500)`.
fn rate_cell(x: &Samples, unit: &str) -> String {
    if x.runs.len() > 1 {
        format!("{} {unit}\n(runs {}-{})", int(x.median), int(x.min), int(x.max))
    } else {
        format!("{} {unit}", int(x.median))
    }
}

/// Writes the human-readable report.
pub fn write_table(r: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let m = &r.machine;
    writeln!(out, "confstore-bench, {}", m.date_utc)?;
    writeln!(
        out,
        "machine: {} cores, {}, Linux {}, SQLite {}, {} build",
        m.nproc, m.cpu_model, m.kernel, m.sqlite_version, m.build
    )?;
    if m.build != "release" {
        writeln!(out, "WARNING: debug build; run with `cargo run --release -p confstore-bench` for real figures")?;
    }
    let d = &r.disk;
    writeln!(out, "disk: {} on {} ({}, mounted at {}, {})", d.path, d.device, d.fs_type, d.mount_point, d.options)?;
    let l = &r.load;
    writeln!(
        out,
        "load during the run: this benchmark {:.0}% of all CPU time, other processes {:.0}%, iowait {:.0}%; \
         loadavg {} -> {}",
        l.own_cpu_pct, l.others_cpu_pct, l.iowait_pct, l.loadavg_start, l.loadavg_end
    )?;
    if l.others_cpu_pct > 10.0 {
        writeln!(out, "WARNING: other processes used the CPUs during the run; figures are low and noisy")?;
    }
    writeln!(
        out,
        "workload: values of {}-{} bytes of canonical JSON; medians of {} runs",
        r.value_json_bytes.0, r.value_json_bytes.1, r.params["runs"]
    )?;
    writeln!(out)?;

    let (full, normal, g, gn, v, c) =
        (&r.append_full, &r.append_normal, &r.group, &r.group_normal, &r.verify, &r.crypto);
    let mut rows: Vec<[String; 6]> = vec![[
        "#".into(),
        "measure".into(),
        "figure".into(),
        "baseline (same run, same disk)".into(),
        "target".into(),
        "result".into(),
    ]];
    rows.push([
        "1".into(),
        "durable append, 1 appender,\n1 event/changeset/commit,\nsync=FULL".into(),
        format!("{}\n{:.0} us/op", rate_cell(&full.confstore, "ops/s"), full.confstore.us_per_op()),
        format!("raw SQLite 1-row commit:\n{}\n{:.0} us/op", rate_cell(&full.raw, "ops/s"), full.raw.us_per_op()),
        format!(">= {APPEND_RATIO_MIN:.2}x raw"),
        format!("{:.2}x {}", full.ratio(), verdict(r, "append_ratio_full")),
    ]);
    rows.push([
        "1n".into(),
        "same, sync=NORMAL".into(),
        format!("{}\n{:.0} us/op", rate_cell(&normal.confstore, "ops/s"), normal.confstore.us_per_op()),
        format!("raw SQLite 1-row commit:\n{}\n{:.0} us/op", rate_cell(&normal.raw, "ops/s"), normal.raw.us_per_op()),
        "(information)".into(),
        format!("{:.2}x", normal.ratio()),
    ]);
    rows.push([
        "2".into(),
        format!("group commit, {} appender\nthreads, 1 event/changeset,\nsync=FULL", g.threads),
        format!("{}\n{:.1} changesets/commit", rate_cell(&g.confstore, "events/s"), g.changesets_per_commit),
        format!(
            "1 appender (row 1): {} ops/s;\nthis is {:.1}x that\nraw SQLite, {} connections,\n1 row/commit: {} rows/s",
            int(full.confstore.median),
            g.confstore.median / full.confstore.median,
            g.threads,
            int(g.raw_per_thread_connections.median)
        ),
        format!(">= {} events/s", int(GROUP_EVENTS_PER_SEC_MIN)),
        verdict(r, "group_events_per_sec").into(),
    ]);
    rows.push([
        "2n".into(),
        "same, sync=NORMAL".into(),
        format!("{}\n{:.1} changesets/commit", rate_cell(&gn.confstore, "events/s"), gn.changesets_per_commit),
        format!("1 appender (row 1n): {} ops/s", int(normal.confstore.median)),
        "(information)".into(),
        String::new(),
    ]);
    rows.push([
        "3".into(),
        format!("verify {}-event log,\nevery signature", int(v.events as f64)),
        rate_cell(&v.verify, "events/s"),
        format!(
            "ed25519-dalek on 1 core:\nverify_batch({}): {} sig/s\nverify_strict: {} sig/s\n{} cores, batches: {} sig/s",
            c.batch_size,
            int(c.verify_batch.median),
            int(c.verify_strict.median),
            c.cores,
            int(c.verify_batch_all_cores.median)
        ),
        format!(">= {} events/s", int(VERIFY_EVENTS_PER_SEC_MIN)),
        verdict(r, "verify_events_per_sec").into(),
    ]);
    for (i, s) in r.sizes.iter().enumerate() {
        rows.push([
            format!("4{}", ["", "b", "c", "d"].get(i).copied().unwrap_or("+")),
            format!("on-disk size after\ncheckpoint, {}", s.label.replace(", ", ",\n")),
            format!("{:.0} B/event", s.bytes_per_event),
            format!(
                "row payload: {:.0} B/event\nsame rows, bare table:\n{:.0} B/event",
                s.payload_per_event, s.raw_table_bytes_per_event
            ),
            format!("<= {BYTES_PER_EVENT_MAX:.0} B/event"),
            verdict(r, &format!("bytes_per_event:{}", s.id)).into(),
        ]);
    }
    table(out, &rows)?;

    writeln!(out)?;
    writeln!(out, "Where a single-event append's time goes (us per changeset, medians; row 1 and 1n):")?;
    let cpu = &r.cpu;
    let rest = |s: &SingleResult| {
        s.confstore.us_per_op() - s.raw_log_sql.us_per_op() - cpu.decide_us - cpu.seal_us - cpu.handoff_us
    };
    let mut b: Vec<[String; 6]> =
        vec![["".into(), "step".into(), "FULL".into(), "NORMAL".into(), "what".into(), "".into()]];
    let line = |step: &str, f: f64, n: f64, what: &str| -> [String; 6] {
        ["".into(), step.into(), format!("{f:.1}"), format!("{n:.1}"), what.into(), String::new()]
    };
    b.push(line("raw 1-row commit", full.raw.us_per_op(), normal.raw.us_per_op(), "BEGIN IMMEDIATE, INSERT, COMMIT"));
    b.push(line(
        "+ the log's other SQL",
        full.raw_log_sql.us_per_op() - full.raw.us_per_op(),
        normal.raw_log_sql.us_per_op() - normal.raw.us_per_op(),
        "data_version read, event insert (the writer's per-commit\nSQL; checkpoints every 256 events not included)",
    ));
    b.push(line("+ decide", cpu.decide_us, cpu.decide_us, "validation, canonical JSON (CPU only)"));
    b.push(line(
        "+ seal",
        cpu.seal_us,
        cpu.seal_us,
        &format!("postcard + SHA-256 + Ed25519 sign (sign alone {:.1})", cpu.sign_us),
    ));
    b.push(line(
        "+ queue",
        cpu.handoff_us,
        cpu.handoff_us,
        "group-commit queue for a lone appender: three\nuncontended lock round trips and a notify",
    ));
    b.push(line(
        "+ remainder",
        rest(full),
        rest(normal),
        "the rest: state fold, clock, waking a writer that\nslept in fsync, contention, noise",
    ));
    b.push(line(
        "= confstore append",
        full.confstore.us_per_op(),
        normal.confstore.us_per_op(),
        "Store::append, measured",
    ));
    table(out, &b)?;
    let overhead = full.confstore.us_per_op() - full.raw.us_per_op();
    writeln!(
        out,
        "confstore adds {overhead:.0} us per durable changeset to a raw commit; {APPEND_RATIO_MIN:.2}x raw needs a raw \
         commit of at least {:.0} us on this CPU (this disk: {:.0} us)",
        overhead * APPEND_RATIO_MIN / (1.0 - APPEND_RATIO_MIN),
        full.raw.us_per_op()
    )?;

    writeln!(out)?;
    writeln!(out, "Where verification's time goes (us per event, medians; row 3):")?;
    let us = |x: &Samples| 1e6 / x.median;
    let mut b: Vec<[String; 6]> =
        vec![["".into(), "step".into(), "us/event".into(), "what".into(), "".into(), "".into()]];
    let line = |step: &str, x: f64, what: &str| -> [String; 6] {
        ["".into(), step.into(), format!("{x:.1}"), what.into(), String::new(), String::new()]
    };
    b.push(line("read rows", us(&v.read_only), "SELECT in seq order, one StoredEvent per row"));
    b.push(line(
        "+ chain checks",
        us(&v.without_signatures) - us(&v.read_only),
        "SHA-256 link + hash, postcard decode, structure",
    ));
    b.push(line(
        "+ signatures",
        us(&v.verify) - us(&v.without_signatures),
        &format!("batches of {} (dalek alone: {:.1} us/sig)", c.batch_size, us(&c.verify_batch)),
    ));
    b.push(line("= verify", us(&v.verify), "LogReader::verify(None, ..), measured"));
    table(out, &b)?;
    let sizes: Vec<String> = std::iter::once((c.batch_size, &c.verify_batch))
        .chain(c.verify_batch_by_size.iter().map(|(n, x)| (*n, x)))
        .map(|(n, x)| format!("{n}: {}", int(x.median)))
        .collect();
    writeln!(out, "ed25519-dalek verify_batch on 1 core by batch size, sig/s: {}", sizes.join(", "))?;

    writeln!(out)?;
    for s in &r.sizes {
        let objects: Vec<String> =
            s.objects.iter().take(4).map(|o| format!("{} {:.0}", o.name, o.bytes as f64 / s.events as f64)).collect();
        writeln!(
            out,
            "size, {}: {} events, db {} B + wal {} B, page {} B, body {:.0} B/event; B/event by table: {}",
            s.label,
            int(s.events as f64),
            int(s.db_bytes as f64),
            int(s.wal_bytes as f64),
            s.page_size,
            s.body_per_event,
            objects.join(", ")
        )?;
    }
    writeln!(
        out,
        "verify log built in {:.1} s ({} events/changeset); Ed25519 sign on 1 core: {} sig/s",
        v.build_secs,
        v.changeset_events,
        int(c.sign.median)
    )?;
    writeln!(out)?;
    let failed: Vec<&str> = r.targets.iter().filter(|t| !t.pass).map(|t| t.id.as_str()).collect();
    if failed.is_empty() {
        writeln!(out, "all {} targets met ({:.0} s)", r.targets.len(), r.total_secs)?;
    } else {
        writeln!(
            out,
            "{} of {} targets FAILED: {} ({:.0} s)",
            failed.len(),
            r.targets.len(),
            failed.join(", "),
            r.total_secs
        )?;
    }
    Ok(())
}

/// Writes rows of cells (cells may span several lines) as an aligned table; the first row
/// is the header.
fn table(out: &mut impl Write, rows: &[[String; 6]]) -> std::io::Result<()> {
    let mut widths = [0usize; 6];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.lines().map(|l| l.chars().count()).max().unwrap_or(0));
        }
    }
    let multi = rows.iter().skip(1).any(|r| r.iter().any(|c| c.contains('\n')));
    for (i, row) in rows.iter().enumerate() {
        let lines: Vec<Vec<&str>> = row.iter().map(|c| c.lines().collect()).collect();
        let height = lines.iter().map(Vec::len).max().unwrap_or(1).max(1);
        for k in 0..height {
            let mut text = String::new();
            for (j, cell) in lines.iter().enumerate() {
                if widths[j] == 0 {
                    continue;
                }
                let s = cell.get(k).copied().unwrap_or("");
                text.push_str(&format!("{s:<w$}  ", w = widths[j]));
            }
            writeln!(out, "{}", text.trim_end())?;
        }
        if i == 0 {
            let total: usize = widths.iter().filter(|w| **w > 0).map(|w| w + 2).sum();
            writeln!(out, "{}", "-".repeat(total.saturating_sub(2)))?;
        } else if i + 1 < rows.len() && multi {
            writeln!(out)?;
        }
    }
    Ok(())
}
