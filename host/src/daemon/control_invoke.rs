//! The control socket's `Invoke`, served by hand (`baton_transport::UnaryRoute`) beside
//! the generated `Supervisor` service: the daemon's first hop costs what the host's call
//! to its plugin costs. The request's message is a slice of the DATA frame it came in,
//! its payload passed on to the plugin without a copy, and the answer framed around the
//! plugin's payload without one; sizes are judged from the request's start before the
//! rest is read (`invoke_size`).

use std::sync::Arc;

use baton_proto::host::{InvokeRequest, InvokeResponse};
use baton_transport::{EarlyJudge, UnaryHandler, UnaryRoute};
use tonic::Status;

use crate::calls::plugin_set::PluginSet;
use crate::daemon::invoke_size;

/// The method's path on the control socket.
const INVOKE_PATH: &str = "/baton.host.v1.Supervisor/Invoke";

/// `Supervisor.Invoke` for `plugins`, taking requests and answers of at most
/// `server_limit` bytes (each plugin's own limit is judged from the request's start).
pub(crate) fn route(plugins: PluginSet, server_limit: usize) -> UnaryRoute {
    let judge: Arc<EarlyJudge> = Arc::new({
        let plugins = plugins.clone();
        move |len, start| invoke_size::judge(&plugins, server_limit, len, start)
    });
    let handler: Arc<UnaryHandler> = Arc::new(move |_headers, message| {
        let plugins = plugins.clone();
        Box::pin(async move {
            use prost::Message;
            let request = InvokeRequest::decode(message).map_err(|e| {
                Status::internal(format!("an Invoke request that does not decode: {e}"))
            })?;
            let reply = plugins
                .find(&request.plugin)?
                .call(&request.method, request.payload, request.metadata)
                .await?;
            answer(reply.generation, reply.payload)
        })
    });
    UnaryRoute::new(INVOKE_PATH, None, server_limit, handler)
        .judged_early(invoke_size::PEEK_BYTES, judge)
}

/// `InvokeResponse { payload, generation }`, framed with the payload last, so that a large
/// one goes out as it came from the plugin.
fn answer(generation: u64, payload: bytes::Bytes) -> Result<baton_transport::Framed, Status> {
    let rest = InvokeResponse {
        payload: bytes::Bytes::new(),
        generation,
    };
    baton_transport::grpc_frame_bytes_last(&rest, 1, payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn the_answer_by_hand_decodes_as_the_generated_one() {
        for size in [0usize, 1, 127, 128, 8_191, 8_192, 70_000] {
            for generation in [0u64, 1, 300, u64::MAX] {
                let payload = bytes::Bytes::from(vec![7u8; size]);
                let framed = answer(generation, payload.clone()).expect("framed");
                let mut frame = framed.head.to_vec();
                frame.extend_from_slice(&framed.tail);
                assert_eq!(frame[0], 0, "uncompressed");
                let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
                assert_eq!(
                    len,
                    frame.len() - 5,
                    "{size} bytes, generation {generation}"
                );
                let decoded = InvokeResponse::decode(&frame[5..]).expect("decodes");
                assert_eq!(
                    decoded,
                    InvokeResponse {
                        payload,
                        generation
                    }
                );
                // Same size as the generated encoding: nothing extra, nothing left out.
                assert_eq!(len, decoded.encoded_len());
                // A large payload goes on untouched, as its own piece.
                assert_eq!(framed.tail.is_empty(), size < 8_192);
            }
        }
    }
}
