//! `baton-bench`: baton's speed figures, each beside a baseline measured in the same run.
//!
//! ```text
//! cargo run --release -p baton-bench -- --out docs      # the full run (minutes)
//! cargo run --release -p baton-bench -- --quick         # every scenario, small (seconds)
//! baton-bench --only latency,throughput                 # some scenarios
//! baton-bench profile b 20000                           # calls through one path, for callgrind
//! ```
//!
//! Prints a Markdown table and one JSON line, and writes `reload-latency.svg` and
//! `bench.json` into the `--out` directory (default `target/baton-bench`).

mod calls;
mod checkpoint;
mod peers;
mod precopy;
mod procs;
mod reload;
mod report;
mod scale;
mod sdk;
mod svg;
mod typed;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Quick,
    Full,
}

/// Where the workspace's binaries are: next to this one.
pub struct Bins(PathBuf);

impl Bins {
    pub fn get(&self, name: &str) -> Result<PathBuf, Error> {
        let path = self.0.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{} is missing: build it first (cargo build --release --bins -p baton-host -p echo-plugin -p counter-plugin -p trigger-plugin -p baton-bench)",
                path.display()
            )
            .into())
        }
    }
}

/// Under `cargo run`, builds the binaries the benchmark runs, in this binary's profile,
/// so the figures are never those of a stale build.
fn build_siblings(dir: &Path) -> Result<(), Error> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut command = std::process::Command::new(cargo);
    command
        .args([
            "build",
            "--bins",
            "-p",
            "baton-host",
            "-p",
            "echo-plugin",
            "-p",
            "counter-plugin",
            "-p",
            "trigger-plugin",
            "-p",
            "baton-bench",
            "--manifest-path",
        ])
        .arg(&manifest);
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(other) => {
            command.args(["--profile", other]);
        }
        None => return Ok(()),
    }
    let status = command.status()?;
    if !status.success() {
        return Err(format!("building the benchmark's binaries failed ({status})").into());
    }
    Ok(())
}

struct Args {
    mode: Mode,
    out: PathBuf,
    only: Option<Vec<String>>,
    profile: Option<(String, u64)>,
    /// The payload of each `profile` call.
    profile_bytes: usize,
}

const USAGE: &str = "usage: baton-bench [--quick] [--out DIR] [--only latency,throughput,peers,sdk,typed,reload,handover,live,crash,checkpoint,scale]\n       baton-bench profile a|b|c|d CALLS [BYTES]\n       baton-bench probe-transfer BYTES";

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        mode: Mode::Full,
        out: Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/baton-bench"),
        only: None,
        profile: None,
        profile_bytes: 64,
    };
    let mut it = std::env::args().skip(1).peekable();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.mode = Mode::Quick,
            "--out" => args.out = it.next().ok_or("--out wants a directory")?.into(),
            "--only" => {
                args.only = Some(
                    it.next()
                        .ok_or("--only wants scenario names")?
                        .split(',')
                        .map(str::to_owned)
                        .collect(),
                )
            }
            "probe-transfer" => {
                let bytes = it.next().ok_or(USAGE)?.parse().map_err(|_| USAGE)?;
                args.profile = Some(("probe-transfer".into(), bytes));
            }
            "profile" => {
                let path = it.next().ok_or(USAGE)?;
                let calls = it.next().ok_or(USAGE)?.parse().map_err(|_| USAGE)?;
                args.profile = Some((path, calls));
                if let Some(bytes) = it.next_if(|a| a.parse::<usize>().is_ok()) {
                    args.profile_bytes = bytes.parse().map_err(|_| USAGE)?;
                }
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    Ok(args)
}

async fn run(args: Args, bins: Bins) -> Result<(), Error> {
    if let Some((path, calls)) = args.profile {
        if path == "probe-transfer" {
            return calls::probe_transfer(&bins, calls as usize).await;
        }
        return calls::profile(&bins, &path, calls, args.profile_bytes).await;
    }
    let wants = |name: &str| {
        args.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|n| n == name))
    };
    let mode = args.mode;
    let mut rows = Vec::new();
    let mut one_plugin_rss = None;
    if wants("latency") || wants("throughput") {
        eprintln!("baton-bench: latency and throughput …");
        let mut paths = calls::Paths::start(&bins).await?;
        let measured = async {
            if wants("latency") {
                calls::latency(&mut paths, mode, &mut rows).await?;
            }
            if wants("throughput") {
                calls::throughput(&mut paths, mode, &mut rows).await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        one_plugin_rss = procs::rss_bytes(paths.daemon_pid())
            .ok()
            .map(|b| b as f64 / (1u64 << 20) as f64);
        paths.stop().await;
        measured?;
    }
    let mut peers_table = None;
    if wants("peers") {
        eprintln!("baton-bench: calls at the floor: the raw UDS floor, every path and go-plugin …");
        peers_table = Some(peers::run(&bins, mode, &mut rows).await?);
    }
    if wants("sdk") {
        eprintln!("baton-bench: one counter in each SDK (Rust, Python, Go, TypeScript) …");
        sdk::run(&bins, mode, &mut rows).await?;
    }
    let mut trace = None;
    if wants("typed") {
        eprintln!("baton-bench: typed calls to an application service …");
        typed::run(&bins, mode, &mut rows).await?;
    }
    if wants("reload") {
        eprintln!("baton-bench: reloads under load …");
        trace = reload::under_load(&bins, mode, &mut rows).await?;
    }
    if wants("handover") {
        eprintln!("baton-bench: large-state handover …");
        reload::large_state(&bins, mode, &mut rows).await?;
    }
    if wants("live") {
        eprintln!("baton-bench: live handover against stop-and-copy, under writers …");
        precopy::run(&bins, mode, &mut rows).await?;
    }
    if wants("crash") {
        eprintln!("baton-bench: crash to serving …");
        reload::crash(&bins, mode, &mut rows).await?;
    }
    if wants("checkpoint") {
        eprintln!("baton-bench: a neighbour's calls during large checkpoints …");
        checkpoint::neighbour(&bins, mode, &mut rows).await?;
    }
    if wants("scale") {
        eprintln!("baton-bench: scale …");
        scale::run(&bins, mode, one_plugin_rss, &mut rows).await?;
    }
    let json = report::json_line(mode, &rows);
    println!("{}", report::table(mode, &rows));
    if let Some(peers) = peers_table {
        println!("Calls at the floor, side by side (the peers rows above):\n\n{peers}");
    }
    if mode == Mode::Quick {
        eprintln!(
            "baton-bench: a quick run is too small to judge speed targets; run without --quick to judge them"
        );
    }
    println!("{json}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("bench.json"), format!("{json}\n"))?;
    if let Some(trace) = trace {
        let file = args.out.join("reload-latency.svg");
        std::fs::write(&file, svg::render(&trace))?;
        eprintln!("baton-bench: wrote {}", file.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let dir = match std::env::current_exe() {
        Ok(exe) => exe.parent().map(Path::to_owned).unwrap_or_default(),
        Err(e) => {
            eprintln!("error: cannot find this program's directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = build_siblings(&dir) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // On a worker thread, like any server task: a future polled by block_on on the
        // main thread pays a cross-thread wake-up per call, which would inflate every path.
        let work = tokio::spawn(run(args, Bins(dir)));
        let abort = work.abort_handle();
        tokio::select! {
            r = work => r.unwrap_or_else(|e| Err(format!("the benchmark task failed: {e}").into())),
            // Dropping the run stops every process it started (see procs.rs).
            _ = tokio::signal::ctrl_c() => {
                abort.abort();
                Err("interrupted".into())
            }
        }
    });
    // The host's tasks own plugin processes (kill_on_drop): let them go now.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
