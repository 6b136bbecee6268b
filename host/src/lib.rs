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

mod api;
mod calls;
pub mod checkpoint;
pub mod config;
#[doc(hidden)]
pub mod daemon;
mod host;
mod io;
pub mod launch;
mod observe;
pub mod services;
pub mod supervisor;
pub mod watch;

pub use calls::channel::PluginChannel;
pub use calls::handle::{PluginHandle, Reply};
pub use config::{Config, ConfigError, Mode, PluginConfig, ReloadMode, RestartConfig, WatcherKind};
pub use daemon::control_client::ControlClient;
pub use host::{ConfigReload, Host, HostBuilder, HostError};
pub use launch::pid_init;
pub use observe::events::Event;
pub use observe::metrics::Metrics;
pub use observe::status::{PluginState, PluginStatus};
pub use services::{KvLimits, PluginIdentity};
pub use supervisor::RestartPolicy;
