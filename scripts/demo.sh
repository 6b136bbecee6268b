#!/usr/bin/env bash
# Builds baton and the example plugins it runs (nothing else), runs the host with
# baton.toml and calls the plugins. While the host runs, it replaces the counter's binary
# and saves the Python counter's script: each is handed over to a new process with its
# counts kept. Then it kills both: the counter (no checkpoints) comes back empty, the
# Python counter (a checkpoint every 500 ms) with its counts.
#
# On a terminal, the host then keeps running until Ctrl-C. With stdin or stdout not a
# terminal (CI, a pipe, `</dev/null`), the demo stops the host and exits by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
interactive=false
[ -t 0 ] && [ -t 1 ] && interactive=true
if $interactive; then
    echo ">>> demo: builds, shows a live reload and two crashes, then keeps the host running until Ctrl-C" >&2
else
    echo ">>> demo: builds, shows a live reload and two crashes, then stops (not on a terminal)" >&2
fi
bash plugin-sdk/python/setup-python.sh
# Exactly as scripts/test.sh builds these three first, so that neither redoes the other.
cargo build --locked --bins -p baton-host -p counter-plugin -p echo-plugin
# No `rm -f baton.sock`: that would orphan a host already running here. The host itself
# replaces a stale socket and refuses one a live host still answers on.
./target/debug/baton run --config baton.toml &
host=$!
stop_host() { kill -TERM $host 2>/dev/null || true; wait $host 2>/dev/null || true; }
trap stop_host EXIT
trap 'exit 130' INT TERM
B=./target/debug/baton
ctl() { echo "\$ baton ctl $*" >&2; $B ctl --socket baton.sock "$@"; echo; }
say() { printf '\n>>> %s\n' "$*" >&2; }
# Columns of `baton ctl status PLUGIN`: PLUGIN STATE GEN PID ...
generation() { $B ctl --socket baton.sock status "$1" | awk 'NR == 2 {print $3}'; }
pid() { $B ctl --socket baton.sock status "$1" | awk 'NR == 2 {print $4}'; }
wait_generation() { # plugin, generation: wait up to 10 s
    for _ in $(seq 200); do [ "$(generation "$1")" = "$2" ] && return 0; sleep 0.05; done
    echo "demo: $1 did not reach generation $2" >&2; return 1
}
# SIGKILLs plugin $1 and waits for the host to have restarted it. A call sent while the
# process is being torn down may have been read by it before it died, so the host fails
# that call rather than run it twice: the demo asks only once the restart is done.
crash() {
    local before
    before=$(generation "$1")
    kill -KILL "$(pid "$1")"
    wait_generation "$1" $((before + 1))
}
# Waits (up to 10 s) for a checkpoint of $1 that began after this call, and so holds
# every answer given before it: `ctl events --json` lines, each stamped (unix_ms) with
# the moment the event began.
wait_checkpoint() {
    local since line watcher found=false
    since=$(date +%s%3N)
    while read -r line; do
        [[ $line == *'"kind":"checkpoint"'* ]] || continue
        if [[ $line =~ \"unix_ms\":([0-9]+) ]] && ((BASH_REMATCH[1] >= since)); then
            found=true; break
        fi
    done < <(exec timeout 10 $B ctl --socket baton.sock events --json --last 0 "$1")
    watcher=$!
    kill "$watcher" 2>/dev/null || true
    $found || { echo "demo: no checkpoint of $1 within 10 s" >&2; return 1; }
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
ctl invoke pycounter incr demo

say "killing the counter process: the host restarts it, but the counter takes no checkpoints, so its counts are lost"
crash counter
ctl invoke counter get demo

say "killing the Python counter after its next checkpoint: restarted and restored from it, counts kept"
wait_checkpoint pycounter
crash pycounter
ctl invoke pycounter get demo
ctl list

if ! $interactive; then
    say "not on a terminal: stopping the host"
    exit 0
fi
cat >&2 <<'MSG'
>>> The host keeps running. In another terminal, try:
      ./target/debug/baton ctl --socket baton.sock events           # live lifecycle events
      cargo build -p counter-plugin                                  # rebuild: watch it reload
      ./target/debug/baton ctl --socket baton.sock invoke counter get demo
    Press Ctrl-C to stop the host.
MSG
wait $host
