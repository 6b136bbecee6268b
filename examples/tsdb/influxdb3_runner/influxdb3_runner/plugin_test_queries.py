"""A plugin test's queries: `influxdb3_local.query` asks tsdb on the runner's own
stdout (one `{"query": {sql, database, args}}` line) and reads the answer on its stdin
(one `{"rows": {names, rows}}` or `{"error": MESSAGE}` line), so that a test reads the
real database as a trigger does.

Values keep their Python type through JSON: ints (i64, u64, times in nanoseconds) are
JSON integers, finite floats JSON numbers with a `.` or an exponent, NaN and the
infinities `{"float": "nan" | "inf" | "-inf"}`; str, bool and None are JSON's own."""

import json
import math
from typing import Any, BinaryIO, Dict, List

from .local import QueryError

#: The largest query line tsdb reads (the SQL and its arguments), and the largest
#: answer it sends; as tsdb's `plugin_test_query`.
MAX_QUERY_LINE = 1 << 20
MAX_ROWS_LINE = 8 << 20


def encode(value: Any) -> Any:
    """An argument (checked by `local.named_args`) as it goes on the line."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    return value


def decode(value: Any) -> Any:
    """A result value as the plugin gets it."""
    if isinstance(value, dict):
        return float(value["float"])
    return value


class Channel:
    """tsdb at the other end of two byte streams (the runner's stdout and stdin)."""

    def __init__(self, to_tsdb: BinaryIO, from_tsdb: BinaryIO):
        self._out = to_tsdb
        self._in = from_tsdb

    def read_request(self) -> bytes:
        """The test's request: tsdb's first line."""
        return self._in.readline()

    def say(self, message: Dict[str, Any]) -> None:
        """One line to tsdb (the test's answer, last)."""
        self._out.write(json.dumps(message, allow_nan=False, separators=(",", ":")).encode() + b"\n")
        self._out.flush()

    def query(self, database: str, sql: str, named: Dict[str, Any]) -> List[Dict[str, Any]]:
        """The rows of `sql` in `database`, or QueryError with tsdb's message."""
        line = json.dumps(
            {"query": {"sql": sql, "database": database, "args": {k: encode(v) for k, v in named.items()}}},
            allow_nan=False,
            separators=(",", ":"),
        ).encode()
        if len(line) > MAX_QUERY_LINE:
            raise QueryError(f"query: the SQL and its arguments are larger than {MAX_QUERY_LINE} bytes")
        self._out.write(line + b"\n")
        self._out.flush()
        reply = self._in.readline(MAX_ROWS_LINE + 64)
        if not reply.endswith(b"\n"):
            raise QueryError("query: tsdb gave no answer (the test is ending)")
        try:
            answer = json.loads(reply)
        except ValueError as e:
            raise QueryError(f"query: tsdb's answer is not JSON: {e}") from None
        if "error" in answer:
            raise QueryError(answer["error"])
        names = answer["rows"]["names"]
        return [{name: decode(v) for name, v in zip(names, row)} for row in answer["rows"]["rows"]]
