//! baton-host: run plugins as child processes, call them over gRPC on private Unix
//! sockets, restart them when they crash. Link it into your program, or use the
//! `baton` daemon built from it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use baton_host::{Config, Host, PluginConfig};
//!
//! let mut config = Config::empty();
//! config.plugins.insert("counter".into(), PluginConfig::new("target/debug/counter"));
//! let host = Host::start(&config).await?;
//! let counter = host.plugin("counter").ok_or("no counter")?;
//! let value = counter.invoke("incr", "visits").await?;
//! println!("visits = {}", String::from_utf8_lossy(&value));
//! host.shutdown().await;
//! # Ok(()) }
//! ```

pub mod accept;
mod api_check;
mod channel;
pub mod check;
pub mod checkpoint;
pub(crate) mod command;
pub mod config;
pub mod control;
mod control_client;
mod control_invoke;
mod deadline_anchor;
pub mod events;
pub mod forward;
#[cfg(test)]
mod fuzz;
mod handle;
mod host;
mod invoke_size;
pub mod launch;
pub mod log_limit;
mod message_limit;
pub mod metrics;
mod monitor;
pub mod pid_init;
pub mod plugin_set;
pub mod printable;
mod proc_stat;
mod reclaim;
pub mod reflect;
mod route;
pub mod services;
mod status;
pub mod supervisor;
pub mod watch;

pub use channel::PluginChannel;
pub use config::{Config, ConfigError, Mode, PluginConfig, ReloadMode, RestartConfig, WatcherKind};
pub use control_client::ControlClient;
pub use events::Event;
pub use handle::{PluginHandle, Reply};
pub use host::{ConfigReload, Host, HostBuilder, HostError};
pub use metrics::Metrics;
pub use services::{KvLimits, PluginIdentity};
pub use status::{PluginState, PluginStatus};
pub use supervisor::RestartPolicy;
