//! The path of a call from the host to a plugin: the handle a caller holds, the route
//! to the serving generation, and the typed channel's request bodies.

pub(crate) mod channel;
pub(crate) mod command;
pub(crate) mod deadline_anchor;
pub(crate) mod handle;
pub(crate) mod plugin_set;
pub(crate) mod reclaim;
pub(crate) mod route;
