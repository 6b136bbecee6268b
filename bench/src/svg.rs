//! The plot of per-call latency across a run of reloads, as hand-written SVG: the whole
//! run (per-pixel median and maximum) above, one reload up close (every call) below,
//! hold windows shaded in both.

use std::fmt::Write;

/// One call made during the run.
pub struct Call {
    /// When it started, from the start of the run.
    pub at_us: u64,
    pub latency_us: u64,
    pub ok: bool,
}

/// One hold window: it ended about when the bench saw `handover_done`.
pub struct Hold {
    pub end_us: u64,
    pub hold_us: u64,
}

/// Everything the plot shows.
pub struct Trace {
    pub state: String,
    pub calls: Vec<Call>,
    pub holds: Vec<Hold>,
}

const W: f64 = 960.0;
const PANEL_H: f64 = 250.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;

/// Log-scale y for latencies from 10 µs to 1 s.
fn y_of(latency_us: f64, top: f64) -> f64 {
    let (lo, hi) = (1.0f64, 6.0f64); // log10 of 10 µs .. 1 s
    let v = latency_us.max(10.0).log10().clamp(lo, hi);
    top + PANEL_H - (v - lo) / (hi - lo) * PANEL_H
}

fn axes(out: &mut String, top: f64, x0_us: f64, x1_us: f64, x_unit: (&str, f64), title: &str) {
    let plot_w = W - LEFT - RIGHT;
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="{:.1}" font-size="14" font-weight="bold">{title}</text>"##,
        top - 8.0
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#888"/>"##
    );
    for (label, us) in [
        ("10 µs", 10.0),
        ("100 µs", 100.0),
        ("1 ms", 1e3),
        ("10 ms", 1e4),
        ("100 ms", 1e5),
        ("1 s", 1e6),
    ] {
        let y = y_of(us, top);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{label}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let (unit, per) = x_unit;
    let span = (x1_us - x0_us) / per;
    let step = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        .into_iter()
        .find(|s| span / s <= 10.0)
        .unwrap_or(100.0);
    let first = (x0_us / per / step).ceil() as i64;
    let last = (x1_us / per / step).floor() as i64;
    for k in first..=last.min(first + 20) {
        let v = k as f64 * step;
        let x = LEFT + (v * per - x0_us) / (x1_us - x0_us) * plot_w;
        let _ = writeln!(
            out,
            r##"<text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{v} {unit}</text>"##,
            top + PANEL_H + 14.0
        );
    }
}

/// The SVG text. `zoom` picks the reload shown up close (the one with the longest hold).
pub fn render(trace: &Trace) -> String {
    let mut out = String::new();
    let height = 2.0 * PANEL_H + 130.0;
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif">"##
    );
    let _ = writeln!(out, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let plot_w = W - LEFT - RIGHT;
    let end_us = trace.calls.last().map_or(1, |c| c.at_us).max(1) as f64;

    // The whole run: per pixel column, the median and the slowest call.
    let top = 30.0;
    axes(
        &mut out,
        top,
        0.0,
        end_us,
        ("s", 1e6),
        &format!(
            "Per-call latency across {} reloads ({} state, 4 callers); red bands: hold windows",
            trace.holds.len(),
            trace.state
        ),
    );
    for h in &trace.holds {
        let x = LEFT + (h.end_us.saturating_sub(h.hold_us)) as f64 / end_us * plot_w;
        let w = (h.hold_us as f64 / end_us * plot_w).max(1.0);
        let _ = writeln!(
            out,
            r##"<rect x="{x:.1}" y="{top}" width="{w:.1}" height="{PANEL_H}" fill="#f33" fill-opacity="0.35"/>"##
        );
    }
    let columns = plot_w as usize;
    let mut bins: Vec<Vec<u64>> = vec![Vec::new(); columns];
    for c in &trace.calls {
        let i = ((c.at_us as f64 / end_us) * (columns - 1) as f64) as usize;
        bins[i.min(columns - 1)].push(c.latency_us);
    }
    let (mut max_path, mut med_path) = (String::new(), String::new());
    for (i, bin) in bins.iter_mut().enumerate() {
        if bin.is_empty() {
            continue;
        }
        bin.sort_unstable();
        let x = LEFT + i as f64;
        let cmd = if max_path.is_empty() { 'M' } else { 'L' };
        let _ = write!(
            max_path,
            "{cmd}{x:.0},{:.1} ",
            y_of(bin[bin.len() - 1] as f64, top)
        );
        let _ = write!(
            med_path,
            "{cmd}{x:.0},{:.1} ",
            y_of(bin[bin.len() / 2] as f64, top)
        );
    }
    let _ = writeln!(
        out,
        r##"<path d="{max_path}" fill="none" stroke="#c60" stroke-width="1"/>"##
    );
    let _ = writeln!(
        out,
        r##"<path d="{med_path}" fill="none" stroke="#06c" stroke-width="1.5"/>"##
    );
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#06c">median per pixel</text><text x="{:.1}" y="{:.1}" font-size="11" fill="#c60">slowest per pixel</text>"##,
        W - RIGHT - 230.0,
        top + 14.0,
        W - RIGHT - 120.0,
        top + 14.0
    );

    // One reload up close: every call, 25 ms either side of the longest hold.
    let top2 = top + PANEL_H + 60.0;
    if let Some(h) = trace.holds.iter().max_by_key(|h| h.hold_us) {
        let start = h.end_us.saturating_sub(h.hold_us) as f64;
        let (x0, x1) = ((start - 25_000.0).max(0.0), h.end_us as f64 + 25_000.0);
        axes(
            &mut out,
            top2,
            x0,
            x1,
            ("ms", 1e3),
            &format!(
                "Up close: the longest hold window ({:.2} ms); each dot is one call, by start time",
                h.hold_us as f64 / 1e3
            ),
        );
        let x = LEFT + (start - x0) / (x1 - x0) * plot_w;
        let w = (h.hold_us as f64 / (x1 - x0) * plot_w).max(1.0);
        let _ = writeln!(
            out,
            r##"<rect x="{x:.1}" y="{top2}" width="{w:.1}" height="{PANEL_H}" fill="#f33" fill-opacity="0.35"/>"##
        );
        for c in trace
            .calls
            .iter()
            .filter(|c| (c.at_us as f64) >= x0 && (c.at_us as f64) <= x1)
        {
            let x = LEFT + (c.at_us as f64 - x0) / (x1 - x0) * plot_w;
            let color = if c.ok { "#06c" } else { "#000" };
            let _ = writeln!(
                out,
                r##"<circle cx="{x:.1}" cy="{:.1}" r="1.6" fill="{color}"/>"##,
                y_of(c.latency_us as f64, top2)
            );
        }
    }
    let _ = writeln!(out, "</svg>");
    out
}
