//! `baton ctl stop` on a plugin whose state would not survive it (no checkpoints): it
//! says so and stops only with `--discard-state`; one that keeps checkpoints stops with
//! a final one, as before; a config reload that removes it says the state is gone.

use std::time::Duration;

use baton_proto::host::PluginState;
use baton_tests::{TestHost, plugin, replace_by_rename};

async fn count(host: &TestHost, name: &str) -> String {
    host.call_text(name, "get", "k").await
}

#[tokio::test]
async fn stopping_a_plugin_without_checkpoints_asks_for_discard_state() {
    let kept = plugin("kept", "counter", &[], "checkpoint_interval_ms = 60000\n");
    let host = TestHost::start(&format!("{}{kept}", plugin("bare", "counter", &[], ""))).await;
    for name in ["bare", "kept"] {
        host.serving(name, Duration::from_secs(10)).await;
        for _ in 0..3 {
            host.call_text(name, "incr", "k").await;
        }
    }

    // Refused, saying why and what to do; the plugin serves on with its state.
    let (ok, out, err) = host.ctl(&["stop", "bare"]);
    assert!(!ok, "stopped without a word: {out}");
    for words in [
        "plugin bare keeps no checkpoints",
        "its state (in the process) would not survive the stop",
        "baton ctl stop bare --discard-state",
        "plugins.bare.checkpoint_interval_ms",
    ] {
        assert!(err.contains(words), "{words:?} is not said: {err}");
    }
    let status = host.status("bare").await;
    assert_eq!(status.state, PluginState::Serving as i32, "{status:?}");
    assert_eq!(count(&host, "bare").await, "3");

    // Asked for on purpose: stopped, and it says the state is gone.
    let (ok, out, err) = host.ctl(&["stop", "bare", "--discard-state"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("plugin bare stopped (by baton ctl (uid ") && out.contains("state discarded"),
        "{out}"
    );
    assert_eq!(host.status("bare").await.state, PluginState::Stopped as i32);
    // Stopped already: nothing left to lose, no flag needed.
    let (ok, _, err) = host.ctl(&["stop", "bare"]);
    assert!(ok, "{err}");
    assert!(host.ctl(&["start", "bare"]).0);
    assert_eq!(count(&host, "bare").await, "0");

    // With checkpoints: a final one, the state back at the start, no flag needed.
    let (ok, out, err) = host.ctl(&["stop", "kept"]);
    assert!(ok, "{err}");
    assert!(!out.contains("discarded"), "{out}");
    assert!(host.ctl(&["start", "kept"]).0);
    assert_eq!(count(&host, "kept").await, "3");

    // A config reload that removes it: the config asked, so it goes, and the answer
    // says its state went with it.
    host.call_text("bare", "incr", "k").await;
    let text = format!("socket = \"{}\"\n\n{kept}", host.socket.display());
    replace_by_rename(&host.dir.path().join("baton.toml"), text.as_bytes());
    let (ok, out, err) = host.ctl(&["reload-config"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "plugin bare: removed, stopped; its state is discarded (it kept no checkpoints)"
        ),
        "{out}"
    );
}
