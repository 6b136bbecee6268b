"""Generates tsdb's gRPC stubs (proto/tsdb/engine/v1/engine.proto) into
influxdb3_runner/_gen/. setup-python.sh runs it in a checkout; building the package
(pip install) runs it through setup.py. Run by hand, it does nothing when the stamp says
the same proto was compiled with the same grpcio-tools.
"""

import hashlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = "tsdb/engine/v1/engine.proto"
OUT = HERE / "influxdb3_runner" / "_gen"
STAMP = ".stamp"


class GenerateError(Exception):
    """The stubs could not be generated; the message says why."""


def proto_root(base: Path = HERE) -> Path:
    """proto/ beside this file in an sdist, else tsdb's proto/ one level up."""
    for root in (base / "proto", base.parent / "proto"):
        if (root / PROTO).is_file():
            return root
    raise GenerateError(f"{PROTO} is neither in {base / 'proto'} nor in {base.parent / 'proto'}")


def generate(root: Path, out: Path, force: bool = False) -> bool:
    """Compiles PROTO under `root` into `out`; False when `out` was up to date."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        raise GenerateError("grpcio-tools is not installed; run plugin-sdk/python/setup-python.sh") from None
    digest = hashlib.sha256((root / PROTO).read_bytes())
    digest.update(importlib.metadata.version("grpcio-tools").encode())
    stamp = digest.hexdigest()
    try:
        if not force and (out / STAMP).read_text().strip() == stamp:
            return False
    except OSError:
        pass
    out.parent.mkdir(parents=True, exist_ok=True)
    # Made beside the final directory and renamed into place, so that a runner starting
    # meanwhile (tests generate in parallel) sees whole stubs, old or new.
    tmp = Path(tempfile.mkdtemp(prefix="_gen.", dir=out.parent))
    try:
        well_known = Path(grpc_tools.__file__).parent / "_proto"
        status = protoc.main(
            ["grpc_tools.protoc", f"-I{root}", f"-I{well_known}", f"--python_out={tmp}", f"--grpc_python_out={tmp}", PROTO]
        )
        if status != 0:
            raise GenerateError(f"protoc failed on {PROTO} (exit {status})")
        (tmp / STAMP).write_text(stamp + "\n")
        os.chmod(tmp, 0o755)
        old = out.with_name(f"{tmp.name}.old")
        try:
            out.rename(old)
        except FileNotFoundError:
            old = None
        try:
            tmp.rename(out)
        except OSError:
            # Another generator won the race with the same stubs.
            if not (out / STAMP).is_file():
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def main() -> int:
    try:
        if generate(proto_root(), OUT, force="--force" in sys.argv[1:]):
            print(f"generated tsdb's gRPC stubs in {OUT}", file=sys.stderr)
    except GenerateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
