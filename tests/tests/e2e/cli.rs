//! `baton ctl` as people type it: the socket given anywhere (or by BATON_SOCKET), JSON
//! for scripts, local times, past events before live ones, a clean end when the host
//! stops, errors that say what to do next. Each runs the real `baton ctl` against a
//! real host.

use std::time::Duration;

use baton_tests::{TestHost, Watched, ctl_at, ctl_command, plugin, venv_python, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A host with the echo plugin and a faulty one that behaves.
async fn host() -> TestHost {
    let host = TestHost::start(&format!(
        "{}{}",
        plugin("echo", "echo", &[], ""),
        plugin("faulty", "faulty", &["ok"], "")
    ))
    .await;
    host.serving("echo", Duration::from_secs(10)).await;
    host.serving("faulty", Duration::from_secs(10)).await;
    host
}

fn ok(out: (Option<i32>, String, String), what: &str) -> String {
    let (code, stdout, stderr) = out;
    assert_eq!(code, Some(0), "{what}: {stderr}");
    stdout
}

/// Whether `text` is an RFC 3339 time to the millisecond with an offset, as
/// `2025-03-01T14:05:09.123+01:00`; returns the offset.
fn rfc3339_offset(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| bytes[i].is_ascii_digit());
    let shape = bytes.len() == 29
        && digits(0..4)
        && bytes[4] == b'-'
        && bytes[10] == b'T'
        && bytes[19] == b'.'
        && digits(20..23)
        && matches!(bytes[23], b'+' | b'-');
    shape.then(|| &text[23..])
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

#[tokio::test]
async fn the_socket_is_taken_anywhere_on_the_line_and_from_baton_socket() {
    let host = host().await;
    let socket = host.socket.to_str().expect("a UTF-8 path");
    for args in [
        vec!["ctl", "--socket", socket, "list"],
        vec!["ctl", "list", "--socket", socket],
        vec!["ctl", "status", "echo", "--socket", socket, "--json"],
    ] {
        let out = std::process::Command::new(baton_tests::bin("baton"))
            .args(&args)
            .output()
            .expect("run baton ctl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("echo"),
            "{args:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = std::process::Command::new(baton_tests::bin("baton"))
        .args(["ctl", "list"])
        .env("BATON_SOCKET", socket)
        .output()
        .expect("run baton ctl");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("faulty"));

    // Nobody there: the error says how to get a host, or how to point at one.
    let nowhere = host.dir.path().join("nobody.sock");
    let (code, _, stderr) = ctl_at(&nowhere, &["list"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    for hint in [
        "cannot reach a baton host",
        "baton run",
        "--socket",
        "BATON_SOCKET",
    ] {
        assert!(stderr.contains(hint), "{hint:?} missing from: {stderr}");
    }
}

#[tokio::test]
async fn invoke_ends_with_a_newline_on_a_terminal_and_not_in_a_pipe() {
    let host = host().await;
    let piped = ok(
        ctl_at(&host.socket, &["invoke", "echo", "echo", "hello"], &[]),
        "invoke",
    );
    assert_eq!(piped, "hello", "a pipe gets the answer's bytes exactly");

    let mut on_terminal = Watched::on_terminal(
        ctl_command(&host.socket, &["invoke", "echo", "echo", "hello"]),
        80,
        24,
    );
    assert_eq!(
        on_terminal.exit_code(Duration::from_secs(10)).await,
        Some(0)
    );
    // The terminal turns the newline into CR LF.
    assert_eq!(on_terminal.stdout(), "hello\r\n");
}

#[tokio::test]
async fn an_unknown_method_is_answered_with_the_methods_the_plugin_has() {
    let host = host().await;
    let (code, _, stderr) = ctl_at(&host.socket, &["invoke", "echo", "ehco", "x"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("(plugin echo describes no method \"ehco\"; its methods: echo)"),
        "{stderr}"
    );
    // A method the plugin has that fails says nothing of the kind.
    let (code, _, stderr) = ctl_at(&host.socket, &["invoke", "faulty", "leak", "lots"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("its methods"), "{stderr}");
}

#[tokio::test]
async fn list_status_events_and_logs_speak_json_with_local_rfc_3339_times() {
    let host = host().await;
    host.invoke("faulty", "stdout", "").await.expect("a call");
    // An offset no test machine is in, so that local time cannot pass for UTC.
    let tz = [("TZ", "XYZ-05:30")];

    for command in ["list", "status"] {
        let json = ok(ctl_at(&host.socket, &[command, "--json"], &tz), command);
        let rows: serde_json::Value = serde_json::from_str(&json).expect("one JSON value");
        let names: Vec<&str> = rows
            .as_array()
            .expect("an array")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(names, ["echo", "faulty"], "{json}");
    }

    // Streams: one object a line; events print the recent ones, then follow.
    let events = Watched::spawn({
        let mut c = ctl_command(&host.socket, &["events", "--json", "--last", "5"]);
        c.envs(tz);
        c
    });
    events
        .wait_for_stdout("both plugins' start", Duration::from_secs(10), |out| {
            out.lines().count() >= 2
        })
        .await;
    let mut kinds = Vec::new();
    for line in events.stdout().lines() {
        let e: serde_json::Value = serde_json::from_str(line).expect("a JSON object a line");
        let time = e["time"].as_str().expect("a time");
        assert_eq!(rfc3339_offset(time), Some("+05:30"), "{line}");
        let ms = e["unix_ms"].as_u64().expect("unix_ms");
        assert!(now_ms().abs_diff(ms) < 120_000, "{line}");
        kinds.push(e["kind"].as_str().expect("kind").to_owned());
    }
    assert!(kinds.iter().all(|k| k == "started"), "{kinds:?}");

    let logs = ok(
        ctl_at(&host.socket, &["logs", "faulty", "--json"], &tz),
        "logs",
    );
    let stray = logs
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON object a line"))
        .find(|l| l["stream"] == "stdout")
        .expect("the stray stdout line");
    assert_eq!(stray["text"], "a stray line on stdout");
    let time = stray["time"].as_str().expect("a time");
    assert_eq!(rfc3339_offset(time), Some("+05:30"), "{stray}");

    // For people: the same local wall-clock time, without the offset, on every line.
    let logs = ok(ctl_at(&host.socket, &["logs", "faulty"], &tz), "logs");
    let line = logs
        .lines()
        .find(|l| l.ends_with("gen=1 stdout: a stray line on stdout"))
        .unwrap_or_else(|| panic!("the stray line, timestamped, in:\n{logs}"));
    assert_eq!(&line[..23], time[..23].replacen('T', " ", 1), "{line}");
}

#[tokio::test]
async fn events_prints_the_last_ones_then_follows() {
    let host = host().await;
    ok(ctl_at(&host.socket, &["restart", "echo"], &[]), "restart");
    // Every event of echo so far, as the host keeps them: the CLI's are the last two.
    let mut stream = host
        .client()
        .events(baton_proto::host::EventsRequest {
            plugin: "echo".into(),
            last: 256,
        })
        .await
        .expect("events")
        .into_inner();
    let mut all: Vec<baton_proto::host::Event> = Vec::new();
    while all.last().is_none_or(|e| e.kind != "handover_done") {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        let next = next.unwrap_or_else(|_| panic!("the kept events end in the restart: {all:?}"));
        all.push(next.expect("an event").expect("more"));
    }
    assert!(all.len() >= 2 && all[0].kind == "started", "{all:?}");
    let last_two: Vec<String> = all[all.len() - 2..]
        .iter()
        .map(|e| format!("echo gen={} {}: {}", e.generation, e.kind, e.message))
        .collect();

    let events = Watched::spawn(ctl_command(
        &host.socket,
        &["events", "echo", "--last", "2"],
    ));
    events
        .wait_for_stdout("the last two events", Duration::from_secs(10), |out| {
            out.lines().count() >= 2
        })
        .await;
    let printed: Vec<String> = events.stdout().lines().map(str::to_owned).collect();
    assert_eq!(printed.len(), 2, "{printed:?}");
    for (line, expected) in printed.iter().zip(&last_two) {
        // Each line: the local time, then the event.
        assert_eq!(&line[24..], expected, "{line}");
        assert_eq!(line.as_bytes()[10], b' ', "{line}");
    }

    // --last 0: nothing from before, only what happens next.
    let live = Watched::spawn(ctl_command(&host.socket, &["events", "--last", "0"]));
    following(&host, &live).await;
    assert!(
        !live.stdout().contains("gen=1 started:"),
        "{}",
        live.stdout()
    );
}

/// Returns once `events` (a `baton ctl events`) follows the host: when it has
/// subscribed cannot be seen from outside, so echo is restarted until a restart shows.
async fn following(host: &TestHost, events: &Watched) {
    wait_until(
        "a restart after subscribing shows",
        Duration::from_secs(20),
        || async {
            ok(ctl_at(&host.socket, &["restart", "echo"], &[]), "restart");
            events.stdout().contains("handover_done").then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_host_that_stops_ends_events_and_logs_follow_cleanly() {
    let mut host = host().await;
    let events = Watched::spawn(ctl_command(&host.socket, &["events"]));
    let logs = Watched::spawn(ctl_command(&host.socket, &["logs", "faulty", "--follow"]));
    following(&host, &events).await;
    logs.wait_for_stdout("the stream started", Duration::from_secs(10), |out| {
        !out.is_empty()
    })
    .await;
    let mut followers = [events, logs];
    assert_eq!(host.stop(Duration::from_secs(10)), Some(0));
    for f in &mut followers {
        assert_eq!(
            f.exit_code(Duration::from_secs(10)).await,
            Some(0),
            "{}",
            f.stderr()
        );
        assert!(
            f.stderr().contains("the host is stopping: no more"),
            "{}",
            f.stderr()
        );
        assert!(!f.stderr().contains("error"), "{}", f.stderr());
    }
    let [events, _] = &followers;
    assert!(
        events.stdout().contains("faulty gen=1 stopped"),
        "the plugins' last events come before the end: {}",
        events.stdout()
    );

    // A host that dies without a word: the connection closes under the stream.
    let mut host = self::host().await;
    let mut events = Watched::spawn(ctl_command(&host.socket, &["events"]));
    following(&host, &events).await;
    host.kill();
    assert_eq!(
        events.exit_code(Duration::from_secs(10)).await,
        Some(0),
        "{}",
        events.stderr()
    );
    assert!(
        events.stderr().contains("the host closed the connection"),
        "{}",
        events.stderr()
    );
}

#[tokio::test]
async fn the_last_error_shows_its_age_and_a_later_start_clears_it() {
    let host = host().await;
    let crash = |pid: u32| kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill");
    let before = host.status("faulty").await;
    crash(before.pid);
    let restarted = wait_until("faulty restarted", Duration::from_secs(10), || async {
        let s = host.status("faulty").await;
        (s.restarts == 1 && s.pid != before.pid && s.pid != 0).then_some(s)
    })
    .await;
    // The automatic restart keeps the error: it is why the plugin restarted.
    assert!(
        restarted.last_error.contains("killed by signal 9"),
        "{restarted:?}"
    );
    let list = ok(ctl_at(&host.socket, &["list"], &[]), "list");
    let row = list
        .lines()
        .find(|l| l.starts_with("faulty"))
        .expect("faulty's row");
    let (columns, error) = row.split_once(" ago: ").expect("an age");
    let age = columns.rsplit(' ').next().unwrap_or_default();
    assert!(
        age.strip_suffix('s')
            .is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n < 60)),
        "an age in seconds: {list}"
    );
    assert!(error.contains("exited unexpectedly"), "{list}");
    let json = ok(
        ctl_at(&host.socket, &["status", "faulty", "--json"], &[]),
        "status",
    );
    let row: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert!(
        rfc3339_offset(row[0]["last_error_at"].as_str().expect("a time")).is_some(),
        "{json}"
    );

    // An operator's restart (a handover) that succeeds clears it.
    ok(ctl_at(&host.socket, &["restart", "faulty"], &[]), "restart");
    let after = host.status("faulty").await;
    assert_eq!(
        (after.last_error.as_str(), after.last_error_unix_ms),
        ("", 0),
        "{after:?}"
    );
    let list = ok(ctl_at(&host.socket, &["list"], &[]), "list");
    assert!(!list.contains("ago:"), "{list}");

    // So does a start after a stop.
    crash(after.pid);
    wait_until(
        "the second crash is seen",
        Duration::from_secs(10),
        || async { (!host.status("faulty").await.last_error.is_empty()).then_some(()) },
    )
    .await;
    host.serving("faulty", Duration::from_secs(10)).await;
    ok(
        ctl_at(&host.socket, &["stop", "faulty", "--discard-state"], &[]),
        "stop",
    );
    ok(ctl_at(&host.socket, &["start", "faulty"], &[]), "start");
    assert_eq!(host.status("faulty").await.last_error, "");
}

#[tokio::test]
async fn python_tracebacks_and_syntax_errors_are_logged_as_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let raises = dir.path().join("raises.py");
    std::fs::write(
        &raises,
        "def load():\n    raise ValueError('no config here')\n\nload()\n",
    )
    .expect("write the script");
    let broken = dir.path().join("broken.py");
    std::fs::write(&broken, "def f(:\n    pass\n").expect("write the script");
    let python = venv_python();
    let table = |name: &str, script: &std::path::Path| {
        format!(
            "[plugins.{name}]\ncommand = \"{}\"\nargs = [\"{}\"]\n[plugins.{name}.restart]\nmax_crashes = 1\n",
            python.display(),
            script.display()
        )
    };
    let host = TestHost::start(&(table("raises", &raises) + &table("broken", &broken))).await;
    // The plugin's own line, as captured (the host's start error quotes it too).
    let logged = |text: &str| {
        let log = host.log();
        log.lines()
            .find(|l| l.contains(&format!("baton::plugin: {text}")))
            .map(|l| l.to_owned())
    };
    for text in [
        "Traceback (most recent call last):",
        "    raise ValueError('no config here')",
        "ValueError: no config here",
        "SyntaxError:",
    ] {
        let line = wait_until(
            &format!("{text:?} is logged"),
            Duration::from_secs(15),
            || async { logged(text) },
        )
        .await;
        assert!(line.contains(" ERROR "), "logged at ERROR: {line}");
    }
}

#[tokio::test]
async fn baton_log_debug_is_batons_own_debug_not_http2_frames() {
    let state = tempfile::tempdir().expect("state dir");
    let host = TestHost::start_with_env(
        &format!(
            "state_dir = \"{}\"\n{}",
            state.path().display(),
            plugin("counter", "counter", &[], "checkpoint_interval_ms = 100\n")
        ),
        &[("BATON_LOG", "debug")],
    )
    .await;
    for _ in 0..5 {
        host.call_text("counter", "incr", "k").await;
    }
    wait_until(
        "a checkpoint is logged at debug",
        Duration::from_secs(10),
        || async { host.log().contains("checkpoint saved").then_some(()) },
    )
    .await;
    let log = host.log();
    let transport: Vec<&str> = log
        .lines()
        .filter(|l| {
            ["h2::", "hyper", "tower::", "tonic::"]
                .iter()
                .any(|t| l.contains(t))
        })
        .collect();
    assert!(
        transport.is_empty(),
        "{} transport lines, as: {:?}",
        transport.len(),
        transport.first()
    );
    assert!(
        log.lines()
            .any(|l| l.contains(" DEBUG ") && l.contains("baton_host")),
        "{log}"
    );
}

#[tokio::test]
async fn a_config_reload_that_fixes_a_plugin_clears_its_last_error() {
    // One that cannot start, waiting out a long backoff; one that crashed and restarted.
    let broken = "[plugins.broken]\ncommand = \"/bin/false\"\n[plugins.broken.restart]\ninitial_backoff_ms = 60000\nmax_backoff_ms = 60000\n";
    let host = TestHost::start(&format!("{broken}{}", plugin("faulty", "faulty", &[], ""))).await;
    let before = host.serving("faulty", Duration::from_secs(10)).await;
    kill(Pid::from_raw(before.pid as i32), Signal::SIGKILL).expect("kill");
    let restarted = wait_until(
        "faulty restarted with its error",
        Duration::from_secs(10),
        || async {
            let s = host.status("faulty").await;
            (s.pid != before.pid && s.pid != 0 && !s.last_error.is_empty()).then_some(s.pid)
        },
    )
    .await;
    wait_until("broken failed", Duration::from_secs(10), || async {
        (!host.status("broken").await.last_error.is_empty()).then_some(())
    })
    .await;

    // The fix: broken gets a program that runs (tried now, not after its minute of
    // backoff), faulty a new call timeout (in place).
    let path = host.dir.path().join("baton.toml");
    let text = format!(
        "socket = \"{}\"\n\n{}{}",
        host.socket.display(),
        plugin(
            "broken",
            "echo",
            &[],
            "[plugins.broken.restart]\ninitial_backoff_ms = 60000\nmax_backoff_ms = 60000\n"
        ),
        plugin("faulty", "faulty", &[], "call_timeout_ms = 20000\n")
    );
    baton_tests::replace_by_rename(&path, text.as_bytes());
    ok(
        ctl_at(&host.socket, &["reload-config"], &[]),
        "reload-config",
    );
    wait_until(
        "both serve with no error",
        Duration::from_secs(20),
        || async {
            let (b, f) = (host.status("broken").await, host.status("faulty").await);
            (b.state == baton_proto::host::PluginState::Serving as i32
                && b.last_error.is_empty()
                && f.last_error.is_empty())
            .then_some(())
        },
    )
    .await;
    // The call timeout took in place: the same process, its old error gone.
    assert_eq!(host.status("faulty").await.pid, restarted);
    let list = ok(ctl_at(&host.socket, &["list"], &[]), "list");
    assert!(!list.contains("ago:"), "{list}");

    // The table cuts a long last event at a word, and says it did.
    let json = ok(
        ctl_at(&host.socket, &["status", "faulty", "--json"], &[]),
        "status",
    );
    let row: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let event = row[0]["last_event"].as_str().expect("an event").to_owned();
    assert!(event.chars().count() > 60, "{event}");
    let table = ok(ctl_at(&host.socket, &["status", "faulty"], &[]), "status");
    let shown = table
        .lines()
        .find(|l| l.starts_with("faulty"))
        .and_then(|l| l.split("  ").last())
        .expect("faulty's row")
        .trim();
    let kept = shown
        .strip_suffix('…')
        .unwrap_or_else(|| panic!("no ellipsis: {table}"));
    assert!(
        event.starts_with(kept) && event[kept.len()..].starts_with(' '),
        "cut inside a word: {shown:?} of {event:?}"
    );
}
