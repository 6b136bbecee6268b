"""The generated baton.plugin.v1 and baton.host.v1 (host.proto) stubs (see ../generate.py).

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
        f"the baton gRPC stubs are not generated in {_GEN}: "
        "run plugin-sdk/python/setup-python.sh (or generate.py with grpcio-tools installed)"
    )
if str(_GEN) not in sys.path:
    sys.path.insert(0, str(_GEN))

from baton.host.v1 import host_pb2 as host_pb  # noqa: E402
from baton.host.v1 import host_pb2_grpc as host_pb_grpc  # noqa: E402
from baton.plugin.v1 import plugin_pb2 as pb  # noqa: E402
from baton.plugin.v1 import plugin_pb2_grpc as pb_grpc  # noqa: E402

__all__ = ["host_pb", "host_pb_grpc", "pb", "pb_grpc"]
