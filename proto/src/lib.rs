//! The baton wire contract, generated from `proto/`: the `Plugin` service every plugin
//! serves, the `Supervisor` control API every host serves, and the `Host` services a
//! host offers its plugins.

#![allow(missing_docs)]

/// Messages and stubs of `baton.plugin.v1` (served by plugins).
pub mod plugin {
    tonic::include_proto!("baton.plugin.v1");
}

/// Messages and stubs of `baton.host.v1` (served by hosts): the `Supervisor` control API
/// (`supervisor.proto`) and the `Host` services for plugins (`host.proto`). Both files
/// are one protobuf package, so they generate into this one module.
pub mod host {
    tonic::include_proto!("baton.host.v1");
}

/// The encoded `FileDescriptorSet` of every baton proto (for gRPC reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/baton_descriptor.bin"));

pub mod state;
#[cfg(test)]
mod state_vectors;

/// The protocol version this crate's `Plugin` contract is (the `1` in `baton|1|unix|...`).
pub const PROTOCOL_VERSION: u32 = 1;

/// The metadata key carrying the per-launch token on every host-to-plugin call, and on
/// every plugin-to-host call to the host services.
pub const TOKEN_METADATA_KEY: &str = "x-baton-token";

/// Environment variables of the launch handshake.
pub mod env {
    /// Path of the Unix socket the plugin must bind.
    pub const SOCKET: &str = "BATON_PLUGIN_SOCKET";

    /// The protocol version the host speaks.
    pub const PROTOCOL_VERSION: &str = "BATON_PROTOCOL_VERSION";
    /// The per-launch secret every call carries.
    pub const TOKEN: &str = "BATON_PLUGIN_TOKEN";
    /// The plugin's configured name (informational).
    pub const PLUGIN_NAME: &str = "BATON_PLUGIN_NAME";
    /// Path of the Unix socket where the host serves `baton.host.v1.Host` to its plugins.
    pub const HOST_SOCKET: &str = "BATON_HOST_SOCKET";
    /// Microseconds the plugin may keep polling for its next call, once it has answered
    /// one, before its thread sleeps: the plugin's `spin_us` in the host's config, set
    /// only when it is not zero. A hint for latency-critical deployments that trade CPU
    /// for latency; a plugin that cannot spin ignores it.
    pub const SPIN_US: &str = "BATON_SPIN_US";
}
