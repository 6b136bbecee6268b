//! Embedding baton in a program of your own (here a stand-in for a database): start
//! plugins from code, call them through typed handles, and offer them a service of
//! your own on the host-services socket, where each call says which plugin made it.
//!
//!     cargo build --workspace --examples && ./target/debug/examples/embed
//!
//! Two plugins run: the `counter` example (found next to this example's target
//! directory, as target/<profile>/counter), and this very program started again in
//! plugin mode as `writer`, a plugin that writes into the embedder's database.
//!
//! The database service reuses the `baton.plugin.v1.Plugin` messages (`Invoke` with a
//! method and a payload) only so that this example needs no proto of its own. A real
//! embedder writes its own `.proto` (say `service Db { rpc Query(...) ... }`), compiles
//! it with tonic-prost-build in its build.rs, and passes `DbServer::new(db)` to
//! `HostBuilder::with_service` just as below; its plugins call it with
//! `DbClient::new(HostClient::from_env().await?.channel())`.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use baton_host::{Config, HostBuilder, PluginConfig, PluginIdentity, ReloadMode};
use baton_proto::plugin::plugin_client::PluginClient;
use baton_proto::plugin::plugin_server::{Plugin as PluginApi, PluginServer};
use baton_proto::plugin::{
    DescribeRequest, DescribeResponse, InvokeRequest, InvokeResponse, RestoreResponse,
    ShutdownRequest, ShutdownResponse, SnapshotRequest, StateChunk,
};
use tonic::{Request, Response, Status, Streaming};

fn main() -> ExitCode {
    // Started by the host below as a plugin generation's init (its PID namespace).
    baton_host::pid_init::run_if_requested();
    // Started by the host below as the `writer` plugin.
    if std::env::var_os(baton_proto::env::SOCKET).is_some() {
        return baton_plugin_sdk::serve(Writer::default());
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(embed()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn embed() -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    // Examples live in target/<profile>/examples; the plugins one level up.
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .ok_or("cannot find the target directory")?;
    let mut config = Config::empty();
    config
        .plugins
        .insert("counter".into(), PluginConfig::new(bin.join("counter")));
    let mut writer = PluginConfig::new(&exe);
    writer.reload = Some(ReloadMode::Off);
    writer.copy_binary = false;
    config.plugins.insert("writer".into(), writer);

    let db = std::sync::Arc::new(Db::default());
    let host = HostBuilder::new(&config)
        .with_pid_namespaces(baton_host::this_executable())
        .with_service(PluginServer::from_arc(db.clone()))
        .start()
        .await?;

    let counter = host.plugin("counter").ok_or("no counter")?;
    counter.invoke("incr", "visits").await?;
    let visits = counter.invoke("incr", "visits").await?;
    println!("counter: visits = {}", String::from_utf8_lossy(&visits));

    let writer = host.plugin("writer").ok_or("no writer")?;
    let reply = writer.invoke("write", "hello from a plugin").await?;
    println!("writer: {}", String::from_utf8_lossy(&reply));
    for row in db.rows() {
        println!("database row: {row}");
    }

    // Only the host's plugins get in: a call without a launch token is refused.
    let mut stranger = PluginClient::new(baton_host::unix_channel(host.services_socket()));
    let refused = stranger
        .invoke(InvokeRequest {
            method: "insert".into(),
            payload: "sneaky".into(),
            metadata: Default::default(),
        })
        .await;
    match refused {
        Err(status) => println!("a call without a token: {:?}", status.code()),
        Ok(_) => return Err("a call without a token was let in".into()),
    }

    host.shutdown().await;
    Ok(())
}

/// The embedder's own service: a tiny table that plugins append to. Every row records
/// which plugin wrote it, from the identity the host's auth layer attached to the call.
#[derive(Default)]
struct Db {
    rows: Mutex<Vec<String>>,
}

impl Db {
    fn rows(&self) -> Vec<String> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn not_offered() -> Status {
    Status::unimplemented("the database offers plugins Invoke only")
}

#[tonic::async_trait]
impl PluginApi for Db {
    async fn invoke(
        &self,
        request: Request<InvokeRequest>,
    ) -> Result<Response<InvokeResponse>, Status> {
        let caller = PluginIdentity::of(&request)?.clone();
        let req = request.into_inner();
        if req.method != "insert" {
            return Err(Status::unimplemented(format!(
                "the database has no method {:?} (it has insert)",
                req.method
            )));
        }
        let text = String::from_utf8_lossy(&req.payload);
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        rows.push(format!(
            "{text:?} by plugin {} (generation {})",
            caller.name, caller.generation
        ));
        Ok(Response::new(InvokeResponse {
            payload: format!("row {} inserted", rows.len()).into(),
        }))
    }

    async fn describe(
        &self,
        _: Request<DescribeRequest>,
    ) -> Result<Response<DescribeResponse>, Status> {
        Err(not_offered())
    }

    type SnapshotStream = tokio_stream::Empty<Result<StateChunk, Status>>;

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(not_offered())
    }

    async fn restore(
        &self,
        _: Request<Streaming<StateChunk>>,
    ) -> Result<Response<RestoreResponse>, Status> {
        Err(not_offered())
    }

    async fn shutdown(
        &self,
        _: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        Err(not_offered())
    }
}

/// The `writer` plugin: its `write` method inserts the payload into the embedder's
/// database, over the host-services socket.
#[derive(Default)]
struct Writer {
    host: tokio::sync::OnceCell<baton_plugin_sdk::HostClient>,
}

#[baton_plugin_sdk::async_trait]
impl baton_plugin_sdk::Plugin for Writer {
    fn describe(&self) -> baton_plugin_sdk::Description {
        baton_plugin_sdk::Description::new("writer", env!("CARGO_PKG_VERSION"))
            .method("write", "inserts the payload into the embedder's database")
    }

    async fn invoke(
        &self,
        method: &str,
        payload: baton_plugin_sdk::Bytes,
    ) -> Result<baton_plugin_sdk::Bytes, Status> {
        if method != "write" {
            return Err(Status::unimplemented(format!(
                "writer has no method {method:?} (it has write)"
            )));
        }
        let host = self
            .host
            .get_or_try_init(baton_plugin_sdk::HostClient::from_env)
            .await?;
        let mut db = PluginClient::new(host.channel());
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            db.invoke(InvokeRequest {
                method: "insert".into(),
                payload,
                metadata: Default::default(),
            }),
        )
        .await
        .map_err(|_| Status::deadline_exceeded("the database did not answer within 5 s"))??;
        Ok(reply.into_inner().payload)
    }
}
