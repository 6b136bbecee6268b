//! Application services through the library: a plugin serves the embedder's own gRPC
//! API (`mydb.trigger.v1.Trigger`) beside baton's, and the host calls it through
//! generated, typed clients, unary and streaming, on the same route as `invoke`: across
//! reloads (state moved, open streams ended and reopened on the new generation), through
//! a crash, and behind the token. The gate and the daemon: `typed_daemon.rs`.

use std::time::Duration;

use tokio_stream::StreamExt;

use baton_host::{Config, Host, PluginConfig, PluginHandle, ReloadMode};
use baton_tests::trigger::trigger_client::TriggerClient;
use baton_tests::trigger::{Filter, Point, batch};
use baton_tests::{bin, wait_until};
use tonic::Code;

const TRIGGER: &str = "mydb.trigger.v1.Trigger";

/// An in-process host (the library path) running the trigger plugin.
async fn library_host(extra: impl FnOnce(&mut PluginConfig)) -> (Host, PluginHandle) {
    let mut config = Config::empty();
    let mut plugin = PluginConfig::new(bin("trigger"));
    plugin.reload = Some(ReloadMode::Manual);
    plugin.services = vec![TRIGGER.into()];
    plugin.stream_drain_ms = 200;
    extra(&mut plugin);
    config.plugins.insert("trigger".into(), plugin);
    let host = Host::start(&config).await.expect("the host starts");
    let handle = host.plugin("trigger").expect("the trigger plugin");
    handle
        .ready(Duration::from_secs(10))
        .await
        .expect("the plugin serves");
    (host, handle)
}

/// The library host running `broken-trigger MODE` in the trigger's place.
async fn broken_trigger_host(
    mode: &str,
    extra: impl FnOnce(&mut PluginConfig),
) -> (Host, PluginHandle) {
    library_host(|p| {
        p.command = bin("broken-trigger");
        p.args = vec![mode.into()];
        extra(p);
    })
    .await
}

/// Waits (up to 10 s) until the plugin has written a line containing `text`.
async fn logged(handle: &PluginHandle, text: &str) {
    wait_until(
        &format!("the plugin logs {text:?}"),
        Duration::from_secs(10),
        || {
            let seen = handle.logs().iter().any(|l| l.text.contains(text));
            async move { seen.then_some(()) }
        },
    )
    .await;
}

/// The stream's next point, within 5 s.
async fn next_point(stream: &mut tonic::Streaming<Point>) -> Point {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a point within 5 s")
        .expect("the stream is fine")
        .expect("a point")
}

#[tokio::test]
async fn typed_calls_through_the_library_keep_state_and_streams_follow_reloads() {
    let (host, handle) = library_host(|_| {}).await;
    let mut trigger = TriggerClient::new(handle.channel());

    // Unary: typed request, typed answer.
    let total = trigger
        .on_write(batch("cpu.a", &[1.0, 2.0]))
        .await
        .expect("OnWrite")
        .into_inner()
        .total;
    assert_eq!(total, 2);

    // Server streaming: every point written after the subscription, in order.
    let mut stream = trigger
        .subscribe(Filter {
            prefix: "cpu.".into(),
        })
        .await
        .expect("Subscribe")
        .into_inner();
    // The plugin subscribes before it answers, so a write now is seen.
    let mut writer = trigger.clone();
    writer
        .on_write(batch("cpu.b", &[3.0]))
        .await
        .expect("OnWrite");
    let got = next_point(&mut stream).await;
    assert_eq!(got.series, "cpu.b");
    let seen_before_reload = got.sequence;

    // A reload while the stream is open: it is ended, saying why; the state moves.
    let reloaded = tokio::spawn({
        let handle = handle.clone();
        async move { handle.reload().await }
    });
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the stream was not ended within 10 s of the reload"),
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(
        ended
            .message()
            .contains("plugin trigger moved to generation 2")
            && ended.message().contains("reopen the stream"),
        "{}",
        ended.message()
    );
    assert_eq!(reloaded.await.expect("join"), Ok(2));

    // Reopened, the stream lands on generation 2, which numbers on from the old state.
    let mut stream = trigger
        .subscribe(Filter {
            prefix: "cpu.".into(),
        })
        .await
        .expect("Subscribe again")
        .into_inner();
    writer
        .on_write(batch("cpu.c", &[4.0]))
        .await
        .expect("OnWrite after the reload");
    let got = next_point(&mut stream).await;
    assert_eq!(
        (got.series.as_str(), got.sequence),
        ("cpu.c", seen_before_reload + 1)
    );
    assert_eq!(handle.status().generation, 2);
    drop(stream);
    host.shutdown().await;
}

#[tokio::test]
async fn a_crash_mid_stream_gives_unavailable_naming_the_plugin() {
    let (host, handle) = library_host(|_| {}).await;
    let mut trigger = TriggerClient::new(handle.channel());
    let mut stream = trigger
        .subscribe(Filter {
            prefix: String::new(),
        })
        .await
        .expect("Subscribe")
        .into_inner();
    let serving = handle.status();
    let pid = serving.pid.expect("a pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the plugin");
    let broke = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends within 10 s")
        .expect_err("the stream breaks");
    assert_eq!(broke.code(), Code::Unavailable, "{broke:?}");
    assert!(
        broke.message().contains(&format!(
            "plugin trigger (generation {}, pid {pid})",
            serving.generation
        )) && broke.message().contains("SIGKILL"),
        "{}",
        broke.message()
    );
    // The next call waits for the restart and goes through.
    let total = trigger
        .on_write(batch("x", &[1.0]))
        .await
        .expect("OnWrite after the restart")
        .into_inner()
        .total;
    assert_eq!(total, 1);
    host.shutdown().await;
}

#[tokio::test]
async fn calls_refused_by_a_dying_process_before_reaching_it_go_to_the_next_generation() {
    let (_host, handle) = broken_trigger_host("lingering", |_| {}).await;
    let first = handle.status();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.pid.expect("a pid") as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("stop the plugin");
    // From this line to its exit (250 ms), every connect to the plugin fails.
    logged(&handle, "the socket is gone").await;
    let mut trigger = TriggerClient::new(handle.channel());
    let (typed, invoked) = tokio::join!(
        trigger.on_write(batch("cpu", &[1.0])),
        handle.call("total", Default::default(), Default::default())
    );
    let typed = typed.expect("the typed call goes to the next generation");
    assert_eq!(
        typed.into_inner().total,
        1,
        "generation 2 starts from nothing"
    );
    let invoked = invoked.expect("invoke goes to the next generation too");
    assert!(
        invoked.generation > first.generation,
        "answered by generation {} (the dying one was {})",
        invoked.generation,
        first.generation
    );
}

#[tokio::test]
async fn application_services_refuse_calls_without_the_token() {
    let (host, handle) = library_host(|_| {}).await;
    let socket = handle.status().socket.expect("a socket");
    let channel = baton_tests::unix_channel(&socket).await.expect("connect");
    let refused = TriggerClient::new(channel)
        .on_write(batch("x", &[1.0]))
        .await
        .expect_err("no token, no call");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    host.shutdown().await;
}

#[tokio::test]
async fn a_subscription_follows_ten_reloads_under_load_losing_nothing_it_was_given() {
    let (host, handle) = library_host(|p| p.stream_drain_ms = 100).await;
    let trigger = TriggerClient::new(handle.channel());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Writers: one point per call, back to back; every call must succeed.
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (mut client, stop) = (trigger.clone(), stop.clone());
            tokio::spawn(async move {
                let mut totals = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let total = client
                        .on_write(batch("load", &[1.0]))
                        .await
                        .expect("no write fails across reloads")
                        .into_inner()
                        .total;
                    totals.push(total);
                }
                totals
            })
        })
        .collect();

    // A subscriber that reopens its stream whenever the host ends it for a reload.
    let subscriber = {
        let (mut client, stop) = (trigger.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut received, mut reopened) = (Vec::<u64>::new(), 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut stream = client
                    .subscribe(Filter {
                        prefix: "load".into(),
                    })
                    .await
                    .expect("Subscribe")
                    .into_inner();
                loop {
                    match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                        Ok(Ok(Some(point))) => received.push(point.sequence),
                        Ok(Err(status)) => {
                            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                            assert!(status.message().contains("reopen the stream"), "{status:?}");
                            reopened += 1;
                            break;
                        }
                        Ok(Ok(None)) => panic!("the stream ended without a status"),
                        Err(_) if stop.load(std::sync::atomic::Ordering::Relaxed) => break,
                        Err(_) => {}
                    }
                }
            }
            (received, reopened)
        })
    };

    for n in 2..=11 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(handle.reload().await, Ok(n), "reload to generation {n}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut totals = Vec::new();
    for writer in writers {
        totals.extend(writer.await.expect("a writer"));
    }
    let (received, reopened) = subscriber.await.expect("the subscriber");

    // The state moved through all ten handovers: every write got the next number.
    totals.sort_unstable();
    let written = totals.len() as u64;
    assert_eq!(totals, (1..=written).collect::<Vec<_>>());
    // What the subscriber was given came in order, each point once, every one written.
    if let Some(w) = received.windows(2).find(|w| w[0] >= w[1]) {
        panic!("point {} came after point {}", w[1], w[0]);
    }
    assert!(received.last().is_some_and(|&last| last <= written));
    // It was ended and reopened at the reloads, and kept receiving on the new ones.
    assert!(reopened >= 5, "reopened {reopened} times");
    assert!(
        received.len() as u64 >= written / 4,
        "{} of {written}",
        received.len()
    );
    assert_eq!(handle.status().generation, 11);
    host.shutdown().await;
}

#[tokio::test]
async fn a_client_stream_completes_and_one_left_open_at_a_reload_is_ended_so_the_state_moves() {
    let (host, handle) = library_host(|p| p.stream_drain_ms = 200).await;
    let mut trigger = TriggerClient::new(handle.channel());
    let batches = vec![batch("a", &[1.0]), batch("a", &[1.0, 1.0])];
    let total = trigger
        .write_stream(tokio_stream::iter(batches))
        .await
        .expect("WriteStream")
        .into_inner()
        .total;
    assert_eq!(total, 3);

    // A client stream its caller keeps open: a call in flight that would hold the state.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(batch("b", &[1.0])).await.expect("send a batch");
    let open = tokio::spawn({
        let mut trigger = trigger.clone();
        async move {
            trigger
                .write_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        }
    });
    wait_until(
        "the plugin has the stream's first batch",
        Duration::from_secs(5),
        || {
            let handle = handle.clone();
            async move { (handle.invoke("total", "").await.ok()? == "4").then_some(()) }
        },
    )
    .await;
    // The reload goes through (it does not wait out handover_timeout_ms and roll back):
    // the open call is ended after stream_drain_ms, saying why.
    assert_eq!(handle.reload().await, Ok(2));
    let ended = open
        .await
        .expect("join")
        .expect_err("the open stream is ended");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(
        ended
            .message()
            .contains("plugin trigger moved to generation 2"),
        "{}",
        ended.message()
    );
    drop(tx);
    assert_eq!(&handle.invoke("total", "").await.expect("total")[..], b"4");
    host.shutdown().await;
}

#[tokio::test]
async fn a_bidirectional_stream_answers_as_it_goes_and_is_reopened_on_the_next_generation() {
    let (host, handle) = library_host(|p| p.stream_drain_ms = 200).await;
    let mut trigger = TriggerClient::new(handle.channel());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut answers = trigger
        .write_each(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("WriteEach")
        .into_inner();
    // Each batch is answered before the next is sent: both directions are open at once.
    for expected in 1..=3u64 {
        tx.send(batch("bidi", &[1.0])).await.expect("send a batch");
        let answer = tokio::time::timeout(Duration::from_secs(5), answers.message())
            .await
            .expect("an answer within 5 s")
            .expect("the stream is fine")
            .expect("an answer");
        assert_eq!(answer.total, expected);
    }
    // Open across a reload: ended after stream_drain_ms so that the state can move.
    let reload = tokio::spawn({
        let handle = handle.clone();
        async move { handle.reload().await }
    });
    let ended = tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .expect("ended within 10 s")
        .expect_err("ended by the host");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(
        ended.message().contains("moved to generation 2"),
        "{}",
        ended.message()
    );
    assert_eq!(reload.await.expect("the reload"), Ok(2));
    drop(tx);
    // Reopened, it lands on generation 2, which has the count.
    let answers: Vec<u64> = trigger
        .write_each(tokio_stream::iter(vec![batch("bidi", &[1.0]); 2]))
        .await
        .expect("WriteEach on generation 2")
        .into_inner()
        .map(|a| a.map(|a| a.total))
        .collect::<Result<_, _>>()
        .await
        .expect("every answer");
    assert_eq!(answers, vec![4, 5]);
    host.shutdown().await;
}

#[tokio::test]
async fn a_message_over_max_message_bytes_is_refused_with_out_of_range_and_counted() {
    let (host, handle) = library_host(|p| p.max_message_bytes = 2048).await;
    let mut trigger = TriggerClient::new(handle.channel());
    let errors_before = handle.status().errors;
    let big = batch(&"s".repeat(100), &[1.0; 40]);
    let refused = trigger
        .on_write(big.clone())
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(
        refused.message().contains("plugin trigger")
            && refused
                .message()
                .contains("/mydb.trigger.v1.Trigger/OnWrite")
            && refused.message().contains("over max_message_bytes = 2048"),
        "{}",
        refused.message()
    );
    // Inside a client stream too: the second, larger message stops it.
    let refused = trigger
        .write_stream(tokio_stream::iter(vec![batch("ok", &[1.0]), big.clone()]))
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    // And in a bidirectional stream whose answers have begun.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut answers = trigger
        .write_each(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("WriteEach")
        .into_inner();
    tx.send(batch("ok", &[1.0])).await.expect("send a batch");
    answers
        .message()
        .await
        .expect("the first answer")
        .expect("an answer");
    tx.send(big).await.expect("send the large batch");
    let refused = tokio::time::timeout(Duration::from_secs(5), answers.message())
        .await
        .expect("the stream ends within 5 s")
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("/mydb.trigger.v1.Trigger/WriteEach"),
        "{}",
        refused.message()
    );
    assert_eq!(handle.status().errors, errors_before + 3);
    // Under the limit, all is as before.
    let total = trigger
        .on_write(batch("small", &[1.0]))
        .await
        .expect("a small write")
        .into_inner()
        .total;
    assert!(total >= 1);
    host.shutdown().await;
}

#[tokio::test]
async fn an_answer_over_max_message_bytes_ends_its_stream_with_out_of_range() {
    let (host, handle) = broken_trigger_host("bloated", |p| {
        p.max_message_bytes = 4096;
    })
    .await;
    let mut trigger = TriggerClient::new(handle.channel());
    let mut points = trigger
        .subscribe(Filter {
            prefix: String::new(),
        })
        .await
        .expect("Subscribe")
        .into_inner();
    // 64 bytes of series in the request; the plugin answers with 64 × 64.
    // (Subscribe answered once the plugin had subscribed to its feed.)
    trigger
        .on_write(batch(&"s".repeat(64), &[1.0]))
        .await
        .expect("OnWrite");
    let refused = tokio::time::timeout(Duration::from_secs(5), points.message())
        .await
        .expect("the stream ends within 5 s")
        .expect_err("the answer is over the limit");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(
        refused.message().contains("plugin trigger")
            && refused
                .message()
                .contains("its answer to \"/mydb.trigger.v1.Trigger/Subscribe\"")
            && refused.message().contains("over max_message_bytes = 4096"),
        "{}",
        refused.message()
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_unary_call_still_waiting_for_its_answer_at_a_handover_is_left_to_finish() {
    // Streams get 100 ms to end at a handover; the write takes 800 ms to answer.
    let (host, handle) = broken_trigger_host("slow", |p| {
        p.stream_drain_ms = 100;
    })
    .await;
    let mut trigger = TriggerClient::new(handle.channel());
    let write = tokio::spawn({
        let mut trigger = trigger.clone();
        async move { trigger.on_write(batch("slow", &[0.8])).await }
    });
    // The plugin has the call (its answer is what takes time) before the reload starts.
    logged(&handle, "slow write: answering").await;
    assert_eq!(handle.reload().await, Ok(2), "the reload waits for it");
    let total = write
        .await
        .expect("the write task")
        .expect("the unary call is not ended by the handover")
        .into_inner()
        .total;
    assert_eq!(total, 1);
    // And its effect moved with the state.
    let next = trigger
        .on_write(batch("after", &[1.0]))
        .await
        .expect("OnWrite on generation 2")
        .into_inner()
        .total;
    assert_eq!(next, 2);
    host.shutdown().await;
}
