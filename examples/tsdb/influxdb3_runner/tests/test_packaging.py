"""The runner as pip builds it: its sdist carries the proto and the SDK's stub generator,
and a wheel built from that sdist, away from any checkout, carries tsdb's stubs and
imports; building leaves the checkout as it was. The builds run offline, with this
venv's setuptools and grpcio-tools (what pip's build isolation would fetch)."""

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest
import zipfile
from pathlib import Path

RUNNER = Path(__file__).resolve().parents[1]
REPO = RUNNER.parents[2]
PROTO = "tsdb/engine/v1/engine.proto"
STUBS = [
    "influxdb3_runner/_gen/tsdb/engine/v1/engine_pb2.py",
    "influxdb3_runner/_gen/tsdb/engine/v1/engine_pb2_grpc.py",
]
BUILD_TIMEOUT = 120


def _build(hook, source, out):
    """Runs a PEP 517 hook of setuptools in `source`, as pip would; returns the file made."""
    done = subprocess.run(
        [sys.executable, "-c",
         f"import sys; from setuptools import build_meta; print(build_meta.{hook}(sys.argv[1]))",
         str(out)],
        cwd=source, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
    )
    if done.returncode != 0:
        raise AssertionError(f"{hook} in {source} failed:\n{done.stdout}\n{done.stderr}")
    return out / done.stdout.strip().splitlines()[-1]


def _files(root):
    """Every path under `root` with a file's size and modification time (a directory's
    own change with the sdist's release tree, made and removed beside setup.py)."""
    return {
        (str(p.relative_to(root)), *(() if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)))
        for p in root.rglob("*")
    }


class PackagingTest(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="influxdb3-runner-package-"))
        self.addCleanup(shutil.rmtree, self.tmp)
        # A checkout's layout: the runner, tsdb's proto beside it, the SDK's generator;
        # nothing generated or built in the work tree.
        self.checkout = self.tmp / "checkout"
        self.runner = self.checkout / "examples" / "tsdb" / "influxdb3_runner"
        shutil.copytree(
            RUNNER, self.runner,
            ignore=shutil.ignore_patterns("_gen", "_gen.*", "build", "dist", "*.egg-info", "__pycache__"),
        )
        (self.checkout / "examples" / "tsdb" / "proto" / PROTO).parent.mkdir(parents=True)
        shutil.copyfile(REPO / "examples" / "tsdb" / "proto" / PROTO, self.checkout / "examples" / "tsdb" / "proto" / PROTO)
        (self.checkout / "plugin-sdk" / "python").mkdir(parents=True)
        shutil.copyfile(REPO / "plugin-sdk" / "python" / "stubgen.py", self.checkout / "plugin-sdk" / "python" / "stubgen.py")

    def test_a_wheel_built_from_the_sdist_has_the_stubs_and_imports_without_the_checkout(self):
        before = _files(self.checkout)
        (self.tmp / "sdist").mkdir()
        sdist = _build("build_sdist", self.runner, self.tmp / "sdist")
        self.assertEqual(sorted(_files(self.checkout) ^ before), [], "the sdist's build changed the checkout")
        with tarfile.open(sdist) as tar:
            names = tar.getnames()
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(self.tmp / "unpacked", **safe)
        top = names[0].split("/")[0]
        for carried in (f"proto/{PROTO}", "stubgen.py", "generate.py", "setup.py"):
            self.assertIn(f"{top}/{carried}", names)
        self.assertFalse([n for n in names if "/_gen/" in n], "the sdist holds no stubs")

        # Away from the checkout, as `python -m build` builds the wheel.
        shutil.rmtree(self.checkout)
        (self.tmp / "wheel").mkdir()
        wheel = _build("build_wheel", self.tmp / "unpacked" / top, self.tmp / "wheel")
        with zipfile.ZipFile(wheel) as whl:
            for stub in STUBS:
                self.assertIn(stub, whl.namelist())
            whl.extractall(self.tmp / "installed")

        # PYTHONPATH comes before this venv's .pth entry for the work tree, so the
        # import below is the wheel's (with the SDK and grpcio of this venv).
        env = dict(os.environ, PYTHONPATH=str(self.tmp / "installed"))
        done = subprocess.run(
            [sys.executable, "-c",
             "import influxdb3_runner._proto as p; print(p.__file__); print(p.pb.DESCRIPTOR.name)"],
            env=env, cwd=self.tmp, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        where, proto = done.stdout.split()
        self.assertTrue(where.startswith(str(self.tmp / "installed")), where)
        self.assertEqual(proto, PROTO)

    def test_a_wheel_build_leaves_the_checkout_as_it_was(self):
        before = _files(self.checkout)
        (self.tmp / "wheel").mkdir()
        wheel = _build("build_wheel", self.runner, self.tmp / "wheel")
        self.assertEqual(sorted(_files(self.checkout) ^ before), [], "the wheel's build changed the checkout")
        with zipfile.ZipFile(wheel) as whl:
            for stub in STUBS:
                self.assertIn(stub, whl.namelist())


if __name__ == "__main__":
    unittest.main()
