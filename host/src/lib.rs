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
//!
//! # Source layout
//!
//! Each folder of `host/src` is one concern (`docs/architecture.md` follows a call, a
//! reload and a crash through them):
//!
//! | folder | what it is for |
//! |---|---|
//! | `host/` | [`Host`] and [`HostBuilder`]: start a set of plugins, reload their config, hold them to their memory and CPU limits, stop them |
//! | `config/` | `baton.toml`: read, validated, settled, compared with the running one |
//! | `launch/` | one plugin process brought to SERVING (isolation, PID init, handshake, logs) and stopped |
//! | `supervisor/` | the task that owns one plugin: its lifecycle, restarts and handovers |
//! | `calls/` | the path of a call: [`PluginHandle`], its commands to the supervisor, the route to the serving generation, [`PluginChannel`], the daemon's forwarding |
//! | `services/` | the host-services gRPC server plugins call (log, key-value store, events, an embedder's own) |
//! | `checkpoint/` | snapshots of a plugin's state the host keeps, in memory or on disk |
//! | `watch/` | noticing that a plugin's binary or sources changed |
//! | `observe/` | what the host tells: events, status, memory and CPU read from /proc, Prometheus metrics |
//! | `api/` | a plugin's services as it describes them: the compatibility gate, calls by reflection |
//! | `io/` | the host's edges: socket paths, connections accepted, message size limits, plugin text made printable, log budgets |
//! | `daemon/` | the `baton` command's own parts (control API, `baton check`), for `src/bin/baton/` |

mod api;
mod calls;
mod checkpoint;
pub mod config;
#[doc(hidden)]
pub mod daemon;
mod host;
mod io;
mod launch;
mod observe;
mod services;
mod supervisor;
mod watch;

pub use calls::channel::PluginChannel;
pub use calls::handle::{PluginHandle, Reply};
pub use config::{Config, ConfigError, Mode, PluginConfig, ReloadMode, RestartConfig, WatcherKind};
pub use daemon::control_client::ControlClient;
pub use host::{ConfigReload, Host, HostBuilder, HostError};
pub use launch::{LogLine, pid_init, this_executable, unix_channel};
pub use observe::events::Event;
pub use observe::metrics::Metrics;
pub use observe::status::{PluginState, PluginStatus};
pub use services::{KvLimits, PluginIdentity};
pub use supervisor::RestartPolicy;
