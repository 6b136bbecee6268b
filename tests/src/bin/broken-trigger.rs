//! The trigger example plugin as builds that broke the application API:
//! `broken-trigger without-service` no longer serves `mydb.trigger.v1.Trigger`;
//! `broken-trigger changed-api` serves it but describes (over reflection) a changed
//! type, `TriggerResult.total` as a string.

use baton_plugin_sdk::Server;
use trigger_plugin::TriggerPlugin;
use trigger_plugin::api::trigger_server::TriggerServer;

fn main() -> std::process::ExitCode {
    let plugin = TriggerPlugin::default();
    let server = Server::new(plugin.clone());
    match std::env::args().nth(1).as_deref() {
        Some("without-service") => server.serve(),
        Some("changed-api") => server
            .add_service(TriggerServer::new(plugin))
            .with_reflection(baton_tests::trigger::CHANGED_FILE_DESCRIPTOR_SET)
            .serve(),
        other => {
            eprintln!("usage: broken-trigger without-service|changed-api (got {other:?})");
            std::process::ExitCode::from(2)
        }
    }
}
