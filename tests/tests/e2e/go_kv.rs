//! The go-kv example, a go-plugin style plugin ported to the Go SDK: it serves its
//! application's own `kv.v1.KV`, which `baton ctl call` reaches by name through the
//! daemon (from the plugin's reflection) and a Go program reaches with the generated
//! client a go-plugin host would use, and its data outlives an operator's reload and a
//! deploy of a new binary, as baton state.

use std::time::Duration;

use baton_tests::{EventLog, TestHost, baton_check, go_kv, go_kv_client, replace_by_rename};

const KV: &str = "kv.v1.KV";

fn put(host: &TestHost, key: &str, base64_value: &str) {
    let request = format!(r#"{{"key":"{key}","value":"{base64_value}"}}"#);
    let (ok, out, err) = host.ctl(&["call", "kv", &format!("{KV}/Put"), &request]);
    assert!(ok, "Put {key}: {err}");
    assert_eq!(out.trim(), "{}");
}

/// The JSON answer of `Get(key)`, or the CLI's error.
fn get(host: &TestHost, key: &str) -> Result<String, String> {
    let request = format!(r#"{{"key":"{key}"}}"#);
    match host.ctl(&["call", "kv", &format!("{KV}/Get"), &request]) {
        (true, out, _) => Ok(out.trim().to_owned()),
        (false, _, err) => Err(err),
    }
}

/// go-kv's Go client against `host`: (succeeded, stdout, stderr).
fn go_client(client: &std::path::Path, host: &TestHost, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(client)
        .arg("-socket")
        .arg(&host.socket)
        .args(args)
        .output()
        .expect("run go-kv's client");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn pid_of(host: &TestHost, status: &baton_proto::host::PluginStatus) -> u32 {
    assert_ne!(status.pid, 0, "{}", host.log());
    status.pid
}

#[tokio::test]
async fn go_kv_serves_its_own_api_by_name_and_keeps_its_data_across_reloads() {
    let (Some(built), Some(client)) = (go_kv(), go_kv_client()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("go-kv");
    let binary = std::fs::read(&built).expect("read the built go-kv");
    replace_by_rename(&path, &binary);
    let host = TestHost::start(&format!(
        "[plugins.kv]\ncommand = \"{}\"\nreload = \"watch\"\nsettle_ms = 50\nservices = [\"{KV}\"]\n",
        path.display()
    ))
    .await;
    let events = EventLog::start(&host).await;
    let first = host.serving("kv", Duration::from_secs(20)).await;

    // JSON's bytes are base64: "apple" and "" (an empty value is a value).
    put(&host, "fruit", "YXBwbGU=");
    put(&host, "nothing", "");
    assert_eq!(
        get(&host, "fruit").as_deref(),
        Ok(r#"{"value":"YXBwbGU="}"#)
    );
    assert_eq!(get(&host, "nothing").as_deref(), Ok("{}"));
    let missing = get(&host, "vegetable").expect_err("a key never put");
    assert!(
        missing.contains("NotFound") && missing.contains(r#"no value under "vegetable""#),
        "{missing}"
    );

    // An operator's reload: a new process of the same build, the data handed over.
    let (ok, out, err) = host.ctl(&["reload", "kv"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "kv: generation 2 serving");
    let second = host.status("kv").await;
    assert_ne!(pid_of(&host, &second), pid_of(&host, &first));
    assert_eq!(
        get(&host, "fruit").as_deref(),
        Ok(r#"{"value":"YXBwbGU="}"#)
    );
    put(&host, "fruit", "cGVhcg==");

    // A deploy: a new binary renamed into place is noticed, started beside the old
    // process and handed the data.
    replace_by_rename(&path, &binary);
    events
        .wait_for("handover_done", 2, Duration::from_secs(20))
        .await;
    let third = host.serving("kv", Duration::from_secs(10)).await;
    assert_eq!(third.generation, 3);
    assert_ne!(pid_of(&host, &third), pid_of(&host, &second));
    assert_eq!(
        get(&host, "fruit").as_deref(),
        Ok(r#"{"value":"cGVhcg=="}"#)
    );
    assert_eq!(get(&host, "nothing").as_deref(), Ok("{}"));
    assert!(events.of_kind("rollback").is_empty());

    // A Go program calls it with kv.v1's generated client, through the daemon.
    let (ok, out, err) = go_client(&client, &host, &["get", "fruit"]);
    assert!(ok, "{err}");
    assert_eq!(out, "pear\n");
    let (ok, _, err) = go_client(&client, &host, &["put", "vegetable", "carrot"]);
    assert!(ok, "{err}");
    assert_eq!(
        get(&host, "vegetable").as_deref(),
        Ok(r#"{"value":"Y2Fycm90"}"#)
    );
    let (ok, _, err) = go_client(&client, &host, &["get", "mineral"]);
    assert!(!ok && err.contains("NotFound"), "{err}");
}

#[tokio::test]
async fn baton_check_passes_go_kv() {
    let Some(built) = go_kv() else { return };
    let command = built.to_str().expect("a UTF-8 path");
    let (code, report) = baton_check(&[], &[command], &[]);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("pass  application services") && report.contains(KV),
        "{report}"
    );
    assert!(report.contains("reproduced"), "{report}");
}
