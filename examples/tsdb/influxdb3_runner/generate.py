"""Generates tsdb's gRPC stubs (proto/tsdb/engine/v1/engine.proto) into
influxdb3_runner/_gen/ with the Python SDK's generator, plugin-sdk/python/stubgen.py (an
sdist carries a copy beside this file). setup-python.sh runs it in a checkout; building
the package (pip install) runs the same generation through setup.py. Run by hand, it
does nothing when the stamp says the same proto was compiled with the same grpcio-tools
(--force compiles it anyway).
"""

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = ["tsdb/engine/v1/engine.proto"]
OUT = HERE / "influxdb3_runner" / "_gen"
#: proto/ beside this file in an sdist, else tsdb's proto/ one level up.
ROOTS = [HERE / "proto", HERE.parent / "proto"]
#: Beside this file in an sdist, else the SDK's in the checkout.
STUBGEN = [HERE / "stubgen.py", HERE.parent.parent.parent / "plugin-sdk" / "python" / "stubgen.py"]


def stubgen():
    """The SDK's generator, loaded by path: neither a checkout nor a build has it on
    sys.path."""
    for path in STUBGEN:
        if path.is_file():
            spec = importlib.util.spec_from_file_location("baton_stubgen", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise SystemExit(f"error: the SDK's stub generator is in none of {', '.join(map(str, STUBGEN))}")


if __name__ == "__main__":
    sys.exit(stubgen().main(PROTOS, OUT, ROOTS, sys.argv[1:]))
