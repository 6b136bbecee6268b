//! One counter's state handed across all four SDKs under load: Rust → Python → Go →
//! TypeScript → Rust, each a reload of the same plugin, with no failed call and the
//! count kept.

use std::time::Duration;

use baton_tests::{
    EventLog, Load, TestHost, bin, go_counter, replace_by_rename, repo_root, script, ts_counter,
    venv_python, wait_until,
};

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_counter_goes_round_all_four_languages_under_load_with_no_failed_call() {
    let (Some(go), Some(ts)) = (go_counter(), ts_counter()) else {
        return;
    };
    let python = format!(
        "exec {} {}",
        venv_python().display(),
        repo_root()
            .join("example-plugins/python-counter/counter.py")
            .display()
    );
    // (language, the wrapper's body, what its process's command line shows)
    let ring = [
        ("Python", python, "counter.py".to_owned()),
        (
            "Go",
            format!("exec {}", go.display()),
            "go-counter".to_owned(),
        ),
        (
            "TypeScript",
            format!("exec {}", ts.join(" ")),
            "ts-counter".to_owned(),
        ),
        (
            "Rust",
            format!("exec {}", bin("counter").display()),
            bin("counter").display().to_string(),
        ),
    ];

    let dir = tempfile::Builder::new()
        .prefix("baton-ring-")
        .tempdir()
        .expect("temp dir");
    let wrapper = dir.path().join("counter");
    replace_by_rename(
        &wrapper,
        &script(&format!("exec {}", bin("counter").display())),
    );
    let host = TestHost::start(&format!(
        "[plugins.counter]\ncommand = \"{}\"\nsettle_ms = 50\n",
        wrapper.display()
    ))
    .await;
    let events = EventLog::start(&host).await;
    host.serving("counter", Duration::from_secs(20)).await;
    assert_eq!(host.call_text("counter", "incr", "before").await, "1");

    let load = Load::start(&host, 4, "counter", "incr", "ring");
    let mut counted = 0;
    for (i, (language, body, shows)) in ring.iter().enumerate() {
        // The load reaches each generation before it is replaced.
        let served = host.status("counter").await.generation;
        counted = wait_until(
            &format!("calls reach generation {served}"),
            Duration::from_secs(20),
            || async {
                let n: u64 = host
                    .call_text("counter", "get", "ring")
                    .await
                    .parse()
                    .ok()?;
                (n > counted).then_some(n)
            },
        )
        .await;
        replace_by_rename(&wrapper, &script(body));
        let next = served + 1;
        let status = wait_until(
            &format!("the {language} counter serves generation {next}"),
            Duration::from_secs(30),
            || async {
                let s = host.status("counter").await;
                (s.generation >= next && s.state == baton_proto::host::PluginState::Serving as i32)
                    .then_some(s)
            },
        )
        .await;
        assert!(
            cmdline(status.pid).contains(shows.as_str()),
            "step {i}: generation {next} should be the {language} counter, runs {}",
            cmdline(status.pid)
        );
    }
    let (total, failures) = load.finish().await;

    assert!(
        failures.is_empty(),
        "{} calls failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(total > 0);
    assert_eq!(
        host.call_text("counter", "get", "ring").await,
        total.to_string(),
        "every successful incr was counted, across four languages"
    );
    assert_eq!(host.call_text("counter", "get", "before").await, "1");
    assert_eq!(events.of_kind("handover_done").len(), 4);
    assert!(events.of_kind("rollback").is_empty());
}
