//! What guards a config reload: the file is read only once it has stopped changing, a
//! config that would stop every plugin needs `--allow-empty`, and `--dry-run` says what
//! a reload would do without doing it.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use baton_host::config::CONFIG_SETTLE;
use baton_tests::{TestHost, Watched, ctl_command, plugin, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn config_path(host: &TestHost) -> PathBuf {
    host.dir.path().join("baton.toml")
}

/// The config's first line, which a reload must keep: the control socket.
fn socket_line(host: &TestHost) -> String {
    format!("socket = \"{}\"\n\n", host.socket.display())
}

fn echoes(names: &[&str]) -> String {
    names.iter().map(|n| plugin(n, "echo", &[], "")).collect()
}

/// Each plugin's name and generation, serving or not.
async fn generations(host: &TestHost) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = host
        .list()
        .await
        .into_iter()
        .map(|s| (s.name, s.generation))
        .collect();
    all.sort();
    all
}

async fn start_with(names: &[&str]) -> (TestHost, Vec<(String, u64)>) {
    let host = TestHost::start(&echoes(names)).await;
    for name in names {
        host.serving(name, Duration::from_secs(10)).await;
    }
    let before = generations(&host).await;
    (host, before)
}

#[tokio::test]
async fn a_config_without_plugins_is_refused_unless_allowed() {
    let (host, before) = start_with(&["a", "b"]).await;
    std::fs::write(config_path(&host), socket_line(&host)).expect("empty the config");

    let (ok, out, err) = host.ctl(&["reload-config"]);
    assert!(!ok, "an empty config was applied: {out}");
    assert!(
        err.contains("no plugins") && err.contains("--allow-empty"),
        "the refusal says how to insist: {err}"
    );
    assert_eq!(generations(&host).await, before, "nothing changed");

    // SIGHUP has no flag to give: it is refused, and the log says how to force it.
    kill(Pid::from_raw(host.pid() as i32), Signal::SIGHUP).expect("SIGHUP");
    wait_until(
        "the host logs the SIGHUP refused",
        Duration::from_secs(10),
        || async {
            let log = host.log();
            log.lines()
                .any(|l| {
                    l.contains("asked for by SIGHUP refused")
                        && l.contains("reload-config --allow-empty")
                })
                .then_some(())
        },
    )
    .await;
    assert_eq!(generations(&host).await, before, "nothing changed");

    let (ok, out, err) = host.ctl(&["reload-config", "--allow-empty"]);
    assert!(ok, "--allow-empty was refused: {err}");
    assert!(out.contains("2 removed"), "{out}");
    assert!(generations(&host).await.is_empty());
}

#[tokio::test]
async fn a_dry_run_prints_the_plan_and_changes_nothing() {
    let (host, before) = start_with(&["a", "b", "c"]).await;
    std::fs::write(
        config_path(&host),
        format!(
            "{}{}{}{}",
            socket_line(&host),
            echoes(&["a"]),
            plugin("b", "echo", &[], "env = { GREETING = \"hi\" }"),
            echoes(&["d"])
        ),
    )
    .expect("write the new config");

    let (ok, out, err) = host.ctl(&["reload-config", "--dry-run"]);
    assert!(ok, "the dry run failed: {err}");
    for line in [
        "plugin c: would be removed",
        "plugin d: would be added",
        "plugin b: env changed; would be handed over",
        "dry run, nothing changed: 1 to add, 1 to remove, 1 to hand over, 0 to update in place, 1 unchanged",
    ] {
        assert!(out.contains(line), "{line:?} missing from the plan:\n{out}");
    }
    assert!(!out.contains("plugin a"), "a does not change:\n{out}");
    assert_eq!(generations(&host).await, before, "nothing changed");
    assert!(
        !host.log().contains("config reloaded"),
        "the dry run reloaded"
    );
}

#[tokio::test]
async fn a_dry_run_says_what_the_reload_would_discard_or_refuse() {
    let host = TestHost::start(&format!(
        "{}{}",
        echoes(&["a"]),
        plugin("counter", "counter", &[], "checkpoint_interval_ms = 1000\n")
    ))
    .await;
    host.serving("a", Duration::from_secs(10)).await;
    host.serving("counter", Duration::from_secs(10)).await;
    let before = generations(&host).await;
    std::fs::write(config_path(&host), socket_line(&host)).expect("empty the config");

    let (ok, out, err) = host.ctl(&["reload-config", "--dry-run"]);
    assert!(ok, "the dry run failed: {err}");
    let plan = format!("{out}{err}");
    for line in [
        "plugin a: would be removed, stopped; its state would be discarded (it keeps no checkpoints)",
        "plugin counter: would be removed, stopped\n",
        "a reload would be refused: the new config has no plugins",
        "reload-config --allow-empty",
    ] {
        assert!(
            plan.contains(line),
            "{line:?} missing from the plan:\n{plan}"
        );
    }

    // Allowed, the same plan without the refusal; and the reload does what it said.
    let (ok, out, err) = host.ctl(&["reload-config", "--dry-run", "--allow-empty"]);
    assert!(ok, "the dry run failed: {err}");
    assert!(!err.contains("would be refused"), "{err}");
    assert_eq!(generations(&host).await, before, "nothing changed");
    let planned: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with("plugin "))
        .map(|l| l.replace("would be ", "").replace("would ", ""))
        .collect();
    let (ok, out, err) = host.ctl(&["reload-config", "--allow-empty"]);
    assert!(ok, "--allow-empty was refused: {err}");
    let done: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with("plugin "))
        .map(|l| {
            l.replace("(it kept no", "(it keeps no")
                .replace("is discarded", "discarded")
        })
        .collect();
    assert_eq!(done, planned, "the reload did what the dry run said");
}

#[tokio::test]
async fn a_config_being_written_slowly_is_read_once_whole() {
    let (host, before) = start_with(&["a", "b", "c"]).await;
    let whole = format!("{}{}", socket_line(&host), echoes(&["a", "b", "c"]));
    let lines: Vec<&str> = whole.split_inclusive('\n').collect();
    // The first five lines parse on their own: the socket and plugin a.
    let mut file = std::fs::File::create(config_path(&host)).expect("rewrite in place");
    file.write_all(lines[..5].concat().as_bytes())
        .expect("the first lines");
    let mut last = Instant::now();

    // The writer keeps the file changing (a comment now and then) until the host has
    // looked at it and said it waits, then writes the rest at once. It notes the longest
    // pause between two of its writes: only a pause of the settle time (a writer
    // descheduled that long) lets the host read the half file, rightly.
    let log = host.dir.path().join("host.log");
    let rest = lines[5..].concat();
    let writer = std::thread::spawn(move || {
        let waiting = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("waiting until it is still")
        };
        let mut longest = Duration::ZERO;
        let mut wrote = |file: &mut std::fs::File, bytes: &[u8]| {
            let _ = file.write_all(bytes);
            longest = longest.max(last.elapsed());
            last = Instant::now();
        };
        for _ in 0..1000 {
            if waiting() {
                break;
            }
            wrote(&mut file, b"# still writing\n");
            std::thread::sleep(Duration::from_millis(20));
        }
        wrote(&mut file, rest.as_bytes());
        longest
    });
    let mut reload = Watched::spawn(ctl_command(&host.socket, &["reload-config"]));
    let code = reload.exit_code(Duration::from_secs(30)).await;
    let longest = writer.join().expect("the writer");
    assert_eq!(code, Some(0), "{}", reload.stderr());
    let whole_read =
        reload.stdout().contains("0 removed") && reload.stdout().contains("3 unchanged");
    if !whole_read && longest >= CONFIG_SETTLE {
        eprintln!(
            "the writer stalled {longest:?}, past the settle time: the half file was still \
             long enough to count as written"
        );
        return;
    }
    assert!(
        whole_read,
        "the reload read a file half written (the writer never paused more than \
         {longest:?}):\n{}",
        reload.stdout()
    );
    assert_eq!(
        generations(&host).await,
        before,
        "every plugin kept serving"
    );
}
