"""The Python counter whose snapshots announce one byte more than they carry: a plugin
with a bug in its own state code. The host must catch it and keep the plugin serving."""

import os
import runpy

import baton_plugin.server as server

honest = server.chunks


def lying(schema_version, state):
    for chunk in honest(schema_version, state):
        if chunk.seq == 0:
            chunk.total_bytes = len(state) + 1
        yield chunk


server.chunks = lying
here = os.path.dirname(os.path.abspath(__file__))
runpy.run_path(os.path.join(here, "..", "..", "example-plugins", "python-counter", "counter.py"), run_name="__main__")
