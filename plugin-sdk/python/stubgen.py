"""The one generator of Python gRPC stubs for baton's Python packages: the SDK
(baton_plugin, from baton's protos) and tsdb's influxdb3_runner (from tsdb's), each
naming its protos and where the stubs go in its own generate.py.

- generate(root, protos, out) compiles `protos` (paths under `root`) into `out`, with
  grpcio-tools; each project's generate.py calls it through main() in a checkout.
- setup(here, package, protos, roots) is a project's whole setup.py: setuptools,
  with the stubs compiled into the build at build time, an sdist that carries the
  protos and this file (so a wheel builds from it away from any checkout), and every
  build file in a scratch directory outside the source tree, so that
  `pip install DIR` leaves DIR as it was and works from a read-only checkout.

It uses nothing but the standard library until it runs protoc or setuptools, and is
loaded by path (a PEP 517 backend does not promise setup.py's directory is on
sys.path), so setup.py, generate.py and an sdist can all carry and load it.
"""

import atexit
import hashlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

THIS = Path(__file__).resolve()
STAMP = ".stamp"
#: Where an sdist carries the protos, beside its setup.py.
SDIST_PROTO_DIR = "proto"


class GenerateError(Exception):
    """The stubs could not be generated; the message says why and what to do."""


def find_root(protos: Sequence[str], candidates: Sequence[Path]) -> Path:
    """The first of `candidates` that holds every one of `protos`."""
    for root in candidates:
        if all((root / proto).is_file() for proto in protos):
            return root
    raise GenerateError(
        f"{', '.join(protos)} are in none of {', '.join(str(c) for c in candidates)}: "
        "build the package from a baton checkout or from its sdist"
    )


def generate(root: Path, protos: Sequence[str], out: Path, force: bool = False) -> bool:
    """Compiles `protos` (paths under `root`) into `out`, with type stubs (.pyi);
    returns False when the stamp in `out` says the same protos were compiled by the
    same grpcio-tools and `force` is not set."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        raise GenerateError(
            "grpcio-tools is not installed; in a baton checkout run plugin-sdk/python/setup-python.sh"
        ) from None
    digest = hashlib.sha256()
    for proto in protos:
        digest.update(proto.encode() + b"\0" + (root / proto).read_bytes())
    digest.update(importlib.metadata.version("grpcio-tools").encode())
    stamp = digest.hexdigest()
    if not force and _read(out / STAMP) == stamp:
        return False

    out.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the final directory and renamed into place, so that a process
    # importing them meanwhile (tests generate in parallel) sees whole stubs, old or new.
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
            *protos,
        ])
        if status != 0:
            raise GenerateError(f"protoc failed on {', '.join(protos)} (exit {status})")
        (tmp / STAMP).write_text(stamp + "\n")
        os.chmod(tmp, 0o755)
        old: Optional[Path] = out.with_name(f"{tmp.name}.old")
        try:
            out.rename(old)
        except FileNotFoundError:
            old = None
        try:
            tmp.rename(out)
        except OSError:
            # Another generator renamed its stubs into place first: the same ones,
            # unless the stamp is missing.
            if not (out / STAMP).is_file():
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def main(protos: Sequence[str], out: Path, roots: Sequence[Path], argv: Sequence[str] = ()) -> int:
    """A project's generate.py run by hand: compiles `protos`, found under the first of
    `roots` that has them all, into `out` when they changed (always with --force)."""
    try:
        if generate(find_root(protos, roots), protos, out, force="--force" in argv):
            print(f"generated the gRPC stubs for {', '.join(protos)} in {out}", file=sys.stderr)
    except GenerateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def setup(here: Path, package: str, protos: Sequence[str], roots: Sequence[Path]) -> None:
    """Runs setuptools for the project in `here` (metadata in its pyproject.toml),
    whose package `package` imports its stubs from `package`/_gen."""
    from setuptools import setup as setuptools_setup
    from setuptools.command.build_py import build_py
    from setuptools.command.sdist import sdist

    source_out = here / package / "_gen"

    class BuildWithStubs(build_py):
        """Builds the package, then compiles the stubs into it."""

        def run(self):
            super().run()
            if getattr(self, "editable_mode", False):
                # An editable install imports from the source tree, so the stubs go
                # there, exactly where generate.py puts them.
                out = source_out
            else:
                out = Path(self.build_lib) / package / "_gen"
            try:
                generate(find_root(protos, roots), protos, out, force=out != source_out)
            except GenerateError as e:
                raise SystemExit(f"error: {e}") from None

    class SdistWithProtos(sdist):
        """An sdist carries the protos and this generator beside setup.py, since a
        wheel built from it (as `python -m build` does) cannot reach the checkout."""

        def make_release_tree(self, base_dir, files):
            super().make_release_tree(base_dir, files)
            root = find_root(protos, roots)
            copies: List[tuple] = [(THIS, Path(base_dir) / THIS.name)]
            copies += [(root / p, Path(base_dir) / SDIST_PROTO_DIR / p) for p in protos]
            for source, target in copies:
                target.parent.mkdir(parents=True, exist_ok=True)
                # The release tree hard-links the source's files: writing through
                # such a link would write into the checkout.
                if target.exists():
                    target.unlink()
                shutil.copyfile(source, target)

    # build/ and <name>.egg-info/ would otherwise land in `here`: a checkout pip
    # installs from is left as it was, and may be read-only.
    scratch = Path(tempfile.mkdtemp(prefix=f"{package}-build-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    setuptools_setup(
        cmdclass={"build_py": BuildWithStubs, "sdist": SdistWithProtos},
        options={
            "build": {"build_base": str(scratch / "build")},
            "egg_info": {"egg_base": str(scratch)},
        },
    )


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
