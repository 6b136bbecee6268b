//! Prints rough figures for one host on this machine: call latency through a
//! `PluginHandle` and crash-to-serving time. Run from the workspace root after
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
    host.shutdown().await;
    Ok(())
}
