"""tsdb's trigger calls (`tsdb.engine.v1.Trigger`) turned into an InfluxDB 3 plugin's
entry points, with InfluxDB's arguments, and their outcomes turned back."""

import datetime
import json
import os
import sys
import threading
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple

import grpc

from . import rows as pickled_rows
from ._proto import pb, rpc
from .cache import CacheStore, PluginCache
from .local import InfluxDB3Local
from .responses import error_response, http_response
from .shared_cache import SharedCache


def _python(value: "pb.Value") -> Any:
    kind = value.WhichOneof("kind")
    return None if kind is None else getattr(value, kind)


def table_batches(request: "pb.WriteBatch") -> List[Dict[str, Any]]:
    """InfluxDB's `table_batches`: per table, a dict per row holding only the columns
    its line carried, the time in nanoseconds."""
    out = []
    for table in request.tables:
        rows = []
        for point in table.points:
            row: Dict[str, Any] = dict(point.tags)
            for name, value in point.fields.items():
                row[name] = _python(value)
            row["time"] = point.time_ns
            rows.append(row)
        out.append({"table_name": table.table, "rows": rows})
    return out


def write_batches(request: "pb.WriteBatch") -> Tuple[List[Dict[str, Any]], str]:
    """`table_batches` of an OnWrite, and the form they came in: unpickled (data only,
    in C) when tsdb sent the rows as a pickle, which it does once this process has said
    it reads them so; parsed by `json` when it sent JSON (a tsdb before pickle); else
    built from the messages. Each read of a bytes field copies it: each is read once."""
    pickled = request.table_batches_pickle
    if pickled:
        return pickled_rows.loads(pickled), " (pickle)"
    text = request.table_batches_json
    if text:
        return json.loads(text), " (JSON)"
    return table_batches(request), ""


def call_time(call_time_ns: int) -> datetime.datetime:
    """InfluxDB's `call_time`: a naive UTC datetime of whole seconds."""
    seconds = call_time_ns // 1_000_000_000
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).replace(tzinfo=None)


def _args(request) -> Optional[Dict[str, str]]:
    return dict(request.args) or None


def _where(error: BaseException, plugin_file: str) -> str:
    """The deepest line of the plugin's own code in `error`'s traceback."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith(plugin_file)]
    if not frames:
        return ""
    last = frames[-1]
    return f" ({Path(last.filename).name}:{last.lineno})"


class TriggerService(rpc.TriggerServicer):
    """Serves every trigger of this process from one loaded plugin module."""

    def __init__(self, module: ModuleType, plugin_path: Path, host_client):
        self._module = module
        self._name = plugin_path.name
        # A package's helpers count as its own code in a traceback.
        self._code_root = str(plugin_path.resolve())
        self._host = host_client
        self._lock = threading.Lock()
        self._client = None
        self._database = None
        self._shared = None
        self.cache = CacheStore()

    def _connect(self):
        # Made on the first call, so that a plugin loads (and fails to) without a host.
        with self._lock:
            if self._client is None:
                # Calls come only after the handshake line, so stdout is free now: a
                # plugin's print() goes to stderr, the plugin's log, as a line of it.
                sys.stdout = sys.stderr
                self._client = self._host()
                self._database = rpc.DatabaseStub(self._client.channel)
                self._shared = SharedCache(rpc.SharedCacheStub(self._client.channel), self.cache, self.warn)
            return self._client, self._database

    def warn(self, message: str, _scope=None) -> None:
        """A WARN line in the trigger's log (baton's `Log`: the plugin's lines are its
        trigger's), and on stderr if the host refuses it."""
        client, _ = self._connect()
        try:
            client.log("warn", message)
        except grpc.RpcError as e:
            print(f"WARN {message} (the host's log refused it: {e})", file=sys.stderr)

    def _entry(self, name: str, context):
        fn = getattr(self._module, name, None)
        if not callable(fn):
            context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"plugin {self._name} defines no {name}, so it cannot serve this trigger",
            )
        return fn

    def _local(self, request) -> InfluxDB3Local:
        client, database = self._connect()
        cache = PluginCache(self.cache, request.trigger, self._shared)
        return InfluxDB3Local(client, database, request.database, request.trigger, cache)

    def _run(self, local: InfluxDB3Local, entry: str, fn, *args):
        """Calls the entry point, then writes what it held; a raise drops the writes
        and is logged at ERROR and raised again."""
        try:
            result = fn(local, *args)
            local.flush()
            return result
        except SystemExit as e:
            # Raised in a server thread it would end the thread, not the process, and
            # leave the call unanswered; the plugin asked to exit, so the process does,
            # and baton starts it again.
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            local.error(
                f"{entry} called sys.exit({e.code!r}){_where(e, self._code_root)}: "
                f"the plugin's process exits (code {code}) and baton starts it again"
            )
            sys.stderr.flush()
            os._exit(code)
        except Exception as e:
            local.error(f"{entry} failed: {type(e).__name__}: {e}{_where(e, self._code_root)}")
            raise

    def _fail(self, context, entry: str, error: Exception):
        context.abort(
            grpc.StatusCode.INTERNAL,
            f"{self._name}: {entry} raised {type(error).__name__}: {error}{_where(error, self._code_root)}",
        )

    def OnWrite(self, request, context):
        fn = self._entry("process_writes", context)
        local = self._local(request)
        batches, form = write_batches(request)
        # Counted first: the plugin may change the lists it is handed.
        rows = sum(len(b["rows"]) for b in batches)
        shape = f"{rows} row(s) in {len(batches)} table(s){form}"
        try:
            self._run(local, "process_writes", fn, batches, _args(request))
        except Exception as e:
            self._fail(context, "process_writes", e)
        return pb.TriggerResult(
            message=f"process_writes: {shape}", reads_table_batches_json=True, reads_table_batches_pickle=True
        )

    def OnSchedule(self, request, context):
        fn = self._entry("process_scheduled_call", context)
        local = self._local(request)
        at = call_time(request.call_time_ns)
        try:
            self._run(local, "process_scheduled_call", fn, at, _args(request))
        except Exception as e:
            self._fail(context, "process_scheduled_call", e)
        return pb.TriggerResult(message=f"process_scheduled_call at {at.isoformat()}")

    def OnRequest(self, request, context):
        fn = self._entry("process_request", context)
        local = self._local(request)
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"}
        try:
            result = self._run(
                local, "process_request", fn, dict(request.query), headers, bytes(request.body), _args(request)
            )
        except Exception as e:
            status, answer_headers, body = error_response(e)
        else:
            try:
                status, answer_headers, body = http_response(result)
            except Exception as e:
                local.error(f"process_request's answer: {e}")
                status, answer_headers, body = error_response(e)
        return pb.HttpResponse(status=status, headers=answer_headers, body=body)
