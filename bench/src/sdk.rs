//! One plugin, four SDKs: `Invoke` latency through the host library
//! (`PluginHandle::invoke`) to the same counter written in Rust, Python, Go and
//! TypeScript (`example-plugins/{counter,python-counter,go-counter,ts-counter}`, one
//! state format), each beside the Rust counter measured in the same rounds. The
//! difference is the SDK and its gRPC runtime: the host, the socket and the call are
//! the same. A counter whose language is not installed here is left out, with a line
//! saying so. The Python counter runs twice, the second time kept on one CPU (`cpus`),
//! with a row comparing the two.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::report::{Row, quantile, sorted};
use crate::{Bins, Error, Mode};

/// The same 64-byte payload as the latency scenario's: here, a counter's name.
const PAYLOAD: [u8; 64] = [b'k'; 64];

/// One counter: its label in the table, its plugin's name, and how the host starts it.
struct Counter {
    label: String,
    name: &'static str,
    config: baton_host::PluginConfig,
}

impl Counter {
    fn new(language: &'static str, name: &'static str, config: baton_host::PluginConfig) -> Self {
        Self {
            label: format!("{language} counter"),
            name,
            config,
        }
    }
}

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a build step in `dir`, with its output in the error if it fails.
pub(crate) fn build_step(dir: &Path, program: &str, args: &[&str]) -> Result<(), Error> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run {program} in {}: {e}", dir.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` in {} failed:\n{}{}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// Whether `tool version_arg` runs; if not, says which counter is left out.
fn have(tool: &str, version_arg: &str, counter: &str) -> bool {
    let found = Command::new(tool)
        .arg(version_arg)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("baton-bench: sdk: skipped the {counter} (`{tool}` is not installed here)");
    }
    found
}

fn script_plugin(command: impl Into<PathBuf>, script: &Path) -> baton_host::PluginConfig {
    let mut config = baton_host::PluginConfig::new(command);
    config.args = vec![script.display().to_string()];
    // The interpreter is not the plugin's code: nothing to pin or copy.
    config.copy_binary = false;
    config
}

/// The highest CPU this process may run on (and so may hand to a plugin).
fn last_usable_cpu() -> Option<usize> {
    let mine = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    (0..baton_host::config::CPU_LIMIT)
        .rev()
        .find(|&c| mine.is_set(c).unwrap_or(false))
}

/// The counters this machine can run, built where they need building.
fn counters(bins: &Bins) -> Result<Vec<Counter>, Error> {
    let root = repo_root();
    let mut found = vec![Counter::new(
        "Rust",
        "rust",
        baton_host::PluginConfig::new(bins.get("counter")?),
    )];

    let python = root.join(".venv/bin/python");
    if python.is_file() {
        let config = script_plugin(
            python,
            &root.join("example-plugins/python-counter/counter.py"),
        );
        found.push(Counter::new("Python", "python", config.clone()));
        // The same plugin kept on one CPU (`cpus`): grpcio hands each call between its
        // poller thread and a pool thread, and on one CPU those hand-offs never wake a
        // halted vCPU (docs/operations.md).
        if let Some(cpu) = last_usable_cpu() {
            let mut pinned = config;
            pinned.cpus = baton_host::config::CpuList::new([cpu]);
            found.push(Counter {
                label: format!("Python counter, cpus = [{cpu}]"),
                name: "python-one-cpu",
                config: pinned,
            });
        }
    } else {
        eprintln!(
            "baton-bench: sdk: skipped the Python counter ({} is missing: run bash plugin-sdk/python/setup-python.sh)",
            python.display()
        );
    }

    if have("go", "version", "Go counter") {
        let out = root.join("target/go/go-counter");
        let out_arg = out.to_str().ok_or("the repository's path is not UTF-8")?;
        build_step(
            &root.join("example-plugins/go-counter"),
            "go",
            &["build", "-o", out_arg, "."],
        )?;
        found.push(Counter::new("Go", "go", baton_host::PluginConfig::new(out)));
    }

    if have("node", "--version", "TypeScript counter")
        && have("npm", "--version", "TypeScript counter")
    {
        // The SDK first: the counter links to its build.
        for dir in ["plugin-sdk/node", "example-plugins/ts-counter"] {
            let dir = root.join(dir);
            if !dir.join("node_modules").exists() {
                build_step(&dir, "npm", &["ci", "--no-audit", "--no-fund"])?;
            }
            build_step(&dir, "npm", &["run", "build"])?;
        }
        found.push(Counter::new(
            "TypeScript",
            "typescript",
            script_plugin(
                "node",
                &root.join("example-plugins/ts-counter/dist/src/main.js"),
            ),
        ));
    }
    Ok(found)
}

pub async fn run(bins: &Bins, mode: Mode, rows: &mut Vec<Row>) -> Result<(), Error> {
    let counters = counters(bins)?;
    let mut config = baton_host::Config::empty();
    for counter in &counters {
        let mut plugin = counter.config.clone();
        plugin.reload = Some(baton_host::ReloadMode::Manual);
        // An interpreter's start-up (grpcio, Node.js) can take seconds on a busy machine.
        plugin.handshake_timeout_ms = 30_000;
        config.plugins.insert(counter.name.into(), plugin);
    }
    let host = baton_host::Host::start(&config).await?;
    let measured = measure(&host, &counters, mode).await;
    host.shutdown().await;
    let samples = measured?;

    let stats: Vec<(f64, f64)> = samples
        .into_iter()
        .map(|s| {
            let s = sorted(s);
            (quantile(&s, 0.5), quantile(&s, 0.99))
        })
        .collect();
    let (rust50, rust99) = stats[0];
    for (counter, &(p50, p99)) in counters.iter().zip(&stats) {
        let figure = |q: &str| format!("64 B Invoke {q}, {} (library)", counter.label);
        let (mut median, mut tail) = (
            Row::new("sdk", figure("p50"), p50, "µs"),
            Row::new("sdk", figure("p99"), p99, "µs"),
        );
        if counter.name != "rust" {
            median = median.baseline(rust50);
            tail = tail.baseline(rust99);
        }
        rows.push(median);
        rows.push(tail);
    }
    // What one CPU buys the Python counter, against itself unpinned.
    let at = |name: &str| counters.iter().position(|c| c.name == name);
    if let (Some(free), Some(one)) = (at("python"), at("python-one-cpu")) {
        for (q, pick) in [("p50", 0), ("p99", 1)] {
            let value = |i: usize| if pick == 0 { stats[i].0 } else { stats[i].1 };
            rows.push(
                Row::new(
                    "sdk",
                    format!(
                        "64 B Invoke {q}, {} / {}",
                        counters[one].label, counters[free].label
                    ),
                    value(one),
                    "µs",
                )
                .baseline(value(free)),
            );
        }
    }
    Ok(())
}

/// Every counter's call times in µs, the counters interleaved in rounds (as in the
/// latency scenario) so that load from elsewhere falls on all of them alike.
async fn measure(
    host: &baton_host::Host,
    counters: &[Counter],
    mode: Mode,
) -> Result<Vec<Vec<f64>>, Error> {
    let (rounds, per_round, warm_up) = match mode {
        Mode::Quick => (3, 100, 200),
        // A long warm-up: a Node.js plugin's first 2 000 or so calls run while V8 is
        // still compiling its hot paths (with 200, nearly all of its calls over 400 µs
        // fell in the first 2 000 measured, and its p99 was twice the steady one).
        Mode::Full => (50, 200, 3000),
    };
    let mut handles = Vec::new();
    for counter in counters {
        let name = counter.name;
        let handle = host
            .plugin(name)
            .ok_or_else(|| format!("the host has no {name}"))?;
        handle.ready(Duration::from_secs(60)).await?;
        for _ in 0..warm_up {
            handle.invoke("incr", Bytes::from_static(&PAYLOAD)).await?;
        }
        handles.push(handle);
    }
    let mut samples = vec![Vec::with_capacity(rounds * per_round); counters.len()];
    for _ in 0..rounds {
        for (i, handle) in handles.iter().enumerate() {
            // A fresh task per counter and round, as in the latency scenario: where the
            // runtime places the caller moves latency, and each round is a fresh draw.
            let handle = handle.clone();
            let round = tokio::spawn(async move {
                let mut times = Vec::with_capacity(per_round);
                for _ in 0..per_round {
                    let t = Instant::now();
                    handle.invoke("incr", Bytes::from_static(&PAYLOAD)).await?;
                    times.push(t.elapsed().as_secs_f64() * 1e6);
                }
                Ok::<_, Error>(times)
            });
            samples[i].extend(round.await??);
        }
    }
    Ok(samples)
}
