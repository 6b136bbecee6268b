//! The path of a call from the host to a plugin: the handle a caller holds, its commands
//! to the plugin's supervisor, the route to the serving generation, the typed channel,
//! and the daemon's forwarding of outside calls through it.

pub(crate) mod channel;
pub(crate) mod command;
pub(crate) mod deadline_anchor;
pub mod forward;
mod forward_refusal;
pub(crate) mod handle;
pub(crate) mod plugin_set;
pub(crate) mod reclaim;
pub(crate) mod route;
