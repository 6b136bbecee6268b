"""The trigger example plugin in Python: serves the application's mydb.trigger.v1.Trigger
beside baton's Plugin service, with the same state format as the Rust one in
example-plugins/trigger (the points seen so far, 8 bytes little-endian), so a handover
between the two keeps the count. Generate the stubs first, and put them on PYTHONPATH:

    python -m grpc_tools.protoc -I example-plugins/trigger/proto --python_out=STUBS \
        --grpc_python_out=STUBS example-plugins/trigger/proto/mydb/trigger/v1/trigger.proto
"""

import queue
import struct
import threading

import baton_plugin
import grpc
from mydb.trigger.v1 import trigger_pb2 as pb
from mydb.trigger.v1 import trigger_pb2_grpc as rpc


class Trigger(baton_plugin.Plugin, rpc.TriggerServicer):
    def __init__(self):
        self._lock = threading.Lock()
        self._total = 0
        self._subscribers = []

    def describe(self):
        return baton_plugin.Description("trigger", "test-python", state_schema_version=1)

    def invoke(self, method, payload):
        if method == "total":
            with self._lock:
                return str(self._total).encode()
        raise baton_plugin.PluginError(grpc.StatusCode.UNIMPLEMENTED, f"no method {method!r}")

    def snapshot(self):
        with self._lock:
            return struct.pack("<Q", self._total)

    def restore(self, schema_version, state):
        (total,) = struct.unpack("<Q", state)
        with self._lock:
            self._total = total

    def OnWrite(self, request, context):
        with self._lock:
            for point in request.points:
                self._total += 1
                numbered = pb.Point(series=point.series, value=point.value, sequence=self._total)
                for q in self._subscribers:
                    q.put(numbered)
            return pb.TriggerResult(total=self._total)

    def WriteStream(self, request_iterator, context):
        with self._lock:
            result = pb.TriggerResult(total=self._total)
        for batch in request_iterator:
            result = self.OnWrite(batch, context)
        return result

    def WriteEach(self, request_iterator, context):
        for batch in request_iterator:
            yield self.OnWrite(batch, context)

    def Subscribe(self, request, context):
        q = queue.Queue()
        with self._lock:
            self._subscribers.append(q)
        try:
            while context.is_active():
                try:
                    point = q.get(timeout=0.1)
                except queue.Empty:
                    continue
                if point.series.startswith(request.prefix):
                    yield point
        finally:
            with self._lock:
                self._subscribers.remove(q)


if __name__ == "__main__":
    trigger = Trigger()
    baton_plugin.serve(trigger, services=[(rpc.add_TriggerServicer_to_server, trigger)])
