//! Chaos: SIGKILLs of the serving process, of a new process mid-handover and of the old
//! one mid-snapshot, and reloads, at random, under load, for a bounded time. The host
//! must stay up and answering; calls must succeed or fail with a clear status; no caller
//! may see an older generation after a newer one; no update may be applied twice; no
//! acknowledged update may be lost unless it came after the last checkpoint before a
//! crash; and no process may outlive the host or linger as a zombie.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use baton_proto::host::{InvokeRequest, ReloadRequest};
use baton_tests::{EventLog, TestHost, alive, plugin, wait_until, zombie_children};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Children of `pid` (the plugin processes of a host).
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_owned))
                })
                .flatten()
                .is_some_and(|ppid| ppid == pid.to_string())
        })
        .collect()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test]
async fn random_kills_during_handovers_under_load_break_no_invariant() {
    let host = TestHost::start(&plugin(
        "counter",
        "counter",
        &[],
        "checkpoint_interval_ms = 200\nhandover_timeout_ms = 3000\ncall_timeout_ms = 5000\n[plugins.counter.restart]\nmax_crashes = 1000\ninitial_backoff_ms = 10\nmax_backoff_ms = 50\n",
    ))
    .await;
    host.serving("counter", Duration::from_secs(10)).await;
    let events = EventLog::start(&host).await;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("chaos seed {seed}");
    let mut rng = Rng(seed);

    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..4)
        .map(|i| {
            let (client, stop) = (host.client(), stop.clone());
            tokio::spawn(async move {
                let mut client = client;
                let key = format!("caller{i}");
                let (mut acked, mut failed, mut last_generation) = (0u64, 0u64, 0u64);
                let mut acked_at = Vec::new();
                let mut unclear = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 1_000_000 {
                    n += 1;
                    let reply = client
                        .invoke(InvokeRequest {
                            plugin: "counter".into(),
                            method: "incr".into(),
                            payload: key.clone().into_bytes().into(),
                            metadata: Default::default(),
                        })
                        .await;
                    match reply {
                        Ok(r) => {
                            let r = r.into_inner();
                            assert!(
                                r.generation >= last_generation,
                                "{key}: served by generation {} after generation {last_generation}",
                                r.generation
                            );
                            last_generation = r.generation;
                            acked += 1;
                            acked_at.push(unix_ms());
                        }
                        Err(s) => {
                            failed += 1;
                            let clear = matches!(
                                s.code(),
                                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                            ) && s.message().contains("plugin counter");
                            if !clear {
                                unclear.push(format!("{:?}: {}", s.code(), s.message()));
                            }
                        }
                    }
                }
                (key, acked, failed, unclear, acked_at)
            })
        })
        .collect();

    let host_pid = host.pid();
    let mut seen_pids = HashSet::new();
    let mut actions = [0u32; 4];
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        let serving = tokio::time::timeout(
            Duration::from_secs(5),
            host.client().status(baton_proto::host::StatusRequest {
                plugin: "counter".into(),
            }),
        )
        .await
        .expect("the control API answers within 5 s")
        .expect("status")
        .into_inner();
        seen_pids.extend(children(host_pid));
        let action = rng.next(4) as usize;
        actions[action] += 1;
        match action {
            // A reload.
            0 => {
                let _ = host
                    .client()
                    .reload(ReloadRequest {
                        plugin: "counter".into(),
                    })
                    .await;
            }
            // The serving process dies.
            1 if serving.pid != 0 => {
                let _ = kill(Pid::from_raw(serving.pid as i32), Signal::SIGKILL);
            }
            // A reload whose new process dies while starting or restoring.
            2 => {
                let mut client = host.client();
                let reload = tokio::spawn(async move {
                    client
                        .reload(ReloadRequest {
                            plugin: "counter".into(),
                        })
                        .await
                });
                tokio::time::sleep(Duration::from_millis(rng.next(20))).await;
                for pid in children(host_pid) {
                    if pid != serving.pid {
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    }
                }
                let _ = reload.await;
            }
            // A reload whose old process dies mid-handover (during the snapshot, often).
            _ if serving.pid != 0 => {
                let mut client = host.client();
                let reload = tokio::spawn(async move {
                    client
                        .reload(ReloadRequest {
                            plugin: "counter".into(),
                        })
                        .await
                });
                tokio::time::sleep(Duration::from_millis(rng.next(20))).await;
                let _ = kill(Pid::from_raw(serving.pid as i32), Signal::SIGKILL);
                let _ = reload.await;
            }
            _ => {}
        }
        assert!(alive(host_pid), "the host died");
        // Two processes killed at once are two zombies until the host's next reap; a
        // pile-up is zombies that stay.
        wait_until(
            "at most one zombie child of the host (zombies pile up)",
            Duration::from_secs(2),
            || async { (zombie_children(host_pid).len() <= 1).then_some(()) },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(50 + rng.next(100))).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut totals = Vec::new();
    let mut acks = Vec::new();
    for c in callers {
        let (key, acked, failed, unclear, acked_at) =
            c.await.expect("a caller saw an invariant broken");
        assert!(unclear.is_empty(), "{key}: unclear failures: {unclear:?}");
        totals.push((key, acked, failed));
        acks.push(acked_at);
    }
    eprintln!(
        "chaos actions [reload, kill serving, kill new, kill old] = {actions:?}; calls (key, ok, failed) = {totals:?}"
    );

    // Settled: every count is at most what was attempted (nothing applied twice).
    host.serving("counter", Duration::from_secs(10)).await;
    let checkpoints: Vec<u64> = events
        .of_kind("checkpoint")
        .iter()
        .map(|e| e.unix_ms)
        .collect();
    let crashes: Vec<u64> = events
        .of_kind("crashed")
        .iter()
        .map(|e| e.unix_ms)
        .collect();
    for ((key, acked, failed), acked_at) in totals.iter().zip(&acks) {
        let value: u64 = host
            .call_text("counter", "get", key)
            .await
            .parse()
            .expect("a count");
        assert!(
            value <= acked + failed,
            "{key}: {value} counted, only {} attempted",
            acked + failed
        );
        // A crash may lose what was acknowledged after the last checkpoint before it.
        let may_lose: u64 = crashes
            .iter()
            .map(|&crash| {
                let since = checkpoints
                    .iter()
                    .copied()
                    .filter(|&c| c <= crash)
                    .max()
                    .unwrap_or(0);
                acked_at
                    .iter()
                    .filter(|&&t| t > since && t <= crash)
                    .count() as u64
            })
            .sum();
        eprintln!(
            "{key}: {value} counted, {acked} acknowledged, at most {may_lose} losable to crashes"
        );
        assert!(
            value + may_lose >= *acked,
            "{key}: {value} counted of {acked} acknowledged; at most {may_lose} could be lost to {} crashes",
            crashes.len()
        );
    }
    assert!(!checkpoints.is_empty(), "no checkpoint was taken");
    assert!(
        actions.iter().sum::<u32>() > 20,
        "too little chaos: {actions:?}"
    );

    // No process outlives the host, none is left a zombie.
    let mut host = host;
    assert_eq!(
        host.stop(Duration::from_secs(15)),
        Some(0),
        "the host stops cleanly"
    );
    seen_pids.extend([0]);
    wait_until(
        "every plugin process is gone",
        Duration::from_secs(5),
        || async { seen_pids.iter().all(|&p| p == 0 || !alive(p)).then_some(()) },
    )
    .await;
}
