//! `bench-relay LISTEN_SOCKET PLUGIN_SOCKET` (launch token in `BENCH_RELAY_TOKEN`): the
//! floor for the daemon path. A bare tonic server offering `Supervisor/Invoke` that
//! forwards each call to one plugin through a bare tonic client, and nothing else: no
//! routing, no limits, no metrics, no handover. A call to any other service carrying
//! `x-baton-plugin` goes to the plugin as raw frames, with the token added: the floor
//! for the daemon's forwarding of application services. Whatever the daemon costs
//! beyond this is what baton adds; what this costs beyond a direct call is the price of
//! a second gRPC hop and a third process.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};

use baton_proto::host::supervisor_server::{Supervisor, SupervisorServer};
use baton_proto::host::{self as pb};
use baton_proto::plugin::plugin_client::PluginClient;
use hyper_util::rt::TokioIo;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

struct Relay {
    plugin: PluginClient<Channel>,
    token: AsciiMetadataValue,
}

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

fn not_offered() -> Status {
    Status::unimplemented("bench-relay only relays Invoke")
}

#[tonic::async_trait]
impl Supervisor for Relay {
    async fn list(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        Err(not_offered())
    }

    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        let call = request.into_inner();
        let mut forwarded = Request::new(baton_proto::plugin::InvokeRequest {
            method: call.method,
            payload: call.payload,
            metadata: call.metadata,
        });
        forwarded
            .metadata_mut()
            .insert(baton_proto::TOKEN_METADATA_KEY, self.token.clone());
        let reply = self.plugin.clone().invoke(forwarded).await?.into_inner();
        Ok(Response::new(pb::InvokeResponse {
            payload: reply.payload,
            generation: 1,
        }))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::PluginStatus>, Status> {
        Err(not_offered())
    }

    type LogsStream = Stream<pb::LogLine>;

    async fn logs(
        &self,
        _: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        Err(not_offered())
    }

    async fn reload(
        &self,
        _: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        Err(not_offered())
    }

    async fn stop(
        &self,
        _: Request<pb::LifecycleRequest>,
    ) -> Result<Response<pb::LifecycleResponse>, Status> {
        Err(not_offered())
    }

    async fn start(
        &self,
        _: Request<pb::LifecycleRequest>,
    ) -> Result<Response<pb::LifecycleResponse>, Status> {
        Err(not_offered())
    }

    async fn restart(
        &self,
        _: Request<pb::LifecycleRequest>,
    ) -> Result<Response<pb::LifecycleResponse>, Status> {
        Err(not_offered())
    }

    async fn reload_config(
        &self,
        _: Request<pb::ReloadConfigRequest>,
    ) -> Result<Response<pb::ReloadConfigResponse>, Status> {
        Err(not_offered())
    }

    type EventsStream = Stream<pb::Event>;

    async fn events(
        &self,
        _: Request<pb::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        Err(not_offered())
    }
}

async fn serve(listen: PathBuf, plugin: PathBuf, token: AsciiMetadataValue) -> Result<(), String> {
    // The same HTTP/2 settings as the daemon on both hops: its plugin channel's large
    // frames and windows, its control server's defaults.
    let channel = Endpoint::from_static("http://plugin")
        .max_frame_size(1 << 20)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20)
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let plugin = plugin.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(plugin).await?,
                ))
            }
        }))
        .await
        .map_err(|e| format!("cannot connect to the plugin: {e}"))?;
    let raw = RawLayer {
        plugin: channel.clone(),
        token: token.clone(),
    };
    let relay = Relay {
        plugin: PluginClient::new(channel),
        token,
    };
    let listener = tokio::net::UnixListener::bind(&listen)
        .map_err(|e| format!("cannot listen on {}: {e}", listen.display()))?;
    Server::builder()
        .layer(raw)
        .add_service(SupervisorServer::new(relay))
        .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
        .await
        .map_err(|e| format!("the relay's server failed: {e}"))
}

/// Takes calls carrying `x-baton-plugin` out in front of the router, as the daemon does,
/// and sends them to the plugin as they are.
#[derive(Clone)]
struct RawLayer {
    plugin: Channel,
    token: AsciiMetadataValue,
}

impl<S> tower::Layer<S> for RawLayer {
    type Service = Raw<S>;

    fn layer(&self, inner: S) -> Raw<S> {
        Raw {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
struct Raw<S> {
    inner: S,
    layer: RawLayer,
}

type Answer<E> = Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Raw<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Answer<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Answer<S::Error> {
        if !request.headers().contains_key("x-baton-plugin") {
            return Box::pin(self.inner.call(request));
        }
        request.headers_mut().insert(
            baton_proto::TOKEN_METADATA_KEY,
            http::HeaderValue::from_bytes(self.layer.token.as_encoded_bytes())
                .unwrap_or_else(|_| http::HeaderValue::from_static("")),
        );
        let mut plugin = self.layer.plugin.clone();
        Box::pin(async move {
            use tower::ServiceExt;
            let answer = match plugin.ready().await {
                Ok(plugin) => plugin.call(request).await,
                Err(e) => Err(e),
            };
            Ok(answer.unwrap_or_else(|e| Status::unavailable(e.to_string()).into_http()))
        })
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(listen), Some(plugin)) = (args.next(), args.next()) else {
        eprintln!("usage: BENCH_RELAY_TOKEN=... bench-relay LISTEN_SOCKET PLUGIN_SOCKET");
        return ExitCode::from(2);
    };
    let token = match std::env::var("BENCH_RELAY_TOKEN")
        .ok()
        .and_then(|t| AsciiMetadataValue::try_from(t).ok())
    {
        Some(t) => t,
        None => {
            eprintln!("bench-relay: BENCH_RELAY_TOKEN is missing or not ASCII");
            return ExitCode::from(2);
        }
    };
    // The daemon's default: half the CPUs' workers (see `worker_threads` in baton's config).
    let workers = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-relay: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(listen.into(), plugin.into(), token)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-relay: {e}");
            ExitCode::FAILURE
        }
    }
}
