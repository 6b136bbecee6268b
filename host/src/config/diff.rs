//! What a config reload changes for one plugin, and what each change needs: a new
//! process (a handover, state kept), a new watch on its files, or nothing but a new
//! value read in place.

use super::{Config, PluginConfig};

/// How one plugin's settings changed between two configs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PluginChange {
    /// Changed keys that shape the process (its command, environment, user, limits
    /// passed to it at launch): they take a new generation.
    pub process: Vec<&'static str>,
    /// Changed keys about noticing file changes (`reload`, `watch`).
    pub watching: Vec<&'static str>,
    /// Changed keys the host reads as it goes: they apply in place.
    pub in_place: Vec<&'static str>,
}

impl PluginChange {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.process.is_empty() && self.watching.is_empty() && self.in_place.is_empty()
    }

    /// Every changed key, in the order of the config's documentation.
    pub fn keys(&self) -> Vec<&'static str> {
        let mut keys = self.process.clone();
        keys.extend(&self.watching);
        keys.extend(&self.in_place);
        keys
    }
}

/// The keys that differ between `old` and `new`, sorted by what they need.
pub fn plugin_change(old: &PluginConfig, new: &PluginConfig) -> PluginChange {
    // Named one by one, without `..`: a key added to PluginConfig does not compile here
    // until it is sorted into one of the lists.
    let PluginConfig {
        command,
        args,
        cwd,
        env,
        handshake_timeout_ms,
        call_timeout_ms,
        stream_drain_ms,
        shutdown_grace_ms,
        restart,
        checkpoint_interval_ms,
        max_state_bytes,
        max_message_bytes,
        log_lines_per_sec,
        log_bytes_per_sec,
        max_held_calls,
        user,
        group,
        sha256,
        inherit_env,
        max_rss_mb,
        max_cpu_percent,
        max_processes,
        max_open_files,
        max_file_bytes,
        cpu_window_ms,
        reload,
        watch,
        services,
        api_descriptors,
        settle_ms,
        handover_timeout_ms,
        pre_copy,
        spin_us,
        cpus,
        copy_binary,
    } = old;
    let mut change = PluginChange::default();
    macro_rules! compare {
        ($list:ident: $($field:ident),+ $(,)?) => {
            $(if $field != &new.$field {
                change.$list.push(stringify!($field));
            })+
        };
    }
    compare!(process: command, args, cwd, env, user, group, sha256, inherit_env,
        max_message_bytes, services, api_descriptors, copy_binary, spin_us, cpus,
        max_processes, max_open_files, max_file_bytes);
    compare!(watching: reload, watch);
    compare!(in_place: handshake_timeout_ms, call_timeout_ms, stream_drain_ms,
        shutdown_grace_ms, restart, checkpoint_interval_ms, max_state_bytes,
        log_lines_per_sec, log_bytes_per_sec, max_held_calls, max_rss_mb, max_cpu_percent,
        cpu_window_ms, settle_ms, handover_timeout_ms, pre_copy);
    change
}

/// Host-wide keys that cannot change while the daemon runs, with their new values
/// differing from the running ones.
pub fn fixed_keys_changed(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! compare {
        ($($field:ident),+ $(,)?) => {
            $(if running.$field != new.$field {
                changed.push(stringify!($field));
            })+
        };
    }
    compare!(
        socket,
        mode,
        watcher,
        poll_interval_ms,
        state_dir,
        worker_threads,
        resource_interval_ms,
        metrics_addr,
        metrics_public,
        control_spin_us,
    );
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_sorted_by_what_it_needs() {
        let old = PluginConfig::new("/bin/a");
        let mut new = old.clone();
        assert!(plugin_change(&old, &new).is_empty());
        new.args = vec!["x".into()];
        new.call_timeout_ms += 1;
        new.watch = vec!["*.py".into()];
        new.restart.max_crashes += 1;
        let change = plugin_change(&old, &new);
        assert_eq!(change.process, ["args"]);
        assert_eq!(change.watching, ["watch"]);
        assert_eq!(change.in_place, ["call_timeout_ms", "restart"]);
    }
}
