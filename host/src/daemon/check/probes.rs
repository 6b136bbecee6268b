//! The calls the checks make to a running instance, and how their answers are judged.

use std::time::Duration;

use baton_proto::TOKEN_METADATA_KEY;
use baton_proto::plugin::{InvokeRequest, SnapshotRequest, StateChunk};
use baton_proto::state::ChunkCheck;
use tonic::Code;

use super::instance::Instance;

pub(super) async fn snapshot(
    instance: &Instance,
    timeout: Duration,
) -> Result<Vec<StateChunk>, String> {
    snapshot_since(instance, bytes::Bytes::new(), timeout).await
}

/// A snapshot since `since` (the whole state when it is empty), its chunks checked.
pub(super) async fn snapshot_since(
    instance: &Instance,
    since: bytes::Bytes,
    timeout: Duration,
) -> Result<Vec<StateChunk>, String> {
    let mut rpc = instance.rpc();
    let mut stream = tokio::time::timeout(timeout, rpc.snapshot(SnapshotRequest { since }))
        .await
        .map_err(|_| format!("Snapshot did not answer within {timeout:?}"))?
        .map_err(|s| format!("Snapshot failed ({:?}): {}", s.code(), s.message()))?
        .into_inner();
    let mut chunks = Vec::new();
    let mut check = ChunkCheck::new(u64::MAX);
    loop {
        match tokio::time::timeout(timeout, stream.message()).await {
            Ok(Ok(Some(chunk))) => {
                check
                    .push(&chunk)
                    .map_err(|e| format!("Snapshot sent a bad chunk: {e}"))?;
                chunks.push(chunk);
            }
            Ok(Ok(None)) => break,
            Ok(Err(s)) => {
                return Err(format!(
                    "the Snapshot stream failed ({:?}): {}",
                    s.code(),
                    s.message()
                ));
            }
            Err(_) => return Err(format!("the Snapshot stream stalled for {timeout:?}")),
        }
    }
    check
        .finish()
        .map_err(|e| format!("Snapshot ended badly: {e}"))?;
    Ok(chunks)
}

/// Restores `chunks` into `instance`.
pub(super) async fn restore(
    instance: &Instance,
    chunks: Vec<StateChunk>,
    timeout: Duration,
) -> Result<u64, tonic::Status> {
    let mut rpc = instance.rpc();
    match tokio::time::timeout(timeout, rpc.restore(tokio_stream::iter(chunks))).await {
        Ok(answer) => answer.map(|r| r.into_inner().bytes_restored),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "Restore did not answer within {timeout:?}"
        ))),
    }
}

pub(super) fn joined(chunks: &[StateChunk]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.data.iter().copied()).collect()
}

pub(super) async fn call(
    instance: &Instance,
    method: &str,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, tonic::Status> {
    let mut rpc = instance.rpc();
    let request = InvokeRequest {
        method: method.to_owned(),
        payload: payload.into(),
        metadata: Default::default(),
    };
    match tokio::time::timeout(timeout, rpc.invoke(request)).await {
        Ok(reply) => reply.map(|r| r.into_inner().payload.to_vec()),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {timeout:?}"
        ))),
    }
}

/// For each application service `Describe` lists: a call without the token must be
/// refused (UNAUTHENTICATED), and with it the service must be there (a method it does not
/// have is then UNIMPLEMENTED, which needs no knowledge of its messages).
pub(super) async fn check_services(
    instance: &Instance,
    services: &[String],
    timeout: Duration,
) -> Result<(), String> {
    for service in services {
        let probe = |token: Option<String>| {
            let channel = instance.channel.clone();
            let path = format!("/{service}/BatonCheckNoSuchMethod");
            async move {
                let path = tonic::codegen::http::uri::PathAndQuery::try_from(path)
                    .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                let mut grpc = tonic::client::Grpc::new(channel);
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                let mut request = tonic::Request::new(());
                if let Some(token) = token.and_then(|t| t.parse().ok()) {
                    request.metadata_mut().insert(TOKEN_METADATA_KEY, token);
                }
                grpc.unary::<(), (), _>(request, path, tonic_prost::ProstCodec::default())
                    .await
                    .map(|_| ())
            }
        };
        let answer = |r: Result<Result<(), tonic::Status>, _>| match r {
            Ok(Ok(())) => Err("an OK answer to a method it cannot have".to_owned()),
            Ok(Err(s)) => Ok(s),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        let without = answer(tokio::time::timeout(timeout, probe(None)).await)
            .map_err(|e| format!("{service} without the token: {e}"))?;
        if without.code() != Code::Unauthenticated {
            return Err(format!(
                "{service} answered a call without x-baton-token with {:?} ({}), expected UNAUTHENTICATED",
                without.code(),
                without.message()
            ));
        }
        let with = answer(tokio::time::timeout(timeout, probe(Some(instance.token.clone()))).await)
            .map_err(|e| format!("{service} with the token: {e}"))?;
        if with.code() != Code::Unimplemented {
            return Err(format!(
                "{service} is listed in Describe but does not seem to be served: a call to a method it \
                 does not have got {:?} ({}), expected UNIMPLEMENTED",
                with.code(),
                with.message()
            ));
        }
    }
    Ok(())
}

pub(super) fn is_unauthenticated(result: Result<(), tonic::Status>) -> Result<(), String> {
    match result {
        Err(s) if s.code() == Code::Unauthenticated => Ok(()),
        Err(s) => Err(format!(
            "expected UNAUTHENTICATED, but the plugin ran it (answered {:?}: {})",
            s.code(),
            s.message()
        )),
        Ok(()) => Err("expected UNAUTHENTICATED, but the plugin ran it (and succeeded)".into()),
    }
}
