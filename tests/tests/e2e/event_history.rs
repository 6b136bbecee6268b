//! The event history `baton ctl events --last N` replays: a plugin emitting events at
//! its full rate pushes out only its own, never a neighbour's nor the host's.

use std::time::Duration;

use baton_proto::host::{Event, EventsRequest};
use baton_tests::{TestHost, plugin};

/// The events the host replays for `plugin` ("" for every plugin) with `--last last`,
/// oldest first. The replay comes before anything live, so it ends where a marker
/// emitted by `marker` after subscribing arrives.
async fn history(host: &TestHost, plugin: &str, last: u32, marker: &str) -> Vec<Event> {
    let mut stream = host
        .client()
        .events(EventsRequest {
            plugin: plugin.into(),
            last,
        })
        .await
        .expect("subscribe to events")
        .into_inner();
    assert_eq!(host.call_text(marker, "emit", "end-of-replay 1").await, "1");
    let mut replayed = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the marker event within 10 s")
            .expect("the event stream")
            .expect("the stream stays open");
        if event.kind == "plugin:end-of-replay" {
            return replayed;
        }
        replayed.push(event);
    }
}

fn has(events: &[Event], plugin: &str, kind: &str) -> bool {
    events.iter().any(|e| e.plugin == plugin && e.kind == kind)
}

#[tokio::test]
async fn a_plugin_flooding_events_pushes_out_neither_its_neighbours_nor_the_hosts() {
    let host = TestHost::start(&format!(
        "{}{}",
        plugin("loud", "faulty", &[], ""),
        plugin("quiet", "faulty", &[], "")
    ))
    .await;
    host.serving("loud", Duration::from_secs(10)).await;
    host.serving("quiet", Duration::from_secs(10)).await;
    assert_eq!(host.call_text("quiet", "emit", "note 1").await, "1");

    // Past what the whole history held (256 events), at the 100 per second allowed.
    assert_eq!(host.call_text("loud", "emit", "noise 400").await, "400");

    let quiet = history(&host, "quiet", 1000, "quiet").await;
    assert!(
        has(&quiet, "quiet", "started") && has(&quiet, "quiet", "plugin:note"),
        "quiet's own history lost its events: {quiet:?}"
    );
    let loud = history(&host, "loud", 1000, "loud").await;
    assert!(
        has(&loud, "loud", "started"),
        "the host's event about loud was pushed out by loud's own"
    );
    let noise = loud.iter().filter(|e| e.kind == "plugin:noise").count();
    assert!(
        (1..400).contains(&noise),
        "loud's own events are bounded: {noise} of 400 kept"
    );
    let everyone = history(&host, "", 1000, "quiet").await;
    assert!(
        has(&everyone, "quiet", "started") && has(&everyone, "loud", "started"),
        "the whole history lost the host's events"
    );
}
