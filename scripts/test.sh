#!/usr/bin/env bash
# Runs baton's whole test suite: Rust unit tests, end-to-end tests with real processes
# (Rust and Python plugins), and the Python SDK's tests. Sets up the Python environment
# (.venv) and builds every binary first, since the end-to-end tests run them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash plugin-sdk/python/setup-python.sh
cargo build --workspace --all-targets --locked
cargo test --workspace --locked "$@"
.venv/bin/python -m unittest discover -s plugin-sdk/python/tests
