//! Application services: a plugin serves the embedder's own gRPC API
//! (`mydb.trigger.v1.Trigger`) beside baton's, and the host calls it through generated,
//! typed clients, unary and streaming, on the same route as `invoke`: across reloads
//! (state moved, open streams ended and reopened on the new generation), through a
//! crash, behind the token, and behind the compatibility gate.

use std::time::Duration;

use baton_host::{Config, Host, PluginConfig, PluginHandle, ReloadMode};
use baton_proto::host::PluginState;
use baton_tests::trigger::trigger_client::TriggerClient;
use baton_tests::trigger::{Filter, Point, WriteBatch};
use baton_tests::{EventLog, TestHost, bin, replace_by_rename, script, wait_until};
use tonic::Code;

const TRIGGER: &str = "mydb.trigger.v1.Trigger";

/// An in-process host (the library path) running the trigger plugin.
async fn library_host(extra: impl FnOnce(&mut PluginConfig)) -> (Host, PluginHandle) {
    let mut config = Config::empty();
    let mut plugin = PluginConfig::new(bin("trigger"));
    plugin.reload = Some(ReloadMode::Manual);
    plugin.services = vec![TRIGGER.into()];
    plugin.stream_drain_ms = 200;
    extra(&mut plugin);
    config.plugins.insert("trigger".into(), plugin);
    let host = Host::start(&config).await.expect("the host starts");
    let handle = host.plugin("trigger").expect("the trigger plugin");
    handle
        .ready(Duration::from_secs(10))
        .await
        .expect("the plugin serves");
    (host, handle)
}

fn batch(series: &str, values: &[f64]) -> WriteBatch {
    WriteBatch {
        points: values
            .iter()
            .map(|&value| Point {
                series: series.into(),
                value,
                sequence: 0,
            })
            .collect(),
    }
}

#[tokio::test]
async fn typed_calls_through_the_library_keep_state_and_streams_follow_reloads() {
    let (host, handle) = library_host(|_| {}).await;
    let mut trigger = TriggerClient::new(handle.channel());

    // Unary: typed request, typed answer.
    let total = trigger
        .on_write(batch("cpu.a", &[1.0, 2.0]))
        .await
        .expect("OnWrite")
        .into_inner()
        .total;
    assert_eq!(total, 2);

    // Server streaming: every point written after the subscription, in order.
    let mut stream = trigger
        .subscribe(Filter {
            prefix: "cpu.".into(),
        })
        .await
        .expect("Subscribe")
        .into_inner();
    // The plugin subscribes before it answers, so a write now is seen.
    let mut writer = trigger.clone();
    writer
        .on_write(batch("cpu.b", &[3.0]))
        .await
        .expect("OnWrite");
    let got = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a point within 5 s")
        .expect("the stream is fine")
        .expect("a point");
    assert_eq!(got.series, "cpu.b");
    let seen_before_reload = got.sequence;

    // A reload while the stream is open: it is ended, saying why; the state moves.
    let reloaded = tokio::spawn({
        let handle = handle.clone();
        async move { handle.reload().await }
    });
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the stream was not ended within 10 s of the reload"),
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(
        ended
            .message()
            .contains("plugin trigger moved to generation 2")
            && ended.message().contains("reopen the stream"),
        "{}",
        ended.message()
    );
    assert_eq!(reloaded.await.expect("join"), Ok(2));

    // Reopened, the stream lands on generation 2, which numbers on from the old state.
    let mut stream = trigger
        .subscribe(Filter {
            prefix: "cpu.".into(),
        })
        .await
        .expect("Subscribe again")
        .into_inner();
    writer
        .on_write(batch("cpu.c", &[4.0]))
        .await
        .expect("OnWrite after the reload");
    let got = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a point within 5 s")
        .expect("the stream is fine")
        .expect("a point");
    assert_eq!(
        (got.series.as_str(), got.sequence),
        ("cpu.c", seen_before_reload + 1)
    );
    assert_eq!(handle.status().generation, 2);
    drop(stream);
    host.shutdown().await;
}

#[tokio::test]
async fn a_crash_mid_stream_gives_unavailable_naming_the_plugin() {
    let (host, handle) = library_host(|_| {}).await;
    let mut trigger = TriggerClient::new(handle.channel());
    let mut stream = trigger
        .subscribe(Filter {
            prefix: String::new(),
        })
        .await
        .expect("Subscribe")
        .into_inner();
    let serving = handle.status();
    let pid = serving.pid.expect("a pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the plugin");
    let broke = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends within 10 s")
        .expect_err("the stream breaks");
    assert_eq!(broke.code(), Code::Unavailable, "{broke:?}");
    assert!(
        broke.message().contains(&format!(
            "plugin trigger (generation {}, pid {pid})",
            serving.generation
        )) && broke.message().contains("SIGKILL"),
        "{}",
        broke.message()
    );
    // The next call waits for the restart and goes through.
    let total = trigger
        .on_write(batch("x", &[1.0]))
        .await
        .expect("OnWrite after the restart")
        .into_inner()
        .total;
    assert_eq!(total, 1);
    host.shutdown().await;
}

#[tokio::test]
async fn application_services_refuse_calls_without_the_token() {
    let (host, handle) = library_host(|_| {}).await;
    let socket = handle.status().socket.expect("a socket");
    let channel = baton_tests::unix_channel(&socket).await.expect("connect");
    let refused = TriggerClient::new(channel)
        .on_write(batch("x", &[1.0]))
        .await
        .expect_err("no token, no call");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    host.shutdown().await;
}

/// Deploys at `path` the trigger plugin run with `variable` set (a broken build), and
/// returns why the host rolled it back.
async fn deploy_rolled_back(events: &EventLog, path: &std::path::Path, variable: &str) -> String {
    replace_by_rename(
        path,
        &script(&format!(
            "{variable}=1 exec {} \"$@\"",
            bin("trigger").display()
        )),
    );
    let rollback = events
        .wait_for("rollback", 1, Duration::from_secs(10))
        .await;
    rollback[0].message.clone()
}

#[tokio::test]
async fn a_build_that_dropped_a_required_service_never_goes_live() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("trigger");
    std::fs::copy(bin("trigger"), &path).expect("stage");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let host = TestHost::start(&format!(
        "[plugins.trigger]\ncommand = \"{}\"\nreload = \"watch\"\nsettle_ms = 50\nservices = [\"{TRIGGER}\"]\n",
        path.display()
    ))
    .await;
    let events = EventLog::start(&host).await;
    assert_eq!(host.call_text("trigger", "total", "").await, "0");

    // The new build serves baton's service but no longer the application's.
    let why = &deploy_rolled_back(&events, &path, "TRIGGER_WITHOUT_SERVICE").await;
    assert!(
        why.contains(&format!("does not serve {TRIGGER}"))
            && why.contains("required by `services`"),
        "{why}"
    );
    let status = host.status("trigger").await;
    assert_eq!(
        (status.generation, status.state),
        (1, PluginState::Serving as i32)
    );

    // And a host started on such a build never serves it.
    let refused = TestHost::start(&format!(
        "[plugins.trigger]\ncommand = \"{}\"\nservices = [\"{TRIGGER}\"]\n[plugins.trigger.restart]\nmax_crashes = 1\n",
        path.display()
    ))
    .await;
    let e = wait_until("the build is refused", Duration::from_secs(10), || async {
        let s = refused.status("trigger").await;
        (s.state == PluginState::Failed as i32).then_some(s.last_error)
    })
    .await;
    assert!(e.contains(&format!("does not serve {TRIGGER}")), "{e}");
}

#[tokio::test]
async fn a_stock_python_client_calls_the_plugins_own_service_through_the_daemon() {
    let host = TestHost::start(&format!(
        "[plugins.trigger]\ncommand = \"{}\"\nservices = [\"{TRIGGER}\"]\n",
        bin("trigger").display()
    ))
    .await;
    host.serving("trigger", Duration::from_secs(10)).await;
    let stubs = baton_tests::trigger_python_stubs();
    let root = baton_tests::repo_root();
    let out = tokio::process::Command::new(baton_tests::venv_python())
        .arg(root.join("tests/clients/trigger_client.py"))
        .arg(&host.socket)
        .env("PYTHONPATH", stubs.path())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("the client ends within 30 s")
        .expect("run the client");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let seen: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the client prints JSON");
    assert_eq!(seen["total"], 1, "{seen}");
    assert_eq!(
        seen["streamed"],
        serde_json::json!([["py.b", 2], ["py.c", 4]]),
        "{seen}"
    );
    assert_eq!(seen["unknown"][0], "NOT_FOUND", "{seen}");
    assert!(
        seen["unknown"][1]
            .as_str()
            .is_some_and(|m| m.contains("no plugin named \"nope\"")),
        "{seen}"
    );
    // Counted like any call to the plugin: three calls, by their gRPC paths.
    assert!(host.status("trigger").await.calls >= 3);
}

#[tokio::test]
async fn a_subscription_follows_ten_reloads_under_load_losing_nothing_it_was_given() {
    let (host, handle) = library_host(|p| p.stream_drain_ms = 100).await;
    let trigger = TriggerClient::new(handle.channel());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Writers: one point per call, back to back; every call must succeed.
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (mut client, stop) = (trigger.clone(), stop.clone());
            tokio::spawn(async move {
                let mut totals = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let total = client
                        .on_write(batch("load", &[1.0]))
                        .await
                        .expect("no write fails across reloads")
                        .into_inner()
                        .total;
                    totals.push(total);
                }
                totals
            })
        })
        .collect();

    // A subscriber that reopens its stream whenever the host ends it for a reload.
    let subscriber = {
        let (mut client, stop) = (trigger.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut received, mut reopened) = (Vec::<u64>::new(), 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut stream = client
                    .subscribe(Filter {
                        prefix: "load".into(),
                    })
                    .await
                    .expect("Subscribe")
                    .into_inner();
                loop {
                    match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                        Ok(Ok(Some(point))) => received.push(point.sequence),
                        Ok(Err(status)) => {
                            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                            assert!(status.message().contains("reopen the stream"), "{status:?}");
                            reopened += 1;
                            break;
                        }
                        Ok(Ok(None)) => panic!("the stream ended without a status"),
                        Err(_) if stop.load(std::sync::atomic::Ordering::Relaxed) => break,
                        Err(_) => {}
                    }
                }
            }
            (received, reopened)
        })
    };

    for n in 2..=11 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(handle.reload().await, Ok(n), "reload to generation {n}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut totals = Vec::new();
    for writer in writers {
        totals.extend(writer.await.expect("a writer"));
    }
    let (received, reopened) = subscriber.await.expect("the subscriber");

    // The state moved through all ten handovers: every write got the next number.
    totals.sort_unstable();
    let written = totals.len() as u64;
    assert_eq!(totals, (1..=written).collect::<Vec<_>>());
    // What the subscriber was given came in order, each point once, every one written.
    if let Some(w) = received.windows(2).find(|w| w[0] >= w[1]) {
        panic!("point {} came after point {}", w[1], w[0]);
    }
    assert!(received.last().is_some_and(|&last| last <= written));
    // It was ended and reopened at the reloads, and kept receiving on the new ones.
    assert!(reopened >= 5, "reopened {reopened} times");
    assert!(
        received.len() as u64 >= written / 4,
        "{} of {written}",
        received.len()
    );
    assert_eq!(handle.status().generation, 11);
    host.shutdown().await;
}

#[tokio::test]
async fn a_python_plugin_serves_the_application_service_and_hands_over_to_rust_and_back() {
    let stubs = baton_tests::trigger_python_stubs();
    let dir = tempfile::tempdir().expect("temp dir");
    let launcher = dir.path().join("trigger");
    let python = format!(
        "PYTHONPATH={} exec {} {} \"$@\"",
        stubs.path().display(),
        baton_tests::venv_python().display(),
        baton_tests::repo_root()
            .join("tests/plugins/trigger.py")
            .display()
    );
    replace_by_rename(&launcher, &script(&python));
    // Checked against the application's descriptors at every start: the Python build
    // describes itself over grpcio's reflection (v1alpha), the Rust one over v1.
    let api = dir.path().join("trigger-api.bin");
    std::fs::write(&api, baton_tests::trigger::FILE_DESCRIPTOR_SET).expect("write");
    let host = TestHost::start(&format!(
        "[plugins.trigger]\ncommand = \"{}\"\nreload = \"watch\"\nsettle_ms = 50\nservices = [\"{TRIGGER}\"]\napi_descriptors = \"{}\"\n",
        launcher.display(),
        api.display()
    ))
    .await;
    host.serving("trigger", Duration::from_secs(20)).await;
    // And called by name, with JSON, through the same reflection.
    let (ok, out, err) = ctl_call(
        &host,
        &[
            "trigger",
            &format!("{TRIGGER}/OnWrite"),
            r#"{"points":[{"series":"py"}]}"#,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#"{"total":"1"}"#);
    // A typed client through the daemon, as an external program would call it.
    let channel = baton_tests::unix_channel(&host.socket)
        .await
        .expect("connect");
    let mut trigger = TriggerClient::with_interceptor(channel, |mut r: tonic::Request<()>| {
        r.metadata_mut().insert(
            "x-baton-plugin",
            tonic::metadata::MetadataValue::from_static("trigger"),
        );
        Ok(r)
    });
    let write = |n: usize| batch("lang", &vec![1.0; n]);
    assert_eq!(
        trigger
            .on_write(write(2))
            .await
            .expect("Python OnWrite")
            .into_inner()
            .total,
        3
    );

    // Python → Rust → Python: the count moves with each handover.
    let mut expected = 3;
    for (n, command) in [
        (2, format!("exec {} \"$@\"", bin("trigger").display())),
        (3, python.clone()),
    ] {
        replace_by_rename(&launcher, &script(&command));
        wait_until(
            &format!("generation {n} serves"),
            Duration::from_secs(20),
            || async {
                let s = host.status("trigger").await;
                (s.generation >= n && s.state == PluginState::Serving as i32).then_some(())
            },
        )
        .await;
        expected += 3;
        let total = trigger
            .on_write(write(3))
            .await
            .expect("OnWrite after the handover")
            .into_inner()
            .total;
        assert_eq!(total, expected, "generation {n}");
    }
}

/// `baton ctl call` against `host`, with its stdout and stderr.
fn ctl_call(host: &TestHost, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(bin("baton"))
        .args(["ctl", "--socket"])
        .arg(&host.socket)
        .arg("call")
        .args(args)
        .output()
        .expect("run baton ctl call");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn ctl_call_calls_a_method_by_name_with_json_using_the_plugins_reflection() {
    let host = TestHost::start(&format!(
        "[plugins.trigger]\ncommand = \"{}\"\n\n[plugins.echo]\ncommand = \"{}\"\n",
        bin("trigger").display(),
        bin("echo").display()
    ))
    .await;
    host.serving("trigger", Duration::from_secs(10)).await;
    host.serving("echo", Duration::from_secs(10)).await;
    let on_write = format!("{TRIGGER}/OnWrite");

    let (ok, out, err) = ctl_call(
        &host,
        &[
            "trigger",
            &on_write,
            r#"{"points":[{"series":"a","value":1.5},{"series":"b"}]}"#,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#"{"total":"2"}"#);

    // A server stream prints one line per message as it comes.
    let mut subscriber = std::process::Command::new(bin("baton"))
        .args(["ctl", "--socket"])
        .arg(&host.socket)
        .args([
            "call",
            "trigger",
            &format!("{TRIGGER}/Subscribe"),
            r#"{"prefix":"x"}"#,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run baton ctl call Subscribe");
    let stdout = subscriber.stdout.take().expect("piped");
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line_tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = wait_until(
        "the stream prints the point",
        Duration::from_secs(10),
        || {
            let (ok, _, err) = ctl_call(
                &host,
                &[
                    "trigger",
                    &on_write,
                    r#"{"points":[{"series":"x1","value":2}]}"#,
                ],
            );
            assert!(ok, "{err}");
            let line = line_rx.recv_timeout(Duration::from_millis(200)).ok();
            async move { line }
        },
    )
    .await;
    let _ = subscriber.kill();
    let _ = subscriber.wait();
    assert!(
        line.starts_with(r#"{"series":"x1","value":2.0,"sequence":"#),
        "{line}"
    );

    // What goes wrong is said plainly.
    let (ok, _, err) = ctl_call(&host, &["trigger", &format!("{TRIGGER}/Nope")]);
    assert!(
        !ok && err.contains("has no method \"Nope\" (it has: OnWrite, Subscribe)"),
        "{err}"
    );
    let (ok, _, err) = ctl_call(&host, &["trigger", &on_write, r#"{"pointz":1}"#]);
    assert!(
        !ok && err.contains("is not a mydb.trigger.v1.WriteBatch in JSON"),
        "{err}"
    );
    let (ok, _, err) = ctl_call(&host, &["echo", "some.Service/Method"]);
    assert!(
        !ok && err.contains("plugin echo: it does not serve gRPC reflection"),
        "{err}"
    );
}

#[tokio::test]
async fn a_build_that_changed_a_message_type_is_refused_against_the_applications_descriptors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let api = dir.path().join("trigger-api.bin");
    std::fs::write(&api, baton_tests::trigger::FILE_DESCRIPTOR_SET).expect("write the descriptors");
    let path = dir.path().join("trigger");
    replace_by_rename(
        &path,
        &script(&format!("exec {} \"$@\"", bin("trigger").display())),
    );
    let host = TestHost::start(&format!(
        "[plugins.trigger]\ncommand = \"{}\"\nreload = \"watch\"\nsettle_ms = 50\nservices = [\"{TRIGGER}\"]\napi_descriptors = \"{}\"\n",
        path.display(),
        api.display()
    ))
    .await;
    let events = EventLog::start(&host).await;
    // The build the application was made against goes live.
    host.serving("trigger", Duration::from_secs(10)).await;
    assert_eq!(host.call_text("trigger", "total", "").await, "0");

    // A build that still serves Trigger, but describes TriggerResult.total as a string.
    let why = &deploy_rolled_back(&events, &path, "TRIGGER_CHANGED_API").await;
    assert!(
        why.contains("is not compatible with the application's (api_descriptors)")
            && why.contains(
                "mydb.trigger.v1.TriggerResult.total (field 1) changed from uint64 to string"
            ),
        "{why}"
    );
    let status = host.status("trigger").await;
    assert_eq!(
        (status.generation, status.state),
        (1, PluginState::Serving as i32)
    );

    // Descriptors that do not define the service are a config error, before anything runs.
    std::fs::write(&api, b"not a descriptor set").expect("write");
    let (code, stderr) = baton_tests::run_refused_config(
        "baton.toml",
        &format!(
            "[plugins.trigger]\ncommand = \"{}\"\nservices = [\"{TRIGGER}\"]\napi_descriptors = \"{}\"\n",
            bin("trigger").display(),
            api.display()
        ),
    );
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("plugins.trigger.api_descriptors")
            && stderr.contains("is not an encoded FileDescriptorSet"),
        "{stderr}"
    );
}
