//! The Python SDK as a package: `pip install`ed from a fresh clone into a new venv,
//! with the clone gone afterwards, it runs a plugin under the host that serves and hands
//! its state over at a reload.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use baton_tests::{TestHost, alive, repo_root, wait_until};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// pip fetches the runtime and build requirements (grpcio-tools among them) from PyPI;
/// a slow mirror gets this long before the test gives up on it.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `command` to its end, its output kept in `log`; panics naming `what`, with the
/// output, when it fails or outruns `timeout` (then its whole process group is killed,
/// pip's build subprocesses included).
async fn run(what: &str, mut command: Command, log: &Path, timeout: Duration) {
    let out = std::fs::File::create(log).expect("create the log");
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup the log"))
        .stderr(out)
        .process_group(0);
    let mut child = tokio::process::Command::from(command)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = child.id().expect("a running child has a pid");
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.expect("wait for the child"),
        Err(_) => {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let _ = child.wait().await;
            panic!(
                "{what} did not finish within {timeout:?}; its output:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    };
    assert!(
        status.success(),
        "{what} failed ({status}); its output:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Why this machine's python3 cannot make a venv, if it cannot: its `venv` module, or
/// the `ensurepip` that `python3 -m venv` needs, is missing (Debian ships both apart,
/// in python3-venv).
fn venv_module_missing() -> Option<String> {
    let probe = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs (baton's Python tests need it)");
    (!probe.status.success()).then(|| String::from_utf8_lossy(&probe.stderr).trim().to_owned())
}

fn git(args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn the_sdk_pip_installed_from_a_fresh_clone_runs_a_plugin_that_hands_its_state_over() {
    if let Some(why) = venv_module_missing() {
        eprintln!(
            "skipped: python3 cannot make a venv here ({why}); install its venv module (Debian: python3-venv)"
        );
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("baton-pypkg-")
        .tempdir()
        .expect("temp dir");
    let (clone, venv, project) = (
        dir.path().join("clone"),
        dir.path().join("venv"),
        dir.path().join("project"),
    );

    // What is committed, not the work tree: a user's clone.
    let root = repo_root();
    let head = git(&["-C", &root.to_string_lossy(), "rev-parse", "HEAD"]);
    eprintln!("installing the SDK of commit {head} (uncommitted changes are not in it)");
    let mut clone_it = Command::new("git");
    clone_it
        .args(["clone", "--quiet", "--no-checkout"])
        .arg(&root)
        .arg(&clone);
    run(
        "git clone",
        clone_it,
        &dir.path().join("clone.log"),
        STEP_TIMEOUT,
    )
    .await;
    git(&[
        "-C",
        &clone.to_string_lossy(),
        "checkout",
        "--quiet",
        "--detach",
        &head,
    ]);

    let mut make_venv = Command::new("python3");
    make_venv.args(["-m", "venv"]).arg(&venv);
    run(
        "python3 -m venv",
        make_venv,
        &dir.path().join("venv.log"),
        STEP_TIMEOUT,
    )
    .await;
    let python = venv.join("bin/python");
    let mut pip = Command::new(&python);
    pip.args(["-m", "pip", "install", "--disable-pip-version-check"])
        .arg(clone.join("plugin-sdk/python"))
        // Nothing of the repository's own Python setup may leak in.
        .env_remove("PYTHONPATH");
    run(
        "pip install plugin-sdk/python",
        pip,
        &dir.path().join("pip.log"),
        INSTALL_TIMEOUT,
    )
    .await;

    // pip builds out of tree: not even an ignored build/ or *.egg-info is left behind.
    let left = git(&[
        "-C",
        &clone.to_string_lossy(),
        "status",
        "--porcelain",
        "--ignored",
    ]);
    assert!(
        left.trim().is_empty(),
        "pip install left files in the clone:\n{left}"
    );

    // The plugin is the author's own file; the clone goes, so all the SDK the plugin
    // can find is what pip installed.
    std::fs::create_dir(&project).expect("project dir");
    let plugin = project.join("tally.py");
    std::fs::copy(clone.join("tests/plugins/tally.py"), &plugin).expect("copy the plugin");
    std::fs::remove_dir_all(&clone).expect("remove the clone");

    let host = TestHost::start(&format!(
        "[plugins.tally]\ncommand = \"{}\"\nargs = [\"{}\"]\nreload = \"manual\"\ncopy_binary = false\n",
        python.display(),
        plugin.display()
    ))
    .await;
    let first = host.serving("tally", Duration::from_secs(20)).await;
    let sdk = host.call_text("tally", "sdk", "").await;
    assert!(
        sdk.starts_with(&venv.to_string_lossy().into_owned()) && sdk.contains("site-packages"),
        "baton_plugin came from {sdk}, not from the venv pip installed it into"
    );
    for expected in ["1", "2", "3"] {
        assert_eq!(host.call_text("tally", "incr", "apples").await, expected);
    }
    assert_eq!(host.call_text("tally", "incr", "pears").await, "1");

    host.client()
        .reload(baton_proto::host::ReloadRequest {
            plugin: "tally".into(),
        })
        .await
        .expect("the reload hands over");
    let second = host.status("tally").await;
    assert_eq!(second.generation, first.generation + 1);
    assert_ne!(second.pid, first.pid);
    assert_eq!(host.call_text("tally", "get", "apples").await, "3");
    assert_eq!(host.call_text("tally", "incr", "pears").await, "2");
    wait_until(
        "the first generation's process is gone",
        Duration::from_secs(10),
        || async { (!alive(first.pid)).then_some(()) },
    )
    .await;
}
