//! End-to-end tests: each starts a real `baton` host with real plugin processes.
//! All of them compile into this one binary; `baton_tests` holds the shared helpers.

mod bad_plugins;
mod calls;
mod chaos;
mod check;
mod checkpoints;
mod cli;
mod config;
mod control_socket;
mod crashes;
mod descendants;
mod floods;
mod host_death;
mod host_services;
mod linked_deploys;
mod log_flood;
mod message_limits;
mod metrics;
mod operations;
mod python;
mod reload;
mod runtime_files;
mod security;
mod token;
mod top;
mod typed;
mod typed_daemon;
