//! Prints rough figures for one host on this machine: call latency through a
//! `PluginHandle`, crash-to-serving time, the hold window of reloads under load, and
//! the time from a changed binary to the new generation serving. Run from the workspace root after
//! `cargo build --release --workspace --bins --examples`:
//!
//!     cargo run --release -p baton-host --example figures
//!
//! The full benchmark, with baselines side by side, is a separate tool.

use std::time::{Duration, Instant};

use baton_host::{Config, Host, PluginConfig};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bin = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .ok_or("cannot find the target directory")?
        .to_owned();
    let mut config = Config::empty();
    config
        .plugins
        .insert("echo".into(), PluginConfig::new(bin.join("echo")));
    let mut counter = PluginConfig::new(bin.join("counter"));
    // This run kills the counter on purpose, more often than the crash-loop breaker allows.
    // Each kill is measured as a first crash (immediate restart), not a crash loop.
    counter.restart.stable_after_ms = 1;
    counter.restart.max_crashes = 1000;
    config.plugins.insert("counter".into(), counter);
    let host = Host::start(&config).await?;
    let echo = host.plugin("echo").ok_or("no echo")?;
    let counter = host.plugin("counter").ok_or("no counter")?;
    echo.ready(Duration::from_secs(10)).await?;
    counter.ready(Duration::from_secs(10)).await?;

    for size in [64usize, 64 << 10] {
        let payload = bytes::Bytes::from(vec![7u8; size]);
        for _ in 0..200 {
            echo.invoke("echo", payload.clone()).await?;
        }
        let mut times = Vec::with_capacity(5000);
        for _ in 0..5000 {
            let t = Instant::now();
            echo.invoke("echo", payload.clone()).await?;
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "echo {size:>6} B via PluginHandle: p50 {:>7.1} us  p99 {:>7.1} us  ({} calls)",
            percentile(&times, 0.5).as_secs_f64() * 1e6,
            percentile(&times, 0.99).as_secs_f64() * 1e6,
            times.len()
        );
    }

    let mut restarts = Vec::new();
    for _ in 0..10 {
        let pid = counter.status().pid.ok_or("counter has no pid")?;
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        // Calls racing the kill may fail (they were in flight); count to the first success.
        loop {
            if counter.invoke("get", "k").await.is_ok() && counter.status().pid != Some(pid) {
                break;
            }
            if t.elapsed() > Duration::from_secs(5) {
                return Err("the counter did not come back within 5 s".into());
            }
        }
        restarts.push(t.elapsed());
        // Let the restart policy see a calm plugin before the next kill.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    restarts.sort();
    println!(
        "SIGKILL -> serving again: median {:.1} ms, max {:.1} ms ({} kills)",
        percentile(&restarts, 0.5).as_secs_f64() * 1e3,
        restarts[restarts.len() - 1].as_secs_f64() * 1e3,
        restarts.len()
    );
    // Reloads while four callers keep calling: the hold window callers feel.
    let mut events = host.subscribe();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for i in 0..4 {
        let (counter, stop) = (counter.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match counter.invoke("incr", format!("caller{i}")).await {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    let reloads = 100;
    for _ in 0..reloads {
        counter.reload().await?;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for c in callers {
        let (o, f) = c.await?;
        ok += o;
        failed += f;
    }
    let mut holds = Vec::new();
    let mut totals = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.kind == "handover_done" {
            holds.push(Duration::from_micros(e.hold_us));
            totals.push(Duration::from_micros(e.duration_us));
        }
    }
    holds.sort();
    totals.sort();
    println!(
        "{reloads} reloads under 4 callers: hold p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms; handover p50 {:.1} ms; {ok} calls ok, {failed} failed",
        percentile(&holds, 0.5).as_secs_f64() * 1e3,
        percentile(&holds, 0.99).as_secs_f64() * 1e3,
        holds[holds.len() - 1].as_secs_f64() * 1e3,
        percentile(&totals, 0.5).as_secs_f64() * 1e3,
    );

    host.shutdown().await;

    // From a changed binary on disk to the new generation serving (dev mode, file watch).
    let dir = tempfile::tempdir()?;
    let binary = dir.path().join("counter");
    std::fs::copy(bin.join("counter"), &binary)?;
    let mut config = Config::empty();
    let mut watched = PluginConfig::new(&binary);
    watched.settle_ms = 50;
    config.plugins.insert("counter".into(), watched);
    let host = Host::start(&config).await?;
    let counter = host.plugin("counter").ok_or("no counter")?;
    counter.ready(Duration::from_secs(10)).await?;
    let mut events = host.subscribe();
    let mut detect = Vec::new();
    for _ in 0..10 {
        let tmp = dir.path().join("counter.new");
        std::fs::copy(bin.join("counter"), &tmp)?;
        let t = Instant::now();
        std::fs::rename(&tmp, &binary)?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Ok(e)) if e.kind == "handover_done" => break,
                Ok(Ok(e)) if e.kind == "rollback" => return Err(e.message.into()),
                Ok(Ok(_)) => {}
                _ => return Err("no handover within 10 s".into()),
            }
        }
        detect.push(t.elapsed());
    }
    detect.sort();
    println!(
        "binary replaced -> new generation serving (settle_ms = 50): median {:.1} ms, max {:.1} ms (10 deploys)",
        percentile(&detect, 0.5).as_secs_f64() * 1e3,
        detect[detect.len() - 1].as_secs_f64() * 1e3,
    );
    host.shutdown().await;
    Ok(())
}
