//! gRPC over HTTP/2 on Unix sockets, on the `h2` crate directly rather than through
//! hyper and tonic's `Channel` and server: the host's client to its plugins
//! ([`UnixClient`]), and the server ([`serve`]) under the daemon's control socket, the
//! host-services socket and the Rust plugin SDK, and the rule for their socket files
//! ([`socket_file`]). The bytes on the socket are standard gRPC over HTTP/2, so peers
//! in any language are untouched; what changes is how many tasks and threads a call
//! passes through on its way (see `docs/performance.md`).

mod body;
mod client;
mod framing;
mod header_block;
mod quiet;
mod router;
mod server;
pub mod socket_file;
mod spin;
mod status_text;
#[cfg(test)]
mod test_socket;
mod unary;
mod unary_route;
mod unread;

pub use client::{NotSent, UnixClient};
pub use framing::{Framed, Message, grpc_frame, grpc_frame_bytes_last};
pub use header_block::{DROPPED_HEADER, MAX_HEADER_BLOCK_BYTES};
pub use quiet::QuietUnix;
pub use router::{Check, Router};
pub use server::{MAX_HEADER_BYTES, ServerConfig, serve};
pub use spin::{MAX_SPIN, spin_on};
pub use status_text::{MAX_STATUS_MESSAGE_BYTES, bounded as bounded_status_text};
pub use unary::grpc_timeout_value;
pub use unary_route::{EarlyJudge, UnaryHandler, UnaryRoute};
