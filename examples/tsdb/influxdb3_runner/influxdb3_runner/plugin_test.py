"""`python -m influxdb3_runner --test`: InfluxDB 3's plugin test. Reads one request
(JSON) on stdin, runs the plugin's entry point once on it, and prints InfluxDB's answer
(JSON) on stdout: the log lines, the writes the plugin made (returned, never applied)
and the errors. The test's cache comes in and goes out pickled, so that tsdb can keep it
under the request's `cache_name`."""

import binascii
import contextlib
import json
import sys
import traceback
from pathlib import Path
from typing import Any, Dict, List

from . import cache_state
from .cache import CacheStore, PluginCache
from .errors import describe
from .loader import LoadError, load
from .local import InfluxDB3Local, QueryError
from .service import call_time


class TestLocal(InfluxDB3Local):
    """`influxdb3_local` for a test: log lines and writes are collected, not sent."""

    def __init__(self, database: str, trigger: str, cache: PluginCache, answer: Dict[str, Any]):
        super().__init__(None, None, database, trigger, cache)
        self._answer = answer

    def _log(self, level: str, args) -> None:
        self._answer["log_lines"].append(f"{level.upper()}: {' '.join(str(a) for a in args)}")

    def _write(self, database: str, text: str) -> None:
        self._answer["database_writes"].setdefault(database, []).extend(text.split("\n"))

    def query(self, query, args=None, database=None) -> List[Dict[str, Any]]:
        raise QueryError("query: not available in a plugin test on tsdb (run the plugin as a trigger to query)")


def run(request: Dict[str, Any]) -> Dict[str, Any]:
    """The answer to one test request (see the module's documentation)."""
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
    local = TestLocal(request["database"], request["trigger"], PluginCache(store, request["trigger"]), answer)
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


def main() -> int:
    try:
        request = json.load(sys.stdin)
    except ValueError as e:
        print(f"error: the test request is not JSON: {e}", file=sys.stderr)
        return 2
    # stdout carries the answer alone: whatever the plugin prints goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        answer = run(request)
    json.dump(answer, sys.stdout)
    return 0
