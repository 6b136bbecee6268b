//! What a client of the daemon is told when its call cannot be forwarded: every refusal
//! names the `x-baton-plugin` header, the plugin, and what the plugins serve, so that a
//! missing or wrong header is fixed from the message alone.

use std::time::Duration;

use baton_tests::trigger::trigger_client::TriggerClient;
use baton_tests::trigger::{Filter, batch};
use baton_tests::{TestHost, bin, through_daemon};

const TRIGGER: &str = "mydb.trigger.v1.Trigger";

/// `OnWrite` through `host`'s daemon with `x-baton-plugin: plugin` (none if `None`),
/// expected to fail: its status.
async fn on_write_fails(host: &TestHost, plugin: Option<&str>) -> tonic::Status {
    let mut trigger = TriggerClient::new(through_daemon(&host.socket, plugin).await);
    match trigger.on_write(batch("a", &[1.0])).await {
        Ok(answer) => panic!("forwarded with {plugin:?}: {answer:?}"),
        Err(status) => status,
    }
}

#[tokio::test]
async fn a_call_that_cannot_be_forwarded_is_told_the_header_the_plugin_and_what_it_serves() {
    let host = TestHost::start(&format!(
        "[plugins.trigger]\ncommand = \"{}\"\n\n[plugins.echo]\ncommand = \"{}\"\n",
        bin("trigger").display(),
        bin("echo").display()
    ))
    .await;
    host.serving("trigger", Duration::from_secs(10)).await;
    host.serving("echo", Duration::from_secs(10)).await;

    // No header: the call is for the daemon, which serves no such thing; the message
    // says which header routes it, and to which plugin.
    let none = on_write_fails(&host, None).await;
    assert_eq!(none.code(), tonic::Code::Unimplemented, "{none:?}");
    let message = none.message();
    assert!(
        message.contains("x-baton-plugin")
            && message.contains(&format!("/{TRIGGER}/OnWrite"))
            && message.contains(&format!("trigger serves {TRIGGER}")),
        "{message}"
    );

    // A plugin that does not serve it: named, with what it does serve, and which
    // plugin would.
    let echo = on_write_fails(&host, Some("echo")).await;
    assert_eq!(echo.code(), tonic::Code::Unimplemented, "{echo:?}");
    let message = echo.message();
    assert!(
        message.contains(&format!("plugin echo does not serve {TRIGGER}"))
            && message.contains("its Describe lists no application services")
            && message.contains("x-baton-plugin")
            && message.contains(&format!("trigger serves {TRIGGER}")),
        "{message}"
    );

    // No plugin of that name: the plugins there are, and which serves the service.
    let nope = on_write_fails(&host, Some("nope")).await;
    assert_eq!(nope.code(), tonic::Code::NotFound, "{nope:?}");
    let message = nope.message();
    assert!(
        message.contains("no plugin named \"nope\"")
            && message.contains("x-baton-plugin")
            && message.contains("echo, trigger")
            && message.contains(&format!("trigger serves {TRIGGER}")),
        "{message}"
    );

    // The plugin it is meant for still answers.
    let mut trigger = TriggerClient::new(through_daemon(&host.socket, Some("trigger")).await);
    let total = trigger
        .on_write(batch("a", &[1.0]))
        .await
        .expect("OnWrite")
        .into_inner()
        .total;
    assert_eq!(total, 1);
}

#[tokio::test]
async fn a_forwarded_stream_whose_plugin_dies_ends_with_a_status_naming_the_plugin() {
    let host = TestHost::start(&format!(
        "[plugins.trigger]\ncommand = \"{}\"\nservices = [\"{TRIGGER}\"]\n",
        bin("trigger").display()
    ))
    .await;
    let serving = host.serving("trigger", Duration::from_secs(10)).await;
    let mut trigger = TriggerClient::new(through_daemon(&host.socket, Some("trigger")).await);
    let mut stream = trigger
        .subscribe(Filter {
            prefix: String::new(),
        })
        .await
        .expect("Subscribe is forwarded")
        .into_inner();
    // The stream is under way: a point written reaches it through the daemon.
    trigger.on_write(batch("a", &[1.0])).await.expect("OnWrite");
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a point within 10 s")
        .expect("the stream flows")
        .expect("a point");
    assert_eq!(first.series, "a");

    let pid = serving.pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the plugin");
    let broke = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends within 10 s")
        .expect_err("the stream breaks");
    // The daemon's client is told who broke the stream and how, not a bare reset.
    assert_eq!(broke.code(), tonic::Code::Unavailable, "{broke:?}");
    assert!(
        broke.message().contains(&format!(
            "plugin trigger (generation {}, pid {pid})",
            serving.generation
        )) && broke.message().contains("SIGKILL"),
        "{broke:?}"
    );
}
