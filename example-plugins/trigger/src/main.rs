//! The trigger example plugin: `mydb.trigger.v1.Trigger` beside baton's own service, with
//! gRPC reflection, so a host can check its API and `baton ctl call` can call it by name.

use baton_plugin_sdk::Server;
use trigger_plugin::TriggerPlugin;
use trigger_plugin::api::{FILE_DESCRIPTOR_SET, trigger_server::TriggerServer};

fn main() -> std::process::ExitCode {
    let plugin = TriggerPlugin::default();
    Server::new(plugin.clone())
        .add_service(TriggerServer::new(plugin))
        .with_reflection(FILE_DESCRIPTOR_SET)
        .serve()
}
