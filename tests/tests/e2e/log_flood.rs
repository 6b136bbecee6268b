//! A plugin that floods its log cannot flood the host's: past its per-plugin rate
//! (`log_lines_per_sec`, `log_bytes_per_sec`) lines are dropped and counted, the
//! plugin's pipe is still read, and the host says how much it dropped.

use std::time::{Duration, Instant};

use baton_tests::{TestHost, plugin, wait_until};

/// Bytes of the host's log, and when they were measured.
fn log_size(host: &TestHost) -> u64 {
    std::fs::metadata(host.dir.path().join("host.log")).map_or(0, |m| m.len())
}

/// Waits for the host's line saying that `plugin`'s lines were dropped; returns it.
async fn dropped_line(host: &TestHost, plugin: &str) -> String {
    wait_until(
        "the host logs how many lines it dropped",
        Duration::from_secs(30),
        || async {
            host.log()
                .lines()
                .find(|l| l.contains(&format!("plugin {plugin}: ")) && l.contains("bytes) dropped"))
                .map(str::to_owned)
        },
    )
    .await
}

#[tokio::test]
async fn a_plugin_flooding_stderr_grows_the_host_log_by_a_bounded_amount() {
    let host = TestHost::start(&plugin("faulty", "faulty", &["ok"], "")).await;
    host.serving("faulty", Duration::from_secs(10)).await;
    let before = log_size(&host);
    let started = Instant::now();
    // The call returns once the plugin has written every byte: the host kept reading.
    let written: u64 = host
        .call_text("faulty", "flood", "30")
        .await
        .parse()
        .expect("bytes written");
    let line = dropped_line(&host, "faulty").await;
    let seconds = started.elapsed().as_secs_f64();
    let grown = log_size(&host) - before;
    eprintln!(
        "the plugin wrote {written} bytes to stderr in {seconds:.1} s; the host log grew by {grown} bytes"
    );
    // Defaults: 1000 lines and 1 MiB a second; a line of 100 bytes is under 400 in the
    // host's log with its timestamp and fields. Two seconds of slack for the windows.
    let bound = ((seconds + 2.0) * 1000.0 * 400.0) as u64;
    assert!(
        grown < bound,
        "the host log grew by {grown} bytes in {seconds:.1} s (bound {bound}) while the plugin wrote {written}"
    );
    assert!(line.contains("log_lines_per_sec"), "{line}");
    assert_eq!(host.call_text("faulty", "echo", "alive").await, "alive");
}

#[tokio::test]
async fn the_log_service_has_the_same_configurable_limit() {
    let host = TestHost::start(&plugin(
        "faulty",
        "faulty",
        &["ok"],
        "log_lines_per_sec = 50\nlog_bytes_per_sec = 1000000\n",
    ))
    .await;
    host.serving("faulty", Duration::from_secs(10)).await;
    let started = Instant::now();
    assert_eq!(host.call_text("faulty", "flood-log", "3000").await, "3000");
    let line = dropped_line(&host, "faulty").await;
    let seconds = started.elapsed().as_secs_f64();
    let logged = host
        .log()
        .lines()
        .filter(|l| l.contains("flooding the host log"))
        .count();
    eprintln!("3000 Log calls in {seconds:.1} s; {logged} reached the host's log");
    let bound = ((seconds + 2.0) * 50.0) as usize;
    assert!(
        logged <= bound,
        "{logged} lines logged in {seconds:.1} s, bound {bound}"
    );
    assert!(logged > 0, "lines within the limit are logged");
    assert!(line.contains("log_lines_per_sec = 50"), "{line}");
}

#[tokio::test]
async fn a_plugin_flooding_stderr_with_short_lines_does_not_starve_its_neighbour() {
    let config = format!(
        "{}{}",
        plugin("flooder", "faulty", &["ok"], ""),
        plugin("neighbour", "faulty", &["ok"], "")
    );
    let host = TestHost::start(&config).await;
    host.serving("flooder", Duration::from_secs(10)).await;
    host.serving("neighbour", Duration::from_secs(10)).await;
    assert_eq!(host.call_text("flooder", "yes", "").await, "flooding");
    // Give the flood a moment to fill the pipe, then call the neighbour 100 times. With
    // nothing flooding, these take well under a second.
    dropped_line(&host, "flooder").await;
    let started = Instant::now();
    let calls = async {
        for i in 0..100 {
            assert_eq!(
                host.call_text("neighbour", "echo", &i.to_string()).await,
                i.to_string()
            );
        }
    };
    let done = tokio::time::timeout(Duration::from_secs(20), calls).await;
    let took = started.elapsed();
    eprintln!("100 calls to the neighbour during the flood took {took:?}");
    assert!(
        done.is_ok(),
        "100 calls to the neighbour took over 20 s while another plugin flooded stderr"
    );
    // The host still reports the flood every second or so: its own timer is not starved.
    let reports = || {
        host.log()
            .lines()
            .filter(|l| l.contains("plugin flooder: ") && l.contains("bytes) dropped"))
            .count()
    };
    let before = reports();
    wait_until("two more drop reports", Duration::from_secs(5), || async {
        (reports() >= before + 2).then_some(())
    })
    .await;
}
