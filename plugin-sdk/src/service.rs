//! The `baton.plugin.v1.Plugin` gRPC service a plugin serves: Describe and Invoke passed
//! to the plugin, Snapshot and Restore chunked and checked (with incremental snapshots'
//! cursors), Shutdown.

use std::sync::Arc;

use baton_proto::PROTOCOL_VERSION;
use baton_proto::plugin::{
    self as pb, DescribeRequest, DescribeResponse, InvokeRequest, InvokeResponse, MethodInfo,
    RestoreResponse, ShutdownRequest, ShutdownResponse, SnapshotRequest, StateChunk,
};
use bytes::Bytes;
use tokio::sync::Notify;
use tonic::{Request, Response, Status, Streaming};

use crate::state::{Marks, Reassembly, chunks, cursor_text};
use crate::{Plugin, StateImage};

/// Largest state `Restore` accepts.
const MAX_STATE_BYTES: usize = 16 << 30;

pub(crate) struct PluginService<P> {
    pub(crate) plugin: Arc<P>,
    pub(crate) stop: Arc<Notify>,
    /// The application services served beside it, by gRPC name.
    pub(crate) services: Arc<Vec<String>>,
    /// The cursor of the last state restored here, which a delta must follow. Held
    /// through each restore, so restores apply one at a time, in the order they came.
    pub(crate) applied: Arc<tokio::sync::Mutex<Bytes>>,
}

impl<P: Plugin> PluginService<P> {
    /// `Invoke` served by hand on the plugin's socket (see `baton_transport::UnaryRoute`):
    /// what the generated service's `invoke` below does, without tonic's codec and body
    /// wrappers around it. The launch token is checked before this runs.
    pub(crate) fn invoke_by_hand(&self) -> Arc<baton_transport::UnaryHandler> {
        let plugin = self.plugin.clone();
        Arc::new(move |_headers, message| {
            let plugin = plugin.clone();
            Box::pin(async move {
                use prost::Message;
                let request = InvokeRequest::decode(message).map_err(|e| {
                    Status::internal(format!("an Invoke request that does not decode: {e}"))
                })?;
                let payload = plugin.invoke(&request.method, request.payload).await?;
                invoke_answer(payload)
            })
        })
    }
}

/// `InvokeResponse { payload }`, framed: the payload copied in behind the prefix when
/// small, passed on as a piece of its own when large.
fn invoke_answer(payload: Bytes) -> Result<baton_transport::Framed, Status> {
    baton_transport::grpc_frame_bytes_last(&InvokeResponse::default(), 1, payload)
}

#[tonic::async_trait]
impl<P: Plugin> pb::plugin_server::Plugin for PluginService<P> {
    async fn describe(
        &self,
        _: Request<DescribeRequest>,
    ) -> Result<Response<DescribeResponse>, Status> {
        let d = self.plugin.describe();
        Ok(Response::new(DescribeResponse {
            name: d.name,
            plugin_version: d.version,
            protocol_version: PROTOCOL_VERSION,
            state_schema_version: d.state_schema_version,
            methods: d
                .methods
                .into_iter()
                .map(|(name, description)| MethodInfo { name, description })
                .collect(),
            services: self.services.to_vec(),
            incremental_snapshots: d.incremental_snapshots,
        }))
    }

    async fn invoke(
        &self,
        request: Request<InvokeRequest>,
    ) -> Result<Response<InvokeResponse>, Status> {
        let req = request.into_inner();
        let payload = self.plugin.invoke(&req.method, req.payload).await?;
        Ok(Response::new(InvokeResponse { payload }))
    }

    type SnapshotStream = tokio_stream::Iter<
        std::iter::Map<crate::state::Chunks, fn(StateChunk) -> Result<StateChunk, Status>>,
    >;

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let description = self.plugin.describe();
        let schema = description.state_schema_version;
        let since = request.into_inner().since;
        let image = if description.incremental_snapshots {
            self.plugin
                .snapshot_since((!since.is_empty()).then_some(since))
                .await?
        } else {
            StateImage::full(self.plugin.snapshot().await?)
        };
        if image.cursor.len() > crate::state::MAX_CURSOR_BYTES {
            return Err(Status::internal(format!(
                "the plugin's cursor is {} bytes; the contract allows {}",
                image.cursor.len(),
                crate::state::MAX_CURSOR_BYTES
            )));
        }
        let len = image.data.len();
        let delta = image.delta;
        let chunks = chunks(schema, image.data).marked(Marks {
            delta: image.delta,
            base_cursor: image.base_cursor,
            cursor: image.cursor,
        });
        tracing::debug!(bytes = len, chunks = chunks.len(), delta, "snapshot taken");
        let chunks = chunks.map(Ok as fn(StateChunk) -> Result<StateChunk, Status>);
        Ok(Response::new(tokio_stream::iter(chunks)))
    }

    async fn restore(
        &self,
        request: Request<Streaming<StateChunk>>,
    ) -> Result<Response<RestoreResponse>, Status> {
        let mut stream = request.into_inner();
        let mut applied = self.applied.lock().await;
        let mut reassembly = Reassembly::new(MAX_STATE_BYTES);
        while let Some(chunk) = stream.message().await? {
            reassembly
                .push(chunk)
                .map_err(|e| Status::data_loss(e.to_string()))?;
        }
        let (schema, state, marks) = reassembly
            .finish_marked()
            .map_err(|e| Status::data_loss(e.to_string()))?;
        let len = state.len() as u64;
        if marks.delta {
            if applied.is_empty() || marks.base_cursor != *applied {
                return Err(Status::data_loss(format!(
                    "a delta that follows cursor {} does not follow the state restored here (cursor {}): a delta out of order, or one lost before it",
                    cursor_text(&marks.base_cursor),
                    cursor_text(&applied)
                )));
            }
            self.plugin.restore_delta(schema, state).await?;
            tracing::debug!(bytes = len, schema, "delta applied");
        } else {
            self.plugin.restore(schema, state).await?;
            tracing::info!(bytes = len, schema, "state restored");
        }
        *applied = marks.cursor;
        Ok(Response::new(RestoreResponse {
            bytes_restored: len,
        }))
    }

    async fn shutdown(
        &self,
        _: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        self.stop.notify_one();
        Ok(Response::new(ShutdownResponse {}))
    }
}

#[cfg(test)]
mod invoke_answer_tests {
    use super::*;
    use prost::Message;

    #[test]
    fn the_answer_by_hand_is_the_generated_encoding() {
        for size in [0usize, 1, 127, 128, 8_191, 8_192, 16_383, 16_384, 70_000] {
            let payload = Bytes::from(vec![7u8; size]);
            let framed = invoke_answer(payload.clone()).expect("framed");
            let mut by_hand = framed.head.to_vec();
            by_hand.extend_from_slice(&framed.tail);
            let message = InvokeResponse { payload }.encode_to_vec();
            let mut generated = vec![0u8];
            generated.extend_from_slice(&(message.len() as u32).to_be_bytes());
            generated.extend_from_slice(&message);
            assert_eq!(by_hand, generated, "{size} bytes");
        }
    }
}
