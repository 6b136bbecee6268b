//! The figures of [`super::run`]'s participants: a row for each (then issue 17's
//! targets as ratios of this run's figures), and a compact table of the same, one line
//! per path.

use super::{
    ASYNC_FLOOR, BARE, CALLERS, DAEMON, FLOOR, GO, H2_FLOOR, LIBRARY, NO_GO, Participant, SIZES,
    SPINNING, TWO_HOP_FLOOR,
};
use crate::report::{Row, quantile, sorted};

fn shown(size: usize) -> &'static str {
    if size == 64 { "64 B" } else { "64 KiB" }
}

fn callers_shown(callers: usize) -> String {
    if callers == 1 {
        "1 caller".into()
    } else {
        format!("{callers} callers")
    }
}

/// p50 and p99 of each participant, per size.
type Quantiles = Vec<[(f64, f64); 2]>;

fn quantiles(all: &[Participant]) -> Quantiles {
    all.iter()
        .map(|p| {
            let q = |s: &Vec<f64>| {
                let s = sorted(s.clone());
                (quantile(&s, 0.5), quantile(&s, 0.99))
            };
            [q(&p.latency[0]), q(&p.latency[1])]
        })
        .collect()
}

/// The rows (every figure, then issue 17's targets), and a compact table of the same
/// figures, one line per path.
pub(super) fn report(all: &[Participant], have_go: bool, rows: &mut Vec<Row>) -> String {
    let q = quantiles(all);
    let find = |label: &str| all.iter().position(|p| p.label == label);
    let floor = find(FLOOR);
    for (s, size) in SIZES.into_iter().enumerate() {
        for (i, p) in all.iter().enumerate() {
            for (which, pick) in [("p50", 0), ("p99", 1)] {
                let value = |j: usize| if pick == 0 { q[j][s].0 } else { q[j][s].1 };
                let mut row = Row::new(
                    "peers",
                    format!("{} {which}, {}", shown(size), p.label),
                    value(i),
                    "µs",
                );
                if let Some(f) = floor.filter(|&f| f != i) {
                    row = row.baseline(value(f));
                }
                rows.push(row);
            }
        }
    }
    for (c, callers) in CALLERS.into_iter().enumerate() {
        for (i, p) in all.iter().enumerate() {
            let mut row = Row::new(
                "peers",
                format!("64 B, {}, {}", callers_shown(callers), p.label),
                p.load[c].rate(),
                "calls/s",
            );
            if let Some(f) = floor.filter(|&f| f != i) {
                row = row.baseline(all[f].load[c].rate());
            }
            rows.push(row);
        }
    }
    for (c, callers) in CALLERS.into_iter().enumerate() {
        for (i, p) in all.iter().enumerate() {
            let per_call = p.load[c].per_call();
            for (k, &(role, _)) in p.processes.iter().enumerate() {
                let Some(&(cpu, switches)) = per_call.get(k) else {
                    continue;
                };
                // The floor's process in the same role, where it has one.
                let base = floor.filter(|&f| f != i).and_then(|f| {
                    let at = all[f].processes.iter().position(|&(r, _)| r == role)?;
                    all[f].load[c].per_call().get(at).copied()
                });
                let figure = |what: &str| {
                    format!(
                        "{what} per call, {}, {}: {role}",
                        callers_shown(callers),
                        p.label
                    )
                };
                let mut cpu_row = Row::new("peers", figure("CPU"), cpu, "µs");
                let mut sw_row = Row::new("peers", figure("context switches"), switches, "");
                if let Some((base_cpu, base_sw)) = base {
                    cpu_row = cpu_row.baseline(base_cpu);
                    sw_row = sw_row.baseline(base_sw);
                }
                rows.push(cpu_row);
                rows.push(sw_row);
            }
        }
    }
    // Issue 17's targets, each as the ratio of two figures above.
    let (library, bare, daemon, go) = (find(LIBRARY), find(BARE), find(DAEMON), find(GO));
    for (s, size) in SIZES.into_iter().enumerate() {
        let size = shown(size);
        let mut target = |figure: String, value: f64, baseline: f64, words: &str, limit: f64| {
            rows.push(
                Row::new("peers", figure, value, "µs")
                    .baseline(baseline)
                    .target(words, value <= limit * baseline),
            );
        };
        if let (Some(b), Some(f)) = (library, floor) {
            let (v, base) = (q[b][s].0, q[f][s].0);
            target(
                format!("target: {size} p50, {LIBRARY} / {FLOOR}"),
                v,
                base,
                "≤ 1.5 × floor",
                1.5,
            );
        }
        if let (Some(b), Some(g)) = (library, go) {
            let (v, base) = (q[b][s].0, q[g][s].0);
            target(
                format!("target: {size} p50, {LIBRARY} / {GO}"),
                v,
                base,
                "≤ 0.6 × go-plugin",
                0.6,
            );
        }
        if let (Some(b), Some(a)) = (library, bare) {
            let (v, base) = (q[b][s].1, q[a][s].1);
            target(
                format!("target: {size} p99, {LIBRARY} / {BARE}"),
                v,
                base,
                "≤ 0.7 × (a)",
                0.7,
            );
        }
        if let (Some(c), Some(f)) = (daemon, floor) {
            let (v, base) = (q[c][s].0, q[f][s].0);
            target(
                format!("target: {size} p50, {DAEMON} / {FLOOR}"),
                v,
                base,
                "≤ 2.5 × floor",
                2.5,
            );
        }
        // The same two against the floors a transport on tokio, and one on h2, can
        // reach, and the daemon against the floor of any path of two hops: no target,
        // for reading the ones above.
        for other in [ASYNC_FLOOR, H2_FLOOR, TWO_HOP_FLOOR] {
            let Some(t) = find(other) else { continue };
            let paths = if other == TWO_HOP_FLOOR {
                [None, daemon]
            } else {
                [library, daemon]
            };
            for path in paths.into_iter().flatten() {
                rows.push(
                    Row::new(
                        "peers",
                        format!("{size} p50, {} / {other}", all[path].label),
                        q[path][s].0,
                        "µs",
                    )
                    .baseline(q[t][s].0),
                );
            }
        }
    }
    if let (Some(b), Some(g)) = (library, go) {
        let (v, base) = (all[b].load[1].rate(), all[g].load[1].rate());
        rows.push(
            Row::new(
                "peers",
                format!("target: 64 B, 16 callers, {LIBRARY} / {GO}"),
                v,
                "calls/s",
            )
            .baseline(base)
            .target("≥ 1.5 × go-plugin", v >= 1.5 * base),
        );
    }
    // What spinning buys, and what it costs, beside the same path without it.
    // (A daemon spinning at every hop was measured too, and left out: on two vCPUs its
    // three spinning processes took turns on the cores, 8× slower; docs/performance.md.)
    for (plain, spun) in [(LIBRARY, SPINNING)] {
        let (Some(b), Some(sp)) = (find(plain), find(spun)) else {
            continue;
        };
        for (s, size) in SIZES.into_iter().enumerate() {
            rows.push(
                Row::new(
                    "peers",
                    format!("spin: {} p50, {spun} / {plain}", shown(size)),
                    q[sp][s].0,
                    "µs",
                )
                .baseline(q[b][s].0),
            );
        }
        for (c, callers) in CALLERS.into_iter().enumerate() {
            let total = |p: &Participant| p.load[c].per_call().iter().map(|(us, _)| us).sum();
            rows.push(
                Row::new(
                    "peers",
                    format!(
                        "spin: CPU µs per call, every process, {}, {spun} / {plain}",
                        callers_shown(callers)
                    ),
                    total(&all[sp]),
                    "µs",
                )
                .baseline(total(&all[b])),
            );
        }
    }
    if !have_go {
        rows.push(Row::new(
            "peers",
            format!("{GO}: {NO_GO} (its rows and targets left out)"),
            0.0,
            "",
        ));
    }
    matrix(all, &q, have_go)
}

/// One line per path: the figures side by side, for reading (the rows hold the same).
fn matrix(all: &[Participant], q: &Quantiles, have_go: bool) -> String {
    let mut out = String::from(
        "| path | p50 64 B | p99 64 B | p50 64 KiB | p99 64 KiB | calls/s, 1 caller | calls/s, 16 callers | CPU µs per call, 1 caller | switches per call, 1 caller | CPU µs per call, 16 callers | switches per call, 16 callers |\n|---|---:|---:|---:|---:|---:|---:|---|---|---|---|\n",
    );
    let sides = |p: &Participant, c: usize, cpu: bool| {
        p.processes
            .iter()
            .zip(p.load[c].per_call())
            .map(|(&(role, _), (us, sw))| {
                if cpu {
                    format!("{role} {us:.1}")
                } else {
                    format!("{role} {sw:.2}")
                }
            })
            .collect::<Vec<_>>()
            .join(" · ")
    };
    for (i, p) in all.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {} | {} | {} | {} |\n",
            p.label,
            q[i][0].0,
            q[i][0].1,
            q[i][1].0,
            q[i][1].1,
            p.load[0].rate(),
            p.load[1].rate(),
            sides(p, 0, true),
            sides(p, 0, false),
            sides(p, 1, true),
            sides(p, 1, false),
        ));
    }
    if !have_go {
        out.push_str(&format!("| {GO} | {NO_GO} | | | | | | | | | |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Mode;
    use crate::peers::{Caller, Load};
    use crate::report::Verdict;

    /// A participant whose every call took `us` (64 B; twice that at 64 KiB), with
    /// `per_sec_16` calls/s at 16 callers and 10 µs of CPU and one switch per call.
    fn fake(label: &'static str, us: f64, per_sec_16: u64) -> Participant {
        let roles = vec![("client", 1), ("server", 2)];
        let load = |calls: u64| Load {
            calls,
            secs: 1.0,
            cpu: vec![Duration::from_micros(10 * calls); 2],
            switches: vec![calls; 2],
        };
        let mut p = Participant::new(label, roles, Caller::Driven(0));
        p.latency = [vec![us; 10], vec![2.0 * us; 10]];
        p.load = [load(1000), load(per_sec_16)];
        p
    }

    fn verdict(rows: &[Row], figure: &str) -> Option<Verdict> {
        rows.iter()
            .find(|r| r.figure == figure)
            .unwrap_or_else(|| panic!("no row {figure:?}"))
            .verdict(Mode::Full)
    }

    #[test]
    fn the_targets_are_ratios_of_figures_from_the_same_run() {
        let all = vec![
            fake(FLOOR, 10.0, 200_000),
            fake(BARE, 40.0, 40_000),
            fake(LIBRARY, 14.0, 61_000),
            fake(DAEMON, 30.0, 20_000),
            fake("(d) bare tonic relay", 30.0, 20_000),
            fake(GO, 20.0, 40_000),
            fake(TWO_HOP_FLOOR, 25.0, 100_000),
        ];
        let mut rows = Vec::new();
        let table = report(&all, true, &mut rows);
        // The daemon read against the floor of two hops, and the library not.
        let two_hops = rows
            .iter()
            .find(|r| r.figure == format!("64 B p50, {DAEMON} / {TWO_HOP_FLOOR}"))
            .expect("the daemon against the floor of two hops");
        assert_eq!((two_hops.value, two_hops.baseline), (30.0, Some(25.0)));
        assert!(
            !rows
                .iter()
                .any(|r| r.figure == format!("64 B p50, {LIBRARY} / {TWO_HOP_FLOOR}"))
        );
        let met = Some(Verdict::Met);
        let missed = Some(Verdict::Missed);
        // 14 ≤ 1.5 × 10; 14 > 0.6 × 20; 14 ≤ 0.7 × 40; 30 > 2.5 × 10; 61 000 ≥ 1.5 × 40 000.
        let figure = |f: &str| format!("target: 64 B {f}");
        assert_eq!(
            verdict(&rows, &figure("p50, (b) library / floor (raw UDS)")),
            met
        );
        assert_eq!(
            verdict(&rows, &figure("p50, (b) library / go-plugin")),
            missed
        );
        assert_eq!(
            verdict(&rows, &figure("p99, (b) library / (a) bare tonic")),
            met
        );
        assert_eq!(
            verdict(&rows, &figure("p50, (c) daemon / floor (raw UDS)")),
            missed
        );
        assert_eq!(
            verdict(&rows, "target: 64 B, 16 callers, (b) library / go-plugin"),
            met
        );
        let cpu = rows
            .iter()
            .find(|r| r.figure == "CPU per call, 1 caller, go-plugin: server")
            .expect("a CPU row");
        assert!((cpu.value - 10.0).abs() < 1e-9, "{}", cpu.value);
        assert_eq!(table.lines().count(), 2 + all.len(), "{table}");
    }

    #[test]
    fn without_go_its_rows_say_so_and_the_rest_stand() {
        let all = vec![fake(FLOOR, 10.0, 200_000), fake(LIBRARY, 14.0, 61_000)];
        let mut rows = Vec::new();
        let table = report(&all, false, &mut rows);
        assert!(rows.iter().any(|r| r.figure.contains(NO_GO)));
        assert!(!rows.iter().any(|r| r.figure.contains("/ go-plugin")));
        assert!(table.contains(&format!("| {GO} | {NO_GO} |")), "{table}");
        assert_eq!(
            verdict(&rows, "target: 64 B p50, (b) library / floor (raw UDS)"),
            Some(Verdict::Met)
        );
    }
}
