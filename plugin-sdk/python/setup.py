"""The build of the baton-plugin package: setuptools, plus the gRPC stubs generated from
the baton protos at build time (see README.md, "Installing", for why they are not
committed). The metadata is in pyproject.toml."""

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent


def _generate_module():
    # By path: a PEP 517 backend does not promise this directory is on sys.path.
    spec = importlib.util.spec_from_file_location("baton_plugin_generate", HERE / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithStubs(build_py):
    """Builds the package, then compiles the stubs into it."""

    def run(self):
        super().run()
        gen = _generate_module()
        if getattr(self, "editable_mode", False):
            # An editable install imports from the source tree, so the stubs go there,
            # exactly where generate.py puts them.
            out = gen.OUT
        else:
            out = Path(self.build_lib) / "baton_plugin" / "_gen"
        try:
            gen.generate(gen.proto_root(HERE), out, force=out != gen.OUT)
        except gen.GenerateError as e:
            raise SystemExit(f"error: {e}") from None


class SdistWithProtos(sdist):
    """An sdist carries the protos beside setup.py, since a wheel built from it (as
    `python -m build` does) cannot reach the repository's proto/ directory."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        gen = _generate_module()
        root = gen.proto_root(HERE)
        for proto in gen.PROTOS:
            target = Path(base_dir) / "proto" / proto
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / proto, target)


setup(cmdclass={"build_py": BuildWithStubs, "sdist": SdistWithProtos})
