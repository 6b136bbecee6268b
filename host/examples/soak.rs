//! Soak: many reloads under load, watching for slow leaks. Prints failed calls, open
//! file descriptors, zombie children and this host's RSS every 100 reloads. Run by hand
//! (not in CI) from the workspace root after `cargo build --release --workspace --bins --examples`:
//!
//!     ./target/release/examples/soak [RELOADS]     # default 1000

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_host::{Config, Host, PluginConfig};

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn zombies() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc").map_or(0, |entries| {
        entries
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                stat.rsplit_once(')').is_some_and(|(_, rest)| {
                    let mut f = rest.split_whitespace();
                    f.next() == Some("Z") && f.next() == Some(me.as_str())
                })
            })
            .count()
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reloads: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let bin = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .ok_or("cannot find the target directory")?
        .to_owned();
    let mut config = Config::empty();
    config
        .plugins
        .insert("counter".into(), PluginConfig::new(bin.join("counter")));
    let host = Host::start(&config).await?;
    let counter = host.plugin("counter").ok_or("no counter")?;
    counter.ready(Duration::from_secs(10)).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut callers = Vec::new();
    for i in 0..4 {
        let (counter, stop, ok, failed) =
            (counter.clone(), stop.clone(), ok.clone(), failed.clone());
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match counter.invoke("incr", format!("caller{i}")).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("failed call: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    // Warm-up, so that lazily opened descriptors and buffers are in the baseline.
    for _ in 0..10 {
        counter.reload().await?;
    }
    let (fds0, rss0) = (fds(), rss_kib());
    println!(
        "reloads  failed_calls  ok_calls  fds  zombies  rss_kib  (baseline fds {fds0}, rss {rss0} KiB)"
    );
    let started = Instant::now();
    for n in 1..=reloads {
        counter.reload().await?;
        if n % 100 == 0 || n == reloads {
            println!(
                "{n:>7}  {:>12}  {:>8}  {:>3}  {:>7}  {:>7}",
                failed.load(Ordering::Relaxed),
                ok.load(Ordering::Relaxed),
                fds(),
                zombies(),
                rss_kib()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await?;
    }
    let mut total = 0u64;
    for i in 0..4 {
        total += String::from_utf8_lossy(&counter.invoke("get", format!("caller{i}")).await?)
            .parse::<u64>()?;
    }
    println!(
        "{reloads} reloads in {:.1} s: {} failed calls, {} ok; counted {total} (must equal ok); fds {} -> {}; rss {} -> {} KiB; zombies {}",
        started.elapsed().as_secs_f64(),
        failed.load(Ordering::Relaxed),
        ok.load(Ordering::Relaxed),
        fds0,
        fds(),
        rss0,
        rss_kib(),
        zombies()
    );
    if std::env::var_os("SOAK_FDS").is_some() {
        let mut kinds = std::collections::BTreeMap::new();
        for e in std::fs::read_dir("/proc/self/fd")?.flatten() {
            let target = std::fs::read_link(e.path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let kind = target.split(':').next().unwrap_or("").to_owned();
            *kinds.entry(kind).or_insert(0) += 1;
        }
        println!("open descriptors by kind: {kinds:?}");
    }
    host.shutdown().await;
    Ok(())
}
