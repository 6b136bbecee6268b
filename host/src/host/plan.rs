//! What a config reload does, worked out once from the running config and the new one:
//! a reload carries out these steps and `baton ctl reload-config --dry-run` prints them,
//! so the two cannot tell different stories.

use crate::config::{Config, PluginChange, PluginConfig, fixed_keys_changed, plugin_change};

use super::Host;

/// What a reload does to one plugin.
// A plan holds one step per plugin, for the length of one reload: nothing worth boxing
// the configs for.
#[allow(clippy::large_enum_variant)]
pub(super) enum Step {
    /// In the running config only: stopped (a final checkpoint first, if it keeps them)
    /// and forgotten.
    Remove {
        name: String,
        /// It keeps no checkpoints: its state ends with it.
        discards_state: bool,
    },
    /// In the new config only: started.
    Add { name: String, config: PluginConfig },
    /// In both, with keys changed: applied in place, or by a handover.
    Change {
        name: String,
        old: PluginConfig,
        config: PluginConfig,
        change: PluginChange,
    },
    /// In both, unchanged: not touched.
    Keep { name: String },
}

impl Step {
    /// The line saying what removing a plugin does, `done` or planned.
    pub(super) fn removal_line(name: &str, discards_state: bool, done: bool) -> String {
        // The config said so: removed even without checkpoints, but never silently.
        match (done, discards_state) {
            (true, false) => format!("plugin {name}: removed, stopped"),
            (true, true) => format!(
                "plugin {name}: removed, stopped; its state is discarded (it kept no checkpoints)"
            ),
            (false, false) => format!("plugin {name}: would be removed, stopped"),
            (false, true) => format!(
                "plugin {name}: would be removed, stopped; its state would be discarded \
                 (it keeps no checkpoints)"
            ),
        }
    }
}

/// The line saying a host-wide `key` that differs stays as it is, `done` or planned.
pub(super) fn fixed_line(key: &str, done: bool) -> String {
    let keeps = if done { "keeps" } else { "would keep" };
    format!(
        "`{key}` cannot change while the host runs; it {keeps} its value until the daemon restarts"
    )
}

/// A reload's steps, plugin by plugin, and what stands in its way.
pub(super) struct ReloadPlan {
    /// Host-wide keys that differ but cannot change while the host runs.
    pub(super) fixed: Vec<&'static str>,
    /// Removals first, then the new config's plugins in order.
    pub(super) steps: Vec<Step>,
    /// Set when the new config has no plugins and the running one has some: why the
    /// reload waits for the operator to insist.
    pub(super) empty: Option<String>,
}

/// What a config reload did, plugin by plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigReload {
    /// Plugins added and started.
    pub added: Vec<String>,
    /// Plugins removed and stopped.
    pub removed: Vec<String>,
    /// Plugins handed over to a generation with their new settings.
    pub restarted: Vec<String>,
    /// Plugins whose new settings applied in place.
    pub updated: Vec<String>,
    /// Plugins with no change.
    pub unchanged: Vec<String>,
    /// One line per change, naming the plugin and what changed.
    pub changes: Vec<String>,
    /// What could not be applied; the rest of the config is in force.
    pub problems: Vec<String>,
}

impl Host {
    /// The steps that take the running host to `new`.
    pub(super) fn plan(&self, new: &Config) -> ReloadPlan {
        let running = &self.config.plugins;
        let mut steps: Vec<Step> = running
            .iter()
            .filter(|(name, _)| !new.plugins.contains_key(*name))
            .map(|(name, old)| Step::Remove {
                name: name.clone(),
                discards_state: old.checkpoint_interval_ms.is_none(),
            })
            .collect();
        for (name, config) in &new.plugins {
            let name = name.clone();
            steps.push(match running.get(&name) {
                None => Step::Add {
                    name,
                    config: config.clone(),
                },
                Some(old) => {
                    let change = plugin_change(old, config);
                    if change.is_empty() {
                        Step::Keep { name }
                    } else {
                        Step::Change {
                            name,
                            old: old.clone(),
                            config: config.clone(),
                            change,
                        }
                    }
                }
            });
        }
        let empty = (new.plugins.is_empty() && !running.is_empty()).then(|| {
            let names: Vec<&str> = running.keys().map(String::as_str).collect();
            format!(
                "the new config has no plugins: it would stop all {} ({}); nothing changed. \
                 If that is meant, run `baton ctl reload-config --allow-empty`",
                names.len(),
                names.join(", ")
            )
        });
        ReloadPlan {
            fixed: fixed_keys_changed(&self.config, new),
            steps,
            empty,
        }
    }

    /// What [`reload_config`](Self::reload_config) would do with `new`, in the same
    /// report, each line saying what would happen; nothing is changed. A reload that
    /// would be refused for want of `allow_empty` says so among the problems. A plugin
    /// whose process-shaping keys changed is counted as handed over, though a handover
    /// that fails would keep its old generation.
    pub fn plan_config(&self, new: &Config, allow_empty: bool) -> ConfigReload {
        let plan = self.plan(new);
        let mut report = ConfigReload::default();
        if let (Some(why), false) = (&plan.empty, allow_empty) {
            report
                .problems
                .push(format!("a reload would be refused: {why}"));
        }
        for key in plan.fixed {
            report.problems.push(fixed_line(key, false));
        }
        for step in plan.steps {
            match step {
                Step::Remove {
                    name,
                    discards_state,
                } => {
                    report
                        .changes
                        .push(Step::removal_line(&name, discards_state, false));
                    report.removed.push(name);
                }
                Step::Add { name, .. } => {
                    report
                        .changes
                        .push(format!("plugin {name}: would be added, started"));
                    report.added.push(name);
                }
                Step::Change { name, change, .. } => {
                    let how = if change.process.is_empty() {
                        report.updated.push(name.clone());
                        "would apply in place"
                    } else {
                        report.restarted.push(name.clone());
                        "would be handed over to a new generation, state kept"
                    };
                    let keys = change.keys().join(", ");
                    report
                        .changes
                        .push(format!("plugin {name}: {keys} changed; {how}"));
                }
                Step::Keep { name } => report.unchanged.push(name),
            }
        }
        report
    }

    /// Why applying `new` should wait for the operator to insist: it would stop every
    /// plugin, which is what a file emptied by mistake (or read half-written) looks like.
    pub fn refuses_as_empty(&self, new: &Config) -> Option<String> {
        self.plan(new).empty
    }
}
