"""A blob store whose `Restore` checks nothing, as a plugin written without an SDK and
against the letter of the wire contract might: chunks in any order, of any schema, with
no last chunk, a wrong checksum or a wrong length all make a state. `baton check` must
fail it, naming each bad stream it accepted."""

import threading

import grpc

import baton_plugin
import baton_plugin.server as server
from baton_plugin import Description, Plugin, PluginError
from baton_plugin.state import Marks


class Lax:
    """Takes whatever comes: the data of every chunk, in the order it comes."""

    def __init__(self, limit):
        self._schema = 0
        self._data = bytearray()

    def push(self, chunk):
        self._schema = self._schema or chunk.schema_version
        self._data += chunk.data

    def finish_marked(self):
        return self._schema, bytes(self._data), Marks()


class Blob(Plugin):
    def __init__(self):
        self._lock = threading.Lock()
        self._blob = b""

    def describe(self):
        return Description(
            "lax-restore",
            "1.0.0",
            state_schema_version=1,
            methods=[("set", "keeps the payload"), ("get", "what was kept")],
        )

    def invoke(self, method, payload):
        with self._lock:
            if method == "set":
                self._blob = payload
                return b""
            if method == "get":
                return self._blob
        raise PluginError(grpc.StatusCode.UNIMPLEMENTED, f"lax-restore has no method {method!r}")

    def snapshot(self):
        with self._lock:
            return self._blob

    def restore(self, schema_version, state):
        with self._lock:
            self._blob = state


if __name__ == "__main__":
    server.Reassembly = Lax
    baton_plugin.serve(Blob())
