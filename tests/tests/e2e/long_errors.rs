//! Long error text through the control API: a status message travels in an HTTP/2
//! header, which a client takes only so large (16 KiB for hyper, 8 KiB for grpcio).
//! Past that the operator got "h2 protocol error" instead of the reason; now the reason
//! arrives cut to a bound, with its first lines and a count of the rest.

use std::time::Duration;

use baton_tests::{TestHost, plugin, replace_by_rename};

/// Most bytes of `baton ctl`'s error output the test accepts: the status message, at
/// most 6 KiB as sent (baton_transport::MAX_STATUS_MESSAGE_BYTES), and the CLI's own
/// words around it (the code; for `invoke`, the methods the plugin describes).
const MOST_SHOWN: usize = (6 << 10) + 512;

#[tokio::test]
async fn a_config_with_125_errors_is_refused_with_the_first_errors_and_a_count_of_all() {
    let host = TestHost::start(&plugin("echo", "echo", &[], "")).await;
    host.serving("echo", Duration::from_secs(10)).await;

    let mut text = format!("socket = \"{}\"\n\n", host.socket.display());
    text.push_str(&plugin("echo", "echo", &[], ""));
    for i in 0..125 {
        text.push_str(&format!(
            "[plugins.bad{i}]\ncommand = \"/bin/true\"\nmax_held_calls = \"many\"\n"
        ));
    }
    replace_by_rename(&host.dir.path().join("baton.toml"), text.as_bytes());

    let (ok, out, err) = host.ctl(&["reload-config"]);
    assert!(!ok, "refused: {out}");
    assert!(!err.contains("protocol error"), "{err}");
    assert!(
        err.contains("the config was refused, nothing changed: 125 errors")
            && err.contains("field `plugins.bad0.max_held_calls`")
            && err.contains("field `plugins.bad1.max_held_calls`"),
        "{err}"
    );
    assert!(err.contains("more lines not shown"), "{err}");
    assert!(err.len() <= MOST_SHOWN, "{} bytes: {err}", err.len());
    // Refused whole: the one plugin there was still serves, alone.
    assert_eq!(host.list().await.len(), 1);
    assert_eq!(host.call_text("echo", "echo", "still").await, "still");
}

#[tokio::test]
async fn a_plugins_long_error_reaches_the_operator_cut_to_the_bound() {
    let host = TestHost::start(&plugin("f", "faulty", &[], "")).await;
    host.serving("f", Duration::from_secs(10)).await;
    // The host names the method the plugin does not have: 20,000 characters of it.
    let method = "m".repeat(20_000);
    let (ok, out, err) = host.ctl(&["invoke", "f", &method]);
    assert!(!ok, "{out}");
    let shown: String = err.chars().take(300).collect();
    assert!(!err.contains("protocol error"), "{shown}");
    assert!(
        err.contains("plugin f describes no method \"mmmm") && err.contains("more bytes not shown"),
        "{shown} … {}",
        tail(&err, 300)
    );
    assert!(err.len() <= MOST_SHOWN, "{} bytes", err.len());
    // The plugin was never at fault for the size: it serves on, uncounted as a crash.
    assert_eq!(host.status("f").await.restarts, 0);
    assert_eq!(host.call_text("f", "echo", "still").await, "still");
}

/// The last `n` characters of `text`: a byte offset could fall inside a character.
fn tail(text: &str, n: usize) -> String {
    let chars = text.chars().count();
    text.chars().skip(chars.saturating_sub(n)).collect()
}
