"""`python -m influxdb3_runner --test`: InfluxDB 3's plugin test. Reads one request
(a JSON line) on stdin, runs the plugin's entry point once on it, and says InfluxDB's
answer on stdout as `{"answer": ...}`: the log lines, the writes the plugin made
(returned, never applied) and the errors. Before that, each of the plugin's queries is
asked of tsdb on the same stdout and stdin (`plugin_test_queries`). The test's cache
comes in and goes out pickled, so that tsdb can keep it under the request's
`cache_name`."""

import binascii
import contextlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import cache_state
from .cache import CacheStore, PluginCache
from .errors import describe
from .loader import LoadError, load
from .local import InfluxDB3Local, QueryError
from .plugin_test_queries import Channel
from .service import call_time


class TestLocal(InfluxDB3Local):
    """`influxdb3_local` for a test: log lines and writes are collected, not sent;
    queries are asked of tsdb on `channel`."""

    def __init__(self, database: str, trigger: str, cache: PluginCache, answer: Dict[str, Any], channel: Optional[Channel]):
        super().__init__(None, None, database, trigger, cache)
        self._answer = answer
        self._channel = channel

    def _log(self, level: str, args) -> None:
        self._answer["log_lines"].append(f"{level.upper()}: {' '.join(str(a) for a in args)}")

    def _write(self, database: str, text: str) -> None:
        self._answer["database_writes"].setdefault(database, []).extend(text.split("\n"))

    def _query(self, database: str, sql: str, named: Dict[str, Any]) -> List[Dict[str, Any]]:
        if self._channel is None:
            raise QueryError("query: this plugin test has no database to ask")
        return self._channel.query(database, sql, named)


def run(request: Dict[str, Any], channel: Optional[Channel] = None) -> Dict[str, Any]:
    """The answer to one test request (see the module's documentation); the plugin's
    queries go to `channel`."""
    answer: Dict[str, Any] = {"log_lines": [], "database_writes": {}, "errors": []}
    store = CacheStore()
    warnings: List[str] = []

    def warn(message: str, _scope=None) -> None:
        warnings.append(f"WARN: {message}")

    if request.get("cache"):
        try:
            cache_state.load(store, cache_state.SCHEMA_VERSION, binascii.unhexlify(request["cache"]), warn)
        except cache_state.StateError as e:
            warnings.append(f"WARN: the test cache was dropped: {e}")
    path = Path(request["plugin"])
    try:
        module = load(path)
    except LoadError as e:
        answer["errors"].append(str(e))
        return answer
    except Exception as e:
        answer["errors"].append(f"plugin {path.name} failed to load: {describe(e)}")
        return answer
    entry = request["entry"]
    fn = getattr(module, entry, None)
    if not callable(fn):
        answer["errors"].append(f"plugin {path.name} defines no {entry}")
        return answer
    local = TestLocal(request["database"], request["trigger"], PluginCache(store, request["trigger"]), answer, channel)
    if entry == "process_writes":
        event: Any = request["table_batches"]
    else:
        event = call_time(request["call_time_ns"])
    try:
        fn(local, event, request.get("args"))
        local.flush()
    except Exception as e:
        traceback.print_exc()
        answer["errors"].append(f"{entry} raised {describe(e, str(path.resolve()))}")
    answer["log_lines"].extend(warnings)
    answer["cache"] = binascii.hexlify(cache_state.dump(store, warn)).decode()
    return answer


def _private_stdio() -> Channel:
    """The runner's stdin and stdout, moved to descriptors of their own: fd 1 becomes
    stderr and fd 0 /dev/null, so that nothing the plugin does (print, os.write(1, ...),
    a subprocess, reading stdin) can break into the conversation with tsdb."""
    sys.stdout.flush()
    from_tsdb = os.fdopen(os.dup(0), "rb")
    to_tsdb = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return Channel(to_tsdb, from_tsdb)


#: The version of the conversation with tsdb (src/plugin_test.rs's TEST_PROTOCOL).
PROTOCOL = 2


def main() -> int:
    channel = _private_stdio()
    try:
        request = json.loads(channel.read_request())
    except ValueError as e:
        print(f"error: the test request is not JSON: {e}", file=sys.stderr)
        return 2
    asked = request.get("protocol", 1) if isinstance(request, dict) else None
    if asked != PROTOCOL:
        # tsdb and this runner are of different versions: say which, not a parse error.
        channel.say({"answer": {"log_lines": [], "database_writes": {}, "errors": [
            f"this runner speaks plugin-test protocol {PROTOCOL}, tsdb asked for {asked}: "
            "run the runner of tsdb's version (python_path in tsdb.toml, or pip install "
            "examples/tsdb/influxdb3_runner)"
        ]}})
        return 0
    with contextlib.redirect_stdout(sys.stderr):
        answer = run(request, channel)
    channel.say({"answer": answer})
    return 0
