"""The build of the influxdb3-runner package: setuptools, plus tsdb's gRPC stubs
generated at build time (they are never committed). The metadata is in pyproject.toml."""

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent


def _generator():
    # By path: a PEP 517 backend does not promise this directory is on sys.path.
    spec = importlib.util.spec_from_file_location("influxdb3_runner_generate", HERE / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        gen = _generator()
        out = gen.OUT if getattr(self, "editable_mode", False) else Path(self.build_lib) / "influxdb3_runner" / "_gen"
        try:
            gen.generate(gen.proto_root(HERE), out, force=out != gen.OUT)
        except gen.GenerateError as e:
            raise SystemExit(f"error: {e}") from None


class SdistWithProto(sdist):
    """An sdist carries the proto, which a wheel built from it cannot reach otherwise."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        gen = _generator()
        target = Path(base_dir) / "proto" / gen.PROTO
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(gen.proto_root(HERE) / gen.PROTO, target)


setup(cmdclass={"build_py": BuildWithStubs, "sdist": SdistWithProto})
