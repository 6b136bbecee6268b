//! Calls at the floor (issue 17): the same echo call made every way the benchmark knows,
//! side by side in one run. Besides the four paths of the latency scenario (bare tonic,
//! the library, the daemon, the bare relay) it drives processes of its own over
//! their stdin and stdout (see [`crate::procs::Driver`]), which time their own calls:
//!
//! - **floor**: `bench-floor`, two processes ping-ponging length-prefixed messages over
//!   Unix socketpairs with blocking reads and writes, one socketpair and one thread per
//!   caller on each side: what a round trip between two processes costs on this machine
//!   with no protocol at all.
//! - **floor on tokio**: `bench-floor async`, the same with each socket driven by a
//!   tokio current-thread runtime on both sides (epoll and non-blocking I/O): the floor
//!   of any transport on tokio, this one included.
//! - **floor of gRPC on h2**: `bench-floor h2`, each round trip a gRPC unary call in
//!   standard HTTP/2 bytes, made and served by the `h2` crate on blocking sockets with no
//!   runtime on either side (the kernel floor's system calls, and h2's work): the least a
//!   transport on h2 can cost, and so what HTTP/2 itself adds to the kernel's floor.
//! - **floor of two hops**: `bench-floor relay`, the kernel floor with a third process
//!   passing each message on and back, as the daemon does between its caller and a
//!   plugin: the least any path through a daemon can cost here.
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
use crate::report::Row;
use crate::{Bins, Error, Mode};

mod report;

use report::report;

const SIZES: [usize; 2] = [64, 64 << 10];
const CALLERS: [usize; 2] = [1, 16];
const RATE_PAYLOAD: usize = 64;

const FLOOR: &str = "floor (raw UDS)";
/// The same ping-pong on tokio: what the runtime adds to the kernel's round trip.
const ASYNC_FLOOR: &str = "floor on tokio (async UDS)";
/// gRPC's bytes with h2 and no runtime: what HTTP/2 adds to the kernel's round trip.
const H2_FLOOR: &str = "floor of gRPC on h2 (blocking)";
/// Two hops through a relay process, blocking, no protocol: the floor of the daemon's
/// path, whatever runs in it.
const TWO_HOP_FLOOR: &str = "floor of two hops (raw UDS relay)";
const BARE: &str = "(a) bare tonic";
const LIBRARY: &str = "(b) library";
const DAEMON: &str = "(c) daemon";
const GO: &str = "go-plugin";
/// The same peer with Go on one thread, as the Go SDK serves by default: for
/// information (the targets are judged against go-plugin as it ships).
const GO_ONE_THREAD: &str = "go-plugin, GOMAXPROCS=1";
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
    let floor_bin = bins.get("bench-floor")?;
    let paths = Paths::start(bins).await?;
    let spinning = spinning_host(bins).await?;
    let mut all = Vec::new();
    let mut drivers = Vec::new();
    let measured = async {
        let floor = Driver::start(&floor_bin, Duration::from_secs(10)).await?;
        all.push(Participant::new(
            FLOOR,
            vec![("client", floor.client), ("server", floor.server)],
            Caller::Driven(drivers.len()),
        ));
        drivers.push(floor);
        for (label, mode) in [
            (ASYNC_FLOOR, "async"),
            (H2_FLOOR, "h2"),
            (TWO_HOP_FLOOR, "relay"),
        ] {
            let floor =
                Driver::start_with(&floor_bin, Duration::from_secs(10), &[mode], &[]).await?;
            let mut processes = vec![("client", floor.client)];
            processes.extend(floor.relay.map(|pid| ("relay", pid)));
            processes.push(("server", floor.server));
            all.push(Participant::new(
                label,
                processes,
                Caller::Driven(drivers.len()),
            ));
            drivers.push(floor);
        }
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
            for (label, env) in [(GO, &[][..]), (GO_ONE_THREAD, &[("GOMAXPROCS", "1")][..])] {
                let peer = Driver::start_with(go, Duration::from_secs(30), &[], env).await?;
                all.push(Participant::new(
                    label,
                    vec![("client", peer.client), ("server", peer.server)],
                    Caller::Driven(drivers.len()),
                ));
                drivers.push(peer);
            }
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
