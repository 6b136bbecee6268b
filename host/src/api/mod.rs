//! A plugin's application services: what may be one, the compatibility gate's
//! comparison of what a build describes with the application's descriptors, and calls
//! by name over reflection.

pub(crate) mod api_check;
pub mod reflect;
pub(crate) mod service_name;
