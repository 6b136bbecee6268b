"""The generated baton.plugin.v1 stubs (see ../generate.py).

protoc's Python output imports its siblings as `baton.plugin.v1.*`, after the proto
package, so the generated tree's root has to be on sys.path for them to load.
"""

import sys
from pathlib import Path

_GEN = Path(__file__).resolve().parent / "_gen"

if not (_GEN / "baton" / "plugin" / "v1" / "plugin_pb2_grpc.py").is_file():
    raise ImportError(
        f"the baton gRPC stubs are not generated in {_GEN}: "
        "run plugin-sdk/python/setup-python.sh (or generate.py with grpcio-tools installed)"
    )
if str(_GEN) not in sys.path:
    sys.path.insert(0, str(_GEN))

from baton.plugin.v1 import plugin_pb2 as pb  # noqa: E402
from baton.plugin.v1 import plugin_pb2_grpc as pb_grpc  # noqa: E402

__all__ = ["pb", "pb_grpc"]
