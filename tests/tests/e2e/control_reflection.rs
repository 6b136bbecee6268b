//! The control socket describes `baton.host.v1.Supervisor` over gRPC reflection, so
//! generic clients call it without the repository's protos: the README's grpcurl lines,
//! run as written against a real daemon.

use std::path::{Path, PathBuf};
use std::process::Command;

use baton_tests::{TestHost, plugin, repo_root};

/// grpcurl where `scripts/test.sh` installs it, or on PATH, or in Go's bin directory.
fn grpcurl() -> Option<PathBuf> {
    let mut places = vec![repo_root().join("target/tools/grpcurl")];
    if let Some(path) = std::env::var_os("PATH") {
        places.extend(std::env::split_paths(&path).map(|d| d.join("grpcurl")));
    }
    if let Some(home) = std::env::var_os("HOME") {
        places.push(Path::new(&home).join("go/bin/grpcurl"));
    }
    places.into_iter().find(|p| p.is_file())
}

/// The README's grpcurl commands: the lines of the block that sets `SOCK`.
fn readme_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let at = readme
        .find("SOCK=$(realpath baton.sock)")
        .expect("the README's grpcurl block");
    let block = &readme[at..readme[at..]
        .find("```")
        .map_or(readme.len(), |end| at + end)];
    block
        .lines()
        .filter(|l| l.starts_with("grpcurl "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_readmes_grpcurl_lines_list_describe_and_call_the_control_api() {
    let Some(grpcurl) = grpcurl() else {
        println!(
            "skipped: no grpcurl (scripts/test.sh installs it with `go install` where Go is present)"
        );
        return;
    };
    let lines = readme_lines();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let host = TestHost::start(&plugin("counter", "counter", &[], "")).await;
    host.serving("counter", std::time::Duration::from_secs(10))
        .await;
    let dir = grpcurl.parent().expect("a directory");
    let path = std::env::join_paths(std::iter::once(dir.to_owned()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let run = |line: &str| {
        let out = Command::new("bash")
            .args(["-c", line])
            .env("SOCK", &host.socket)
            .env("PATH", &path)
            .output()
            .expect("run bash");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{line}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let wants = [
        "baton.host.v1.Supervisor",
        "rpc Invoke ( .baton.host.v1.InvokeRequest ) returns ( .baton.host.v1.InvokeResponse );",
        "\"name\": \"counter\"",
        "\"payload\": \"MQ==\"",
    ];
    for (line, want) in lines.iter().zip(wants) {
        let out = run(line);
        assert!(out.contains(want), "{line}: {out}");
    }
    // Only the control API is listed: the plugin's services are its own, reached with
    // its name in `x-baton-plugin`.
    assert_eq!(run(&lines[0]).trim(), "baton.host.v1.Supervisor");
}
