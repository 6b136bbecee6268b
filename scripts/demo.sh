#!/usr/bin/env bash
# Builds baton and the example plugins, runs the host with baton.toml, calls the plugins,
# then replaces the counter's binary and saves the Python counter's script while the host
# runs: each is handed over to a new process with its counts kept. Ctrl-C stops the host.
set -euo pipefail
cd "$(dirname "$0")/.."
bash plugin-sdk/python/setup-python.sh
cargo build --workspace --locked
# No `rm -f baton.sock`: that would orphan a host already running here. The host itself
# replaces a stale socket and refuses one a live host still answers on.
./target/debug/baton run --config baton.toml &
host=$!
trap 'kill -TERM $host 2>/dev/null; wait $host 2>/dev/null' EXIT INT TERM
B=./target/debug/baton
ctl() { echo "\$ baton ctl $*" >&2; $B ctl --socket baton.sock "$@"; echo; }
say() { printf '\n>>> %s\n' "$*" >&2; }
# Columns of `baton ctl status PLUGIN`: PLUGIN STATE GEN PID ...
generation() { $B ctl --socket baton.sock status "$1" | awk 'NR == 2 {print $3}'; }
wait_generation() { # plugin, generation: wait up to 10 s
    for _ in $(seq 200); do [ "$(generation "$1")" = "$2" ] && return 0; sleep 0.05; done
    echo "demo: $1 did not reach generation $2" >&2; return 1
}
for _ in $(seq 200); do
    kill -0 $host 2>/dev/null || { echo "demo: the host did not start (see its error above)" >&2; exit 1; }
    $B ctl --socket baton.sock list >/dev/null 2>&1 && break; sleep 0.05
done
for p in counter echo pycounter; do
    for _ in $(seq 200); do [ "$($B ctl --socket baton.sock status $p 2>/dev/null | awk 'NR == 2 {print $2}')" = serving ] && break; sleep 0.05; done
done
ctl list
ctl invoke counter incr demo
ctl invoke counter incr demo
ctl invoke pycounter incr demo
ctl invoke echo echo "hello through baton"

say "deploying a new counter binary (write beside it, rename over it): live reload"
before=$(generation counter)
cp target/debug/counter target/debug/counter.new && mv target/debug/counter.new target/debug/counter
wait_generation counter $((before + 1))
ctl invoke counter get demo

say "saving the Python counter's script (as an editor does): live reload"
before=$(generation pycounter)
touch example-plugins/python-counter/counter.py
wait_generation pycounter $((before + 1))
ctl invoke pycounter get demo

say "killing the counter process: the host restarts it"
kill -KILL "$($B ctl --socket baton.sock status counter | awk 'NR == 2 {print $4}')"
ctl invoke counter incr after-crash
ctl list
cat >&2 <<'MSG'
>>> The host keeps running. In another terminal, try:
      ./target/debug/baton ctl --socket baton.sock events           # live lifecycle events
      cargo build -p counter-plugin                                  # rebuild: watch it reload
      ./target/debug/baton ctl --socket baton.sock invoke counter get demo
    Press Ctrl-C to stop the host.
MSG
wait $host
