//! For the crate's tests: a server on a real Unix socket in a directory of its own, and a
//! client of it.

use std::convert::Infallible;

use bytes::Bytes;
use tonic::body::Body;
use tonic::codegen::http;
use tower::Service;

use crate::{QuietUnix, ServerConfig, UnixClient};

/// Serves `service` (and `config`'s hand-served methods) until the test's runtime ends;
/// the directory holding the socket, and a client of it.
pub(crate) fn serve_on_a_socket<S, B>(
    config: ServerConfig,
    service: S,
) -> (tempfile::TempDir, UnixClient)
where
    S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("s.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let incoming = Box::pin(futures_util::stream::unfold(listener, |listener| async {
        let accepted = listener.accept().await.and_then(|(s, _)| QuietUnix::new(s));
        Some((accepted, listener))
    }));
    tokio::spawn(crate::serve(
        config,
        incoming,
        service,
        std::future::pending(),
    ));
    (dir, UnixClient::new(&path))
}
