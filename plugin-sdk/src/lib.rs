//! Write a baton plugin in Rust: implement [`Plugin`] for your type and call [`serve`].
//!
//! The SDK does the launch handshake, serves gRPC health, refuses calls without the
//! launch token, chunks and verifies state for `Snapshot`/`Restore`, and exits cleanly
//! on `Shutdown` or SIGTERM. Logs go to stderr through `tracing`, which the host captures.
//! [`HostClient`] calls back into the host: its log, a key-value store that outlives the
//! plugin's processes, and its event stream.
//!
//! ```no_run
//! use baton_plugin_sdk::{async_trait, Bytes, Description, Plugin, Status};
//!
//! struct Hello;
//!
//! #[async_trait]
//! impl Plugin for Hello {
//!     fn describe(&self) -> Description {
//!         Description::new("hello", env!("CARGO_PKG_VERSION")).method("hi", "says hello")
//!     }
//!     async fn invoke(&self, method: &str, _payload: Bytes) -> Result<Bytes, Status> {
//!         match method {
//!             "hi" => Ok(Bytes::from_static(b"hello")),
//!             other => Err(Status::unimplemented(format!("no method {other:?}"))),
//!         }
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     baton_plugin_sdk::serve(Hello)
//! }
//! ```
//!
//! # Threads
//!
//! [`serve`] runs the plugin on one thread (a current-thread tokio runtime): a call is
//! read, handled and answered there without being handed between threads, which is the
//! cheapest way to serve it. Calls still run concurrently: while one handler awaits (a
//! timer, the host, a socket, a stream), the others go on. What one thread cannot do is
//! run two computations at once, so a handler that computes for long (encoding a large
//! state, say) or blocks (synchronous I/O, a blocking library, a contended lock held
//! long) holds up every other call while it runs. For such work, either
//!
//! - move it off the thread: `tokio::task::spawn_blocking(move || ...).await` (the
//!   closure owns what it needs: an `Arc`, a [`StateMap::read`] copy, the payload), or
//! - serve on more threads: [`Server::worker_threads`] in code, or, without rebuilding,
//!   [`WORKERS_ENV`] (`BATON_PLUGIN_WORKERS`) in the plugin's `env` in the host's config:
//!
//! ```toml
//! [plugins.indexer.env]
//! BATON_PLUGIN_WORKERS = "4"   # a multi-thread runtime of 4 workers
//! ```
//!
//! The variable, when it is a count from 1 to 1024, wins over the code; `1` is the
//! one-thread default. `tokio::task::block_in_place` panics on one thread: use
//! `spawn_blocking`. The `serving` line in the plugin's log says how many threads serve.

mod host;
mod image;
mod server;
mod service;
pub mod state_map;

pub use baton_proto::state;

pub use baton_transport::socket_file::SocketPathError;
pub use bytes::Bytes;
pub use host::{AddToken, HostChannel, HostClient, HostClientError, LogLevel};
pub use image::StateImage;
pub use server::{Launch, LaunchError, Server, WORKERS_ENV, serve, serve_with_listener};
pub use state_map::StateMap;
pub use tonic::{Code, Status, async_trait};
pub use tracing;

/// What a plugin tells the host about itself in `Describe`.
#[derive(Debug, Clone)]
pub struct Description {
    /// The plugin's own name.
    pub name: String,
    /// The build's version, free-form.
    pub version: String,
    /// The state format version written by `snapshot` and read by `restore`; 0 if stateless.
    pub state_schema_version: u32,
    /// `(name, one-line description)` of each method.
    pub methods: Vec<(String, String)>,
    /// Whether the plugin takes a cursor in [`Plugin::snapshot_since`] and answers with
    /// deltas (see [`Description::incremental`]).
    pub incremental_snapshots: bool,
}

impl Description {
    /// A stateless plugin with no methods yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            state_schema_version: 0,
            methods: Vec::new(),
            incremental_snapshots: false,
        }
    }

    /// Adds a method to the description.
    pub fn method(mut self, name: impl Into<String>, description: impl Into<String>) -> Self {
        self.methods.push((name.into(), description.into()));
        self
    }

    /// Declares the state format version this build writes and reads.
    pub fn state_schema(mut self, version: u32) -> Self {
        self.state_schema_version = version;
        self
    }

    /// Declares incremental snapshots: the plugin implements [`Plugin::snapshot_since`]
    /// and [`Plugin::restore_delta`] (a [`StateMap`] does both), so the host can copy
    /// its state while it keeps serving and hold calls only for the last small delta.
    /// Snapshots then come while calls run, and must be consistent as of their cursor.
    pub fn incremental(mut self) -> Self {
        self.incremental_snapshots = true;
        self
    }
}

/// A baton plugin. One value serves every call, concurrently, so keep state behind
/// your own locks. By default every call runs on one thread: a method that computes for
/// long or blocks holds up the others (see [Threads](crate#threads)).
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// Who the plugin is and what methods it offers.
    fn describe(&self) -> Description;

    /// Runs one call. Return `Status::unimplemented` for an unknown method and
    /// `Status::invalid_argument` for a bad payload; never panic on input.
    async fn invoke(&self, method: &str, payload: Bytes) -> Result<Bytes, Status>;

    /// A consistent copy of the whole state, in the format of `describe().state_schema_version`.
    /// The host sends no calls while it takes a snapshot. A `Vec<u8>` converts with
    /// `.into()` without a copy; a state already kept as `Bytes` can be returned as is
    /// (a clone shares it), which spares a copy of the whole state at every handover.
    async fn snapshot(&self) -> Result<Bytes, Status> {
        Ok(Bytes::new())
    }

    /// Replaces the state with `state`, written by some build in format `schema_version`.
    /// Refuse a format you cannot read with `Status::failed_precondition`, leaving the
    /// current state untouched.
    async fn restore(&self, schema_version: u32, state: Vec<u8>) -> Result<(), Status> {
        restore_nothing(schema_version, state)
    }

    /// For a plugin that declares [`Description::incremental`]: its state as of a new
    /// cursor, either whole or, when `since` is the cursor that ended its latest
    /// snapshot, only the changes after it ([`StateImage::delta`]). Called while calls
    /// run. Answering with a whole state is always allowed. [`StateMap::snapshot_since`]
    /// is one. The default is [`Plugin::snapshot`], whole and without a cursor.
    async fn snapshot_since(&self, since: Option<Bytes>) -> Result<StateImage, Status> {
        let _ = since;
        Ok(StateImage::full(self.snapshot().await?))
    }

    /// Applies a delta written by [`Plugin::snapshot_since`] (of some build, in format
    /// `schema_version`) on top of the state restored so far. The SDK has checked that
    /// it follows the last state applied here; apply all of it or, refusing, none.
    async fn restore_delta(&self, schema_version: u32, delta: Vec<u8>) -> Result<(), Status> {
        Err(Status::failed_precondition(format!(
            "this plugin takes no deltas, but was given {} bytes of one in schema version {schema_version}",
            delta.len()
        )))
    }
}

/// What [`Plugin::restore`] does by default: accept the empty state only.
fn restore_nothing(schema_version: u32, state: Vec<u8>) -> Result<(), Status> {
    if state.is_empty() {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "this plugin keeps no state, but was given {} bytes in schema version {schema_version}",
            state.len()
        )))
    }
}
