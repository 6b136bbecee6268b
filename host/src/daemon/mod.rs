//! The `baton` daemon's own parts: the control API it serves on its control socket
//! (with `Invoke` served by hand and sized before it is read), forwarding calls to
//! plugins' services, and the Rust client of that socket.

pub mod control;
pub(crate) mod control_client;
mod control_invoke;
pub mod forward;
mod invoke_size;

pub use crate::api::{check, reflect};
pub use crate::io::{accept, printable};
