//! The server benchmark's report: each confstore figure next to the baseline's, measured in
//! the same run, with the ratio and the target; as a table, or as JSON with `--json`.

use std::io::Write;

use serde::Serialize;

use crate::cpu::Load;
use confstore_bench::harness::Summary;
use confstore_bench::machine::{Disk, Machine};
use confstore_bench::timing::int;

/// Target 1: sequential durable writes, one client, confstore's rate over etcd's.
pub const SEQ_WRITE_RATIO_MIN: f64 = 2.0;
/// Target 2: concurrent durable writers, confstore's rate over etcd's.
pub const CONCURRENT_WRITE_RATIO_MIN: f64 = 1.5;
/// Target 3: confstore's snapshot read p99 over etcd's single-key get p99.
pub const READ_P99_RATIO_MAX: f64 = 1.0;

/// A program measured: confstore's server or the baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Peer {
    /// `confstore serve`, `etcd` or `raw SQLite`.
    pub name: String,
    /// Its version line.
    pub version: String,
    /// How it ran (binary, data directory, settings).
    pub how: String,
}

/// How a row compares the two.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// confstore's median rate over the baseline's; higher is better.
    Rate,
    /// confstore's p99 latency over the baseline's; lower is better.
    P99,
}

/// One measurement of both peers.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `1`, `2`, `3`, `3b`, ...
    pub id: String,
    /// What was measured.
    pub what: String,
    /// What confstore did.
    pub confstore_op: String,
    /// confstore's figures.
    pub confstore: Summary,
    /// What the baseline did.
    pub baseline_op: String,
    /// The baseline's figures.
    pub baseline: Summary,
    /// How the two compare.
    pub compare: Compare,
    /// The target, if this row has one.
    pub target: Option<Target>,
    /// confstore's figure over the baseline's (see `compare`); set by [`Row::judged`].
    pub ratio: f64,
    /// Whether the target is met; none without a target or without etcd to check it
    /// against. Set by [`Row::judged`].
    pub pass: Option<bool>,
}

/// A target: a bound on a row's ratio (at least for rates, at most for p99 latencies).
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// Short id: `seq_write_ratio`, ...
    pub id: String,
    /// The bound on the ratio.
    pub bound: f64,
}

impl Row {
    /// The row with its ratio computed and its target judged.
    pub fn judged(mut self, against_etcd: bool) -> Self {
        self.ratio = match self.compare {
            Compare::Rate => self.confstore.rate.median / self.baseline.rate.median,
            Compare::P99 => self.confstore.p99_ms / self.baseline.p99_ms,
        };
        self.pass = self.target.as_ref().filter(|_| against_etcd).map(|t| match self.compare {
            Compare::Rate => self.ratio >= t.bound,
            Compare::P99 => self.ratio <= t.bound,
        });
        self
    }
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `confstore-bench-server/2` (2: the matrix is printed beside it, see server.rs).
    pub format: &'static str,
    /// The machine and build.
    pub machine: Machine,
    /// Where both data directories were.
    pub disk: Disk,
    /// How busy the machine was during the run.
    pub load: Load,
    /// The parameters of the run.
    pub params: serde_json::Value,
    /// confstore's server.
    pub confstore: Peer,
    /// etcd, or raw SQLite when etcd is not installed.
    pub baseline: Peer,
    /// Whether the baseline is etcd (the targets are against etcd only).
    pub against_etcd: bool,
    /// The measurements.
    pub rows: Vec<Row>,
    /// Whether every target was checked and met.
    pub all_pass: bool,
    /// Seconds the whole run took.
    pub total_secs: f64,
}

fn ms(x: f64) -> String {
    if x < 10.0 { format!("{x:.2} ms") } else { format!("{x:.1} ms") }
}

/// A peer's figures in one cell.
fn cell(op: &str, s: &Summary) -> String {
    let rate = if s.rate.runs.len() > 1 {
        format!("{} ops/s (runs {}-{})", int(s.rate.median), int(s.rate.min), int(s.rate.max))
    } else {
        format!("{} ops/s", int(s.rate.median))
    };
    let mut c = format!("{op}:\n{rate}\np50 {} / p99 {}", ms(s.p50_ms), ms(s.p99_ms));
    if s.bytes_per_answer > 0.0 {
        c.push_str(&format!("\n{} B/answer", int(s.bytes_per_answer)));
    }
    match s.peer_cpu_us_per_request {
        Some(peer) => {
            c.push_str(&format!("\nCPU/request: server {peer:.0} us,\nclient {:.0} us", s.client_cpu_us_per_request))
        }
        None => c.push_str(&format!("\nCPU/request: {:.0} us (in process)", s.client_cpu_us_per_request)),
    }
    c
}

/// Writes the human-readable report.
pub fn write_table(r: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let m = &r.machine;
    writeln!(out, "confstore-bench server vs {}, {}", r.baseline.name, m.date_utc)?;
    writeln!(out, "machine: {} cores, {}, Linux {}, {} build", m.nproc, m.cpu_model, m.kernel, m.build)?;
    if m.build != "release" {
        writeln!(out, "WARNING: debug build; run with `cargo run --release -p confstore-bench --bin server`")?;
    }
    let d = &r.disk;
    writeln!(
        out,
        "disk (both data directories): {} on {} ({}, mounted at {}, {})",
        d.path, d.device, d.fs_type, d.mount_point, d.options
    )?;
    if d.fs_type == "tmpfs" {
        writeln!(out, "WARNING: tmpfs: fsync costs nothing there; point SERVER_BENCH_DIR at a real disk")?;
    }
    let l = &r.load;
    writeln!(
        out,
        "load during the run, share of all CPU time: clients {:.0}%, servers {:.0}%, other processes {:.0}%, \
         iowait {:.0}%; loadavg {} -> {}",
        l.client_pct, l.servers_pct, l.others_pct, l.iowait_pct, l.loadavg_start, l.loadavg_end
    )?;
    if l.others_pct > 10.0 {
        writeln!(out, "WARNING: other processes used the CPUs during the run; figures are low and noisy")?;
    }
    for p in [&r.confstore, &r.baseline] {
        writeln!(out, "{}: {}; {}", p.name, p.version, p.how)?;
    }
    if !r.against_etcd {
        writeln!(
            out,
            "etcd is not installed (install with: apt-get install etcd-server): compared with raw SQLite only; the targets are against etcd and were NOT checked"
        )?;
    }
    writeln!(
        out,
        "workload: closed loop, every client on its own connection, one tokio runtime; values of {} bytes; \
         rates are medians of {} runs (order alternated), latencies over all runs",
        r.params["value_bytes"], r.params["runs"]
    )?;
    writeln!(out)?;

    let mut rows: Vec<[String; 6]> = vec![[
        "#".into(),
        "measure".into(),
        "confstore".into(),
        format!("{} (same run, same disk)", r.baseline.name),
        "target".into(),
        "result".into(),
    ]];
    for row in &r.rows {
        // Targets are against etcd, whatever the baseline of this run.
        let (target, unit) = match (&row.target, row.compare) {
            (Some(t), Compare::Rate) => (format!(">= {:.2}x etcd", t.bound), "x rate"),
            (Some(t), Compare::P99) => (format!("p99 <= {:.2}x etcd's", t.bound), "x p99"),
            (None, Compare::Rate) => ("(information)".into(), "x rate"),
            (None, Compare::P99) => ("(information)".into(), "x p99"),
        };
        let verdict = match row.pass {
            Some(true) => " PASS",
            Some(false) => " FAIL",
            None if row.target.is_some() => " n/a",
            None => "",
        };
        // Rows 3b, 3c... compare the same confstore reads with other baseline reads.
        let same = row.what == "same";
        rows.push([
            row.id.clone(),
            row.what.clone(),
            if same { "same".into() } else { cell(&row.confstore_op, &row.confstore) },
            cell(&row.baseline_op, &row.baseline),
            target,
            format!("{:.2}{unit}{verdict}", row.ratio),
        ]);
    }
    table(out, &rows)?;
    writeln!(out)?;
    let checked: Vec<&Row> = r.rows.iter().filter(|row| row.target.is_some()).collect();
    let failed: Vec<&str> = checked
        .iter()
        .filter(|row| row.pass == Some(false))
        .filter_map(|row| row.target.as_ref().map(|t| t.id.as_str()))
        .collect();
    if !r.against_etcd {
        writeln!(out, "{} targets NOT CHECKED: etcd is not installed ({:.0} s)", checked.len(), r.total_secs)?;
    } else if failed.is_empty() {
        writeln!(out, "all {} targets met ({:.0} s)", checked.len(), r.total_secs)?;
    } else {
        writeln!(
            out,
            "{} of {} targets FAILED: {} ({:.0} s)",
            failed.len(),
            checked.len(),
            failed.join(", "),
            r.total_secs
        )?;
    }
    Ok(())
}

/// Writes rows of cells (cells may span several lines) as an aligned table; the first row
/// is the header. (The same layout as the main benchmark's report.)
fn table(out: &mut impl Write, rows: &[[String; 6]]) -> std::io::Result<()> {
    let mut widths = [0usize; 6];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.lines().map(|l| l.chars().count()).max().unwrap_or(0));
        }
    }
    for (i, row) in rows.iter().enumerate() {
        let lines: Vec<Vec<&str>> = row.iter().map(|c| c.lines().collect()).collect();
        let height = lines.iter().map(Vec::len).max().unwrap_or(1).max(1);
        for k in 0..height {
            let mut text = String::new();
            for (j, cell) in lines.iter().enumerate() {
                let s = cell.get(k).copied().unwrap_or("");
                text.push_str(&format!("{s:<w$}  ", w = widths[j]));
            }
            writeln!(out, "{}", text.trim_end())?;
        }
        if i == 0 {
            let total: usize = widths.iter().map(|w| w + 2).sum();
            writeln!(out, "{}", "-".repeat(total.saturating_sub(2)))?;
        } else if i + 1 < rows.len() {
            writeln!(out)?;
        }
    }
    Ok(())
}
