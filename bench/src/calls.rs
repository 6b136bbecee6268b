//! Unary call latency and throughput through three paths to the same `echo` plugin
//! build: (a) a bare tonic client on a plugin started by hand (the floor), (b) the
//! `baton-host` library's `PluginHandle`, (c) the `baton run` daemon's Supervisor API.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use baton_proto::host::supervisor_client::SupervisorClient;
use baton_proto::plugin::plugin_client::PluginClient;
use bytes::Bytes;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::report::{Row, quantile, sorted};
use crate::{Bins, Error, Mode};

/// One way of calling `echo`. Each caller owns a clone (tonic clients are cheap to clone).
#[derive(Clone)]
pub enum Path {
    Bare(PluginClient<Channel>, AsciiMetadataValue),
    Library(baton_host::PluginHandle),
    /// On baton's own client ([`baton_host::ControlClient`]), as a Rust caller of the
    /// daemon would use; the relay's caller keeps tonic's `Channel`.
    Daemon(baton_host::ControlClient),
    /// `bench-relay`: a bare tonic server forwarding to the bare plugin, the daemon's floor.
    Relay(SupervisorClient<Channel>),
}

impl Path {
    pub fn label(&self) -> &'static str {
        match self {
            Path::Bare(..) => "(a) bare tonic",
            Path::Library(_) => "(b) library",
            Path::Daemon(_) => "(c) daemon",
            Path::Relay(_) => "(d) bare tonic relay",
        }
    }

    pub async fn call(&mut self, method: &str, payload: Bytes) -> Result<Bytes, Error> {
        Ok(match self {
            Path::Bare(client, token) => {
                let request = baton_proto::plugin::InvokeRequest {
                    method: method.to_owned(),
                    payload,
                    metadata: HashMap::new(),
                };
                client
                    .invoke(with_token(request, token))
                    .await?
                    .into_inner()
                    .payload
            }
            Path::Library(handle) => handle.invoke(method, payload).await?,
            Path::Daemon(client) => {
                client
                    .invoke(daemon_request(method, payload))
                    .await?
                    .payload
            }
            Path::Relay(client) => {
                client
                    .invoke(daemon_request(method, payload))
                    .await?
                    .into_inner()
                    .payload
            }
        })
    }
}

fn daemon_request(method: &str, payload: Bytes) -> baton_proto::host::InvokeRequest {
    baton_proto::host::InvokeRequest {
        plugin: "echo".into(),
        method: method.to_owned(),
        payload,
        metadata: HashMap::new(),
    }
}

/// The three paths, set up and warmed; dropping this stops what it started.
pub struct Paths {
    pub paths: Vec<Path>,
    bare: crate::procs::BarePlugin,
    host: Option<baton_host::Host>,
    daemon: Option<crate::procs::Daemon>,
    relay: crate::procs::Relay,
}

impl Paths {
    pub async fn start(bins: &Bins) -> Result<Self, Error> {
        let echo = bins.get("echo")?;
        let bare = crate::procs::BarePlugin::start(&echo).await?;
        let mut config = baton_host::Config::empty();
        let mut plugin = baton_host::PluginConfig::new(&echo);
        plugin.reload = Some(baton_host::ReloadMode::Manual);
        config.plugins.insert("echo".into(), plugin);
        let host = baton_host::Host::start(&config).await?;
        let handle = host.plugin("echo").ok_or("the host has no echo")?;
        handle.ready(Duration::from_secs(10)).await?;
        let daemon = crate::procs::Daemon::start(
            &bins.get("baton")?,
            &format!(
                "[plugins.echo]\ncommand = \"{}\"\nreload = \"manual\"\n",
                echo.display()
            ),
            Duration::from_secs(10),
        )
        .await?;
        let relay = crate::procs::Relay::start(&bins.get("bench-relay")?, &bare).await?;
        let paths = vec![
            Path::Bare(bare.client.clone(), bare.token.clone()),
            Path::Library(handle),
            Path::Daemon(
                baton_host::ControlClient::connect(&daemon.dir.path().join("baton.sock"))
                    .await?
                    .max_message(crate::procs::MAX_MESSAGE),
            ),
            Path::Relay(relay.client.clone()),
        ];
        let mut this = Self {
            paths,
            bare,
            host: Some(host),
            daemon: Some(daemon),
            relay,
        };
        // The daemon's first call waits for its plugin to start; then warm every path.
        for path in &mut this.paths {
            for _ in 0..200 {
                path.call("echo", Bytes::from_static(b"warm")).await?;
            }
        }
        Ok(this)
    }

    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().map_or(0, crate::procs::Daemon::pid)
    }

    /// The processes a call through `paths[index]` passes besides the caller's own, as
    /// (role, pid): the plugin ("server"; under the daemon, below its pid-namespace init
    /// processes), and for (c) and (d) the process in between.
    pub fn processes(&self, index: usize) -> Result<Vec<(&'static str, u32)>, Error> {
        let library_plugin = || {
            self.host
                .as_ref()
                .and_then(|h| h.plugin("echo"))
                .and_then(|p| p.status().pid)
                .ok_or("the library's echo has no pid")
        };
        let daemon = self.daemon_pid();
        Ok(match index {
            0 => vec![("server", self.bare.pid())],
            1 => vec![("server", library_plugin()?)],
            2 => {
                let plugin = crate::procs::deepest_descendant(daemon)?
                    .ok_or("the daemon has no child process")?;
                vec![("daemon", daemon), ("server", plugin)]
            }
            3 => vec![("relay", self.relay.pid()), ("server", self.bare.pid())],
            _ => return Err(format!("no path {index}").into()),
        })
    }

    pub async fn stop(mut self) {
        if let Some(host) = self.host.take() {
            host.shutdown().await;
        }
        if let Some(daemon) = self.daemon.take() {
            daemon.stop(Duration::from_secs(10)).await;
        }
        let _ = (&self.bare, &self.relay);
    }
}

/// One round of `per_round` sequential calls of `payload` through `path`, in a fresh task;
/// µs per call. Checks that every answer is as long as the payload.
pub async fn round(path: &Path, payload: &Bytes, per_round: usize) -> Result<Vec<f64>, Error> {
    let (mut path, payload) = (path.clone(), payload.clone());
    let size = payload.len();
    tokio::spawn(async move {
        let mut times = Vec::with_capacity(per_round);
        for _ in 0..per_round {
            let t = Instant::now();
            let answer = path.call("echo", payload.clone()).await?;
            times.push(t.elapsed().as_secs_f64() * 1e6);
            if answer.len() != size {
                return Err::<_, Error>(
                    format!("{} echoed {} bytes, not {size}", path.label(), answer.len()).into(),
                );
            }
        }
        Ok(times)
    })
    .await?
}

/// p50/p99 of sequential calls, the paths interleaved in rounds so that load from
/// elsewhere on the machine falls on all of them alike.
pub async fn latency(paths: &mut Paths, mode: Mode, rows: &mut Vec<Row>) -> Result<(), Error> {
    for size in [64usize, 64 << 10] {
        let payload = Bytes::from(vec![0x5au8; size]);
        let (rounds, per_round) = match (mode, size) {
            (Mode::Quick, _) => (3, 100),
            // Many short rounds: each round's task placement is a fresh draw, and with
            // 20 long rounds one unlucky draw moved a path's median by ~20 %.
            (Mode::Full, 64) => (100, 200),
            (Mode::Full, _) => (100, 50),
        };
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); paths.paths.len()];
        for _ in 0..rounds {
            for (i, path) in paths.paths.iter().enumerate() {
                // A fresh task per path and round: where the runtime places the calling
                // task (beside its connection's task or not) moves latency by ~2x, and
                // one long-lived task would give one path the lucky or unlucky draw.
                samples[i].extend(round(path, &payload, per_round).await?);
            }
        }
        let shown = if size == 64 { "64 B" } else { "64 KiB" };
        let stats: Vec<(f64, f64)> = samples
            .into_iter()
            .map(|s| {
                let s = sorted(s);
                (quantile(&s, 0.5), quantile(&s, 0.99))
            })
            .collect();
        let (a50, a99) = stats[0];
        rows.push(Row::new(
            "latency",
            format!("{shown} p50 (a) bare tonic"),
            a50,
            "µs",
        ));
        rows.push(Row::new(
            "latency",
            format!("{shown} p99 (a) bare tonic"),
            a99,
            "µs",
        ));
        let (b50, b99) = stats[1];
        rows.push(
            Row::new("latency", format!("{shown} p50 (b) library"), b50, "µs")
                .baseline(a50)
                .target("≤ 1.10 × (a)", b50 <= 1.10 * a50),
        );
        rows.push(Row::new("latency", format!("{shown} p99 (b) library"), b99, "µs").baseline(a99));
        let (c50, c99) = stats[2];
        rows.push(
            Row::new("latency", format!("{shown} p50 (c) daemon"), c50, "µs")
                .baseline(a50)
                .target("≤ 2 × (a)", c50 <= 2.0 * a50),
        );
        rows.push(Row::new("latency", format!("{shown} p99 (c) daemon"), c99, "µs").baseline(a99));
        let (d50, d99) = stats[3];
        rows.push(
            Row::new(
                "latency",
                format!("{shown} p50 (d) bare tonic relay"),
                d50,
                "µs",
            )
            .baseline(a50),
        );
        rows.push(
            Row::new(
                "latency",
                format!("{shown} p99 (d) bare tonic relay"),
                d99,
                "µs",
            )
            .baseline(a99),
        );
        rows.push(
            Row::new(
                "latency",
                format!("{shown} p50 (c) daemon vs (d) relay"),
                c50,
                "µs",
            )
            .baseline(d50),
        );
    }
    Ok(())
}

/// Calls per second with `callers` concurrent callers on one path for `window`.
async fn rate(path: &Path, callers: usize, window: Duration) -> Result<f64, Error> {
    let (calls, secs) = rate_counted(path, callers, window).await?;
    Ok(calls as f64 / secs)
}

/// Calls made by `callers` concurrent callers (64 B each) on one path in about `window`,
/// and the seconds they took.
pub async fn rate_counted(
    path: &Path,
    callers: usize,
    window: Duration,
) -> Result<(u64, f64), Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for _ in 0..callers {
        let (mut path, stop) = (path.clone(), stop.clone());
        tasks.spawn(async move {
            let payload = Bytes::from_static(&[7u8; 64]);
            let mut calls = 0u64;
            // Bounded by the stop flag, and by a hard limit should it never come.
            while !stop.load(Ordering::Relaxed) && start.elapsed() < window * 3 {
                path.call("echo", payload.clone()).await?;
                calls += 1;
            }
            Ok::<u64, Error>(calls)
        });
    }
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done??;
    }
    Ok((total, start.elapsed().as_secs_f64()))
}

/// Throughput with 1 and 16 callers; paths interleaved in rounds like `latency`.
pub async fn throughput(paths: &mut Paths, mode: Mode, rows: &mut Vec<Row>) -> Result<(), Error> {
    let (rounds, window) = match mode {
        Mode::Quick => (1, Duration::from_millis(500)),
        Mode::Full => (3, Duration::from_secs(2)),
    };
    for callers in [1usize, 16] {
        let mut sums = vec![0.0; paths.paths.len()];
        for _ in 0..rounds {
            for (i, path) in paths.paths.iter().enumerate() {
                sums[i] += rate(path, callers, window).await? / rounds as f64;
            }
        }
        rows.push(Row::new(
            "throughput",
            format!("64 B, {callers} caller(s), (a) bare tonic"),
            sums[0],
            "calls/s",
        ));
        rows.push(
            Row::new(
                "throughput",
                format!("64 B, {callers} caller(s), (b) library"),
                sums[1],
                "calls/s",
            )
            .baseline(sums[0]),
        );
        rows.push(
            Row::new(
                "throughput",
                format!("64 B, {callers} caller(s), (c) daemon"),
                sums[2],
                "calls/s",
            )
            .baseline(sums[0]),
        );
        rows.push(
            Row::new(
                "throughput",
                format!("64 B, {callers} caller(s), (d) bare tonic relay"),
                sums[3],
                "calls/s",
            )
            .baseline(sums[0]),
        );
    }
    Ok(())
}

/// For profiling under callgrind or perf: `calls` sequential calls of `bytes` each
/// through one path only.
pub async fn profile(bins: &Bins, which: &str, calls: u64, bytes: usize) -> Result<(), Error> {
    let mut paths = Paths::start(bins).await?;
    let index = match which {
        "a" => 0,
        "b" => 1,
        "c" => 2,
        "d" => 3,
        other => return Err(format!("profile wants a, b, c or d, not {other:?}").into()),
    };
    let mut path = paths.paths[index].clone();
    let payload = Bytes::from(vec![7u8; bytes]);
    let t = Instant::now();
    for _ in 0..calls {
        path.call("echo", payload.clone()).await?;
    }
    println!(
        "{} calls through {} in {:?}",
        calls,
        path.label(),
        t.elapsed()
    );
    paths.paths.clear();
    paths.stop().await;
    Ok(())
}

/// The floor for a handover's transfer: a bare tonic client pipes `Snapshot` of one
/// `bench-plugin` into `Restore` of another, through a 2-chunk channel as the host does
/// (with the host's frame and window sizes, and without its checks). Returns GB/s per
/// round and checks that the state arrived whole.
pub async fn bare_relay(bins: &Bins, bytes: usize, rounds: usize) -> Result<Vec<f64>, Error> {
    use baton_proto::plugin::{InvokeRequest, SnapshotRequest, StateChunk};
    let binary = bins.get("bench-plugin")?;
    let mut from = crate::procs::BarePlugin::start_with(&binary, true).await?;
    let mut to = crate::procs::BarePlugin::start_with(&binary, true).await?;
    let call = |token: &AsciiMetadataValue, method: &str, payload: String| {
        let request = InvokeRequest {
            method: method.into(),
            payload: payload.into(),
            metadata: HashMap::new(),
        };
        with_token(request, token)
    };
    from.client
        .invoke(call(&from.token, "fill", bytes.to_string()))
        .await?;
    let digest = from
        .client
        .invoke(call(&from.token, "digest", String::new()))
        .await?
        .into_inner()
        .payload;
    let mut rates = Vec::new();
    for round in 0..rounds {
        let started = Instant::now();
        let request = with_token(SnapshotRequest::default(), &from.token);
        let mut snapshot = from.client.snapshot(request).await?.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel::<StateChunk>(2);
        let pump = async move {
            while let Some(chunk) = snapshot.message().await? {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
            Ok::<_, tonic::Status>(())
        };
        let request = with_token(tokio_stream::wrappers::ReceiverStream::new(rx), &to.token);
        let (pumped, restored) = tokio::join!(pump, to.client.restore(request));
        pumped?;
        restored?;
        let took = started.elapsed();
        let got = to
            .client
            .invoke(call(&to.token, "digest", String::new()))
            .await?
            .into_inner()
            .payload;
        if got != digest {
            return Err(
                format!("round {round}: the relayed state differs from the original").into(),
            );
        }
        rates.push(bytes as f64 / took.as_secs_f64() / 1e9);
    }
    Ok(rates)
}

/// A request carrying a bare plugin's launch token, as a host's calls do.
pub fn with_token<T>(message: T, token: &AsciiMetadataValue) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(baton_proto::TOKEN_METADATA_KEY, token.clone());
    request
}

/// `probe-transfer BYTES`: the bare relay alone, round by round, for profiling.
pub async fn probe_transfer(bins: &Bins, bytes: usize) -> Result<(), Error> {
    for (round, rate) in bare_relay(bins, bytes, 5).await?.into_iter().enumerate() {
        println!("round {round}: {rate:.2} GB/s");
    }
    Ok(())
}
