"""`influxdb3_local`, the object an InfluxDB 3 plugin's entry points are handed: logging
into the trigger's log, writes held until the call returns or made at once, SQL queries
with `$name` arguments, and the cache. One is made for each call.

Every method is InfluxDB 3's, with its arguments and answers; each reaches tsdb through
its `tsdb.engine.v1.Database` service on baton's host-services socket.
"""

import sys
from typing import Any, Dict, List, Mapping, Optional

import grpc

from ._proto import pb
from .cache import PluginCache

#: How long a query or a write may take before it raises, in seconds.
CALL_TIMEOUT_SECONDS = 60.0


class QueryError(Exception):
    """A query that tsdb refused or could not run; the message is tsdb's."""


class WriteError(Exception):
    """A write that tsdb refused; the message names the line and column."""


def _line_of(line_builder) -> str:
    build = getattr(line_builder, "build", None)
    if not callable(build):
        raise TypeError(f"write: {type(line_builder).__name__} has no build() (pass a LineBuilder)")
    line = build()
    if not isinstance(line, str):
        raise TypeError(f"write: build() returned a {type(line).__name__}, not a str")
    return line


def _database(name) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"database: {name!r} is not a database name")
    return name


_I64 = range(-(2**63), 2**63)


def named_args(args: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """`query`'s `args` checked: `$name` (or `name`) to a str, int, float, bool or None,
    the names without their `$`. Raises TypeError (or ValueError for an int past 64
    bits) naming the argument."""
    named: Dict[str, Any] = {}
    if args is None:
        return named
    if not isinstance(args, Mapping):
        raise TypeError(f"query args: {type(args).__name__} is not a dict of $name to value")
    for name, value in args.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"query args: {name!r} is not a parameter name")
        name = name[1:] if name.startswith("$") else name
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise TypeError(f"query args: ${name} is a {type(value).__name__}; give a str, int, float or bool")
        if isinstance(value, int) and not isinstance(value, bool) and value not in _I64:
            raise ValueError(f"query args: ${name} = {value} does not fit in a 64-bit integer")
        named[name] = value
    return named


def _value(value: Any) -> "pb.Value":
    if value is None:
        return pb.Value()
    if isinstance(value, bool):
        return pb.Value(boolean=value)
    if isinstance(value, int):
        return pb.Value(integer=value)
    if isinstance(value, float):
        return pb.Value(float=value)
    return pb.Value(text=value)


def _python(value: "pb.Value") -> Any:
    kind = value.WhichOneof("kind")
    return None if kind is None else getattr(value, kind)


def _status_text(e: grpc.RpcError) -> str:
    details = e.details() if hasattr(e, "details") else None
    return details or str(e)


class InfluxDB3Local:
    """See the module's documentation. `database` is the trigger's, the default of
    `write`, `write_sync` and `query`."""

    def __init__(self, host, database_stub, database: str, trigger: str, cache: PluginCache):
        self._host = host
        self._db = database_stub
        self._database = database
        self._trigger = trigger
        self._held: Dict[str, List[str]] = {}
        self.cache = cache

    # -- the trigger's log ---------------------------------------------------------

    def _log(self, level: str, args) -> None:
        text = " ".join(str(a) for a in args)
        try:
            self._host.log(level, text)
        except grpc.RpcError as e:
            # A log line must not fail the call; baton keeps the process's stderr too.
            print(f"{level.upper()} {text} (the host's log refused it: {_status_text(e)})", file=sys.stderr)

    def info(self, *args) -> None:
        """An INFO line: the arguments str()-ed, joined by a space."""
        self._log("info", args)

    def warn(self, *args) -> None:
        """A WARN line."""
        self._log("warn", args)

    def error(self, *args) -> None:
        """An ERROR line."""
        self._log("error", args)

    # -- writes ---------------------------------------------------------------------

    def write(self, line_builder) -> None:
        """Holds the line for the trigger's database until the call returns."""
        self.write_to_db(self._database, line_builder)

    def write_to_db(self, database: str, line_builder) -> None:
        """Holds the line for `database` until the call returns; dropped if it raises."""
        self._held.setdefault(_database(database), []).append(_line_of(line_builder))

    def write_sync(self, line_builder, no_sync: bool) -> None:
        """Writes the line into the trigger's database now; raises WriteError if refused."""
        self.write_sync_to_db(self._database, line_builder, no_sync)

    def write_sync_to_db(self, database: str, line_builder, no_sync: bool) -> None:
        """Writes the line into `database` now. Every write is durable in the log
        before tsdb answers, so `no_sync` changes nothing here."""
        self._write(_database(database), _line_of(line_builder))

    def _write(self, database: str, text: str) -> None:
        try:
            self._db.Write(pb.WriteRequest(database=database, line_protocol=text), timeout=CALL_TIMEOUT_SECONDS)
        except grpc.RpcError as e:
            raise WriteError(f"write to {database!r}: {_status_text(e)}") from None

    def flush(self) -> int:
        """Writes what the call held, database by database; the lines written."""
        held, self._held = self._held, {}
        for database, lines in held.items():
            self._write(database, "\n".join(lines))
        return sum(len(lines) for lines in held.values())

    # -- queries --------------------------------------------------------------------

    def query(self, query: str, args: Optional[Mapping[str, Any]] = None, database: Optional[str] = None) -> List[Dict[str, Any]]:
        """The rows of `query` as dicts in column order; `args` are bound to `$name`.
        Times come as int nanoseconds, tags as str, NULL as None."""
        if not isinstance(query, str):
            raise TypeError(f"query: the SQL is a {type(query).__name__}, not a str")
        database = self._database if database is None else _database(database)
        return self._query(database, query, named_args(args))

    def _query(self, database: str, sql: str, named: Dict[str, Any]) -> List[Dict[str, Any]]:
        named_params = {name: _value(value) for name, value in named.items()}
        request = pb.QueryRequest(database=database, sql=sql, named_params=named_params)
        try:
            return [
                {name: _python(v) for name, v in zip(row.names, row.values)}
                for row in self._db.Query(request, timeout=CALL_TIMEOUT_SECONDS)
            ]
        except grpc.RpcError as e:
            raise QueryError(_status_text(e)) from None
