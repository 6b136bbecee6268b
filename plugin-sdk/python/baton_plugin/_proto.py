"""The generated baton.plugin.v1 and baton.host.v1 (host.proto) stubs (see ../generate.py,
run by setup-python.sh in a checkout and by setup.py when the package is built).

protoc's Python output imports its siblings as `baton.plugin.v1.*`, after the proto
package, so the generated tree's root has to be on sys.path for them to load.
"""

import sys
from pathlib import Path

_GEN = Path(__file__).resolve().parent / "_gen"

if not all(
    (_GEN / "baton" / package / "v1" / f"{name}_pb2_grpc.py").is_file()
    for package, name in (("plugin", "plugin"), ("host", "host"))
):
    raise ImportError(
        f"the baton gRPC stubs are not in {_GEN}: in a baton checkout, run "
        "plugin-sdk/python/setup-python.sh (or generate.py with grpcio-tools installed); "
        "an installed package makes them when it is built, so reinstall it with pip"
    )
if str(_GEN) not in sys.path:
    sys.path.insert(0, str(_GEN))

from baton.host.v1 import host_pb2 as host_pb  # noqa: E402
from baton.host.v1 import host_pb2_grpc as host_pb_grpc  # noqa: E402
from baton.plugin.v1 import plugin_pb2 as pb  # noqa: E402
from baton.plugin.v1 import plugin_pb2_grpc as pb_grpc  # noqa: E402

__all__ = ["host_pb", "host_pb_grpc", "pb", "pb_grpc"]
