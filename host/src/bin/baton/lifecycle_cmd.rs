//! `baton ctl stop|start|restart|reload-config`: an operator's hands on one plugin's
//! lifecycle, and on the host's config, each answered with what was done.

use baton_proto::host::supervisor_client::SupervisorClient;
use baton_proto::host::{LifecycleRequest, ReloadConfigRequest};
use tonic::transport::Channel;

/// What the host is told about who asks; it adds the uid and pid it sees.
const BY: &str = "baton ctl";

/// One lifecycle command.
pub(crate) enum Lifecycle {
    Stop { plugin: String, discard_state: bool },
    Start(String),
    Restart { plugin: String, fresh: bool },
    ReloadConfig { allow_empty: bool, dry_run: bool },
}

pub(crate) async fn run(
    client: &mut SupervisorClient<Channel>,
    command: Lifecycle,
) -> Result<(), String> {
    let failed = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
    let request = |plugin: String, fresh: bool| LifecycleRequest {
        plugin,
        by: BY.into(),
        fresh,
        discard_state: false,
    };
    let answer = match command {
        Lifecycle::Stop {
            plugin,
            discard_state,
        } => {
            let stop = LifecycleRequest {
                discard_state,
                ..request(plugin, false)
            };
            client.stop(stop).await
        }
        Lifecycle::Start(plugin) => client.start(request(plugin, false)).await,
        Lifecycle::Restart { plugin, fresh } => client.restart(request(plugin, fresh)).await,
        Lifecycle::ReloadConfig {
            allow_empty,
            dry_run,
        } => {
            let done = client
                .reload_config(ReloadConfigRequest {
                    by: BY.into(),
                    allow_empty,
                    dry_run,
                })
                .await
                .map_err(failed)?
                .into_inner();
            for line in &done.changes {
                println!("{line}");
            }
            if dry_run {
                println!(
                    "dry run, nothing changed: {} to add, {} to remove, {} to hand over, {} to update in place, {} unchanged",
                    done.added.len(),
                    done.removed.len(),
                    done.restarted.len(),
                    done.updated.len(),
                    done.unchanged.len()
                );
                for problem in &done.problems {
                    eprintln!("problem: {problem}");
                }
                return Ok(());
            }
            println!(
                "config reloaded: {} added, {} removed, {} handed over, {} updated in place, {} unchanged",
                done.added.len(),
                done.removed.len(),
                done.restarted.len(),
                done.updated.len(),
                done.unchanged.len()
            );
            if done.problems.is_empty() {
                return Ok(());
            }
            for problem in &done.problems {
                eprintln!("problem: {problem}");
            }
            return Err(format!(
                "{} change(s) could not be applied (above); the rest is in force",
                done.problems.len()
            ));
        }
    };
    println!("{}", answer.map_err(failed)?.into_inner().message);
    Ok(())
}
