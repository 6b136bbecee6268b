//! Reloads under load (the binary replaced on disk while callers keep calling), the
//! handover of a large state, and crash-to-serving.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use baton_host::{Config, Event, Host, PluginConfig, ReloadMode};
use bytes::Bytes;
use tokio::sync::broadcast;

use crate::report::{Row, quantile, sorted};
use crate::svg::{Call, Hold, Trace};
use crate::{Bins, Error, Mode};

const MIB: usize = 1 << 20;

/// Copies `from` next to `to` and renames it into place: how deploys replace binaries.
pub fn replace_binary(from: &Path, to: &Path) -> Result<(), Error> {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp)?;
    std::fs::rename(&tmp, to)?;
    Ok(())
}

/// The next `handover_done` of `plugin`; a rollback is an error.
pub(crate) async fn handover_done(
    events: &mut broadcast::Receiver<Event>,
    plugin: &str,
    within: Duration,
) -> Result<Event, Error> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(e)) if e.plugin == plugin && e.kind == "handover_done" => return Ok(e),
            Ok(Ok(e)) if e.plugin == plugin && e.kind == "rollback" => {
                return Err(format!("the reload rolled back: {}", e.message).into());
            }
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) => return Err("the host stopped".into()),
            Err(_) => return Err(format!("no handover within {within:?}").into()),
        }
    }
}

fn state_name(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{} GiB", b >> 30),
        b if b >= MIB => format!("{} MiB", b >> 20),
        b => format!("{} KiB", b >> 10),
    }
}

/// A host (the library) running `bench-plugin` from a private copy in a temp dir.
async fn bench_host(
    bins: &Bins,
    reload: ReloadMode,
) -> Result<
    (
        Host,
        baton_host::PluginHandle,
        tempfile::TempDir,
        std::path::PathBuf,
    ),
    Error,
> {
    let dir = tempfile::Builder::new().prefix("baton-bench-").tempdir()?;
    let binary = dir.path().join("bench-plugin");
    std::fs::copy(bins.get("bench-plugin")?, &binary)?;
    let mut plugin = PluginConfig::new(&binary);
    plugin.reload = Some(reload);
    // Large states take a while to move; the default 10 s is for ordinary ones.
    plugin.handover_timeout_ms = 120_000;
    let mut config = Config::empty();
    config.plugins.insert("bench".into(), plugin);
    let host = Host::start(&config).await?;
    let handle = host.plugin("bench").ok_or("the host has no bench plugin")?;
    handle.ready(Duration::from_secs(10)).await?;
    Ok((host, handle, dir, binary))
}

/// `reloads` binary replacements while 4 callers call `get`; returns the calls seen for the plot.
async fn reloads_under_load(
    bins: &Bins,
    state: usize,
    reloads: usize,
    rows: &mut Vec<Row>,
) -> Result<Trace, Error> {
    let (host, handle, _dir, binary) = bench_host(bins, ReloadMode::Watch).await?;
    handle.invoke("fill", state.to_string()).await?;
    let before = handle.invoke("digest", "").await?;
    let mut events = host.subscribe();
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (handle, stop) = (handle.clone(), stop.clone());
        callers.spawn(async move {
            let mut calls = Vec::new();
            let mut failed = 0u64;
            // Bounded by the stop flag, and by a hard limit should it never come.
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(900) {
                let t = Instant::now();
                let ok = handle.invoke("get", Bytes::new()).await.is_ok();
                if !ok {
                    failed += 1;
                }
                calls.push(Call {
                    at_us: t.duration_since(start).as_micros() as u64,
                    latency_us: t.elapsed().as_micros() as u64,
                    ok,
                });
            }
            (calls, failed)
        });
    }
    let source = bins.get("bench-plugin")?;
    let (mut detect, mut holds, mut durations, mut trace_holds) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut drains, mut moves) = (Vec::new(), Vec::new());
    let mut result = Ok(());
    for _ in 0..reloads {
        let t = Instant::now();
        if let Err(e) = replace_binary(&source, &binary) {
            result = Err(e);
            break;
        }
        match handover_done(&mut events, "bench", Duration::from_secs(60)).await {
            Ok(e) => {
                let seen = start.elapsed().as_micros() as u64;
                detect.push(t.elapsed().as_secs_f64() * 1e3);
                holds.push(e.hold_us as f64 / 1e3);
                drains.push(e.drain_us as f64 / 1e3);
                moves.push(e.hold_us.saturating_sub(e.drain_us) as f64 / 1e3);
                durations.push(e.duration_us as f64 / 1e3);
                trace_holds.push(Hold {
                    end_us: seen,
                    hold_us: e.hold_us,
                });
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        // Calls run undisturbed for a while between reloads.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut calls, mut failed) = (Vec::new(), 0);
    while let Some(done) = callers.join_next().await {
        let (c, f) = done?;
        calls.extend(c);
        failed += f;
    }
    let after = handle.invoke("digest", "").await;
    host.shutdown().await;
    result?;
    if after? != before {
        return Err(format!(
            "the {} state did not survive the reloads intact",
            state_name(state)
        )
        .into());
    }
    let name = state_name(state);
    let (detect, holds, durations) = (sorted(detect), sorted(holds), sorted(durations));
    rows.push(Row::new("reload", format!("{name}: binary replaced → new generation serving, p50 ({reloads} reloads, settle_ms 100)"), quantile(&detect, 0.5), "ms"));
    rows.push(Row::new(
        "reload",
        format!("{name}: binary replaced → serving, max"),
        quantile(&detect, 1.0),
        "ms",
    ));
    rows.push(Row::new(
        "reload",
        format!("{name}: handover (start of n+1 → switch), p50"),
        quantile(&durations, 0.5),
        "ms",
    ));
    rows.push(Row::new(
        "reload",
        format!("{name}: hold window p50"),
        quantile(&holds, 0.5),
        "ms",
    ));
    let p99 = quantile(&holds, 0.99);
    let mut row = Row::new("reload", format!("{name}: hold window p99"), p99, "ms");
    if state == MIB {
        row = row.target("≤ 5 ms", p99 <= 5.0);
    }
    rows.push(row);
    rows.push(Row::new(
        "reload",
        format!("{name}: hold window max"),
        quantile(&holds, 1.0),
        "ms",
    ));
    // The hold is two waits: calls in flight finishing, then the state moving.
    let (drains, moves) = (sorted(drains), sorted(moves));
    rows.push(Row::new(
        "reload",
        format!("{name}: of the hold, calls in flight finishing, p99"),
        quantile(&drains, 0.99),
        "ms",
    ));
    rows.push(Row::new(
        "reload",
        format!("{name}: of the hold, Snapshot → Restore, p50"),
        quantile(&moves, 0.5),
        "ms",
    ));
    rows.push(Row::new(
        "reload",
        format!("{name}: of the hold, Snapshot → Restore, p99"),
        quantile(&moves, 0.99),
        "ms",
    ));
    let ok_latency = sorted(
        calls
            .iter()
            .filter(|c| c.ok)
            .map(|c| c.latency_us as f64)
            .collect(),
    );
    rows.push(
        Row::new(
            "reload",
            format!(
                "{name}: call latency p50 / max under reloads ({} calls)",
                calls.len()
            ),
            quantile(&ok_latency, 0.5),
            "µs",
        )
        .baseline(quantile(&ok_latency, 1.0)),
    );
    rows.push(
        Row::new(
            "reload",
            format!("{name}: failed calls"),
            failed as f64,
            "calls",
        )
        .target_at_any_size("0", failed == 0),
    );
    calls.sort_by_key(|c| c.at_us);
    Ok(Trace {
        state: name,
        calls,
        holds: trace_holds,
    })
}

pub async fn under_load(
    bins: &Bins,
    mode: Mode,
    rows: &mut Vec<Row>,
) -> Result<Option<Trace>, Error> {
    let (sizes, reloads): (&[usize], usize) = match mode {
        Mode::Quick => (&[1 << 10, MIB], 5),
        Mode::Full => (&[1 << 10, MIB, 64 * MIB], 100),
    };
    let mut plot = None;
    for &size in sizes {
        let trace = reloads_under_load(bins, size, reloads, rows).await?;
        if size == MIB {
            plot = Some(trace);
        }
    }
    Ok(plot)
}

/// Handover throughput of one large state, by `reload()` (no callers).
pub async fn large_state(bins: &Bins, mode: Mode, rows: &mut Vec<Row>) -> Result<(), Error> {
    let (state, times) = match mode {
        Mode::Quick => (MIB, 2),
        Mode::Full => (1 << 30, 3),
    };
    let (host, handle, _dir, _binary) = bench_host(bins, ReloadMode::Manual).await?;
    let result = async {
        handle.invoke("fill", state.to_string()).await?;
        let before = handle.invoke("digest", "").await?;
        let mut events = host.subscribe();
        let mut rates = Vec::new();
        let mut holds = Vec::new();
        for _ in 0..times {
            handle
                .reload()
                .await
                .map_err(|e| format!("reload failed: {e}"))?;
            let e = handover_done(&mut events, "bench", Duration::from_secs(120)).await?;
            // The hold window is the drain plus Snapshot → Restore: the transfer itself.
            rates.push(e.state_bytes as f64 / (e.hold_us.max(1) as f64 / 1e6) / 1e9);
            holds.push(e.hold_us as f64 / 1e3);
        }
        if handle.invoke("digest", "").await? != before {
            return Err::<_, Error>("the state did not survive the handover intact".into());
        }
        Ok((rates, holds))
    }
    .await;
    host.shutdown().await;
    let (rates, holds) = result?;
    // The floor, measured after the host's plugins are gone so the two never share the CPUs.
    let floor = quantile(
        &sorted(crate::calls::bare_relay(bins, state, times).await?),
        0.5,
    );
    let name = state_name(state);
    let median = quantile(&sorted(rates), 0.5);
    rows.push(Row::new(
        "handover",
        format!("{name} state: hold window p50 ({times} reloads)"),
        quantile(&sorted(holds), 0.5),
        "ms",
    ));
    rows.push(Row::new(
        "handover",
        format!("{name} state: bare tonic relay (Snapshot piped into Restore) p50"),
        floor,
        "GB/s",
    ));
    rows.push(
        Row::new(
            "handover",
            format!("{name} state: handover throughput p50"),
            median,
            "GB/s",
        )
        .baseline(floor)
        .target("≥ 1 GB/s", median >= 1.0),
    );
    Ok(())
}

/// SIGKILL the plugin, then time until a call is answered by the next process.
pub async fn crash(bins: &Bins, mode: Mode, rows: &mut Vec<Row>) -> Result<(), Error> {
    let kills = match mode {
        Mode::Quick => 3,
        Mode::Full => 20,
    };
    let mut config = Config::empty();
    let mut plugin = PluginConfig::new(bins.get("echo")?);
    plugin.reload = Some(ReloadMode::Manual);
    // Each kill should count as a first crash (immediate restart), not part of a loop.
    plugin.restart.stable_after_ms = 1;
    plugin.restart.max_crashes = 1000;
    config.plugins.insert("echo".into(), plugin);
    let host = Host::start(&config).await?;
    let result = async {
        let handle = host.plugin("echo").ok_or("the host has no echo")?;
        handle.ready(Duration::from_secs(10)).await?;
        let mut times = Vec::new();
        for _ in 0..kills {
            let pid = handle.status().pid.ok_or("echo has no pid")?;
            let t = Instant::now();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )?;
            loop {
                // A call racing the kill may fail; the first answer from a new pid counts.
                if handle.invoke("echo", "x").await.is_ok() && handle.status().pid != Some(pid) {
                    break;
                }
                if t.elapsed() > Duration::from_secs(10) {
                    return Err::<_, Error>("echo did not come back within 10 s".into());
                }
            }
            times.push(t.elapsed().as_secs_f64() * 1e3);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let times = sorted(times);
        let p50 = quantile(&times, 0.5);
        rows.push(
            Row::new(
                "crash",
                format!("SIGKILL → serving again (first restart), p50 of {kills}"),
                p50,
                "ms",
            )
            .target("≤ 50 ms", p50 <= 50.0),
        );
        rows.push(Row::new(
            "crash",
            "SIGKILL → serving again, max",
            quantile(&times, 1.0),
            "ms",
        ));
        Ok(())
    }
    .await;
    host.shutdown().await;
    result
}
