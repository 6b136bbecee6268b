"""The Python counter whose Snapshot never ends: 1 MiB chunks, in order, none of them
last, for as long as the host reads. A plugin with a runaway export; the host must cut
it off at max_state_bytes, give the memory back, and still stop promptly. When
ENDLESS_MARKER names a file, it is created as the first chunk leaves."""

import os
import runpy

import baton_plugin.server as server
from baton_plugin._proto import pb

DATA = b"\x5a" * (1 << 20)


def endless(schema_version, state):
    marker = os.environ.get("ENDLESS_MARKER")
    seq = 0
    while True:
        if seq == 1 and marker:
            open(marker, "w").close()
        yield pb.StateChunk(schema_version=schema_version, seq=seq, data=DATA, last=False)
        seq += 1


server.chunks = endless
here = os.path.dirname(os.path.abspath(__file__))
runpy.run_path(os.path.join(here, "..", "..", "example-plugins", "python-counter", "counter.py"), run_name="__main__")
