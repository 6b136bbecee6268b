//! Calls at the floor (issue 17): the same echo call made every way the benchmark knows,
//! side by side in one run. Besides the four paths of the latency scenario (bare tonic,
//! the library, the daemon, the bare relay) it drives two processes of its own over
//! their stdin and stdout (see [`crate::procs::Driver`]), which time their own calls:
//!
//! - **floor**: `bench-floor`, two processes ping-ponging length-prefixed messages over
//!   Unix socketpairs with blocking reads and writes, one socketpair and one thread per
//!   caller on each side: what a round trip between two processes costs on this machine
//!   with no protocol at all.
//! - **go-plugin**: `bench/go-plugin-peer`, a host and an echo plugin written against
//!   HashiCorp go-plugin in gRPC mode (built here with `go build`; left out, with a line
//!   and a row saying so, when `go` is not installed).
//!
//! All of them are interleaved in rounds (one round of each in turn), so load from
//! elsewhere on the machine falls on all alike: p50/p99 of sequential calls at 64 B and
//! 64 KiB, calls per second with 1 and 16 callers (64 B), and, over the throughput
//! windows, CPU time (utime + stime from `/proc/<pid>/stat`) and context switches
//! (voluntary + involuntary over `/proc/<pid>/task/*/status`) of every process a call
//! passes, per call. For the Rust paths the caller is the benchmark's own process (for
//! (b), with the host library in it). Issue 17's targets close the rows, as ratios of
//! figures from this run.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;

use crate::calls::{self, Path, Paths};
use crate::procs::{self, Driver};
use crate::report::{Row, quantile, sorted};
use crate::{Bins, Error, Mode};

const SIZES: [usize; 2] = [64, 64 << 10];
const CALLERS: [usize; 2] = [1, 16];
const RATE_PAYLOAD: usize = 64;

const FLOOR: &str = "floor (raw UDS)";
const BARE: &str = "(a) bare tonic";
const LIBRARY: &str = "(b) library";
const DAEMON: &str = "(c) daemon";
const GO: &str = "go-plugin";
/// The library again, with both sides polling for a while before they sleep.
const SPINNING: &str = "(b) library, spin_us = 200";

const SPIN_US: u64 = 200;
const NO_GO: &str = "skipped: no Go toolchain";

enum Caller {
    Rust(Path),
    /// An index into the drivers.
    Driven(usize),
}

/// One way of calling, with what it measured.
struct Participant {
    label: &'static str,
    caller: Caller,
    /// (role, pid) of every process a call passes, the caller first.
    processes: Vec<(&'static str, u32)>,
    /// Per size: every call's µs.
    latency: [Vec<f64>; 2],
    /// Per number of callers: calls, seconds, and per process CPU time and switches.
    load: [Load; 2],
}

#[derive(Default, Clone)]
struct Load {
    calls: u64,
    secs: f64,
    cpu: Vec<Duration>,
    switches: Vec<u64>,
}

impl Load {
    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.calls as f64 / self.secs
        } else {
            f64::NAN
        }
    }
    fn per_call(&self) -> Vec<(f64, f64)> {
        let calls = self.calls.max(1) as f64;
        self.cpu
            .iter()
            .zip(&self.switches)
            .map(|(cpu, sw)| (cpu.as_secs_f64() * 1e6 / calls, *sw as f64 / calls))
            .collect()
    }
}

/// CPU time and context switches of each process, now.
fn usage(processes: &[(&'static str, u32)]) -> Result<Vec<(Duration, u64)>, Error> {
    processes
        .iter()
        .map(|&(_, pid)| Ok((procs::cpu_time(pid)?, procs::context_switches(pid)?)))
        .collect()
}

/// Builds the go-plugin peer with `go build` into `target/go`, or says why not.
fn go_peer() -> Result<Option<PathBuf>, Error> {
    let found = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("baton-bench: peers: go-plugin rows {NO_GO} (`go version` does not run here)");
        return Ok(None);
    }
    let root = crate::sdk::repo_root();
    let out = root.join("target/go/go-plugin-peer");
    let out_arg = out.to_str().ok_or("the repository's path is not UTF-8")?;
    crate::sdk::build_step(
        &root.join("bench/go-plugin-peer"),
        "go",
        &["build", "-buildvcs=false", "-o", out_arg, "."],
    )?;
    Ok(Some(out))
}

/// A host library of its own running `echo` with `spin_us` set: the plugin and the host
/// both poll for a while before they sleep.
async fn spinning_host(bins: &Bins) -> Result<baton_host::Host, Error> {
    let mut config = baton_host::Config::empty();
    let mut plugin = baton_host::PluginConfig::new(bins.get("echo")?);
    plugin.reload = Some(baton_host::ReloadMode::Manual);
    plugin.spin_us = SPIN_US;
    config.plugins.insert("echo".into(), plugin);
    let host = baton_host::Host::start(&config).await?;
    host.plugin("echo")
        .ok_or("the spinning host has no echo")?
        .ready(Duration::from_secs(10))
        .await?;
    Ok(host)
}

/// The 1-minute load average, which counts the benchmark's own processes.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// How this machine's idle CPUs wait, when it is a KVM guest with the haltpoll idle
/// driver: with `guest_halt_poll_ns` at 0 an idle vCPU halts at once and each wake-up
/// across vCPUs costs tens of µs, which moves every figure here (see
/// docs/operations.md, "Latency on virtual machines").
fn idle_polling() -> Option<String> {
    let ns = std::fs::read_to_string("/sys/module/haltpoll/parameters/guest_halt_poll_ns").ok()?;
    let governor = std::fs::read_to_string("/sys/devices/system/cpu/cpuidle/current_governor")
        .unwrap_or_default();
    Some(format!(
        "cpuidle governor {}, guest_halt_poll_ns {}",
        governor.trim(),
        ns.trim()
    ))
}

pub async fn run(bins: &Bins, mode: Mode, rows: &mut Vec<Row>) -> Result<String, Error> {
    let go = go_peer()?;
    if let Some(polling) = idle_polling() {
        eprintln!("baton-bench: peers: idle vCPUs: {polling}");
    }
    // Other work on the machine changes these figures more than any other scenario's:
    // a busy vCPU wakes at once, an idle one halts (see docs/performance.md).
    eprintln!(
        "baton-bench: peers: 1-minute load average at the start: {}",
        load()
    );
    let floor = bins.get("bench-floor")?;
    let paths = Paths::start(bins).await?;
    let spinning = spinning_host(bins).await?;
    let mut all = Vec::new();
    let mut drivers = Vec::new();
    let measured = async {
        let floor = Driver::start(&floor, Duration::from_secs(10)).await?;
        all.push(Participant::new(
            FLOOR,
            vec![("client", floor.client), ("server", floor.server)],
            Caller::Driven(drivers.len()),
        ));
        drivers.push(floor);
        let me = std::process::id();
        for (i, path) in paths.paths.iter().enumerate() {
            let mut processes = vec![("client", me)];
            processes.extend(paths.processes(i)?);
            all.push(Participant::new(
                path.label(),
                processes,
                Caller::Rust(path.clone()),
            ));
        }
        let handle = spinning
            .plugin("echo")
            .ok_or("the spinning host has no echo")?;
        let pid = handle.status().pid.ok_or("the spinning echo has no pid")?;
        let mut path = Path::Library(handle);
        for _ in 0..200 {
            path.call("echo", Bytes::from_static(b"warm")).await?;
        }
        all.push(Participant::new(
            SPINNING,
            vec![("client", me), ("server", pid)],
            Caller::Rust(path),
        ));
        if let Some(go) = &go {
            let peer = Driver::start(go, Duration::from_secs(30)).await?;
            all.push(Participant::new(
                GO,
                vec![("client", peer.client), ("server", peer.server)],
                Caller::Driven(drivers.len()),
            ));
            drivers.push(peer);
        }
        measure(&mut all, &mut drivers, mode).await
    }
    .await;
    for driver in drivers {
        driver.stop(Duration::from_secs(5)).await;
    }
    paths.stop().await;
    spinning.shutdown().await;
    measured?;
    eprintln!(
        "baton-bench: peers: 1-minute load average at the end: {}",
        load()
    );
    Ok(report(&all, go.is_some(), rows))
}

impl Participant {
    fn new(label: &'static str, processes: Vec<(&'static str, u32)>, caller: Caller) -> Self {
        Self {
            label,
            caller,
            processes,
            latency: [Vec::new(), Vec::new()],
            load: [Load::default(), Load::default()],
        }
    }
}

async fn measure(all: &mut [Participant], drivers: &mut [Driver], mode: Mode) -> Result<(), Error> {
    for (s, size) in SIZES.into_iter().enumerate() {
        let payload = Bytes::from(vec![0x5au8; size]);
        let (rounds, per_round) = match (mode, size) {
            (Mode::Quick, _) => (2, 50),
            (Mode::Full, 64) => (100, 200),
            (Mode::Full, _) => (100, 50),
        };
        for _ in 0..rounds {
            for p in all.iter_mut() {
                let times = match &mut p.caller {
                    Caller::Rust(path) => calls::round(path, &payload, per_round).await?,
                    Caller::Driven(d) => drivers[*d].latency(size, per_round).await?,
                };
                p.latency[s].extend(times);
            }
        }
    }
    let (rounds, window) = match mode {
        Mode::Quick => (1, Duration::from_millis(200)),
        Mode::Full => (3, Duration::from_secs(2)),
    };
    for (c, callers) in CALLERS.into_iter().enumerate() {
        for _ in 0..rounds {
            for p in all.iter_mut() {
                let before = usage(&p.processes)?;
                let (calls, secs) = match &mut p.caller {
                    Caller::Rust(path) => calls::rate_counted(path, callers, window).await?,
                    Caller::Driven(d) => drivers[*d].rate(callers, RATE_PAYLOAD, window).await?,
                };
                let after = usage(&p.processes)?;
                let load = &mut p.load[c];
                load.calls += calls;
                load.secs += secs;
                load.cpu.resize(before.len(), Duration::ZERO);
                load.switches.resize(before.len(), 0);
                for (i, ((cpu0, sw0), (cpu1, sw1))) in before.into_iter().zip(after).enumerate() {
                    load.cpu[i] += cpu1.saturating_sub(cpu0);
                    load.switches[i] += sw1.saturating_sub(sw0);
                }
            }
        }
    }
    Ok(())
}

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
fn report(all: &[Participant], have_go: bool, rows: &mut Vec<Row>) -> String {
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
    use super::*;
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
        ];
        let mut rows = Vec::new();
        let table = report(&all, true, &mut rows);
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
