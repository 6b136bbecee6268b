"""A plugin for the SDK's tests of incremental snapshots: a map of bytes to bytes in a
StateMap. Its first argument picks how it behaves:

  incremental   declares incremental snapshots (the default)
  undeclared    does not declare them, though it has snapshot_since and restore_delta
  plain         does not declare them and has neither (the SDK's defaults)
  long-cursor   declares them, but its cursors are 257 bytes
  not-an-image  declares them, but its snapshot_since returns bytes
"""

import sys

import grpc

import baton_plugin
from baton_plugin import Description, Plugin, PluginError, StateImage, StateMap
from baton_plugin.state_map import encode_full

MODE = sys.argv[1] if len(sys.argv) > 1 else "incremental"
SCHEMA = 3


def check_schema(schema_version):
    if schema_version != SCHEMA:
        raise PluginError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"map reads schema {SCHEMA}, was given {schema_version}",
        )


class Plain(Plugin):
    def __init__(self):
        self.map = StateMap()

    def describe(self):
        return Description(
            "map",
            "0.1.0",
            state_schema_version=SCHEMA,
            methods=[("set", "KEY=VALUE"), ("del", "KEY"), ("dump", "the map, whole")],
            incremental=MODE not in ("undeclared", "plain"),
        )

    def invoke(self, method, payload):
        if method == "set":
            key, _, value = payload.partition(b"=")
            self.map[key] = value
        elif method == "del":
            self.map.remove(payload)
        elif method == "dump":
            return encode_full(self.map.read())
        else:
            raise PluginError(grpc.StatusCode.UNIMPLEMENTED, f"no method {method!r}")
        return b""

    def snapshot(self):
        return encode_full(self.map.read())

    def restore(self, schema_version, state):
        check_schema(schema_version)
        self.map.restore(state)


class Incremental(Plain):
    def snapshot_since(self, since):
        if MODE == "long-cursor":
            return StateImage(b"", cursor=b"c" * 257)
        if MODE == "not-an-image":
            return b"BTKV" + bytes(8)
        return self.map.snapshot_since(since)

    def restore_delta(self, schema_version, delta):
        check_schema(schema_version)
        self.map.restore_delta(delta)


if __name__ == "__main__":
    baton_plugin.serve(Plain() if MODE == "plain" else Incremental())
