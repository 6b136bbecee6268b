"""A stock grpcio client (generated stubs, no baton SDK) calling a plugin's application
service, mydb.trigger.v1.Trigger, through the baton daemon's control socket: the
`x-baton-plugin` metadata names the plugin. Prints what it saw as one JSON line.

usage: trigger_client.py SOCKET   (with the generated stubs on PYTHONPATH)
"""

import json
import sys

import grpc
from mydb.trigger.v1 import trigger_pb2 as pb
from mydb.trigger.v1 import trigger_pb2_grpc as rpc


def main() -> None:
    # h2 refuses grpc-python's default authority for unix: targets (the socket path,
    # percent-encoded); any plain name will do.
    channel = grpc.insecure_channel(
        f"unix:{sys.argv[1]}", options=[("grpc.default_authority", "localhost")]
    )
    stub = rpc.TriggerStub(channel)
    to_trigger = (("x-baton-plugin", "trigger"),)
    out = {}
    first = stub.OnWrite(
        pb.WriteBatch(points=[pb.Point(series="py.a", value=1.0)]),
        metadata=to_trigger,
        timeout=10,
    )
    out["total"] = first.total
    stream = stub.Subscribe(pb.Filter(prefix="py."), metadata=to_trigger, timeout=10)
    # The plugin subscribes before it answers: once its headers are here, it listens.
    stream.initial_metadata()
    stub.OnWrite(
        pb.WriteBatch(
            points=[
                pb.Point(series="py.b", value=2.0),
                pb.Point(series="other", value=3.0),
                pb.Point(series="py.c", value=4.0),
            ]
        ),
        metadata=to_trigger,
        timeout=10,
    )
    streamed = []
    for point in stream:
        streamed.append([point.series, point.sequence])
        if len(streamed) == 2:
            break
    stream.cancel()
    out["streamed"] = streamed
    # Both directions at once: each batch answered as it is taken.
    batches = iter([pb.WriteBatch(points=[pb.Point(series="py.d")])] * 2)
    answers = stub.WriteEach(batches, metadata=to_trigger, timeout=10)
    out["each"] = [answer.total for answer in answers]
    try:
        stub.OnWrite(pb.WriteBatch(), metadata=(("x-baton-plugin", "nope"),), timeout=10)
        out["unknown"] = ["OK", ""]
    except grpc.RpcError as e:
        out["unknown"] = [e.code().name, e.details()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
