//! An application API as a database that embeds baton might define it
//! (`proto/mydb/trigger/v1/trigger.proto`: `mydb.trigger.v1.Trigger`), and a plugin that
//! serves it beside `baton.plugin.v1.Plugin`: `OnWrite` numbers the points it is given
//! and counts them (the state, moved across reloads; 8 bytes little-endian, as the
//! Python version in `example-plugins/python-trigger` keeps it too), `Subscribe` streams
//! every point written from then on, `WriteStream` takes batches as a stream.

use std::pin::Pin;
use std::sync::Mutex;

use baton_plugin_sdk::{Bytes, Description, Plugin, Status, async_trait};
use tokio::sync::broadcast;

/// The application API, generated; what a host or a client of it compiles too.
pub mod api {
    tonic::include_proto!("mydb.trigger.v1");

    /// The API's encoded file descriptor set, for the reflection service (and for a
    /// host's `api_descriptors`).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/trigger_descriptor.bin"));
}

use api::trigger_server::Trigger;
use api::{Filter, Point, TriggerResult, WriteBatch};
use tokio_stream::Stream;
use tonic::{Request, Response};

/// Points seen so far, across generations; and the feed of new points.
struct Seen {
    total: Mutex<u64>,
    feed: broadcast::Sender<Point>,
}

impl Seen {
    fn new() -> Self {
        Self {
            total: Mutex::new(0),
            // Room for a fast writer's bursts before a subscriber counts as lagging.
            feed: broadcast::channel(1 << 16).0,
        }
    }

    fn total(&self) -> std::sync::MutexGuard<'_, u64> {
        self.total.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The plugin: one value serves `Plugin` and `Trigger`; clones share the state.
#[derive(Clone)]
pub struct TriggerPlugin(std::sync::Arc<Seen>);

impl Default for TriggerPlugin {
    fn default() -> Self {
        Self(std::sync::Arc::new(Seen::new()))
    }
}

#[async_trait]
impl Plugin for TriggerPlugin {
    fn describe(&self) -> Description {
        Description::new("trigger", "test")
            .state_schema(1)
            .method("total", "points seen so far")
    }

    async fn invoke(&self, method: &str, _payload: Bytes) -> Result<Bytes, Status> {
        match method {
            "total" => Ok(Bytes::from(self.0.total().to_string())),
            other => Err(Status::unimplemented(format!("no method {other:?}"))),
        }
    }

    async fn snapshot(&self) -> Result<Bytes, Status> {
        Ok(Bytes::copy_from_slice(&self.0.total().to_le_bytes()))
    }

    async fn restore(&self, _schema_version: u32, state: Vec<u8>) -> Result<(), Status> {
        let bytes: [u8; 8] = state
            .try_into()
            .map_err(|_| Status::data_loss("the state is not 8 bytes"))?;
        *self.0.total() = u64::from_le_bytes(bytes);
        Ok(())
    }
}

type PointStream = Pin<Box<dyn Stream<Item = Result<Point, Status>> + Send>>;

#[tonic::async_trait]
impl Trigger for TriggerPlugin {
    async fn on_write(
        &self,
        request: Request<WriteBatch>,
    ) -> Result<Response<TriggerResult>, Status> {
        let mut total = self.0.total();
        for mut point in request.into_inner().points {
            *total += 1;
            point.sequence = *total;
            // Under the lock, so subscribers see points in their numbers' order.
            // Nobody subscribed is fine.
            let _ = self.0.feed.send(point);
        }
        Ok(Response::new(TriggerResult { total: *total }))
    }

    async fn write_stream(
        &self,
        request: Request<tonic::Streaming<WriteBatch>>,
    ) -> Result<Response<TriggerResult>, Status> {
        let mut batches = request.into_inner();
        let mut total = *self.0.total();
        while let Some(batch) = batches.message().await? {
            total = self.on_write(Request::new(batch)).await?.into_inner().total;
        }
        Ok(Response::new(TriggerResult { total }))
    }

    type WriteEachStream = Pin<Box<dyn Stream<Item = Result<TriggerResult, Status>> + Send>>;

    async fn write_each(
        &self,
        request: Request<tonic::Streaming<WriteBatch>>,
    ) -> Result<Response<Self::WriteEachStream>, Status> {
        let mut batches = request.into_inner();
        let plugin = self.clone();
        let answers = async_stream_of(move |tx| async move {
            loop {
                let answer = match batches.message().await {
                    Ok(Some(batch)) => plugin
                        .on_write(Request::new(batch))
                        .await
                        .map(Response::into_inner),
                    Ok(None) => return,
                    Err(status) => Err(status),
                };
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(answers))
    }

    type SubscribeStream = PointStream;

    async fn subscribe(
        &self,
        request: Request<Filter>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let prefix = request.into_inner().prefix;
        let mut feed = self.0.feed.subscribe();
        Ok(Response::new(async_stream_of(move |tx| async move {
            loop {
                let point = match feed.recv().await {
                    Ok(point) => point,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!("{n} points were dropped"))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if point.series.starts_with(&prefix) && tx.send(Ok(point)).await.is_err() {
                    return;
                }
            }
        })))
    }
}

/// A stream fed by a task: `body` sends items until it returns or the caller goes away.
fn async_stream_of<T, F, Fut>(body: F) -> Pin<Box<dyn Stream<Item = T> + Send>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
