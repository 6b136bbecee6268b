"""Generates the SDK's gRPC stubs from the repository's proto/ into baton_plugin/_gen/.

Run it with a Python that has grpcio-tools (setup-python.sh does). The stubs are never
edited or committed: this script is the only way they come to be. It skips the work
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
PROTO_ROOT = HERE.parent.parent / "proto"
#: The plugin contract, and the host services a plugin may call back into.
PROTOS = ["baton/plugin/v1/plugin.proto", "baton/host/v1/host.proto"]
OUT = HERE / "baton_plugin" / "_gen"
STAMP = ".stamp"


def main() -> int:
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        print("error: grpcio-tools is not installed; run plugin-sdk/python/setup-python.sh", file=sys.stderr)
        return 1
    sources = [PROTO_ROOT / proto for proto in PROTOS]
    for source in sources:
        if not source.is_file():
            print(f"error: {source} does not exist", file=sys.stderr)
            return 1
    tools_version = importlib.metadata.version("grpcio-tools")
    digest = hashlib.sha256()
    for proto, source in zip(PROTOS, sources):
        digest.update(proto.encode() + b"\0" + source.read_bytes())
    digest.update(tools_version.encode())
    stamp = digest.hexdigest()
    if "--force" not in sys.argv[1:] and _read(OUT / STAMP) == stamp:
        return 0

    # Built beside the final directory and swapped in, so a plugin starting meanwhile
    # sees either the old stubs or the new ones, never half of them.
    tmp = Path(tempfile.mkdtemp(prefix="_gen.", dir=OUT.parent))
    try:
        # protoc's own well-known types (for the generated imports) ship inside grpc_tools.
        well_known = Path(grpc_tools.__file__).parent / "_proto"
        status = protoc.main([
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--pyi_out={tmp}",
            *PROTOS,
        ])
        if status != 0:
            print(f"error: protoc failed on {', '.join(PROTOS)} (exit {status})", file=sys.stderr)
            return 1
        (tmp / STAMP).write_text(stamp + "\n")
        os.chmod(tmp, 0o755)
        old = None
        if OUT.exists():
            old = OUT.with_name(f"{tmp.name}.old")
            OUT.rename(old)
        tmp.rename(OUT)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"generated the gRPC stubs for {', '.join(PROTOS)} in {OUT}", file=sys.stderr)
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
