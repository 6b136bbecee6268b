"""The Python counter sending its snapshot without `total_bytes`, as a plugin written
against the first version of the contract would. Still correct (0 means unknown), so
`baton check` passes it, and says that receivers cannot allocate once."""

import os
import runpy

import baton_plugin.server as server

announcing = server.chunks


def unannounced(schema_version, state):
    for chunk in announcing(schema_version, state):
        chunk.total_bytes = 0
        yield chunk


server.chunks = unannounced
here = os.path.dirname(os.path.abspath(__file__))
runpy.run_path(os.path.join(here, "..", "..", "example-plugins", "python-counter", "counter.py"), run_name="__main__")
