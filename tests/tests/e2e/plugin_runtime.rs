//! The Rust SDK serves on one thread by default and keeps its concurrency there; the
//! plugin's `env` (BATON_PLUGIN_WORKERS) or its code asks for more threads.

use std::time::{Duration, Instant};

use baton_tests::{TestHost, plugin, wait_until};

/// A `faulty` plugin named `name` with `env` (`KEY = "value"` lines) in its environment.
fn faulty(name: &str, env: &str) -> String {
    let env = if env.is_empty() {
        String::new()
    } else {
        format!("[plugins.{name}.env]\n{env}")
    };
    plugin(name, "faulty", &["ok"], &env)
}

/// Calls `method` of `name` with `payload` in the background; the task answers how long
/// the call took.
fn call_in_background(
    host: &TestHost,
    name: &str,
    method: &str,
    payload: &str,
) -> tokio::task::JoinHandle<Result<Duration, tonic::Status>> {
    let mut client = host.client();
    let request = baton_proto::host::InvokeRequest {
        plugin: name.into(),
        method: method.into(),
        payload: payload.to_owned().into(),
        ..Default::default()
    };
    let started = Instant::now();
    tokio::spawn(async move { client.invoke(request).await.map(|_| started.elapsed()) })
}

/// `count` echoes through `name`, each answered within a second beside `what`.
async fn echoes_answer_beside(host: &TestHost, name: &str, count: usize, what: &str) {
    for i in 0..count {
        let asked = Instant::now();
        let text = format!("call {i}");
        assert_eq!(host.call_text(name, "echo", &text).await, text);
        assert!(
            asked.elapsed() < Duration::from_millis(1000),
            "call {i} took {:?} beside {what}",
            asked.elapsed()
        );
    }
}

#[tokio::test]
async fn a_plugin_on_one_thread_answers_while_other_calls_wait_or_compute() {
    let host = TestHost::start(&faulty("one", "")).await;
    host.serving("one", Duration::from_secs(10)).await;
    assert_eq!(
        host.call_text("one", "runtime", "").await,
        "current_thread 1"
    );

    // A call that awaits forever: on one thread, it must not hold up the others.
    let hang = call_in_background(&host, "one", "hang", "");
    wait_until(
        "the hanging call is in flight",
        Duration::from_secs(5),
        || async { host.log().contains("hanging on purpose").then_some(()) },
    )
    .await;
    // A call that burns CPU for 3 s (on a blocking thread, as the SDK's docs advise).
    let spin = call_in_background(&host, "one", "spin", "3000");
    // Meanwhile calls come and go, each well within the spin's time.
    echoes_answer_beside(&host, "one", 20, "a hanging and a spinning call").await;
    assert!(
        !spin.is_finished(),
        "the spin ended before the echoes did: they were not served beside it"
    );
    let spun = spin.await.expect("spin task").expect("spin call");
    assert!(spun >= Duration::from_millis(3000), "spun {spun:?}");
    hang.abort();
    assert!(host.log().contains("workers=1"), "{}", host.log());
}

#[tokio::test]
async fn the_plugins_env_sets_its_thread_count_over_the_code() {
    let host = TestHost::start(
        &[
            faulty("three", "BATON_PLUGIN_WORKERS = \"3\"\n"),
            // The code asks for 2 workers (`Server::worker_threads`); nothing overrides it.
            faulty("coded", "FAULTY_WORKERS = \"2\"\n"),
            // The code asks for 4; the operator's one thread wins.
            faulty(
                "overridden",
                "FAULTY_WORKERS = \"4\"\nBATON_PLUGIN_WORKERS = \"1\"\n",
            ),
            // Not a count: a warning, and the code's choice (the default, one thread).
            faulty("typo", "BATON_PLUGIN_WORKERS = \"lots\"\n"),
        ]
        .concat(),
    )
    .await;
    for (name, want) in [
        ("three", "multi_thread 3"),
        ("coded", "multi_thread 2"),
        ("overridden", "current_thread 1"),
        ("typo", "current_thread 1"),
    ] {
        host.serving(name, Duration::from_secs(10)).await;
        assert_eq!(host.call_text(name, "runtime", "").await, want, "{name}");
    }
    let log = host.log();
    assert!(
        log.lines()
            .any(|l| l.contains("is not a worker count") && l.contains("lots")),
        "{log}"
    );
    assert!(log.contains("workers=3"), "{log}");
}

#[tokio::test]
async fn on_several_threads_a_call_that_holds_its_thread_holds_up_no_other() {
    let host = TestHost::start(&faulty("two", "BATON_PLUGIN_WORKERS = \"2\"\n")).await;
    host.serving("two", Duration::from_secs(10)).await;
    // Every call reaches the plugin on the host's one connection to it: only if each
    // call runs as a task of its own can another thread take the echoes.
    let hog = call_in_background(&host, "two", "spin-here", "3000");
    wait_until("the hog is running", Duration::from_secs(5), || async {
        let pid = host.status("two").await.pid;
        (baton_tests::cpu_time(pid).ok()? >= Duration::from_millis(200)).then_some(())
    })
    .await;
    echoes_answer_beside(&host, "two", 10, "a call holding a thread").await;
    assert!(!hog.is_finished(), "the hog ended before the echoes did");
    let held = hog.await.expect("hog task").expect("hog call");
    assert!(held >= Duration::from_millis(3000), "held {held:?}");
}

#[tokio::test]
async fn with_spin_us_a_plugin_polls_between_close_calls_and_sleeps_past_its_bound() {
    let config = format!(
        "{}{}",
        plugin("spins", "faulty", &["ok"], "spin_us = 1000"),
        plugin("sleeps", "faulty", &["ok"], "")
    );
    let host = TestHost::start(&config).await;
    let spins = host.serving("spins", Duration::from_secs(10)).await.pid;
    let sleeps = host.serving("sleeps", Duration::from_secs(10)).await.pid;
    assert_eq!(
        baton_tests::process_env(spins, "BATON_SPIN_US").as_deref(),
        Some("1000")
    );
    assert_eq!(baton_tests::process_env(sleeps, "BATON_SPIN_US"), None);
    assert!(host.log().contains("spin_us=1000"), "{}", host.log());

    // 100 calls, 2 ms apart: after each answer the spinning plugin polls for 1 ms.
    let spun = baton_tests::cpu_used_during(spins, host.paced_echoes("spins")).await;
    let slept = baton_tests::cpu_used_during(sleeps, host.paced_echoes("sleeps")).await;
    assert!(
        spun >= slept + Duration::from_millis(40),
        "the spinning plugin used {spun:?} of CPU, the other {slept:?}"
    );
    // With no calls, the spin ends at its bound: the plugin sleeps like any other.
    let idle =
        baton_tests::cpu_used_during(spins, tokio::time::sleep(Duration::from_millis(500))).await;
    assert!(idle <= Duration::from_millis(30), "idle, it used {idle:?}");
}
