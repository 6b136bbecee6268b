//! A plugin's application services as it describes them: the compatibility gate's
//! comparison with the application's descriptors, and calls by name over reflection.

pub(crate) mod api_check;
pub mod reflect;
