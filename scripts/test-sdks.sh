#!/usr/bin/env bash
# Runs the Go and TypeScript SDKs' own tests and their counters' (the shared wire vectors
# included): go test for each Go module (the SDK's and its examples' again with the
# oldest Go the SDK declares), node --test for each npm package. A machine
# without Go, or without Node.js and npm, skips that half with a line saying so.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v go >/dev/null; then
    # Each is its own module: the SDK, its stub generator (whose test checks the
    # committed stubs, the SDK's and go-kv's, against the protos), and the Go counter
    # and go-kv, which import the SDK by path as any module on this machine can.
    for module in plugin-sdk/go plugin-sdk/go/tools/protogen example-plugins/go-counter example-plugins/go-kv; do
        echo "test-sdks.sh: go test in $module" >&2
        (cd "$module" && go test ./...)
    done
    # The SDK's go.mod declares the lowest Go that it and grpc-go need, so that
    # requiring it leaves a plugin module's go line alone: vet and test it, and the
    # examples that import it, with exactly that toolchain and its rules. GOTOOLCHAIN
    # fetches it through the Go module proxy the first time (into the module cache).
    floor="$(cd plugin-sdk/go && go list -m -f '{{.GoVersion}}')"
    if GOTOOLCHAIN="go$floor" go version >/dev/null 2>&1; then
        for module in plugin-sdk/go example-plugins/go-counter example-plugins/go-kv; do
            echo "test-sdks.sh: go vet and go test in $module with go$floor, the SDK's declared minimum" >&2
            (cd "$module" && GOTOOLCHAIN="go$floor" go vet ./... && GOTOOLCHAIN="go$floor" go test ./...)
        done
    else
        echo "skipped: the Go SDK's tests with go$floor, its declared minimum (GOTOOLCHAIN=go$floor cannot fetch that toolchain here)" >&2
    fi
else
    echo "skipped: the Go SDK's tests (go is not installed)" >&2
fi

if command -v node >/dev/null && command -v npm >/dev/null; then
    for package in plugin-sdk/node example-plugins/ts-counter; do
        echo "test-sdks.sh: node --test in $package" >&2
        (
            cd "$package"
            # npm ci only when the lock file changed since the last install.
            if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
                npm ci --no-audit --no-fund
            fi
            npm test
        )
    done
else
    echo "skipped: the TypeScript SDK's tests (node or npm is not installed)" >&2
fi
