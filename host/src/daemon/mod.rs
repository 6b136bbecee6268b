//! The `baton` command's own parts: the control API the daemon serves on its control
//! socket (with `Invoke` served by hand and sized before it is read), the Rust client
//! of that socket, and `baton check`; and, re-exported for the binary, what else it
//! uses of the library.

pub mod check;
pub mod control;
pub(crate) mod control_client;
mod control_invoke;
mod invoke_size;

pub use crate::api::reflect;
pub use crate::calls::forward;
pub use crate::io::{accept, printable};
pub use crate::launch::raise_descriptor_limit;

use crate::Host;
use crate::calls::forward::ForwardLayer;

/// The layer that forwards the control socket's calls for plugins' services to `host`'s
/// plugins, as its set is at each call.
pub fn forward_layer(host: &Host) -> ForwardLayer {
    ForwardLayer::new(host.plugin_set())
}
