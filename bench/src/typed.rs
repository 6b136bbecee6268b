//! Application services (a plugin's own `.proto`, here the tests' `mydb.trigger.v1`)
//! called through generated clients, each beside its floor in the same run: a typed
//! unary call through (a) a bare tonic client on the plugin's socket, (b) the library's
//! `PluginHandle::channel()`, (c) the daemon's forwarding (`x-baton-plugin`), (d) a
//! bare raw-frame relay (`bench-relay`: (c)'s floor); and a server stream's throughput
//! through each.

use std::time::{Duration, Instant};

use baton_tests::trigger::trigger_client::TriggerClient;
use baton_tests::trigger::{Filter, Point, WriteBatch};
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::report::{Row, quantile, sorted};
use crate::{Bins, Error, Mode};

/// Adds one metadata entry to every call.
#[derive(Clone)]
struct Header(&'static str, AsciiMetadataValue);

impl tonic::service::Interceptor for Header {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert(self.0, self.1.clone());
        Ok(request)
    }
}

type Bare = TriggerClient<InterceptedService<Channel, Header>>;
type Library = TriggerClient<baton_host::PluginChannel>;

fn one_point() -> WriteBatch {
    WriteBatch {
        points: vec![Point {
            series: "bench".into(),
            value: 1.0,
            sequence: 0,
        }],
    }
}

pub async fn run(bins: &Bins, mode: Mode, rows: &mut Vec<Row>) -> Result<(), Error> {
    let trigger = bins.get("trigger")?;
    let bare_plugin = crate::procs::BarePlugin::start_with(&trigger, true).await?;
    let bare_channel = crate::procs::unix_channel(&bare_plugin.socket, true).await?;
    let bare: Bare = TriggerClient::with_interceptor(
        bare_channel,
        Header(baton_proto::TOKEN_METADATA_KEY, bare_plugin.token.clone()),
    );

    let mut config = baton_host::Config::empty();
    let mut plugin = baton_host::PluginConfig::new(&trigger);
    plugin.reload = Some(baton_host::ReloadMode::Manual);
    config.plugins.insert("trigger".into(), plugin);
    let host = baton_host::Host::start(&config).await?;
    let handle = host.plugin("trigger").ok_or("the host has no trigger")?;
    handle.ready(Duration::from_secs(10)).await?;
    let library: Library = TriggerClient::new(handle.channel());

    let daemon = crate::procs::Daemon::start(
        &bins.get("baton")?,
        &format!(
            "[plugins.trigger]\ncommand = \"{}\"\nreload = \"manual\"\n",
            trigger.display()
        ),
        Duration::from_secs(10),
    )
    .await?;
    let daemon_channel =
        crate::procs::unix_channel(&daemon.dir.path().join("baton.sock"), false).await?;
    let through_daemon: Bare = TriggerClient::with_interceptor(
        daemon_channel,
        Header("x-baton-plugin", AsciiMetadataValue::from_static("trigger")),
    );

    let relay = crate::procs::Relay::start(&bins.get("bench-relay")?, &bare_plugin).await?;
    let through_relay: Bare = TriggerClient::with_interceptor(
        crate::procs::unix_channel(&relay.socket, false).await?,
        Header("x-baton-plugin", AsciiMetadataValue::from_static("trigger")),
    );
    let paths = Paths {
        bare,
        library,
        daemon: through_daemon,
        relay: through_relay,
    };

    let result = async {
        unary(&paths, mode, rows).await?;
        streaming(&paths, mode, rows).await
    }
    .await;
    host.shutdown().await;
    daemon.stop(Duration::from_secs(10)).await;
    drop(relay);
    drop(bare_plugin);
    result
}

/// The four ways to the plugin's service.
struct Paths {
    bare: Bare,
    library: Library,
    daemon: Bare,
    relay: Bare,
}

/// p50 of sequential `OnWrite` calls, the four paths interleaved in rounds.
async fn unary(paths: &Paths, mode: Mode, rows: &mut Vec<Row>) -> Result<(), Error> {
    let (rounds, per_round) = match mode {
        Mode::Quick => (3, 100),
        Mode::Full => (100, 200),
    };
    let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..=rounds {
        // Round 0 warms every path up and is not counted. A fresh task per path and
        // round, as in the `Invoke` rounds, so no path keeps one lucky placement.
        let times = (
            tokio::spawn(timed_writes(paths.bare.clone(), per_round)).await??,
            tokio::spawn(timed_writes(paths.library.clone(), per_round)).await??,
            tokio::spawn(timed_writes(paths.daemon.clone(), per_round)).await??,
            tokio::spawn(timed_writes(paths.relay.clone(), per_round)).await??,
        );
        if round > 0 {
            a.extend(times.0);
            b.extend(times.1);
            c.extend(times.2);
            d.extend(times.3);
        }
    }
    let [a50, b50, c50, d50] = [a, b, c, d].map(|t| quantile(&sorted(t), 0.5));
    rows.push(Row::new(
        "typed",
        "OnWrite (unary) p50 (a) bare tonic client on the plugin socket",
        a50,
        "µs",
    ));
    rows.push(
        Row::new(
            "typed",
            "OnWrite (unary) p50 (b) library: handle.channel()",
            b50,
            "µs",
        )
        .baseline(a50)
        .target("≤ 1.10 × (a)", b50 <= 1.10 * a50),
    );
    rows.push(
        Row::new(
            "typed",
            "OnWrite (unary) p50 (d) bare raw-frame relay (bench-relay)",
            d50,
            "µs",
        )
        .baseline(a50),
    );
    rows.push(
        Row::new(
            "typed",
            "OnWrite (unary) p50 (c) daemon: x-baton-plugin forwarding",
            c50,
            "µs",
        )
        .baseline(d50),
    );
    Ok(())
}

/// `calls` sequential one-point `OnWrite`s through `client`: each one's time in µs.
async fn timed_writes<S>(mut client: TriggerClient<S>, calls: usize) -> Result<Vec<f64>, Error>
where
    S: tonic::client::GrpcService<tonic::body::Body> + Send + 'static,
    S::Future: Send,
    S::Error: Into<tonic::codegen::StdError>,
    S::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        client.on_write(one_point()).await?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(times)
}

/// Points per second a `Subscribe` stream delivers while batches are written, through
/// each path.
async fn streaming(paths: &Paths, mode: Mode, rows: &mut Vec<Row>) -> Result<(), Error> {
    let (batches, per_batch) = match mode {
        Mode::Quick => (20, 100),
        Mode::Full => (2000, 100),
    };
    // Each path writes through itself, and reads back through itself.
    let rate = |client: &Bare| stream_rate(client.clone(), client.clone(), batches, per_batch);
    let a = rate(&paths.bare).await?;
    let library = paths.library.clone();
    let b = stream_rate(library.clone(), library, batches, per_batch).await?;
    let d = rate(&paths.relay).await?;
    let c = rate(&paths.daemon).await?;
    rows.push(Row::new(
        "typed",
        format!(
            "Subscribe (server streaming) (a) bare: points/s, {batches} batches of {per_batch}"
        ),
        a,
        "points/s",
    ));
    rows.push(
        Row::new(
            "typed",
            "Subscribe (server streaming) (b) library: points/s",
            b,
            "points/s",
        )
        .baseline(a)
        .target("≥ 0.9 × (a)", b >= 0.9 * a),
    );
    rows.push(
        Row::new(
            "typed",
            "Subscribe (server streaming) (d) bare raw-frame relay: points/s",
            d,
            "points/s",
        )
        .baseline(a),
    );
    rows.push(
        Row::new(
            "typed",
            "Subscribe (server streaming) (c) daemon: points/s",
            c,
            "points/s",
        )
        .baseline(d),
    );
    Ok(())
}

async fn stream_rate<S>(
    mut subscriber: TriggerClient<S>,
    mut writer: TriggerClient<S>,
    batches: usize,
    per_batch: usize,
) -> Result<f64, Error>
where
    S: tonic::client::GrpcService<tonic::body::Body> + Send + 'static,
    S::Future: Send,
    S::Error: Into<tonic::codegen::StdError>,
    S::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let prefix = format!("stream-{}", Instant::now().elapsed().as_nanos());
    let mut stream = subscriber
        .subscribe(Filter {
            prefix: prefix.clone(),
        })
        .await?
        .into_inner();
    let wanted = batches * per_batch;
    let started = Instant::now();
    let write = async move {
        for _ in 0..batches {
            let points = (0..per_batch)
                .map(|_| Point {
                    series: prefix.clone(),
                    value: 1.0,
                    sequence: 0,
                })
                .collect();
            writer.on_write(WriteBatch { points }).await?;
        }
        Ok::<_, Error>(())
    };
    let read = async {
        let mut got = 0;
        while got < wanted {
            match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                Ok(Ok(Some(_))) => got += 1,
                Ok(Ok(None)) => return Err::<_, Error>("the stream ended early".into()),
                Ok(Err(status)) => return Err(status.into()),
                Err(_) => return Err(format!("only {got} of {wanted} points within 30 s").into()),
            }
        }
        Ok(())
    };
    let (written, read) = tokio::join!(write, read);
    written?;
    read?;
    Ok(wanted as f64 / started.elapsed().as_secs_f64())
}
