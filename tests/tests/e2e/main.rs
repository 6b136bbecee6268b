//! End-to-end tests: each starts a real `baton` host with real plugin processes.
//! All of them compile into this one binary; `baton_tests` holds the shared helpers.

mod bad_plugins;
mod calls;
mod chaos;
mod check;
mod checkpoints;
mod cli;
mod config;
mod config_first_build;
mod control_socket;
mod crashes;
mod descendants;
mod floods;
mod forks;
mod go_kv;
mod host_death;
mod host_services;
mod lifecycle;
mod linked_deploys;
mod log_flood;
mod message_limits;
mod metrics;
mod operations;
mod plugin_runtime;
mod precopy;
mod python;
mod python_package;
mod reload;
mod runtime_files;
mod sdk_counters;
mod sdk_ring;
mod security;
mod token;
mod top;
mod typed;
mod typed_daemon;
