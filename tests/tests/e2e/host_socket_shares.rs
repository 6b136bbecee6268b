//! The host-services socket's connections are shared out per plugin: one plugin opening
//! as many as it can, from many processes, leaves its neighbours room to call.

use std::time::Duration;

use baton_tests::{TestHost, plugin};

/// The connections one plugin may hold on `host.sock`, as the host works it out: the
/// socket holds an eighth of the open-files limit it raises itself to (this test's hard
/// limit, which it inherits), between 16 and 1,024, and a plugin a quarter of that.
fn one_plugins_share() -> usize {
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(_, hard)| hard);
    let socket = usize::try_from(hard / 8).unwrap_or(1024).clamp(16, 1024);
    (socket / 4).max(1)
}

#[tokio::test]
async fn a_plugin_holding_every_connection_it_can_leaves_its_neighbour_room() {
    let host = TestHost::start(&format!(
        "{}{}",
        plugin("hog", "faulty", &[], ""),
        plugin("neighbour", "faulty", &[], "")
    ))
    .await;
    host.serving("hog", Duration::from_secs(10)).await;
    host.serving("neighbour", Duration::from_secs(10)).await;

    // 20 processes × 64 (the per-process cap): past the socket's 1,024, tokens shown.
    let held: usize = host
        .call_text("hog", "hog-host-socket", "20 64")
        .await
        .parse()
        .expect("a count");
    let share = one_plugins_share();
    assert!(
        held >= share / 2,
        "the hog held only {held} connections (its share is {share})"
    );
    eprintln!("the hog holds {held} connections, its share {share}");

    // New connections of the neighbour's, each showing its token: an event and a log line.
    assert_eq!(
        host.call_text("neighbour", "emit", "still-here 1").await,
        "1",
        "the neighbour's event (the hog holds {held} connections)"
    );
    assert_eq!(host.call_text("neighbour", "flood-log", "1").await, "1");
    assert!(
        held <= share,
        "one plugin held {held} connections, more than its share of {share}"
    );
    let named = format!("plugin hog holds {share} connections already");
    assert!(
        host.log().contains(&named),
        "the host names the plugin it refused ({named:?})"
    );
}
