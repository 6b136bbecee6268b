"""Write a baton plugin in Python: subclass Plugin and call serve().

The SDK does the launch handshake, serves gRPC health, refuses calls without the
launch token, chunks and verifies state for Snapshot/Restore, and exits cleanly on
Shutdown, SIGTERM or SIGINT. Logs go to stderr through `logging`, which the host
captures; stdout carries the handshake line only (serve() points print() and file
descriptor 1 at stderr; call redirect_stdout() first if your code prints before it).

    import grpc
    import baton_plugin
    from baton_plugin import Description, Plugin, PluginError

    class Hello(Plugin):
        def describe(self):
            return Description("hello", "0.1.0", methods=[("hi", "says hello")])

        def invoke(self, method, payload):
            if method == "hi":
                return b"hello"
            raise PluginError(grpc.StatusCode.UNIMPLEMENTED, f"no method {method!r}")

    if __name__ == "__main__":
        baton_plugin.serve(Hello())

Incremental snapshots (docs/incremental-state.md) let the host copy a plugin's state
while it keeps serving: declare Description(..., incremental=True) and implement
snapshot_since and restore_delta, or keep the state in a StateMap, which tracks what
changed since each snapshot and does both.

host_client() calls back into the host: its log, a key-value store that outlives the
plugin's processes, and its event stream (see baton_plugin.host).
"""

from .host import HostClient, HostClientError, host_client
from .image import StateImage
from .server import (
    PROTOCOL_VERSION,
    Description,
    Launch,
    LaunchError,
    Plugin,
    PluginError,
    run,
    serve,
)
from .state_map import StateMap
from .stdout import redirect_stdout

__all__ = [
    "PROTOCOL_VERSION",
    "Description",
    "HostClient",
    "HostClientError",
    "Launch",
    "LaunchError",
    "Plugin",
    "PluginError",
    "StateImage",
    "StateMap",
    "host_client",
    "redirect_stdout",
    "run",
    "serve",
]
