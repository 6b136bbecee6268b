"""The downsampler, a tsdb plugin (on schedule): each time it runs, it writes the mean
of a field per whole minute of a source table into a target table, for the minutes
that have ended since it last ran. Where it got to is kept in the host's key-value store
(the plugins' cache), so it survives reloads and crashes without a state of its own.

Trigger args: source (default "cpu"), target (default SOURCE_1m), field (default
"value"), bucket_seconds (default 60: the minute), grace_ms (default 1000: a bucket is
taken once it ended this long ago, so that writes stamped just before its end are in).
"""

import re

import grpc
import tsdb_plugin
from tsdb_plugin import pb, rpc

import baton_plugin

SECOND_NS = 1_000_000_000
NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


class Downsampler(baton_plugin.Plugin, rpc.TriggerServicer):
    def describe(self):
        return baton_plugin.Description("tsdb-downsampler", "1")

    def invoke(self, method, payload):
        raise baton_plugin.PluginError(
            grpc.StatusCode.UNIMPLEMENTED, f"the downsampler has no method {method!r}"
        )

    def OnSchedule(self, request, context):
        source = request.args.get("source", "cpu")
        target = request.args.get("target", source + "_1m")
        field = request.args.get("field", "value")
        for name in (source, target, field):
            if not NAME.match(name):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name!r} is not a table or field name")
        bucket = int(request.args.get("bucket_seconds", "60")) * SECOND_NS
        grace = int(request.args.get("grace_ms", "1000")) * 1_000_000
        host = tsdb_plugin.host()
        key = f"downsampled:{request.database}:{source}:{target}"
        done = int(host.kv_get(key) or b"0")
        # Only buckets that have ended: a later point cannot change their mean.
        until = ((request.call_time_ns - grace) // bucket) * bucket
        rows = tsdb_plugin.database().Query(
            pb.QueryRequest(
                database=request.database,
                sql=(
                    f"SELECT DATE_BIN(INTERVAL '{bucket} nanoseconds', time, TIMESTAMP '1970-01-01T00:00:00Z') AS minute, "
                    f"AVG({field}) AS mean, COUNT(*) AS points FROM {source} "
                    f"WHERE time >= to_timestamp_nanos($1) AND time < to_timestamp_nanos($2) "
                    f"GROUP BY minute ORDER BY minute"
                ),
                params=[pb.Value(integer=done), pb.Value(integer=until)],
            )
        )
        lines = []
        for row in rows:
            values = dict(zip(row.names, row.values))
            minute = values["minute"].integer
            mean = tsdb_plugin.number(values["mean"])
            if mean is None:
                continue
            lines.append(f"{target},source={source} {field}={mean},points={values['points'].integer}i {minute}")
        if lines:
            tsdb_plugin.database().Write(
                pb.WriteRequest(database=request.database, line_protocol="\n".join(lines))
            )
        if until > done:
            host.kv_put(key, str(until).encode())
        return pb.TriggerResult(message=f"{len(lines)} minute(s) of {source} written to {target}")


if __name__ == "__main__":
    downsampler = Downsampler()
    baton_plugin.serve(downsampler, services=[(rpc.add_TriggerServicer_to_server, downsampler)])
