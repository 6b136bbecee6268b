//! The Go and TypeScript SDKs keep the contract: `baton check` passes their counters.

use baton_tests::{baton_check, go_counter, ts_counter};

fn assert_passes(command: &[&str], name: &str) {
    let (code, report) = baton_check(&["--call", "incr=a", "--call", "incr=a"], command, &[]);
    assert_eq!(code, Some(0), "{report}");
    assert!(!report.contains("FAIL"), "{report}");
    assert!(
        report.contains(&format!("describe                 {name} ")),
        "{report}"
    );
    assert!(report.contains(r#"incr -> "1"; incr -> "2""#), "{report}");
    assert!(report.contains("reproduced"), "{report}");
    // Both SDKs announce the state's length.
    assert!(!report.contains("does not announce"), "{report}");
    assert!(
        report.contains("pass  stdout                   nothing after the handshake line"),
        "{report}"
    );
}

#[test]
fn baton_check_passes_the_go_counter() {
    let Some(counter) = go_counter() else { return };
    assert_passes(&[counter.to_str().expect("path")], "go-counter");
}

#[test]
fn baton_check_passes_the_typescript_counter() {
    let Some(command) = ts_counter() else { return };
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    assert_passes(&command, "ts-counter");
}
