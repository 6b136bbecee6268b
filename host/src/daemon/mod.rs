//! The `baton` command's own parts: the control API the daemon serves on its control
//! socket (with `Invoke` served by hand and sized before it is read), forwarding calls
//! to plugins' services, the Rust client of that socket, and `baton check`.

pub mod check;
pub mod control;
pub(crate) mod control_client;
mod control_invoke;
pub mod forward;
mod invoke_size;

pub use crate::api::reflect;
pub use crate::io::{accept, printable};
pub use crate::launch::raise_descriptor_limit;
