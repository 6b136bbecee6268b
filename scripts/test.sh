#!/usr/bin/env bash
# Runs baton's whole test suite: Rust unit tests, end-to-end tests with real processes
# (Rust, Python, Go and TypeScript plugins), and the Python, Go and TypeScript SDKs' tests
# (Go and TypeScript skipped, with a line saying so, where their tools are missing). Sets up the Python environment
# (.venv) and builds every binary first, since the end-to-end tests run them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash plugin-sdk/python/setup-python.sh
# grpcurl, for the test of the README's grpcurl lines against the control API; from the
# Go module proxy, once, into target/tools (that test says it skipped where Go is absent).
if [[ ! -x target/tools/grpcurl ]]; then
    if command -v go >/dev/null; then
        GOBIN="$PWD/target/tools" go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4 ||
            echo "test.sh: could not install grpcurl; its test will say it skipped" >&2
    else
        echo "test.sh: no go, so no grpcurl; the README's grpcurl lines are not run" >&2
    fi
fi
# The demo's own build first, as scripts/demo.sh runs it: cargo unifies features over
# the packages a command names, so the demo's three binaries built by the workspace build
# below would differ from the demo's and be compiled again when it runs (12 crates,
# about a minute). Built here once, the demo after the tests compiles nothing.
cargo build --locked --bins -p baton-host -p counter-plugin -p echo-plugin
cargo build --workspace --all-targets --locked
cargo test --workspace --locked "$@"
.venv/bin/python -m unittest discover -s plugin-sdk/python/tests
# The runner of InfluxDB 3 plugins (LineBuilder, the cache, process_request's answers),
# from its own directory so that the work tree's copy is the one tested.
(cd examples/tsdb/influxdb3_runner && ../../../.venv/bin/python -m unittest discover -s tests)
bash scripts/test-sdks.sh
