"""Generates the SDK's gRPC stubs from the baton protos into baton_plugin/_gen/, with
the generator both Python packages share (stubgen.py).

Run it with a Python that has grpcio-tools (setup-python.sh does) to use the SDK from
the work tree. Building the package (pip install, pip wheel, python -m build) runs the
same generation through setup.py, into the build directory. The stubs are never edited
or committed: this file is the only way they come to be. Run by hand, it skips the work
when the stamp in _gen/ says the same protos, with the same grpcio-tools, were compiled
(--force compiles them anyway).
"""

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: The plugin contract, and the host services a plugin may call back into.
PROTOS = ["baton/plugin/v1/plugin.proto", "baton/host/v1/host.proto"]
OUT = HERE / "baton_plugin" / "_gen"
#: proto/ beside this file in an sdist (setup.py copies them there), else the
#: repository's proto/.
ROOTS = [HERE / "proto", HERE.parent.parent / "proto"]


def stubgen():
    """The shared generator, beside this file in a checkout and in an sdist alike."""
    spec = importlib.util.spec_from_file_location("baton_stubgen", HERE / "stubgen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(stubgen().main(PROTOS, OUT, ROOTS, sys.argv[1:]))
