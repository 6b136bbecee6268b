//! A config reload on a running host: plugins added start, removed ones stop (a final
//! checkpoint first, if they keep them), changed ones take their new settings — in
//! place, or through a handover to a generation that runs with them, state kept — and
//! unchanged ones are not touched. A changed plugin whose handover rolls back keeps its
//! previous settings (and generation), so the next reload tries again.

use std::sync::Arc;

use crate::calls::command::{Reconfigure, Reconfigured};
use crate::config::{Config, PluginChange, PluginConfig};
use crate::observe::events::Event;

use super::Host;
use super::plan::{ConfigReload, Step};

impl Host {
    /// Applies `new` (already loaded and checked, as [`Config::load`] does) to the running
    /// host; see the module's documentation. Host-wide keys that cannot change while
    /// the host runs (the control socket, the mode, the state directory, the metrics
    /// address, the watcher, the runtime's threads) keep their values, and each one
    /// that differs is named in `problems`.
    pub async fn reload_config(&mut self, new: &Config) -> ConfigReload {
        let plan = self.plan(new);
        let mut report = ConfigReload::default();
        for key in plan.fixed {
            report.problems.push(super::plan::fixed_line(key, true));
        }
        let mut changing = tokio::task::JoinSet::new();
        for step in plan.steps {
            match step {
                Step::Remove {
                    name,
                    discards_state,
                } => {
                    self.remove(&name).await;
                    report
                        .changes
                        .push(Step::removal_line(&name, discards_state, true));
                    report.removed.push(name);
                }
                Step::Add { name, config } => {
                    self.config.plugins.insert(name.clone(), config.clone());
                    self.add(&name, config);
                    self.announce(
                        &name,
                        "added",
                        format!("plugin {name} added by a config reload"),
                    );
                    report
                        .changes
                        .push(format!("plugin {name}: added, starting"));
                    report.added.push(name);
                }
                Step::Change {
                    name,
                    old,
                    config,
                    change,
                } => {
                    let Some(handle) = self.plugins.get(&name) else {
                        continue;
                    };
                    let reconfigure = self.reconfiguration(&name, &old, &config, change.clone());
                    changing.spawn(async move {
                        let outcome = handle.reconfigure(reconfigure).await;
                        if outcome.is_ok() {
                            handle.apply_settings(&config);
                        }
                        (name, config, change, outcome)
                    });
                }
                Step::Keep { name } => report.unchanged.push(name),
            }
        }
        let mut done = Vec::new();
        while let Some(joined) = changing.join_next().await {
            if let Ok(one) = joined {
                done.push(one);
            }
        }
        done.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, config, change, outcome) in done {
            let keys = change.keys().join(", ");
            match outcome {
                Ok(how) => {
                    let what = match how {
                        Reconfigured::InPlace => {
                            report.updated.push(name.clone());
                            "applied in place".to_owned()
                        }
                        Reconfigured::Generation(n) => {
                            report.restarted.push(name.clone());
                            format!("handed over to generation {n}, state kept")
                        }
                    };
                    let line = format!("plugin {name}: {keys} changed; {what}");
                    self.announce(&name, "reconfigured", line.clone());
                    report.changes.push(line);
                    self.config.plugins.insert(name, config);
                }
                Err(why) => report
                    .problems
                    .push(format!("plugin {name}: {keys} changed, not applied: {why}")),
            }
        }
        let mut summary = format!(
            "config reloaded: {} added, {} removed, {} handed over, {} updated in place, {} unchanged",
            report.added.len(),
            report.removed.len(),
            report.restarted.len(),
            report.updated.len(),
            report.unchanged.len()
        );
        if !report.problems.is_empty() {
            summary.push_str(&format!("; {} problem(s)", report.problems.len()));
        }
        tracing::info!("{summary}");
        for problem in &report.problems {
            tracing::warn!("config reload: {problem}");
        }
        report
    }

    /// The command that hands plugin `name` its new settings.
    fn reconfiguration(
        &self,
        name: &str,
        old: &PluginConfig,
        new: &PluginConfig,
        change: PluginChange,
    ) -> impl FnOnce(tokio::sync::oneshot::Sender<Result<Reconfigured, String>>) -> Reconfigure
    + Send
    + use<> {
        let api = new
            .api_descriptors
            .as_ref()
            .map(|path| Arc::new(crate::api::api_check::load(path, &new.services)));
        // What is watched follows the command and `watch`; a new subscription replaces
        // the old one only when they (or the reload mode) changed.
        let watched_differently = old.command != new.command || !change.watching.is_empty();
        let changes = watched_differently.then(|| self.subscribe_changes(name, new));
        let config = new.clone();
        move |reply| Reconfigure {
            config,
            change,
            api,
            changes,
            reply,
        }
    }

    /// Stops plugin `name` for good and forgets it.
    async fn remove(&mut self, name: &str) {
        if let Some(handle) = self.plugins.remove(name) {
            handle.stop().await;
            let generation = handle.status().generation;
            self.events.send(Event::new(
                name,
                generation,
                "removed",
                format!("plugin {name} removed by a config reload"),
            ));
        }
        if let Some(task) = self.tasks.remove(name) {
            let _ = task.await;
        }
        self.events.forget(name);
        self.config.plugins.remove(name);
    }

    fn announce(&self, name: &str, kind: &'static str, message: String) {
        let generation = self.plugins.get(name).map_or(0, |h| h.status().generation);
        self.events
            .send(Event::new(name, generation, kind, message));
    }
}
