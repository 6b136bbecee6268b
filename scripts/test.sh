#!/usr/bin/env bash
# Runs baton's whole test suite: unit tests and end-to-end tests with real processes.
# The end-to-end tests start the workspace's binaries, so everything is built first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets --locked
cargo test --workspace --locked "$@"
