//! A program that embeds the host and starts processes of its own, on other threads:
//! its forks must not make plugin starts fail. (A fork while the host's private copy of
//! a plugin binary is open for writing holds that descriptor until the child execs, and
//! exec of the copy fails meanwhile with ETXTBSY.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use baton_host::{Config, Host, PluginConfig, ReloadMode};
use baton_tests::bin;

#[tokio::test]
async fn forks_on_other_threads_do_not_fail_plugin_starts() {
    let mut config = Config::empty();
    let mut plugin = PluginConfig::new(bin("echo"));
    plugin.reload = Some(ReloadMode::Manual);
    config.plugins.insert("echo".into(), plugin);
    let host = Host::start(&config).await.expect("the host starts");
    let echo = host.plugin("echo").expect("echo");
    echo.ready(Duration::from_secs(10)).await.expect("serving");
    // The embedding program, busy starting processes of its own.
    let stop = Arc::new(AtomicBool::new(false));
    let forkers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut forked = 0;
                while !stop.load(Ordering::Relaxed) && forked < 100_000 {
                    if let Ok(mut child) = std::process::Command::new("true").spawn() {
                        let _ = child.wait();
                    }
                    forked += 1;
                }
            })
        })
        .collect();
    // Each reload starts a process from a fresh private copy.
    let mut failures = Vec::new();
    for _ in 0..40 {
        if let Err(why) = echo.reload().await {
            failures.push(why);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for forker in forkers {
        forker.join().expect("a forker");
    }
    host.shutdown().await;
    assert!(
        failures.is_empty(),
        "{} of 40 reloads failed: {:?}",
        failures.len(),
        failures.first()
    );
}
