//! Application services beyond the library: the compatibility gate (a build that
//! dropped a service, or changed a message type against the application's descriptors,
//! never goes live), the daemon's forwarding to a stock grpcio client, a Python plugin
//! serving the application's API, and `baton ctl call`.

use std::time::Duration;

use tokio_stream::StreamExt;

use baton_proto::host::PluginState;
use baton_tests::trigger::trigger_client::TriggerClient;
use baton_tests::trigger::{WriteBatch, batch};
use baton_tests::{EventLog, TestHost, bin, replace_by_rename, script, wait_until};

const TRIGGER: &str = "mydb.trigger.v1.Trigger";

/// Deploys at `path` a build that broke the API (`broken-trigger VARIANT`), and returns
/// why the host rolled it back.
async fn deploy_rolled_back(events: &EventLog, path: &std::path::Path, variant: &str) -> String {
    replace_by_rename(
        path,
        &script(&format!(
            "exec {} {variant} \"$@\"",
            bin("broken-trigger").display()
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
    let why = &deploy_rolled_back(&events, &path, "without-service").await;
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
    assert_eq!(seen["each"], serde_json::json!([5, 6]), "{seen}");
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
async fn a_python_plugin_serves_the_application_service_and_hands_over_to_rust_and_back() {
    let stubs = baton_tests::trigger_python_stubs();
    let dir = tempfile::tempdir().expect("temp dir");
    let launcher = dir.path().join("trigger");
    let python = format!(
        "PYTHONPATH={} exec {} {} \"$@\"",
        stubs.path().display(),
        baton_tests::venv_python().display(),
        baton_tests::repo_root()
            .join("example-plugins/python-trigger/trigger.py")
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
    let mut trigger = through_daemon(&host).await;
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
    let expected = to_rust_and_back(&host, &mut trigger, &launcher, &python, 3, 3).await;
    // The Python build's bidirectional method, through the daemon.
    let each = write_each(&mut trigger, vec![write(1), write(1)]).await;
    assert_eq!(each, vec![expected + 1, expected + 2]);
}

/// A typed client of the trigger plugin through `host`'s daemon, as an external program
/// would call it: `x-baton-plugin: trigger` on every call.
type ThroughDaemon = TriggerClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
    >,
>;

async fn through_daemon(host: &TestHost) -> ThroughDaemon {
    fn to_trigger(mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert(
            "x-baton-plugin",
            tonic::metadata::MetadataValue::from_static("trigger"),
        );
        Ok(r)
    }
    let channel = baton_tests::unix_channel(&host.socket)
        .await
        .expect("connect");
    TriggerClient::with_interceptor(channel, to_trigger as fn(_) -> _)
}

/// Hands the plugin behind `launcher` over to the Rust trigger and back to `other` (a
/// launcher script's body), writing `per_write` points after each handover: the count,
/// which started at `total`, must go on. Returns it.
async fn to_rust_and_back(
    host: &TestHost,
    trigger: &mut ThroughDaemon,
    launcher: &std::path::Path,
    other: &str,
    mut total: u64,
    per_write: usize,
) -> u64 {
    for (n, command) in [
        (2, format!("exec {} \"$@\"", bin("trigger").display())),
        (3, other.to_owned()),
    ] {
        replace_by_rename(launcher, &script(&command));
        wait_until(
            &format!("generation {n} serves"),
            Duration::from_secs(20),
            || async {
                let s = host.status("trigger").await;
                (s.generation >= n && s.state == PluginState::Serving as i32).then_some(())
            },
        )
        .await;
        total += per_write as u64;
        let answer = trigger
            .on_write(batch("lang", &vec![1.0; per_write]))
            .await
            .expect("OnWrite after the handover")
            .into_inner()
            .total;
        assert_eq!(answer, total, "generation {n}");
    }
    total
}

/// WriteEach with `batches`: every answer's total, in order.
async fn write_each(trigger: &mut ThroughDaemon, batches: Vec<WriteBatch>) -> Vec<u64> {
    trigger
        .write_each(tokio_stream::iter(batches))
        .await
        .expect("WriteEach")
        .into_inner()
        .map(|a| a.map(|a| a.total))
        .collect::<Result<_, _>>()
        .await
        .expect("every answer")
}

/// `baton ctl call ARGS...` against `host`: success, stdout, stderr.
fn ctl_call(host: &TestHost, args: &[&str]) -> (bool, String, String) {
    host.ctl(&[&["call"], args].concat())
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

    // A client stream takes JSON values one after another.
    let (ok, out, err) = ctl_call(
        &host,
        &[
            "trigger",
            &format!("{TRIGGER}/WriteStream"),
            "{\"points\":[{\"series\":\"c\"}]}\n{\"points\":[{\"series\":\"c\"}]}",
        ],
    );
    assert!(ok, "{err}");
    let total: u64 = serde_json::from_str::<serde_json::Value>(out.trim()).expect("JSON")["total"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("a total");
    assert!(total >= 5, "{out}");

    // A bidirectional stream from stdin goes back and forth: each line typed is
    // answered before the next is written.
    let mut each = std::process::Command::new(bin("baton"))
        .args(["ctl", "--socket"])
        .arg(&host.socket)
        .args(["call", "trigger", &format!("{TRIGGER}/WriteEach"), "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run baton ctl call WriteEach");
    // A call that stops answering must not hang the test: killed after 20 s.
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    let pid = nix::unistd::Pid::from_raw(each.id() as i32);
    std::thread::spawn(move || {
        if watchdog.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let mut stdin = each.stdin.take().expect("piped");
    let mut answers = std::io::BufReader::new(each.stdout.take().expect("piped"));
    for n in 1..=2 {
        use std::io::{BufRead, Write};
        writeln!(stdin, r#"{{"points":[{{"series":"d"}}]}}"#).expect("write a request");
        stdin.flush().expect("flush");
        let mut line = String::new();
        answers.read_line(&mut line).expect("read an answer");
        assert_eq!(line.trim(), format!(r#"{{"total":"{}"}}"#, total + n));
    }
    drop(stdin);
    let status = each.wait().expect("ctl call ends");
    let _ = done.send(());
    assert!(status.success(), "{status}");

    // What goes wrong is said plainly.
    let (ok, _, err) = ctl_call(
        &host,
        &[
            "trigger",
            &format!("{TRIGGER}/WriteStream"),
            r#"{"points":[]} {"pointz":1}"#,
        ],
    );
    assert!(
        !ok && err.contains("request 2 is not a mydb.trigger.v1.WriteBatch in JSON"),
        "{err}"
    );
    let (ok, _, err) = ctl_call(&host, &["trigger", &on_write, "{} {}"]);
    assert!(!ok && err.contains("takes one request"), "{err}");
    let (ok, _, err) = ctl_call(&host, &["trigger", &format!("{TRIGGER}/Nope")]);
    assert!(
        !ok && err.contains(
            "has no method \"Nope\" (it has: OnWrite, Subscribe, WriteStream, WriteEach)"
        ),
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
    let why = &deploy_rolled_back(&events, &path, "changed-api").await;
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

#[tokio::test]
async fn a_typescript_plugin_serves_the_application_service_and_hands_over_to_rust_and_back() {
    // Built with the TypeScript counter (the SDK and its test fixtures); skipped, with a
    // line saying so, where Node.js is missing.
    let Some(node) = baton_tests::ts_counter().map(|command| command[0].clone()) else {
        return;
    };
    let fixture = baton_tests::repo_root().join("plugin-sdk/node/dist/test/fixtures/trigger.js");
    // The contract, application services included (an unknown method is behind the
    // token too, which grpc-js does not do by itself).
    let fixture_path = fixture.to_str().expect("a UTF-8 path");
    let (code, report) = baton_tests::baton_check(&[], &[&node, fixture_path], &[]);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("pass  application services"), "{report}");
    let dir = tempfile::tempdir().expect("temp dir");
    let launcher = dir.path().join("trigger");
    let typescript = format!("exec {node} {} \"$@\"", fixture.display());
    replace_by_rename(&launcher, &script(&typescript));
    let api = dir.path().join("trigger-api.bin");
    std::fs::write(&api, baton_tests::trigger::FILE_DESCRIPTOR_SET).expect("write");
    let host = TestHost::start(&format!(
        "[plugins.trigger]\ncommand = \"{}\"\nreload = \"watch\"\nsettle_ms = 50\nservices = [\"{TRIGGER}\"]\napi_descriptors = \"{}\"\n",
        launcher.display(),
        api.display()
    ))
    .await;
    // Checked against the application's descriptors over the SDK's reflection.
    host.serving("trigger", Duration::from_secs(20)).await;
    let mut trigger = through_daemon(&host).await;
    // Server streaming and unary, through the daemon.
    let mut points = trigger
        .subscribe(baton_tests::trigger::Filter {
            prefix: "ts.".into(),
        })
        .await
        .expect("TypeScript Subscribe")
        .into_inner();
    let total = trigger
        .on_write(batch("ts.a", &[1.0, 2.0]))
        .await
        .expect("TypeScript OnWrite")
        .into_inner()
        .total;
    assert_eq!(total, 2);
    let first = tokio::time::timeout(Duration::from_secs(5), points.message())
        .await
        .expect("a point within 5 s")
        .expect("the stream is fine")
        .expect("a point");
    assert_eq!((first.series.as_str(), first.sequence), ("ts.a", 1));
    // Bidirectional.
    let each = write_each(&mut trigger, vec![batch("x", &[1.0]); 2]).await;
    assert_eq!(each, vec![3, 4]);
    // By name, with JSON, through the SDK's reflection.
    let (ok, out, err) = ctl_call(
        &host,
        &[
            "trigger",
            &format!("{TRIGGER}/OnWrite"),
            r#"{"points":[{"series":"j"}]}"#,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#"{"total":"5"}"#);
    // The host's key-value store, through the SDK's HostClient.
    host.invoke("trigger", "remember", "kept by the host")
        .await
        .expect("remember");
    assert_eq!(
        host.call_text("trigger", "recall", "").await,
        "kept by the host"
    );

    // TypeScript → Rust → TypeScript: the count moves with each handover.
    to_rust_and_back(&host, &mut trigger, &launcher, &typescript, 5, 1).await;
}
