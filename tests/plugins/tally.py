"""Tallies by name, with its state handed over at a reload: a plugin as its author writes
it in a project of their own, against the baton-plugin package installed with pip
(the python_package end-to-end test runs it so; nothing here reaches into a checkout)."""

import json
import threading

import grpc

import baton_plugin
from baton_plugin import Description, Plugin, PluginError

STATE_SCHEMA = 1


class Tally(Plugin):
    def __init__(self):
        self._lock = threading.Lock()
        self._counts = {}

    def describe(self):
        return Description(
            "tally",
            "1.0.0",
            state_schema_version=STATE_SCHEMA,
            methods=[
                ("incr", "adds one to the tally named by the payload; returns it"),
                ("get", "the tally named by the payload"),
                ("sdk", "where baton_plugin was imported from"),
            ],
        )

    def invoke(self, method, payload):
        if method == "sdk":
            return baton_plugin.__file__.encode()
        if method not in ("incr", "get"):
            raise PluginError(grpc.StatusCode.UNIMPLEMENTED, f"tally has no method {method!r}")
        name = payload.decode(errors="replace")
        with self._lock:
            if method == "incr":
                self._counts[name] = self._counts.get(name, 0) + 1
            return str(self._counts.get(name, 0)).encode()

    def snapshot(self):
        with self._lock:
            # Sorted keys: equal tallies give equal bytes, which `baton check` compares.
            return json.dumps(self._counts, sort_keys=True).encode()

    def restore(self, schema_version, state):
        if schema_version != STATE_SCHEMA:
            raise PluginError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"tally reads state schema {STATE_SCHEMA}, was given {schema_version}",
            )
        # Parsed in full before anything changes: a refused state leaves ours untouched.
        try:
            counts = json.loads(state)
        except ValueError as e:
            raise PluginError(grpc.StatusCode.INVALID_ARGUMENT, f"tally state: {e}") from None
        with self._lock:
            self._counts = counts


if __name__ == "__main__":
    baton_plugin.serve(Tally())
