//! A plugin's resource limits as the monitor judges them, in its units.

use std::time::Duration;

use super::PluginConfig;

/// The limits of one plugin: `max_rss_mb`, `max_cpu_percent` over `cpu_window_ms`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_rss_bytes: Option<u64>,
    pub(crate) max_cpu_percent: Option<f64>,
    pub(crate) cpu_window: Duration,
}

impl Limits {
    pub(crate) fn of(config: &PluginConfig) -> Self {
        Self {
            max_rss_bytes: config.max_rss_mb.map(|mb| mb.saturating_mul(1 << 20)),
            max_cpu_percent: config.max_cpu_percent,
            cpu_window: Duration::from_millis(config.cpu_window_ms),
        }
    }
}
