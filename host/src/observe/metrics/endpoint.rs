//! The HTTP endpoint: `GET /metrics` on `metrics_addr`, in the Prometheus or the
//! OpenMetrics text format, as the scraper asks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, header};
use tokio::net::TcpListener;

use super::Metrics;

/// Connections the HTTP endpoint serves at once; more wait to be accepted.
const MAX_HTTP_CONNECTIONS: usize = 16;

/// The OpenMetrics text format, for scrapers that ask for it.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `listener` until the task is aborted, which also ends the
/// connections it serves.
pub(crate) fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            if connections.len() >= MAX_HTTP_CONNECTIONS {
                connections.join_next().await;
                continue;
            }
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    tracing::warn!("metrics endpoint: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = respond(&metrics, &request);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!("metrics endpoint: connection ended: {e}");
                }
            });
        }
    })
}

/// Binds the metrics endpoint's address; returns the listener and the bound address.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

fn respond<B>(metrics: &Metrics, request: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = header::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: metrics are at /metrics\n".into(),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET\n".into(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let openmetrics = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        reply(
            StatusCode::OK,
            OPENMETRICS_CONTENT_TYPE,
            metrics.openmetrics_text(),
        )
    } else {
        reply(
            StatusCode::OK,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            metrics.text(),
        )
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[tokio::test]
    async fn the_endpoint_serves_metrics_and_nothing_else() -> Result<(), Box<dyn std::error::Error>>
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let metrics = Arc::new(Metrics::new());
        metrics
            .add_plugin("p")
            .record("m", Code::Ok, Duration::ZERO);
        let (listener, addr) = bind("127.0.0.1:0".parse()?).await?;
        let server = serve(listener, metrics);
        let get = |request: String| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let ok =
            get("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into()).await?;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{ok}"
        );
        assert!(
            ok.contains("baton_calls_total{plugin=\"p\",method=\"m\",code=\"Ok\"} 1\n"),
            "{ok}"
        );
        let om = get("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\nConnection: close\r\n\r\n".into()).await?;
        assert!(om.contains(OPENMETRICS_CONTENT_TYPE), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let missing =
            get("GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into()).await?;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = get(
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .into(),
        )
        .await?;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        server.abort();
        Ok(())
    }
}
