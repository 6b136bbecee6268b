//! What the host tells about its plugins: lifecycle events, each plugin's status, its
//! memory and CPU read from /proc, and Prometheus metrics.

pub(crate) mod events;
pub(crate) mod metrics;
pub(crate) mod proc_stat;
pub(crate) mod status;
