"""The package as pip builds it: an sdist carries what a wheel needs, a wheel built from
that sdist carries the stubs and imports on its own, and the version pins agree.

The builds run offline, with this venv's setuptools and grpcio-tools (what pip's build
isolation would fetch); the end-to-end test tests/tests/e2e/python_package.rs installs
from a fresh clone with pip itself."""

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest
import zipfile
from pathlib import Path

from support import REPO

SDK = REPO / "plugin-sdk" / "python"
STUBS = [
    "baton_plugin/_gen/baton/plugin/v1/plugin_pb2.py",
    "baton_plugin/_gen/baton/plugin/v1/plugin_pb2_grpc.py",
    "baton_plugin/_gen/baton/host/v1/host_pb2.py",
    "baton_plugin/_gen/baton/host/v1/host_pb2_grpc.py",
]
BUILD_TIMEOUT = 120


def _pins(text):
    """name -> (operator, version) of each `name==x` / `name>=x` requirement in `text`."""
    return {
        m.group(1).lower(): (m.group(2), m.group(3))
        for m in re.finditer(r'([A-Za-z0-9_.-]+)\s*(==|>=)\s*([0-9][0-9.]*)', text)
    }


def _version(text):
    return tuple(int(part) for part in text.split("."))


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
    """Every path under `root`, relative, with a file's size and modification time (a
    directory's changes with the sdist's release tree, made and removed beside setup.py)."""
    return {
        (str(path.relative_to(root)), *(() if path.is_dir() else (path.stat().st_size, path.stat().st_mtime_ns)))
        for path in root.rglob("*")
    }


def _read_only_mount():
    """A command prefix that runs a command with its last argument's directory mounted
    read-only (a private mount namespace; also for root, whom file modes do not stop),
    or None where this machine cannot make one."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run(
        [unshare, "-rm", "sh", "-c", 'mount --bind -o ro /tmp /tmp && ! touch /tmp/.baton-ro-probe'],
        capture_output=True, timeout=BUILD_TIMEOUT,
    )
    if probe.returncode != 0:
        return None
    return [unshare, "-rm", "sh", "-c", 'mount --bind -o ro "$0" "$0" && cd "$0" && exec "$@"']


class PackagingTest(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="baton-py-package-"))
        self.addCleanup(shutil.rmtree, self.tmp)

    def checkout(self):
        """A checkout's layout, without anything generated or built in the work tree;
        returns its plugin-sdk/python."""
        checkout = self.tmp / "checkout"
        shutil.copytree(
            SDK, checkout / "plugin-sdk" / "python",
            ignore=shutil.ignore_patterns("_gen", "_gen.*", "build", "dist", "*.egg-info", "__pycache__"),
        )
        shutil.copytree(REPO / "proto" / "baton", checkout / "proto" / "baton")
        return checkout / "plugin-sdk" / "python"

    def test_building_leaves_the_checkout_as_it_was(self):
        # pip install DIR builds a wheel from DIR; python -m build makes an sdist there too.
        sdk = self.checkout()
        before = _files(sdk.parent.parent)
        (self.tmp / "out").mkdir()
        _build("build_sdist", sdk, self.tmp / "out")
        _build("build_wheel", sdk, self.tmp / "out")
        after = _files(sdk.parent.parent)
        self.assertEqual(sorted(after - before), [], "made or changed by the builds")
        self.assertEqual(sorted(before - after), [], "removed or changed by the builds")

    def test_a_wheel_builds_from_a_read_only_checkout(self):
        mount = _read_only_mount()
        if mount is None:
            self.skipTest("this machine cannot mount a directory read-only (unshare -rm); "
                          "test_building_leaves_the_checkout_as_it_was covers the same ground")
        sdk = self.checkout()
        (self.tmp / "out").mkdir()
        done = subprocess.run(
            [*mount, str(sdk), sys.executable, "-c",
             "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))",
             str(self.tmp / "out")],
            capture_output=True, text=True, timeout=BUILD_TIMEOUT,
        )
        self.assertEqual(done.returncode, 0, f"{done.stdout}\n{done.stderr}")
        wheel = self.tmp / "out" / done.stdout.strip().splitlines()[-1]
        with zipfile.ZipFile(wheel) as whl:
            for stub in STUBS:
                self.assertIn(stub, whl.namelist())

    def test_a_wheel_built_from_the_sdist_has_the_stubs_and_imports_without_the_work_tree(self):
        checkout = self.checkout().parent.parent
        (self.tmp / "sdist").mkdir()
        sdist = _build("build_sdist", checkout / "plugin-sdk" / "python", self.tmp / "sdist")
        with tarfile.open(sdist) as tar:
            names = tar.getnames()
            # The "data" filter where this Python has it: nothing outside the target.
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(self.tmp / "unpacked", **safe)
        top = names[0].split("/")[0]
        for proto in ("proto/baton/plugin/v1/plugin.proto", "proto/baton/host/v1/host.proto"):
            self.assertIn(f"{top}/{proto}", names)
        self.assertFalse([n for n in names if "/_gen/" in n], "the sdist holds no stubs")

        # Away from the checkout, as `python -m build` builds the wheel.
        shutil.rmtree(checkout)
        (self.tmp / "wheel").mkdir()
        wheel = _build("build_wheel", self.tmp / "unpacked" / top, self.tmp / "wheel")
        self.assertTrue(wheel.name.endswith("-py3-none-any.whl"), wheel.name)
        with zipfile.ZipFile(wheel) as whl:
            for stub in STUBS:
                self.assertIn(stub, whl.namelist())
            whl.extractall(self.tmp / "installed")

        # PYTHONPATH comes before this venv's .pth entry for the work tree, so the
        # import below is the wheel's.
        env = dict(os.environ, PYTHONPATH=str(self.tmp / "installed"))
        done = subprocess.run(
            [sys.executable, "-c",
             "import baton_plugin, baton_plugin._proto as p; "
             "print(baton_plugin.__file__); print(p.pb.DESCRIPTOR.name)"],
            env=env, cwd=self.tmp, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        where, proto = done.stdout.split()
        self.assertTrue(where.startswith(str(self.tmp / "installed")), where)
        self.assertEqual(proto, "baton/plugin/v1/plugin.proto")

    def test_the_build_pins_the_grpcio_tools_of_requirements_and_the_runtime_floors_follow_it(self):
        pyproject = (SDK / "pyproject.toml").read_text()
        requirements = _pins((SDK / "requirements.txt").read_text())
        build = _pins(pyproject.split("[build-system]", 1)[1])
        runtime = _pins(pyproject.split("[build-system]", 1)[0])
        self.assertEqual(build["grpcio-tools"], requirements["grpcio-tools"])
        tools = build["grpcio-tools"][1]
        # The generated *_pb2_grpc.py refuses a grpcio older than the tools that made it.
        for grpc_package in ("grpcio", "grpcio-health-checking", "grpcio-reflection"):
            self.assertEqual(runtime[grpc_package], (">=", tools), grpc_package)
        # The generated *_pb2.py refuses a protobuf older than the protoc inside the tools.
        stub = (SDK / STUBS[0]).read_text()
        made_by = re.search(r"Protobuf Python Version: ([0-9.]+)", stub).group(1)
        self.assertEqual(runtime["protobuf"], (">=", made_by))
        # And the repository's own venv is inside those floors.
        for name, (op, floor) in runtime.items():
            self.assertGreaterEqual(_version(requirements[name][1]), _version(floor), name)


if __name__ == "__main__":
    unittest.main()
