//! A plugin's contract with the host, checked: `baton check`'s probes of a build, the
//! compatibility gate's comparison of the services a new build describes, and calls by
//! name over gRPC reflection.

pub(crate) mod api_check;
pub mod check;
pub mod reflect;
