//! The host-services socket's connections are shared out per plugin: one plugin opening
//! as many as it can, from many processes, leaves its neighbours room to call.

use std::time::Duration;

use baton_tests::{TestHost, plugin};

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
    assert!(held >= 64, "the hog held only {held} connections");
    eprintln!("the hog holds {held} connections");

    // New connections of the neighbour's, each showing its token: an event and a log line.
    assert_eq!(
        host.call_text("neighbour", "emit", "still-here 1").await,
        "1",
        "the neighbour's event (the hog holds {held} connections)"
    );
    assert_eq!(host.call_text("neighbour", "flood-log", "1").await, "1");
    assert!(
        held <= 1024 / 4,
        "one plugin held {held} connections, more than its quarter of 1,024"
    );
    assert!(
        host.log()
            .contains("plugin hog holds 256 connections already"),
        "the host names the plugin it refused"
    );
}
