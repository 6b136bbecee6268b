#!/usr/bin/env bash
# Builds baton and the example plugins, runs the host with baton.toml, and calls the
# plugins through `baton ctl` while it runs. Ctrl-C stops the host (plugins stop with it).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --locked
rm -f baton.sock
./target/debug/baton run --config baton.toml &
host=$!
trap 'kill -TERM $host 2>/dev/null; wait $host 2>/dev/null' EXIT INT TERM
ctl() { echo "\$ baton ctl $*" >&2; ./target/debug/baton ctl --socket baton.sock "$@"; echo; }
for _ in $(seq 100); do [ -S baton.sock ] && break; sleep 0.05; done
ctl list
ctl invoke counter incr demo
ctl invoke counter incr demo
ctl invoke echo echo "hello through baton"
echo ">>> killing the counter process; the host restarts it" >&2
pkill -KILL -f "target/debug/counter" || true
ctl invoke counter get demo
ctl list
cat >&2 <<'MSG'
>>> The host keeps running. In another terminal, try:
      ./target/debug/baton ctl --socket baton.sock invoke counter incr mykey
      ./target/debug/baton ctl --socket baton.sock events
    Press Ctrl-C to stop the host.
MSG
wait $host
