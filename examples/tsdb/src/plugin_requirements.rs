//! A plugin package's own `requirements.txt`, followed while tsdb runs: when its text
//! changes, the new requirements are installed with pip into an environment of their
//! own, beside the old one, and the trigger's plugin is handed over to a process on it,
//! its cache kept, as a code change is. A requirements file pip cannot install leaves
//! the plugin running on its old environment, and says why in the trigger's log; it is
//! tried again only once the file changes again. InfluxDB installs a plugin's
//! requirements only when asked (`install_requirements`), into its one environment.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::plugin_env::requirements_of;
use crate::plugin_launch::{plugin_for, prepare_environment};
use crate::processing_engine::ProcessingEngine;

/// How often the requirements files are read: a few bytes per package, and pip takes
/// seconds anyway.
pub const POLL: Duration = Duration::from_secs(2);

/// Follows the requirements of every trigger made over the API until the engine goes.
pub fn follow(engine: &Arc<ProcessingEngine>) {
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Per trigger, the requirements text pip refused, so it is not tried again
        // every two seconds.
        let mut refused: HashMap<String, String> = HashMap::new();
        loop {
            tick.tick().await;
            if !check_all(&weak, &mut refused).await {
                return;
            }
        }
    });
}

/// One pass over the triggers; `false` once the engine is gone.
async fn check_all(weak: &Weak<ProcessingEngine>, refused: &mut HashMap<String, String>) -> bool {
    let Some(engine) = weak.upgrade() else {
        return false;
    };
    let Some(dir) = engine.plugin_dir() else {
        return false;
    };
    let triggers = engine.catalog().state().triggers;
    refused.retain(|name, _| triggers.contains_key(name));
    for (name, def) in triggers {
        let Ok(path) = dir.resolve_plugin(&def.plugin_filename, "plugin_filename") else {
            continue;
        };
        let Some(Ok(text)) = requirements_of(&path) else {
            continue;
        };
        if refused.get(&name) == Some(&text) {
            continue;
        }
        let runner = engine.runner();
        let plugin = match plugin_for(Some(dir), runner, &def) {
            Ok(plugin) => plugin,
            // Its environment is not made: these requirements are new.
            Err(_) => {
                tracing::info!(
                    trigger = %name,
                    "requirements.txt changed: installing it with pip into an environment of its own"
                );
                let made = match prepare_environment(Some(dir), runner, &def).await {
                    Ok(()) => plugin_for(Some(dir), runner, &def),
                    Err(e) => Err(e.to_string()),
                };
                match made {
                    Ok(plugin) => plugin,
                    Err(e) => {
                        tracing::error!(
                            trigger = %name,
                            "requirements.txt changed but was not installed; the plugin keeps running on its old environment: {e}"
                        );
                        refused.insert(name, text);
                        continue;
                    }
                }
            }
        };
        match engine.replace_plugin(&name, plugin).await {
            Ok(false) => {}
            Ok(true) => tracing::info!(
                trigger = %name,
                "requirements.txt changed: the plugin now runs on its new environment, its state handed over"
            ),
            Err(e) => tracing::error!(
                trigger = %name,
                "requirements.txt changed; the plugin was not moved onto its new environment: {e}"
            ),
        }
    }
    true
}
