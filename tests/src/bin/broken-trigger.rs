//! The trigger example plugin as builds that broke the application API:
//! `broken-trigger without-service` no longer serves `mydb.trigger.v1.Trigger`;
//! `broken-trigger changed-api` serves it but describes (over reflection) a changed
//! type, `TriggerResult.total` as a string. `broken-trigger lingering` serves the API
//! but, stopped by SIGTERM, closes its socket and lives on a moment before exiting:
//! calls made meanwhile are refused at connect, never reaching it.

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
        Some("lingering") => {
            let code = server.add_service(TriggerServer::new(plugin)).serve();
            eprintln!("lingering: the socket is gone, the process is not");
            std::thread::sleep(std::time::Duration::from_millis(250));
            code
        }
        other => {
            eprintln!(
                "usage: broken-trigger without-service|changed-api|lingering (got {other:?})"
            );
            std::process::ExitCode::from(2)
        }
    }
}
