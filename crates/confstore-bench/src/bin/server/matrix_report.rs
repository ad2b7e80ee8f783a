//! The matrix as a table: one line per cell and load, confstore's figures beside etcd's for
//! the same service size and store, from the same run.

use std::io::Write;

use crate::matrix::{Cell, Figures, Load, MatrixReport, Peer};
use confstore_bench::timing::int;

fn load_name(load: Load, writers: usize, etcd: bool) -> String {
    match load {
        Load::Harness1 => "harness, 1 conn".into(),
        Load::HarnessN => format!("harness, {writers} conns"),
        Load::Wrk1 => "wrk -c1 -t1".into(),
        Load::Wrk16 => "wrk -c16 -t2".into(),
        Load::Applied if etcd => "put -> watch event".into(),
        Load::Applied => "PUT -> client applied".into(),
    }
}

fn ms(x: f64) -> String {
    if x.is_nan() {
        return "stalled".into();
    }
    if x < 10.0 { format!("{x:.2}") } else { format!("{x:.1}") }
}

fn us(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{x:.0}"))
}

/// rate, p50, p99, server CPU/write (and the subscriber's for confstore).
fn cells(f: Option<&Figures>, subscriber: bool) -> Vec<String> {
    let n = if subscriber { 5 } else { 4 };
    let Some(f) = f else { return vec!["-".into(); n] };
    let mut v = vec![f.rate.map_or_else(|| "-".into(), int), ms(f.p50_ms), ms(f.p99_ms), us(f.server_cpu_us_per_write)];
    if subscriber {
        v.push(us(f.subscriber_cpu_us_per_write));
    }
    v
}

/// Writes the matrix table.
pub fn write(m: &MatrixReport, out: &mut impl Write) -> std::io::Result<()> {
    let s = &m.selection;
    writeln!(
        out,
        "matrix (issue 15): PUTs of {}-byte values into service `bench` of N keys (keys overwritten, so",
        s.value_bytes
    )?;
    writeln!(
        out,
        "it keeps N); stream on = `confstore serve` with its embedded broker and publisher + one subscribed"
    )?;
    writeln!(
        out,
        "confstore-client in this process; off = `serve --no-mqtt`. etcd: the same keys under bench/, same run."
    )?;
    writeln!(
        out,
        "harness: {} timed writes x {} run(s) after {} untimed; wrk: {} s per row; latency: {} writes, one at a time",
        s.writes, s.runs, s.warmup, s.wrk_secs, s.latency_writes
    )?;
    writeln!(out, "wrk: {}; etcd: {}", m.wrk, m.etcd)?;
    if !m.wrk_ran {
        writeln!(out, "WRK ROWS SKIPPED: {}", m.wrk)?;
    }
    writeln!(out, "CPU columns: microseconds of CPU per write (server: its process from /proc, the embedded broker")?;
    writeln!(out, "included; client: the subscribed client's threads). Latencies in ms, rates in writes/s.")?;
    writeln!(out)?;
    let mut rows: Vec<Vec<String>> = vec![
        [
            "stream",
            "keys",
            "store",
            "load",
            "rate",
            "p50",
            "p99",
            "srv CPU",
            "client CPU",
            "| etcd rate",
            "p50",
            "p99",
            "srv CPU",
            "rate vs etcd",
        ]
        .iter()
        .map(|x| (*x).to_owned())
        .collect(),
    ];
    let confstore: Vec<&Cell> = m.cells.iter().filter(|c| c.peer != Peer::Etcd).collect();
    for c in &confstore {
        let etcd =
            m.cells.iter().find(|e| e.peer == Peer::Etcd && e.service_keys == c.service_keys && e.store == c.store);
        for (i, f) in c.figures.iter().enumerate() {
            let theirs = etcd.and_then(|e| e.get(f.load));
            let mut row = if i == 0 {
                vec![
                    if c.peer == Peer::StreamOn { "on" } else { "off" }.to_owned(),
                    int(c.service_keys as f64),
                    c.store.clone(),
                ]
            } else {
                vec![String::new(); 3]
            };
            let label = match (f.load, theirs.is_some()) {
                (Load::Applied, true) => "PUT -> applied | put -> watch".to_owned(),
                (load, _) => load_name(load, s.writers, false),
            };
            row.push(label);
            row.extend(cells(Some(f), true));
            let mut e = cells(theirs, false);
            e[0] = format!("| {}", e[0]);
            row.extend(e);
            let ratio = match (f.rate, theirs.and_then(|t| t.rate)) {
                (Some(a), Some(b)) => format!("{:.2}x", a / b),
                _ => match theirs {
                    Some(t) if f.p50_ms.is_finite() => format!("{:.2}x p50", f.p50_ms / t.p50_ms),
                    _ => "-".into(),
                },
            };
            row.push(ratio);
            rows.push(row);
        }
    }
    // etcd cells of a size or store no confstore cell has (only etcd asked for): none today,
    // but the chart uses them, so list them when alone.
    if confstore.is_empty() {
        for e in m.cells.iter().filter(|c| c.peer == Peer::Etcd) {
            for f in &e.figures {
                let mut row = vec!["etcd".into(), int(e.service_keys as f64), e.store.clone()];
                row.push(load_name(f.load, s.writers, true));
                row.extend(cells(Some(f), false));
                rows.push(row);
            }
        }
    }
    grid(out, &rows)?;
    for c in &m.cells {
        for f in c.figures.iter().filter(|f| f.note.is_some()) {
            let stream = match c.peer {
                Peer::StreamOn => "stream on",
                Peer::StreamOff => "stream off",
                Peer::Etcd => "etcd",
            };
            let load = load_name(f.load, s.writers, c.peer == Peer::Etcd);
            let note = f.note.as_deref().unwrap_or_default();
            writeln!(out, "NOTE {stream}, {} keys, store {}, {load}: {note}", c.service_keys, c.store)?;
        }
    }
    Ok(())
}

/// Left-aligned columns separated by two spaces; a rule under the header.
fn grid(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for (i, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (j, cell) in row.iter().enumerate() {
            line.push_str(&format!("{cell:<w$}  ", w = widths[j]));
        }
        writeln!(out, "{}", line.trim_end())?;
        if i == 0 {
            writeln!(out, "{}", "-".repeat(widths.iter().map(|w| w + 2).sum::<usize>().saturating_sub(2)))?;
        }
    }
    Ok(())
}
