//! Live handover against stop-and-copy: the same large state, the same four callers
//! writing to it without pause, the same number of reloads, once with pre-copy and once
//! with `pre_copy = false`. Afterwards the plugin's whole state must equal every write
//! the callers saw acknowledged, by the CRC-32 of a full snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use baton_host::{Config, Host, PluginConfig, ReloadMode};
use bytes::Bytes;

use crate::reload::handover_done;
use crate::report::{Row, quantile, sorted};
use crate::{Bins, Error, Mode};

const MIB: usize = 1 << 20;
/// Bytes per fill entry: a 1 GiB state is 262,144 of them.
const ENTRY: usize = 4096;
const WRITERS: usize = 4;
/// Bytes per written value.
const WRITE: usize = 100;

fn fill_value(i: usize) -> Vec<u8> {
    (0..ENTRY).map(|j| ((i * 7 + j) % 251) as u8).collect()
}

fn write_key(w: usize, n: usize) -> String {
    format!("w{w}:{n:010}")
}

fn write_value(w: usize, n: usize) -> Vec<u8> {
    let seed = format!("{w}/{n}/");
    seed.bytes().cycle().take(WRITE).collect()
}

/// The CRC-32, length and entry count the plugin's whole state must have (its `digest`):
/// the fill, then each writer's acknowledged writes, in key order, in the StateMap
/// format, hashed as it is made rather than built in memory.
fn expected_digest(entries: usize, acked: &[usize]) -> String {
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    let mut feed = |bytes: &[u8]| {
        crc.update(bytes);
        len += bytes.len() as u64;
    };
    let count = entries + acked.iter().sum::<usize>();
    feed(b"BTKV");
    feed(&(count as u64).to_le_bytes());
    let mut entry = |key: &[u8], value: &[u8]| {
        feed(&(key.len() as u32).to_le_bytes());
        feed(key);
        feed(&(value.len() as u32).to_le_bytes());
        feed(value);
    };
    // "fill:" sorts before "w0:", and each writer's keys are zero-padded.
    for i in 0..entries {
        entry(format!("fill:{i:08}").as_bytes(), &fill_value(i));
    }
    for (w, &n) in acked.iter().enumerate() {
        for n in 0..n {
            entry(write_key(w, n).as_bytes(), &write_value(w, n));
        }
    }
    format!("{:08x} {len} {count}", crc.finalize())
}

/// What one series of reloads measured.
struct Series {
    holds_ms: Vec<f64>,
    handovers_ms: Vec<f64>,
    rounds: Vec<f64>,
    final_bytes: Vec<f64>,
    outcomes: Vec<String>,
    writes_per_sec: f64,
    failed: usize,
    state_ok: bool,
}

async fn series(
    bins: &Bins,
    state: usize,
    reloads: usize,
    pre_copy: bool,
) -> Result<Series, Error> {
    let dir = tempfile::Builder::new().prefix("baton-bench-").tempdir()?;
    let mut plugin = PluginConfig::new(bins.get("bench-kv")?);
    plugin.reload = Some(ReloadMode::Manual);
    plugin.pre_copy = pre_copy;
    plugin.handover_timeout_ms = 300_000;
    plugin.max_state_bytes = 4 << 30;
    plugin.call_timeout_ms = 120_000;
    let mut config = Config::empty();
    config.plugins.insert("kv".into(), plugin);
    let host = Host::start(&config).await?;
    let result = async {
        let handle = host.plugin("kv").ok_or("the host has no kv plugin")?;
        handle.ready(Duration::from_secs(10)).await?;
        let entries = state / ENTRY;
        handle.invoke("fill", format!("{entries} {ENTRY}")).await?;
        let mut events = host.subscribe();
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let (handle, stop) = (handle.clone(), stop.clone());
            writers.spawn(async move {
                let (mut acked, mut failed) = (0usize, 0usize);
                // Bounded by the stop flag, and by a count and a time should it never come.
                while !stop.load(Ordering::Relaxed)
                    && acked < 50_000_000
                    && started.elapsed() < Duration::from_secs(1800)
                {
                    let mut payload = write_key(w, acked).into_bytes();
                    payload.push(b'=');
                    payload.extend(write_value(w, acked));
                    match handle.invoke("put", Bytes::from(payload)).await {
                        Ok(_) => acked += 1,
                        // The write may or may not have landed: this writer stops, so the
                        // state check below still knows every write that can be there.
                        Err(_) => {
                            failed += 1;
                            break;
                        }
                    }
                }
                (w, acked, failed)
            });
        }
        let mut s = Series {
            holds_ms: Vec::new(),
            handovers_ms: Vec::new(),
            rounds: Vec::new(),
            final_bytes: Vec::new(),
            outcomes: Vec::new(),
            writes_per_sec: 0.0,
            failed: 0,
            state_ok: false,
        };
        let mut result = Ok(());
        for _ in 0..reloads {
            // Writes land between handovers too.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Err(e) = handle.reload().await {
                result = Err(format!("a reload failed: {e}").into());
                break;
            }
            match handover_done(&mut events, "kv", Duration::from_secs(10)).await {
                Ok(e) => {
                    s.holds_ms.push(e.hold_us as f64 / 1e3);
                    s.handovers_ms.push(e.duration_us as f64 / 1e3);
                    s.rounds.push(e.precopy_bytes.len() as f64);
                    s.final_bytes.push(e.final_bytes as f64);
                    s.outcomes.push(e.precopy.to_string());
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let mut acked = vec![0; WRITERS];
        while let Some(done) = writers.join_next().await {
            let (w, n, failed) = done?;
            acked[w] = n;
            s.failed += failed;
        }
        result?;
        s.writes_per_sec = acked.iter().sum::<usize>() as f64 / elapsed;
        let digest = handle.invoke("digest", "").await?;
        let want = tokio::task::spawn_blocking(move || expected_digest(entries, &acked)).await?;
        s.state_ok = digest[..] == *want.as_bytes();
        if !s.state_ok {
            eprintln!(
                "baton-bench: the state after the reloads is {}, the callers' acknowledged writes make {want}",
                String::from_utf8_lossy(&digest)
            );
        }
        Ok::<_, Error>(s)
    }
    .await;
    host.shutdown().await;
    drop(dir);
    result
}

fn name(bytes: usize) -> String {
    if bytes >= 1 << 30 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

pub async fn run(bins: &Bins, mode: Mode, rows: &mut Vec<Row>) -> Result<(), Error> {
    let (sizes, reloads): (&[usize], usize) = match mode {
        Mode::Quick => (&[16 * MIB], 5),
        Mode::Full => (&[64 * MIB, 1 << 30], 20),
    };
    for &size in sizes {
        eprintln!("baton-bench: {}: stop-and-copy …", name(size));
        let copy = series(bins, size, reloads, false).await?;
        eprintln!("baton-bench: {}: live (pre-copy) …", name(size));
        let live = series(bins, size, reloads, true).await?;
        report(size, reloads, &copy, &live, rows);
    }
    Ok(())
}

fn report(size: usize, reloads: usize, copy: &Series, live: &Series, rows: &mut Vec<Row>) {
    let n = name(size);
    let (ch, lh) = (sorted(copy.holds_ms.clone()), sorted(live.holds_ms.clone()));
    rows.push(
        Row::new(
            "live handover",
            format!(
                "{n}, 4 writers: hold p50, live (baseline: stop-and-copy, {reloads} reloads each)"
            ),
            quantile(&lh, 0.5),
            "ms",
        )
        .baseline(quantile(&ch, 0.5)),
    );
    let p99 = quantile(&lh, 0.99);
    let limit = if size >= 1 << 30 { 5.0 } else { 2.0 };
    rows.push(
        Row::new(
            "live handover",
            format!("{n}, 4 writers: hold p99, live"),
            p99,
            "ms",
        )
        .baseline(quantile(&ch, 0.99))
        .target(format!("≤ {limit} ms"), p99 <= limit),
    );
    rows.push(
        Row::new(
            "live handover",
            format!("{n}, 4 writers: hold max, live"),
            quantile(&lh, 1.0),
            "ms",
        )
        .baseline(quantile(&ch, 1.0)),
    );
    let (cd, ld) = (
        sorted(copy.handovers_ms.clone()),
        sorted(live.handovers_ms.clone()),
    );
    let (whole, base) = (quantile(&ld, 0.5), quantile(&cd, 0.5));
    let mut row = Row::new(
        "live handover",
        format!("{n}: whole handover p50, live"),
        whole,
        "ms",
    )
    .baseline(base);
    if size < 1 << 30 {
        row = row.target("≤ 3 × stop-and-copy", whole <= 3.0 * base);
    }
    rows.push(row);
    rows.push(Row::new(
        "live handover",
        format!("{n}: pre-copy rounds p50 (the whole state, then deltas)"),
        quantile(&sorted(live.rounds.clone()), 0.5),
        "rounds",
    ));
    let finals = sorted(live.final_bytes.clone());
    rows.push(
        Row::new(
            "live handover",
            format!("{n}: moved with calls held p50, live (baseline: stop-and-copy)"),
            quantile(&finals, 0.5) / 1024.0,
            "KiB",
        )
        .baseline(quantile(&sorted(copy.final_bytes.clone()), 0.5) / 1024.0),
    );
    let mut ends = std::collections::BTreeMap::new();
    for o in &live.outcomes {
        *ends.entry(o.as_str()).or_insert(0) += 1;
    }
    let ends: Vec<String> = ends.iter().map(|(o, k)| format!("{o} {k}")).collect();
    rows.push(Row::new(
        "live handover",
        format!(
            "{n}: pre-copies that converged (how each ended: {})",
            ends.join(", ")
        ),
        live.outcomes.iter().filter(|o| *o == "converged").count() as f64,
        "handovers",
    ));
    rows.push(
        Row::new(
            "live handover",
            format!("{n}: writes acknowledged per second, live (baseline: stop-and-copy)"),
            live.writes_per_sec,
            "writes/s",
        )
        .baseline(copy.writes_per_sec),
    );
    let failed = copy.failed + live.failed;
    rows.push(
        Row::new(
            "live handover",
            format!("{n}: failed calls, both"),
            failed as f64,
            "calls",
        )
        .target_at_any_size("0", failed == 0),
    );
    let equal = copy.state_ok && live.state_ok;
    rows.push(
        Row::new(
            "live handover",
            format!(
                "{n}: state equal to every acknowledged write (CRC-32 of a full snapshot), both"
            ),
            if equal { 1.0 } else { 0.0 },
            "yes",
        )
        .target_at_any_size("yes", equal),
    );
}
