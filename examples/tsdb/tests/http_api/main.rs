//! InfluxDB's HTTP API against the real `tsdb` binary, one file per behaviour: routes
//! (405 with `Allow`, 404 naming the path), write precision, partial writes, the v1 and
//! v2 write endpoints with `/health` and `/ping`, last write wins, `query_sql`'s forms
//! and formats, the server's bounds, hostile clients (SQL reaching files or other
//! databases, queries holding writes or memory, thousands of tables in a write), and
//! durability (a SIGKILL mid-load, Parquet read back by pyarrow, a torn log tail).

#[path = "../common/mod.rs"]
mod common;

mod bounds;
mod catalog_bounds;
mod catalog_restart;
mod config_errors;
mod configure_refusals;
mod deletes;
mod durability;
mod hostile;
mod last_write_wins;
mod legacy;
mod partial;
mod precision;
mod query;
mod request_headers;
mod routes;
mod runtime_triggers;
mod sql;
mod system_tables;
