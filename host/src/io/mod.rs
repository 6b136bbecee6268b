//! The host's edges with what it does not trust: its sockets' paths and the connections
//! accepted on them, gRPC messages held to their size limit, a plugin's text on its way
//! to the host's log or a terminal, and (tests) the parsers of what plugins and
//! operators write, fed anything.

pub mod accept;
#[cfg(test)]
mod fuzz;
pub(crate) mod log_limit;
pub(crate) mod message_limit;
pub mod printable;
pub(crate) mod socket_path;
