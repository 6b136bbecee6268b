"""Generates the SDK's gRPC stubs from the baton protos into baton_plugin/_gen/.

Run it with a Python that has grpcio-tools (setup-python.sh does) to use the SDK from
the work tree. Building the package (pip install, pip wheel, python -m build) runs the
same generation through setup.py, into the build directory. The stubs are never edited
or committed: this file is the only way they come to be. Run by hand, it skips the work
when the stamp in _gen/ says the same proto, with the same grpcio-tools, was compiled.
"""

import hashlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: The plugin contract, and the host services a plugin may call back into.
PROTOS = ["baton/plugin/v1/plugin.proto", "baton/host/v1/host.proto"]
OUT = HERE / "baton_plugin" / "_gen"
STAMP = ".stamp"


class GenerateError(Exception):
    """The stubs could not be generated; the message says why and what to do."""


def proto_root(base: Path = HERE) -> Path:
    """Where the protos are: proto/ beside this file in an sdist (setup.py copies them
    there), else the repository's proto/ two levels up."""
    for root in (base / "proto", base.parent.parent / "proto"):
        if all((root / proto).is_file() for proto in PROTOS):
            return root
    raise GenerateError(
        f"the baton protos ({', '.join(PROTOS)}) are neither in {base / 'proto'} nor in "
        f"{base.parent.parent / 'proto'}: build the package from a baton checkout or "
        "from its sdist"
    )


def generate(root: Path, out: Path, force: bool = False) -> bool:
    """Compiles PROTOS under `root` into `out`; returns False when `out` was already
    up to date (same protos, same grpcio-tools) and `force` is not set."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        raise GenerateError(
            "grpcio-tools is not installed; run plugin-sdk/python/setup-python.sh"
        ) from None
    tools_version = importlib.metadata.version("grpcio-tools")
    digest = hashlib.sha256()
    for proto in PROTOS:
        digest.update(proto.encode() + b"\0" + (root / proto).read_bytes())
    digest.update(tools_version.encode())
    stamp = digest.hexdigest()
    if not force and _read(out / STAMP) == stamp:
        return False

    out.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the final directory and swapped in, so a plugin starting meanwhile
    # sees either the old stubs or the new ones, never half of them.
    tmp = Path(tempfile.mkdtemp(prefix="_gen.", dir=out.parent))
    try:
        # protoc's own well-known types (for the generated imports) ship inside grpc_tools.
        well_known = Path(grpc_tools.__file__).parent / "_proto"
        status = protoc.main([
            "grpc_tools.protoc",
            f"-I{root}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--pyi_out={tmp}",
            *PROTOS,
        ])
        if status != 0:
            raise GenerateError(f"protoc failed on {', '.join(PROTOS)} (exit {status})")
        (tmp / STAMP).write_text(stamp + "\n")
        os.chmod(tmp, 0o755)
        old = None
        if out.exists():
            old = out.with_name(f"{tmp.name}.old")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def main() -> int:
    try:
        if generate(proto_root(), OUT, force="--force" in sys.argv[1:]):
            print(f"generated the gRPC stubs for {', '.join(PROTOS)} in {OUT}", file=sys.stderr)
    except GenerateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
