//! `baton ctl call PLUGIN pkg.Service/Method JSON`: calls one method of a plugin's
//! application service by name, with a JSON request (or JSON values one after another,
//! for a method that takes a stream), through the daemon's forwarding, and prints the
//! answer (each message of a stream) as a JSON line. The method's types
//! come from the plugin's own gRPC reflection, so the CLI needs no descriptors.

use std::sync::{Arc, Mutex};

use baton_host::daemon::forward::PLUGIN_METADATA_KEY;
use baton_host::daemon::reflect::{DynamicCodec, descriptors};
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tokio_stream::StreamExt;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Sends every call to one plugin.
#[derive(Clone)]
struct ToPlugin(AsciiMetadataValue);

impl tonic::service::Interceptor for ToPlugin {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert(PLUGIN_METADATA_KEY, self.0.clone());
        Ok(request)
    }
}

pub(crate) async fn call(
    channel: Channel,
    plugin: &str,
    target: &str,
    json: Option<String>,
) -> Result<(), String> {
    let (service, method_name) = target
        .trim_start_matches('/')
        .rsplit_once('/')
        .ok_or_else(|| format!("{target:?} is not pkg.Service/Method"))?;
    let header = AsciiMetadataValue::try_from(plugin)
        .map_err(|_| format!("{plugin:?} is not a plugin name"))?;
    let routed = InterceptedService::new(channel, ToPlugin(header));
    let pool = descriptors(routed.clone(), service)
        .await
        .map_err(|e| format!("plugin {plugin}: {e}"))?;
    let described = pool.get_service_by_name(service).ok_or_else(|| {
        let known: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
        format!(
            "plugin {plugin} describes no service {service} (it describes: {})",
            known.join(", ")
        )
    })?;
    let method = described
        .methods()
        .find(|m| m.name() == method_name)
        .ok_or_else(|| {
            let known: Vec<String> = described.methods().map(|m| m.name().to_owned()).collect();
            format!(
                "{service} has no method {method_name:?} (it has: {})",
                known.join(", ")
            )
        })?;
    let requests = Requests::open(json.as_deref(), method.input())?;
    let path =
        tonic::codegen::http::uri::PathAndQuery::try_from(format!("/{service}/{method_name}"))
            .map_err(|e| format!("{target:?}: {e}"))?;
    let mut grpc = tonic::client::Grpc::new(routed);
    grpc.ready()
        .await
        .map_err(|e| format!("the host is not reachable: {e}"))?;
    let codec = DynamicCodec::new(method.output());
    let print = |message: &DynamicMessage| {
        serde_json::to_string(message)
            .map(|line| println!("{line}"))
            .map_err(|e| format!("cannot show the answer as JSON: {e}"))
    };
    let streams = (method.is_client_streaming(), method.is_server_streaming());
    let outcome = match streams {
        (false, server_streaming) => {
            let request = requests.single().await?;
            if server_streaming {
                let stream = grpc
                    .server_streaming(tonic::Request::new(request), path, codec)
                    .await;
                print_stream(stream, print).await
            } else {
                grpc.unary(tonic::Request::new(request), path, codec)
                    .await
                    .map_err(failed)
                    .and_then(|answer| print(answer.get_ref()))
            }
        }
        (true, false) => {
            let (stream, read) = requests.stream();
            let answer = grpc
                .client_streaming(tonic::Request::new(stream), path, codec)
                .await;
            read.check()?;
            answer
                .map_err(failed)
                .and_then(|answer| print(answer.get_ref()))
        }
        (true, true) => {
            let (stream, read) = requests.stream();
            let answers = grpc
                .streaming(tonic::Request::new(stream), path, codec)
                .await;
            let printed = print_stream(answers, print).await;
            read.check()?;
            printed
        }
    };
    outcome?;
    Ok(())
}

fn failed(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Prints each message of an answer stream as it comes.
async fn print_stream(
    answer: Result<tonic::Response<tonic::Streaming<DynamicMessage>>, tonic::Status>,
    print: impl Fn(&DynamicMessage) -> Result<(), String>,
) -> Result<(), String> {
    let mut stream = answer.map_err(failed)?.into_inner();
    while let Some(message) = stream.message().await.map_err(failed)? {
        print(&message)?;
    }
    Ok(())
}

/// The request messages: JSON values one after another (one per line, say), from the
/// command line or, with `-`, from stdin as they are typed, so that a bidirectional
/// call can go back and forth. No value means one empty message.
struct Requests {
    messages: tokio::sync::mpsc::Receiver<Result<DynamicMessage, String>>,
}

/// Whether reading the requests went wrong, known once the call is over.
struct RequestsRead(Arc<Mutex<Option<String>>>);

impl RequestsRead {
    fn check(&self) -> Result<(), String> {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl Requests {
    fn open(json: Option<&str>, input: MessageDescriptor) -> Result<Self, String> {
        // Room for a few values ahead of the call; stdin waits for the call beyond that.
        let (tx, messages) = tokio::sync::mpsc::channel(16);
        let parse = move |n: usize, value: serde_json::Result<serde_json::Value>| {
            value
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    DynamicMessage::deserialize(input.clone(), v).map_err(|e| e.to_string())
                })
                .map_err(|e| format!("request {n} is not a {} in JSON: {e}", input.full_name()))
        };
        match json {
            Some("-") => {
                std::thread::spawn(move || {
                    let stdin = std::io::stdin().lock();
                    let values = serde_json::Deserializer::from_reader(stdin).into_iter();
                    for (n, value) in values.enumerate() {
                        let message = parse(n + 1, value);
                        let failed = message.is_err();
                        if tx.blocking_send(message).is_err() || failed {
                            return;
                        }
                    }
                });
            }
            text => {
                let values = serde_json::Deserializer::from_str(text.unwrap_or("{}")).into_iter();
                let messages: Result<Vec<_>, String> = values
                    .enumerate()
                    .map(|(n, value)| parse(n + 1, value))
                    .collect();
                for message in messages? {
                    // The capacity bounds how many a command line may hold.
                    tx.try_send(Ok(message)).map_err(|_| {
                        "more than 16 requests on the command line; use -".to_owned()
                    })?;
                }
            }
        }
        Ok(Self { messages })
    }

    /// The one request of a method that takes one: exactly one value, or none for `{}`.
    async fn single(mut self) -> Result<DynamicMessage, String> {
        let first = self.messages.recv().await;
        if self.messages.recv().await.is_some() {
            return Err("this method takes one request, and more than one was given".into());
        }
        match first {
            Some(message) => message,
            None => Err("no request was given (an empty one is {})".into()),
        }
    }

    /// The requests as a stream that ends at the last one, or at the first that is not
    /// JSON of the right type (its error is then kept for [`RequestsRead::check`]).
    fn stream(
        self,
    ) -> (
        impl tokio_stream::Stream<Item = DynamicMessage> + Send + 'static,
        RequestsRead,
    ) {
        let error = Arc::new(Mutex::new(None));
        let seen = error.clone();
        let stream =
            tokio_stream::wrappers::ReceiverStream::new(self.messages).map_while(move |message| {
                match message {
                    Ok(message) => Some(message),
                    Err(e) => {
                        *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        None
                    }
                }
            });
        (stream, RequestsRead(error))
    }
}
