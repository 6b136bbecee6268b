//! `baton ctl top`: the live table, in its plain mode (stdout a pipe) and on a
//! pseudo-terminal, against a real host with plugins under load.

use std::time::Duration;

use baton_tests::{Load, TestHost, Watched, ctl_at, ctl_command, plugin};
use nix::sys::signal::Signal;

const COLUMNS: [&str; 9] = [
    "PLUGIN",
    "STATE",
    "GEN",
    "CALLS/S",
    "ERRORS",
    "P99",
    "RSS",
    "CPU%",
    "LAST EVENT",
];

async fn host() -> TestHost {
    let host = TestHost::start(&format!(
        "resource_interval_ms = 100\n{}{}",
        plugin("counter", "counter", &[], ""),
        plugin("echo", "echo", &[], "")
    ))
    .await;
    host.serving("counter", Duration::from_secs(10)).await;
    host.serving("echo", Duration::from_secs(10)).await;
    host
}

/// The cells of `plugin`'s row in a plain table (the last event's words run on).
fn row<'a>(table: &'a str, plugin: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.starts_with(&format!("{plugin} ")))
        .unwrap_or_else(|| panic!("no row for {plugin} in:\n{table}"))
        .split_whitespace()
        .collect()
}

#[tokio::test]
async fn top_once_prints_one_table_with_call_rates_and_p99() {
    let host = host().await;
    host.call_text("echo", "echo", "x").await;
    let load = Load::start(&host, 2, "counter", "incr", "k");
    // On a thread of its own: the callers run on this test's runtime meanwhile.
    let socket = host.socket.clone();
    let (code, table, stderr) = tokio::task::spawn_blocking(move || {
        ctl_at(&socket, &["top", "--once", "--interval", "500"], &[])
    })
    .await
    .expect("baton ctl top");
    let (ok, failed) = load.finish().await;
    assert!(failed.is_empty() && ok > 0, "{failed:?}");
    assert_eq!(code, Some(0), "{stderr}");

    let header = table
        .lines()
        .find(|l| l.starts_with("PLUGIN"))
        .unwrap_or_else(|| panic!("no header in:\n{table}"));
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [&COLUMNS[..8], &["LAST", "EVENT"]].concat()
    );
    let counter = row(&table, "counter");
    assert_eq!(&counter[1..3], ["serving", "1"], "{table}");
    let rate: f64 = counter[3]
        .parse()
        .unwrap_or_else(|_| panic!("calls/s: {table}"));
    assert!(
        rate > 10.0,
        "two callers back to back make more than 10 calls/s: {table}"
    );
    assert_eq!(counter[4], "0", "no errors: {table}");
    assert!(
        ["µs", "ms"].iter().any(|unit| counter[5].ends_with(unit)),
        "a p99 latency: {table}"
    );
    assert!(counter[6].ends_with('M'), "RSS: {table}");
    assert_eq!(&counter[8..10], ["started:", "plugin"], "{table}");
    let echo = row(&table, "echo");
    assert_eq!(echo[3], "0.0", "echo is idle: {table}");
    assert!(
        echo[5].ends_with("µs") || echo[5].ends_with("ms"),
        "{table}"
    );
    assert_eq!(
        table.lines().filter(|l| l.starts_with("PLUGIN")).count(),
        1,
        "one table: {table}"
    );
}

#[tokio::test]
async fn top_without_a_terminal_prints_a_table_per_refresh_until_the_host_stops() {
    let mut host = host().await;
    let mut top = Watched::spawn(ctl_command(&host.socket, &["top", "--interval", "200"]));
    top.wait_for_stdout("three tables", Duration::from_secs(10), |out| {
        out.lines().filter(|l| l.starts_with("PLUGIN")).count() >= 3
    })
    .await;
    // No cursor movement or screen clearing: plain lines a file or a pager can take.
    assert!(!top.stdout().contains('\x1b'), "{:?}", top.stdout());
    assert_eq!(host.stop(Duration::from_secs(10)), Some(0));
    assert_eq!(
        top.exit_code(Duration::from_secs(10)).await,
        Some(0),
        "{}",
        top.stderr()
    );
    assert!(
        top.stderr().contains("the host stopped"),
        "{}",
        top.stderr()
    );
}

/// `baton ctl top` on a terminal of 120 x 30, once it has drawn a refreshed table.
async fn top_on_a_terminal(host: &TestHost) -> Watched {
    let top = Watched::on_terminal(
        ctl_command(&host.socket, &["top", "--interval", "200"]),
        120,
        30,
    );
    top.wait_for_stdout(
        "the table is drawn and refreshed",
        Duration::from_secs(10),
        |out| {
            [
                "PLUGIN",
                "CALLS/S",
                "P99",
                "counter",
                "serving",
                "refreshed",
            ]
            .iter()
            .all(|word| out.contains(word))
        },
    )
    .await;
    let screen = top.stdout();
    // Full screen: the alternate screen, the cursor hidden, drawn in place.
    assert!(screen.contains("\x1b[?1049h"), "{screen:?}");
    assert!(screen.contains("\x1b[?25l"), "{screen:?}");
    top
}

#[tokio::test]
async fn top_on_a_terminal_draws_in_place_and_quits_on_q_or_sigint() {
    let host = host().await;

    let mut top = top_on_a_terminal(&host).await;
    top.type_in("q");
    assert_eq!(
        top.exit_code(Duration::from_secs(10)).await,
        Some(0),
        "{:?}",
        top.stdout()
    );
    // The terminal is given back as it was: the main screen, the cursor shown.
    let screen = top.stdout();
    let given_back = &screen[screen.rfind("\x1b[?1049h").expect("full screen")..];
    assert!(
        given_back.contains("\x1b[?1049l") && given_back.contains("\x1b[?25h"),
        "{screen:?}"
    );

    let mut top = top_on_a_terminal(&host).await;
    top.signal(Signal::SIGINT);
    assert_eq!(
        top.exit_code(Duration::from_secs(10)).await,
        Some(0),
        "{:?}",
        top.stdout()
    );
    assert!(top.stdout().contains("\x1b[?1049l"), "{:?}", top.stdout());
}
