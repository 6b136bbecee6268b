"""The threshold alerter in Python, a tsdb plugin (on write): the same behaviour and the
same state format as the Rust one (plugins/alerter.rs), so a reload may swap one for the
other with the alerts kept. State: JSON {"alerts": N, "last": {SERIES: VALUE}, "points":
N, "positions": {TRIGGER: SEQ}}; a batch at or below its trigger's position (sent again
after a crash) is ignored.

Trigger args: field (default "value"), threshold (default 90), fail ("always": every
call fails, to see a trigger's error policy at work).
"""

import json
import threading

import grpc
import tsdb_plugin
from tsdb_plugin import pb, rpc

import baton_plugin


class Alerter(baton_plugin.Plugin, rpc.TriggerServicer):
    def __init__(self):
        self._lock = threading.Lock()
        self._alerts = 0
        self._last = {}
        self._points = 0
        self._positions = {}

    def describe(self):
        return baton_plugin.Description("tsdb-alerter", "1-python", state_schema_version=1)

    def invoke(self, method, payload):
        if method == "alerts":
            with self._lock:
                return str(self._alerts).encode()
        raise baton_plugin.PluginError(
            grpc.StatusCode.UNIMPLEMENTED, f"the alerter has no method {method!r} (it has: alerts)"
        )

    def snapshot(self):
        with self._lock:
            state = {
                "alerts": self._alerts,
                "last": self._last,
                "points": self._points,
                "positions": self._positions,
            }
            return json.dumps(state, sort_keys=True).encode()

    def restore(self, schema_version, state):
        data = json.loads(state)
        with self._lock:
            self._alerts = int(data["alerts"])
            self._last = {k: float(v) for k, v in data["last"].items()}
            self._points = int(data.get("points", 0))
            self._positions = {k: int(v) for k, v in data.get("positions", {}).items()}

    def OnWrite(self, request, context):
        args = request.args
        if args.get("fail") == "always":
            context.abort(grpc.StatusCode.INTERNAL, 'the alerter was told to fail (fail = "always")')
        field = args.get("field", "value")
        threshold = float(args.get("threshold", "90"))
        lines = []
        with self._lock:
            position = self._positions.get(request.trigger, 0)
            if request.sequence and request.sequence <= position:
                return pb.TriggerResult(message=f"{self._alerts} alert(s) so far, {self._points} points")
            if position and request.previous != position:
                # Batches were lost (a crash since the last checkpoint): say so, so that
                # the database sends them again.
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"batch {request.sequence} follows batch {request.previous}, "
                    f"but this state stands at batch {position}",
                )
            self._positions[request.trigger] = request.sequence
            for table in request.tables:
                for point in table.points:
                    if field not in point.fields:
                        continue
                    value = tsdb_plugin.number(point.fields[field])
                    if value is None:
                        continue
                    self._points += 1
                    series = table.table + "".join(f",{k}={v}" for k, v in sorted(point.tags.items()))
                    before = self._last.get(series)
                    self._last[series] = value
                    if value > threshold and (before is None or before <= threshold):
                        self._alerts += 1
                        lines.append(
                            f"alerts,table={tsdb_plugin.escape(table.table)},"
                            f"series={tsdb_plugin.escape(series)} "
                            f"value={value},threshold={threshold} {point.time_ns}"
                        )
            alerts, points = self._alerts, self._points
        if lines:
            tsdb_plugin.database().Write(
                pb.WriteRequest(database=request.database, line_protocol="\n".join(lines))
            )
            tsdb_plugin.host().log("warn", f"{len(lines)} alert(s) raised", trigger=request.trigger)
        return pb.TriggerResult(message=f"{alerts} alert(s) so far, {points} points")

    def Position(self, request, context):
        with self._lock:
            return pb.PositionResponse(sequence=self._positions.get(request.trigger, 0))


if __name__ == "__main__":
    alerter = Alerter()
    baton_plugin.serve(alerter, services=[(rpc.add_TriggerServicer_to_server, alerter)])
