"""Generates tsdb's Python stubs (tsdb.engine.v1: engine_pb2, engine_pb2_grpc) from
examples/tsdb/proto into tsdb_api/ beside this file, for the Python plugins here. Run it
once with a Python that has grpcio-tools (the repository's .venv has it), and again when
the proto changes:

    .venv/bin/python examples/tsdb/plugins/python/gen_stubs.py

A plugin of your own, outside this repository, does the same with the database's
engine.proto: `python -m grpc_tools.protoc -I PROTO_DIR --python_out=OUT
--grpc_python_out=OUT PROTO_DIR/tsdb/engine/v1/engine.proto`.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PROTO = "tsdb/engine/v1/engine.proto"
OUT = HERE / "tsdb_api"


def main() -> int:
    try:
        from grpc_tools import protoc
    except ImportError:
        print("error: grpcio-tools is not installed (pip install grpcio-tools)", file=sys.stderr)
        return 1
    import grpc_tools

    OUT.mkdir(exist_ok=True)
    include = Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={OUT}",
            f"--grpc_python_out={OUT}",
            str(PROTO_ROOT / PROTO),
        ]
    )
    if code != 0:
        print(f"error: protoc failed on {PROTO_ROOT / PROTO}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
