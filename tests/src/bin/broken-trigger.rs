//! The trigger example plugin as builds that broke the application API:
//! `broken-trigger without-service` no longer serves `mydb.trigger.v1.Trigger`;
//! `broken-trigger changed-api` serves it but describes (over reflection) a changed
//! type, `TriggerResult.total` as a string. `broken-trigger lingering` serves the API
//! but, stopped by SIGTERM, closes its socket and lives on a moment before exiting:
//! calls made meanwhile are refused at connect, never reaching it. `broken-trigger
//! bloated` answers subscriptions with each point's series written 64 times over:
//! answers far larger than the requests that caused them. `broken-trigger slow`
//! takes a point of series "slow" to mean: wait its value in seconds before answering.

use std::pin::Pin;

use baton_plugin_sdk::Server;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use trigger_plugin::TriggerPlugin;
use trigger_plugin::api::trigger_server::{Trigger, TriggerServer};
use trigger_plugin::api::{Filter, Point, TriggerResult, WriteBatch};

fn main() -> std::process::ExitCode {
    let plugin = TriggerPlugin::default();
    let server = Server::new(plugin.clone());
    match std::env::args().nth(1).as_deref() {
        Some("without-service") => server.serve(),
        Some("changed-api") => server
            .add_service(TriggerServer::new(plugin))
            .with_reflection(baton_tests::trigger::CHANGED_FILE_DESCRIPTOR_SET)
            .serve(),
        Some("bloated") => server
            .add_service(TriggerServer::new(Odd(plugin, Oddity::Bloated)))
            .serve(),
        Some("slow") => server
            .add_service(TriggerServer::new(Odd(plugin, Oddity::Slow)))
            .serve(),
        Some("lingering") => {
            let code = server.add_service(TriggerServer::new(plugin)).serve();
            eprintln!("lingering: the socket is gone, the process is not");
            std::thread::sleep(std::time::Duration::from_millis(250));
            code
        }
        other => {
            eprintln!(
                "usage: broken-trigger without-service|changed-api|lingering|bloated|slow (got {other:?})"
            );
            std::process::ExitCode::from(2)
        }
    }
}

/// The trigger plugin, with one odd behaviour.
struct Odd(TriggerPlugin, Oddity);

#[derive(PartialEq)]
enum Oddity {
    /// Every point a subscriber gets has its series written 64 times.
    Bloated,
    /// A write of series "slow" waits its value in seconds before it is answered.
    Slow,
}

type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Trigger for Odd {
    async fn on_write(&self, r: Request<WriteBatch>) -> Result<Response<TriggerResult>, Status> {
        if self.1 == Oddity::Slow
            && let Some(slow) = r.get_ref().points.iter().find(|p| p.series == "slow")
        {
            eprintln!("slow write: answering in {} s", slow.value);
            tokio::time::sleep(std::time::Duration::from_secs_f64(slow.value)).await;
        }
        self.0.on_write(r).await
    }

    async fn write_stream(
        &self,
        r: Request<Streaming<WriteBatch>>,
    ) -> Result<Response<TriggerResult>, Status> {
        self.0.write_stream(r).await
    }

    type WriteEachStream = Answers<TriggerResult>;

    async fn write_each(
        &self,
        r: Request<Streaming<WriteBatch>>,
    ) -> Result<Response<Self::WriteEachStream>, Status> {
        self.0.write_each(r).await
    }

    type SubscribeStream = Answers<Point>;

    async fn subscribe(&self, r: Request<Filter>) -> Result<Response<Answers<Point>>, Status> {
        let points = self.0.subscribe(r).await?.into_inner();
        if self.1 != Oddity::Bloated {
            return Ok(Response::new(points));
        }
        Ok(Response::new(Box::pin(points.map(|point| {
            point.map(|p| Point {
                series: p.series.repeat(64),
                ..p
            })
        }))))
    }
}
