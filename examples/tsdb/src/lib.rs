//! tsdb: a small time-series database that embeds baton as its processing engine. Data
//! comes in as InfluxDB line protocol over HTTP, lands in a write-ahead log and then in Parquet
//! files, and is queried with Apache DataFusion's SQL; triggers call
//! plugins (any language, reloaded live with their state) on writes, on schedules and
//! on HTTP requests, through the typed API in `proto/tsdb/engine/v1/engine.proto`; and
//! plugins query and write the database back through the same API.

mod bounded_child;
pub mod catalog;
pub mod config;
pub mod containment;
pub mod db;
mod delivery;
pub mod host_api;
pub mod http;
mod line_child;
pub mod line_protocol;
pub mod plugin_dir;
pub mod plugin_env;
pub mod plugin_imports;
pub mod plugin_launch;
pub mod plugin_requirements;
pub mod plugin_test;
mod plugin_test_query;
pub mod processing_engine;
mod schedules;
pub mod shared_cache;
pub mod system_tables;
pub mod table_batches;
pub mod tokens;
pub mod trigger_spec;
pub mod triggers;

/// The plugin API, generated from `engine.proto`.
pub mod api {
    tonic::include_proto!("tsdb.engine.v1");
}

/// The API's encoded descriptors: for plugins' reflection, and for the host to check a
/// new plugin build against (`api_descriptors`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/engine_descriptor.bin"));
