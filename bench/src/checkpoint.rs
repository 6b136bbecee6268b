//! A neighbour's calls while another plugin takes large checkpoints: the `echo`
//! plugin's call latency during `bench-plugin`'s checkpoints to disk beside its
//! latency between them, both measured in the same run through one `baton run` daemon
//! (with its default runtime: half the CPUs).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton_proto::host::{EventsRequest, InvokeRequest, PluginState, StatusRequest};

use crate::procs::Daemon;
use crate::report::{Row, quantile, sorted};
use crate::{Bins, Error, Mode};

const MIB: u64 = 1 << 20;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One echo call: when it started and how long it took, in µs.
struct Call {
    start_us: u64,
    latency_us: u64,
}

pub async fn neighbour(bins: &Bins, mode: Mode, rows: &mut Vec<Row>) -> Result<(), Error> {
    let (state, checkpoints, interval_ms) = match mode {
        Mode::Quick => (16 * MIB, 3, 400),
        Mode::Full => (300 * MIB, 5, 3000),
    };
    let state_dir = tempfile::Builder::new()
        .prefix("baton-bench-state-")
        .tempdir()?;
    let toml = format!(
        "state_dir = \"{}\"\n\n[plugins.big]\ncommand = \"{}\"\nreload = \"manual\"\ncheckpoint_interval_ms = {interval_ms}\nhandover_timeout_ms = 120000\n\n[plugins.echo]\ncommand = \"{}\"\nreload = \"manual\"\n",
        state_dir.path().display(),
        bins.get("bench-plugin")?.display(),
        bins.get("echo")?.display(),
    );
    let daemon = Daemon::start(&bins.get("baton")?, &toml, Duration::from_secs(30)).await?;
    let result = measure(&daemon, state, checkpoints).await;
    daemon.stop(Duration::from_secs(10)).await;
    let (during, quiet, count) = result?;
    let floor = floor(bins, state, checkpoints, interval_ms).await?;
    let name = format!("{} MiB", state / MIB);
    let (during_p99, quiet_p99) = (quantile(&during, 0.99), quantile(&quiet, 0.99));
    rows.push(Row::new(
        "checkpoint",
        format!(
            "neighbour (echo) call p99 between checkpoints ({} calls)",
            quiet.len()
        ),
        quiet_p99,
        "µs",
    ));
    rows.push(
        Row::new(
            "checkpoint",
            format!(
                "neighbour (echo) call p99 during another plugin's {name} checkpoints ({count} checkpoints, {} calls)",
                during.len()
            ),
            during_p99,
            "µs",
        )
        .baseline(quiet_p99)
        .target("≤ 2× the p99 between them", during_p99 <= 2.0 * quiet_p99),
    );
    rows.push(Row::new(
        "checkpoint",
        format!("neighbour (echo) call max during {name} checkpoints"),
        quantile(&during, 1.0),
        "µs",
    ));
    rows.push(Row::new(
        "checkpoint",
        format!(
            "floor: neighbour p99 while a bare client (no baton) reads the same {name} snapshots to disk ({} calls)",
            floor.len()
        ),
        quantile(&floor, 0.99),
        "µs",
    ));
    rows.push(
        Row::new(
            "checkpoint",
            format!("neighbour p99 during {name} checkpoints vs the floor"),
            during_p99,
            "µs",
        )
        .baseline(quantile(&floor, 0.99)),
    );
    Ok(())
}

/// The floor for a neighbour's calls during large checkpoints on this machine: the
/// same `count` snapshots of a `state`-byte `bench-plugin`, read by a bare tonic
/// client and written to a file (synced) as a checkpoint is, while `echo` is called
/// through a daemon that runs it alone. Echo latencies (µs, sorted) during the reads.
async fn floor(bins: &Bins, state: u64, count: usize, interval_ms: u64) -> Result<Vec<f64>, Error> {
    use baton_proto::plugin::{InvokeRequest as PluginInvoke, SnapshotRequest};
    use tokio::io::AsyncWriteExt;
    let toml = format!(
        "[plugins.echo]\ncommand = \"{}\"\nreload = \"manual\"\n",
        bins.get("echo")?.display()
    );
    let daemon = Daemon::start(&bins.get("baton")?, &toml, Duration::from_secs(30)).await?;
    let mut big = crate::procs::BarePlugin::start_with(&bins.get("bench-plugin")?, true).await?;
    let fill = PluginInvoke {
        method: "fill".into(),
        payload: state.to_string().into(),
        metadata: Default::default(),
    };
    big.client
        .invoke(crate::calls::with_token(fill, &big.token))
        .await?;
    let dir = tempfile::Builder::new()
        .prefix("baton-bench-floor-")
        .tempdir()?;
    let windows: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let sink = windows.clone();
    let (mut client, token) = (big.client.clone(), big.token.clone());
    let reader = tokio::spawn(async move {
        for n in 0..count {
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
            let start = now_us();
            let request = crate::calls::with_token(SnapshotRequest::default(), &token);
            let mut snapshot = client.snapshot(request).await?.into_inner();
            let mut file = tokio::fs::File::create(dir.path().join(format!("{n}.ckpt"))).await?;
            while let Some(chunk) = snapshot.message().await? {
                file.write_all(&chunk.data).await?;
            }
            file.sync_all().await?;
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((start, now_us()));
        }
        Ok::<_, Error>(())
    });
    let mut echo = daemon.client.clone();
    let mut calls = Vec::new();
    while !reader.is_finished() {
        let start_us = now_us();
        let t = Instant::now();
        echo.invoke(InvokeRequest {
            plugin: "echo".into(),
            method: "echo".into(),
            payload: "ping".into(),
            metadata: Default::default(),
        })
        .await?;
        calls.push(Call {
            start_us,
            latency_us: t.elapsed().as_micros() as u64,
        });
    }
    let read = reader.await;
    daemon.stop(Duration::from_secs(10)).await;
    drop(big);
    read.map_err(|e| format!("the floor's reader failed: {e}"))??;
    let windows = windows.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let during: Vec<f64> = calls
        .iter()
        .filter(|c| {
            let end = c.start_us + c.latency_us;
            windows.iter().any(|&(a, b)| c.start_us <= b && end >= a)
        })
        .map(|c| c.latency_us as f64)
        .collect();
    if during.is_empty() {
        return Err("no echo call fell during the floor's snapshot reads".into());
    }
    Ok(sorted(during))
}

/// Echo latencies (µs, sorted) during and between `count` checkpoints of a `state`-byte
/// state, and how many checkpoints there were.
async fn measure(
    daemon: &Daemon,
    state: u64,
    count: usize,
) -> Result<(Vec<f64>, Vec<f64>, usize), Error> {
    let mut client = daemon.client.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    for plugin in ["big", "echo"] {
        loop {
            let s = client
                .status(StatusRequest {
                    plugin: plugin.into(),
                })
                .await?
                .into_inner();
            if s.state == PluginState::Serving as i32 {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{plugin} does not serve after 30 s").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let invoke = |plugin: &str, method: &str, payload: String| InvokeRequest {
        plugin: plugin.into(),
        method: method.into(),
        payload: payload.into_bytes().into(),
        metadata: Default::default(),
    };
    client
        .invoke(invoke("big", "fill", state.to_string()))
        .await?;

    // Each checkpoint's window: from its snapshot's start (the event's time) to the
    // event's arrival, once the file is written and synced.
    let windows: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let mut events = client
        .events(EventsRequest {
            plugin: "big".into(),
            last: 0,
        })
        .await?
        .into_inner();
    let sink = windows.clone();
    let watcher = tokio::spawn(async move {
        while let Ok(Some(e)) = events.message().await {
            if e.kind == "checkpoint" && e.state_bytes == state {
                let mut w = sink.lock().unwrap_or_else(|p| p.into_inner());
                w.push((e.unix_ms * 1000, now_us()));
            } else if e.kind == "checkpoint_failed" {
                eprintln!("baton-bench: {}", e.message);
            }
        }
    });
    let seen = || windows.lock().unwrap_or_else(|p| p.into_inner()).len();
    let mut calls = Vec::new();
    let hard_limit = Instant::now() + Duration::from_secs(300);
    // One more than asked: the first may have begun before the fill ended.
    while seen() < count + 1 {
        if Instant::now() > hard_limit {
            watcher.abort();
            return Err(format!("fewer than {count} checkpoints within 300 s").into());
        }
        let start_us = now_us();
        let t = Instant::now();
        client.invoke(invoke("echo", "echo", "ping".into())).await?;
        calls.push(Call {
            start_us,
            latency_us: t.elapsed().as_micros() as u64,
        });
    }
    watcher.abort();
    let windows = windows
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .split_off(1);
    let first = windows.first().map_or(0, |w| w.0);
    let (mut during, mut quiet) = (Vec::new(), Vec::new());
    for call in calls
        .iter()
        .filter(|c| c.start_us >= first.saturating_sub(1_000_000))
    {
        let end = call.start_us + call.latency_us;
        let overlaps = windows.iter().any(|&(a, b)| call.start_us <= b && end >= a);
        let latency = call.latency_us as f64;
        if overlaps {
            during.push(latency);
        } else {
            quiet.push(latency);
        }
    }
    if during.is_empty() || quiet.is_empty() {
        return Err("no echo call fell during (or between) the checkpoints".into());
    }
    Ok((sorted(during), sorted(quiet), windows.len()))
}
