#!/usr/bin/env bash
# Makes the repository's Python environment: a virtualenv at <repo>/.venv with the
# pinned gRPC packages and the client libraries the tsdb tests use, the baton_plugin SDK
# on its path, and the SDK's stubs generated from proto/. Safe to run again: pip only
# runs when the venv is missing or broken or a requirements file changed, and the stubs
# are only regenerated when the proto changed.
#
#   bash plugin-sdk/python/setup-python.sh      # PYTHON=python3.12 to pick the interpreter
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"
requirements="$here/requirements.txt"
# What the tsdb end-to-end tests drive tsdb with (InfluxData's client libraries): not
# the SDK's, but the same venv runs them.
test_requirements="$root/examples/tsdb/tests/requirements.txt"
stamp="$venv/.baton-requirements.sha256"
runner="$root/examples/tsdb/influxdb3_runner"

fail() {
    echo "setup-python.sh: error: $*" >&2
    exit 1
}

venv_works() {
    [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c '' 2>/dev/null
}

want="$(cat "$requirements" "$test_requirements" | sha256sum | cut -d' ' -f1)"
if ! venv_works || [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    command -v "$python" >/dev/null ||
        fail "$python not found; install Python 3.9 or newer (with its venv module) or set PYTHON"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
        fail "$python is $("$python" --version 2>&1); baton's Python SDK needs 3.9 or newer"
    if ! venv_works; then
        echo "setup-python.sh: creating $venv" >&2
        # --clear: a venv whose interpreter is gone (for example after a Python
        # upgrade) cannot be repaired in place.
        "$python" -m venv --clear "$venv" ||
            fail "cannot create the virtualenv $venv (on Debian: apt-get install python3-venv)"
    fi
    echo "setup-python.sh: installing $requirements" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" ||
        fail "pip could not install $requirements into $venv"
    echo "setup-python.sh: installing $test_requirements" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$test_requirements" ||
        fail "pip could not install $test_requirements into $venv"
    # The SDK is used from the work tree, as an editable install would, but without
    # needing a build backend: a .pth file puts plugin-sdk/python on the venv's path.
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" ||
        fail "cannot find the site-packages of $venv"
    echo "$here" >"$site/baton_plugin_sdk.pth"
    echo "$want" >"$stamp"
fi

"$venv/bin/python" "$here/generate.py" || fail "generating the gRPC stubs failed"
# tsdb's runner of InfluxDB 3 plugins (`python -m influxdb3_runner`), from the work
# tree in the same way; outside the install step, so a venv made before it gets it too.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" ||
    fail "cannot find the site-packages of $venv"
echo "$runner" >"$site/influxdb3_runner.pth"
"$venv/bin/python" "$runner/generate.py" || fail "generating tsdb's stubs for influxdb3_runner failed"
"$venv/bin/python" -c 'import baton_plugin' ||
    fail "the SDK does not import in $venv; remove $venv and run this script again"
