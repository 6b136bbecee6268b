//! The host's edges with what it does not trust: connections accepted on its sockets,
//! a plugin's text on its way to the host's log or a terminal, and (tests) the parsers
//! of what plugins and operators write, fed anything.

pub mod accept;
#[cfg(test)]
mod fuzz;
pub(crate) mod log_limit;
pub mod printable;
