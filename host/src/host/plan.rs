//! What a config reload would do, worked out without doing it: for
//! `baton ctl reload-config --dry-run`, and for the check that refuses a reload that
//! would stop every plugin.

use crate::config::{Config, fixed_keys_changed, plugin_change};

use super::{ConfigReload, Host};

impl Host {
    /// What [`reload_config`](Self::reload_config) would do with `new`, in the same
    /// report, each line saying what would happen; nothing is changed. A plugin whose
    /// process-shaping keys changed is counted as handed over, though a handover that
    /// fails would keep its old generation.
    pub fn plan_config(&self, new: &Config) -> ConfigReload {
        let mut plan = ConfigReload::default();
        for key in fixed_keys_changed(&self.config, new) {
            plan.problems.push(format!(
                "`{key}` cannot change while the host runs; it would keep its value until the daemon restarts"
            ));
        }
        let running = &self.config.plugins;
        for name in running.keys().filter(|n| !new.plugins.contains_key(*n)) {
            plan.removed.push(name.clone());
            plan.changes
                .push(format!("plugin {name}: would be removed, stopped"));
        }
        for (name, config) in &new.plugins {
            let Some(old) = running.get(name) else {
                plan.added.push(name.clone());
                plan.changes
                    .push(format!("plugin {name}: would be added, started"));
                continue;
            };
            let change = plugin_change(old, config);
            if change.is_empty() {
                plan.unchanged.push(name.clone());
                continue;
            }
            let keys = change.keys().join(", ");
            let how = if change.process.is_empty() {
                plan.updated.push(name.clone());
                "would apply in place"
            } else {
                plan.restarted.push(name.clone());
                "would be handed over to a new generation, state kept"
            };
            plan.changes
                .push(format!("plugin {name}: {keys} changed; {how}"));
        }
        plan
    }

    /// Why applying `new` should wait for the operator to insist: it would stop every
    /// plugin, which is what a file emptied by mistake (or read half-written) looks like.
    pub fn refuses_as_empty(&self, new: &Config) -> Option<String> {
        if !new.plugins.is_empty() || self.config.plugins.is_empty() {
            return None;
        }
        let running: Vec<&str> = self.config.plugins.keys().map(String::as_str).collect();
        Some(format!(
            "the new config has no plugins: it would stop all {} ({}); nothing changed. \
             If that is meant, run `baton ctl reload-config --allow-empty`",
            running.len(),
            running.join(", ")
        ))
    }
}
