//! `baton check` passes plugins that keep the contract and names what the others break.

use baton_tests::{baton_check, bin, repo_root, venv_python};

fn line<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| l[6..].starts_with(check))
        .unwrap_or_else(|| panic!("no {check:?} line in:\n{report}"))
}

fn assert_fails(report: &str, check: &str, reason: &str) {
    let l = line(report, check);
    assert!(l.starts_with("FAIL"), "{check} should fail:\n{report}");
    assert!(
        l.contains(reason),
        "{check} should say {reason:?}:\n{report}"
    );
}

#[test]
fn the_examples_pass_every_check() {
    let counter = bin("counter");
    let (code, report) = baton_check(
        &["--call", "incr=a", "--call", "incr=b"],
        &[counter.to_str().expect("path")],
        &[],
    );
    assert_eq!(code, Some(0), "{report}");
    assert!(!report.contains("FAIL"), "{report}");
    assert!(
        line(&report, "snapshot and restore").contains("reproduced"),
        "{report}"
    );
    assert!(!report.contains("does not announce"), "{report}");
    assert!(
        line(&report, "incremental snapshots")
            .contains("a delta out of order refused with DATA_LOSS"),
        "{report}"
    );

    let echo = bin("echo");
    let (code, report) = baton_check(&[], &[echo.to_str().expect("path")], &[]);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        line(&report, "incremental snapshots").contains("does not declare them"),
        "{report}"
    );

    let python = venv_python();
    let script = repo_root().join("example-plugins/python-counter/counter.py");
    let (code, report) = baton_check(
        &["--call", "incr=a"],
        &[
            python.to_str().expect("path"),
            script.to_str().expect("path"),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{report}");
    assert!(
        line(&report, "describe").contains("python-counter"),
        "{report}"
    );
    assert!(
        line(&report, "incremental snapshots")
            .contains("a delta out of order refused with DATA_LOSS"),
        "{report}"
    );
    // Both SDKs announce the state's length, so the note below is absent.
    assert!(!report.contains("does not announce"), "{report}");

    // A plugin that leaves total_bytes at 0 still passes, with a note saying so.
    let unannounced = repo_root().join("tests/plugins/unannounced.py");
    let (code, report) = baton_check(
        &["--call", "incr=a"],
        &[
            python.to_str().expect("path"),
            unannounced.to_str().expect("path"),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{report}");
    let transfer = line(&report, "snapshot and restore");
    assert!(
        transfer.starts_with("pass") && transfer.contains("does not announce total_bytes"),
        "{report}"
    );
}

#[test]
fn broken_plugins_fail_with_the_reason() {
    let faulty = bin("faulty");
    let faulty = faulty.to_str().expect("path");
    let fast = ["--timeout-ms", "1500", "--grace-ms", "700"];

    let (code, report) = baton_check(&fast, &[faulty, "garbage"], &[]);
    assert_eq!(code, Some(1));
    assert_fails(
        &report,
        "handshake line",
        "printed `Hello! I am a plugin that prints banners.`",
    );
    assert!(line(&report, "health").starts_with("skip"), "{report}");

    let (_, report) = baton_check(&fast, &[faulty, "wrong-version"], &[]);
    assert_fails(
        &report,
        "protocol version",
        "protocol version \"99\", this host speaks 1",
    );

    let (_, report) = baton_check(&fast, &[faulty, "exit-at-start"], &[]);
    assert_fails(
        &report,
        "handshake line",
        "cannot open /nonexistent/faulty.conf",
    );

    let (_, report) = baton_check(&fast, &[faulty, "no-health"], &[]);
    assert_fails(&report, "health", "did not say SERVING");

    let (_, report) = baton_check(&fast, &[faulty, "ok"], &[("FAULTY_CHATTY", "1")]);
    assert_fails(&report, "stdout", "describing myself on stdout, by mistake");

    let (_, report) = baton_check(&fast, &[faulty, "ok"], &[("FAULTY_UNKNOWN_CRASH", "1")]);
    assert_fails(&report, "unknown method", "exited (exit code 5)");

    let (_, report) = baton_check(&fast, &[faulty, "ok"], &[("FAULTY_SNAPSHOT_CLOCK", "1")]);
    assert_fails(&report, "snapshot and restore", "snapshot differs");

    let (_, report) = baton_check(&fast, &[faulty, "ok"], &[("FAULTY_IGNORE_SIGTERM", "1")]);
    assert_fails(&report, "sigterm", "still running");
    assert!(line(&report, "shutdown").starts_with("pass"), "{report}");

    let (_, report) = baton_check(&fast, &[faulty, "ok"], &[("FAULTY_LINGER", "1")]);
    assert_fails(&report, "shutdown", "did not exit within");

    let python = venv_python();
    let tokenless = repo_root().join("tests/plugins/tokenless.py");
    let (code, report) = baton_check(
        &fast,
        &[
            python.to_str().expect("path"),
            tokenless.to_str().expect("path"),
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert_fails(
        &report,
        "calls without the token",
        "expected UNAUTHENTICATED, but the plugin ran it",
    );

    // And the same faulty plugin, healthy, passes: the failures above are the faults'.
    let (code, report) = baton_check(&fast, &[faulty, "ok"], &[]);
    assert_eq!(code, Some(0), "{report}");
}

#[test]
fn application_services_are_checked_with_and_without_the_token() {
    let trigger = bin("trigger");
    let (code, report) = baton_check(&[], &[trigger.to_str().expect("path")], &[]);
    assert_eq!(code, Some(0), "{report}");
    let services = line(&report, "application services");
    assert!(
        services.starts_with("pass")
            && services.contains("mydb.trigger.v1.Trigger: served, and refused without the token"),
        "{report}"
    );

    // The same service in Python, once with the SDK's token check and once without.
    let stubs = baton_tests::trigger_python_stubs();
    let python = venv_python();
    let pythonpath = stubs.path().to_str().expect("path");
    for (script, passes) in [
        ("example-plugins/python-trigger/trigger.py", true),
        ("tests/plugins/trigger_tokenless.py", false),
    ] {
        let path = repo_root().join(script);
        let (code, report) = baton_check(
            &[],
            &[python.to_str().expect("path"), path.to_str().expect("path")],
            &[("PYTHONPATH", pythonpath)],
        );
        if passes {
            assert_eq!(code, Some(0), "{script}: {report}");
        } else {
            assert_fails(
                &report,
                "application services",
                "mydb.trigger.v1.Trigger answered a call without x-baton-token",
            );
        }
    }
}

#[test]
fn a_delta_that_does_not_follow_its_cursor_fails_the_incremental_check() {
    let deltas = bin("deltas");
    let deltas = deltas.to_str().expect("path");
    let (code, report) = baton_check(&["--call", "put=a=1"], &[deltas], &[]);
    assert_eq!(code, Some(0), "{report}");
    // Its deltas claim to follow a cursor it never gave.
    let (code, report) = baton_check(
        &["--call", "fault=wrong-base", "--call", "put=a=1"],
        &[deltas],
        &[],
    );
    assert_eq!(code, Some(1), "{report}");
    assert_fails(
        &report,
        "incremental snapshots",
        "is a delta that says it follows",
    );
}

#[test]
fn a_restore_that_checks_nothing_fails_naming_each_bad_stream() {
    let python = venv_python();
    let lax = repo_root().join("tests/plugins/lax_restore.py");
    let (code, report) = baton_check(
        &["--call", "set=kept"],
        &[python.to_str().expect("path"), lax.to_str().expect("path")],
        &[],
    );
    assert_eq!(code, Some(1), "{report}");
    // Every bad stream of the shared vectors a receiver can judge without knowing the
    // plugin's own size limit.
    for vector in [
        "out of order",
        "a gap in seq",
        "schema changed between chunks",
        "a chunk after the last",
        "no last chunk",
        "empty stream",
        "wrong checksum",
        "announces less than it sends",
        "announces more than it sends",
    ] {
        assert_fails(&report, "restore refusals", &format!("{vector:?}"));
    }
    // What it gets right still passes: the failure is Restore's alone.
    assert!(
        line(&report, "snapshot and restore").starts_with("pass"),
        "{report}"
    );
}

#[test]
fn a_call_without_a_payload_is_made_with_an_empty_one() {
    let counter = bin("counter");
    let (code, report) = baton_check(&["--call", "incr"], &[counter.to_str().expect("path")], &[]);
    // Made, not refused as a usage error: the counter's own refusal of an empty name.
    assert_eq!(code, Some(1), "{report}");
    let made =
        "incr(\"\") failed (InvalidArgument): the payload must be a counter name, got nothing";
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("FAIL  calls ") && l.contains(made)),
        "{report}"
    );
}
