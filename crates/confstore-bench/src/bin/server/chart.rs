//! The chart of `--chart PATH` (cargo feature `chart`): server CPU per write against the
//! written service's size, for confstore with the stream on, with it off, and etcd, from
//! the sequential harness load (1 connection) and the 16-connection one, as a PNG drawn with
//! plotters' bitmap backend. Text needs a TrueType font: DejaVu Sans (Debian's
//! fonts-dejavu-core), or the file in `SERVER_BENCH_FONT`.

use std::path::Path;

use anyhow::{Context, Result, anyhow, ensure};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::matrix::{Load, MatrixReport, Peer};

/// Where Debian's fonts-dejavu-core puts DejaVu Sans.
const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One line of the chart: (service keys, CPU µs per write), in increasing keys.
pub type Series = Vec<(f64, f64)>;

/// The series of `peer` under `load` for `store`.
pub fn series(m: &MatrixReport, peer: Peer, load: Load, store: &str) -> Series {
    let mut s: Series = m
        .cells
        .iter()
        .filter(|c| c.peer == peer && c.store == store)
        .filter_map(|c| Some((c.service_keys as f64, c.get(load)?.server_cpu_us_per_write?)))
        .collect();
    s.sort_by(|a, b| a.0.total_cmp(&b.0));
    s
}

fn register(font: &Path) -> Result<()> {
    let bytes = std::fs::read(font).with_context(|| {
        format!(
            "reading the chart's font {} (apt-get install fonts-dejavu-core, or set SERVER_BENCH_FONT)",
            font.display()
        )
    })?;
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a usable font", font.display()))
}

/// Draws the chart of `m` (cells of `store`) to `path`.
pub fn draw(m: &MatrixReport, store: &str, path: &Path) -> Result<()> {
    let font = std::env::var_os("SERVER_BENCH_FONT").map_or_else(|| DEFAULT_FONT.into(), std::path::PathBuf::from);
    register(&font)?;
    let lines = [
        (Peer::StreamOn, "confstore, stream on", RGBColor(200, 40, 40)),
        (Peer::StreamOff, "confstore, stream off", RGBColor(40, 90, 200)),
        (Peer::Etcd, "etcd 3.4", RGBColor(60, 140, 60)),
    ];
    let loads = [(Load::Harness1, "1 conn", false), (Load::HarnessN, "16 conns", true)];
    let mut all = Vec::new();
    for (peer, name, color) in lines {
        for (load, what, dashed) in loads {
            let s = series(m, peer, load, store);
            if !s.is_empty() {
                all.push((format!("{name}, {what}"), color, dashed, s));
            }
        }
    }
    ensure!(!all.is_empty(), "nothing to chart: no harness figures for the store {store}");
    let x_max = all.iter().flat_map(|(_, _, _, s)| s.iter().map(|p| p.0)).fold(1.0, f64::max);
    let y_max = all.iter().flat_map(|(_, _, _, s)| s.iter().map(|p| p.1)).fold(1.0, f64::max);

    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Server CPU per write vs service size (store: {store})"), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((10.0..x_max * 1.6).log_scale(), 0.0..y_max * 1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("keys in the written service (log scale)")
        .y_desc("server CPU per write (µs)")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    for (label, color, dashed, s) in all {
        let style = if dashed { color.stroke_width(1) } else { color.stroke_width(3) };
        let drawn = if dashed {
            chart.draw_series(DashedLineSeries::new(s.iter().copied(), 6, 4, style)).map_err(err)?
        } else {
            chart.draw_series(LineSeries::new(s.iter().copied(), style)).map_err(err)?
        };
        drawn.label(label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart.draw_series(s.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
