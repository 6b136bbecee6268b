//! The checks serde cannot make: names, ranges, formats, and combinations of fields.
//! Each refusal names the field it is about, so that it can be located in the file, and
//! every one is reported, not only the first.

use super::error::{Problem, plugin_field};
use super::{Config, CpuList};

impl Config {
    pub(super) fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(why) = self.refuse_public_metrics() {
            problems.push(Problem::at(vec!["metrics_addr".into()], why));
        }
        let max_spin = baton_transport::MAX_SPIN.as_micros() as u64;
        if self.control_spin_us > max_spin {
            problems.push(Problem::at(
                vec!["control_spin_us".into()],
                format!(
                    "must be at most {max_spin} (µs): past that, sleeping costs less than the \
                     wait; got {}",
                    self.control_spin_us
                ),
            ));
        }
        // Read once: whether each plugin's `cpus` are online, and this host's to give.
        let online = self
            .plugins
            .values()
            .any(|p| p.cpus.is_some())
            .then(CpuList::online)
            .flatten();
        let usable = online.as_ref().and_then(CpuList::usable);
        for (name, plugin) in &self.plugins {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                problems.push(Problem::at(
                    plugin_field(name, ""),
                    format!(
                        "{name:?} is not a plugin name: a name must be 1 to 64 ASCII letters, \
                         digits, '-' or '_'"
                    ),
                ));
            }
            let mut refuse = |key: &str, message: String| {
                problems.push(Problem::at(plugin_field(name, key), message));
            };
            if plugin.command.as_os_str().is_empty() {
                refuse("command", "must name a program".into());
            }
            for (key, value, min) in [
                ("handshake_timeout_ms", plugin.handshake_timeout_ms, 1),
                ("handover_timeout_ms", plugin.handover_timeout_ms, 1),
                ("cpu_window_ms", plugin.cpu_window_ms, 1),
                ("max_message_bytes", plugin.max_message_bytes as u64, 1024),
                ("log_lines_per_sec", u64::from(plugin.log_lines_per_sec), 1),
                ("log_bytes_per_sec", plugin.log_bytes_per_sec, 1024),
                (
                    "checkpoint_interval_ms",
                    plugin.checkpoint_interval_ms.unwrap_or(10),
                    10,
                ),
                ("max_rss_mb", plugin.max_rss_mb.unwrap_or(1), 1),
                ("max_processes", plugin.max_processes.unwrap_or(1), 1),
                // Its standard streams, its socket and its runtime's own need a few.
                ("max_open_files", plugin.max_open_files.unwrap_or(16), 16),
                ("max_file_bytes", plugin.max_file_bytes.unwrap_or(1), 1),
                ("max_state_bytes", plugin.max_state_bytes, 1),
                ("call_timeout_ms", plugin.call_timeout_ms, 1),
                ("restart.max_backoff_ms", plugin.restart.max_backoff_ms, 1),
                (
                    "restart.max_crashes",
                    u64::from(plugin.restart.max_crashes),
                    1,
                ),
                ("restart.crash_window_ms", plugin.restart.crash_window_ms, 1),
            ] {
                if value < min {
                    refuse(key, format!("must be at least {min}, got {value}"));
                }
            }
            if plugin.spin_us > max_spin {
                refuse(
                    "spin_us",
                    format!(
                        "must be at most {max_spin} (µs): past that, sleeping costs less than \
                         the wait; got {}",
                        plugin.spin_us
                    ),
                );
            }
            if let (Some(cpus), Some(online)) = (&plugin.cpus, &online) {
                // In the list's own format, so that a long range says so in a few bytes.
                let offline = CpuList::new(
                    cpus.cpus()
                        .iter()
                        .copied()
                        .filter(|c| online.cpus().binary_search(c).is_err()),
                );
                let which = |list: &CpuList| match list.cpus() {
                    [one] => format!("CPU {one} is"),
                    _ => format!("CPUs {list} are"),
                };
                // Online but outside the host's cpuset: the kernel would drop them from
                // the set without a word, or refuse the start if none were left.
                let withheld = usable.as_ref().and_then(|usable| {
                    CpuList::new(cpus.cpus().iter().copied().filter(|c| {
                        online.cpus().binary_search(c).is_ok()
                            && usable.cpus().binary_search(c).is_err()
                    }))
                    .map(|withheld| (withheld, usable))
                });
                if let Some(offline) = offline {
                    refuse(
                        "cpus",
                        format!(
                            "{} not online on this machine (online: {online})",
                            which(&offline)
                        ),
                    );
                } else if let Some((withheld, usable)) = withheld {
                    refuse(
                        "cpus",
                        format!(
                            "{} online but not this host's to give: its cpuset (a \
                             container's, or a unit's AllowedCPUs=) holds {usable}",
                            which(&withheld)
                        ),
                    );
                }
            }
            if let Some(pin) = &plugin.sha256
                && (pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()))
            {
                refuse("sha256", format!("must be 64 hex digits, got {pin:?}"));
            }
            for service in &plugin.services {
                if !crate::api::service_name::is_service_name(service) {
                    refuse(
                        "services",
                        format!(
                            "{service:?} is not a gRPC service name (dot-separated identifiers, \
                             such as \"mydb.trigger.v1.Trigger\")"
                        ),
                    );
                } else if let Some(what) =
                    crate::api::service_name::supervisors_own_service(service)
                {
                    // The daemon refuses every call to it: required, it could never be
                    // served to anyone.
                    refuse(
                        "services",
                        format!(
                            "{service:?} is {what}, which only its supervisor calls and the \
                             daemon never forwards; list the plugin's application services"
                        ),
                    );
                }
            }
            for entry in &plugin.watch {
                if let Err(e) = glob::Pattern::new(entry) {
                    refuse("watch", format!("{entry:?} is not a valid glob: {e}"));
                }
            }
            if plugin.restart.initial_backoff_ms > plugin.restart.max_backoff_ms {
                refuse(
                    "restart.initial_backoff_ms",
                    format!(
                        "must not exceed restart.max_backoff_ms ({}), got {}",
                        plugin.restart.max_backoff_ms, plugin.restart.initial_backoff_ms
                    ),
                );
            }
        }
        problems
    }

    /// Why `metrics_addr` may not be served, if it may not: it is beyond loopback and
    /// `metrics_public` was not set.
    pub(crate) fn refuse_public_metrics(&self) -> Option<String> {
        let addr = self.metrics_addr?;
        (!addr.ip().is_loopback() && !self.metrics_public).then(|| {
            format!(
                "{addr} is not a loopback address; the metrics endpoint has no authentication, so serving it beyond this machine needs `metrics_public = true`"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn refused(text: &str) -> String {
        match Config::parse(text, Path::new("baton.toml")) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn services_only_a_supervisor_calls_are_refused_naming_the_field() {
        for (service, what) in [
            ("baton.plugin.v1.Plugin", "its lifecycle service"),
            ("grpc.health.v1.Health", "its health service"),
        ] {
            let e = refused(&format!(
                "[plugins.p]\ncommand = \"/bin/true\"\nservices = [\"kv.v1.KV\", \"{service}\"]\n"
            ));
            assert!(
                e.contains("`plugins.p.services`")
                    && e.contains(&format!("\"{service}\" is {what}"))
                    && e.contains("only its supervisor calls"),
                "{e}"
            );
        }
        let e = refused("[plugins.p]\ncommand = \"/bin/true\"\nservices = [\"kv/KV\"]\n");
        assert!(e.contains("is not a gRPC service name"), "{e}");
        let fine =
            "[plugins.p]\ncommand = \"/bin/true\"\nservices = [\"mydb.trigger.v1.Trigger\"]\n";
        assert!(Config::parse(fine, Path::new("baton.toml")).is_ok());
    }
}
