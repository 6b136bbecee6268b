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

mod host;
mod server;

pub use baton_proto::state;

pub use bytes::Bytes;
pub use host::{AddToken, HostChannel, HostClient, HostClientError, LogLevel};
pub use server::{Launch, LaunchError, Server, serve, serve_with_listener};
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
}

impl Description {
    /// A stateless plugin with no methods yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            state_schema_version: 0,
            methods: Vec::new(),
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
}

/// A baton plugin. One value serves every call, concurrently, so keep state behind
/// your own locks.
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
        if state.is_empty() {
            Ok(())
        } else {
            Err(Status::failed_precondition(format!(
                "this plugin keeps no state, but was given {} bytes in schema version {schema_version}",
                state.len()
            )))
        }
    }
}
