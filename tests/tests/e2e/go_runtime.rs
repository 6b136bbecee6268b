//! The Go SDK runs a plugin's Go code on one thread unless the plugin's `env`
//! (BATON_PLUGIN_WORKERS, as for the Rust SDK, or Go's own GOMAXPROCS) asks for more.

use std::time::Duration;

use baton_tests::{TestHost, go_counter};

#[tokio::test]
async fn the_go_sdk_serves_on_one_thread_unless_the_env_asks_for_more() {
    let Some(go) = go_counter() else { return };
    let plugin = |name: &str, env: &str| {
        let mut table = format!("[plugins.{name}]\ncommand = \"{}\"\n", go.display());
        if !env.is_empty() {
            table.push_str(&format!("[plugins.{name}.env]\n{env}"));
        }
        table
    };
    let host = TestHost::start(
        &[
            plugin("one", ""),
            plugin("three", "BATON_PLUGIN_WORKERS = \"3\"\n"),
            // An operator who sets Go's own variable keeps it.
            plugin("gomax", "GOMAXPROCS = \"2\"\n"),
            // Not a count: a warning naming it, and the default.
            plugin("typo", "BATON_PLUGIN_WORKERS = \"lots\"\n"),
        ]
        .concat(),
    )
    .await;
    for (name, threads) in [("one", 1), ("three", 3), ("gomax", 2), ("typo", 1)] {
        host.serving(name, Duration::from_secs(20)).await;
        assert_eq!(host.call_text(name, "incr", "calls").await, "1", "{name}");
        let log = host.log();
        let serving = log
            .lines()
            .find(|l| l.contains(&format!("plugin={name} ")) && l.contains("msg=serving"))
            .unwrap_or_else(|| panic!("no serving line from {name} in:\n{log}"));
        assert!(
            serving.contains(&format!("workers={threads}")),
            "{name} should serve on {threads} thread(s): {serving}"
        );
    }
    let log = host.log();
    assert!(
        log.lines().any(|l| l.contains("plugin=typo")
            && l.contains("is not a worker count")
            && l.contains("lots")),
        "{log}"
    );
}
